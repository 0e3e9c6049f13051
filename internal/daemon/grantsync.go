package daemon

import (
	"context"
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
		kick: make(chan struct{}, 1), written: map[netip.AddrPort]time.Time{}}
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
				g.replace(ctx)
				continue
			}
			if err := g.add(ctx, batch); err != nil {
				g.log.Debug("fast path: incremental grant write failed; rewriting the sets", "err", err)
				g.replace(ctx)
			}
		case <-g.kick:
			if g.overflow.Load() {
				g.replace(ctx)
			}
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

// replace rewrites the grant sets from the tracker.
func (g *grantSync) replace(ctx context.Context) {
	if err := g.replaceNow(ctx); err != nil {
		g.log.Error("fast path: could not write the grant sets; granted sources are judged in user space", "err", err)
	}
}

// replaceNow rewrites the grant sets from the tracker and returns once the
// kernel holds them (a revoke waits for this).
func (g *grantSync) replaceNow(ctx context.Context) error {
	g.overflow.Store(false)
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
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
	all := make([]firewall.GrantElem, 0, len(best))
	now = g.now() // timeouts start when the kernel takes the batch
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
