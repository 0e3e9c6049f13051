package cluster

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable Clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeHost records what the cluster applies, with services by hash.
type fakeHost struct {
	services map[string]uint64
	grants   map[entryKey]Grant
	revoked  []entryKey
	used     []string
	left     map[entryKey]int
}

func newFakeHost() *fakeHost {
	return &fakeHost{services: map[string]uint64{"ssh": 1, "web": 2}, grants: map[entryKey]Grant{}, left: map[entryKey]int{}}
}

func (h *fakeHost) ServiceHash(s string) (uint64, bool) { v, ok := h.services[s]; return v, ok }
func (h *fakeHost) ApplyGrant(g Grant) error {
	k := entryKey{g.Src, g.Service}
	if g.Limited && g.Left == 0 {
		delete(h.grants, k)
		return nil
	}
	h.grants[k] = g
	return nil
}
func (h *fakeHost) ApplyRevoke(src netip.Addr, s string) {
	delete(h.grants, entryKey{src, s})
	h.revoked = append(h.revoked, entryKey{src, s})
}
func (h *fakeHost) MarkTokenUsed(s string, m uint8, key []byte, _ time.Time) {
	h.used = append(h.used, s+"/"+string(rune('0'+m))+"/"+string(key))
}
func (h *fakeHost) GrantLeft(src netip.Addr, s string) (int, bool) {
	v, ok := h.left[entryKey{src, s}]
	return v, ok
}

var t0 = time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)

type testNode struct {
	core  *Core
	host  *fakeHost
	clock *fakeClock
	out   []Message
	log   *bytes.Buffer
}

func newTestNode(name string) *testNode {
	n := &testNode{host: newFakeHost(), clock: &fakeClock{t: t0}, log: &bytes.Buffer{}}
	n.core = NewCore(Config{Name: name, Clock: n.clock, Host: n.host, Log: slog.New(slog.NewTextHandler(n.log, nil)),
		MaxSkew: 5 * time.Second, MaxEntries: 100, MaxTokens: 100, Send: func(m Message) { n.out = append(n.out, m) }})
	return n
}

// deliver sends a's queued messages to b, through their encoding.
func deliver(a, b *testNode) {
	for _, m := range a.out {
		b.core.Receive(m.Append(nil))
	}
	a.out = nil
}

var src = netip.MustParseAddr("198.51.100.7")

func TestGrantReachesPeer(t *testing.T) {
	a, b := newTestNode("a"), newTestNode("b")
	a.core.LocalGrant(src, "ssh", 1, t0.Add(30*time.Second), 1, false, 0, t0)
	deliver(a, b)
	g, ok := b.host.grants[entryKey{src, "ssh"}]
	if !ok || !g.Expires.Equal(t0.Add(30*time.Second)) || g.Origin != "a" || g.Method != 1 {
		t.Fatalf("b holds %+v (%v)", g, ok)
	}
	if b.core.Origin(src, "ssh") != "a" || b.core.GrantsReceived.Load() != 1 || a.core.GrantsSent.Load() != 1 {
		t.Fatalf("origin %q, received %d, sent %d", b.core.Origin(src, "ssh"), b.core.GrantsReceived.Load(), a.core.GrantsSent.Load())
	}
	// The same message again (a retransmission) applies nothing new.
	delete(b.host.grants, entryKey{src, "ssh"})
	a.core.send(Event{Kind: KindGrant, Src: src, Service: "ssh", Hash: 1, Origin: "a", Seq: 1, Stamp: t0.UnixNano(), Expires: t0.Add(30 * time.Second).UnixNano(), Method: 1})
	deliver(a, b)
	if _, ok := b.host.grants[entryKey{src, "ssh"}]; ok || b.core.GrantsReceived.Load() != 1 {
		t.Fatal("a duplicate was applied again")
	}
}

