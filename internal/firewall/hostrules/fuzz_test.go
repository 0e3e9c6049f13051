package hostrules

import (
	"slices"
	"strings"
	"testing"
)

// FuzzIptables checks that the iptables-save reader never panics on any
// dump, reports only ports it was asked about, and reports nothing once
// no rule accepts.
func FuzzIptables(f *testing.F) {
	for _, s := range []string{
		"*filter\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n",
		"*filter\n-A INPUT -j x\n-A x -g INPUT\n-A x -p tcp -m multiport ! --dports 1:65535 -j ACCEPT\n",
		"*filter\n-A INPUT -m mark ! --mark 0x10000000/0x30000000 -p 6 --dport 2000: -j ACCEPT\n",
		"*filter\n-A INPUT -m comment --comment \"a \\\" b\" -p tcp --dport 22 -j ACCEPT\n",
		"*filter\n-A\n-A INPUT --dport\n-A INPUT -p\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, dump []byte) {
		for _, fd := range Iptables("iptables", dump, want) {
			if !strings.HasPrefix(fd.Where, "iptables -t filter ") {
				t.Errorf("finding where %q", fd.Where)
			}
			for _, p := range fd.Ports {
				if !slices.Contains(want.Ports, p) {
					t.Errorf("finding of port %d, not asked about", p)
				}
			}
		}
		closed := strings.ReplaceAll(string(dump), "ACCEPT", "DROP")
		if got := Iptables("iptables", []byte(closed), want); len(got) > 0 {
			t.Errorf("findings without an ACCEPT: %v", got)
		}
	})
}
