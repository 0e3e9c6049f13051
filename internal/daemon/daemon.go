// Package daemon is knockwall's life as a running service: it opens the
// queues, puts the static firewall in place, judges packets through the
// verdict engine, keeps the firewall in place (self-healing), mirrors grants
// into the kernel's fast path, reloads its configuration, and on a stop
// leaves the host as closed as the configuration says.
//
// The kernel sits behind small interfaces (queues, firewall backend,
// change watch, clock), so the lifecycle is unit-tested with fakes; the
// end-to-end tests prove the wiring against the real kernel.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/knockwall/knockwall/internal/cluster"
	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/nfq"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// Timing of the daemon's background work.
const (
	// JanitorEvery is how often lapsed grants are removed and logged.
	JanitorEvery = 250 * time.Millisecond
	// WatchEvery is how often the firewall's change generation is polled;
	// a change triggers a full check. Rules removed by someone else are
	// back within about this long (plus one batch).
	WatchEvery = 250 * time.Millisecond
	// CheckEvery is how often the firewall is checked in full regardless
	// of the generation (a change the watch cannot see, such as an
	// iptables-legacy rule replaced by one of the same size).
	CheckEvery = 10 * time.Second
	// KernelStatsEvery is how often the kernel's queue drop counters are
	// read.
	KernelStatsEvery = time.Second
	// RefusedLogEvery limits "grant refused" lines.
	RefusedLogEvery = time.Second
	// LocalAddrsEvery is how often this host's addresses are read again
	// when a service protects routed hosts.
	LocalAddrsEvery = 2 * time.Second
)

// Queue is one bound NFQUEUE as the daemon uses it.
type Queue interface {
	// Fatal delivers an error when the queue stopped for good.
	Fatal() <-chan error
	// Stats is a snapshot of the queue's counters.
	Stats() QueueStats
	Close() error
}

// QueueStats are one queue's counters.
type QueueStats struct {
	Num                              uint16
	Packets, Overruns, VerdictErrors uint64
	Panics, Malformed, Batches       uint64
}

// QueueOpener binds queue num and delivers its packets to h. It returns once
// the queue is bound: only then may traffic be diverted to it.
type QueueOpener func(ctx context.Context, num uint16, h nfq.Handler) (Queue, error)

// Resetter sends IPv6 TCP resets built like the kernel's (package rst).
type Resetter interface {
	Reset(syn []byte) error
	Close() error
}

// Watch returns a number that changes whenever the host's firewall may
// have changed (firewall.Watcher).
type Watch func() (uint64, error)

// Config is what a Daemon is made of.
type Config struct {
	Set *rules.Set
	// Load reads and compiles the configuration again, for a reload; nil
	// makes reloads fail.
	Load func() (*rules.Set, error)
	// Firewall applies the static rules; nil when firewall.manage is
	// false (the operator installs them).
	Firewall firewall.Backend
	// Others are the other backend(s), whose leftovers (rules of an
	// earlier run under another backend) are removed once Firewall's
	// rules are in place, so no packet is queued twice.
	Others []firewall.Backend
	// Watch polls for changes; nil checks the firewall every WatchEvery.
	Watch Watch
	// Events, when set, ticks as soon as the firewall changes (nf_tables
	// notifications), so that rules someone removed are put back at once
	// rather than at the next poll.
	Events func(ctx context.Context) <-chan struct{}
	// OpenQueue binds one queue.
	OpenQueue QueueOpener
	// NewResetter opens a reset sender per queue (IPv4 and IPv6); nil or
	// an error leaves resets to the refuse chain's REJECT by the mark
	// (IPv6 flow label 0).
	NewResetter func() (Resetter, error)
	// NewRoutedResetter opens a sender of routed hosts' resets (IPv4 and
	// IPv6) per queue, for services with hosts; nil or an error leaves
	// them to the kernel's REJECT, one hop higher than the host's own.
	NewRoutedResetter func() (Resetter, error)
	// LocalAddrs lists this host's addresses, polled when a service
	// protects routed hosts.
	LocalAddrs func() ([]netip.Addr, error)
	// KernelStats reads the kernel's counters of the queues.
	KernelStats func(first, count int) (nfq.KernelStats, error)
	// Now is the clock.
	Now func() time.Time
	Log *slog.Logger
	// Version is reported by Status.
	Version string
	// State keeps grants across a clean restart; nil keeps none.
	State StateStore
	// Ready is called once the rules are in place and the queues bound,
	// before the first reload or heal: the time to start serving the
	// control socket and metrics.
	Ready func()
	// Cluster starts sharing grants with peers (cluster.Start), given the
	// daemon as the cluster's host; called before the firewall's rules are
	// applied. nil runs alone.
	Cluster func(cluster.Host) (Sharer, error)
}

