package verdict_test

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/fwknop/fwknoptest"
	"github.com/knockwall/knockwall/internal/race"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// fwVector is a packet the stock fwknop client made (fwknop/testdata).
type fwVector struct {
	made   time.Time
	packet []byte
}

func fwVectors(tb testing.TB) map[string]fwVector {
	tb.Helper()
	vs, err := fwknoptest.Load("../fwknop/testdata/vectors.txt")
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]fwVector{}
	for _, v := range vs {
		out[v.Name] = fwVector{made: time.Unix(v.Made, 0), packet: v.Packet}
	}
	return out
}

// fwknopEngine serves ssh (ports 22, 443) to fwknop packets made with
// fwknop/testdata/fwknop.key, started well before the vectors were made.
func fwknopEngine(tb testing.TB, start time.Time) *verdict.Engine {
	return fwknopEngineFor(tb, start, rules.DefaultOpenFor)
}

func fwknopEngineFor(tb testing.TB, start time.Time, openFor time.Duration) *verdict.Engine {
	tb.Helper()
	c := rules.Defaults()
	svc := rules.ServiceDefaults()
	svc.Ports = []int{22, 443}
	svc.OpenFor = openFor
	svc.Fwknop.KeyFile = "fwknop.key"
	c.Services = map[string]rules.ServiceConfig{"ssh": svc}
	set, err := rules.Compile(c, rules.WithFwknopKeyReader(func(string) (*fwknop.Key, error) {
		b, err := os.ReadFile("../fwknop/testdata/fwknop.key")
		if err != nil {
			return nil, err
		}
		return fwknop.ParseKey(b)
	}))
	if err != nil {
		tb.Fatal(err)
	}
	tr, err := tracker.New(tracker.Config{MaxPending: 64, MaxGrants: 64})
	if err != nil {
		tb.Fatal(err)
	}
	return verdict.New(set, tr, start)
}

// TestFwknop: packets of the stock fwknop client open the service by UDP
// to the fwknop port, in a SYN to the fwknop port (fwknop -P tcpraw) and in
// a SYN to a protected port; every refusal gets the closed answer and no
// grant.
func TestFwknop(t *testing.T) {
	vs := fwVectors(t)
	v := vs["access_tcp22"] // -A tcp/22 -a 10.0.0.1
	allowed, other := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	start := v.made.Add(-time.Minute)
	now := v.made.Add(time.Second)
	tcpraw := func(src netip.Addr, dport uint16, payload []byte) []byte {
		return spec{src: src, dst: server(src), sport: 40000, dport: dport, flags: verdict.TCPSyn, payload: payload}.tcp(t)
	}
	tests := []struct {
		name    string
		pkt     func() []byte
		at      time.Time
		start   time.Time
		want    error // nil: granted
		grantTo netip.Addr
	}{
		{"udp", func() []byte { return udpPkt(t, allowed, rules.DefaultFwknopPort, v.packet) }, now, start, nil, allowed},
		{"tcpraw to the fwknop port", func() []byte { return tcpraw(allowed, rules.DefaultFwknopPort, v.packet) }, now, start, nil, allowed},
		{"tcpraw to the protected port", func() []byte { return tcpraw(allowed, 22, v.packet) }, now, start, nil, allowed},
		{"allow-ip of another address", func() []byte { return udpPkt(t, other, rules.DefaultFwknopPort, v.packet) }, now, start, fwknop.ErrAllowIP, other},
		{"stale", func() []byte { return udpPkt(t, allowed, rules.DefaultFwknopPort, v.packet) }, v.made.Add(rules.DefaultFwknopMaxAge + time.Second), start, fwknop.ErrStale, allowed},
		{"future", func() []byte { return udpPkt(t, allowed, rules.DefaultFwknopPort, v.packet) }, v.made.Add(-rules.DefaultFwknopMaxAge - time.Second), start.Add(-time.Hour), fwknop.ErrFuture, allowed},
		{"made before the daemon started", func() []byte { return udpPkt(t, allowed, rules.DefaultFwknopPort, v.packet) }, now, v.made, spa.ErrBeforeStart, allowed},
		{"another key", func() []byte { return udpPkt(t, allowed, rules.DefaultFwknopPort, vs["hmac_sha512"].packet) }, vs["hmac_sha512"].made.Add(time.Second), start, fwknop.ErrBadHMAC, allowed},
		{"tampered", func() []byte {
			p := []byte(string(v.packet))
			p[20] ^= 1
			return udpPkt(t, allowed, rules.DefaultFwknopPort, p)
		}, now, start, fwknop.ErrBadHMAC, allowed},
		{"command message", func() []byte {
			return udpPkt(t, netip.MustParseAddr("10.0.0.1"), rules.DefaultFwknopPort, vs["command"].packet)
		}, vs["command"].made.Add(time.Second), start, fwknop.ErrMessageType, allowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := fwknopEngine(t, tt.start)
			d := e.Decide(tt.pkt(), tt.at)
			if d.Verdict != verdict.Reject {
				t.Errorf("verdict %v, want the closed answer (reject)", d.Verdict)
			}
			if !errors.Is(d.TokenErr, tt.want) || (tt.want == nil && d.TokenErr != nil) {
				t.Fatalf("TokenErr = %v, want %v (reason %v)", d.TokenErr, tt.want, d.Reason)
			}
			granted := e.Tracker().Granted(tt.grantTo, e.Rules().CoverIDs(22), 40002, tt.at)
			if granted != (tt.want == nil) {
				t.Errorf("granted = %v, want %v", granted, tt.want == nil)
			}
			if tt.want == nil {
				if d.Reason != verdict.ReasonToken || d.Method != tracker.MethodFwknop || d.Service != "ssh" {
					t.Errorf("decision %+v, want a fwknop token for ssh", d)
				}
				// A byte-identical replay, even from the allowed source
				// (by UDP: a SYN from it would now be granted anyway).
				if d := e.Decide(udpPkt(t, allowed, rules.DefaultFwknopPort, v.packet), tt.at.Add(time.Second)); !errors.Is(d.TokenErr, fwknop.ErrReplay) {
					t.Errorf("replay: TokenErr = %v, want ErrReplay", d.TokenErr)
				}
			}
		})
	}
}

