package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/cluster"
	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/nfq"
	"github.com/knockwall/knockwall/internal/pkttest"
	"github.com/knockwall/knockwall/internal/state"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
)

// waitFor bounds every wait on the daemon's goroutines.
const waitFor = 5 * time.Second

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// ---------------------------------------------------------------- fakes

// events is one ordered record of what the fakes were asked, across them.
type events struct {
	mu  sync.Mutex
	log []string
	// changed is closed and replaced on every event.
	changed chan struct{}
}

func newEvents() *events { return &events{changed: make(chan struct{})} }

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	e.log = append(e.log, fmt.Sprintf(format, args...))
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

// wait waits until an event equal to want has been recorded.
func (e *events) wait(t *testing.T, want string) {
	t.Helper()
	e.waitN(t, want, 1)
}

// waitN waits until n events equal to want have been recorded.
func (e *events) waitN(t *testing.T, want string, n int) {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	for {
		e.mu.Lock()
		got, ch := 0, e.changed
		for _, l := range e.log {
			if l == want {
				got++
			}
		}
		e.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("no %q within %v; events: %q", want, waitFor, e.list())
		}
	}
}

// fakeQueue is a queue fed by a channel: each packet sent is judged by the
// daemon's handler and the answer comes back on answers.
type fakeQueue struct {
	num     uint16
	pkts    chan []byte
	answers chan nfq.Answer
	fatal   chan error
	closed  atomic.Bool
}

func (q *fakeQueue) Fatal() <-chan error { return q.fatal }
func (q *fakeQueue) Stats() QueueStats   { return QueueStats{Num: q.num} }
func (q *fakeQueue) Close() error        { q.closed.Store(true); return nil }

// judge sends pkt through the queue and returns the daemon's answer.
func (q *fakeQueue) judge(t *testing.T, pkt []byte) nfq.Answer {
	t.Helper()
	select {
	case q.pkts <- pkt:
	case <-time.After(waitFor):
		t.Fatal("the queue takes no packet")
	}
	select {
	case a := <-q.answers:
		return a
	case <-time.After(waitFor):
		t.Fatal("no answer")
	}
	return nfq.Answer{}
}

// fakeBackend records Apply, Remove and Check; Check reports missing.
type fakeBackend struct {
	name string
	ev   *events

	mu       sync.Mutex
	applied  []*firewall.Plan
	applyErr error
	missing  []string
	onApply  func(p *firewall.Plan)
}

func (b *fakeBackend) Name() string { return b.name }

func (b *fakeBackend) Apply(_ context.Context, p *firewall.Plan) error {
	b.mu.Lock()
	err, on := b.applyErr, b.onApply
	if err == nil {
		b.applied = append(b.applied, p)
		b.missing = nil // in place now
	}
	b.mu.Unlock()
	if on != nil {
		on(p)
	}
	if err != nil {
		b.ev.add("%s apply failed", b.name)
		return err
	}
	b.ev.add("%s apply %s", b.name, planKind(p))
	return nil
}

func (b *fakeBackend) Remove(context.Context) error { b.ev.add("%s remove", b.name); return nil }

func (b *fakeBackend) Check(context.Context, *firewall.Plan) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ev.add("%s check", b.name)
	return slices.Clone(b.missing), nil
}

func (b *fakeBackend) Render(io.Writer, *firewall.Plan) error { return nil }
func (b *fakeBackend) Close() error                           { return nil }

func (b *fakeBackend) plans() []*firewall.Plan {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.applied)
}

func (b *fakeBackend) set(f func(b *fakeBackend)) {
	b.mu.Lock()
	f(b)
	b.mu.Unlock()
}

// planKind says "running" for a plan with diversion and "stopped" for one
// that holds kept rules only.
func planKind(p *firewall.Plan) string {
	for _, c := range p.Chains {
		for _, r := range c.Rules {
			if !r.Role.Kept() {
				return "running"
			}
		}
	}
	return "stopped"
}

// fakeFastBackend is a backend with the kernel fast path. Its grant sets
// are a map, element → timeout; failWrites makes that many next writes
// fail, as a netlink error would, changing nothing.
type fakeFastBackend struct {
	*fakeBackend
	gmu        sync.Mutex
	written    []firewall.GrantElem // what the last ReplaceGrants wrote, and UpdateGrants added since
	sets       map[netip.AddrPort]time.Duration
	failWrites int
	writes     int // attempts, failed ones included
}

var errWriteFault = errors.New("netlink: injected fault")

