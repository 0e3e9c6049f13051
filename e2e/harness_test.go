package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/netns"
)

// Ports the tests use inside the server namespace.
const (
	protectedPort = 2222 // the service's port, with an echo listener
	openPort      = 4080 // unprotected, with an echo listener; outside the scanned range
	unusedPort    = 5555 // unprotected, nothing listens: the kernel answers RST
)

// Time limits. Every wait in this package is bounded by one of these.
const (
	readyTimeout   = 10 * time.Second       // daemon start until "ready"
	stopTimeout    = 5 * time.Second        // SIGTERM until exit
	dropTimeout    = time.Second            // dial timeout where a drop is expected
	openWithin     = 3 * time.Second        // knock until the port must be open
	attemptTimeout = 500 * time.Millisecond // one dial attempt while waiting for open
	settle         = 500 * time.Millisecond // knock until a "stays closed" check
	logTimeout     = 3 * time.Second        // an expected log line must appear this fast
	cmdTimeout     = 10 * time.Second       // any helper command
)

// closedMode is a service's "closed" setting.
type closedMode string

const (
	reject closedMode = "reject"
	drop   closedMode = "drop"
)

// service is the one service of a test's config, named "ssh".
type service struct {
	// sequence is e.g. "7000", "9000/udp". nil means defaultSequence; an
	// empty, non-nil slice means none (the service opens by spa or rotate,
	// set in extra).
	sequence []string
	openFor  time.Duration
	closed   closedMode
	// extra is YAML appended to the service's block verbatim, each line
	// indented by four spaces (e.g. an spa or rotate section).
	extra string
}

var defaultSequence = []string{"7000", "8000", "9000/udp"}

// backend is a firewall backend, and mode, the end-to-end tests run
// against: the tests of the rules (lifecycle, router, resets, fail-closed)
// run on each (eachBackend), so the kernel rules of each are proven by the
// same tests; the tests of the daemon's decisions run on both paths
// through it (eachPath).
type backend struct {
	name     string // as in test names
	firewall string // firewall.backend
	fastPath bool   // firewall.fast_path
	// selfHeal sets firewall.owned_table false: an ordinary nftables
	// table that other processes may change and the daemon puts back.
	selfHeal bool
}

// The inline nftables mode also runs without the owned table, so that
// every eachBackend test proves nftables' self-heal mode as well as the
// owned one (the default, which nftFast takes where the kernel has it).
var (
	nftFast     = backend{name: "nftables", firewall: "nftables", fastPath: true}
	nftInline   = backend{name: "nftables-inline", firewall: "nftables", selfHeal: true}
	nftFastHeal = backend{name: "nftables-selfheal", firewall: "nftables", fastPath: true, selfHeal: true}
	iptBack     = backend{name: "iptables", firewall: "iptables"}
	backends    = []backend{nftFast, nftInline, iptBack}
)

// nft reports whether b is an nftables backend.
func (b backend) nft() bool { return b.firewall == "nftables" }

// yaml is b's part of the firewall section.
func (b backend) yaml() string {
	return fmt.Sprintf("  backend: %s\n  fast_path: %t\n  owned_table: %t\n", b.firewall, b.fastPath, !b.selfHeal)
}

// eachBackend runs fn as a subtest per backend, in parallel with each
// other (each has namespaces of its own; most of a test is waiting).
func eachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Parallel() // beside other tests' backends, not only its own
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, b)
		})
	}
}

// eachPath runs fn like eachBackend, on the fast path (nftables) and the
// user-space path (iptables), for tests of what the daemon decides rather
// than of the rules that bring it packets: nftables-inline takes the
// iptables backend's path through the daemon, and its rules are proven by
// the eachBackend tests (lifecycle, router, resets, fail-closed).
func eachPath(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Parallel() // beside other tests' backends, not only its own
	for _, b := range []backend{nftFast, iptBack} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, b)
		})
	}
}

