package daemon

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/tracker"
)

// recordingWriter keeps the last UpdateGrants call.
type recordingWriter struct {
	add, del []firewall.GrantElem
	calls    int
}

func (w *recordingWriter) UpdateGrants(_ context.Context, add, del []firewall.GrantElem) error {
	w.add, w.del = add, del
	w.calls++
	return nil
}

func (w *recordingWriter) ReplaceGrants(context.Context, []firewall.GrantElem) error { return nil }

func (w *recordingWriter) ReadGrants(context.Context) ([]firewall.GrantElem, error) { return nil, nil }

// TestGrantSyncFollowsTheTracker: the kernel's element ends with the
// tracker's grant (less the margin) whether the grant grows or shrinks,
// and nothing is written when nothing changed.
func TestGrantSyncFollowsTheTracker(t *testing.T) {
	tr, err := tracker.New(tracker.Config{MaxPending: 16, MaxGrants: 16})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	w := &recordingWriter{}
	g := newGrantSync(w, tr, func() time.Time { return now }, slog.New(slog.DiscardHandler))
	const id = 7
	g.setPlan(&firewall.Plan{GrantPorts: map[uint64][]uint16{id: {22}}})
	src := netip.MustParseAddr("10.0.0.9")
	ctx := context.Background()

	put := func(d time.Duration) {
		t.Helper()
		if !tr.Put(tracker.GrantInfo{Src: src, ID: id, Expires: now.Add(d)}, now) {
			t.Fatalf("Put %v refused", d)
		}
		if err := g.add(ctx, []grantEvent{{src, id}}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, calls int, timeout time.Duration, deleted bool) {
		t.Helper()
		if w.calls != calls {
			t.Fatalf("%s: %d writes, want %d", what, w.calls, calls)
		}
		if len(w.add) != 1 || w.add[0].Timeout != timeout || w.add[0].Src != src || w.add[0].Port != 22 {
			t.Errorf("%s: added %v, want %v . 22 for %v", what, w.add, src, timeout)
		}
		if deleted != (len(w.del) == 1) {
			t.Errorf("%s: deleted %v, want a delete: %v", what, w.del, deleted)
		}
	}

	put(time.Minute)
	check("a new grant", 1, time.Minute-grantMargin, false)
	put(time.Minute)
	if w.calls != 1 {
		t.Errorf("an unchanged grant was written again (%d writes)", w.calls)
	}
	put(2 * time.Minute)
	check("a longer grant", 2, 2*time.Minute-grantMargin, true)
	put(10 * time.Second)
	check("a shorter grant", 3, 10*time.Second-grantMargin, true)

	// Forgotten once the kernel has expired them.
	now = now.Add(time.Hour)
	if err := g.add(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if len(g.written) != 0 {
		t.Errorf("written still holds %v an hour later", g.written)
	}
}

// TestGrantSyncReconcile: the grant sets read back are made to hold what
// the tracker grants: a stray element (a revoke whose write failed, one
// added by someone else) goes, one that would outlive its grant is written
// again with the grant's end, a missing one is added, and a second
// reconcile finds nothing to do.
func TestGrantSyncReconcile(t *testing.T) {
	tr, err := tracker.New(tracker.Config{MaxPending: 16, MaxGrants: 16})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ev := newEvents()
	w := &fakeFastBackend{fakeBackend: &fakeBackend{name: "nftables", ev: ev}}
	g := newGrantSync(w, tr, func() time.Time { return now }, slog.New(slog.DiscardHandler))
	const id = 7
	g.setPlan(&firewall.Plan{GrantPorts: map[uint64][]uint16{id: {22}}})
	kept, shortened, missing, stray := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::3"), netip.MustParseAddr("10.0.0.4")
	for _, gi := range []tracker.GrantInfo{
		{Src: kept, ID: id, Expires: now.Add(time.Minute)},
		{Src: shortened, ID: id, Expires: now.Add(10 * time.Second)},
		{Src: missing, ID: id, Expires: now.Add(time.Minute)},
	} {
		if !tr.Put(gi, now) {
			t.Fatal("Put refused")
		}
	}
	w.sets = map[netip.AddrPort]time.Duration{
		netip.AddrPortFrom(kept, 22):      time.Minute - grantMargin,
		netip.AddrPortFrom(shortened, 22): time.Hour,
		netip.AddrPortFrom(stray, 22):     time.Hour,
	}
	ctx := context.Background()
	if err := g.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[netip.AddrPort]time.Duration{
		netip.AddrPortFrom(kept, 22):      time.Minute - grantMargin,
		netip.AddrPortFrom(shortened, 22): 10*time.Second - grantMargin,
		netip.AddrPortFrom(missing, 22):   time.Minute - grantMargin,
	}
	if !maps.Equal(w.sets, want) {
		t.Errorf("after reconcile the sets hold %v, want %v", w.sets, want)
	}
	writes := w.writes
	if err := g.reconcile(ctx); err != nil || w.writes != writes {
		t.Errorf("a second reconcile: %v, %d writes; want nothing to do", err, w.writes-writes)
	}
}
