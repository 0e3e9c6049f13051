package verdict_test

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/internal/race"
	"github.com/knockwall/knockwall/internal/replay"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// apiPort is the SPA port of the second SPA service, api (port 8443).
const apiPort = 62202

// twoSPAServices adds api, a second SPA service under its own key, and
// bounds each replay cache to max_nonces 16.
func twoSPAServices(c *rules.Config) {
	c.Tracker.MaxNonces = 16
	api := rules.ServiceDefaults()
	api.Ports = []int{8443}
	api.SPA.Port = apiPort
	api.SPA.KeyFile = "web.key"
	c.Services["api"] = api
}

// TestReplayCachePerService: the holder of web's key fills web's replay
// cache with valid tokens until it refuses them as full; api's tokens are
// still accepted, from any source: each service has its own cache.
func TestReplayCachePerService(t *testing.T) {
	e := spaEngine(t, t0.Add(-time.Minute), twoSPAServices)
	full := 0
	for i := range 256 {
		tok, err := spa.Build(fuzzKey, "web", t0.Unix(), [spa.NonceSize]byte{byte(i), 0x77}, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		d := e.Decide(udpPkt(t, client4b, spaPort, tok), t0)
		if errors.Is(d.TokenErr, spa.ErrReplayFull) {
			full++
			if full == 8 {
				break
			}
		} else if d.Reason != verdict.ReasonToken {
			t.Fatalf("web token %d: %v/%v %v", i, d.Verdict, d.Reason, d.TokenErr)
		}
	}
	if full == 0 {
		t.Fatal("web's cache never filled: the test proves nothing")
	}
	for i, src := range []netip.Addr{client4, client6} {
		tok, err := spa.Build(fuzzKey, "api", t0.Unix(), [spa.NonceSize]byte{byte(i), 0x88}, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		expectToken(t, e, "api's token while web's cache is full", udpPkt(t, src, apiPort, tok), t0, verdict.ReasonToken, nil)
	}
}

// TestFwknopRequireSource: with fwknop.require_source, the real client's
// packet with allow-IP 0.0.0.0 (-s) is refused with fwknop.ErrUnbound,
// grants nothing and spends nothing; a packet naming its sender (-a)
// opens. Without it, the -s packet opens for whoever sends it first.
func TestFwknopRequireSource(t *testing.T) {
	vs := fwVectors(t)
	unbound, named := vs["access_source"], vs["access_tcp22"] // -s; -a 10.0.0.1
	sender := netip.MustParseAddr("10.0.0.1")
	sniffer := netip.MustParseAddr("10.0.0.66")
	for _, require := range []bool{true, false} {
		e := fwknopEngineWith(t, unbound.made.Add(-time.Minute), func(s *rules.ServiceConfig) { s.Fwknop.RequireSource = require })
		now := named.made.Add(time.Second)
		d := e.Decide(udpPkt(t, sniffer, rules.DefaultFwknopPort, unbound.packet), now)
		granted := e.Tracker().Granted(sniffer, e.Rules().CoverIDs(22), 40000, now)
		if require {
			if d.Verdict != verdict.Reject || !errors.Is(d.TokenErr, fwknop.ErrUnbound) || granted {
				t.Fatalf("require_source: -s packet from a sniffer: %v/%v %v, granted %v; want reject, ErrUnbound, no grant", d.Verdict, d.Reason, d.TokenErr, granted)
			}
			if n := e.Remembered(); n != 0 {
				t.Errorf("the refused packet was remembered (%d)", n)
			}
			d = e.Decide(udpPkt(t, sender, rules.DefaultFwknopPort, named.packet), now)
			if d.Reason != verdict.ReasonToken || !e.Tracker().Granted(sender, e.Rules().CoverIDs(22), 40000, now) {
				t.Errorf("require_source: -a packet from its sender: %v/%v %v; want a grant", d.Verdict, d.Reason, d.TokenErr)
			}
			continue
		}
		if d.Reason != verdict.ReasonToken || !granted {
			t.Errorf("without require_source, the -s packet sent first by a sniffer: %v/%v %v, granted %v; want the grant (what require_source prevents)", d.Verdict, d.Reason, d.TokenErr, granted)
		}
	}
}

// fwknopEngineWith is fwknopEngine with ssh's config changed by mod.
func fwknopEngineWith(tb testing.TB, start time.Time, mod func(*rules.ServiceConfig)) *verdict.Engine {
	tb.Helper()
	c := rules.Defaults()
	svc := rules.ServiceDefaults()
	svc.Ports = []int{22, 443}
	svc.Fwknop.KeyFile = "fwknop.key"
	mod(&svc)
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

// TestReplayAcrossRestart: the memory one engine seals is restored into
// the next: the token the first accepted is refused there as a replay,
// while a token stamped before the second started (a client clock 30s
// behind) opens at once. Sealing refuses tokens in the first engine from
// then on. Without a restore, the start-second rule refuses the slow
// client's token; and a not-before carried over is not forgotten.
func TestReplayAcrossRestart(t *testing.T) {
	sec := time.Second
	skew := func(c *rules.Config) {
		web := c.Services["web"]
		web.SPA.MaxSkew = time.Minute
		c.Services["web"] = web
	}
	first := spaEngine(t, t0.Add(-40*sec), skew)
	accepted := webToken(t, t0.Add(2*sec), 1, netip.Addr{})
	expectToken(t, first, "first engine", udpPkt(t, client4, spaPort, accepted), t0.Add(2*sec), verdict.ReasonToken, nil)
	saved := first.SealReplay(t0.Add(3 * sec))
	expectToken(t, first, "after the seal", udpPkt(t, client4b, spaPort, webToken(t, t0.Add(3*sec), 2, netip.Addr{})), t0.Add(3*sec), verdict.ReasonBadToken, replay.ErrSealed)
	expectToken(t, first, "a replay after the seal", udpPkt(t, client4b, spaPort, accepted), t0.Add(3*sec), verdict.ReasonBadToken, spa.ErrReplay)

	restart := t0.Add(5 * sec)
	slow := func(n byte) []byte { return webToken(t, restart.Add(-30*sec), n, netip.Addr{}) }
	older := webToken(t, t0.Add(-45*sec), 3, netip.Addr{}) // before the first engine's start, within max_skew

	t.Run("restored", func(t *testing.T) {
		second := spaEngine(t, restart, skew)
		for _, s := range saved {
			if err := second.RestoreReplay(s, restart); err != nil {
				t.Fatal(err)
			}
		}
		at := restart.Add(sec)
		expectToken(t, second, "replay across the restart", udpPkt(t, client4b, spaPort, accepted), at, verdict.ReasonBadToken, spa.ErrReplay)
		expectToken(t, second, "stamped before the first engine started", udpPkt(t, client4b, spaPort, older), at, verdict.ReasonBadToken, spa.ErrBeforeStart)
		expectToken(t, second, "a client 30s slow", udpPkt(t, client4b, spaPort, slow(4)), at, verdict.ReasonToken, nil)
	})
	t.Run("not restored", func(t *testing.T) {
		second := spaEngine(t, restart, skew)
		expectToken(t, second, "a client 30s slow, no state", udpPkt(t, client4b, spaPort, slow(5)), restart.Add(sec), verdict.ReasonBadToken, spa.ErrBeforeStart)
		expectToken(t, second, "replay, no state", udpPkt(t, client4b, spaPort, accepted), restart.Add(sec), verdict.ReasonBadToken, spa.ErrBeforeStart)
	})
	t.Run("no room", func(t *testing.T) {
		second := spaEngine(t, restart, func(c *rules.Config) { skew(c); c.Tracker.MaxNonces = 1 })
		var many verdict.ServiceReplay
		for _, s := range saved {
			if s.SPA != nil {
				many = s
			}
		}
		for i := range 64 {
			many.SPA = append(many.SPA, replay.Entry[[spa.NonceSize]byte]{Key: [spa.NonceSize]byte{byte(i), 9}, ForgetAt: restart.Add(time.Minute).UnixNano()})
		}
		if err := second.RestoreReplay(many, restart); err == nil {
			t.Fatal("restoring more keys than the cache holds succeeded")
		}
		expectToken(t, second, "a client 30s slow, memory not whole", udpPkt(t, client4b, spaPort, slow(6)), restart.Add(sec), verdict.ReasonBadToken, spa.ErrBeforeStart)
	})
}

// TestTokenReplayAllocs: judging a replayed SPA token, which finds the
// service's replay cache and is refused by it, allocates nothing.
func TestTokenReplayAllocs(t *testing.T) {
	if race.Enabled {
		t.Skip("skipping: the race detector makes sync.Pool drop objects, so allocation counts mean nothing")
	}
	e := spaEngine(t, t0.Add(-time.Minute), twoSPAServices)
	pkt := udpPkt(t, client4, spaPort, webToken(t, t0, 1, netip.Addr{}))
	expectToken(t, e, "first", pkt, t0, verdict.ReasonToken, nil)
	expectToken(t, e, "again", pkt, t0, verdict.ReasonBadToken, spa.ErrReplay)
	if n := testing.AllocsPerRun(200, func() { e.Decide(pkt, t0) }); n != 0 {
		t.Errorf("refusing a replayed token allocates %v times", n)
	}
}
