package e2e

// The nftables backend: the kernel fast path (only packets that can change
// state reach the daemon), coexistence with OpenWrt's fw4, and no iptables
// binary needed.

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// queued is how many packets the server namespace's queues ever took.
func (e *env) queued(t *testing.T) uint64 {
	t.Helper()
	return readCounters(t, e.pair.Server, 0).queued
}

// grantElems is the grant sets' listing.
func (e *env) grantElems(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, set := range []string{"grants4", "grants6"} {
		out, err := e.run(e.pair.Server, "nft", "list", "set", "inet", "knockwall", set)
		if err != nil {
			t.Fatalf("nft list set %s: %v %s", set, err, out)
		}
		b.Write(out)
	}
	return b.String()
}

// waitElem waits until the grant sets hold an element for src.
func (e *env) waitElem(t *testing.T, src string) {
	t.Helper()
	deadline := time.Now().Add(logTimeout)
	for !strings.Contains(e.grantElems(t), src+" . ") {
		if time.Now().After(deadline) {
			t.Fatalf("no grant element for %s within %v:\n%s", src, logTimeout, e.grantElems(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFastPathStaysInKernel: with the fast path, a granted source's
// connects (after the first, which the daemon judges) and SYNs to unrelated
// ports never reach the daemon (the queue's packet counter does not move),
// while knocks and strangers' SYNs to the protected port do.
func TestFastPathStaysInKernel(t *testing.T) {
	e := newEnv(t, envOptions{backend: nftFast, secondClient: true, svc: service{closed: reject}})
	holder, stranger := e.pair.Client4, e.pair.Client2v4

	before := e.queued(t)
	e.knock(t, e.pair.Server4, defaultSequence...)
	if n := e.queued(t) - before; n < uint64(len(defaultSequence)) {
		t.Errorf("the knock raised the queue counter by %d, want at least %d", n, len(defaultSequence))
	}
	// A plain sequence's grant goes into the kernel only once the daemon
	// has let in its first SYN: until then it may be a spoofer's, and it
	// ends at first_connect_within unless a SYN of it reaches the daemon.
	time.Sleep(settle)
	if l := e.grantElems(t); strings.Contains(l, holder.String()+" . ") {
		t.Errorf("the grant is in the kernel before its first connection:\n%s", l)
	}
	before = e.queued(t)
	e.expectOpen(t, holder, e.server4(protectedPort)).Close()
	if n := e.queued(t) - before; n != 1 {
		t.Errorf("the grant's first connection queued %d packets, want 1 (its SYN)", n)
	}
	e.waitElem(t, holder.String())

	before = e.queued(t)
	for i := range 10 {
		c := e.expectOpen(t, holder, e.server4(protectedPort))
		if err := echo(c, fmt.Sprintf("granted %d", i)); err != nil {
			t.Error(err)
		}
		c.Close()
		e.expectOpen(t, stranger, e.server4(openPort)).Close()
		e.expectOpen(t, e.pair.Client2v6, e.server6(openPort)).Close()
	}
	if n := e.queued(t) - before; n != 0 {
		t.Errorf("10 granted connects and 20 unrelated ones queued %d packets, want 0", n)
	}

	before = e.queued(t)
	e.expectClosed(t, reject, stranger, e.server4(protectedPort))
	if n := e.queued(t) - before; n != 1 {
		t.Errorf("a stranger's SYN to the protected port queued %d packets, want 1", n)
	}
	// A source with progress has all its SYNs judged: a wrong port
	// resets its progress, as without the fast path.
	if err := e.knockFrom(stranger, e.pair.Server4, defaultSequence[0]); err != nil {
		t.Fatal(err)
	}
	before = e.queued(t)
	e.expectOpen(t, stranger, e.server4(openPort)).Close()
	if n := e.queued(t) - before; n != 1 {
		t.Errorf("an unrelated SYN from a source with progress queued %d packets, want 1", n)
	}
}

// TestFastPathExpiry: a grant that lapses in the tracker is gone from the
// kernel no later: right after the daemon logs the expiry, the holder's
// next SYN is refused and the grant sets hold nothing for it. A revoke
// acts at the next packet too (the control socket's revoke waits for the
// kernel; here the expiry path).
func TestFastPathExpiry(t *testing.T) {
	const openFor = 2 * time.Second
	e := newEnv(t, envOptions{backend: nftFast, svc: service{closed: reject, openFor: openFor}})
	holder := e.pair.Client4
	held := e.knockOpen(t)
	e.waitElem(t, holder.String())
	mark := e.d.mark()
	if _, err := e.d.waitLogFrom(mark, "expire", map[string]string{"src": holder.String()}, openFor+logTimeout); err != nil {
		t.Fatal(err)
	}
	if l := e.grantElems(t); strings.Contains(l, holder.String()+" . ") {
		t.Errorf("the tracker expired the grant, the kernel still holds it:\n%s", l)
	}
	e.expectClosed(t, reject, holder, e.server4(protectedPort))
	if err := echo(held, "still here"); err != nil {
		t.Errorf("the connection opened during the grant: %v", err)
	}
	held.Close()
}

// fw4 is a stand-in for OpenWrt's fw4: a table inet fw4 whose input chain
// drops what it does not accept, and accepts the protected port (and the
// unprotected one) for everybody: knockwall alone keeps the protected port
// closed to strangers. Loading it again is what `fw4 reload` does: it
// flushes and refills only its own table.
const fw4 = `table inet fw4
flush table inet fw4
table inet fw4 {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iifname "lo" accept
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport { %d, %d } accept
	}
}
`

// TestFw4Coexistence: knockwall works beside fw4, and a fw4 reload while
// it runs leaves knockwall's table untouched: the port stays closed to
// strangers and opens after a knock.
func TestFw4Coexistence(t *testing.T) {
	for _, b := range []backend{nftFast, nftInline} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{backend: b, secondClient: true, svc: service{closed: reject}, beforeStart: func(t *testing.T, e *env) {
				e.loadFw4(t)
			}})
			stranger := e.pair.Client2v4
			e.expectClosed(t, reject, stranger, e.server4(protectedPort))
			before := e.knockwallRules(t)
			mark := e.d.mark()
			e.loadFw4(t)
			if after := e.knockwallRules(t); strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Errorf("a fw4 reload changed knockwall's table:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
			}
			e.expectClosed(t, reject, stranger, e.server4(protectedPort))
			e.expectClosed(t, reject, e.pair.Client6, e.server6(protectedPort))
			e.knockOpen(t).Close()
			e.expectOpen(t, stranger, e.server4(openPort)).Close()
			time.Sleep(2 * WatchEvery)
			if e.d.hasFrom(mark, "firewall rules were changed by someone else; putting them back", nil) {
				t.Errorf("a fw4 reload made knockwall think its rules were touched")
			}
		})
	}
}

// WatchEvery mirrors daemon.WatchEvery: how often the daemon looks for
// changes to the firewall.
const WatchEvery = 250 * time.Millisecond

func (e *env) loadFw4(t *testing.T) {
	t.Helper()
	cmd := e.pair.Server.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf(fw4, protectedPort, openPort))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("load fw4: %v\n%s", err, out)
	}
}

// TestNoIptablesNeeded: with the nftables backend the daemon and `rules
// remove` need no iptables binary (nor nft): they run with a PATH that
// holds nothing.
func TestNoIptablesNeeded(t *testing.T) {
	e := newEnv(t, envOptions{backend: nftFast, svc: service{closed: reject}, noDaemon: true})
	empty := t.TempDir()
	e.d = startDaemonAt(t, e.pair.Server, e.bin, e.cfgPath, "debug", "PATH="+empty)
	e.expectClosed(t, reject, e.pair.Client4, e.server4(protectedPort))
	e.knockOpen(t).Close()
	if _, err := e.d.stop(); err != nil {
		t.Fatal(err)
	}
	cmd := e.pair.Server.Command(e.bin, "rules", "remove")
	cmd.Env = append(os.Environ(), "PATH="+empty)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rules remove with an empty PATH: %v\n%s", err, out)
	}
	if left := e.knockwallRules(t); len(left) > 0 {
		t.Errorf("left after rules remove:\n%s", strings.Join(left, "\n"))
	}
}