// fault counts a write and says whether it fails. Called with gmu held.
func (b *fakeFastBackend) fault() error {
	b.writes++
	if b.failWrites > 0 {
		b.failWrites--
		b.ev.add("%s grant write failed", b.name)
		return errWriteFault
	}
	if b.sets == nil {
		b.sets = map[netip.AddrPort]time.Duration{}
	}
	return nil
}

func (b *fakeFastBackend) UpdateGrants(_ context.Context, add, del []firewall.GrantElem) error {
	b.gmu.Lock()
	defer b.gmu.Unlock()
	if err := b.fault(); err != nil {
		return err
	}
	for _, e := range del {
		delete(b.sets, netip.AddrPortFrom(e.Src, e.Port))
	}
	for _, e := range add {
		b.sets[netip.AddrPortFrom(e.Src, e.Port)] = e.Timeout
	}
	b.written = append(b.written, add...)
	b.ev.add("%s update grants", b.name)
	return nil
}

func (b *fakeFastBackend) ReplaceGrants(_ context.Context, all []firewall.GrantElem) error {
	b.gmu.Lock()
	defer b.gmu.Unlock()
	if err := b.fault(); err != nil {
		return err
	}
	clear(b.sets)
	for _, e := range all {
		b.sets[netip.AddrPortFrom(e.Src, e.Port)] = e.Timeout
	}
	b.written = slices.Clone(all)
	var s []string
	for _, e := range all {
		s = append(s, netip.AddrPortFrom(e.Src, e.Port).String())
	}
	slices.Sort(s)
	b.ev.add("%s replace grants [%s]", b.name, strings.Join(s, " "))
	return nil
}

func (b *fakeFastBackend) ReadGrants(context.Context) ([]firewall.GrantElem, error) {
	b.gmu.Lock()
	defer b.gmu.Unlock()
	var out []firewall.GrantElem
	for ap, d := range b.sets {
		out = append(out, firewall.GrantElem{Src: ap.Addr(), Port: ap.Port(), Timeout: d})
	}
	return out, nil
}

// holds reports whether the grant sets hold ap.
func (b *fakeFastBackend) holds(ap netip.AddrPort) bool {
	b.gmu.Lock()
	defer b.gmu.Unlock()
	_, ok := b.sets[ap]
	return ok
}

// fakeState is a state store in memory.
type fakeState struct {
	load    state.Snapshot
	loadErr error
	mu      sync.Mutex
	saved   []state.Snapshot
}

func (s *fakeState) Load() (state.Snapshot, error) { return s.load, s.loadErr }
func (s *fakeState) Save(snap state.Snapshot) error {
	s.mu.Lock()
	s.saved = append(s.saved, snap)
	s.mu.Unlock()
	return nil
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a log buffer the daemon's goroutines may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ---------------------------------------------------------------- harness

// testSet is ssh on port 22 behind 7000, 8000, 9000/udp, with mod applied.
func testSet(t *testing.T, mod func(c *rules.Config)) *rules.Set {
	t.Helper()
	c := rules.Defaults()
	c.Tracker.KnockRate = 0
	ssh := rules.ServiceDefaults()
	ssh.Ports, ssh.Sequence = []int{22}, []string{"7000", "8000", "9000/udp"}
	c.Services = map[string]rules.ServiceConfig{"ssh": ssh}
	if mod != nil {
		mod(&c)
	}
	set, err := rules.Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

type harness struct {
	d      *Daemon
	ev     *events
	fw     *fakeBackend
	fast   *fakeFastBackend // nil without the fast path
	other  *fakeBackend
	queue  *fakeQueue
	clock  *clock
	log    *syncBuffer
	ready  chan struct{}
	done   chan error
	cancel context.CancelFunc
}

type harnessOptions struct {
	set      *rules.Set
	fastPath bool // the backend has the fast path
	applyErr error
	load     func() (*rules.Set, error)
	state    StateStore
	watch    Watch
	at       time.Time // when the daemon starts; zero: t0
	cluster  func(cluster.Host) (Sharer, error)
}

// start runs a daemon on fakes; it returns once the daemon is ready (or
// has returned, when it fails to start).
func start(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	h := &harness{ev: newEvents(), clock: &clock{t: t0}, log: &syncBuffer{}, ready: make(chan struct{}), done: make(chan error, 1)}
	if !o.at.IsZero() {
		h.clock.t = o.at
	}
	if o.set == nil {
		o.set = testSet(t, nil)
	}
	h.fw = &fakeBackend{name: "nftables", ev: h.ev, applyErr: o.applyErr}
	h.other = &fakeBackend{name: "iptables", ev: h.ev}
	var fw firewall.Backend = h.fw
	if o.fastPath {
		h.fast = &fakeFastBackend{fakeBackend: h.fw}
		fw = h.fast
	}
	h.queue = &fakeQueue{pkts: make(chan []byte), answers: make(chan nfq.Answer), fatal: make(chan error, 1)}
	d, err := New(Config{
		Set: o.set, Load: o.load, Firewall: fw, Others: []firewall.Backend{h.other}, Watch: o.watch,
		OpenQueue: func(ctx context.Context, num uint16, handler nfq.Handler) (Queue, error) {
			h.queue.num = num
			h.ev.add("open queue %d", num)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case p := <-h.queue.pkts:
						h.queue.answers <- handler(p, 0)
					}
				}
			}()
			return h.queue, nil
		},
		Now: h.clock.Now, Log: slog.New(slog.NewJSONHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		State: o.state, Ready: func() { close(h.ready) }, Cluster: o.cluster,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.d = d
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(waitFor):
			t.Error("Run did not return after its context ended")
		}
		if t.Failed() {
			t.Logf("events: %q\nlog:\n%s", h.ev.list(), h.log.String())
		}
	})
	select {
	case <-h.ready:
	case err := <-h.done:
		h.done <- err // for the test to read
	case <-time.After(waitFor):
		t.Fatal("daemon not ready")
	}
	return h
}

