package rules_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/knockwall/knockwall/rules"
)

var builtinChains = []string{"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}

// rule is a parsed iptables command line.
type rule struct {
	bin    string
	table  string
	op     string // -N, -A, -I, -D, -F, -X
	chain  string
	target string // the -j target
	args   []string
}

func parseRule(t *testing.T, c rules.Command) rule {
	t.Helper()
	r := rule{bin: c.Bin, table: "filter", args: c.Args}
	for i := 0; i < len(c.Args); i++ {
		switch a := c.Args[i]; a {
		case "-t":
			i++
			r.table = c.Args[i]
		case "-N", "-A", "-I", "-D", "-F", "-X":
			if r.op != "" {
				t.Fatalf("%s: two operations", c)
			}
			r.op = a
			i++
			r.chain = c.Args[i]
		case "-j":
			i++
			r.target = c.Args[i]
		}
	}
	if r.op == "" {
		t.Fatalf("%s: no operation", c)
	}
	return r
}

// hasSeq reports whether args contains seq as consecutive elements.
func hasSeq(args []string, seq ...string) bool {
	for i := 0; i+len(seq) <= len(args); i++ {
		if slices.Equal(args[i:i+len(seq)], seq) {
			return true
		}
	}
	return false
}

func index(t *testing.T, cmds []rules.Command, pred func(r rule) bool) int {
	t.Helper()
	for i, c := range cmds {
		if pred(parseRule(t, c)) {
			return i
		}
	}
	return -1
}

// manyPorts returns a config that protects the n TCP ports 2000.. and
// knocks on the n UDP ports 30000.. (spread over services of at most ten
// knocks each, all protecting 2000), and no other port of either kind.
func manyPorts(n int) rules.Config {
	c := rules.Defaults()
	ssh := rules.ServiceDefaults()
	ssh.Sequence = []string{"7000", "8000"}
	for i := range n {
		ssh.Ports = append(ssh.Ports, 2000+i)
	}
	c.Services = map[string]rules.ServiceConfig{"ssh": ssh}
	for i := 0; i < n; i += 10 {
		u := rules.ServiceDefaults()
		u.Ports = []int{2000}
		for j := i; j < min(i+10, n); j++ {
			u.Sequence = append(u.Sequence, fmt.Sprintf("%d/udp", 30000+j))
		}
		c.Services[fmt.Sprintf("u%02d", i/10)] = u
	}
	return c
}

func planConfigs() []struct {
	name string
	cfg  rules.Config
} {
	queue2 := twoServices()
	queue2.Queue.Num, queue2.Queue.Count = 4, 2
	marks := validConfig()
	marks.Firewall.MarkMask, marks.Firewall.AcceptMark, marks.Firewall.RejectMark = 0xf0, 0x10, 0x20
	return []struct {
		name string
		cfg  rules.Config
	}{
		{"one service", validConfig()},
		{"two services", twoServices()},
		{"queue count 2", queue2},
		{"many ports", manyPorts(40)},
		{"custom marks", marks},
	}
}

func TestFirewallPlanShape(t *testing.T) {
	for _, tc := range planConfigs() {
		t.Run(tc.name, func(t *testing.T) {
			plan := compile(t, tc.cfg).FirewallPlan()
			if len(plan.Install) == 0 || len(plan.Remove) == 0 || len(plan.Jumps) == 0 {
				t.Fatalf("empty plan: %+v", plan)
			}
			for _, group := range [][]rules.Command{plan.Install, plan.Remove, plan.Jumps} {
				for _, c := range group {
					if c.Bin != "iptables" && c.Bin != "ip6tables" {
						t.Errorf("%s: binary %q", c, c.Bin)
					}
					if len(c.Args) == 0 || c.Args[0] != "-w" {
						t.Errorf("%s: does not wait for the xtables lock (-w first)", c)
					}
				}
			}
			// Both families get the same rules.
			count := map[string]int{}
			for _, c := range plan.Install {
				count[c.Bin]++
			}
			if count["iptables"] != count["ip6tables"] || count["iptables"] == 0 {
				t.Errorf("rules per family = %v, want equal and non-zero", count)
			}
		})
	}
}

func TestFirewallPlanEveryRuleIsOurs(t *testing.T) {
	for _, tc := range planConfigs() {
		t.Run(tc.name, func(t *testing.T) {
			plan := compile(t, tc.cfg).FirewallPlan()
			for _, c := range plan.Install {
				r := parseRule(t, c)
				switch r.op {
				case "-N":
					if !strings.HasPrefix(r.chain, rules.ChainQueue) {
						t.Errorf("%s: creates a chain that is not KNOCKWALL*", c)
					}
				case "-A", "-I":
					if !strings.HasPrefix(r.chain, rules.ChainQueue) && !strings.HasPrefix(r.target, rules.ChainQueue) {
						t.Errorf("%s: neither in nor jumping to a KNOCKWALL* chain", c)
					}
					if !hasSeq(c.Args, "-m", "comment", "--comment", rules.Comment) {
						t.Errorf("%s: no comment %q", c, rules.Comment)
					}
				default:
					t.Errorf("%s: unexpected operation %s in Install", c, r.op)
				}
			}
		})
	}
}

func TestFirewallPlanGuardBeforeDiversion(t *testing.T) {
	for _, tc := range planConfigs() {
		t.Run(tc.name, func(t *testing.T) {
			set := compile(t, tc.cfg)
			plan := set.FirewallPlan()
			for _, bin := range []string{"iptables", "ip6tables"} {
				t.Run(bin, func(t *testing.T) {
					guardJump := index(t, plan.Install, func(r rule) bool {
						return r.bin == bin && r.table == "security" && slices.Contains(builtinChains, r.chain) && r.target == rules.ChainGuard
					})
					rejectJump := index(t, plan.Install, func(r rule) bool {
						return r.bin == bin && r.table == "filter" && r.chain == "INPUT" && r.target == rules.ChainReject
					})
					diversion := index(t, plan.Install, func(r rule) bool {
						return r.bin == bin && r.table == "mangle" && slices.Contains(builtinChains, r.chain) && r.target == rules.ChainQueue
					})
					if guardJump < 0 || rejectJump < 0 || diversion < 0 {
						t.Fatalf("guard jump %d, reject jump %d, diversion %d: missing", guardJump, rejectJump, diversion)
					}
					if guardJump > diversion || rejectJump > diversion {
						t.Errorf("guard jump at %d, reject jump at %d, diversion at %d: the diversion must come last", guardJump, rejectJump, diversion)
					}
					// Every guard DROP rule is in place before the diversion,
					// and covers the protected ports.
					var guarded []string
					for i, c := range plan.Install {
						r := parseRule(t, c)
						if r.bin != bin || r.chain != rules.ChainGuard || r.op != "-A" {
							continue
						}
						if i > diversion {
							t.Errorf("%s after the diversion", c)
						}
						if r.target != "DROP" || !hasSeq(c.Args, "-p", "tcp", "--syn") {
							t.Errorf("%s: guard rule is not a SYN DROP", c)
						}
						mark := fmt.Sprintf("0x%x/0x%x", set.Firewall.AcceptMark, set.Firewall.MarkMask)
						if !hasSeq(c.Args, "-m", "mark", "!", "--mark", mark) {
							t.Errorf("%s: guard does not exempt the accept mark %s", c, mark)
						}
						guarded = append(guarded, dports(c.Args)...)
					}
					var want []string
					for _, p := range set.ProtectedPorts() {
						want = append(want, fmt.Sprint(p))
					}
					if !slices.Equal(guarded, want) {
						t.Errorf("guarded ports %v, want %v", guarded, want)
					}
					// Security INPUT: the guard is inserted at the head, so
					// nothing earlier in the chain can accept around it.
					if c := plan.Install[guardJump]; !hasSeq(c.Args, "-I", "INPUT", "1") {
						t.Errorf("%s: guard jump not inserted at position 1", c)
					}
					// Loopback is exempt from guard and diversion, and only
					// SYNs enter the guard (its rules judge nothing else).
					if c := plan.Install[guardJump]; !hasSeq(c.Args, "!", "-i", "lo", "-p", "tcp", "--syn") {
						t.Errorf("%s: guard jump does not take exactly non-loopback SYNs", c)
					}
					if c := plan.Install[diversion]; !hasSeq(c.Args, "!", "-i", "lo") {
						t.Errorf("%s: diversion does not exempt loopback", c)
					}
					mark := fmt.Sprintf("0x%x/0x%x", set.Firewall.RejectMark, set.Firewall.MarkMask)
					if c := plan.Install[rejectJump]; !hasSeq(c.Args, "-m", "mark", "--mark", mark) {
						t.Errorf("%s: reject jump does not match the reject mark %s", c, mark)
					}
				})
			}
		})
	}
}

// dports returns the ports of a --dport or --dports match.
func dports(args []string) []string {
	for i, a := range args {
		if i+1 < len(args) && (a == "--dport" || a == "--dports") {
			return strings.Split(args[i+1], ",")
		}
	}
	return nil
}

// twin returns the -D form of an -A or -I rule.
func twin(c rules.Command) string {
	var out []string
	for i := 0; i < len(c.Args); i++ {
		switch c.Args[i] {
		case "-A":
			out = append(out, "-D")
		case "-I":
			out = append(out, "-D", c.Args[i+1])
			i += 2
			continue
		default:
			out = append(out, c.Args[i])
		}
	}
	return rules.Command{Bin: c.Bin, Args: out}.String()
}

func TestFirewallPlanRemoveMirrorsInstall(t *testing.T) {
	for _, tc := range planConfigs() {
		t.Run(tc.name, func(t *testing.T) {
			plan := compile(t, tc.cfg).FirewallPlan()
			remove := map[string]int{} // command → position in Remove
			for i, c := range plan.Remove {
				if _, dup := remove[c.String()]; dup {
					t.Errorf("%s: twice in Remove", c)
				}
				remove[c.String()] = i
			}
			jumps := map[string]bool{}
			for _, c := range plan.Jumps {
				jumps[c.String()] = true
			}

			var wantRemove, wantJumps int
			for _, c := range plan.Install {
				r := parseRule(t, c)
				switch {
				case r.op == "-N":
					wantRemove += 2
					flush := rules.Command{Bin: c.Bin, Args: []string{"-w", "-t", r.table, "-F", r.chain}}.String()
					del := rules.Command{Bin: c.Bin, Args: []string{"-w", "-t", r.table, "-X", r.chain}}.String()
					fi, okF := remove[flush]
					xi, okX := remove[del]
					if !okF || !okX {
						t.Errorf("%s: Remove lacks %q or %q", c, flush, del)
						continue
					}
					if fi > xi {
						t.Errorf("%s: Remove deletes the chain before flushing it", c)
					}
				case slices.Contains(builtinChains, r.chain):
					wantRemove++
					wantJumps++
					d := twin(c)
					di, ok := remove[d]
					if !ok {
						t.Errorf("%s: no -D twin %q in Remove", c, d)
						continue
					}
					if !jumps[d] {
						t.Errorf("%s: -D twin %q not in Jumps", c, d)
					}
					// The jump goes before its target chain is flushed or deleted.
					x := rules.Command{Bin: c.Bin, Args: []string{"-w", "-t", r.table, "-X", r.target}}.String()
					if xi, ok := remove[x]; !ok || xi < di {
						t.Errorf("%s: target chain deleted (at %d) before the jump (at %d)", c, xi, di)
					}
				}
			}
			// And per family the jumps of an earlier version (mangle and
			// guard), which TestFirewallPlanGolden pins.
			wantRemove += 4
			wantJumps += 4
			if len(plan.Remove) != wantRemove {
				t.Errorf("Remove has %d commands, want %d (one -D per jump, -F and -X per chain):\n%s",
					len(plan.Remove), wantRemove, cmds(plan.Remove))
			}
			if len(plan.Jumps) != wantJumps {
				t.Errorf("Jumps has %d commands, want %d", len(plan.Jumps), wantJumps)
			}
			// Removal stops diverting first and drops the guard last.
			for _, bin := range []string{"iptables", "ip6tables"} {
				div := index(t, plan.Remove, func(r rule) bool { return r.bin == bin && r.op == "-D" && r.target == rules.ChainQueue })
				guard := index(t, plan.Remove, func(r rule) bool { return r.bin == bin && r.op == "-D" && r.target == rules.ChainGuard })
				if div < 0 || guard < 0 || div > guard {
					t.Errorf("%s: diversion removed at %d, guard at %d; want diversion first", bin, div, guard)
				}
			}
		})
	}
}

func cmds(cs []rules.Command) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString("  " + c.String() + "\n")
	}
	return b.String()
}

