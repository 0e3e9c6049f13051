package hostrules

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/firewall/fwtest"
)

var record = flag.Bool("record", false, "load testdata/*.nft and *.rules into a fresh network namespace (root) and record what netlink and iptables-save answer")

// want is what the recorded rulesets are judged against: the default
// marks, two protected ports, a trusted LAN.
var want = Want{
	Ports:   []uint16{22, 2222},
	Trusted: []string{"br-lan"},
	Marks:   firewall.Marks{Accept: 0x10000000, Reject: 0x20000000, Mask: 0x30000000},
}

// exchange is one netlink request and the kernel's answer to it, as
// recorded.
type exchange struct {
	Type  uint16    `json:"type"`
	Data  []byte    `json:"data"`
	Reply []message `json:"reply"`
}

type message struct {
	Type  uint16 `json:"type"`
	Flags uint16 `json:"flags"`
	Data  []byte `json:"data"`
}

// replay answers requests from the recording, each dump ended by Done, as
// the kernel does.
func replay(ex []exchange) nltest.Func {
	return func(req []netlink.Message) ([]netlink.Message, error) {
		if len(req) == 0 {
			return nil, io.EOF
		}
		var out []netlink.Message
		for _, m := range req {
			i := slices.IndexFunc(ex, func(e exchange) bool {
				return e.Type == uint16(m.Header.Type) && string(e.Data) == string(m.Data)
			})
			if i < 0 {
				return nil, fmt.Errorf("no recorded answer to request type %#x", uint16(m.Header.Type))
			}
			for _, r := range ex[i].Reply {
				out = append(out, netlink.Message{
					Header: netlink.Header{Type: netlink.HeaderType(r.Type), Flags: netlink.HeaderFlags(r.Flags) | netlink.Multi, Sequence: m.Header.Sequence, PID: nltest.PID},
					Data:   r.Data,
				})
			}
			out = append(out, netlink.Message{
				Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi, Sequence: m.Header.Sequence, PID: nltest.PID},
				Data:   make([]byte, 4),
			})
		}
		return out, nil
	}
}

// recorder passes requests to real and records the answers in ex.
func recorder(real *netlink.Conn, ex *[]exchange) nltest.Func {
	return func(req []netlink.Message) ([]netlink.Message, error) {
		if len(req) == 0 {
			return nil, io.EOF
		}
		var now []exchange
		for _, m := range req {
			q := m
			q.Header.Sequence, q.Header.PID = 0, 0
			msgs, err := real.Execute(q)
			if err != nil {
				return nil, err
			}
			e := exchange{Type: uint16(m.Header.Type), Data: m.Data}
			for _, r := range msgs {
				e.Reply = append(e.Reply, message{Type: uint16(r.Header.Type), Flags: uint16(r.Header.Flags), Data: r.Data})
			}
			now = append(now, e)
		}
		*ex = append(*ex, now...)
		return replay(now)(req)
	}
}

func recordingPath(script string) string {
	return strings.TrimSuffix(script, filepath.Ext(script)) + ".netlink.json"
}