// stop ends Run as a signal would and returns its result.
func (h *harness) stop(t *testing.T) error {
	t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- err
		return err
	case <-time.After(waitFor):
		t.Fatal("Run did not return")
	}
	return nil
}

// ---------------------------------------------------------------- tests

// TestStart: the queue is bound first, then the plan applied, then the
// other backend's leftovers removed; the plan is the set's.
func TestStart(t *testing.T) {
	h := start(t, harnessOptions{})
	want := []string{"open queue 0", "nftables apply running", "iptables remove"}
	if got := h.ev.list(); !slices.Equal(got[:min(len(got), 3)], want) {
		t.Fatalf("events %q, want %q first", got, want)
	}
	plans := h.fw.plans()
	wantPlan := firewall.NewPlan(h.d.Set(), firewall.Options{})
	if len(plans) != 1 || len(plans[0].Chains) != len(wantPlan.Chains) || plans[0].FastPath {
		t.Errorf("applied %d plan(s); want the set's plan without the fast path", len(plans))
	}
}

// TestStartApplyFails: a failed Apply ends Run with the error, removes
// nothing (neither its own rules nor the other backend's) and closes the
// queue.
func TestStartApplyFails(t *testing.T) {
	h := start(t, harnessOptions{applyErr: errors.New("netlink: operation not permitted")})
	err := <-h.done
	h.done <- err
	if err == nil || !strings.Contains(err.Error(), "install firewall rules (nftables): netlink: operation not permitted") {
		t.Fatalf("Run = %v; want the Apply error", err)
	}
	for _, e := range h.ev.list() {
		if strings.Contains(e, "remove") {
			t.Errorf("a failed start removed rules: %q", h.ev.list())
		}
	}
	if !h.queue.closed.Load() {
		t.Error("the queue was left open")
	}
	select {
	case <-h.ready:
		t.Error("Ready was called for a failed start")
	default:
	}
}

// TestStop: a clean stop applies the stopped plan (guard kept) or removes
// everything (keep_guard false), and returns nil.
func TestStop(t *testing.T) {
	for _, tt := range []struct {
		keepGuard bool
		want      string
	}{{true, "nftables apply stopped"}, {false, "nftables remove"}} {
		t.Run(fmt.Sprintf("keep_guard %t", tt.keepGuard), func(t *testing.T) {
			h := start(t, harnessOptions{set: testSet(t, func(c *rules.Config) { c.Firewall.KeepGuard = tt.keepGuard })})
			if err := h.stop(t); err != nil {
				t.Fatalf("Run = %v after a clean stop", err)
			}
			got := h.ev.list()
			if got[len(got)-1] != tt.want || slices.Contains(got, "nftables apply stopped") != tt.keepGuard {
				t.Fatalf("events %q; want the stop to end with %q", got, tt.want)
			}
			if tt.keepGuard {
				plans := h.fw.plans()
				if stopped := plans[len(plans)-1]; len(stopped.Chains) == 0 {
					t.Errorf("the stopped plan keeps no chain: the guard is gone")
				}
			}
		})
	}
}

