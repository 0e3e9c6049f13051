package ipt

import (
	"testing"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/rules"
)

// FuzzParseSave: whatever iptables-save prints, parsing it, checking a
// plan against it and writing the restore input that repairs it never
// panic.
func FuzzParseSave(f *testing.F) {
	f.Add([]byte("*security\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n" +
		"-A INPUT ! -i lo -p tcp -m comment --comment \"knockwall guard jump 0a0b0c0d\" -j KNOCKWALL-GUARD\nCOMMIT\n"))
	f.Add([]byte("*filter\n-A INPUT -m comment --comment \"knockwall refuse jump 1\" -j KNOCKWALL-REFUSE\n-A KNOCKWALL-REFUSE --comment\n"))
	f.Add([]byte("-A\n-A \n*\n:KNOCKWALL\n--comment \""))
	c := rules.Defaults()
	svc := rules.ServiceDefaults()
	svc.Ports, svc.Sequence = []int{22}, []string{"7000", "8000", "9000/udp"}
	c.Services = map[string]rules.ServiceConfig{"ssh": svc}
	set, err := rules.Compile(c)
	if err != nil {
		f.Fatal(err)
	}
	p := firewall.NewPlan(set, firewall.Options{})
	f.Fuzz(func(t *testing.T, save []byte) {
		cur := parseSave(save)
		for _, fam := range families {
			want, err := render(p, fam)
			if err != nil {
				t.Fatal(err)
			}
			_ = diff(fam.bin, want, cur)
			_ = applyInput(want, cur, true)
		}
	})
}
