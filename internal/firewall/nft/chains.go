package nft

import (
	"github.com/google/nftables"
	"github.com/google/nftables/userdata"

	"github.com/knockwall/knockwall/internal/firewall"
)

// taggedRule is a plan rule, or one of the chain's own entry rules, with
// its tag.
type taggedRule struct {
	r     *firewall.Rule // nil: an entry rule, as entry says
	entry entry
	jumps []portJump // entryDispatch's verdict map
	// th: the rule sits in a chain only TCP SYNs reach (dispatch.go): its
	// own protocol, SYN and port matches are left out, and the script
	// names the TCP header as nft does without them.
	th  bool
	tag string
}

// entry is a rule a chain's properties make: packets that skip the chain
// are accepted there (which in a base chain means: on to the next one).
type entry uint8

const (
	entryNone    entry = iota
	entryLo            // iifname "lo" accept
	entryTrusted       // iifname @trusted accept
	entryScope4        // meta nfproto ipv4 fib daddr type != local ip daddr != @routed4 accept
	entryScope6        // the same for IPv6
	// entryDispatch: TCP SYNs jump by destination port to the chain of
	// their port set (dispatch.go).
	entryDispatch
	// entrySYN: TCP SYNs go to the chain of the rules about them.
	entrySYN
)

var entryNames = [...]string{"", "lo", "trusted", "scope4", "scope6", "dispatch", "syn"}

// chainRules lists the rules of c as installed: the entry rules (loopback,
// trusted interfaces, destination scope) first.
func chainRules(c *firewall.Chain) []taggedRule {
	var out []taggedRule
	add := func(e entry) {
		out = append(out, taggedRule{entry: e, tag: firewall.Owner + " " + c.Name + " " + entryNames[e]})
	}
	if c.SkipLoopback {
		add(entryLo)
	}
	if len(c.Trusted) > 0 {
		add(entryTrusted)
	}
	if c.Scope != nil {
		add(entryScope4)
		add(entryScope6)
	}
	for i := range c.Rules {
		out = append(out, taggedRule{r: &c.Rules[i], tag: firewall.Tag(c.Name, i, &c.Rules[i])})
	}
	return out
}

func comment(tag string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, tag)
}

func sameHook(k *nftables.Chain, p *firewall.Chain) bool {
	if p == nil || k.Hooknum == nil || k.Priority == nil || k.Type != nftables.ChainTypeFilter {
		return false
	}
	return *k.Hooknum == *hookOf(p.Hook) && int32(*k.Priority) == int32(p.Priority)
}

func hookOf(h firewall.Hook) *nftables.ChainHook {
	switch h {
	case firewall.HookPrerouting:
		return nftables.ChainHookPrerouting
	case firewall.HookForward:
		return nftables.ChainHookForward
	}
	return nftables.ChainHookInput
}

func baseChain(pc *firewall.Chain) *nftables.Chain {
	prio := nftables.ChainPriority(pc.Priority)
	policy := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: pc.Name, Table: Table, Type: nftables.ChainTypeFilter,
		Hooknum: hookOf(pc.Hook), Priority: &prio, Policy: &policy}
}