// Daemon is one run of knockwall.
type Daemon struct {
	cfg Config
	log *slog.Logger

	tr  *tracker.Tracker
	eng *verdict.Engine

	mu      sync.Mutex // guards set, plan (what Apply last put in place), queues and counters
	set     *rules.Set
	plan    *firewall.Plan
	backend string
	mode    string // firewall.ModeOwned or ModeSelfHeal
	modeWhy error  // why not owned, when the backend could be

	queues   []Queue
	counters []*counters // one per handler
	grants   *grantSync  // nil without the fast path
	started  time.Time

	reloads chan chan error
	stopped chan struct{} // closed when Run returns: no reload is served after
	heals   atomic.Uint64 // times rules were put back after someone removed them
	reloadN atomic.Uint64
	manual  atomic.Uint64 // grants made by an operator

	shareCh      chan shareEvent // nil without a cluster
	shareDropped atomic.Uint64
	sharer       Sharer // guarded by mu; nil until the cluster runs
}

// New prepares a daemon; Run runs it.
func New(cfg Config) (*Daemon, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		return nil, errors.New("daemon: no logger")
	}
	set := cfg.Set
	tr, err := tracker.New(tracker.Config{
		MaxPending: set.Tracker.MaxPending, MaxGrants: set.Tracker.MaxGrants,
		KnockRate: set.Tracker.KnockRate, KnockBurst: set.Tracker.KnockBurst,
	})
	if err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: cfg.Log, tr: tr, set: set, reloads: make(chan chan error), stopped: make(chan struct{})}
	if cfg.Cluster != nil {
		d.shareCh = make(chan shareEvent, shareEvents)
	}
	d.started = cfg.Now()
	d.eng = verdict.New(set, tr, d.started)
	if cfg.Firewall != nil {
		d.backend, d.mode = cfg.Firewall.Name(), firewall.ModeSelfHeal
		if m, ok := cfg.Firewall.(firewall.ModeReporter); ok {
			d.mode, d.modeWhy = m.Mode()
		}
	}
	return d, nil
}

// Engine returns the verdict engine.
func (d *Daemon) Engine() *verdict.Engine { return d.eng }

// Tracker returns the tracker.
func (d *Daemon) Tracker() *tracker.Tracker { return d.tr }

// Set returns the rules in force.
func (d *Daemon) Set() *rules.Set {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.set
}

// fastPath reports whether set asks for the kernel fast path and the
// backend has it.
func (d *Daemon) fastPath(set *rules.Set) bool {
	if !set.Firewall.FastPath || d.cfg.Firewall == nil {
		return false
	}
	_, ok := d.cfg.Firewall.(firewall.GrantWriter)
	return ok
}

func (d *Daemon) newPlan(set *rules.Set) *firewall.Plan {
	return firewall.NewPlan(set, firewall.Options{FastPath: d.fastPath(set)})
}

