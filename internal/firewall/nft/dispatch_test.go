package nft

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/firewall/fwtest"
	"github.com/knockwall/knockwall/rules"
)

// TestLayout: the fast path's divert chain is dispatched by port, every
// plan rule installed in exactly the chains it decides in; plans where
// dispatch could decide otherwise (a port in two sets) or that have no
// fast path are installed as they are.
func TestLayout(t *testing.T) {
	names := func(rs []rchain) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.name)
		}
		return out
	}
	fast := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{FastPath: true})
	got := layout(fast)
	if want := []string{"guard", "refuse", "divert_knock_tcp", "divert_protected", "divert_syn", "divert"}; !slices.Equal(names(got), want) {
		t.Fatalf("fast path chains %q, want %q", names(got), want)
	}
	var jumps []portJump
	for _, tr := range got[len(got)-2].rules {
		if tr.entry == entryDispatch {
			jumps = tr.jumps
		}
	}
	// The base chain: the loopback rule, the goto to the SYN chain, the
	// UDP rules.
	for i, tr := range got[len(got)-1].rules {
		if r := tr.r; i > 1 && (r == nil || r.Proto != rules.ProtoUDP) || i == 1 && tr.entry != entrySYN {
			t.Errorf("divert rule %d is %q; want lo, the goto to %s, then UDP rules", i, tr.tag, synChain)
		}
	}
	wantJumps := []portJump{{7000, 7000, "divert_knock_tcp"}, {8000, 8000, "divert_knock_tcp"}, {22, 22, "divert_protected"}, {2222, 2222, "divert_protected"}}
	if !slices.Equal(jumps, wantJumps) {
		t.Errorf("dispatch map %v, want %v", jumps, wantJumps)
	}
	// Every plan rule of the divert chain once (the grant rules once per
	// chain of ports grants are written for: here the protected ports).
	count := map[string]int{}
	for _, rc := range got[2:] {
		for _, tr := range rc.rules {
			count[tr.tag]++
		}
	}
	for _, tr := range chainRules(fast.Chain(firewall.ChainDivert)) {
		if count[tr.tag] != 1 {
			t.Errorf("rule %q installed %d times", tr.tag, count[tr.tag])
		}
	}

	inline := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{})
	if n := names(layout(inline)); slices.Contains(n, "divert_protected") {
		t.Errorf("inline plan dispatched: %q", n)
	}
	overlap := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{FastPath: true})
	for i := range overlap.Sets {
		if overlap.Sets[i].Name == firewall.SetKnockTCP {
			overlap.Sets[i].Ports = append(overlap.Sets[i].Ports, firewall.PortRange{Lo: 22, Hi: 22})
		}
	}
	if n := names(layout(overlap)); slices.Contains(n, "divert_protected") {
		t.Errorf("a port in two sets dispatched: %q", n)
	}
}

// TestKernelDispatchRanges: a rotating sequence's range of knock ports, and
// a protected port right after it, go in an interval verdict map; the
// table checks clean, and the printed script installs the same.
func TestKernelDispatchRanges(t *testing.T) {
	p := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{FastPath: true})
	for i := range p.Sets {
		switch p.Sets[i].Name {
		case firewall.SetKnockTCP:
			p.Sets[i].Ports = append(p.Sets[i].Ports, firewall.PortRange{Lo: 20000, Hi: 20999})
		case firewall.SetProtected:
			p.Sets[i].Ports = append(p.Sets[i].Ports, firewall.PortRange{Lo: 21000, Hi: 21000}, firewall.PortRange{Lo: 65535, Hi: 65535})
		}
	}
	applied, printed := newKernel(t, WithOwnedTable(false)), newKernel(t)
	if err := applied.b.Apply(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, applied.b, p, "after Apply")
	want := applied.listing(t)
	if !strings.Contains(want, "20000-20999 : jump divert_knock_tcp, 21000 : jump divert_protected") {
		t.Errorf("no interval verdict map in:\n%s", want)
	}
	var script strings.Builder
	if err := applied.b.Render(&script, p); err != nil {
		t.Fatal(err)
	}
	text := script.String()
	if applied.b.compatQueue {
		text = queueStmt.ReplaceAllString(text, "accept")
		want = queueStmt.ReplaceAllString(want, "accept")
	}
	cmd := exec.Command("ip", "netns", "exec", string(printed.ns), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v\n%s\n%s", err, out, text)
	}
	if got := printed.listing(t); got != want {
		t.Errorf("the printed script installs\n%s\nbut Apply installs\n%s", got, want)
	}
}
