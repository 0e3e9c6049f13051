// Package fwtest holds the configurations the firewall backends' tests
// share, so that both backends are tested against the same plans.
package fwtest

import (
	"context"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/kerneltest"
	"github.com/knockwall/knockwall/internal/netns"
	"github.com/knockwall/knockwall/rules"
)

// Set is ssh on ports 22 and 2222 behind 7000, 8000, 9000/udp, with mutate
// applied.
func Set(t testing.TB, mutate func(c *rules.Config)) *rules.Set {
	t.Helper()
	c := rules.Defaults()
	svc := rules.ServiceDefaults()
	svc.Ports = []int{22, 2222}
	svc.Sequence = []string{"7000", "8000", "9000/udp"}
	c.Services = map[string]rules.ServiceConfig{"ssh": svc}
	if mutate != nil {
		mutate(&c)
	}
	s, err := rules.Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// RouterSet is a router's config: trusted LAN interfaces, a local service,
// a port forward and routed IPv4 and IPv6 hosts.
func RouterSet(t testing.TB) *rules.Set {
	t.Helper()
	return Set(t, func(c *rules.Config) {
		c.Firewall.TrustedInterfaces = []string{"br-lan", "lan0"}
		nas := rules.ServiceDefaults()
		nas.Forward, nas.Ports, nas.Sequence = true, []int{22222}, []string{"7100", "7200", "7300"}
		lab := rules.ServiceDefaults()
		lab.Forward, lab.Hosts, lab.Ports, lab.Sequence = true, []string{"2001:db8:10::/64", "198.51.100.0/24"}, []int{22, 80}, []string{"7400", "7500", "7600"}
		c.Services["nas"], c.Services["lab"] = nas, lab
	})
}

// Namespace is a fresh network namespace named after prefix, deleted when
// the test ends; it skips the test when the kernel may not be used
// (kerneltest.Require).
func Namespace(t testing.TB, prefix string) netns.NS {
	t.Helper()
	kerneltest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ns, err := netns.New(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Errorf("delete namespace: %v", err)
		}
	})
	return ns
}