// eachBackendSerial runs fn on each backend, one at a time, for tests that
// load the machine (floods) or measure it. The inline nftables mode is left
// out: its daemon path is the iptables backend's, and its rules are proven
// by every other test; floods take long enough on two.
func eachBackendSerial(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range []backend{nftFast, iptBack} {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

// operate is a daemon's control socket, state file and metrics address.
// The zero value turns all three off, so that no daemon under test uses
// the host's (rules.DefaultControlSocket, rules.DefaultStateFile) or
// another test's.
type operate struct {
	socket, stateFile, metrics, tokenFile string
}

// metricsAddr is where an operate env's daemon serves metrics: on the
// server namespace's own loopback, so parallel tests do not collide.
const metricsAddr = "127.0.0.1:9477"

// metricsToken is the bearer token of an operate env's metrics.
const metricsToken = "e2e-metrics-token-0123456789abcdef"

// newOperate puts the socket, the state file and the metrics token file
// (0600) in dir and turns metrics on.
func newOperate(t *testing.T, dir string) operate {
	t.Helper()
	o := operate{socket: filepath.Join(dir, "run", "ctl.sock"), stateFile: filepath.Join(dir, "lib", "state.json"), metrics: metricsAddr,
		tokenFile: filepath.Join(dir, "metrics.token")}
	if err := os.WriteFile(o.tokenFile, []byte(metricsToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o operate) yaml() string {
	return fmt.Sprintf("control:\n  socket: %q\nstate:\n  file: %q\nmetrics:\n  listen: %q\n  token_file: %q\n", o.socket, o.stateFile, o.metrics, o.tokenFile)
}

// configYAML renders a whole knockwall config. The log section says
// text/info on purpose: the daemon is started with the KNOCKWALL_LOG_*
// environment overrides, so a broken override shows as "no ready line".
func configYAML(s service, b backend, o operate) string {
	var seq string
	if len(s.sequence) > 0 {
		seq = fmt.Sprintf("\n    sequence: [%s]", strings.Join(s.sequence, ", "))
	}
	return fmt.Sprintf(`queue:
  num: 0
  count: 1
firewall:
  manage: true
%slog:
  level: info
  format: text
tracker:
  max_pending: 1024
  max_grants: 1024
%sservices:
  ssh:
    ports: [%d]%s
    step_timeout: 5s
    open_for: %s
    closed: %s
%s`, b.yaml(), o.yaml(), protectedPort, seq, s.openFor, s.closed, s.extra)
}

// env is one test's world: a fresh namespace pair, a config file, echo
// listeners in the server namespace and, once started, the daemon.
type env struct {
	bin     string
	backend backend
	pair    *netns.Pair
	cfgPath string
	svc     service // as newEnv completed it
	ops     operate // zero unless envOptions.operate
	d       *daemon
}

type envOptions struct {
	backend      backend // zero: nftFast
	svc          service
	secondClient bool
	// beforeStart runs after the namespaces and listeners exist and
	// before the daemon starts.
	beforeStart func(t *testing.T, e *env)
	// noDaemon leaves the daemon unstarted (e.d is nil), for tests that
	// run `knockwall run` themselves.
	noDaemon bool
	// operate turns on the control socket, the state file (both in
	// opsDir, a fresh temporary directory when empty) and metrics.
	operate bool
	opsDir  string
}

// newEnv builds the world and, unless o.noDaemon, starts the daemon,
// waiting for "ready".
func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	bin := requireBinary(t)
	if o.svc.sequence == nil {
		o.svc.sequence = defaultSequence
	}
	if o.svc.openFor == 0 {
		o.svc.openFor = 30 * time.Second
	}
	if o.svc.closed == "" {
		o.svc.closed = reject
	}

	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	pair, err := netns.NewPair(ctx, netns.Config{SecondClient: o.secondClient})
	if err != nil {
		t.Fatalf("namespaces: %v", err)
	}
	// Registered first, so it runs last: after the daemon is stopped.
	t.Cleanup(func() {
		if err := pair.Close(); err != nil {
			t.Errorf("delete namespaces: %v", err)
		}
	})

	if o.backend.name == "" {
		o.backend = nftFast
	}
	e := &env{bin: bin, backend: o.backend, pair: pair, cfgPath: filepath.Join(t.TempDir(), "knockwall.yaml"), svc: o.svc}
	if o.operate {
		if o.opsDir == "" {
			o.opsDir = t.TempDir()
		}
		e.ops = newOperate(t, o.opsDir)
	}
	if err := os.WriteFile(e.cfgPath, []byte(configYAML(o.svc, o.backend, e.ops)), 0o600); err != nil {
		t.Fatal(err)
	}
	echoServer(t, pair.Server, protectedPort)
	echoServer(t, pair.Server, openPort)
	if o.beforeStart != nil {
		o.beforeStart(t, e)
	}
	if !o.noDaemon {
		e.d = startDaemon(t, pair.Server, bin, e.cfgPath)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("firewall in %s at failure:\n%s", pair.Server, e.firewallDump())
		}
	})
	return e
}

// firewallDump is nft list ruleset, iptables-save and ip6tables-save of
// the server namespace.
func (e *env) firewallDump() string {
	var b strings.Builder
	for _, cmd := range [][]string{{"nft", "list", "ruleset"}, {"iptables-save"}, {"ip6tables-save"}} {
		out, err := e.run(e.pair.Server, cmd[0], cmd[1:]...)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", cmd[0], err)
		}
		b.Write(out)
	}
	return b.String()
}

