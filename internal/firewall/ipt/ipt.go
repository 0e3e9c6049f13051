// Package ipt renders a firewall.Plan for iptables and ip6tables and applies
// it with one iptables-restore per family: each table changes in one atomic
// commit, guard first. It is for hosts on iptables-legacy; hosts with
// nftables use package nft.
//
// Every rule knockwall adds carries a comment starting "knockwall" (see
// firewall.Tag), so that Check can find its rules in iptables-save's output
// however iptables prints them back, and Remove finds exactly knockwall's.
package ipt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/rules"
)

// chainPrefix starts every chain knockwall owns.
const chainPrefix = "KNOCKWALL"

// multiportMax is the most ports (a range counts two) one -m multiport
// match takes.
const multiportMax = 15

// Exec runs a command with stdin and returns its standard output. A
// non-zero exit is an error that carries the standard error.
type Exec func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)

// Run is the Exec of the real system.
func Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("%s: %w (install the iptables package, or use firewall.backend: nftables)", name, err)
		}
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// family is one of iptables and ip6tables.
type family struct {
	f   firewall.Family
	bin string // "iptables" or "ip6tables"
}

var families = []family{{firewall.FamilyIPv4, "iptables"}, {firewall.FamilyIPv6, "ip6tables"}}

// Backend applies plans with iptables-restore.
type Backend struct {
	run Exec
}

// New returns a backend running commands with run (Run on a real system).
func New(run Exec) *Backend { return &Backend{run: run} }

// Name implements firewall.Backend.
func (*Backend) Name() string { return "iptables" }

// Close implements firewall.Backend.
func (*Backend) Close() error { return nil }

// Available reports whether iptables-restore can be run.
func Available() bool {
	_, err := exec.LookPath("iptables-restore")
	return err == nil
}

// ChainName is the iptables chain of plan chain c.
func ChainName(c string) string {
	return chainPrefix + "-" + strings.ToUpper(strings.ReplaceAll(c, "_", "-"))
}

// tables in the order they are applied: the guard's first.
var tableOrder = []string{"security", "filter", "mangle"}

func tableOf(c *firewall.Chain) string {
	switch {
	case c.Priority >= firewall.PrioGuard:
		return "security"
	case c.Priority > firewall.PrioDivert:
		return "filter"
	}
	return "mangle"
}

func builtinOf(h firewall.Hook) string {
	switch h {
	case firewall.HookPrerouting:
		return "PREROUTING"
	case firewall.HookForward:
		return "FORWARD"
	}
	return "INPUT"
}

// rendered is a plan for one family: per table, knockwall's chains with
// their rule lines (without "-A CHAIN"), and the jumps.
type rendered struct {
	chains map[string][]chainLines // by table
}

type chainLines struct {
	name  string   // iptables chain
	rules []string // rule specs, each ending in its comment
	tags  []string
	jumps []jump
}

type jump struct {
	builtin string
	insert  bool // -I at 1, else -A
	spec    string
	tag     string
}

// key is the jump as iptables-save prints it back (once normalized).
func (j jump) key() string { return "-A " + j.builtin + " " + j.spec }

// add is the command line that installs the jump: -I at 1 or -A.
func (j jump) add() string {
	if j.insert {
		return "-I " + j.builtin + " 1 " + j.spec
	}
	return j.key()
}

// is reports whether a saved line is this jump: its chain and its tag
// (iptables-save prints the rest in its own words).
func (j jump) is(line string) bool {
	return commentOf(line) == j.tag && strings.HasPrefix(line, "-A "+j.builtin+" ")
}

func render(p *firewall.Plan, fam family) (*rendered, error) {
	if p.FastPath {
		return nil, fmt.Errorf("the kernel fast path: %w", firewall.ErrUnsupported)
	}
	r := &rendered{chains: map[string][]chainLines{}}
	for ci := range p.Chains {
		c := &p.Chains[ci]
		cl := chainLines{name: ChainName(c.Name)}
		// Trusted interfaces first: their packets go back to the
		// built-in chain, as if knockwall's chain were not there.
		for _, ifc := range c.Trusted {
			tag := firewall.Owner + " " + c.Name + " trusted " + ifc
			cl.rules = append(cl.rules, "-i "+ifc+" -j RETURN -m comment --comment "+quote(tag))
			cl.tags = append(cl.tags, tag)
		}
		for i := range c.Rules {
			rule := &c.Rules[i]
			if rule.Family != firewall.FamilyAny && rule.Family != fam.f {
				continue
			}
			specs, err := ruleSpecs(p, rule, fam)
			if err != nil {
				return nil, fmt.Errorf("chain %s rule %d: %w", c.Name, i, err)
			}
			tag := firewall.Tag(c.Name, i, rule)
			for j, s := range specs {
				t := tag
				if len(specs) > 1 {
					t = fmt.Sprintf("%s/%d", tag, j)
				}
				cl.rules = append(cl.rules, s+" -m comment --comment "+quote(t))
				cl.tags = append(cl.tags, t)
			}
		}
		cl.jumps = jumps(c, fam)
		table := tableOf(c)
		r.chains[table] = append(r.chains[table], cl)
	}
	return r, nil
}