// Run runs the daemon until ctx ends (a clean stop: nil) or a queue fails
// (the error; the static rules stay, so protected ports stay closed). A
// start that fails leaves any guard that was in place: Apply changes each
// table atomically, and nothing is removed before the new rules are in.
func (d *Daemon) Run(ctx context.Context) error {
	defer close(d.stopped)
	set := d.Set()
	d.restore(set)
	qctx, cancelQueues := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelQueues()
	defer func() {
		for _, q := range d.queues {
			q.Close()
		}
	}()
	plan := d.newPlan(set)
	if gw, ok := d.cfg.Firewall.(firewall.GrantWriter); ok && plan.FastPath {
		// Before the queues, whose handlers post grants to it.
		d.grants = newGrantSync(gw, d.tr, d.cfg.Now, d.log)
		d.grants.setPlan(plan)
	}
	if err := d.startCluster(); err != nil {
		return err
	}
	defer func() {
		if s := d.sharerOf(); s != nil {
			s.Close()
		}
	}()
	var resetters []Resetter
	defer func() {
		for _, r := range resetters {
			r.Close()
		}
	}()
	// Queues first: a packet diverted to a queue nobody holds would pass
	// (--queue-bypass) to the guard and be dropped, so binding first only
	// shortens the time in which protected ports answer nobody.
	routedHosts := len(set.RoutedPrefixes()) > 0
	d.refreshLocal(set)
	// openResetter opens one with open, or warns and leaves the resets to
	// the kernel.
	openResetter := func(open func() (Resetter, error), warn string) Resetter {
		if open == nil {
			return nil
		}
		r, err := open()
		if err != nil {
			d.log.Warn(warn, "err", err)
			return nil
		}
		resetters = append(resetters, r)
		return r
	}
	for i := range set.Queue.Count {
		rs := openResetter(d.cfg.NewResetter, "cannot send resets myself; rejects are left to a REJECT rule by mark (IPv6 ones will carry flow label 0, unlike the kernel's)")
		var routed Resetter
		if routedHosts {
			routed = openResetter(d.cfg.NewRoutedResetter, "cannot send routed hosts' resets myself; they will come one hop higher than the hosts' own")
		}
		w := &overrunWatch{}
		q, err := d.cfg.OpenQueue(qctx, uint16(set.Queue.Num+i), d.newHandler(rs, routed, w))
		if err != nil {
			return err
		}
		w.set(q)
		d.mu.Lock()
		d.queues = append(d.queues, q)
		d.mu.Unlock()
	}

	if fw := d.cfg.Firewall; fw != nil {
		// The kernel may hold grants of the process before (a crash
		// leaves them): this one's tracker decides afresh.
		start := *plan
		start.FreshGrants = true
		if err := fw.Apply(ctx, &start); err != nil {
			return fmt.Errorf("install firewall rules (%s): %w; any guard already in place stays, so protected ports stay closed", fw.Name(), err)
		}
		d.log.Info("firewall rules installed", "backend", fw.Name(), "mode", d.mode, "fast_path", plan.FastPath, "chains", len(plan.Chains))
		if d.modeWhy != nil {
			d.log.Warn("the firewall rules are not owned: another process can change or remove them, and they are put back when it does",
				"backend", fw.Name(), "reason", d.modeWhy.Error())
		}
		for _, o := range d.cfg.Others {
			if err := o.Remove(ctx); err != nil {
				d.log.Debug("no leftovers removed", "backend", o.Name(), "err", err)
			}
		}
		if d.grants != nil {
			d.grants.resync()
		}
	} else {
		d.log.Info("firewall.manage is false: install the static rules yourself (knockwall rules print)")
	}
	d.mu.Lock()
	d.plan = plan
	d.mu.Unlock()
	for _, svc := range set.Services {
		d.log.Info("service", keyService, svc.Name, "ports", fmt.Sprint(svc.Ports), "knocks", len(svc.Sequence),
			keyOpenFor, svc.OpenFor.String(), "closed", svc.Closed.String())
	}
	d.log.Info("ready", "queues", set.Queue.Count, "first_queue", set.Queue.Num)
	if d.cfg.Ready != nil {
		d.cfg.Ready()
	}

	var bg sync.WaitGroup
	bgCtx, stopBG := context.WithCancel(ctx)
	defer func() { stopBG(); bg.Wait() }()
	if d.grants != nil {
		bg.Add(1)
		go func() { defer bg.Done(); d.grants.run(bgCtx) }()
	}
	if d.shareCh != nil {
		bg.Add(1)
		go func() { defer bg.Done(); d.shareLoop(bgCtx) }()
	}

	fatal := make(chan error, len(d.queues))
	for _, q := range d.queues {
		go func() {
			if err, ok := <-q.Fatal(); ok {
				fatal <- err
			}
		}()
	}
	return d.loop(ctx, fatal)
}

