package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/loadgen"
	"github.com/knockwall/knockwall/internal/netns"
	"github.com/knockwall/knockwall/rules"
)

// The flood tests' environment: a namespace pair whose server routes the
// spoofed sources back to the client, a flood generator (internal/loadgen)
// on the client's veth, the daemon configured for floods, and bounded
// floods started and stopped around what a test does meanwhile.

const (
	// spoofedSources are the floods' source addresses.
	spoofedSources = "10.78.0.0/16"
	// floodMaxTime bounds every flood that runs "while" something else is
	// done; the flood is cancelled as soon as that is done.
	floodMaxTime = 10 * time.Second
)

// floodConfig is the daemon config of a flood test: one service "ssh" on
// protectedPort, opened by defaultSequence.
type floodConfig struct {
	backend    backend
	openFor    time.Duration
	maxLen     int // queue.max_len; 0 keeps the default
	maxPending int // 0: 1024
	maxGrants  int // 0: 1024
	knockRate  float64
	knockBurst int // with knockRate
}

func (c floodConfig) yaml() string {
	if c.maxPending == 0 {
		c.maxPending = 1024
	}
	if c.maxGrants == 0 {
		c.maxGrants = 1024
	}
	if c.maxLen == 0 {
		c.maxLen = rules.DefaultQueueMaxLen
	}
	if c.openFor == 0 {
		c.openFor = 30 * time.Second
	}
	var rate string
	if c.knockRate > 0 {
		rate = fmt.Sprintf("  knock_rate: %g\n  knock_burst: %d\n", c.knockRate, c.knockBurst)
	}
	return fmt.Sprintf(`queue:
  num: 0
  count: 1
  max_len: %d
firewall:
  manage: true
%slog:
  level: info
  format: json
tracker:
  max_pending: %d
  max_grants: %d
%s%sservices:
  ssh:
    ports: [%d]
    sequence: [%s]
    step_timeout: 5s
    open_for: %s
    closed: reject
`, c.maxLen, c.backend.yaml(), c.maxPending, c.maxGrants, rate, operate{}.yaml(), protectedPort, strings.Join(defaultSequence, ", "), c.openFor)
}

// floodEnv is env with the spoofed subnet routed back to the client and a
// flood generator on the client's veth.
type floodEnv struct {
	*env
	gen *loadgen.Gen
	pid int // the daemon's
}

// newFloodEnv is newEnv for flood tests. The daemon runs at log level
// info, as in production: startDaemon's debug level logs every knock of a
// knock-port flood, and the test would measure its own log reader.
func newFloodEnv(t *testing.T, c floodConfig) *floodEnv {
	t.Helper()
	bin := requireBinary(t)
	pair, gen := newFloodPair(t)
	e := &env{bin: bin, backend: c.backend, pair: pair, cfgPath: filepath.Join(t.TempDir(), "knockwall.yaml")}
	if err := os.WriteFile(e.cfgPath, []byte(c.yaml()), 0o600); err != nil {
		t.Fatal(err)
	}
	echoServer(t, pair.Server, protectedPort)
	echoServer(t, pair.Server, openPort)

	// Info level: at debug a knock-port flood logs every spoofed knock.
	e.d = startDaemonAt(t, pair.Server, bin, e.cfgPath, "info")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("firewall in %s at failure:\n%s", pair.Server, e.firewallDump())
		}
	})
	return &floodEnv{env: e, gen: gen, pid: e.d.cmd.Process.Pid}
}

// synFlood is a spoofed SYN flood at rate to ports, bounded by floodMaxTime.
func synFlood(rate int, seed uint64, ports ...uint16) loadgen.Config {
	return loadgen.Config{Kind: loadgen.SYN, Sources: netip.MustParsePrefix(spoofedSources), Ports: ports,
		Rate: rate, Count: rate * int(floodMaxTime/time.Second), Duration: floodMaxTime, Seed: seed}
}

// udpFlood is synFlood with empty UDP datagrams.
func udpFlood(rate int, seed uint64, ports ...uint16) loadgen.Config {
	c := synFlood(rate, seed, ports...)
	c.Kind = loadgen.UDP
	return c
}

