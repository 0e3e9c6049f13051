package nft

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/firewall/fwtest"
	"github.com/knockwall/knockwall/internal/netns"
	"github.com/knockwall/knockwall/rules"
)

// kernel is a backend in a fresh namespace of its own.
type kernel struct {
	ns netns.NS
	b  *Backend
}

func newKernel(t *testing.T, opts ...Option) *kernel {
	t.Helper()
	ns := fwtest.Namespace(t, "kwnft")
	k := &kernel{ns: ns}
	k.b = k.open(t, opts...)
	t.Logf("kernel queue expression: compat %v; table mode %s", k.b.compatQueue, k.mode(t))
	return k
}

// open is another backend in k's namespace (another process, as the
// kernel sees it: a socket of its own).
func (k *kernel) open(t *testing.T, opts ...Option) *Backend {
	t.Helper()
	f, err := os.Open(k.ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	b, err := New(append([]Option{WithNetNS(int(f.Fd()))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func (k *kernel) mode(t *testing.T) string {
	m, err := k.b.Mode()
	if err != nil {
		return m + " (" + err.Error() + ")"
	}
	return m
}

// nft runs nft in the namespace and returns its standard output (nft's
// libxtables complains on standard error about xtables expressions in an
// inet table, which it prints all the same).
func (k *kernel) nft(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", string(k.ns), "nft"}, args...)...).Output()
	if err != nil {
		t.Fatalf("nft %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// listing is `nft list ruleset` without comment lines (nft warns about
// tables holding xtables expressions).
func (k *kernel) listing(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, l := range strings.Split(k.nft(t, "list", "ruleset"), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func mustCheck(t *testing.T, b *Backend, p *firewall.Plan, what string) {
	t.Helper()
	missing, err := b.Check(context.Background(), p)
	if err != nil || len(missing) > 0 {
		t.Fatalf("Check %s = %q, %v", what, missing, err)
	}
}

// TestKernelRouter applies a router's plan: the divert chain on
// prerouting, scoped to this host and the routed prefixes, and the guard
// on the forward path too.
func TestKernelRouter(t *testing.T) {
	for _, fast := range []bool{false, true} {
		t.Run(map[bool]string{false: "inline", true: "fast path"}[fast], func(t *testing.T) {
			k := newKernel(t)
			p := firewall.NewPlan(fwtest.RouterSet(t), firewall.Options{FastPath: fast})
			if err := k.b.Apply(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			mustCheck(t, k.b, p, "after Apply")
			got := k.listing(t)
			for _, want := range []string{
				"hook prerouting priority mangle + 1",
				"iifname @trusted accept",
				"fib daddr type != local ip daddr != @routed4 accept",
				"fib daddr type != local ip6 daddr != @routed6 accept",
				"chain guard_fwd", "hook forward priority security",
				"ct status dnat ct original proto-dst @fwd_ports meta mark & 0x30000000 != 0x10000000 drop",
				"ip6 daddr . tcp dport @fwd_hosts6 meta mark & 0x30000000 != 0x10000000 drop",
				"2001:db8:10::/64 . 22", "198.51.100.0/24 . 80", `"br-lan"`, `"lan0"`,
				"chain refuse_fwd",
			} {
				if !strings.Contains(got, want) {
					t.Errorf("listing lacks %q:\n%s", want, got)
				}
			}
			// Back to a host's plan: the forward chains and their sets go.
			host := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{FastPath: fast})
			if err := k.b.Apply(context.Background(), host); err != nil {
				t.Fatal(err)
			}
			mustCheck(t, k.b, host, "after going back to a host's plan")
			if got := k.listing(t); strings.Contains(got, "guard_fwd") || strings.Contains(got, "routed4") || strings.Contains(got, "prerouting") {
				t.Errorf("router chains left:\n%s", got)
			}
		})
	}
}

func TestKernelLifecycle(t *testing.T) {
	for _, fast := range []bool{false, true} {
		name := "inline"
		if fast {
			name = "fast path"
		}
		t.Run(name, func(t *testing.T) {
			// An ordinary table, which nft may change: the owned one
			// refuses (TestKernelOwned).
			k := newKernel(t, WithOwnedTable(false))
			ctx := context.Background()
			p := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{FastPath: fast})
			if err := k.b.Apply(ctx, p); err != nil {
				t.Fatal(err)
			}
			mustCheck(t, k.b, p, "after Apply")
			first := k.listing(t)
			for _, want := range []string{"table inet knockwall", "chain guard", "hook input priority security", "chain divert", "queue num 0 bypass",
				"meta mark & 0x30000000 != 0x10000000 drop", "reject with tcp reset", "elements = { 22, 2222 }"} {
				if !strings.Contains(first, want) {
					t.Errorf("listing lacks %q:\n%s", want, first)
				}
			}
			if err := k.b.Apply(ctx, p); err != nil {
				t.Fatal(err)
			}
			if again := k.listing(t); again != first {
				t.Errorf("a second Apply changed the table:\n%s\nthen:\n%s", first, again)
			}

			// Someone deletes the guard's rule, then flushes the
			// ruleset: Check tells, Apply repairs.
			k.nft(t, "flush", "chain", "inet", "knockwall", "guard")
			if missing, _ := k.b.Check(ctx, p); len(missing) == 0 {
				t.Error("Check found nothing missing after the guard chain was flushed")
			}
			k.nft(t, "delete", "element", "inet", "knockwall", "protected", "{", "2222", "}")
			if missing, _ := k.b.Check(ctx, p); len(missing) < 2 {
				t.Errorf("Check after a protected port's element was deleted = %q, want the set named too", missing)
			}
			k.nft(t, "flush", "ruleset")
			missing, err := k.b.Check(ctx, p)
			if err != nil || len(missing) == 0 {
				t.Fatalf("Check after flush ruleset = %q, %v", missing, err)
			}
			t.Logf("after flush ruleset: %q", missing)
			if err := k.b.Apply(ctx, p); err != nil {
				t.Fatal(err)
			}
			mustCheck(t, k.b, p, "after the repair")

			stopped := p.Stopped()
			if err := k.b.Apply(ctx, stopped); err != nil {
				t.Fatal(err)
			}
			mustCheck(t, k.b, stopped, "of the stopped plan")
			got := k.listing(t)
			if strings.Contains(got, "queue") || strings.Contains(got, "chain refuse") {
				t.Errorf("stopped: diversion or reject still there:\n%s", got)
			}
			if !strings.Contains(got, "!= 0x10000000 drop") || !strings.Contains(got, "meta mark set meta mark & 0xcfffffff") {
				t.Errorf("stopped: guard or mark clearing gone:\n%s", got)
			}
			for range 2 {
				if err := k.b.Remove(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if got := k.listing(t); strings.Contains(got, "knockwall") {
				t.Errorf("after Remove:\n%s", got)
			}
		})
	}
}

// TestKernelGrants writes grant elements and checks that an Apply (a
// reload, a repair) keeps them, and that timeouts are what was written.
func TestKernelGrants(t *testing.T) {
	k := newKernel(t)
	ctx := context.Background()
	p := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{FastPath: true})
	if err := k.b.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	a4, a6 := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::7")
	add := []firewall.GrantElem{{Src: a4, Port: 22, Timeout: 30 * time.Second}, {Src: a6, Port: 2222, Timeout: 20 * time.Second}}
	if err := k.b.UpdateGrants(ctx, add, nil); err != nil {
		t.Fatal(err)
	}
	// A refresh: delete and add again in one batch.
	if err := k.b.UpdateGrants(ctx, []firewall.GrantElem{{Src: a4, Port: 22, Timeout: 60 * time.Second}}, []firewall.GrantElem{{Src: a4, Port: 22}}); err != nil {
		t.Fatal(err)
	}
	// A reload with another protected port keeps the grants.
	p2 := firewall.NewPlan(fwtest.Set(t, func(c *rules.Config) {
		s := c.Services["ssh"]
		s.Ports = []int{22, 2222, 2223}
		c.Services["ssh"] = s
	}), firewall.Options{FastPath: true})
	if err := k.b.Apply(ctx, p2); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, k.b, p2, "after the reload")
	els, err := k.b.grantElems()
	if err != nil {
		t.Fatal(err)
	}
	got := map[netip.AddrPort]time.Duration{}
	for _, e := range els {
		got[netip.AddrPortFrom(e.Src, e.Port)] = e.Timeout
	}
	if d, ok := got[netip.AddrPortFrom(a4, 22)]; !ok || d < 50*time.Second || d > 60*time.Second {
		t.Errorf("10.1.2.3 . 22 expires in %v (present %v), want the refreshed ~60s", d, ok)
	}
	if d, ok := got[netip.AddrPortFrom(a6, 2222)]; !ok || d > 20*time.Second {
		t.Errorf("fd00::7 . 2222 expires in %v (present %v), want ≤ 20s", d, ok)
	}
	// A start empties the grant sets in the same batch: the kernel may hold
	// grants of a process that is gone.
	fresh := *p2
	fresh.FreshGrants = true
	if err := k.b.Apply(ctx, &fresh); err != nil {
		t.Fatal(err)
	}
	if els, _ := k.b.grantElems(); len(els) != 0 {
		t.Errorf("after an Apply with FreshGrants the grant sets hold %v", els)
	}
	if err := k.b.ReplaceGrants(ctx, []firewall.GrantElem{{Src: a6, Port: 22, Timeout: time.Second}}); err != nil {
		t.Fatal(err)
	}
	if els, _ := k.b.grantElems(); len(els) != 1 || els[0].Src != a6 {
		t.Errorf("after ReplaceGrants: %v, want only fd00::7 . 22", els)
	}
}

// TestKernelManyGrants writes more grant elements than one netlink
// message, and one send, can carry: every one arrives.
func TestKernelManyGrants(t *testing.T) {
	k := newKernel(t)
	ctx := context.Background()
	p := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{FastPath: true})
	if err := k.b.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	const n4, n6 = 3*elemsPerSend + 17, elemsPerMsg + 5
	var all []firewall.GrantElem
	for i := range n4 {
		all = append(all, firewall.GrantElem{Src: netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), Port: 22, Timeout: time.Minute})
	}
	for i := range n6 {
		a := netip.MustParseAddr("fd00::").As16()
		a[14], a[15] = byte(i>>8), byte(i)
		all = append(all, firewall.GrantElem{Src: netip.AddrFrom16(a), Port: 22, Timeout: time.Minute})
	}
	count := func(when string, want int) {
		t.Helper()
		els, err := k.b.grantElems()
		if err != nil {
			t.Fatal(err)
		}
		if len(els) != want {
			t.Errorf("%s: the grant sets hold %d elements, want %d", when, len(els), want)
		}
	}
	if err := k.b.ReplaceGrants(ctx, all); err != nil {
		t.Fatal(err)
	}
	count("after ReplaceGrants", n4+n6)
	// Refresh all of them (delete and add again) and replace with fewer.
	if err := k.b.UpdateGrants(ctx, all, all); err != nil {
		t.Fatal(err)
	}
	count("after UpdateGrants", n4+n6)
	if err := k.b.ReplaceGrants(ctx, all[:10]); err != nil {
		t.Fatal(err)
	}
	count("after a smaller ReplaceGrants", 10)
	if err := k.b.ReplaceGrants(ctx, nil); err != nil {
		t.Fatal(err)
	}
	count("after an empty ReplaceGrants", 0)
}

var queueStmt = regexp.MustCompile(`queue (num \S+|flags \S+ to \S+)( bypass(,fanout)?)?`)

// TestKernelRenderedScript: `rules print --backend nftables | nft -f -`
// installs what Apply installs. A kernel without the native queue
// expression cannot load the queue statements from a script, so there the
// comparison is made with every queue statement replaced, in the script
// and in Apply's listing alike, and the statements are compared on their
// own.
func TestKernelRenderedScript(t *testing.T) {
	for _, tt := range []struct {
		name   string
		fast   bool
		router bool
	}{{"inline", false, false}, {"fast path", true, false}, {"router inline", false, true}, {"router fast path", true, true}} {
		t.Run(tt.name, func(t *testing.T) {
			// An ordinary table: nft cannot write an owned one's flags,
			// and lists them.
			applied, printed := newKernel(t, WithOwnedTable(false)), newKernel(t)
			set := fwtest.Set(t, nil)
			if tt.router {
				set = fwtest.RouterSet(t)
			}
			p := firewall.NewPlan(set, firewall.Options{FastPath: tt.fast})
			if err := applied.b.Apply(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			var script strings.Builder
			if err := applied.b.Render(&script, p); err != nil {
				t.Fatal(err)
			}
			want := applied.listing(t)
			// New UDP flows reach the engine (a wrong datagram resets knock
			// progress): from sources with progress on the fast path, all
			// of them without it.
			udpNew := regexp.MustCompile(`meta l4proto udp ct state new (ip saddr @progress4 )?queue`)
			if !udpNew.MatchString(want) {
				t.Errorf("no new-UDP divert rule in\n%s", want)
			}
			text := script.String()
			if applied.b.compatQueue {
				n := len(queueStmt.FindAllString(text, -1))
				if m := len(queueStmt.FindAllString(want, -1)); n == 0 || n != m {
					t.Errorf("the script has %d queue statements, the table %d", n, m)
				}
				text = queueStmt.ReplaceAllString(text, "accept")
				want = queueStmt.ReplaceAllString(want, "accept")
			}
			for range 2 { // twice: the script is idempotent
				cmd := exec.Command("ip", "netns", "exec", string(printed.ns), "nft", "-f", "-")
				cmd.Stdin = strings.NewReader(text)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("nft -f: %v\n%s\n%s", err, out, text)
				}
			}
			if got := printed.listing(t); got != want {
				t.Errorf("the printed script installs\n%s\nbut Apply installs\n%s\nscript:\n%s", got, want, text)
			}
		})
	}
}