func TestFirewallPlanReject(t *testing.T) {
	plan := compile(t, validConfig()).FirewallPlan()
	tests := []struct {
		bin, want, notWant string
	}{
		{"iptables", "icmp-port-unreachable", "icmp6-port-unreachable"},
		{"ip6tables", "icmp6-port-unreachable", "icmp-port-unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.bin, func(t *testing.T) {
			var udp, tcp, drop bool
			for _, c := range plan.Install {
				if c.Bin != tt.bin {
					continue
				}
				if slices.Contains(c.Args, tt.notWant) {
					t.Errorf("%s: uses %s", c, tt.notWant)
				}
				r := parseRule(t, c)
				if r.chain != rules.ChainReject || r.op != "-A" {
					continue
				}
				switch {
				case hasSeq(c.Args, "-p", "udp") && hasSeq(c.Args, "-j", "REJECT", "--reject-with", tt.want):
					udp = true
				case hasSeq(c.Args, "-p", "tcp") && hasSeq(c.Args, "-j", "REJECT", "--reject-with", "tcp-reset"):
					tcp = true
				case r.target == "DROP":
					drop = true
				}
			}
			if !udp || !tcp || !drop {
				t.Errorf("reject chain: udp %s %v, tcp reset %v, drop the rest %v", tt.want, udp, tcp, drop)
			}
		})
	}
}

