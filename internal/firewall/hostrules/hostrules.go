// Package hostrules reads the host's own firewall rules, read-only, and
// finds the accept rules that would open one of knockwall's protected ports
// whenever knockwall's rules are absent (before they are installed, after
// `knockwall rules remove`, while someone flushes the ruleset): a rule on
// the input path that accepts TCP to the port without asking for
// knockwall's accept mark. Written with the mark test
// (`meta mark & MASK == ACCEPT accept`, `-m mark --mark ACCEPT/MASK -j
// ACCEPT`), such a rule accepts only what knockwall accepted, and
// knockwall's absence fails closed.
//
// Two readers feed one analysis: nftables over netlink (every table of the
// inet, ip and ip6 families but knockwall's) and iptables-save's output.
// Rules are followed from the base chains on the input hook (INPUT in
// iptables' filter table) through jumps and gotos. The analysis is
// conservative the way a warning should be: a match it does not know (a
// source address, a set of addresses) is taken to let the port through.
package hostrules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/knockwall/knockwall/internal/firewall"
)

// Want is what knockwall guards on this host's input.
type Want struct {
	// Ports are the TCP ports SYNs to this host must not reach without
	// knockwall's accept mark: protected ports and port forwards' ports.
	Ports []uint16
	// Trusted are interfaces knockwall leaves alone (lo always is): an
	// accept rule for them opens nothing knockwall guards.
	Trusted []string
	// Marks are knockwall's mark bits.
	Marks firewall.Marks
}

// Finding is a host rule that opens protected ports without the mark.
type Finding struct {
	Where string   // "nftables table inet filter chain input handle 7"
	Rule  string   // the rule's text or comment, when there is one
	Ports []uint16 // the protected ports it opens
}

func (f Finding) String() string {
	s := fmt.Sprintf("%s accepts TCP to protected port(s) %s without knockwall's accept mark", f.Where, joinPorts(f.Ports))
	if f.Rule != "" {
		s += " (" + f.Rule + ")"
	}
	return s
}

// Recipe says how to write such a rule so that knockwall's absence fails
// closed, for marks m.
func Recipe(m firewall.Marks) string {
	return fmt.Sprintf("match knockwall's accept mark in it (nft: meta mark & 0x%08x == 0x%08x accept; iptables: -m mark --mark 0x%x/0x%x -j ACCEPT)",
		m.Mask, m.Accept, m.Accept, m.Mask)
}

// rule is one host rule as the analysis sees it.
type rule struct {
	proto    int // -1: any protocol
	protoNot bool
	ports    []firewall.PortRange // nil: any port
	portsNot bool
	// markAccept: the rule matches only packets with knockwall's accept
	// mark.
	markAccept bool
	// notNew: the rule matches only connections that exist already
	// (ct state established,related).
	notNew bool
	iif    string // "" any; a wildcard (iptables + or nft *) is never one trusted name
	iifNot bool
	accept bool
}

const protoTCP = 6

// opens lists the ports of w that r opens.
func (r *rule) opens(w *Want) []uint16 {
	if !r.accept || r.markAccept || r.notNew {
		return nil
	}
	if r.proto >= 0 && (r.proto == protoTCP) == r.protoNot {
		return nil
	}
	if r.trustedOnly(w) {
		return nil
	}
	// A rule that names no port at all (an interface, a source) is a
	// trust decision, not a port opened by mistake: not reported.
	if r.ports == nil {
		return nil
	}
	var out []uint16
	for _, p := range w.Ports {
		in := false
		for _, pr := range r.ports {
			if p >= pr.Lo && p <= pr.Hi {
				in = true
				break
			}
		}
		if in != r.portsNot {
			out = append(out, p)
		}
	}
	return out
}

// trustedOnly reports whether r matches only packets from trusted
// interfaces (lo included), which knockwall leaves alone: its accept opens
// nothing knockwall guards, and nothing it jumps to does.
func (r *rule) trustedOnly(w *Want) bool {
	if r.iif == "" || r.iifNot {
		return false
	}
	for _, t := range append([]string{"lo"}, w.Trusted...) {
		if r.iif == t {
			return true
		}
	}
	return false
}

// requiresAccept reports whether a mark test, (mark & mask) == value (eq)
// or != value, fails for every mark knockwall leaves on a packet but the
// accept mark: no mark bits (knockwall cleared them, or it is absent) and
// the reject mark. Bits outside knockwall's mask are the host's: a !=
// test that looks at them may pass whatever knockwall did.
func requiresAccept(m firewall.Marks, mask, value uint32, eq bool) bool {
	if !eq && mask&^m.Mask != 0 {
		return false
	}
	pass := func(x uint32) bool {
		if eq {
			return x&mask&m.Mask == value&m.Mask
		}
		return x&mask != value
	}
	return !pass(0) && !pass(m.Reject)
}

func joinPorts(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ", ")
}

// graph is chains with their rules and the chains they jump to, for the
// walk from the input hook.
type graph[R any] struct {
	rules map[string][]R
	jumps map[string][]string
}

// reachable lists the chains reachable from starts, starts first, each
// once, in a stable order.
func (g *graph[R]) reachable(starts []string) []string {
	var out []string
	seen := map[string]bool{}
	queue := slices.Clone(starts)
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		if seen[c] {
			continue
		}
		seen[c] = true
		out = append(out, c)
		queue = append(queue, g.jumps[c]...)
	}
	return out
}