// unrelatedPorts are n closed ports no service knows (the knock ports and
// the listeners are below 10000), and the protected port: a flood aimed at
// the service itself.
func unrelatedPorts(n int, seed uint64) []uint16 {
	rng := rand.New(rand.NewPCG(seed, seed))
	ports := []uint16{protectedPort}
	for len(ports) < n {
		ports = append(ports, uint16(10000+rng.IntN(50000)))
	}
	return ports
}

// judgedPorts are ports whose SYNs the daemon judges, the ones that load
// it: with the fast path only the protected port (and knock ports) leave
// the kernel; otherwise n unrelated closed ports.
func (fe *floodEnv) judgedPorts(n int, seed uint64) []uint16 {
	if fe.backend.fastPath {
		return []uint16{protectedPort}
	}
	return unrelatedPorts(n, seed)[1:]
}

// floodRun is one or more loadgen runs in progress.
type floodRun struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when every run returned
	mu     sync.Mutex
	stats  []loadgen.Stats
	errs   []error
}

// startFlood starts every config at once (each in its own goroutine; they
// share the generator's socket) to the server's IPv4 address.
func (fe *floodEnv) startFlood(t *testing.T, cfgs ...loadgen.Config) *floodRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &floodRun{cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	for _, c := range cfgs {
		c.Dst = fe.pair.Server4
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := fe.gen.Run(ctx, c)
			f.mu.Lock()
			defer f.mu.Unlock()
			f.stats = append(f.stats, st)
			if err != nil {
				f.errs = append(f.errs, err)
			}
		}()
	}
	go func() { wg.Wait(); close(f.done) }()
	t.Cleanup(func() { f.cancel(); <-f.done })
	return f
}

func (f *floodRun) running() bool {
	select {
	case <-f.done:
		return false
	default:
		return true
	}
}

// stop ends the flood and returns what it sent and for how long (the
// longest run).
func (f *floodRun) stop(t *testing.T) loadgen.Stats {
	t.Helper()
	f.cancel()
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := errors.Join(f.errs...); err != nil {
		t.Fatalf("flood: %v", err)
	}
	var sum loadgen.Stats
	for _, s := range f.stats {
		sum.Sent += s.Sent
		sum.Elapsed = max(sum.Elapsed, s.Elapsed)
	}
	return sum
}

// wait waits for a flood to end by its own bounds.
func (f *floodRun) wait(t *testing.T) loadgen.Stats {
	t.Helper()
	<-f.done
	return f.stop(t)
}

// logRate logs what a flood sent against its plan. A sender slower than
// planned (a busy or slow machine) makes the flood gentler; that is logged,
// never failed: rates belong to `make bench-e2e`, not to tests.
func logRate(t *testing.T, st loadgen.Stats, want int) {
	t.Helper()
	t.Logf("flood: sent %d in %v (%.0f/s, planned %d/s)", st.Sent, st.Elapsed.Round(time.Millisecond), st.PPS(), want)
}

// measureCapacityOn floods ports (none: the ports the daemon judges,
// judgedPorts) as fast as loadgen can for about a second and returns the
// packets per second the daemon verdicted: what its queue took, less what
// the kernel dropped before the daemon saw it (a REJECT's reset is not
// counted by TCP's OutRsts, so the queue's own counters are the measure).
func (fe *floodEnv) measureCapacityOn(t *testing.T, ports ...uint16) float64 {
	t.Helper()
	if len(ports) == 0 {
		ports = fe.judgedPorts(64, 5)
	}
	before := fe.queueCounters(t)
	c := synFlood(0, 5, ports...)
	c.Count, c.Duration = 2_000_000, time.Second
	st := fe.startFlood(t, c).wait(t)
	time.Sleep(200 * time.Millisecond) // the queue drains
	after := fe.queueCounters(t)
	dropped := (after.queueDropped - before.queueDropped) + (after.userDropped - before.userDropped)
	verdicted := (after.queued - before.queued) - dropped
	capacity := float64(verdicted) / st.Elapsed.Seconds()
	t.Logf("capacity probe: sent %d at %.0f/s; verdicted %.0f/s", st.Sent, st.PPS(), capacity)
	logQueueDelta(t, "capacity probe", before, after)
	if dropped == 0 {
		// Nothing dropped: the sender, not the daemon, set the pace, and C
		// is a lower bound. Floods at C/2 are then gentler than meant.
		t.Logf("capacity probe: no drop, so %.0f/s is the sender's pace, a lower bound of the capacity", capacity)
	}
	return max(capacity, 1000)
}