func TestFirewallPlanQueue(t *testing.T) {
	tests := []struct {
		name       string
		num, count int
		want       []string
		notWant    []string
	}{
		{name: "one queue", num: 0, count: 1, want: []string{"--queue-num", "0"}, notWant: []string{"--queue-balance", "--queue-cpu-fanout"}},
		{name: "queue 7", num: 7, count: 1, want: []string{"--queue-num", "7"}, notWant: []string{"--queue-balance"}},
		{name: "two queues", num: 0, count: 2, want: []string{"--queue-balance", "0:1", "--queue-cpu-fanout"}, notWant: []string{"--queue-num"}},
		{name: "two queues from 4", num: 4, count: 2, want: []string{"--queue-balance", "4:5", "--queue-cpu-fanout"}, notWant: []string{"--queue-num"}},
		{name: "four queues from 100", num: 100, count: 4, want: []string{"--queue-balance", "100:103", "--queue-cpu-fanout"}, notWant: []string{"--queue-num"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := twoServices() // has UDP knocks, so a UDP NFQUEUE rule too
			c.Queue.Num, c.Queue.Count = tt.num, tt.count
			plan := compile(t, c).FirewallPlan()
			var queued int
			for _, cmd := range append(append([]rules.Command{}, plan.Install...), plan.Remove...) {
				for _, a := range cmd.Args {
					if strings.Contains(a, "fail-open") {
						t.Errorf("%s: fails open", cmd)
					}
				}
				if parseRule(t, cmd).target != "NFQUEUE" {
					continue
				}
				queued++
				if !hasSeq(cmd.Args, tt.want...) {
					t.Errorf("%s: lacks %v", cmd, tt.want)
				}
				for _, nw := range tt.notWant {
					if slices.Contains(cmd.Args, nw) {
						t.Errorf("%s: has %s", cmd, nw)
					}
				}
				if !slices.Contains(cmd.Args, "--queue-bypass") {
					t.Errorf("%s: no --queue-bypass", cmd)
				}
			}
			// Per family: TCP SYNs, and the UDP knock ports.
			if queued != 4 {
				t.Errorf("%d NFQUEUE rules, want 4", queued)
			}
		})
	}
}

