package rules

import (
	"fmt"
	"strconv"
	"strings"
)

// Chain names. Every rule knockwall adds to a built-in chain jumps into one
// of these and carries the comment Comment, so removal can be exact.
const (
	ChainQueue  = "KNOCKWALL"        // mangle: divert SYNs and UDP knocks to NFQUEUE
	ChainReject = "KNOCKWALL-REJECT" // filter: answer packets knockwall marked for rejection
	ChainGuard  = "KNOCKWALL-GUARD"  // security: protected ports without knockwall's accept mark are dropped
	Comment     = "knockwall"
)

// multiportMax is the most ports one -m multiport match takes.
const multiportMax = 15

// Command is one iptables or ip6tables invocation.
type Command struct {
	Bin  string // "iptables" or "ip6tables"
	Args []string
}

func (c Command) String() string { return c.Bin + " " + strings.Join(c.Args, " ") }

// Plan is the static firewall of a Set.
//
// Why three tables: the NFQUEUE rule sits at the end of mangle INPUT, so a
// packet that knockwall accepts still runs through the host's own filter
// rules, and a packet that --queue-bypass lets through (daemon not running)
// skips only the rest of mangle INPUT. Rejection is a mark that one static
// REJECT rule in filter INPUT acts on, so the answer is the kernel's own RST.
// The guard lives in the security table, whose INPUT hook runs after filter,
// and drops SYNs to protected ports that do not carry knockwall's accept
// mark: with the daemon dead or the queue bypassed, protected ports stay
// closed while every other port keeps working.
type Plan struct {
	// Install adds the rules, guard first so no moment exists in which a
	// protected port is diverted but unguarded.
	Install []Command
	// Remove deletes exactly the rules Install adds, guard last. Each
	// command may fail when the rule is already gone; callers ignore that.
	Remove []Command
	// Jumps are the rules in built-in chains; Remove deletes each of them
	// until none is left, so duplicates from an earlier crash go too.
	Jumps []Command
	// Retire deletes guard rules of earlier versions that Install's guard
	// replaces. It runs after Install, so some guard is in place
	// throughout; each command may fail when there is nothing to retire.
	Retire []Command
}

// FirewallPlan renders the static rules of s for IPv4 and IPv6.
func (s *Set) FirewallPlan() Plan {
	var p Plan
	for _, bin := range []string{"iptables", "ip6tables"} {
		q := s.family(bin)
		p.Install = append(p.Install, q.install...)
		p.Remove = append(p.Remove, q.remove...)
		p.Jumps = append(p.Jumps, q.jumps...)
		p.Retire = append(p.Retire, q.retire...)
	}
	return p
}

type familyPlan struct{ install, remove, jumps, retire []Command }

