package e2e

// The owned nftables table (Linux 6.9 and later): no other process can
// change it, `nft flush ruleset` passes it by, it stays across a SIGKILL
// and the next start adopts it, and `knockwall rules remove` removes it.

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds of the attack loops: each ends at its count or its time,
// whichever comes first.
const (
	flushes       = 40                     // `nft flush ruleset` runs
	flushPause    = 10 * time.Millisecond  // between two flushes
	synTries      = 4000                   // connects from the stranger
	synTimeout    = 200 * time.Millisecond // one connect
	attackFor     = 30 * time.Second       // the whole loop
	probeInterval = 20 * time.Millisecond  // between two probes of a closed port
)

// tableMode is the mode the daemon's start line reports: "owned" or
// "self-heal".
func (d *daemon) tableMode(t *testing.T) string {
	t.Helper()
	l, err := d.waitLog("firewall rules installed", nil, logTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return l.str("mode")
}

// requireOwned skips on a kernel older than Linux 6.9, which makes no
// owned, persistent tables (TestSelfHeal bounds the window there), and
// fails when the daemon does not run with an owned table on a newer one.
func requireOwned(t *testing.T, e *env) {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	fmt.Sscanf(release, "%d.%d", &major, &minor)
	if major < 6 || major == 6 && minor < 9 {
		t.Skipf("skipping: Linux %s makes no owned, persistent tables (6.9 and later do); there, TestSelfHeal bounds the window at %v", release, healWithin)
	}
	if m := e.d.tableMode(t); m != "owned" {
		t.Errorf("the daemon runs in mode %q on Linux %s; want an owned table", m, release)
	}
}

// prober dials a protected port from a source that has no grant, again
// and again, until stopped, counting the connects that succeeded: each
// one is a SYN-ACK the guard should have prevented.
type prober struct {
	stop     chan struct{}
	done     chan struct{}
	tries    atomic.Int64
	connects atomic.Int64
	mu       sync.Mutex
	errs     map[string]int
}

func (e *env) probe(src netip.Addr, dst netip.AddrPort) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{}), errs: map[string]int{}}
	go func() {
		defer close(p.done)
		deadline := time.Now().Add(attackFor)
		for i := 0; i < synTries && time.Now().Before(deadline); i++ {
			select {
			case <-p.stop:
				return
			default:
			}
			c, err := e.dial(src, dst, synTimeout)
			p.tries.Add(1)
			if err == nil {
				p.connects.Add(1)
				c.Close()
				continue
			}
			p.mu.Lock()
			p.errs[shortErr(err)]++
			p.mu.Unlock()
			time.Sleep(probeInterval)
		}
	}()
	return p
}

// end stops the prober and waits for it.
func (p *prober) end() {
	close(p.stop)
	<-p.done
}

func (p *prober) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("%d connects tried, %d succeeded, failures %v", p.tries.Load(), p.connects.Load(), p.errs)
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// TestOwnedTableFlush: a stranger connects to the protected port again
// and again while another process runs `nft flush ruleset` in the server
// namespace, again and again (what `systemctl reload nftables`, firewalld
// and fw4 do): not one connect succeeds, and the daemon has nothing to
// heal. Without the owned table each flush opens the port until the heal.
func TestOwnedTableFlush(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{backend: nftFast, secondClient: true, svc: service{closed: reject}})
	requireOwned(t, e)
	before := e.knockwallRules(t)
	mark := e.d.mark()
	p := e.probe(e.pair.Client2v4, e.server4(protectedPort))
	var flushErrs []string
	for range flushes {
		if out, err := e.run(e.pair.Server, "nft", "flush", "ruleset"); err != nil {
			flushErrs = append(flushErrs, err.Error()+": "+string(out))
		}
		time.Sleep(flushPause)
	}
	p.end()
	t.Logf("during %d flushes: %s", flushes, p)
	if len(flushErrs) > 0 {
		t.Errorf("nft flush ruleset failed: %q", flushErrs)
	}
	if n := p.connects.Load(); n > 0 {
		t.Errorf("the stranger connected %d times to the protected port during the flushes", n)
	}
	if p.tries.Load() < flushes/4 {
		t.Errorf("only %d connects tried during %d flushes: the attack did not overlap them", p.tries.Load(), flushes)
	}
	if after := e.knockwallRules(t); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("the flushes changed knockwall's table:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	if e.d.hasFrom(mark, "firewall rules restored", nil) {
		t.Errorf("the daemon healed rules no other process could change")
	}
	e.expectClosed(t, reject, e.pair.Client2v4, e.server4(protectedPort))
	e.knock(t, e.pair.Server4, defaultSequence...)
	e.expectOpen(t, e.pair.Client4, e.server4(protectedPort)).Close()
}

