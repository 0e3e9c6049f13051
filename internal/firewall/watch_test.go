package firewall

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/firewall/fwtest"
)

// TestWatcher, in a namespace of its own: the generation stays while
// nothing changes, moves with an nftables change and with an
// iptables-legacy one, and asking it creates no legacy table; Events ticks
// on an nftables change.
func TestWatcher(t *testing.T) {
	ns := fwtest.Namespace(t, "kwwatch")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var w *Watcher
	var events <-chan struct{}
	if err := ns.Do(func() error {
		w = NewWatcher()
		events = w.Events(ctx)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if w.nl == nil {
		t.Skip("skipping: the kernel has no nf_tables")
	}
	gen := func() uint64 {
		t.Helper()
		var g uint64
		if err := ns.Do(func() (err error) { g, err = w.Generation(); return err }); err != nil {
			t.Fatal(err)
		}
		return g
	}
	legacyTables := func() string {
		t.Helper()
		var names []byte
		if err := ns.Do(func() (err error) {
			names, err = os.ReadFile("/proc/thread-self/net/ip_tables_names")
			if os.IsNotExist(err) {
				err = nil
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return strings.Join(strings.Fields(string(names)), " ")
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := ns.Run(ctx, name, args...); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}

	g0 := gen()
	if g := gen(); g != g0 {
		t.Errorf("the generation moved (%x → %x) with nothing changed", g0, g)
	}
	if names := legacyTables(); names != "" {
		t.Errorf("asking the generation created legacy tables: %s", names)
	}

	run("nft", "add table inet kwwatch")
	g1 := gen()
	if g1 == g0 {
		t.Error("the generation did not move with an nftables change")
	}
	select {
	case <-events:
	case <-time.After(5 * time.Second):
		t.Error("no event within 5 s of an nftables change")
	}

	if _, err := exec.LookPath("iptables-legacy"); err != nil {
		t.Log("no iptables-legacy here: its part is not tested")
		return
	}
	run("iptables-legacy", "-w", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP")
	g2 := gen()
	if g2 == g1 {
		t.Error("the generation did not move with an iptables-legacy rule")
	}
	run("iptables-legacy", "-w", "-t", "filter", "-D", "INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP")
	if g := gen(); g == g2 {
		t.Error("the generation did not move when the iptables-legacy rule went")
	}
	if names := legacyTables(); names != "filter" {
		t.Errorf("legacy tables %q, want only the filter table iptables-legacy made", names)
	}
}