// jumps are the rules in the built-in chain that send packets into c: one
// for all but lo (or one for all) and, for a chain with a scope, one per
// kind of destination (this host's addresses, each routed prefix of fam).
func jumps(c *firewall.Chain, fam family) []jump {
	var base []string
	if c.SYNOnly {
		base = append(base, "-p", "tcp", "--syn")
	}
	scopes := [][]string{nil}
	if c.Scope != nil {
		scopes = [][]string{{"-m", "addrtype", "--dst-type", "LOCAL"}}
		for _, pfx := range c.Scope.Prefixes {
			if pfx.Addr().Is4() == (fam.f == firewall.FamilyIPv4) {
				scopes = append(scopes, []string{"-d", pfx.Masked().String()})
			}
		}
	}
	var out []jump
	v := 0
	for _, sc := range scopes {
		var args []string
		if c.SkipLoopback {
			args = append(args, "!", "-i", "lo")
		}
		args = append(args, sc...)
		args = append(args, base...)
		tag := firewall.JumpTag(c, v)
		v++
		args = append(args, "-m", "comment", "--comment", quote(tag), "-j", ChainName(c.Name))
		out = append(out, jump{
			builtin: builtinOf(c.Hook),
			// The divert chain goes last in mangle, after the host's
			// own mangle rules; reject and guard go first in theirs.
			insert: c.Priority > firewall.PrioDivert,
			spec:   strings.Join(args, " "),
			tag:    tag,
		})
	}
	return out
}

// ruleSpecs renders one plan rule as one or more iptables rule specs (a
// port set too large for one multiport match becomes several rules; a mark
// statement with a verdict becomes a MARK rule and a verdict rule).
func ruleSpecs(p *firewall.Plan, r *firewall.Rule, fam family) ([]string, error) {
	if r.SrcSet != "" || r.SrcDPortSet != "" || r.NfprotoSet != "" || r.AddSrc != "" || r.AddNfproto != "" {
		return nil, fmt.Errorf("kernel sets: %w", firewall.ErrUnsupported)
	}
	var m []string
	switch r.Proto {
	case rules.ProtoTCP:
		m = append(m, "-p", "tcp")
		if r.SYN {
			m = append(m, "--syn")
		}
	case rules.ProtoUDP:
		m = append(m, "-p", "udp")
	}
	if r.CtNew {
		m = append(m, "-m", "conntrack", "--ctstate", "NEW")
	}
	variants := [][]string{nil}
	if r.DPortSet != "" {
		s := p.Set(r.DPortSet)
		if s == nil {
			return nil, fmt.Errorf("no set %q", r.DPortSet)
		}
		variants = nil
		for _, ch := range chunk(s.Ports) {
			variants = append(variants, portMatch(ch))
		}
	}
	if r.DstPortSet != "" {
		s := p.Set(r.DstPortSet)
		if s == nil {
			return nil, fmt.Errorf("no set %q", r.DstPortSet)
		}
		var alts [][]string
		for _, hp := range s.HostPorts {
			if hp.Prefix.Addr().Is4() == (fam.f == firewall.FamilyIPv4) {
				alts = append(alts, []string{"-d", hp.Prefix.String(), "--dport", strconv.Itoa(int(hp.Port))})
			}
		}
		variants = cross(variants, alts)
	}
	if r.CtDNAT {
		s := p.Set(r.CtOrigDPortSet)
		if s == nil {
			return nil, fmt.Errorf("no set %q", r.CtOrigDPortSet)
		}
		var alts [][]string
		for _, pr := range s.Ports {
			alts = append(alts, []string{"-m", "conntrack", "--ctstate", "DNAT", "--ctorigdstport", portText(pr)})
		}
		variants = cross(variants, alts)
	}
	var tail []string
	if r.DstLocal {
		tail = append(tail, "-m", "addrtype", "--dst-type", "LOCAL")
	}
	if mm := r.Mark; mm != nil {
		tail = append(tail, "-m", "mark")
		if mm.Not {
			tail = append(tail, "!")
		}
		tail = append(tail, "--mark", fmt.Sprintf("0x%x/0x%x", mm.Value, mm.Mask))
	}
	var targets []string
	if r.ClearMark != 0 || r.OrMark != 0 {
		targets = append(targets, fmt.Sprintf("-j MARK --set-xmark 0x%x/0x%x", r.OrMark, r.ClearMark|r.OrMark))
	}
	switch r.Verdict.Kind {
	case firewall.VerdictNone:
	case firewall.VerdictAccept:
		targets = append(targets, "-j ACCEPT")
	case firewall.VerdictDrop:
		targets = append(targets, "-j DROP")
	case firewall.VerdictQueue:
		q := r.Verdict
		if q.QueueCount > 1 {
			targets = append(targets, fmt.Sprintf("-j NFQUEUE --queue-balance %d:%d --queue-bypass --queue-cpu-fanout", q.QueueNum, q.QueueNum+q.QueueCount-1))
		} else {
			targets = append(targets, fmt.Sprintf("-j NFQUEUE --queue-num %d --queue-bypass", q.QueueNum))
		}
	case firewall.VerdictRejectTCP:
		targets = append(targets, "-j REJECT --reject-with tcp-reset")
	case firewall.VerdictRejectUnreach:
		if fam.f == firewall.FamilyIPv6 {
			targets = append(targets, "-j REJECT --reject-with icmp6-port-unreachable")
		} else {
			targets = append(targets, "-j REJECT --reject-with icmp-port-unreachable")
		}
	default:
		return nil, fmt.Errorf("verdict %d: %w", r.Verdict.Kind, firewall.ErrUnsupported)
	}
	var out []string
	for _, t := range targets {
		for _, v := range variants {
			spec := slices.Concat(m, v, tail)
			out = append(out, strings.TrimSpace(strings.Join(spec, " ")+" "+t))
		}
	}
	return out, nil
}