// knockwallRules lists every rule knockwall owns in the server namespace:
// the lines of nftables' table inet knockwall (without set elements, which
// come and go with knocks) and the knockwall lines of iptables-save and
// ip6tables-save.
func (e *env) knockwallRules(t *testing.T) []string {
	t.Helper()
	var out []string
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	// Standard output only: nft's libxtables complains on standard error
	// about xtables expressions in an inet table (nft_compat's queue).
	if l, err := exec.CommandContext(ctx, "ip", "netns", "exec", string(e.pair.Server), "nft", "--terse", "list", "table", "inet", "knockwall").Output(); err == nil {
		for _, line := range strings.Split(string(l), "\n") {
			if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
				out = append(out, "nft: "+s)
			}
		}
	}
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, l := range knockwallLines(e.iptablesSave(t, bin)) {
			out = append(out, bin+": "+l)
		}
	}
	return out
}

// run runs a command in ns with the helper timeout.
func (e *env) run(ns netns.NS, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	return ns.Run(ctx, name, args...)
}

// knock runs `knockwall knock HOST PORTS...` in the client namespace.
func (e *env) knock(t *testing.T, host netip.Addr, ports ...string) {
	t.Helper()
	args := append([]string{"knock", host.String()}, ports...)
	if out, err := e.run(e.pair.Client, e.bin, args...); err != nil {
		t.Fatalf("knockwall knock: %v", err)
	} else if len(bytes.TrimSpace(out)) > 0 {
		t.Logf("knockwall knock: %s", bytes.TrimSpace(out))
	}
}

func (e *env) server4(port uint16) netip.AddrPort { return netip.AddrPortFrom(e.pair.Server4, port) }
func (e *env) server6(port uint16) netip.AddrPort { return netip.AddrPortFrom(e.pair.Server6, port) }

// ---------------------------------------------------------------- daemon

// daemon is a running `knockwall run` and its stderr, line by line.
type daemon struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once Wait returned; then state is set
	state  *os.ProcessState

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every new line
}

// logEntry is one JSON log line.
type logEntry map[string]any

func (l logEntry) str(key string) string {
	v, ok := l[key]
	if !ok {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

func startDaemon(t *testing.T, ns netns.NS, bin, cfgPath string) *daemon {
	t.Helper()
	return startDaemonAt(t, ns, bin, cfgPath, "debug")
}

// startDaemonAt is startDaemon at log level level, with extra environment
// variables.
func startDaemonAt(t *testing.T, ns netns.NS, bin, cfgPath, level string, extraEnv ...string) *daemon {
	t.Helper()
	cmd := ns.Command(bin, "run", "-c", cfgPath)
	cmd.Env = append(os.Environ(), "KNOCKWALL_LOG_FORMAT=json", "KNOCKWALL_LOG_LEVEL="+level)
	cmd.Env = append(cmd.Env, extraEnv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = nil // nothing expected; /dev/null
	// If the test binary dies (a go test timeout), take the daemon along
	// instead of leaving it running. ip netns exec execs in place, and
	// the death signal survives exec.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	d := &daemon{cmd: cmd, exited: make(chan struct{}), changed: make(chan struct{})}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			d.mu.Lock()
			d.lines = append(d.lines, sc.Text())
			close(d.changed)
			d.changed = make(chan struct{})
			d.mu.Unlock()
		}
	}()
	go func() {
		<-readDone // Wait closes the pipe; read it all first
		cmd.Wait()
		d.state = cmd.ProcessState
		close(d.exited)
	}()
	t.Cleanup(func() {
		if d.running() {
			if _, err := d.stop(); err != nil {
				t.Errorf("stop daemon: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("daemon log (pid %d, %s):\n%s", cmd.Process.Pid, d.exitStatus(), d.log())
		}
	})
	if _, err := d.waitLog("ready", nil, readyTimeout); err != nil {
		t.Fatalf("daemon not ready: %v (want a JSON log line with msg=ready; is KNOCKWALL_LOG_FORMAT=json applied?)", err)
	}
	return d
}

func (d *daemon) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

func (d *daemon) exitStatus() string {
	if d.running() {
		return "running"
	}
	return d.state.String()
}

func (d *daemon) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n")
}

// find returns the first JSON line from index from on with msg and every
// attr equal (compared as strings), and the index after it.
func (d *daemon) find(from int, msg string, attrs map[string]string) (logEntry, int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := from; i < len(d.lines); i++ {
		var l logEntry
		if json.Unmarshal([]byte(d.lines[i]), &l) != nil || l.str("msg") != msg {
			continue
		}
		match := true
		for k, v := range attrs {
			if l.str(k) != v {
				match = false
				break
			}
		}
		if match {
			return l, i + 1, true
		}
	}
	return nil, len(d.lines), false
}

// has reports whether a matching line was logged so far.
func (d *daemon) has(msg string, attrs map[string]string) bool {
	_, _, ok := d.find(0, msg, attrs)
	return ok
}

// mark is the number of lines logged so far: pass it to waitLogFrom or
// hasFrom to look only at what comes after this moment.
func (d *daemon) mark() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.lines)
}