// pauseDaemon stops and continues the daemon n times for d each while f
// runs, and sends how many pauses it made when done. The daemon is always
// left running, even when the test fails half-way.
func (fe *floodEnv) pauseDaemon(t *testing.T, f *floodRun, n int, d time.Duration) <-chan int {
	t.Helper()
	p, err := os.FindProcess(fe.pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Signal(syscall.SIGCONT) })
	done := make(chan int, 1)
	go func() {
		made := 0
		defer func() { done <- made }()
		gap := time.NewTimer(100 * time.Millisecond) // the flood is under way
		defer gap.Stop()
		for made < n {
			select {
			case <-f.done:
				return
			case <-gap.C:
			}
			if p.Signal(syscall.SIGSTOP) != nil {
				return
			}
			time.Sleep(d)
			_ = p.Signal(syscall.SIGCONT)
			made++
			gap.Reset(d)
		}
	}()
	return done
}

// addClientAddrs adds n more IPv4 addresses (10.77.0.100 on) to the
// client's veth, for tests that need many real sources.
func (fe *floodEnv) addClientAddrs(t *testing.T, n int) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	a := netip.MustParseAddr("10.77.0.100")
	for range n {
		if _, err := fe.run(fe.pair.Client, "ip", "addr", "add", a.String()+"/24", "dev", fe.pair.ClientIf); err != nil {
			t.Fatalf("client address %v: %v", a, err)
		}
		out = append(out, a)
		a = a.Next()
	}
	return out
}

// grantOutcome waits for the daemon to log a grant or a refused grant for
// src, from log line from on.
func (fe *floodEnv) grantOutcome(from int, src netip.Addr) (granted bool, err error) {
	attrs := map[string]string{"src": src.String()}
	for deadline := time.Now().Add(logTimeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, _, ok := fe.d.find(from, "grant", attrs); ok {
			return true, nil
		}
		if _, _, ok := fe.d.find(from, "grant refused: no room for it in the grant table (full, or its plain-sequence room is)", attrs); ok {
			return false, nil
		}
	}
	return false, fmt.Errorf("neither a grant nor a refusal logged for %v within %v", src, logTimeout)
}

// newFloodPair is a namespace pair whose server routes the spoofed sources
// back to the client (whose kernel drops the replies), with a flood
// generator bound to the client's veth and aimed at the server's MAC.
func newFloodPair(t *testing.T) (*netns.Pair, *loadgen.Gen) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	pair, err := netns.NewPair(ctx, netns.Config{SecondClient: true})
	if err != nil {
		t.Fatalf("namespaces: %v", err)
	}
	t.Cleanup(func() {
		if err := pair.Close(); err != nil {
			t.Errorf("delete namespaces: %v", err)
		}
	})
	if out, err := pair.Server.Run(ctx, "ip", "route", "add", spoofedSources, "via", pair.Client4.String()); err != nil {
		t.Fatalf("route to the spoofed sources: %v %s", err, out)
	}
	var srvMAC net.HardwareAddr
	if err := pair.Server.Do(func() error {
		ifi, err := net.InterfaceByName(pair.ServerIf)
		if err == nil {
			srvMAC = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatalf("server MAC: %v", err)
	}
	var gen *loadgen.Gen
	if err := pair.Client.Do(func() (err error) { gen, err = loadgen.Open(pair.ClientIf, srvMAC); return err }); err != nil {
		t.Fatalf("flood generator: %v", err)
	}
	t.Cleanup(func() { gen.Close() })
	return pair, gen
}