// chunk splits port ranges into groups one multiport match takes.
func chunk(ports []firewall.PortRange) [][]firewall.PortRange {
	var out [][]firewall.PortRange
	var cur []firewall.PortRange
	n := 0
	for _, r := range ports {
		w := 1
		if r.Lo != r.Hi {
			w = 2
		}
		if n+w > multiportMax {
			out, cur, n = append(out, cur), nil, 0
		}
		cur, n = append(cur, r), n+w
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

func portMatch(ports []firewall.PortRange) []string {
	if len(ports) == 1 {
		return []string{"--dport", portText(ports[0])}
	}
	strs := make([]string, len(ports))
	for i, r := range ports {
		strs[i] = portText(r)
	}
	return []string{"-m", "multiport", "--dports", strings.Join(strs, ",")}
}

// portText is a port range as iptables writes it: "22" or "1000:2000".
func portText(r firewall.PortRange) string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return strconv.Itoa(int(r.Lo)) + ":" + strconv.Itoa(int(r.Hi))
}

// cross is every variant followed by every alternative: one rule each.
func cross(variants, alts [][]string) [][]string {
	var out [][]string
	for _, v := range variants {
		for _, a := range alts {
			out = append(out, append(slices.Clone(v), a...))
		}
	}
	return out
}

func quote(s string) string { return `"` + s + `"` }

// current is what iptables-save says of knockwall's rules in one family.
type current struct {
	// chains: per table, knockwall's chains and the comment tags of
	// their rules, in order.
	chains map[string]map[string][]string
	// jumps: per table, lines in built-in chains that carry knockwall's
	// comment or jump to one of its chains, as "-A CHAIN spec".
	jumps map[string][]string
	// builtins: per table and built-in chain, every rule line, in order.
	builtins map[string]map[string][]string
}

func parseSave(out []byte) *current {
	c := &current{chains: map[string]map[string][]string{}, jumps: map[string][]string{}, builtins: map[string]map[string][]string{}}
	table := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":"+chainPrefix):
			name, _, _ := strings.Cut(line[1:], " ")
			if c.chains[table] == nil {
				c.chains[table] = map[string][]string{}
			}
			if _, ok := c.chains[table][name]; !ok {
				c.chains[table][name] = []string{}
			}
		case strings.HasPrefix(line, "-A "):
			fields := strings.Fields(line)
			if len(fields) < 2 {
				continue
			}
			chain := fields[1]
			if strings.HasPrefix(chain, chainPrefix) {
				if c.chains[table] == nil {
					c.chains[table] = map[string][]string{}
				}
				c.chains[table][chain] = append(c.chains[table][chain], commentOf(line))
				continue
			}
			if c.builtins[table] == nil {
				c.builtins[table] = map[string][]string{}
			}
			c.builtins[table][chain] = append(c.builtins[table][chain], line)
			if strings.Contains(line, "-j "+chainPrefix) || strings.HasPrefix(commentOf(line), firewall.Owner) {
				c.jumps[table] = append(c.jumps[table], line)
			}
		}
	}
	return c
}