// TestFwknopClientTimeout: a client timeout shortens the grant, never
// lengthens it.
func TestFwknopClientTimeout(t *testing.T) {
	vs := fwVectors(t)
	const openFor = time.Minute
	for _, tt := range []struct {
		vector string
		want   time.Duration
	}{
		{"client_timeout", 30 * time.Second}, // --fw-timeout 30, below open_for: 30s
		{"client_timeout_long", openFor},     // --fw-timeout 7200, above open_for: open_for
	} {
		t.Run(tt.vector, func(t *testing.T) {
			v := vs[tt.vector]
			e := fwknopEngineFor(t, v.made.Add(-time.Minute), openFor)
			now := v.made.Add(time.Second)
			d := e.Decide(udpPkt(t, netip.MustParseAddr("10.0.0.1"), rules.DefaultFwknopPort, v.packet), now)
			if d.Reason != verdict.ReasonToken {
				t.Fatalf("%v: %v", d.Reason, d.TokenErr)
			}
			g := e.Tracker().Grants(now)
			if len(g) != 1 {
				t.Fatalf("grants %+v", g)
			}
			if life := g[0].Expires.Sub(now); life != tt.want {
				t.Errorf("granted for %v, want %v (open_for %v)", life, tt.want, openFor)
			}
		})
	}
}

// TestFwknopRefusalAllocs: refusing an fwknop packet allocates nothing.
func TestFwknopRefusalAllocs(t *testing.T) {
	if race.Enabled {
		t.Skip("skipping: the race detector makes sync.Pool drop objects, so allocation counts mean nothing")
	}
	vs := fwVectors(t)
	v := vs["hmac_sha512"]
	e := fwknopEngine(t, v.made.Add(-time.Minute))
	pkt := udpPkt(t, netip.MustParseAddr("10.0.0.1"), rules.DefaultFwknopPort, v.packet)
	now := v.made.Add(time.Second)
	if n := testing.AllocsPerRun(100, func() { e.Decide(pkt, now) }); n != 0 {
		t.Errorf("refusing a packet under another key allocates %v times", n)
	}
}