// TestQueueFatal: a queue that fails for good ends Run with its error and
// leaves the rules as they are.
func TestQueueFatal(t *testing.T) {
	h := start(t, harnessOptions{})
	h.queue.fatal <- errors.New("netlink socket closed")
	select {
	case err := <-h.done:
		h.done <- err
		if err == nil || !strings.Contains(err.Error(), "netlink socket closed") {
			t.Fatalf("Run = %v; want the queue's error", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not return after a queue failed")
	}
	if got := h.ev.list(); !slices.Equal(got, []string{"open queue 0", "nftables apply running", "iptables remove"}) {
		t.Errorf("events %q; a failed queue must change no rule", got)
	}
}

// TestReloadRefused: a configuration that does not compile, or changes
// what takes a restart, is refused with an error wrapping
// rules.ErrInvalid, and nothing changes: no Apply, the same rules.
func TestReloadRefused(t *testing.T) {
	bad := func() (*rules.Set, error) {
		c := rules.Defaults()
		ssh := rules.ServiceDefaults()
		ssh.Ports, ssh.Sequence = []int{22}, []string{"22"}
		c.Services = map[string]rules.ServiceConfig{"ssh": ssh}
		return rules.Compile(c)
	}
	for _, tt := range []struct {
		name string
		load func(t *testing.T) func() (*rules.Set, error)
		want string
	}{
		{"does not compile", func(*testing.T) func() (*rules.Set, error) { return bad }, "services.ssh.sequence[0]"},
		{"queue changed", func(t *testing.T) func() (*rules.Set, error) {
			s := testSet(t, func(c *rules.Config) { c.Queue.Num = 7 })
			return func() (*rules.Set, error) { return s, nil }
		}, "queue changed"},
		{"control socket changed", func(t *testing.T) func() (*rules.Set, error) {
			s := testSet(t, func(c *rules.Config) { c.Control.Socket = "/run/other.sock" })
			return func() (*rules.Set, error) { return s, nil }
		}, "control.socket"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, harnessOptions{load: tt.load(t)})
			before, rulesBefore := h.d.Set(), h.d.Engine().Rules()
			applies := len(h.fw.plans())
			err := h.d.Reload(context.Background())
			if !errors.Is(err, rules.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Reload = %v; want an error wrapping rules.ErrInvalid naming %s", err, tt.want)
			}
			if h.d.Set() != before || h.d.Engine().Rules() != rulesBefore || len(h.fw.plans()) != applies || h.d.Stats().Reloads != 0 {
				t.Errorf("a refused reload changed something")
			}
		})
	}
}