func (s *Set) family(bin string) familyPlan {
	var f familyPlan
	cmd := func(args ...string) Command { return Command{Bin: bin, Args: append([]string{"-w"}, args...)} }
	mark := func(v int64) string { return fmt.Sprintf("0x%x/0x%x", v, s.Firewall.MarkMask) }
	comment := []string{"-m", "comment", "--comment", Comment}

	// Loopback is the host talking to itself: local connections to a
	// protected port (a health check, ssh to localhost) are neither judged
	// nor guarded. Nothing from the network arrives on lo. The jumps into
	// knockwall's chains leave it out, and the guard's jump takes only
	// SYNs, so established traffic costs one rule in each table, and a
	// diverted SYN no rule it does not need.
	notLoopback := []string{"!", "-i", "lo"}

	// Guard (security table).
	f.install = append(f.install, cmd("-t", "security", "-N", ChainGuard))
	for _, ports := range chunk(s.ProtectedPorts(), multiportMax) {
		args := []string{"-t", "security", "-A", ChainGuard, "-p", "tcp", "--syn"}
		args = append(args, portMatch(ports)...)
		args = append(args, "-m", "mark", "!", "--mark", mark(s.Firewall.AcceptMark))
		args = append(args, comment...)
		args = append(args, "-j", "DROP")
		f.install = append(f.install, cmd(args...))
	}
	guardJump := append(append([]string{"-t", "security", "-I", "INPUT", "1"}, notLoopback...), "-p", "tcp", "--syn")
	guardJump = append(guardJump, comment...)
	guardJump = append(guardJump, "-j", ChainGuard)
	f.install = append(f.install, cmd(guardJump...))

	// Reject (filter table).
	unreach := "icmp-port-unreachable"
	if bin == "ip6tables" {
		unreach = "icmp6-port-unreachable"
	}
	f.install = append(f.install,
		cmd("-t", "filter", "-N", ChainReject),
		cmd(append(append([]string{"-t", "filter", "-A", ChainReject, "-p", "tcp"}, comment...), "-j", "REJECT", "--reject-with", "tcp-reset")...),
		cmd(append(append([]string{"-t", "filter", "-A", ChainReject, "-p", "udp"}, comment...), "-j", "REJECT", "--reject-with", unreach)...),
		cmd(append(append([]string{"-t", "filter", "-A", ChainReject}, comment...), "-j", "DROP")...),
	)
	rejectJump := append([]string{"-t", "filter", "-I", "INPUT", "1", "-m", "mark", "--mark", mark(s.Firewall.RejectMark)}, comment...)
	rejectJump = append(rejectJump, "-j", ChainReject)
	f.install = append(f.install, cmd(rejectJump...))

	// Diversion (mangle table).
	queue := []string{"-j", "NFQUEUE"}
	if s.Queue.Count > 1 {
		queue = append(queue, "--queue-balance", fmt.Sprintf("%d:%d", s.Queue.Num, s.Queue.Num+s.Queue.Count-1), "--queue-cpu-fanout")
	} else {
		queue = append(queue, "--queue-num", strconv.Itoa(s.Queue.Num))
	}
	// --queue-bypass: with no daemon the packet moves on (to the guard)
	// instead of being dropped, so unrelated ports keep working. The
	// fail-open queue flag is never set: a full queue drops.
	queue = append(queue, "--queue-bypass")
	f.install = append(f.install, cmd("-t", "mangle", "-N", ChainQueue))
	f.install = append(f.install, cmd(append(append([]string{"-t", "mangle", "-A", ChainQueue, "-p", "tcp", "--syn"}, comment...), queue...)...))
	for _, ports := range chunk(s.udpPorts(), multiportMax) {
		args := append([]string{"-t", "mangle", "-A", ChainQueue, "-p", "udp"}, portMatch(ports)...)
		args = append(args, comment...)
		f.install = append(f.install, cmd(append(args, queue...)...))
	}
	queueJump := append(append([]string{"-t", "mangle", "-A", "INPUT"}, notLoopback...), comment...)
	queueJump = append(queueJump, "-j", ChainQueue)
	f.install = append(f.install, cmd(queueJump...))

	// Jumps as earlier versions wrote them, before the loopback exemption
	// moved onto the jump (and the guard's jump took only SYNs). Removal
	// deletes them too: a jump left behind keeps its chain from being
	// deleted, and then from being created afresh.
	legacy := map[string][]string{
		ChainQueue: append(append([]string{"-t", "mangle", "-A", "INPUT"}, comment...), "-j", ChainQueue),
		ChainGuard: append(append([]string{"-t", "security", "-I", "INPUT", "1", "-p", "tcp"}, comment...), "-j", ChainGuard),
	}
	// The guard of an earlier version is not removed before the new one is
	// in place: once it is, the old jump and the old loopback RETURN in the
	// guard chain (dead now: the new jump leaves lo out) are retired.
	f.retire = append(f.retire,
		cmd(legacy[ChainGuard]...).Deletion(),
		cmd(append(append([]string{"-t", "security", "-D", ChainGuard, "-i", "lo"}, comment...), "-j", "RETURN")...))

	// Removal mirrors installation in reverse: stop diverting, then stop
	// rejecting, then drop the guard.
	for _, r := range []struct {
		jump         []string
		table, chain string
	}{{queueJump, "mangle", ChainQueue}, {rejectJump, "filter", ChainReject}, {guardJump, "security", ChainGuard}} {
		d := cmd(r.jump...).Deletion()
		f.jumps = append(f.jumps, d)
		f.remove = append(f.remove, d)
		if old, ok := legacy[r.chain]; ok {
			d := cmd(old...).Deletion()
			f.jumps = append(f.jumps, d)
			f.remove = append(f.remove, d)
		}
		f.remove = append(f.remove, cmd("-t", r.table, "-F", r.chain), cmd("-t", r.table, "-X", r.chain))
	}
	return f
}

// IsGuard reports whether c is about the guard: it works on the security
// table, where only the guard lives.
func IsGuard(c Command) bool {
	for i, a := range c.Args {
		if a == "-t" && i+1 < len(c.Args) && c.Args[i+1] == "security" {
			return true
		}
	}
	return false
}

// Deletion is the -D twin of an -A or -I (with position) command, and the
// -X of an -N.
func (c Command) Deletion() Command {
	d, _ := c.withOp("-D", "-X")
	return d
}

// Check is the command that finds what c adds, so that it is added only
// where missing: -C for a rule (-A, or -I without its position), -S for a
// chain (-N). ok is false when c adds nothing.
func (c Command) Check() (check Command, ok bool) { return c.withOp("-C", "-S") }

// withOp swaps the operation of a command that adds something: rule for -A
// and -I (whose position goes), chain for -N.
func (c Command) withOp(rule, chain string) (Command, bool) {
	out := make([]string, 0, len(c.Args))
	ok := false
	for i := 0; i < len(c.Args); i++ {
		switch c.Args[i] {
		case "-A":
			out, ok = append(out, rule), true
		case "-I":
			out, ok = append(out, rule, c.Args[i+1]), true
			i += 2 // skip the chain, already copied, and the position
		case "-N":
			out, ok = append(out, chain), true
		default:
			out = append(out, c.Args[i])
		}
	}
	return Command{Bin: c.Bin, Args: out}, ok
}

func portMatch(ports []uint16) []string {
	if len(ports) == 1 {
		return []string{"--dport", strconv.Itoa(int(ports[0]))}
	}
	strs := make([]string, len(ports))
	for i, p := range ports {
		strs[i] = strconv.Itoa(int(p))
	}
	return []string{"-m", "multiport", "--dports", strings.Join(strs, ",")}
}

func chunk(ports []uint16, n int) [][]uint16 {
	var out [][]uint16
	for len(ports) > n {
		out = append(out, ports[:n])
		ports = ports[n:]
	}
	if len(ports) > 0 {
		out = append(out, ports)
	}
	return out
}