// hasFrom reports whether a matching line was logged at or after index from.
func (d *daemon) hasFrom(from int, msg string, attrs map[string]string) bool {
	_, _, ok := d.find(from, msg, attrs)
	return ok
}

// waitLog waits for a matching line, failing early if the daemon exits.
func (d *daemon) waitLog(msg string, attrs map[string]string, timeout time.Duration) (logEntry, error) {
	return d.waitLogFrom(0, msg, attrs, timeout)
}

// waitLogFrom is waitLog for lines at or after index from (see mark).
func (d *daemon) waitLogFrom(from int, msg string, attrs map[string]string, timeout time.Duration) (logEntry, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		d.mu.Lock()
		changed := d.changed
		d.mu.Unlock()
		if l, _, ok := d.find(from, msg, attrs); ok {
			return l, nil
		}
		select {
		case <-changed:
		case <-d.exited:
			if l, _, ok := d.find(from, msg, attrs); ok {
				return l, nil
			}
			return nil, fmt.Errorf("daemon exited (%s) before logging msg=%q %v", d.state, msg, attrs)
		case <-timer.C:
			return nil, fmt.Errorf("no log line msg=%q %v within %v", msg, attrs, timeout)
		}
	}
}

// stop sends SIGTERM, waits up to stopTimeout, then SIGKILLs. It returns
// the exit state; the error says if SIGKILL was needed.
func (d *daemon) stop() (*os.ProcessState, error) {
	if !d.running() {
		return d.state, nil
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return nil, fmt.Errorf("sigterm: %w", err)
	}
	select {
	case <-d.exited:
		return d.state, nil
	case <-time.After(stopTimeout):
	}
	d.cmd.Process.Kill()
	select {
	case <-d.exited:
	case <-time.After(stopTimeout):
		return nil, fmt.Errorf("pid %d survived SIGKILL for %v", d.cmd.Process.Pid, stopTimeout)
	}
	return d.state, fmt.Errorf("no exit within %v of SIGTERM; killed", stopTimeout)
}

// kill sends SIGKILL and waits for the exit.
func (d *daemon) kill(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatalf("sigkill: %v", err)
	}
	select {
	case <-d.exited:
	case <-time.After(stopTimeout):
		t.Fatalf("pid %d survived SIGKILL", d.cmd.Process.Pid)
	}
}

// ---------------------------------------------------------------- sockets

// echoServer listens on port (all addresses, IPv4 and IPv6) inside ns and
// echoes whatever each connection sends, until the test ends.
func echoServer(t *testing.T, ns netns.NS, port uint16) {
	t.Helper()
	var ln net.Listener
	err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("listen :%d in %s: %v", port, ns, err)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed { // accepted while the cleanup ran
				mu.Unlock()
				c.Close()
				return
			}
			conns = append(conns, c)
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// dial connects from the client namespace, from local when it is valid.
func (e *env) dial(local netip.Addr, remote netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := e.pair.Client.Do(func() (err error) {
		d := net.Dialer{Timeout: timeout}
		if local.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
		}
		c, err = d.Dial("tcp", remote.String())
		return err
	})
	return c, err
}

