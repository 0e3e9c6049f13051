package firewall_test

import (
	"slices"
	"testing"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/firewall/fwtest"
	"github.com/knockwall/knockwall/rules"
)

// TestPlanTrusted: every chain but the refuse chains (which act only on
// knockwall's own reject mark) skips the trusted interfaces, sorted and
// without lo (skipped anyway); without trusted interfaces no chain skips
// any, and no set names them.
func TestPlanTrusted(t *testing.T) {
	set := fwtest.Set(t, func(c *rules.Config) {
		c.Firewall.TrustedInterfaces = []string{"wg0", "lo", "br-lan", "wg0"}
		fwd := rules.ServiceDefaults()
		fwd.Forward, fwd.Ports, fwd.Sequence = true, []int{22222}, []string{"7100", "7200", "7300"}
		c.Services["nas"] = fwd
	})
	for _, fast := range []bool{false, true} {
		p := firewall.NewPlan(set, firewall.Options{FastPath: fast})
		want := []string{"br-lan", "wg0"}
		if s := p.Set(firewall.SetTrusted); s == nil || !slices.Equal(s.Ifnames, want) {
			t.Errorf("fast %v: set %s = %+v, want %q", fast, firewall.SetTrusted, s, want)
		}
		for _, c := range p.Chains {
			refuse := c.Name == firewall.ChainReject || c.Name == firewall.ChainRejectFwd
			if got := c.Trusted; !refuse && !slices.Equal(got, want) || refuse && len(got) > 0 {
				t.Errorf("fast %v: chain %s trusts %q", fast, c.Name, got)
			}
		}
	}
	p := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{})
	if p.Set(firewall.SetTrusted) != nil {
		t.Error("a plan without trusted interfaces has the set")
	}
	for _, c := range p.Chains {
		if len(c.Trusted) > 0 {
			t.Errorf("chain %s trusts %q", c.Name, c.Trusted)
		}
	}
}

// TestPlanForwardGuard: a port forward's port is guarded on this host's
// input too (a forwarder in user space receives the SYN there), and on
// the forward path for DNAT; both guards stay when the daemon stops.
func TestPlanForwardGuard(t *testing.T) {
	p := firewall.NewPlan(fwtest.RouterSet(t), firewall.Options{})
	for _, q := range []*firewall.Plan{p, p.Stopped()} {
		in := q.Chain(firewall.ChainGuard)
		if in == nil || in.Hook != firewall.HookInput {
			t.Fatalf("input guard: %+v", in)
		}
		if !slices.ContainsFunc(in.Rules, func(r firewall.Rule) bool {
			return r.Role == firewall.RoleGuard && r.DPortSet == firewall.SetFwdPorts && r.SYN && r.Mark != nil && r.Mark.Not &&
				r.Verdict.Kind == firewall.VerdictDrop
		}) {
			t.Errorf("no input guard of %s: %+v", firewall.SetFwdPorts, in.Rules)
		}
		fwd := q.Chain(firewall.ChainGuardFwd)
		if fwd == nil || !slices.ContainsFunc(fwd.Rules, func(r firewall.Rule) bool { return r.CtDNAT }) {
			t.Errorf("no forward guard of DNAT: %+v", fwd)
		}
	}
	if s := p.Set(firewall.SetFwdPorts); s == nil || len(s.Ports) != 1 || s.Ports[0].Lo != 22222 {
		t.Errorf("set %s = %+v", firewall.SetFwdPorts, s)
	}
	// A host without port forwards guards only its protected ports.
	host := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{})
	if n := len(host.Chain(firewall.ChainGuard).Rules); n != 1 {
		t.Errorf("a host's input guard has %d rules, want 1", n)
	}
}
