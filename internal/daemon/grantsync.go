package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/tracker"
)

// Fast-path grant writing.
const (
	// grantEvents bounds the grants waiting to be written; beyond it the
	// writer rewrites the sets from the tracker instead.
	grantEvents = 4096
	// grantMargin is taken off every element's timeout: the kernel counts
	// timeouts in jiffies and rounds up, the timeout starts when the kernel
	// takes the batch (a little after it is computed), and an element must
	// never outlive its grant in the tracker. The last grantMargin of a
	// grant is served in user space.
	grantMargin = 50 * time.Millisecond
	// pruneEvery is how often add forgets elements the kernel has expired.
	pruneEvery = time.Second
	// ReconcileEvery is how often the grant sets are read back and made
	// to hold what the tracker grants: an element a failed revoke left,
	// or one another process added to an ordinary table, lasts at most
	// this long (or until the next retry).
	ReconcileEvery = 2 * time.Second
	// retryFirst and retryMax bound the backoff after a failed write:
	// the next attempt is a reconcile, retryFirst later, doubling up to
	// retryMax while writes keep failing.
	retryFirst = 100 * time.Millisecond
	retryMax   = ReconcileEvery
)

// grantSync mirrors the tracker's grants into the kernel's grant sets, off
// the packet path: the handler only posts (source, service) on a channel.
// The tracker stays the authority; until an element is written, the
// source's SYNs go to user space and are accepted there.
type grantSync struct {
	w   firewall.GrantWriter
	tr  *tracker.Tracker
	now func() time.Time
	log *slog.Logger

	events   chan grantEvent
	overflow atomic.Bool // an event was dropped: rewrite everything
	kick     chan struct{}
	failed   chan struct{} // a write outside run failed: retry after a backoff

	mu    sync.Mutex
	ports map[uint64][]uint16 // service id → ports mirrored (none for one-shot services)
	// written is what the kernel holds: element → when it ends there.
	written map[netip.AddrPort]time.Time
	pruned  time.Time
}

type grantEvent struct {
	src netip.Addr
	id  uint64
}

func newGrantSync(w firewall.GrantWriter, tr *tracker.Tracker, now func() time.Time, log *slog.Logger) *grantSync {
	return &grantSync{w: w, tr: tr, now: now, log: log, events: make(chan grantEvent, grantEvents),
		kick: make(chan struct{}, 1), failed: make(chan struct{}, 1), written: map[netip.AddrPort]time.Time{}}
}

// setPlan takes the ports each service's grant opens.
func (g *grantSync) setPlan(p *firewall.Plan) { g.setPorts(p.GrantPorts) }

// setPorts takes the ports each service's grant opens: service id → ports.
func (g *grantSync) setPorts(ports map[uint64][]uint16) {
	g.mu.Lock()
	g.ports = ports
	g.mu.Unlock()
}

// granted is called on the packet path: it never blocks or allocates.
func (g *grantSync) granted(src netip.Addr, id uint64) {
	select {
	case g.events <- grantEvent{src, id}:
	default:
		g.overflow.Store(true)
		g.poke()
	}
}

// resync asks for a full rewrite.
func (g *grantSync) resync() {
	g.overflow.Store(true)
	g.poke()
}

func (g *grantSync) poke() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

func (g *grantSync) run(ctx context.Context) {
	every := time.NewTicker(ReconcileEvery)
	defer every.Stop()
	retry := time.NewTimer(retryFirst)
	retry.Stop()
	defer retry.Stop()
	backoff := retryFirst
	// done takes the outcome of a write: a failure is retried, by a
	// reconcile, after a backoff that doubles while writes keep failing.
	done := func(err error) {
		if err == nil {
			backoff = retryFirst
			return
		}
		retry.Reset(backoff)
		backoff = min(2*backoff, retryMax)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-g.events:
			batch := []grantEvent{ev}
			for more := true; more && len(batch) < grantEvents; {
				select {
				case ev := <-g.events:
					batch = append(batch, ev)
				default:
					more = false
				}
			}
			if g.overflow.Load() {
				done(g.replace(ctx))
				continue
			}
			if err := g.add(ctx, batch); err != nil {
				g.log.Debug("fast path: incremental grant write failed; rewriting the sets", "err", err)
				done(g.replace(ctx))
			}
		case <-g.kick:
			if g.overflow.Load() {
				done(g.replace(ctx))
			}
		case <-g.failed:
			done(errWriteFailed)
		case <-retry.C:
			done(g.reconcileLogged(ctx))
		case <-every.C:
			done(g.reconcileLogged(ctx))
		}
	}
}

