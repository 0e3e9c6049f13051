// Package knockdconf converts a knockd.conf (the configuration of knockd,
// the classic port-knock daemon) into knockwall's YAML, for `knockwall
// config import-knockd`. It translates what has a knockwall equivalent —
// each event section whose command opens TCP ports with iptables,
// ip6tables or nft becomes a service — and lists everything else as notes,
// which also head the YAML as comments. The output is checked with the
// daemon's own decoder and rules.Compile before it is returned.
package knockdconf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/knockwall/knockwall/internal/config"
	"github.com/knockwall/knockwall/rules"
)

// Limits and knockd's defaults (knockd.c).
const (
	// MaxInput bounds the knockd.conf read.
	MaxInput = 1 << 20
	// knockdSeqTimeout is knockd's default seq_timeout, seconds.
	knockdSeqTimeout = 25
	// knockdCmdTimeout is knockd's default cmd_timeout, seconds.
	knockdCmdTimeout = 10
	// shortSequence: sequences shorter than this are kept, with a note.
	shortSequence = 3
)

// ErrNothing is returned when no section could be translated; the CLI
// exits with status 2.
var ErrNothing = errors.New("knockd.conf: nothing could be translated to a knockwall service")

// section is one [name] block of a knockd.conf.
type section struct {
	name string
	line int
	keys map[string]directive // upper-case key
	// order keeps the keys in file order, for stable notes.
	order []string
}

type directive struct {
	value string
	line  int
}

func (s *section) get(keys ...string) (directive, bool) {
	for _, k := range keys {
		if d, ok := s.keys[k]; ok {
			return d, true
		}
	}
	return directive{}, false
}

// service is a translated section.
type service struct {
	name        string
	from        *section
	ports       []int
	sequence    []string
	knocks      []rules.Knock
	stepTimeout int    // seconds
	openFor     int    // seconds; 0: knockwall's default
	openForWhy  string // where open_for comes from, a comment beside it
}

// Convert reads a knockd.conf from r and returns the equivalent knockwall
// YAML and the notes on what could not be translated. It returns an error
// wrapping ErrNothing, with the notes, when no service results, and an
// error for input it cannot read. It never panics.
func Convert(r io.Reader) (yaml []byte, notes []string, err error) {
	raw, err := io.ReadAll(io.LimitReader(r, MaxInput+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read knockd.conf: %w", err)
	}
	if len(raw) > MaxInput {
		return nil, nil, fmt.Errorf("knockd.conf is larger than %d bytes", MaxInput)
	}
	var n notesList
	sections := parse(raw, &n)
	var svcs []*service
	for _, s := range sections {
		if svc := translate(s, &n); svc != nil {
			svcs = append(svcs, svc)
		}
	}
	svcs = resolveConflicts(svcs, &n)
	if len(svcs) == 0 {
		return nil, n, fmt.Errorf("%w (%d notes)", ErrNothing, len(n))
	}
	out := render(svcs, n)
	// The daemon's own path: if it would refuse the output, so do we.
	cfg, err := config.Decode(out, nil)
	if err == nil {
		_, err = rules.Compile(cfg)
	}
	if err != nil {
		return nil, n, fmt.Errorf("converted configuration is not valid (a bug in the converter): %w", err)
	}
	return out, n, nil
}

type notesList []string

func (n *notesList) add(format string, args ...any) {
	*n = append(*n, printable(fmt.Sprintf(format, args...)))
}

// printable makes s safe inside a YAML comment: valid UTF-8, and no control
// or line-breaking characters (YAML also breaks lines at U+0085, U+2028
// and U+2029), which would end the comment and let the rest of the line be
// read as YAML.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}

// parse splits the file into sections the way knockd's parseconfig does:
// lines trimmed, # comments, [name] headers, KEY = value directives with
// case-insensitive keys. Global [options] directives are turned into notes
// here.
func parse(raw []byte, n *notesList) []*section {
	var out []*section
	var cur *section
	inOptions := false
	sc := bufio.NewScanner(bytes.NewReader(bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf")))) // a UTF-8 BOM
	sc.Buffer(make([]byte, 0, 4096), MaxInput)
	for num := 1; sc.Scan(); num++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' && line[len(line)-1] == ']' && len(line) > 2 {
			name := strings.TrimSpace(line[1 : len(line)-1])
			cur, inOptions = nil, strings.EqualFold(name, "options")
			if !inOptions {
				cur = &section{name: name, line: num, keys: map[string]directive{}}
				out = append(out, cur)
			}
			continue
		}
		key, value, hasValue := strings.Cut(line, "=")
		key = strings.ToUpper(strings.TrimSpace(key))
		value = strings.TrimSpace(value)
		switch {
		case inOptions:
			globalNote(key, value, hasValue, num, n)
		case cur == nil:
			n.add("line %d: %q is outside any section (knockd refuses it); ignored", num, line)
		case !hasValue:
			if key == "USESYSLOG" {
				globalNote(key, value, hasValue, num, n)
			} else {
				n.add("[%s] line %d: %q is not a directive; ignored", cur.name, num, line)
			}
		default:
			if _, dup := cur.keys[key]; dup {
				n.add("[%s] line %d: %s given again; the last one is used, as knockd does", cur.name, num, strings.ToLower(key))
			} else {
				cur.order = append(cur.order, key)
			}
			cur.keys[key] = directive{value: value, line: num}
		}
	}
	if err := sc.Err(); err != nil {
		n.add("stopped reading: %v", err)
	}
	return out
}