func TestRevokeBeatsEarlierGrantNotLaterOne(t *testing.T) {
	a, b := newTestNode("a"), newTestNode("b")
	a.core.LocalGrant(src, "ssh", 1, t0.Add(time.Minute), 1, false, 0, t0)
	deliver(a, b)
	// b revokes one second later; a re-grants after that.
	b.clock.Add(time.Second)
	b.core.LocalRevoke(src, "ssh", t0.Add(time.Second))
	revoke := b.out
	deliver(b, a)
	if _, ok := a.host.grants[entryKey{src, "ssh"}]; ok {
		t.Fatal("the revoke did not end the grant at its origin")
	}
	a.clock.Add(2 * time.Second)
	a.core.LocalGrant(src, "ssh", 1, t0.Add(2*time.Minute), 1, false, 0, t0.Add(2*time.Second))
	deliver(a, b)
	if _, ok := b.host.grants[entryKey{src, "ssh"}]; !ok {
		t.Fatal("a grant made after the revoke was not applied")
	}
	// The old revoke arriving again (late, a partition) ends nothing.
	before := len(a.host.revoked)
	b.out = revoke
	deliver(b, a)
	if len(a.host.revoked) != before {
		t.Fatal("an old revoke ended a later grant")
	}
	// And the old grant arriving late at b after its revoke stays ended:
	// c saw only the first grant and the revoke, in the wrong order.
	c := newTestNode("c")
	c.clock.Add(time.Second)
	c.core.Merge(Message{Sender: "b", Sent: c.clock.Now().UnixNano(), Events: []Event{revoke[0].Events[0]}})
	c.core.Merge(Message{Sender: "a", Sent: c.clock.Now().UnixNano(), Events: []Event{{Kind: KindGrant, Src: src, Service: "ssh", Hash: 1,
		Origin: "a", Seq: 1, Stamp: t0.UnixNano(), Expires: t0.Add(time.Minute).UnixNano(), Method: 1}}})
	if _, ok := c.host.grants[entryKey{src, "ssh"}]; ok {
		t.Fatal("a grant older than a revoke came back")
	}
}

func TestEqualStampsOrderedByOriginThenSeq(t *testing.T) {
	v := func(o string, s uint64) version { return version{stamp: 5, origin: o, seq: s} }
	if !v("b", 1).after(v("a", 9)) || v("a", 9).after(v("b", 1)) || !v("a", 2).after(v("a", 1)) || v("a", 1).after(v("a", 1)) {
		t.Fatal("the order of equal stamps is not origin, then seq")
	}
	if !(version{stamp: 6}).after(v("z", 99)) {
		t.Fatal("a later stamp does not win")
	}
}

func TestOneShotCountOnlyFalls(t *testing.T) {
	a, b := newTestNode("a"), newTestNode("b")
	a.core.LocalGrant(src, "ssh", 1, t0.Add(time.Minute), 1, true, 3, t0)
	deliver(a, b)
	if g := b.host.grants[entryKey{src, "ssh"}]; !g.Limited || g.Left != 3 {
		t.Fatalf("b holds %+v", g)
	}
	// One connection used at a: a's state carries 2 left.
	a.host.left[entryKey{src, "ssh"}] = 2
	b.core.Receive(a.core.State().Append(nil))
	if g := b.host.grants[entryKey{src, "ssh"}]; g.Left != 2 {
		t.Fatalf("after a's state b holds %d left, want 2", g.Left)
	}
	// b's older count (3) cannot raise it back at a; a's last use ends it.
	b.host.left[entryKey{src, "ssh"}] = 3
	a.core.Receive(b.core.State().Append(nil))
	delete(a.host.left, entryKey{src, "ssh"}) // used up at a
	b.core.Receive(a.core.State().Append(nil))
	if _, ok := b.host.grants[entryKey{src, "ssh"}]; ok {
		t.Fatal("a one-shot grant used up at a still lets in at b")
	}
}

func TestSkewRefused(t *testing.T) {
	a, b := newTestNode("a"), newTestNode("b")
	a.clock.Add(6 * time.Second) // a's clock runs 6 s ahead of b's
	a.core.LocalGrant(src, "ssh", 1, a.clock.Now().Add(30*time.Second), 1, false, 0, a.clock.Now())
	a.core.LocalUsed("ssh", 2, bytes.Repeat([]byte{1}, SPAKeySize), a.clock.Now().Add(time.Minute))
	deliver(a, b)
	if len(b.host.grants) != 0 || len(b.host.used) != 0 {
		t.Fatalf("a skewed peer's events were applied: %+v %v", b.host.grants, b.host.used)
	}
	if n := b.core.RefusedSkew.Load(); n != 2 {
		t.Fatalf("refused for skew: %d, want 2", n)
	}
	if !strings.Contains(b.log.String(), "max_clock_skew") || strings.Count(b.log.String(), "peer refused") != 1 {
		t.Fatalf("log (want one rate-limited line):\n%s", b.log)
	}
	// Behind by as much: refused too. Within the bound: taken.
	a.clock.Add(-12 * time.Second)
	a.core.LocalGrant(src, "web", 2, a.clock.Now().Add(30*time.Second), 1, false, 0, a.clock.Now())
	deliver(a, b)
	if len(b.host.grants) != 0 || b.core.RefusedSkew.Load() != 3 {
		t.Fatal("a peer 6 s behind was not refused")
	}
	a.clock.Add(10 * time.Second) // 4 s ahead
	a.core.LocalGrant(src, "web", 2, a.clock.Now().Add(30*time.Second), 1, false, 0, a.clock.Now())
	deliver(a, b)
	if len(b.host.grants) != 1 {
		t.Fatal("a peer within max_clock_skew was refused")
	}
}

