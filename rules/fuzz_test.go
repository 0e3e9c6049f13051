package rules_test

import (
	"testing"

	"github.com/knockwall/knockwall/rules"
)

// FuzzParseKnock checks that ParseKnock never panics, that whatever it
// accepts is a real TCP or UDP port, and that a knock survives a round trip
// through its String form.
func FuzzParseKnock(f *testing.F) {
	for _, s := range []string{"7000", "7000/tcp", "9000/udp", " 22/UDP ", "0", "65535", "65536", "abc", "9000/sctp", "", "/", "1/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := rules.ParseKnock(s)
		if err != nil {
			if k != (rules.Knock{}) {
				t.Errorf("ParseKnock(%q) = %v with error %v, want the zero Knock", s, k, err)
			}
			return
		}
		if k.Port == 0 {
			t.Errorf("ParseKnock(%q) = port 0", s)
		}
		if k.Proto != rules.ProtoTCP && k.Proto != rules.ProtoUDP {
			t.Errorf("ParseKnock(%q) = protocol %d", s, k.Proto)
		}
		back, err := rules.ParseKnock(k.String())
		if err != nil || back != k {
			t.Errorf("ParseKnock(%q) = %v; round trip through %q = %v, %v", s, k, k.String(), back, err)
		}
		if k.Key() != rules.KnockKey(k.Proto, k.Port) {
			t.Errorf("Key mismatch for %v", k)
		}
	})
}