func globalNote(key, value string, hasValue bool, line int, n *notesList) {
	switch key {
	case "USESYSLOG":
		n.add("line %d: UseSyslog: knockwall logs to stderr (the journal under systemd); set log.format/log.level instead", line)
	case "LOGFILE":
		n.add("line %d: LogFile %s: knockwall logs to stderr; redirect it or use the journal", line, value)
	case "PIDFILE":
		n.add("line %d: PidFile %s: knockwall writes no pid file (run it under systemd)", line, value)
	case "INTERFACE":
		n.add("line %d: Interface %s: knockwall sees knocks on every interface through its firewall rules; restrict the interface in those rules if you need to", line, value)
	default:
		if !hasValue {
			n.add("[options] line %d: %q is not a directive; ignored", line, key)
		} else {
			n.add("[options] line %d: %s is unknown to knockd; ignored", line, strings.ToLower(key))
		}
	}
}

// translate turns one event section into a service, or explains why not.
func translate(s *section, n *notesList) *service {
	where := fmt.Sprintf("[%s]", s.name)
	if d, ok := s.keys["ONE_TIME_SEQUENCES"]; ok {
		n.add("%s line %d: one_time_sequences (%s) cannot be translated: knockwall has no sequence files; consider a rotating sequence (rotate:) or SPA; section dropped", where, d.line, d.value)
		return nil
	}
	seqDir, ok := s.keys["SEQUENCE"]
	if !ok {
		n.add("%s line %d: no sequence; section dropped", where, s.line)
		return nil
	}
	svc := &service{from: s}
	for _, item := range strings.Split(seqDir.value, ",") {
		k, text, err := parseKnock(item)
		if err != nil {
			n.add("%s line %d: sequence: %v; section dropped", where, seqDir.line, err)
			return nil
		}
		svc.knocks = append(svc.knocks, k)
		svc.sequence = append(svc.sequence, text)
	}
	if len(svc.knocks) > rules.MaxSequence {
		n.add("%s line %d: %d knocks, more than knockwall's %d; section dropped", where, seqDir.line, len(svc.knocks), rules.MaxSequence)
		return nil
	}

	start, _ := s.get("START_COMMAND", "COMMAND")
	start6, has6 := s.get("START_COMMAND_6", "COMMAND_6")
	cmdLine := start.line
	if cmdLine == 0 {
		cmdLine = start6.line
	}
	a := analyse(start.value)
	if has6 {
		a6 := analyse(start6.value)
		if len(a6.ports) > 0 && !slices.Equal(a6.ports, a.ports) {
			n.add("%s line %d: start_command_6 opens %s, start_command %s: knockwall protects the union for IPv4 and IPv6 alike", where, start6.line, intList(a6.ports), intList(a.ports))
		}
		a.merge(a6)
	}
	switch {
	case start.value == "" && !has6:
		n.add("%s line %d: no start_command (or command); section dropped", where, s.line)
		return nil
	case len(a.limits) > 0:
		for _, l := range a.limits {
			n.add("%s line %d: untranslatable: %s, which a knockwall service cannot express: it would open the port to every knocker from anywhere; section dropped (write the service by hand, or keep the limit in the host's own firewall)", where, cmdLine, l)
		}
		return nil
	case len(a.ports) == 0 && a.closes > 0 && a.opens == 0:
		n.add("%s line %d: its command deletes a firewall rule: a close sequence. knockwall closes by time (open_for), so this section is dropped", where, cmdLine)
		return nil
	case len(a.ports) == 0:
		n.add("%s line %d: command %q is not a recognisable iptables/ip6tables/nft accept of TCP ports; section dropped (write the service by hand)", where, cmdLine, strings.TrimSpace(start.value+" "+start6.value))
		for _, w := range a.warnings {
			n.add("%s line %d: %s", where, cmdLine, w)
		}
		return nil
	}
	for _, w := range a.warnings {
		n.add("%s line %d: %s", where, cmdLine, w)
	}
	svc.ports = a.ports
	for _, k := range svc.knocks {
		if k.Proto == rules.ProtoTCP && slices.Contains(svc.ports, int(k.Port)) {
			n.add("%s line %d: knock %s is the protected port itself; section dropped", where, seqDir.line, k)
			return nil
		}
	}
	for i := 1; i < len(svc.knocks); i++ {
		if svc.knocks[i] == svc.knocks[i-1] {
			n.add("%s line %d: knock %s repeats the knock before it, which knockwall cannot tell from a retransmission; section dropped", where, seqDir.line, svc.knocks[i])
			return nil
		}
	}
	if len(svc.knocks) < shortSequence {
		n.add("%s line %d: a sequence of %d knock(s) is short and easy to stumble on; kept, but consider at least %d", where, seqDir.line, len(svc.knocks), shortSequence)
	}

	svc.stepTimeout = knockdSeqTimeout
	if d, ok := s.get("SEQ_TIMEOUT", "TIMEOUT"); ok {
		v, err := strconv.Atoi(d.value)
		if err != nil || v < 1 || v > 86400 {
			n.add("%s line %d: seq_timeout %q is not a number of seconds from 1 to 86400; using knockd's default %ds", where, d.line, d.value, knockdSeqTimeout)
		} else {
			svc.stepTimeout = v
		}
	}

	stop, hasStop := s.get("STOP_COMMAND")
	stop6, hasStop6 := s.get("STOP_COMMAND_6")
	ct, hasCT := s.keys["CMD_TIMEOUT"]
	if hasStop || hasStop6 {
		svc.openFor = knockdCmdTimeout
		if hasCT {
			v, err := strconv.Atoi(ct.value)
			if err != nil || v < 1 || v > 7*86400 {
				n.add("%s line %d: cmd_timeout %q is not a number of seconds from 1 to 604800; using knockd's default %ds", where, ct.line, ct.value, knockdCmdTimeout)
			} else {
				svc.openFor = v
			}
		}
		cmd := stop
		if !hasStop {
			cmd = stop6
		}
		if sa := analyse(cmd.value); sa.closes == 0 || sa.unknown > 0 {
			n.add("%s line %d: stop_command %q is not recognisably the delete of what start_command adds; assumed to close it after cmd_timeout", where, cmd.line, cmd.value)
		}
		svc.openForWhy = "knockd's cmd_timeout, after which its stop_command ran"
	} else {
		if hasCT {
			n.add("%s line %d: cmd_timeout without stop_command does nothing in knockd; ignored", where, ct.line)
		}
		n.add("%s line %d: knockd left the port open until something closed it (a close sequence, a reboot); knockwall closes it after open_for, here its default %s", where, s.line, shortDuration(rules.DefaultOpenFor))
		svc.openForWhy = "knockwall's default; knockd never closed by itself"
	}
	directiveNotes(s, n)
	return svc
}

