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
	// timeouts in jiffies and rounds up, and an element must never outlive
	// its grant in the tracker.
	grantMargin = 20 * time.Millisecond
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
func (g *grantSync) setPlan(p *firewall.Plan) {
	g.mu.Lock()
	g.ports = p.GrantPorts
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

// add writes the elements of new or extended grants.
func (g *grantSync) add(ctx context.Context, batch []grantEvent) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var add, del []firewall.GrantElem
	for _, ev := range batch {
		until, ok := g.tr.Expiry(ev.src, ev.id, now)
		if !ok {
			continue
		}
		for _, p := range g.ports[ev.id] {
			ap := netip.AddrPortFrom(ev.src, p)
			ends := until.Add(-grantMargin)
			if !ends.After(now) {
				continue
			}
			if w, ok := g.written[ap]; ok && w.After(now) {
				if !ends.After(w) {
					continue // the kernel holds it at least as long already
				}
				// Before Linux 6.12 adding an element that exists
				// leaves its timeout: delete it in the same batch.
				del = append(del, firewall.GrantElem{Src: ev.src, Port: p})
			}
			add = append(add, firewall.GrantElem{Src: ev.src, Port: p, Timeout: ends.Sub(now)})
			g.written[ap] = ends
		}
	}
	if len(add) == 0 {
		return nil
	}
	return g.w.UpdateGrants(ctx, add, del)
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
		for _, p := range g.ports[gi.ID] {
			ap := netip.AddrPortFrom(gi.Src, p)
			if ends := gi.Expires.Add(-grantMargin); ends.After(now) && ends.After(best[ap]) {
				best[ap] = ends
			}
		}
	}
	all := make([]firewall.GrantElem, 0, len(best))
	for ap, ends := range best {
		all = append(all, firewall.GrantElem{Src: ap.Addr(), Port: ap.Port(), Timeout: ends.Sub(now)})
	}
	if err := g.w.ReplaceGrants(ctx, all); err != nil {
		g.overflow.Store(true)
		return err
	}
	g.written = best
	return nil
}
