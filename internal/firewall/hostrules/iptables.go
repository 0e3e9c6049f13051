package hostrules

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"

	"github.com/knockwall/knockwall/internal/firewall"
)

// Iptables finds the rules of an iptables-save (or ip6tables-save) dump
// that open w's ports without the accept mark: rules of the filter table
// reachable from INPUT. bin names the dump in the findings ("iptables").
// Knockwall's own chains (KNOCKWALL-*) are skipped.
func Iptables(bin string, save []byte, w Want) []Finding {
	g := graph[iptRule]{rules: map[string][]iptRule{}, jumps: map[string][]string{}}
	table := ""
	sc := bufio.NewScanner(bytes.NewReader(save))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case table != "filter":
		case strings.HasPrefix(line, "-A "):
			args := splitArgs(line)
			if len(args) < 2 || strings.HasPrefix(args[1], "KNOCKWALL") {
				continue
			}
			r, target := parseIptRule(args[2:], w.Marks)
			r.line = line
			g.rules[args[1]] = append(g.rules[args[1]], r)
			if target != "" && !r.trustedOnly(&w) {
				g.jumps[args[1]] = append(g.jumps[args[1]], target)
			}
		}
	}
	var out []Finding
	for _, c := range g.reachable([]string{"INPUT"}) {
		for _, r := range g.rules[c] {
			if ports := r.opens(&w); len(ports) > 0 {
				out = append(out, Finding{Where: bin + " -t filter " + c, Rule: r.line, Ports: ports})
			}
		}
	}
	return out
}

type iptRule struct {
	rule
	line string
}

// parseIptRule reads a rule's arguments as iptables-save prints them, and
// the chain it jumps or goes to (a target that is not a built-in verdict).
func parseIptRule(args []string, m firewall.Marks) (iptRule, string) {
	r := iptRule{rule: rule{proto: -1}}
	target := ""
	not := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() string {
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		if a == "!" {
			not = true
			continue
		}
		switch a {
		case "-p", "--protocol":
			v := next()
			r.proto, r.protoNot = protoNumber(v), not
		case "--dport", "--destination-port":
			r.ports, r.portsNot = parsePortList(next()), not
		case "--dports", "--destination-ports":
			r.ports, r.portsNot = parsePortList(next()), not
		case "-i", "--in-interface":
			r.iif, r.iifNot = next(), not
		case "--mark":
			v := next()
			value, mask := parseMark(v)
			if !not && requiresAccept(m, mask, value, true) {
				r.markAccept = true
			}
		case "--ctstate", "--state":
			states := strings.Split(next(), ",")
			hasNew := false
			for _, s := range states {
				if s == "NEW" || s == "UNTRACKED" {
					hasNew = true
				}
			}
			if hasNew == not {
				r.notNew = true
			}
		case "-j", "--jump":
			switch t := next(); t {
			case "ACCEPT":
				r.accept = true
			case "DROP", "REJECT", "RETURN", "LOG", "MARK", "CONNMARK", "NFQUEUE", "CT", "TRACE", "":
			default:
				target = t
			}
		case "-g", "--goto":
			target = next()
		}
		not = false
	}
	return r, target
}

// splitArgs splits a saved rule line into words, keeping quoted strings
// (comments) whole.
func splitArgs(line string) []string {
	var out []string
	var cur strings.Builder
	quoted, in := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && quoted && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			quoted, in = !quoted, true
		case c == ' ' && !quoted:
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// protoNumber maps a -p argument to a protocol number; -1 for all.
func protoNumber(v string) int {
	switch strings.ToLower(v) {
	case "tcp":
		return protoTCP
	case "all", "0", "":
		return -1
	}
	if n, err := strconv.Atoi(v); err == nil {
		return n
	}
	return 255 // another protocol by name: not TCP
}

// parsePortList reads "22", "1000:2000" or a multiport list "22,80,1000:2000".
func parsePortList(v string) []firewall.PortRange {
	out := []firewall.PortRange{}
	for _, part := range strings.Split(v, ",") {
		lo, hi, isRange := strings.Cut(part, ":")
		l, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			l = 0
		}
		h := l
		if isRange {
			if hi == "" {
				h = 65535
			} else if v, err := strconv.ParseUint(hi, 10, 16); err == nil {
				h = v
			}
		}
		out = append(out, firewall.PortRange{Lo: uint16(l), Hi: uint16(h)})
	}
	return out
}

// parseMark reads "VALUE/MASK" or "VALUE" (mask all ones).
func parseMark(v string) (value, mask uint32) {
	val, msk, hasMask := strings.Cut(v, "/")
	x, _ := strconv.ParseUint(val, 0, 32)
	mask = 0xffffffff
	if hasMask {
		y, _ := strconv.ParseUint(msk, 0, 32)
		mask = uint32(y)
	}
	return uint32(x), mask
}