// directiveNotes lists the directives of a translated section that have
// no knockwall equivalent.
func directiveNotes(s *section, n *notesList) {
	for _, k := range s.order {
		d := s.keys[k]
		switch k {
		case "SEQUENCE", "SEQ_TIMEOUT", "TIMEOUT", "START_COMMAND", "COMMAND", "START_COMMAND_6", "COMMAND_6",
			"CMD_TIMEOUT", "STOP_COMMAND", "STOP_COMMAND_6", "ONE_TIME_SEQUENCES":
		case "TCPFLAGS":
			if flags := strings.ToLower(strings.ReplaceAll(d.value, " ", "")); flags == "syn" {
				n.add("[%s] line %d: tcpflags = syn: knockwall counts only plain SYNs as TCP knocks anyway", s.name, d.line)
			} else {
				n.add("[%s] line %d: tcpflags = %s cannot be translated: knockwall counts only plain SYNs (no ACK, RST or FIN) as TCP knocks, which is what the knock client sends", s.name, d.line, d.value)
			}
		case "TARGET":
			n.add("[%s] line %d: target = %s cannot be translated: knockwall matches knocks to this host's own addresses only", s.name, d.line, d.value)
		default:
			n.add("[%s] line %d: %s is unknown to knockd; ignored", s.name, d.line, strings.ToLower(k))
		}
	}
}