// commentOf returns the text of a line's --comment, unquoted.
func commentOf(line string) string {
	_, rest, ok := strings.Cut(line, "--comment ")
	if !ok {
		return ""
	}
	if strings.HasPrefix(rest, `"`) {
		end := strings.Index(rest[1:], `"`)
		if end < 0 {
			return rest[1:]
		}
		return rest[1 : end+1]
	}
	word, _, _ := strings.Cut(rest, " ")
	return word
}

func (b *Backend) save(ctx context.Context, fam family) (*current, error) {
	out, err := b.run(ctx, nil, fam.bin+"-save")
	if err != nil {
		return nil, err
	}
	return parseSave(out), nil
}

func (b *Backend) restore(ctx context.Context, fam family, input string) error {
	_, err := b.run(ctx, []byte(input), fam.bin+"-restore", "--noflush", "-w")
	return err
}

// Apply implements firewall.Backend.
func (b *Backend) Apply(ctx context.Context, p *firewall.Plan) error {
	for _, fam := range families {
		want, err := render(p, fam)
		if err != nil {
			return err
		}
		cur, err := b.save(ctx, fam)
		if err != nil {
			return err
		}
		if err := b.restore(ctx, fam, applyInput(want, cur, true)); err != nil {
			return fmt.Errorf("%s: %w", fam.bin, err)
		}
	}
	return nil
}

