package nft

import (
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/firewall/fwtest"
)

// ownedKernel is newKernel on a kernel that makes owned tables; it skips
// elsewhere.
func ownedKernel(t *testing.T) *kernel {
	t.Helper()
	k := newKernel(t)
	if m, err := k.b.Mode(); m != firewall.ModeOwned {
		t.Skipf("skipping: this kernel makes no owned, persistent tables (Linux 6.9 and later do): %v", err)
	}
	return k
}

// nftErr runs nft in the namespace and returns its error output, or ""
// when it succeeded.
func (k *kernel) nftErr(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", string(k.ns), "nft"}, args...)...).CombinedOutput()
	if err == nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// tableFlagsNow reads the table's flags as the kernel reports them.
func (k *kernel) tableFlagsNow(t *testing.T, b *Backend) (uint32, bool) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	st, err := b.read()
	if err != nil {
		t.Fatal(err)
	}
	return st.flags, st.exists
}

// TestKernelOwned: the owned table refuses every other process's change
// and survives its `flush ruleset`; it stays when its owner closes; the
// next backend adopts it, and another backend cannot while an owner lives;
// Remove adopts and deletes it.
func TestKernelOwned(t *testing.T) {
	k := ownedKernel(t)
	ctx := context.Background()
	p := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{FastPath: true})
	if err := k.b.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if f, _ := k.tableFlagsNow(t, k.b); f != tableOwned {
		t.Fatalf("table flags %#x, want owner|persist %#x", f, tableOwned)
	}
	first := k.listing(t)
	for _, cmd := range [][]string{
		{"delete", "table", "inet", "knockwall"},
		{"flush", "chain", "inet", "knockwall", "guard"},
		{"add", "table", "inet", "knockwall", "{", "flags", "dormant;", "}"},
		{"add", "chain", "inet", "knockwall", "guard", "{", "policy", "drop;", "}"},
		{"add", "element", "inet", "knockwall", "grants4", "{", "10.9.9.9", ".", "22", "}"},
	} {
		if e := k.nftErr(t, cmd...); !strings.Contains(e, "Operation not permitted") {
			t.Errorf("nft %s by another process: %q, want Operation not permitted", strings.Join(cmd, " "), e)
		}
	}
	k.nft(t, "flush", "ruleset") // succeeds, and passes the owned table by
	if got := k.listing(t); got != first {
		t.Errorf("another process changed the owned table:\n%s\nthen:\n%s", first, got)
	}
	mustCheck(t, k.b, p, "after the others' attempts")

	// Its owner goes (a crash, a restart): the table stays, whole.
	if err := k.b.Close(); err != nil {
		t.Fatal(err)
	}
	if f, ok := k.tableFlagsNow(t, k.open(t, WithOwnedTable(false))); !ok || f&tablePersist == 0 {
		t.Fatalf("after the owner closed: table present %v, flags %#x; want it kept", ok, f)
	}
	next := k.open(t)
	// Whole, and without an owner until the next start adopts it.
	if found, err := next.Check(ctx, p); err != nil || !slices.Equal(found, []string{"table inet knockwall has flags persist, want owner,persist"}) {
		t.Errorf("Check by the next process, before it adopts = %q, %v; want the missing owner alone", found, err)
	}
	if err := next.Apply(ctx, p); err != nil {
		t.Fatalf("the next start could not adopt the table: %v", err)
	}
	if e := k.nftErr(t, "delete", "table", "inet", "knockwall"); !strings.Contains(e, "Operation not permitted") {
		t.Errorf("after adoption, nft delete table: %q, want Operation not permitted", e)
	}
	// A second knockwall while one runs cannot take it.
	other := k.open(t)
	if err := other.Apply(ctx, p); !errors.Is(err, ErrHeld) {
		t.Errorf("Apply while another owner lives = %v, want ErrHeld", err)
	}
	if err := other.Remove(ctx); !errors.Is(err, ErrHeld) {
		t.Errorf("Remove while another owner lives = %v, want ErrHeld", err)
	}
	// The stopped plan, then the owner exits: `rules remove` adopts and
	// deletes.
	if err := next.Apply(ctx, p.Stopped()); err != nil {
		t.Fatal(err)
	}
	next.Close()
	rm := k.open(t)
	if err := rm.Remove(ctx); err != nil {
		t.Fatalf("Remove of a table left by a stopped daemon: %v", err)
	}
	if got := k.listing(t); strings.Contains(got, "knockwall") {
		t.Errorf("after Remove:\n%s", got)
	}
}

// TestKernelOwnedConversion: a start finds an ordinary table (a printed
// script, an earlier run without ownership) and makes it owned, or finds
// an owned one with owned_table off and makes it ordinary: the rules the
// same, in one batch (the guard is replaced, never absent).
func TestKernelOwnedConversion(t *testing.T) {
	k := ownedKernel(t)
	ctx := context.Background()
	p := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{FastPath: true})
	plain := k.open(t, WithOwnedTable(false))
	if err := plain.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	want := k.listing(t)
	if err := k.b.Apply(ctx, p); err != nil {
		t.Fatalf("Apply over an ordinary table: %v", err)
	}
	if f, _ := k.tableFlagsNow(t, k.b); f != tableOwned {
		t.Errorf("after Apply over an ordinary table: flags %#x, want %#x", f, tableOwned)
	}
	mustCheck(t, k.b, p, "after the conversion to owned")
	k.b.Close()
	if err := plain.Apply(ctx, p); err != nil {
		t.Fatalf("Apply with owned_table off over a persistent table: %v", err)
	}
	if f, _ := k.tableFlagsNow(t, plain); f != 0 {
		t.Errorf("after Apply with owned_table off: flags %#x, want 0", f)
	}
	if got := k.listing(t); got != want {
		t.Errorf("the conversions changed the rules:\n%s\nthen:\n%s", want, got)
	}
}