// parseKnock reads "7000", "7000:tcp" or "9000:udp" (knockd) and returns
// the knock in knockwall's syntax ("7000", "9000/udp"), written anew: a
// leading zero copied through would make YAML read the port as octal.
func parseKnock(item string) (rules.Knock, string, error) {
	item = strings.TrimSpace(item)
	port, proto, hasProto := strings.Cut(item, ":")
	port = strings.TrimSpace(port)
	k := rules.Knock{Proto: rules.ProtoTCP}
	if hasProto {
		switch strings.ToLower(strings.TrimSpace(proto)) {
		case "tcp":
		case "udp":
			k.Proto = rules.ProtoUDP
		default:
			return rules.Knock{}, "", fmt.Errorf("knock %q: protocol must be tcp or udp", item)
		}
	}
	v, err := strconv.Atoi(port)
	if err != nil || v < 1 || v > 65535 || strings.TrimLeft(port, "0123456789") != "" {
		return rules.Knock{}, "", fmt.Errorf("knock %q: port must be a number from 1 to 65535", item)
	}
	k.Port = uint16(v)
	text := strconv.Itoa(v)
	if k.Proto == rules.ProtoUDP {
		text += "/udp"
	}
	return k, text, nil
}

// resolveConflicts drops services that rules.Compile would refuse beside
// the others: a knock another service already uses, a knock on a port
// another service protects, more services than knockwall holds. Names are
// made unique here too.
func resolveConflicts(svcs []*service, n *notesList) []*service {
	protected := map[int]string{}
	for _, s := range svcs {
		for _, p := range s.ports {
			if _, ok := protected[p]; !ok {
				protected[p] = s.from.name
			}
		}
	}
	owner := map[rules.Knock]string{}
	names := map[string]bool{}
	var out []*service
	for _, s := range svcs {
		where := fmt.Sprintf("[%s] line %d", s.from.name, s.from.line)
		if len(out) == rules.MaxServices {
			n.add("%s: knockwall holds at most %d services; section dropped", where, rules.MaxServices)
			continue
		}
		drop := ""
		for _, k := range s.knocks {
			if o, ok := owner[k]; ok {
				drop = fmt.Sprintf("knock %s is also in the sequence of [%s]", k, o)
				break
			}
			if o, ok := protected[int(k.Port)]; ok && k.Proto == rules.ProtoTCP {
				drop = fmt.Sprintf("knock %s is a port that [%s] protects", k, o)
				break
			}
		}
		if drop != "" {
			n.add("%s: %s, which knockwall does not allow; section dropped", where, drop)
			continue
		}
		for _, k := range s.knocks {
			owner[k] = s.from.name
		}
		s.name = serviceName(s.from.name, names)
		names[s.name] = true
		out = append(out, s)
	}
	return out
}

