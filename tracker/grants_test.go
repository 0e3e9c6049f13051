package tracker_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/knockwall/knockwall/tracker"
)

// TestOneShotGrant: a grant with a connection limit lets in that many new
// connections (a retransmitted SYN of the last one, from the same source
// port, is not a new one), then refuses, and a fresh grant starts a fresh
// count.
func TestOneShotGrant(t *testing.T) {
	tr := newTracker(t, 16, 16)
	src := netip.MustParseAddr("10.0.0.5")
	const id = 7
	if !tr.Grant(src, id, t0, time.Minute, 2, tracker.MethodSequence) {
		t.Fatal("grant refused")
	}
	steps := []struct {
		port uint16
		want bool
		why  string
	}{
		{1000, true, "first connection"},
		{1000, true, "its retransmitted SYN"},
		{1001, true, "second connection"},
		{1001, true, "its retransmitted SYN"},
		{1002, false, "a third connection: none left"},
		{1000, false, "the first connection's port again: not the last one"},
		{1001, true, "the last connection's SYN again"},
	}
	for i, s := range steps {
		if got := tr.Granted(src, []uint64{id}, s.port, t0.Add(time.Duration(i)*time.Second)); got != s.want {
			t.Errorf("step %d (%s): Granted = %v, want %v", i, s.why, got, s.want)
		}
	}
	if st := tr.Stats(); st.Exhausted != 2 {
		t.Errorf("Exhausted = %d, want 2", st.Exhausted)
	}
	gs := tr.Grants(t0.Add(10 * time.Second))
	if len(gs) != 1 || !gs[0].Limited || gs[0].Left != 0 || gs[0].How != tracker.MethodSequence {
		t.Errorf("Grants = %+v, want one exhausted sequence grant", gs)
	}
	if tr.Granted(src, []uint64{id}, 1001, t0.Add(2*time.Minute)) {
		t.Error("granted after expiry")
	}
	// Knocking again: a fresh window and count.
	tr.Grant(src, id, t0.Add(3*time.Minute), time.Minute, 2, tracker.MethodSequence)
	if !tr.Granted(src, []uint64{id}, 2000, t0.Add(3*time.Minute)) {
		t.Error("a fresh grant refused its first connection")
	}
}

// TestPutRevokeGrants: Put records exactly what it is given (a manual or
// restored grant), Grants lists live grants sorted, Revoke ends them at
// once for one service or all.
func TestPutRevokeGrants(t *testing.T) {
	tr := newTracker(t, 16, 16)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::2")
	until := t0.Add(time.Hour)
	for _, g := range []tracker.GrantInfo{
		{Src: b, ID: 1, Expires: until, How: tracker.MethodManual},
		{Src: a, ID: 2, Expires: until, How: tracker.MethodSPA, Limited: true, Left: 1, LastPort: 555},
		{Src: a, ID: 1, Expires: until, How: tracker.MethodSequence},
	} {
		if !tr.Put(g, t0) {
			t.Fatalf("Put(%+v) refused", g)
		}
	}
	if tr.Put(tracker.GrantInfo{Src: a, ID: 3, Expires: t0}, t0) {
		t.Error("Put of a grant that has ended accepted")
	}
	gs := tr.Grants(t0)
	if len(gs) != 3 || gs[0].Src != a || gs[0].ID != 1 || gs[1].ID != 2 || gs[2].Src != b {
		t.Fatalf("Grants = %+v, want sorted by source then id", gs)
	}
	if g := gs[1]; !g.Limited || g.Left != 1 || g.LastPort != 555 || g.How != tracker.MethodSPA || !g.Expires.Equal(until) {
		t.Errorf("restored one-shot grant = %+v", g)
	}
	if !tr.Granted(a, []uint64{2}, 555, t0) {
		t.Error("the restored last connection's retransmission refused")
	}
	if got := tr.Revoke(a, 2); len(got) != 1 {
		t.Errorf("Revoke(a, 2) = %+v, want one grant", got)
	}
	if tr.Granted(a, []uint64{2}, 600, t0) || !tr.Granted(a, []uint64{1}, 600, t0) {
		t.Error("Revoke of one service touched the wrong grants")
	}
	if got := tr.Revoke(a, 0); len(got) != 1 {
		t.Errorf("Revoke(a, all) = %+v, want the remaining one", got)
	}
	if tr.Granted(a, []uint64{1, 2}, 600, t0) || !tr.Granted(b, []uint64{1}, 600, t0) {
		t.Error("Revoke of all of a's grants touched b's, or left a's")
	}
	if st := tr.Stats(); st.Grants != 1 {
		t.Errorf("Grants count = %d, want 1", st.Grants)
	}
	if m, ok := tracker.ParseMethod("spa"); !ok || m != tracker.MethodSPA || m.String() != "spa" {
		t.Errorf("ParseMethod(spa) = %v, %v", m, ok)
	}
}

// TestPendingBy counts sources with progress per granted service: two
// sequences that grant the same service count together.
func TestPendingBy(t *testing.T) {
	tr := newTracker(t, 64, 16)
	for i, k := range []uint32{tcp(7000), tcp(7000), tcp(7100), udp(10001)} {
		src := netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})
		if out := tr.Observe(src, k, t0, seqs); out.Event != tracker.EventStep {
			t.Fatalf("first knock %d: %v", i, out.Event)
		}
	}
	got := tr.PendingBy(seqs)
	if len(got) != 2 || got[0] != 3 || got[1] != 1 {
		t.Errorf("PendingBy = %v, want service 0: 3, service 1: 1", got)
	}
}