// TestOwnedTable: `knockwall status` says the table is owned; while the
// daemon runs another process can neither delete knockwall's table nor
// make it dormant (EPERM), and `knockwall rules remove` refuses to take it
// from the daemon; after a SIGKILL the
// table stays, the next start adopts it (other processes are refused
// again) and a stranger never connects in between; a knock works after;
// after a clean stop `knockwall rules remove` adopts and deletes it.
func TestOwnedTable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{backend: nftFast, secondClient: true, svc: service{closed: reject}, operate: true})
	requireOwned(t, e)
	if out := e.ctlOK(t, "status", "-c", e.cfgPath); !strings.Contains(out, "firewall      nftables, fast path on, owned table") {
		t.Errorf("knockwall status does not say the table is owned:\n%s", out)
	}
	refused := func(what string) {
		t.Helper()
		for _, cmd := range [][]string{
			{"nft", "delete", "table", "inet", "knockwall"},
			{"nft", "add", "table", "inet", "knockwall", "{ flags dormant; }"},
		} {
			out, err := e.run(e.pair.Server, cmd[0], cmd[1:]...)
			if err == nil || !strings.Contains(string(out), "Operation not permitted") {
				t.Errorf("%s: %s by another process: %v %s; want Operation not permitted", what, strings.Join(cmd, " "), err, out)
			}
		}
	}
	refused("running")
	if out, err := e.run(e.pair.Server, e.bin, "rules", "remove"); err == nil || !strings.Contains(string(out), "held by another process") {
		t.Errorf("knockwall rules remove while the daemon runs: %v %s; want a refusal naming the running daemon", err, out)
	}
	running := e.knockwallRules(t)

	p := e.probe(e.pair.Client2v4, e.server4(protectedPort))
	e.d.kill(t)
	time.Sleep(settle) // the table without its owner, for a while
	if left := e.knockwallRules(t); strings.Join(left, "\n") == "" {
		t.Fatal("the table went with the daemon")
	}
	e.d = startDaemon(t, e.pair.Server, e.bin, e.cfgPath)
	p.end()
	t.Logf("through the SIGKILL and the restart: %s", p)
	if n := p.connects.Load(); n > 0 {
		t.Errorf("the stranger connected %d times through the kill and the restart", n)
	}
	if m := e.d.tableMode(t); m != "owned" {
		t.Errorf("the next start runs in mode %q, want owned", m)
	}
	refused("after the restart")
	if now := e.knockwallRules(t); strings.Join(now, "\n") != strings.Join(running, "\n") {
		t.Errorf("the restart did not leave the same table:\nfirst:\n%s\nnow:\n%s", strings.Join(running, "\n"), strings.Join(now, "\n"))
	}
	e.expectClosed(t, reject, e.pair.Client2v4, e.server4(protectedPort))
	e.knock(t, e.pair.Server4, defaultSequence...)
	e.expectOpen(t, e.pair.Client4, e.server4(protectedPort)).Close()

	if _, err := e.d.stop(); err != nil {
		t.Fatal(err)
	}
	e.expectClosed(t, drop, e.pair.Client2v4, e.server4(protectedPort)) // the guard stays
	e.rulesRemove(t)
	if left := e.knockwallRules(t); len(left) > 0 {
		t.Errorf("after knockwall rules remove:\n%s", strings.Join(left, "\n"))
	}
	e.expectOpen(t, e.pair.Client2v4, e.server4(protectedPort)).Close() // the host's own firewall alone
}