// serviceName derives a knockwall service name (^[a-z][a-z0-9_]*$) from a
// section name, unique among taken.
func serviceName(section string, taken map[string]bool) string {
	var b strings.Builder
	for _, r := range strings.ToLower(section) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := b.String()
	if name == "" || name[0] < 'a' || name[0] > 'z' {
		name = "knock_" + name
	}
	if len(name) > 48 {
		name = name[:48]
	}
	base := name
	for i := 2; taken[name]; i++ {
		name = base + "_" + strconv.Itoa(i)
	}
	return name
}

// render writes the YAML by hand, so that the notes and the reasons for
// each value can sit beside them as comments.
func render(svcs []*service, notes []string) []byte {
	var b bytes.Buffer
	b.WriteString("# knockwall configuration converted from a knockd.conf by `knockwall config import-knockd`.\n")
	b.WriteString("# Review it before use.\n")
	if len(notes) > 0 {
		b.WriteString("#\n# Not translated, or translated with a change:\n")
		for _, s := range notes {
			b.WriteString("#   - " + s + "\n")
		}
	}
	b.WriteString("#\n")
	b.WriteString("# step_timeout: knockd's seq_timeout bounds the whole sequence, knockwall's\n")
	b.WriteString("# step_timeout each gap between two knocks. It keeps seq_timeout's value, so\n")
	b.WriteString("# every sequence knockd accepted is accepted; a slow one may now take up to\n")
	b.WriteString("# (knocks - 1) x step_timeout in all.\n")
	b.WriteString("services:\n")
	for _, s := range svcs {
		fmt.Fprintf(&b, "  %s: # from [%s], line %d\n", yamlKey(s.name), printable(s.from.name), s.from.line)
		fmt.Fprintf(&b, "    ports: [%s]\n", intList(s.ports))
		fmt.Fprintf(&b, "    sequence: [%s]\n", strings.Join(s.sequence, ", "))
		fmt.Fprintf(&b, "    step_timeout: %ds\n", s.stepTimeout)
		openFor := int(rules.DefaultOpenFor / time.Second)
		if s.openFor > 0 {
			openFor = s.openFor
		}
		fmt.Fprintf(&b, "    open_for: %ds", openFor)
		if s.openForWhy != "" {
			b.WriteString(" # " + s.openForWhy)
		}
		b.WriteString("\n    closed: reject\n")
	}
	return b.Bytes()
}

// yamlKey quotes the service names YAML would read as something other than
// a string (null, true, yes, …); the others are plain [a-z][a-z0-9_]*.
func yamlKey(name string) string {
	switch name {
	case "null", "true", "false", "yes", "no", "on", "off", "y", "n":
		return `"` + name + `"`
	}
	return name
}

func intList(v []int) string {
	s := make([]string, len(v))
	for i, p := range v {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ", ")
}

func shortDuration(d time.Duration) string { return strconv.Itoa(int(d/time.Second)) + "s" }