func (d *Daemon) loop(ctx context.Context, fatal <-chan error) error {
	janitor := time.NewTicker(JanitorEvery)
	defer janitor.Stop()
	watch := time.NewTicker(WatchEvery)
	defer watch.Stop()
	set := d.Set()
	var lastKernel nfq.KernelStats
	if d.cfg.KernelStats != nil {
		lastKernel, _ = d.cfg.KernelStats(set.Queue.Num, set.Queue.Count)
	}
	nextKernel := d.cfg.Now().Add(KernelStatsEvery)
	nextLocal := d.cfg.Now().Add(LocalAddrsEvery)
	h := &healer{d: d}
	var events <-chan struct{}
	if d.cfg.Events != nil {
		events = d.cfg.Events(ctx)
	}
	for {
		select {
		case <-events:
			h.poll(ctx)
		case <-ctx.Done():
			d.stop(context.WithoutCancel(ctx))
			return nil
		case err := <-fatal:
			d.logStats()
			d.log.Error("queue failed; static rules left in place so protected ports stay closed",
				"err", err, "remove_with", "knockwall rules remove")
			return err
		case done := <-d.reloads:
			done <- d.reload(ctx)
		case <-watch.C:
			h.poll(ctx)
		case <-janitor.C:
			now := d.cfg.Now()
			if d.cfg.KernelStats != nil && now.After(nextKernel) {
				nextKernel = now.Add(KernelStatsEvery)
				set := d.Set()
				if ks, err := d.cfg.KernelStats(set.Queue.Num, set.Queue.Count); err == nil {
					if dq, du := ks.QueueDropped-lastKernel.QueueDropped, ks.UserDropped-lastKernel.UserDropped; dq+du > 0 {
						d.log.Warn("kernel dropped packets: knockwall is overloaded (protected ports stay closed)",
							"queue_full", dq, "socket_full", du, "waiting", ks.Waiting)
					}
					lastKernel = ks
				}
			}
			d.eng.PurgeNonces(now)
			if now.After(nextLocal) {
				nextLocal = now.Add(LocalAddrsEvery)
				d.refreshLocal(d.eng.Rules())
			}
			set := d.eng.Rules()
			for _, e := range d.tr.Expire(now) {
				name := "?"
				if i, ok := set.ServiceByID(e.ID); ok {
					name = set.Services[i].Name
				}
				d.log.Info("expire", keySrc, e.Src.String(), keyService, name)
			}
		}
	}
}

// stop leaves the firewall as firewall.keep_guard says: the guard and the
// mark clearing, or nothing.
func (d *Daemon) stop(ctx context.Context) {
	d.log.Info("shutting down")
	d.mu.Lock()
	plan, set := d.plan, d.set
	d.mu.Unlock()
	d.save(set)
	if fw := d.cfg.Firewall; fw != nil && plan != nil {
		if set.Firewall.KeepGuard {
			if err := fw.Apply(ctx, plan.Stopped()); err != nil {
				d.log.Error("could not remove the diversion; rules left as they were (protected ports stay closed)", "err", err)
			} else {
				d.log.Info("firewall rules removed; the guard stays (firewall.keep_guard), protected ports stay closed",
					"remove_all_with", "knockwall rules remove")
			}
		} else if err := fw.Remove(ctx); err != nil {
			d.log.Error("could not remove the firewall rules", "err", err)
		} else {
			d.log.Warn("firewall rules removed, the guard too (firewall.keep_guard: false): protected ports are now open to whatever the host's own firewall allows")
		}
	}
	d.logStats()
}

