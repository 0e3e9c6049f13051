package knockdconf

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// analysis is what a knockd command does to the firewall, as far as it can
// be recognised.
type analysis struct {
	ports    []int // TCP ports accepted, sorted, unique
	opens    int   // recognised accepts (TCP or not)
	closes   int   // recognised deletes
	unknown  int   // parts not recognised
	warnings []string
	// limits are the accepts that match on more than the knocker's
	// address and TCP ports (an interface, a destination, an address
	// range, a source other than %IP%, a match module knockwall does not
	// know): a service would open wider than knockd did, so the section
	// is not translated. Each entry says which rule and what limits it.
	limits []string
}

func (a *analysis) merge(b analysis) {
	for _, p := range b.ports {
		a.addPort(p)
	}
	a.opens += b.opens
	a.closes += b.closes
	a.unknown += b.unknown
	a.warnings = append(a.warnings, b.warnings...)
	a.limits = append(a.limits, b.limits...)
}

// limit records that the accept line also matches on what, which
// knockwall cannot express per service.
func (a *analysis) limit(line, what string) {
	a.limits = append(a.limits, fmt.Sprintf("%q also matches %s", line, what))
}

func (a *analysis) addPort(p int) {
	if i, found := slices.BinarySearch(a.ports, p); !found {
		a.ports = slices.Insert(a.ports, i, p)
	}
}

func (a *analysis) warn(format string, args ...any) {
	a.warnings = append(a.warnings, fmt.Sprintf(format, args...))
}

// analyse recognises, in a shell command line, the firewall commands a
// knockd.conf uses to open a port to the knocker and to close it again:
//
//	iptables|ip6tables -A|-I CHAIN -s %IP% -p tcp --dport N -j ACCEPT
//	iptables ... -p tcp -m multiport --dports N,M -j ACCEPT
//	nft add|insert rule FAMILY TABLE CHAIN ip saddr %IP% tcp dport N|{N, M} accept
//	knock_helper_ipt.sh|knock_add -a|-i -f %IP% -d N [-p tcp]   (knockd's helper)
//
// and the same with -D, "nft delete rule" and -x as closes. Parts joined by
// ;, && or || are looked at one by one; quotes are dropped, not parsed.
func analyse(cmd string) analysis {
	var a analysis
	cmd = strings.NewReplacer(`"`, " ", `'`, " ", "&&", ";", "||", ";", "|", ";", "\\", " ").Replace(cmd)
	for part := range strings.SplitSeq(cmd, ";") {
		t := strings.Fields(part)
		for len(t) > 0 && (t[0] == "sudo" || t[0] == "exec" || t[0] == "command" || path.Base(t[0]) == "env" || strings.Contains(t[0], "=")) {
			t = t[1:]
		}
		if len(t) == 0 {
			continue
		}
		switch prog := path.Base(t[0]); {
		case isIPTables(prog):
			iptables(t, &a)
		case prog == "nft":
			nft(t, &a)
		case prog == "knock_helper_ipt.sh" || prog == "knock_add":
			helper(t, &a)
		default:
			a.unknown++
			a.warn("%q is not a firewall command knockwall recognises; not translated", strings.Join(t, " "))
		}
	}
	return a
}

func isIPTables(prog string) bool {
	for _, base := range []string{"iptables", "ip6tables"} {
		switch prog {
		case base, base + "-legacy", base + "-nft":
			return true
		}
	}
	return false
}