// TestReload: a good configuration's plan is applied while the engine
// still judges by the old rules; then the engine swaps.
func TestReload(t *testing.T) {
	next := testSet(t, func(c *rules.Config) {
		web := rules.ServiceDefaults()
		web.Ports, web.Sequence = []int{443}, []string{"10001", "10002", "10003"}
		c.Services["web"] = web
	})
	h := start(t, harnessOptions{load: func() (*rules.Set, error) { return next, nil }})
	old := h.d.Engine().Rules()
	var atApply *rules.Set
	h.fw.set(func(b *fakeBackend) { b.onApply = func(*firewall.Plan) { atApply = h.d.Engine().Rules() } })
	if err := h.d.Reload(context.Background()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if atApply != old {
		t.Errorf("the engine had swapped rules before the new plan was applied")
	}
	if h.d.Engine().Rules() != next || h.d.Set() != next || h.d.Stats().Reloads != 1 {
		t.Errorf("after the reload the engine does not judge by the new rules")
	}
	plans := h.fw.plans()
	if got := plans[len(plans)-1]; got.Chains == nil || len(got.Chains) != len(firewall.NewPlan(next, firewall.Options{}).Chains) {
		t.Errorf("the last plan applied is not the new set's")
	}
}

// TestReloadNarrowsGrants: a reload that drops a service and a port ends
// the grants they held. The kernel's grant sets lose their elements before
// the new rules are applied, so no element outlives what the new
// configuration grants; the tracker forgets the dropped service's grants.
func TestReloadNarrowsGrants(t *testing.T) {
	withWeb := func(ports ...int) *rules.Set {
		return testSet(t, func(c *rules.Config) {
			ssh := c.Services["ssh"]
			ssh.Ports = ports
			c.Services["ssh"] = ssh
			web := rules.ServiceDefaults()
			web.Ports, web.Sequence = []int{443}, []string{"10001", "10002", "10003"}
			c.Services["web"] = web
		})
	}
	next := testSet(t, nil) // ssh on 22 only, no web
	h := start(t, harnessOptions{set: withWeb(22, 2222), fastPath: true, load: func() (*rules.Set, error) { return next, nil }})
	src := netip.MustParseAddr("10.0.0.5")
	now := h.clock.Now()
	for _, name := range []string{"ssh", "web"} {
		if _, err := h.d.Grant(context.Background(), src, name, time.Minute, "test"); err != nil {
			t.Fatalf("Grant %s: %v", name, err)
		}
	}
	h.ev.wait(t, "nftables replace grants [10.0.0.5:22 10.0.0.5:2222 10.0.0.5:443]")
	n := len(h.ev.list())
	if err := h.d.Reload(context.Background()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	got := h.ev.list()[n:]
	narrow := slices.Index(got, "nftables replace grants [10.0.0.5:22]")
	apply := slices.Index(got, "nftables apply running")
	if narrow < 0 || apply < 0 || narrow > apply {
		t.Errorf("events of the reload %q: want the grant sets narrowed to 10.0.0.5:22 before the apply", got)
	}
	for _, g := range h.d.Tracker().Grants(now) {
		if _, ok := next.ServiceByID(g.ID); !ok {
			t.Errorf("the tracker still holds %v's grant of a service the reload removed", g.Src)
		}
	}
	if len(h.d.Tracker().Grants(now)) != 1 {
		t.Errorf("grants after the reload: %v, want ssh's alone", h.d.Tracker().Grants(now))
	}
}

// TestReloadAfterStop: a reload asked of a daemon that has stopped
// returns at once.
func TestReloadAfterStop(t *testing.T) {
	h := start(t, harnessOptions{load: func() (*rules.Set, error) { return nil, errors.New("unused") }})
	h.stop(t)
	if err := h.d.Reload(context.Background()); !errors.Is(err, errStopped) {
		t.Fatalf("Reload after the stop = %v, want errStopped", err)
	}
}

// TestHealRunning: rules removed while the daemon runs are put back when
// the watch's generation moves, and the fast path's grants rewritten.
func TestHealRunning(t *testing.T) {
	var gen atomic.Uint64
	h := start(t, harnessOptions{fastPath: true, watch: func() (uint64, error) { return gen.Load(), nil }})
	h.ev.wait(t, "nftables check") // the first poll takes the generation as its base
	h.fw.set(func(b *fakeBackend) { b.missing = []string{"chain divert"} })
	applies := len(h.fw.plans())
	gen.Add(1)
	h.ev.waitN(t, "nftables apply running", 2)
	// The count follows the apply; the fast path's rewrite follows it.
	h.ev.waitN(t, "nftables replace grants []", 2)
	deadline := time.Now().Add(waitFor)
	for h.d.Stats().Heals != 1 && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if h.d.Stats().Heals != 1 || len(h.fw.plans()) != applies+1 {
		t.Fatalf("heals %d, applies %d → %d; want one heal", h.d.Stats().Heals, applies, len(h.fw.plans()))
	}
	if !strings.Contains(h.log.String(), `"msg":"firewall rules restored"`) {
		t.Error("the repair was not logged")
	}
}

// TestHealPoll: when the healer checks and what it does, step by step on
// the fake clock: only a moved generation (or CheckEvery) makes it check,
// and only missing rules make it apply.
func TestHealPoll(t *testing.T) {
	set := testSet(t, nil)
	ev := newEvents()
	fw := &fakeBackend{name: "nftables", ev: ev}
	clk := &clock{t: t0}
	var gen uint64
	d, err := New(Config{Set: set, Firewall: fw, Now: clk.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Watch: func() (uint64, error) { return gen, nil }})
	if err != nil {
		t.Fatal(err)
	}
	d.plan = d.newPlan(set)
	h := &healer{d: d}
	ctx := context.Background()
	steps := []struct {
		name         string
		do           func()
		check, apply bool
	}{
		{"first poll takes the base", func() {}, true, false},
		{"nothing moved", func() { clk.advance(WatchEvery) }, false, false},
		{"generation moved, all in place", func() { gen++ }, true, false},
		{"generation moved, rules missing", func() { gen++; fw.missing = []string{"guard"} }, true, true},
		{"our own apply is the new base", func() {}, false, false},
		{"CheckEvery passed", func() { clk.advance(CheckEvery) }, true, false},
	}
	for _, s := range steps {
		s.do()
		n := len(ev.list())
		h.poll(ctx)
		got := ev.list()[n:]
		if slices.Contains(got, "nftables check") != s.check || slices.Contains(got, "nftables apply running") != s.apply {
			t.Errorf("%s: %q; want check %t, apply %t", s.name, got, s.check, s.apply)
		}
	}
	if d.heals.Load() != 1 {
		t.Errorf("heals = %d, want 1", d.heals.Load())
	}
}

// TestState: grants saved at the last stop are restored before the first
// packet (a SYN from the holder passes at once) and reach the fast path;
// lapsed ones and ones of a service gone are not; a clean stop saves the
// live grants.
func TestState(t *testing.T) {
	set := testSet(t, func(c *rules.Config) {
		web := rules.ServiceDefaults()
		web.Ports, web.Sequence, web.Connections = []int{443}, []string{"10001", "10002", "10003"}, 3
		c.Services["web"] = web
	})
	ssh, web := set.Services[0], set.Services[1]
	holder, oneShot := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	st := &fakeState{load: state.Snapshot{Version: state.Version, Saved: t0.Add(-time.Minute), Services: savedServices(set), Grants: []state.Grant{
		{Src: holder, Service: "ssh", ServiceID: ssh.ID, Expires: t0.Add(10 * time.Second), How: "sequence"},
		{Src: oneShot, Service: "web", ServiceID: web.ID, Expires: t0.Add(time.Hour), How: "manual", Limited: true, Left: 2, LastPort: 4000},
		{Src: netip.MustParseAddr("10.0.0.4"), Service: "ssh", ServiceID: ssh.ID, Expires: t0.Add(-time.Second), How: "sequence"},
		{Src: netip.MustParseAddr("10.0.0.5"), Service: "db", ServiceID: 99, Expires: t0.Add(time.Hour), How: "spa"},
	}}}
	h := start(t, harnessOptions{set: set, fastPath: true, state: st})
	got := h.d.Grants()
	if len(got) != 2 || got[0].Src != holder || !got[0].Expires.Equal(t0.Add(10*time.Second)) || got[0].How != tracker.MethodSequence ||
		got[1].Src != oneShot || !got[1].Limited || got[1].Left != 2 || got[1].How != tracker.MethodManual {
		t.Fatalf("restored %+v", got)
	}
	if a := h.queue.judge(t, pkttest.SYN(holder, netip.AddrPortFrom(server4, 22))); !a.Accept || a.Mark&rules.DefaultAcceptMark == 0 {
		t.Errorf("the restored holder's SYN: %+v; want accepted with the accept mark", a)
	}
	// Grants of one-shot services stay out of the kernel's sets (the
	// daemon counts their connections).
	h.ev.wait(t, "nftables replace grants [10.0.0.2:22]")
	if !strings.Contains(h.log.String(), `"msg":"grants restored","restored":2,"lapsed":1,"dropped":1`) {
		t.Errorf("no summary of the restore in the log")
	}

	h.clock.advance(2 * time.Second)
	h.stop(t)
	if len(st.saved) != 1 {
		t.Fatalf("saved %d times, want once", len(st.saved))
	}
	saved := st.saved[0]
	if !saved.Saved.Equal(t0.Add(2*time.Second)) || len(saved.Grants) != 2 {
		t.Fatalf("saved %+v", saved)
	}
	want := state.Grant{Src: holder, Service: "ssh", ServiceID: ssh.ID, Expires: t0.Add(10 * time.Second), How: "sequence"}
	if g := saved.Grants[0]; g.Src != want.Src || g.Service != want.Service || g.ServiceID != want.ServiceID || !g.Expires.Equal(want.Expires) || g.How != want.How || g.Limited {
		t.Errorf("saved %+v, want %+v", g, want)
	}
	// The SYN above was the holder's, not the one-shot grant's: 2 left.
	if g := saved.Grants[1]; !g.Limited || g.Left != 2 || g.LastPort != 4000 {
		t.Errorf("saved one-shot %+v", g)
	}
}

// TestStateUnreadable: a state store that cannot be read is logged at
// WARN and the daemon starts with no grant.
func TestStateUnreadable(t *testing.T) {
	h := start(t, harnessOptions{state: &fakeState{loadErr: fmt.Errorf("state file /x: %w: writable by group or others", state.ErrForeign)}})
	if len(h.d.Grants()) != 0 {
		t.Error("grants from an unreadable state file")
	}
	if !strings.Contains(h.log.String(), `"level":"WARN","msg":"state file ignored; starting with no grant"`) {
		t.Errorf("no WARN line:\n%s", h.log.String())
	}
}

// TestRestoreGrant: a restart never lengthens or widens a grant.
func TestRestoreGrant(t *testing.T) {
	set := testSet(t, func(c *rules.Config) {
		oneShot := rules.ServiceDefaults()
		oneShot.Ports, oneShot.Sequence, oneShot.Connections = []int{443}, []string{"10001", "10002", "10003"}, 3
		c.Services["web"] = oneShot
	})
	ssh, web := set.Services[0], set.Services[1] // sorted by name
	if ssh.Name != "ssh" || web.Name != "web" {
		t.Fatalf("services %s, %s", ssh.Name, web.Name)
	}
	src := netip.MustParseAddr("::ffff:10.0.0.2")
	now, saved := t0, t0.Add(-10*time.Second)
	g := func(svc rules.Service, expires time.Time, how string) state.Grant {
		return state.Grant{Src: src, Service: svc.Name, ServiceID: svc.ID, Expires: expires, How: how}
	}
	tests := []struct {
		name      string
		in        state.Grant
		saved     time.Time
		wantUntil time.Time // zero: not restored
		wantWhy   string
		wantLeft  int // -1: not limited
	}{
		{"live knock grant keeps its expiry", g(ssh, now.Add(20*time.Second), "sequence"), saved, now.Add(20 * time.Second), "", -1},
		{"knock grant capped at open_for", g(ssh, now.Add(time.Hour), "spa"), saved, now.Add(ssh.OpenFor), "", -1},
		{"manual grant keeps its length", g(ssh, now.Add(time.Hour), "manual"), saved, now.Add(time.Hour), "", -1},
		{"clock set back: no more than was left", g(ssh, now.Add(time.Hour), "manual"), now.Add(30 * time.Minute), now.Add(30 * time.Minute), "", -1},
		{"no saved time: the expiry", g(ssh, now.Add(time.Hour), "manual"), time.Time{}, now.Add(time.Hour), "", -1},
		{"lapsed", g(ssh, now, "sequence"), saved, time.Time{}, whyLapsed, -1},
		{"service gone", state.Grant{Src: src, Service: "db", ServiceID: 12345, Expires: now.Add(time.Hour), How: "manual"}, saved, time.Time{}, whyService, -1},
		{"id of another name", state.Grant{Src: src, Service: "db", ServiceID: ssh.ID, Expires: now.Add(time.Hour), How: "manual"}, saved, time.Time{}, whyService, -1},
		{"unknown method", g(ssh, now.Add(time.Minute), "magic"), saved, time.Time{}, whyMethod, -1},
		{"service now one-shot", g(web, now.Add(time.Second), "sequence"), saved, now.Add(time.Second), "", 3},
		{"one-shot left capped", func() state.Grant { x := g(web, now.Add(time.Second), "manual"); x.Limited, x.Left = true, 9; return x }(), saved, now.Add(time.Second), "", 3},
		{"one-shot left kept", func() state.Grant { x := g(web, now.Add(time.Second), "manual"); x.Limited, x.Left = true, 1; return x }(), saved, now.Add(time.Second), "", 1},
		{"one-shot used up", func() state.Grant { x := g(web, now.Add(time.Second), "manual"); x.Limited = true; return x }(), saved, time.Time{}, whyUsed, -1},
		{"no limit on a service no longer one-shot", func() state.Grant { x := g(ssh, now.Add(time.Second), "manual"); x.Limited, x.Left = true, 2; return x }(), saved, now.Add(time.Second), "", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := restoreGrant(set, tt.in, tt.saved, now)
			if why != tt.wantWhy {
				t.Fatalf("why = %q, want %q", why, tt.wantWhy)
			}
			if why != "" {
				return
			}
			if !got.Expires.Equal(tt.wantUntil) || got.Src != src.Unmap() || got.ID != tt.in.ServiceID {
				t.Errorf("restored %+v; want until %v", got, tt.wantUntil)
			}
			if (tt.wantLeft >= 0) != got.Limited || (got.Limited && got.Left != tt.wantLeft) {
				t.Errorf("limited %t left %d, want left %d", got.Limited, got.Left, tt.wantLeft)
			}
		})
	}
}

// TestGrantEntry: what Grant returns (the control socket's answer) is the
// grant the tracker then holds: an IPv4-mapped source unmapped, the
// service's connection limit, the expiry asked for.
func TestGrantEntry(t *testing.T) {
	set := testSet(t, func(c *rules.Config) {
		ssh := c.Services["ssh"]
		ssh.Connections = 2
		c.Services["ssh"] = ssh
	})
	h := start(t, harnessOptions{set: set})
	got, err := h.d.Grant(context.Background(), netip.MustParseAddr("::ffff:10.0.0.7"), "ssh", 5*time.Minute, "test")
	if err != nil {
		t.Fatal(err)
	}
	want := GrantEntry{Src: netip.MustParseAddr("10.0.0.7"), Service: "ssh", Expires: h.clock.Now().Add(5 * time.Minute),
		How: tracker.MethodManual, Limited: true, Left: 2}
	same := func(a, b GrantEntry) bool { // times by Equal: the instant, not its encoding
		eq := a.Expires.Equal(b.Expires)
		a.Expires, b.Expires = time.Time{}, time.Time{}
		return eq && a == b
	}
	if !same(got, want) {
		t.Errorf("Grant returned %+v, want %+v", got, want)
	}
	if gs := h.d.Grants(); len(gs) != 1 || !same(gs[0], got) {
		t.Errorf("Grants() = %+v, want [%+v]", gs, got)
	}
}

// TestRevokeRetried: a revoke whose kernel writes fail (a fault behind the
// backend interface, twice: the revoke's own rewrite and the retry it
// kicks) tells the operator, and still ends in the kernel: the grant
// sets are reconciled with the tracker after a backoff.
func TestRevokeRetried(t *testing.T) {
	h := start(t, harnessOptions{fastPath: true})
	src := netip.MustParseAddr("10.0.0.9")
	ctx := context.Background()
	if _, err := h.d.Grant(ctx, src, "ssh", time.Hour, "test"); err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom(src, 22)
	if !h.fast.holds(ap) {
		t.Fatalf("the grant is not in the grant sets")
	}
	h.fast.gmu.Lock()
	h.fast.failWrites = 2
	h.fast.gmu.Unlock()
	if _, err := h.d.Revoke(ctx, src, "ssh", "test"); err == nil || !strings.Contains(err.Error(), "could not be updated") {
		t.Fatalf("Revoke with a failing kernel write = %v; want the operator told", err)
	}
	deadline := time.Now().Add(waitFor)
	for h.fast.holds(ap) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if h.fast.holds(ap) {
		t.Fatalf("%v is still in the grant sets %v after the revoke", ap, waitFor)
	}
	h.fast.gmu.Lock()
	writes := h.fast.writes
	h.fast.gmu.Unlock()
	if writes < 4 { // the grant, two failures, the retry
		t.Errorf("%d writes; want the failed ones retried", writes)
	}
	h.ev.waitN(t, "nftables grant write failed", 2)
}

// modeBackend is a fake backend that says how its rules are kept.
type modeBackend struct {
	*fakeBackend
	mode string
	why  error
}

func (b modeBackend) Mode() (string, error) { return b.mode, b.why }

// TestStatsMode: status reports how the rules are kept, as the backend
// says; a backend that says nothing is self-healed; no backend, nothing.
func TestStatsMode(t *testing.T) {
	set := testSet(t, nil)
	for _, tt := range []struct {
		name string
		fw   firewall.Backend
		want string
	}{
		{"owned", modeBackend{&fakeBackend{name: "nftables", ev: newEvents()}, firewall.ModeOwned, nil}, firewall.ModeOwned},
		{"not owned", modeBackend{&fakeBackend{name: "nftables", ev: newEvents()}, firewall.ModeSelfHeal, errors.New("kernel too old")}, firewall.ModeSelfHeal},
		{"says nothing", &fakeBackend{name: "iptables", ev: newEvents()}, firewall.ModeSelfHeal},
		{"not managed", nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(Config{Set: set, Firewall: tt.fw, Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			if got := d.Stats().Mode; got != tt.want {
				t.Errorf("Stats().Mode = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestGrantWriteBackoff: while every kernel write fails, the retries back
// off instead of spinning: a few attempts in a second and a half, where a
// loop without a pause would make thousands.
func TestGrantWriteBackoff(t *testing.T) {
	h := start(t, harnessOptions{fastPath: true})
	src := netip.MustParseAddr("10.0.0.9")
	ctx := context.Background()
	if _, err := h.d.Grant(ctx, src, "ssh", time.Hour, "test"); err != nil {
		t.Fatal(err)
	}
	h.fast.gmu.Lock()
	h.fast.failWrites = 1 << 30
	start := h.fast.writes
	h.fast.gmu.Unlock()
	if _, err := h.d.Revoke(ctx, src, "ssh", "test"); err == nil {
		t.Fatal("Revoke with every kernel write failing succeeded")
	}
	time.Sleep(1500 * time.Millisecond)
	h.fast.gmu.Lock()
	n := h.fast.writes - start
	h.fast.gmu.Unlock()
	if n < 2 || n > 12 {
		t.Errorf("%d write attempts in 1.5 s while every one fails; want a few retries with a backoff (100 ms doubling)", n)
	}
}