// echo writes msg and expects it back within a second.
func echo(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if string(buf) != msg {
		return fmt.Errorf("echo = %q, want %q", buf, msg)
	}
	return nil
}

// knockOpen knocks from the client and returns an open connection to the
// protected port.
func (e *env) knockOpen(t *testing.T) net.Conn {
	t.Helper()
	e.knock(t, e.pair.Server4, defaultSequence...)
	return e.expectOpen(t, e.pair.Client4, e.server4(protectedPort))
}

// knockGranted knocks from the client and waits for the daemon to log
// its grant of ssh.
func (e *env) knockGranted(t *testing.T) {
	t.Helper()
	e.knock(t, e.pair.Server4, defaultSequence...)
	if _, err := e.d.waitLog("grant", map[string]string{"src": e.pair.Client4.String(), "service": "ssh"}, logTimeout); err != nil {
		t.Fatal(err)
	}
}

// closedErr checks one dial result against what mode promises: reject is
// "connection refused" (an RST), drop is a timeout.
func closedErr(mode closedMode, c net.Conn, err error) error {
	if err == nil {
		c.Close()
		return fmt.Errorf("connected to %v, want it closed (%s)", c.RemoteAddr(), mode)
	}
	switch mode {
	case reject:
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("dial: %w; want connection refused (RST)", err)
		}
	case drop:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return fmt.Errorf("dial: %w; want a timeout (silent drop)", err)
		}
	}
	return nil
}

// expectClosed dials once and requires mode's kind of failure.
func (e *env) expectClosed(t *testing.T, mode closedMode, local netip.Addr, remote netip.AddrPort) {
	t.Helper()
	c, err := e.dial(local, remote, dropTimeout)
	if err := closedErr(mode, c, err); err != nil {
		t.Errorf("%v -> %v: %v", srcName(local), remote, err)
	}
}

// expectStaysClosed waits settle for in-flight knocks to be judged, then
// checks a few times that remote stays closed.
func (e *env) expectStaysClosed(t *testing.T, mode closedMode, local netip.Addr, remote netip.AddrPort) {
	t.Helper()
	time.Sleep(settle)
	for range 3 {
		e.expectClosed(t, mode, local, remote)
		time.Sleep(100 * time.Millisecond)
	}
}

// expectOpen retries for up to openWithin until a connection succeeds, then
// checks it echoes. The connection is returned open and closed at cleanup.
func (e *env) expectOpen(t *testing.T, local netip.Addr, remote netip.AddrPort) net.Conn {
	t.Helper()
	deadline := time.Now().Add(openWithin)
	var errs []string
	for attempt := 0; attempt < 50 && time.Now().Before(deadline); attempt++ {
		c, err := e.dial(local, remote, attemptTimeout)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			if err := echo(c, "hello from "+srcName(local)); err != nil {
				t.Fatalf("%v -> %v connected but: %v", srcName(local), remote, err)
			}
			return c
		}
		errs = append(errs, err.Error())
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%v -> %v not open within %v; attempts: %s", srcName(local), remote, openWithin, strings.Join(errs, "; "))
	return nil
}

func srcName(local netip.Addr) string {
	if local.IsValid() {
		return local.String()
	}
	return "client"
}

// iptablesSave returns iptables-save (bin "iptables") or ip6tables-save
// output of the server namespace.
func (e *env) iptablesSave(t *testing.T, bin string) string {
	t.Helper()
	out, err := e.run(e.pair.Server, bin+"-save")
	if err != nil {
		t.Fatalf("%s-save: %v", bin, err)
	}
	return string(out)
}

// ruleLines are the -A lines of an iptables-save dump, with their table.
func ruleLines(dump string) []string {
	var table string
	var out []string
	for _, l := range strings.Split(dump, "\n") {
		switch {
		case strings.HasPrefix(l, "*"):
			table = l
		case strings.HasPrefix(l, "-A "):
			out = append(out, table+" "+l)
		}
	}
	return out
}

func knockwallLines(dump string) []string {
	var out []string
	for _, l := range strings.Split(dump, "\n") {
		if strings.Contains(strings.ToLower(l), "knockwall") {
			out = append(out, l)
		}
	}
	return out
}