// add writes the elements of new or changed grants.
func (g *grantSync) add(ctx context.Context, batch []grantEvent) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if now.Sub(g.pruned) >= pruneEvery {
		for ap, ends := range g.written {
			if !ends.After(now) {
				delete(g.written, ap)
			}
		}
		g.pruned = now
	}
	type elem struct {
		ap   netip.AddrPort
		ends time.Time
	}
	var add []elem
	var del []firewall.GrantElem
	for _, ev := range batch {
		until, ok := g.tr.Expiry(ev.src, ev.id, now)
		if !ok {
			continue
		}
		ends := until.Add(-grantMargin)
		for _, p := range g.ports[ev.id] {
			ap := netip.AddrPortFrom(ev.src, p)
			w, held := g.written[ap]
			held = held && w.After(now)
			if held && w.Equal(ends) {
				continue // the kernel holds it with this end already
			}
			if !ends.After(now) && !held {
				continue
			}
			if held {
				// A longer grant, or a shorter one (the kernel must not
				// keep the longer): delete and add again in the same
				// batch, since before Linux 6.12 adding an element that
				// exists leaves its timeout.
				del = append(del, firewall.GrantElem{Src: ev.src, Port: p})
			}
			add = append(add, elem{ap, ends})
		}
	}
	if len(add) == 0 {
		return nil
	}
	// Timeouts from the latest clock: they start when the kernel takes
	// the batch.
	now = g.now()
	elems := make([]firewall.GrantElem, 0, len(add))
	for _, e := range add {
		if e.ends.After(now) {
			elems = append(elems, firewall.GrantElem{Src: e.ap.Addr(), Port: e.ap.Port(), Timeout: e.ends.Sub(now)})
			g.written[e.ap] = e.ends
		} else {
			delete(g.written, e.ap) // deleted below, not added back
		}
	}
	return g.w.UpdateGrants(ctx, elems, del)
}

// errWriteFailed stands for a write that failed outside run.
var errWriteFailed = errors.New("a grant write failed")

// replace rewrites the grant sets from the tracker.
func (g *grantSync) replace(ctx context.Context) error {
	err := g.rewrite(ctx)
	if err != nil {
		g.log.Error("fast path: could not write the grant sets; granted sources are judged in user space; will retry", "err", err)
	}
	return err
}

func (g *grantSync) reconcileLogged(ctx context.Context) error {
	err := g.reconcile(ctx)
	if err != nil {
		g.log.Error("fast path: could not reconcile the grant sets with the tracker; will retry", "err", err)
	}
	return err
}

// wanted is what the grant sets should hold now: per element, when it
// ends there (the latest of the grants that open it, less the margin).
// Called with mu held.
func (g *grantSync) wanted(now time.Time) map[netip.AddrPort]time.Time {
	best := map[netip.AddrPort]time.Time{}
	for _, gi := range g.tr.Grants(now) {
		if gi.Awaiting {
			continue // its first SYN must reach the engine
		}
		for _, p := range g.ports[gi.ID] {
			ap := netip.AddrPortFrom(gi.Src, p)
			if ends := gi.Expires.Add(-grantMargin); ends.After(now) && ends.After(best[ap]) {
				best[ap] = ends
			}
		}
	}
	return best
}

// reconcile reads the grant sets back and makes them hold what the
// tracker grants: an element the tracker does not grant (a revoke whose
// write failed, an element someone else added) is deleted, one that would
// outlive its grant is written again with the right timeout, and a missing
// one is added.
func (g *grantSync) reconcile(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	have, err := g.w.ReadGrants(ctx)
	if err != nil {
		return err
	}
	// After the read: the kernel's timeouts only shrink meanwhile.
	now := g.now()
	want := g.wanted(now)
	var add, del []firewall.GrantElem
	held := make(map[netip.AddrPort]bool, len(have))
	stray := 0
	for _, e := range have {
		ap := netip.AddrPortFrom(e.Src, e.Port)
		held[ap] = true
		ends, ok := want[ap]
		switch {
		case !ok:
			del = append(del, firewall.GrantElem{Src: e.Src, Port: e.Port})
			delete(g.written, ap)
			stray++
		case e.Timeout > ends.Sub(now)+grantMargin:
			// It would outlive its grant (a shortened grant whose write
			// failed): delete and add in one batch.
			del = append(del, firewall.GrantElem{Src: e.Src, Port: e.Port})
			add = append(add, firewall.GrantElem{Src: e.Src, Port: e.Port, Timeout: ends.Sub(now)})
			g.written[ap] = ends
		}
	}
	for ap, ends := range want {
		if !held[ap] {
			add = append(add, firewall.GrantElem{Src: ap.Addr(), Port: ap.Port(), Timeout: ends.Sub(now)})
			g.written[ap] = ends
		}
	}
	if len(add) == 0 && len(del) == 0 {
		return nil
	}
	if stray > 0 {
		g.log.Warn("fast path: the grant sets held elements the tracker does not grant; removing them", "elements", stray)
	}
	if err := g.w.UpdateGrants(ctx, add, del); err != nil {
		g.overflow.Store(true)
		return err
	}
	return nil
}

// replaceNow rewrites the grant sets from the tracker and returns once the
// kernel holds them (a revoke waits for this). When the write fails, run
// retries it after a backoff.
func (g *grantSync) replaceNow(ctx context.Context) error {
	err := g.rewrite(ctx)
	if err != nil {
		select {
		case g.failed <- struct{}{}:
		default:
		}
	}
	return err
}

// rewrite rewrites the grant sets from the tracker.
func (g *grantSync) rewrite(ctx context.Context) error {
	g.overflow.Store(false)
	g.mu.Lock()
	defer g.mu.Unlock()
	best := g.wanted(g.now())
	all := make([]firewall.GrantElem, 0, len(best))
	now := g.now() // timeouts start when the kernel takes the batch
	for ap, ends := range best {
		if ends.After(now) {
			all = append(all, firewall.GrantElem{Src: ap.Addr(), Port: ap.Port(), Timeout: ends.Sub(now)})
		} else {
			delete(best, ap)
		}
	}
	if err := g.w.ReplaceGrants(ctx, all); err != nil {
		g.overflow.Store(true)
		return err
	}
	g.written = best
	return nil
}