func TestFirewallPlanDiversion(t *testing.T) {
	plan := compile(t, twoServices()).FirewallPlan()
	for _, bin := range []string{"iptables", "ip6tables"} {
		t.Run(bin, func(t *testing.T) {
			var syn bool
			var udpPorts []string
			for _, c := range plan.Install {
				r := parseRule(t, c)
				if r.bin != bin || r.chain != rules.ChainQueue || r.op != "-A" {
					continue
				}
				if r.table != "mangle" {
					t.Errorf("%s: diversion outside mangle", c)
				}
				switch {
				case hasSeq(c.Args, "-p", "tcp", "--syn"):
					syn = true
				case hasSeq(c.Args, "-p", "udp"):
					udpPorts = append(udpPorts, dports(c.Args)...)
				default:
					t.Errorf("%s: unexpected diversion", c)
				}
			}
			if !syn {
				t.Error("TCP SYNs are not diverted")
			}
			// UDP knocks of both services, sorted; TCP knocks ride the SYN rule.
			if want := []string{"9000", "10001"}; !slices.Equal(udpPorts, want) {
				t.Errorf("diverted UDP ports %v, want %v", udpPorts, want)
			}
			// The diversion is appended to mangle INPUT, after the host's rules.
			i := index(t, plan.Install, func(r rule) bool { return r.bin == bin && r.target == rules.ChainQueue })
			if !hasSeq(plan.Install[i].Args, "-t", "mangle", "-A", "INPUT") {
				t.Errorf("%s: not appended to mangle INPUT", plan.Install[i])
			}
		})
	}
}