// refreshLocal tells the engine this host's addresses, when a service of
// set protects routed hosts (only then does it ask).
func (d *Daemon) refreshLocal(set *rules.Set) {
	if d.cfg.LocalAddrs == nil || len(set.RoutedPrefixes()) == 0 {
		return
	}
	addrs, err := d.cfg.LocalAddrs()
	if err != nil {
		d.log.Warn("cannot read this host's addresses", "err", err)
		return
	}
	d.eng.SetLocal(addrs)
}

// Reload asks the running daemon to read its configuration again. It
// returns the reason when the new configuration is refused (nothing then
// changes).
func (d *Daemon) Reload(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case d.reloads <- done:
	case <-d.stopped:
		return errStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reload swaps in a new configuration: the firewall plan first (one atomic
// step per table; the guard of ports protected before and after is never
// absent), then the engine's rules. Grants of services whose name stays
// survive; the others end. The kernel's grant sets are first narrowed to
// what both configurations grant, so at no moment do they let a source
// reach a port the new configuration does not grant it.
func (d *Daemon) reload(ctx context.Context) error {
	if d.cfg.Load == nil {
		return errors.New("reload: no configuration source")
	}
	set, err := d.cfg.Load()
	if err != nil {
		d.log.Error("reload refused; the running configuration stays", "err", err)
		return err
	}
	old := d.Set()
	if err := sameShape(old, set); err != nil {
		d.log.Error("reload refused; the running configuration stays", "err", err)
		return err
	}
	plan := d.newPlan(set)
	d.mu.Lock()
	prev := d.plan
	d.mu.Unlock()
	if d.grants != nil && prev != nil {
		d.grants.setPorts(commonPorts(prev.GrantPorts, plan.GrantPorts))
		if err := d.grants.replaceNow(ctx); err != nil {
			d.log.Warn("reload: could not narrow the kernel's grant sets before the new rules", "err", err)
		}
	}
	if fw := d.cfg.Firewall; fw != nil {
		if err := fw.Apply(ctx, plan); err != nil {
			d.log.Error("reload: firewall rules could not be applied; the running configuration stays", "err", err)
			if prev != nil {
				_ = fw.Apply(ctx, prev)
				if d.grants != nil {
					d.grants.setPlan(prev)
					d.grants.resync()
				}
			}
			return fmt.Errorf("apply firewall rules: %w", err)
		}
	}
	d.refreshLocal(set)
	now := d.cfg.Now()
	d.eng.SetRules(set, now)
	d.mu.Lock()
	d.set, d.plan = set, plan
	d.mu.Unlock()
	for _, g := range d.tr.Grants(now) {
		if _, ok := set.ServiceByID(g.ID); !ok {
			d.tr.Revoke(g.Src, g.ID)
		}
	}
	if d.grants != nil {
		d.grants.setPlan(plan)
		d.grants.resync()
	}
	d.reloadN.Add(1)
	for _, c := range diffServices(old, set) {
		d.log.Info("reload", keyService, c.name, "change", c.what)
	}
	d.log.Info("reloaded")
	return nil
}

// commonPorts is, per service, the ports both a and b open for its grants.
func commonPorts(a, b map[uint64][]uint16) map[uint64][]uint16 {
	out := make(map[uint64][]uint16, len(a))
	for id, pa := range a {
		for _, p := range pa {
			if slices.Contains(b[id], p) {
				out[id] = append(out[id], p)
			}
		}
	}
	return out
}

// sameShape refuses a reload that changes what only a restart can: the
// queues, the tracker's bounds, the logger, the marks, the backend.
func sameShape(a, b *rules.Set) error {
	switch {
	case a.Queue != b.Queue:
		return errRestart("queue")
	case a.Tracker != b.Tracker:
		return errRestart("tracker")
	case a.Log != b.Log:
		return errRestart("log")
	case a.Firewall.Manage != b.Firewall.Manage || a.Firewall.Backend != b.Firewall.Backend || a.Firewall.FastPath != b.Firewall.FastPath ||
		a.Firewall.OwnedTable != b.Firewall.OwnedTable:
		return errRestart("firewall.manage, backend, fast_path or owned_table")
	case a.Firewall.AcceptMark != b.Firewall.AcceptMark || a.Firewall.RejectMark != b.Firewall.RejectMark || a.Firewall.MarkMask != b.Firewall.MarkMask:
		return errRestart("firewall marks")
	case a.Control != b.Control || a.Metrics != b.Metrics || a.State != b.State:
		return errRestart("control.socket, metrics (listen, token_file) or state.file")
	case !a.Cluster.Equal(&b.Cluster):
		return errRestart("cluster")
	}
	return nil
}

func errRestart(what string) error {
	return fmt.Errorf("%w: %s changed; that takes a restart (systemctl restart knockwall)", rules.ErrInvalid, what)
}

type serviceChange struct{ name, what string }

// diffServices says, per service, what a reload changed.
func diffServices(a, b *rules.Set) []serviceChange {
	var out []serviceChange
	for _, sb := range b.Services {
		i, ok := a.ServiceByID(sb.ID)
		if !ok {
			out = append(out, serviceChange{sb.Name, "added"})
			continue
		}
		if w := describeChange(&a.Services[i], &sb); w != "" {
			out = append(out, serviceChange{sb.Name, w})
		}
	}
	for _, sa := range a.Services {
		if _, ok := b.ServiceByID(sa.ID); !ok {
			out = append(out, serviceChange{sa.Name, "removed (its grants end)"})
		}
	}
	return out
}

func describeChange(a, b *rules.Service) string {
	var what []string
	if fmt.Sprint(a.Ports) != fmt.Sprint(b.Ports) {
		what = append(what, fmt.Sprintf("ports %v → %v", a.Ports, b.Ports))
	}
	if fmt.Sprint(a.Sequence) != fmt.Sprint(b.Sequence) {
		what = append(what, "sequence changed (knock progress dropped)")
	}
	if a.OpenFor != b.OpenFor || a.StepTimeout != b.StepTimeout {
		what = append(what, fmt.Sprintf("open_for %s → %s, step_timeout %s → %s", a.OpenFor, b.OpenFor, a.StepTimeout, b.StepTimeout))
	}
	if a.Closed != b.Closed {
		what = append(what, fmt.Sprintf("closed %s → %s", a.Closed, b.Closed))
	}
	if (a.SPA == nil) != (b.SPA == nil) || (a.Rotate == nil) != (b.Rotate == nil) {
		what = append(what, "spa/rotate changed")
	}
	if len(what) == 0 {
		return ""
	}
	return fmt.Sprint(what)
}

// Revoke ends src's grants (of service, or every service when service is
// "") at once: in the tracker, then in the kernel's fast path, before it
// returns. It returns the grants it ended.
func (d *Daemon) Revoke(ctx context.Context, src netip.Addr, service string, who string) ([]tracker.GrantInfo, error) {
	var id uint64
	if service != "" {
		set := d.eng.Rules()
		i, ok := set.ServiceByName([]byte(service))
		if !ok {
			return nil, fmt.Errorf("no service %q", service)
		}
		id = set.Services[i].ID
	}
	ended := d.tr.Revoke(src.Unmap(), id)
	if s := d.sharerOf(); s != nil {
		// Every service's, when all are revoked: a peer may hold a grant
		// this node never saw.
		at := d.cfg.Now()
		for _, svc := range d.eng.Rules().Services {
			if id == 0 || svc.ID == id {
				s.LocalRevoke(src.Unmap(), svc.Name, at)
			}
		}
	}
	if d.grants != nil && len(ended) > 0 {
		if err := d.grants.replaceNow(ctx); err != nil {
			return ended, fmt.Errorf("revoked in knockwall, but the kernel's fast path could not be updated: %w", err)
		}
	}
	d.log.Info("revoke", keySrc, src.String(), keyService, service, "grants", len(ended), "by", who)
	return ended, nil
}

// Grant grants service to src until now+dur, as an operator asks: at once
// in the tracker and in the kernel's fast path.
func (d *Daemon) Grant(ctx context.Context, src netip.Addr, service string, dur time.Duration, who string) (GrantEntry, error) {
	set := d.eng.Rules()
	i, ok := set.ServiceByName([]byte(service))
	if !ok {
		return GrantEntry{}, fmt.Errorf("no service %q", service)
	}
	svc := &set.Services[i]
	if dur <= 0 {
		dur = svc.OpenFor
	}
	src = src.Unmap()
	now := d.cfg.Now()
	until := now.Add(dur)
	g := tracker.GrantInfo{Src: src, ID: svc.ID, Expires: until, How: tracker.MethodManual, Limited: svc.Connections > 0, Left: svc.Connections}
	if !d.tr.Put(g, now) {
		return GrantEntry{}, tracker.ErrGrantTableFull
	}
	e := GrantEntry{Src: src, Service: svc.Name, Expires: until, How: g.How, Limited: g.Limited, Left: g.Left}
	if s := d.sharerOf(); s != nil {
		s.LocalGrant(src, svc.Name, serviceHash(svc), wall(until, now), uint8(g.How), g.Limited, g.Left, now)
		e.Origin = s.Origin(src, svc.Name)
	}
	if d.grants != nil {
		if err := d.grants.replaceNow(ctx); err != nil {
			return e, fmt.Errorf("granted in knockwall, but the kernel's fast path could not be updated: %w", err)
		}
	}
	d.manual.Add(1)
	d.log.Info("grant", keySrc, src.String(), keyService, svc.Name, "by", "manual", "for", dur.String(), "operator", who)
	return e, nil
}

// GrantEntry is one live grant as an operator sees it.
type GrantEntry struct {
	Src     netip.Addr
	Service string // "" when the service is gone from the configuration
	Expires time.Time
	How     tracker.Method
	// Limited: a one-shot grant with Left new connections left.
	Limited bool
	Left    int
	// Origin is the cluster node that made the grant; "" without a
	// cluster.
	Origin string
}

// Grants lists the live grants, sorted by source and service.
func (d *Daemon) Grants() []GrantEntry {
	set := d.eng.Rules()
	s := d.sharerOf()
	var out []GrantEntry
	for _, g := range d.tr.Grants(d.cfg.Now()) {
		e := GrantEntry{Src: g.Src, Expires: g.Expires, How: g.How, Limited: g.Limited, Left: g.Left}
		if i, ok := set.ServiceByID(g.ID); ok {
			e.Service = set.Services[i].Name
			if s != nil {
				e.Origin = s.Origin(g.Src, e.Service)
			}
		}
		out = append(out, e)
	}
	return out
}

// ServiceNames lists the names of the services in force, in configuration
// order. Unlike Services it does not walk the tracker.
func (d *Daemon) ServiceNames() []string {
	set := d.eng.Rules()
	out := make([]string, len(set.Services))
	for i := range set.Services {
		out[i] = set.Services[i].Name
	}
	return out
}

// ServiceStatus is one service's state.
type ServiceStatus struct {
	Name    string
	Ports   []uint16
	Grants  int // live grants
	Pending int // sources with knock progress toward it
}

// Services lists the services in force with their grants and pending
// sources.
func (d *Daemon) Services() []ServiceStatus {
	set := d.eng.Rules()
	pending := d.eng.Pending()
	grants := map[uint64]int{}
	for _, g := range d.tr.Grants(d.cfg.Now()) {
		grants[g.ID]++
	}
	out := make([]ServiceStatus, 0, len(set.Services))
	for _, svc := range set.Services {
		out = append(out, ServiceStatus{Name: svc.Name, Ports: svc.Ports, Grants: grants[svc.ID], Pending: pending[svc.ID]})
	}
	return out
}
