package e2e

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/knockwall/knockwall/internal/firewall"
)

// benchClusterGrants is how many grants TestBenchClusterSync times.
const benchClusterGrants = 200

// TestBenchClusterSync measures the time from an operator's grant at A
// (the request sent) to the element in B's kernel grant set, one grant at
// a time, and prints p50, p99 and the maximum. Run with
// KNOCKWALL_BENCH_E2E=1.
func TestBenchClusterSync(t *testing.T) {
	requireBench(t)
	e := newHAEnv(t, haOptions{})
	e.a().waitPeer(t, "b", "alive", clusterJoin)
	inB := func(src netip.Addr) bool {
		var found bool
		err := e.h.B.Do(func() error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			defer c.CloseLasting()
			set, err := c.GetSetByName(&nftables.Table{Name: firewall.Owner, Family: nftables.TableFamilyINet}, firewall.SetGrants4)
			if err != nil {
				return err
			}
			elems, err := c.GetSetElements(set)
			if err != nil {
				return err
			}
			want := src.As4()
			for _, el := range elems {
				if len(el.Key) >= 6 && [4]byte(el.Key[:4]) == want && binary.BigEndian.Uint16(el.Key[4:6]) == protectedPort {
					found = true
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("B's grant set: %v", err)
		}
		return found
	}
	var lat []time.Duration
	for i := range benchClusterGrants {
		src := netip.AddrFrom4([4]byte{10, 91, byte(i / 250), byte(i%250 + 1)})
		start := time.Now()
		e.a().operatorGrant(t, src)
		for !inB(src) {
			if time.Since(start) > clusterSync {
				t.Fatalf("grant %d (%s) not in B's kernel set within %v", i, src, clusterSync)
			}
			time.Sleep(200 * time.Microsecond)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	fmt.Printf("grant at A to B's kernel set, %d grants: p50 %v, p99 %v, max %v\n", len(lat), q(0.5).Round(time.Microsecond),
		q(0.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
}