func TestFirewallPlanNoUDPKnocks(t *testing.T) {
	c := validConfig()
	s := c.Services["ssh"]
	s.Sequence = []string{"7000", "8000"}
	c.Services["ssh"] = s
	plan := compile(t, c).FirewallPlan()
	for _, cmd := range plan.Install {
		if hasSeq(cmd.Args, "-p", "udp") && parseRule(t, cmd).target == "NFQUEUE" {
			t.Errorf("%s: UDP diverted with no UDP knock", cmd)
		}
	}
}

func TestFirewallPlanMultiportSplit(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		chunks []int // ports per rule
	}{
		{"one", 1, []int{1}},
		{"fifteen", 15, []int{15}},
		{"sixteen", 16, []int{15, 1}},
		{"thirty", 30, []int{15, 15}},
		{"forty", 40, []int{15, 15, 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := compile(t, manyPorts(tt.n)).FirewallPlan()
			for _, bin := range []string{"iptables", "ip6tables"} {
				for _, kind := range []struct {
					chain, proto string
					first        int
				}{{rules.ChainGuard, "tcp", 2000}, {rules.ChainQueue, "udp", 30000}} {
					var got []int
					var ports []string
					for _, c := range plan.Install {
						r := parseRule(t, c)
						if r.bin != bin || r.chain != kind.chain || r.op != "-A" || !hasSeq(c.Args, "-p", kind.proto) {
							continue
						}
						d := dports(c.Args)
						switch {
						case len(d) == 1 && slices.Contains(c.Args, "--dport"):
						case len(d) > 1 && hasSeq(c.Args, "-m", "multiport", "--dports"):
						default:
							t.Errorf("%s: bad port match", c)
						}
						got = append(got, len(d))
						ports = append(ports, d...)
					}
					if !slices.Equal(got, tt.chunks) {
						t.Errorf("%s %s: ports per rule %v, want %v", bin, kind.chain, got, tt.chunks)
					}
					var want []string
					for i := range tt.n {
						want = append(want, fmt.Sprint(kind.first+i))
					}
					if !slices.Equal(ports, want) {
						t.Errorf("%s %s: ports %v, want %v", bin, kind.chain, ports, want)
					}
				}
			}
		})
	}
}