// portList parses "22" or "22,443" (no ranges, no service names).
func portList(s string) ([]int, error) {
	var out []int
	for p := range strings.SplitSeq(strings.Trim(s, "{},"), ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		v, err := strconv.Atoi(p)
		if err != nil || v < 1 || v > 65535 {
			return nil, fmt.Errorf("port %q: only single port numbers are translated (no ranges or names)", p)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no port in %q", s)
	}
	return out, nil
}

// iptablesModules are the match modules (-m) that restrict an accept no
// further than knockwall's grant does: the TCP port matches, a comment,
// and connection state (a grant, too, lets in new connections, and the
// host's own rules the rest of them).
var iptablesModules = []string{"tcp", "multiport", "comment", "state", "conntrack"}

func iptables(t []string, a *analysis) {
	var action, proto, jump, table string
	var ports []int
	var bad error
	var limits []string
	ip, negated := false, false
	arg := func(i int) string {
		if i+1 < len(t) {
			return t[i+1]
		}
		return ""
	}
	for i := 1; i < len(t); i++ {
		switch t[i] {
		case "-A", "--append", "-I", "--insert":
			action = "add"
			i++
			if _, err := strconv.Atoi(arg(i)); err == nil { // -I CHAIN NUM
				i++
			}
		case "-D", "--delete":
			action = "delete"
			i++
		case "-t", "--table":
			table = arg(i)
			i++
		case "-p", "--protocol":
			proto = strings.ToLower(arg(i))
			i++
		case "--dport", "--destination-port", "--dports", "--destination-ports":
			p, err := portList(arg(i))
			if err != nil {
				bad = err
			}
			ports = append(ports, p...)
			i++
		case "-j", "--jump":
			jump = strings.ToUpper(arg(i))
			i++
		case "-s", "--source", "--src":
			if strings.Contains(arg(i), "%IP%") {
				ip = true
			} else {
				limits = append(limits, t[i]+" "+arg(i))
			}
			i++
		case "-m", "--match":
			if !slices.Contains(iptablesModules, strings.ToLower(arg(i))) {
				limits = append(limits, t[i]+" "+arg(i))
			}
			i++
		case "--comment", "--state", "--ctstate":
			i++
		case "-w", "--wait", "-W", "--wait-interval", "--syn":
			if _, err := strconv.Atoi(arg(i)); err == nil {
				i++
			}
		case "!":
			negated = true
		default:
			// Any other option matches on something a per-service
			// grant cannot (-i, -o, -d, --sport, --src-range, ...).
			switch {
			case !strings.HasPrefix(t[i], "-"):
			case strings.Contains(t[i], "="):
				limits = append(limits, t[i])
			default:
				limits = append(limits, t[i]+" "+arg(i))
				if !strings.HasPrefix(arg(i), "-") {
					i++
				}
			}
		}
	}
	line := strings.Join(t, " ")
	switch {
	case action == "delete":
		a.closes++
	case len(limits) > 0:
		a.limit(line, strings.Join(limits, ", "))
	case action != "add" || jump != "ACCEPT" || (table != "" && table != "filter") || negated:
		a.unknown++
		a.warn("%q is not an accept rule knockwall can translate", line)
	case bad != nil:
		a.unknown++
		a.warn("%q: %v", line, bad)
	default:
		switch {
		case proto == "" && len(ports) > 0:
			a.warn("%q names no protocol (-p tcp); taken as TCP", line)
			proto = "tcp"
		case proto == "6":
			proto = "tcp"
		}
		a.accept(line, proto, ip, ports)
	}
}

// accept takes an accept rule of a start command for proto's ports, to
// the knocking source alone (fromKnocker) or to every source.
func (a *analysis) accept(line, proto string, fromKnocker bool, ports []int) {
	switch {
	case len(ports) == 0:
		a.unknown++
		a.warn("%q accepts every port, not one service's; not translated", line)
	case proto != "tcp":
		a.opens++
		a.warn("%q opens %s ports %s: knockwall protects TCP ports only; not translated", line, proto, intList(ports))
	default:
		a.opens++
		if !fromKnocker {
			a.warn("%q opens to every source, not only the knocker; knockwall grants the knocking source only", line)
		}
		for _, p := range ports {
			a.addPort(p)
		}
	}
}

func nft(t []string, a *analysis) {
	line := strings.Join(t, " ")
	i := 1
	for i < len(t) && strings.HasPrefix(t[i], "-") {
		i++
	}
	if i+1 >= len(t) || t[i+1] != "rule" {
		a.unknown++
		a.warn("%q is not an nft rule knockwall can translate (sets and maps are not)", line)
		return
	}
	switch t[i] {
	case "delete":
		a.closes++
		return
	case "add", "insert":
	default:
		a.unknown++
		a.warn("%q is not an nft rule knockwall can translate", line)
		return
	}
	var ports []int
	var proto string
	var limits []string
	accept, ip := false, false
	// add rule [FAMILY] TABLE CHAIN [position N] EXPRESSIONS...
	j := i + 4
	if j-2 < len(t) && slices.Contains([]string{"ip", "ip6", "inet", "arp", "bridge", "netdev"}, t[j-2]) {
		j++
	}
	for ; j < len(t); j++ {
		next := ""
		if j+1 < len(t) {
			next = t[j+1]
		}
		switch tok := t[j]; {
		case (tok == "ip" || tok == "ip6") && next == "saddr":
			if j+2 < len(t) && strings.Contains(t[j+2], "%IP%") {
				ip = true
			} else if j+2 < len(t) {
				limits = append(limits, tok+" saddr "+t[j+2])
			}
			j += 2
		case tok == "accept":
			accept = true
		case tok == "counter", tok == "{", tok == "}":
		case tok == "position" || tok == "handle" || tok == "index" || tok == "comment":
			j++
		case tok == "ct" && (next == "state" || next == "status"):
			j += 2
		case (tok == "ip" && next == "protocol" || tok == "meta" && next == "l4proto" || tok == "ip6" && next == "nexthdr") &&
			j+2 < len(t) && t[j+2] == "tcp":
			j += 2 // says TCP, as the dport match does
		case tok == "log":
			for j+2 < len(t) && (t[j+1] == "prefix" || t[j+1] == "level" || t[j+1] == "group") {
				j += 2
			}
		case (tok == "tcp" || tok == "udp" || tok == "sctp") && j+1 < len(t) && t[j+1] == "dport":
			proto = tok
			// The value: "22", "{22,443}", or "{", "22,", "443", "}".
			var v strings.Builder
			k := j + 2
			for ; k < len(t); k++ {
				v.WriteString(t[k])
				if !strings.HasPrefix(v.String(), "{") || strings.HasSuffix(t[k], "}") {
					break
				}
			}
			p, err := portList(v.String())
			if err != nil {
				a.unknown++
				a.warn("%q: %v", line, err)
				return
			}
			ports = append(ports, p...)
			j = k
		case tok == "!=":
			a.unknown++
			a.warn("%q negates a match; not translated", line)
			return
		default:
			// Any other match (iifname, ip daddr, tcp sport, meta,
			// ...) limits the accept in a way a per-service grant
			// cannot.
			// "iifname eth1"; "ip daddr X", "tcp sport N", "meta
			// l4proto udp": a selector and a value.
			m := []string{tok}
			n := 1
			if slices.Contains([]string{"ip", "ip6", "tcp", "udp", "sctp", "meta", "ct", "th", "ether", "icmp", "icmpv6"}, tok) {
				n = 2
			}
			for ; n > 0 && j+1 < len(t); n-- {
				j++
				m = append(m, t[j])
			}
			limits = append(limits, strings.Join(m, " "))
		}
	}
	if len(limits) > 0 {
		a.limit(line, strings.Join(limits, ", "))
		return
	}
	if !accept {
		a.unknown++
		a.warn("%q does not accept; not translated", line)
		return
	}
	a.accept(line, proto, ip, ports)
}

// helper reads knockd's knock_helper_ipt.sh options: -a|-i add, -x delete,
// -f source, -d port, -p proto (default tcp), -c chain.
func helper(t []string, a *analysis) {
	line := strings.Join(t, " ")
	action, proto := "", "tcp"
	var ports []int
	var bad error
	var limits []string
	for i := 1; i < len(t); i++ {
		next := ""
		if i+1 < len(t) {
			next = t[i+1]
		}
		switch t[i] {
		case "-a", "--append", "-i", "--insert":
			action = "add"
		case "-x", "--delete":
			action = "delete"
		case "-d", "--dstport":
			p, err := portList(next)
			if err != nil {
				bad = err
			}
			ports = append(ports, p...)
			i++
		case "-p", "--proto":
			proto = strings.ToLower(next)
			i++
		case "-f", "--srcaddr":
			if !strings.Contains(next, "%IP%") {
				limits = append(limits, t[i]+" "+next)
			}
			i++
		case "-c", "--chain":
			i++
		default:
			if strings.HasPrefix(t[i], "-") {
				limits = append(limits, t[i])
			}
		}
	}
	switch {
	case action == "delete":
		a.closes++
	case len(limits) > 0:
		a.limit(line, strings.Join(limits, ", "))
	case action != "add" || bad != nil || len(ports) == 0:
		a.unknown++
		a.warn("%q is not a knock_helper_ipt.sh accept knockwall can translate", line)
	case proto != "tcp":
		a.opens++
		a.warn("%q opens %s ports: knockwall protects TCP ports only; not translated", line, proto)
	default:
		a.opens++
		for _, p := range ports {
			a.addPort(p)
		}
	}
}