// recordAll loads each script into a fresh namespace and records the
// listing Nftables makes (netlink) or iptables-save's output.
func recordAll(t *testing.T) {
	t.Helper()
	scripts, _ := filepath.Glob("testdata/*.nft")
	for _, script := range scripts {
		ns := fwtest.Namespace(t, "kwhr")
		if out, err := exec.Command("ip", "netns", "exec", string(ns), "nft", "-f", script).CombinedOutput(); err != nil {
			t.Fatalf("nft -f %s: %v\n%s", script, err, out)
		}
		f, err := os.Open(ns.Path())
		if err != nil {
			t.Fatal(err)
		}
		real, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: int(f.Fd())})
		if err != nil {
			t.Fatal(err)
		}
		var ex []exchange
		c, err := nftables.New(nftables.WithTestDial(recorder(real, &ex)))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Nftables(c, want); err != nil {
			t.Fatalf("%s: %v", script, err)
		}
		real.Close()
		f.Close()
		b, err := json.MarshalIndent(ex, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(recordingPath(script), append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rules, _ := filepath.Glob("testdata/*.rules")
	for _, r := range rules {
		ns := fwtest.Namespace(t, "kwhr")
		bin := "iptables"
		if strings.HasSuffix(r, ".v6.rules") {
			bin = "ip6tables"
		}
		in, err := os.ReadFile(r)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ip", "netns", "exec", string(ns), bin+"-restore")
		cmd.Stdin = strings.NewReader(string(in))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s-restore %s: %v\n%s", bin, r, err, out)
		}
		out, err := exec.Command("ip", "netns", "exec", string(ns), bin+"-save").Output()
		if err != nil {
			t.Fatal(err)
		}
		// The header and footer carry a version and a date.
		var keep []string
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "#") {
				keep = append(keep, l)
			}
		}
		if err := os.WriteFile(strings.TrimSuffix(r, ".rules")+".save", []byte(strings.Join(keep, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNftables judges recorded nftables rulesets (testdata/*.nft, as the
// kernel answered them over netlink, -record remakes them): only accept
// rules on the input path that open a protected TCP port to an untrusted
// interface without the accept mark are found.
func TestNftables(t *testing.T) {
	if *record {
		recordAll(t)
	}
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		// Netlink headers and attribute headers are in the host's byte
		// order: a little-endian kernel's recording is no big-endian
		// kernel's answer.
		t.Skip("skipping: the netlink recordings in testdata are a little-endian kernel's")
	}
	tests := []struct {
		script string
		want   []string // Finding.String() parts, in order
	}{
		{"debian.nft", []string{"nftables table inet filter chain input handle 6 accepts TCP to protected port(s) 22 without knockwall's accept mark (ssh, open to all without knockwall)"}},
		{"marked.nft", nil},
		{"fw4.nft", []string{
			"chain input_wan handle 12 accepts TCP to protected port(s) 22 without knockwall's accept mark (!fw4: Allow-SSH-WAN)",
			"chain input_wan handle 14 accepts TCP to protected port(s) 2222 without knockwall's accept mark (!fw4: Allow-set)",
			"nftables table ip legacy chain INPUT handle 2 accepts TCP to protected port(s) 22",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.script, func(t *testing.T) {
			b, err := os.ReadFile(recordingPath(filepath.Join("testdata", tt.script)))
			if err != nil {
				t.Fatalf("%v (go test -record, as root, makes it)", err)
			}
			var ex []exchange
			if err := json.Unmarshal(b, &ex); err != nil {
				t.Fatal(err)
			}
			c, err := nftables.New(nftables.WithTestDial(replay(ex)))
			if err != nil {
				t.Fatal(err)
			}
			found, unread, err := Nftables(c, want)
			if err != nil {
				t.Fatal(err)
			}
			if len(unread) > 0 {
				t.Errorf("unread: %q", unread)
			}
			checkFindings(t, found, tt.want)
		})
	}
}

// TestIptables judges recorded iptables-save dumps (testdata/*.save, made
// from *.rules by -record).
func TestIptables(t *testing.T) {
	if *record {
		recordAll(t)
	}
	tests := []struct {
		file string
		want []string
	}{
		{"ufw.v4.save", []string{
			`iptables -t filter ufw-user-input accepts TCP to protected port(s) 22 without knockwall's accept mark (-A ufw-user-input -p tcp -m tcp --dport 22 -m comment --comment "ssh, open to all" -j ACCEPT)`,
			"iptables -t filter ufw-user-input accepts TCP to protected port(s) 2222 without knockwall's accept mark (-A ufw-user-input -p tcp -m multiport --dports 80,443,2000:3000 -j ACCEPT)",
		}},
		{"marked.v6.save", []string{
			"iptables -t filter INPUT accepts TCP to protected port(s) 2222 without knockwall's accept mark (-A INPUT -p tcp -m tcp --dport 2222 -m mark ! --mark 0x10000000/0x30000000 -j ACCEPT)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatalf("%v (go test -record, as root, makes it)", err)
			}
			checkFindings(t, Iptables("iptables", b, want), tt.want)
		})
	}
}

func checkFindings(t *testing.T, found []Finding, want []string) {
	t.Helper()
	var got []string
	for _, f := range found {
		got = append(got, f.String())
	}
	if len(got) != len(want) {
		t.Fatalf("found %d rules, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("finding %d = %q, want ∋ %q", i, got[i], want[i])
		}
	}
}

// TestRequiresAccept: which mark tests only packets with the accept mark
// pass, with the default marks and with two-bit accept marks.
func TestRequiresAccept(t *testing.T) {
	def := want.Marks
	two := firewall.Marks{Accept: 0x3, Reject: 0x4, Mask: 0x7}
	overlap := firewall.Marks{Accept: 0x3, Reject: 0x1, Mask: 0x3}
	tests := []struct {
		m           firewall.Marks
		mask, value uint32
		eq, want    bool
	}{
		{def, 0x30000000, 0x10000000, true, true},
		{def, 0x10000000, 0x10000000, true, true},
		{def, 0x10000000, 0, false, true},
		{def, 0x30000000, 0, false, false}, // the reject bit passes too
		{def, 0x20000000, 0x20000000, true, false},
		{def, 0xffffffff, 0x10000000, true, true},
		{def, 0x30000000, 0x20000000, false, false}, // no mark passes
		{def, 0x50000000, 0, false, false},          // a host bit passes
		{two, 0x7, 0x3, true, true},
		{two, 0x1, 0, false, true}, // only the accept mark has this bit
		{two, 0x4, 0, false, false},
		{overlap, 0x1, 0, false, false}, // the reject mark has the bit too
		{overlap, 0x3, 0x3, true, true},
	}
	for _, tt := range tests {
		if got := requiresAccept(tt.m, tt.mask, tt.value, tt.eq); got != tt.want {
			t.Errorf("marks %+v: mark & %#x %s %#x: %v, want %v", tt.m, tt.mask, map[bool]string{true: "==", false: "!="}[tt.eq], tt.value, got, tt.want)
		}
	}
}

// TestReplayRefusesUnknown: a request the recording has no answer for is
// an error, not an empty ruleset.
func TestReplayRefusesUnknown(t *testing.T) {
	c, err := nftables.New(nftables.WithTestDial(replay(nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Nftables(c, want); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("Nftables on an empty recording: %v", err)
	}
}