func TestFirewallPlanGolden(t *testing.T) {
	// The whole IPv4 plan of the example, so a change to any rule is seen.
	plan := compile(t, validConfig()).FirewallPlan()
	want := []string{
		"iptables -w -t security -N KNOCKWALL-GUARD",
		"iptables -w -t security -A KNOCKWALL-GUARD -p tcp --syn --dport 22 -m mark ! --mark 0x10000000/0x30000000 -m comment --comment knockwall -j DROP",
		"iptables -w -t security -I INPUT 1 ! -i lo -p tcp --syn -m comment --comment knockwall -j KNOCKWALL-GUARD",
		"iptables -w -t filter -N KNOCKWALL-REJECT",
		"iptables -w -t filter -A KNOCKWALL-REJECT -p tcp -m comment --comment knockwall -j REJECT --reject-with tcp-reset",
		"iptables -w -t filter -A KNOCKWALL-REJECT -p udp -m comment --comment knockwall -j REJECT --reject-with icmp-port-unreachable",
		"iptables -w -t filter -A KNOCKWALL-REJECT -m comment --comment knockwall -j DROP",
		"iptables -w -t filter -I INPUT 1 -m mark --mark 0x20000000/0x30000000 -m comment --comment knockwall -j KNOCKWALL-REJECT",
		"iptables -w -t mangle -N KNOCKWALL",
		"iptables -w -t mangle -A KNOCKWALL -p tcp --syn -m comment --comment knockwall -j NFQUEUE --queue-num 0 --queue-bypass",
		"iptables -w -t mangle -A KNOCKWALL -p udp --dport 9000 -m comment --comment knockwall -j NFQUEUE --queue-num 0 --queue-bypass",
		"iptables -w -t mangle -A INPUT ! -i lo -m comment --comment knockwall -j KNOCKWALL",
	}
	wantRemove := []string{
		"iptables -w -t mangle -D INPUT ! -i lo -m comment --comment knockwall -j KNOCKWALL",
		"iptables -w -t mangle -D INPUT -m comment --comment knockwall -j KNOCKWALL", // an earlier version's jump
		"iptables -w -t mangle -F KNOCKWALL",
		"iptables -w -t mangle -X KNOCKWALL",
		"iptables -w -t filter -D INPUT -m mark --mark 0x20000000/0x30000000 -m comment --comment knockwall -j KNOCKWALL-REJECT",
		"iptables -w -t filter -F KNOCKWALL-REJECT",
		"iptables -w -t filter -X KNOCKWALL-REJECT",
		"iptables -w -t security -D INPUT ! -i lo -p tcp --syn -m comment --comment knockwall -j KNOCKWALL-GUARD",
		"iptables -w -t security -D INPUT -p tcp -m comment --comment knockwall -j KNOCKWALL-GUARD", // an earlier version's jump
		"iptables -w -t security -F KNOCKWALL-GUARD",
		"iptables -w -t security -X KNOCKWALL-GUARD",
	}
	wantRetire := []string{
		"iptables -w -t security -D INPUT -p tcp -m comment --comment knockwall -j KNOCKWALL-GUARD",
		"iptables -w -t security -D KNOCKWALL-GUARD -i lo -m comment --comment knockwall -j RETURN",
	}
	for _, tc := range []struct {
		name string
		got  []rules.Command
		want []string
	}{{"install", plan.Install, want}, {"remove", plan.Remove, wantRemove}, {"retire", plan.Retire, wantRetire}} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, c := range tc.got {
				if c.Bin == "iptables" {
					got = append(got, c.String())
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestFirewallPlanDoesNotAlias(t *testing.T) {
	// Commands share no backing arrays: editing one must not edit another.
	plan := compile(t, manyPorts(20)).FirewallPlan()
	before := make([]string, len(plan.Install))
	for i, c := range plan.Install {
		before[i] = c.String()
	}
	for i := range plan.Install {
		for j := range plan.Install[i].Args {
			plan.Install[i].Args[j] = "X"
		}
		for k := i + 1; k < len(plan.Install); k++ {
			if got := plan.Install[k].String(); got != before[k] {
				t.Fatalf("editing rule %d changed rule %d: %q, was %q", i, k, got, before[k])
			}
		}
	}
}