func TestServiceMustAgree(t *testing.T) {
	a, b := newTestNode("a"), newTestNode("b")
	b.host.services["ssh"] = 99 // b's ssh has other ports
	delete(b.host.services, "web")
	for i := range 3 {
		a.core.LocalGrant(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), "ssh", 1, t0.Add(time.Minute), 1, false, 0, t0)
		a.core.LocalGrant(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), "web", 2, t0.Add(time.Minute), 1, false, 0, t0)
	}
	deliver(a, b)
	if len(b.host.grants) != 0 || b.core.RefusedService.Load() != 6 {
		t.Fatalf("grants %v, refused %d", b.host.grants, b.core.RefusedService.Load())
	}
	logs := b.log.String()
	if strings.Count(logs, "service differs") != 1 || strings.Count(logs, "does not have") != 1 {
		t.Fatalf("want one line per (peer, service):\n%s", logs)
	}
	// A token of an unknown service is not recorded; a revoke of a
	// differing service still ends the grant (ending is never unsafe).
	a.core.LocalUsed("web", 2, make([]byte, SPAKeySize), t0.Add(time.Minute))
	b.host.grants[entryKey{src, "ssh"}] = Grant{}
	a.core.LocalRevoke(src, "ssh", t0)
	deliver(a, b)
	if len(b.host.used) != 0 || len(b.host.grants) != 0 {
		t.Fatalf("used %v, grants %v", b.host.used, b.host.grants)
	}
}

func TestStateCatchesUpRestartedNode(t *testing.T) {
	a, b := newTestNode("a"), newTestNode("b")
	a.core.LocalGrant(src, "ssh", 1, t0.Add(time.Minute), 1, false, 0, t0)
	a.core.LocalGrant(netip.MustParseAddr("fd00::1"), "web", 2, t0.Add(time.Minute), 3, false, 0, t0)
	a.core.LocalRevoke(netip.MustParseAddr("10.9.9.9"), "ssh", t0)
	a.core.LocalUsed("ssh", 4, bytes.Repeat([]byte{7}, FwknopKeySize), t0.Add(time.Minute))
	a.out = nil // b was down: it got none of the broadcasts
	b.core.Receive(a.core.State().Append(nil))
	if len(b.host.grants) != 2 || len(b.host.used) != 1 {
		t.Fatalf("b after a's state: grants %v, used %v", b.host.grants, b.host.used)
	}
	// a restarts: its own old grants come back from b, and a new grant of
	// the restarted a (a later stamp) replaces one.
	a2 := newTestNode("a")
	a2.clock.Add(10 * time.Second)
	b.clock.Add(10 * time.Second)
	a2.core.Receive(b.core.State().Append(nil))
	if len(a2.host.grants) != 2 || len(a2.host.used) != 1 {
		t.Fatalf("restarted a: grants %v, used %v", a2.host.grants, a2.host.used)
	}
	a2.core.LocalGrant(src, "ssh", 1, a2.clock.Now().Add(time.Hour), 1, false, 0, a2.clock.Now())
	deliver(a2, b)
	if g := b.host.grants[entryKey{src, "ssh"}]; !g.Expires.Equal(a2.clock.Now().Add(time.Hour)) {
		t.Fatalf("b holds %v", g.Expires)
	}
	// Lapsed events are not sent, and are forgotten.
	b.clock.Add(2 * time.Hour)
	if st := b.core.State(); len(st.Events) != 0 {
		t.Fatalf("lapsed events sent: %+v", st.Events)
	}
	b.core.Purge(b.clock.Now())
	if e, u := b.core.Held(); e != 0 || u != 0 {
		t.Fatalf("held after purge: %d %d", e, u)
	}
}

func TestBoundedAndMalformed(t *testing.T) {
	a := newTestNode("a")
	for i := range 150 {
		a.core.LocalGrant(netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}), "ssh", 1, t0.Add(time.Minute), 1, false, 0, t0)
	}
	if e, _ := a.core.Held(); e != 100 || a.core.RefusedFull.Load() != 50 {
		t.Fatalf("held %d, refused %d", e, a.core.RefusedFull.Load())
	}
	a.core.Receive([]byte{1, 2, 3})
	a.core.Receive(nil)
	if a.core.RefusedMalformed.Load() != 2 {
		t.Fatal("malformed messages not counted")
	}
}