// applyInput is the iptables-restore --noflush input that turns cur into
// want: each of knockwall's chains declared (which empties it) and filled,
// in the same commit; each jump present exactly once; jumps and chains
// knockwall no longer wants deleted. Tables go guard first.
func applyInput(want *rendered, cur *current, addJumps bool) string {
	var b strings.Builder
	for _, table := range tableOrder {
		chains := want.chains[table]
		wanted := map[string]bool{}
		wantJump := map[string]jump{}
		for _, c := range chains {
			wanted[c.name] = true
			for _, j := range c.jumps {
				wantJump[j.key()] = j
			}
		}
		if len(chains) == 0 && len(cur.chains[table]) == 0 && len(cur.jumps[table]) == 0 {
			continue
		}
		fmt.Fprintf(&b, "*%s\n", table)
		for _, c := range chains {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c.name)
		}
		for _, c := range chains {
			for _, r := range c.rules {
				fmt.Fprintf(&b, "-A %s %s\n", c.name, r)
			}
		}
		// Jumps: keep one copy of each wanted jump, delete the rest. A
		// jump that goes first in its chain but has a rule of someone
		// else's ahead of it is deleted and inserted at the top again, in
		// the same commit: never absent.
		seen := map[string]bool{}
		for _, line := range cur.jumps[table] {
			key := normalizeJump(line, wantJump)
			if j, ok := wantJump[key]; ok && !seen[key] && (!j.insert || leading(cur.builtins[table][j.builtin])[line]) {
				seen[key] = true
				continue
			}
			fmt.Fprintf(&b, "-D%s\n", strings.TrimPrefix(line, "-A"))
		}
		for _, c := range chains {
			for _, j := range c.jumps {
				key := j.key()
				if seen[key] || !addJumps {
					continue
				}
				seen[key] = true
				fmt.Fprintf(&b, "%s\n", j.add())
			}
		}
		// Chains knockwall no longer wants: empty, then delete.
		var gone []string
		for name := range cur.chains[table] {
			if !wanted[name] {
				gone = append(gone, name)
			}
		}
		slices.Sort(gone)
		for _, name := range gone {
			fmt.Fprintf(&b, "-F %s\n", name)
		}
		for _, name := range gone {
			fmt.Fprintf(&b, "-X %s\n", name)
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// leading is the run of knockwall's jumps at the top of a built-in
// chain's lines, where the jumps into the reject and guard chains belong:
// a rule ahead of them would decide before the guard does.
func leading(lines []string) map[string]bool {
	out := map[string]bool{}
	for _, l := range lines {
		if !isJumpTag(commentOf(l)) {
			break
		}
		out[l] = true
	}
	return out
}

// isJumpTag reports whether a comment is a firewall.JumpTag.
func isJumpTag(c string) bool {
	f := strings.Fields(c)
	return len(f) == 4 && f[0] == firewall.Owner && f[2] == "jump"
}

// normalizeJump maps a saved jump line to the wanted jump with the same
// comment tag (iptables-save prints rules back in its own words), or
// returns the line itself.
func normalizeJump(line string, want map[string]jump) string {
	for key, j := range want {
		if j.is(line) {
			return key
		}
	}
	return line
}

// Remove implements firewall.Backend.
func (b *Backend) Remove(ctx context.Context) error {
	var errs []error
	for _, fam := range families {
		cur, err := b.save(ctx, fam)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		in := applyInput(&rendered{chains: map[string][]chainLines{}}, cur, false)
		if in == "" {
			continue
		}
		if err := b.restore(ctx, fam, in); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", fam.bin, err))
		}
	}
	return errors.Join(errs...)
}

// Check implements firewall.Backend.
func (b *Backend) Check(ctx context.Context, p *firewall.Plan) ([]string, error) {
	var missing []string
	for _, fam := range families {
		want, err := render(p, fam)
		if err != nil {
			return nil, err
		}
		cur, err := b.save(ctx, fam)
		if err != nil {
			return nil, err
		}
		missing = append(missing, diff(fam.bin, want, cur)...)
	}
	return missing, nil
}

func diff(bin string, want *rendered, cur *current) []string {
	var out []string
	for _, table := range tableOrder {
		for _, c := range want.chains[table] {
			got, ok := cur.chains[table][c.name]
			if !ok {
				out = append(out, fmt.Sprintf("%s -t %s: chain %s missing", bin, table, c.name))
				continue
			}
			if !slices.Equal(got, c.tags) {
				out = append(out, fmt.Sprintf("%s -t %s: chain %s holds %d rules, not the %d knockwall installs", bin, table, c.name, len(got), len(c.tags)))
			}
			for _, j := range c.jumps {
				n := 0
				for _, line := range cur.jumps[table] {
					if j.is(line) {
						n++
					}
				}
				if n != 1 {
					out = append(out, fmt.Sprintf("%s -t %s: %d jumps from %s to %s, want 1", bin, table, n, j.builtin, c.name))
					continue
				}
				if !j.insert {
					continue
				}
				lines := cur.builtins[table][j.builtin]
				lead := leading(lines)
				for _, line := range lines {
					if j.is(line) && !lead[line] {
						out = append(out, fmt.Sprintf("%s -t %s: a rule is ahead of knockwall's jump to %s, which goes first in %s: %s",
							bin, table, c.name, j.builtin, lines[len(lead)]))
					}
				}
			}
		}
	}
	return out
}

// Render implements firewall.Backend: a shell script that installs p like
// Apply does, for hosts that manage their own firewall. Knockwall's chains
// are declared and filled by iptables-restore in one commit per table (a
// guard in place is replaced atomically, never absent), then each jump is
// added where iptables -C does not find it.
func (b *Backend) Render(w io.Writer, p *firewall.Plan) error {
	fmt.Fprintln(w, "#!/bin/sh")
	fmt.Fprintln(w, "# knockwall's static rules for iptables and ip6tables, as `knockwall run` installs them.")
	fmt.Fprintln(w, "# The guard (security table) keeps protected ports closed whenever knockwall is not")
	fmt.Fprintln(w, "# deciding; rerunning this script replaces knockwall's chains atomically and adds no")
	fmt.Fprintln(w, "# jump twice. `knockwall rules remove` removes all of it.")
	fmt.Fprintln(w, "set -e")
	for _, fam := range families {
		want, err := render(p, fam)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s-restore --noflush -w <<'EOF'\n", fam.bin)
		fmt.Fprint(w, applyInput(want, &current{}, false))
		fmt.Fprintln(w, "EOF")
		for _, table := range tableOrder {
			for _, c := range want.chains[table] {
				for _, j := range c.jumps {
					fmt.Fprintf(w, "%s -w -t %s -C %s %s 2>/dev/null || %s -w -t %s %s\n",
						fam.bin, table, j.builtin, shell(j.spec), fam.bin, table, shell(j.add()))
				}
			}
		}
	}
	return nil
}

// shell quotes a rule spec for sh: "!" and quoted comments survive.
func shell(spec string) string {
	return strings.ReplaceAll(spec, "! ", "'!' ")
}

// Mode implements firewall.ModeReporter: iptables has no owned rules, so
// the daemon's self-heal keeps them in place.
func (*Backend) Mode() (string, error) { return firewall.ModeSelfHeal, nil }
