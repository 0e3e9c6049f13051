package verdict_test

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// spaPort is the SPA port of fuzzSet's service web (protected port 443).
const spaPort = 62201

// webToken is a token for web under fuzzKey, made at ts with a nonce that
// starts with n, bound to src when src is valid.
func webToken(tb testing.TB, ts time.Time, n byte, src netip.Addr) []byte {
	tb.Helper()
	tok, err := spa.Build(fuzzKey, "web", ts.Unix(), [spa.NonceSize]byte{n, 0xee}, src)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// spaEngine is an engine on fuzzSet, changed by mod, started at start.
func spaEngine(tb testing.TB, start time.Time, mod func(c *rules.Config)) *verdict.Engine {
	tb.Helper()
	c := testConfig()
	web := rules.ServiceDefaults()
	web.Ports = []int{443}
	web.SPA.Port = spaPort
	web.SPA.KeyFile = "web.key"
	c.Services["web"] = web
	if mod != nil {
		mod(&c)
	}
	set, err := rules.Compile(c, rules.WithKeyReader(func(string) (*spa.Key, error) { return fuzzKey, nil }))
	if err != nil {
		tb.Fatal(err)
	}
	tr, err := tracker.New(tracker.Config{MaxPending: 64, MaxGrants: 64, KnockRate: c.Tracker.KnockRate, KnockBurst: c.Tracker.KnockBurst})
	if err != nil {
		tb.Fatal(err)
	}
	return verdict.New(set, tr, start)
}

// expectToken decides pkt at now and checks the reason and token error.
func expectToken(t *testing.T, e *verdict.Engine, what string, pkt []byte, now time.Time, reason verdict.Reason, tokenErr error) {
	t.Helper()
	d := e.Decide(pkt, now)
	if d.Reason != reason || !errors.Is(d.TokenErr, tokenErr) || (tokenErr == nil && d.TokenErr != nil) {
		t.Fatalf("%s: %v/%v, token error %v; want reason %v, token error %v", what, d.Verdict, d.Reason, d.TokenErr, reason, tokenErr)
	}
}

// TestMappedSourceCannotBurnToken: a token bound to 192.0.2.10 and sent
// first from ::ffff:192.0.2.10, by UDP or in a SYN, is dropped as malformed
// before the SPA code sees it: it grants nothing and spends no nonce, so
// the real IPv4 client's copy still opens.
func TestMappedSourceCannotBurnToken(t *testing.T) {
	e := spaEngine(t, t0.Add(-time.Minute), nil)
	tok := webToken(t, t0, 1, client4)
	for _, pkt := range [][]byte{
		udpPkt(t, mapped4, spaPort, tok),
		spec{src: mapped4, dst: server6, sport: 5, dport: 443, flags: verdict.TCPSyn, payload: tok}.tcp(t),
	} {
		d := e.Decide(pkt, t0)
		if d.Verdict != verdict.Drop || d.Reason != verdict.ReasonMalformed || d.TokenErr != nil {
			t.Fatalf("token from the IPv4-mapped source: %v/%v, token error %v; want drop/malformed, unread", d.Verdict, d.Reason, d.TokenErr)
		}
	}
	if e.Tracker().Granted(mapped4, e.Rules().CoverIDs(443), 40000, t0) || e.Tracker().Granted(client4, e.Rules().CoverIDs(443), 40000, t0) {
		t.Fatal("a grant was made")
	}
	expectToken(t, e, "the real client's copy", udpPkt(t, client4, spaPort, tok), t0, verdict.ReasonToken, nil)
}

// TestMappedSourceSharesNoBudget: knocks from ::ffff:192.0.2.10 do not spend
// 192.0.2.10's knock budget.
func TestMappedSourceSharesNoBudget(t *testing.T) {
	e := spaEngine(t, t0, func(c *rules.Config) { c.Tracker.KnockRate, c.Tracker.KnockBurst = 1, 3 })
	for range 10 {
		expectDecision(t, e, syn(t, mapped4, 7000), t0, verdict.Drop, verdict.ReasonMalformed)
	}
	for i, k := range sshKnocks(t, client4) {
		if d := e.Decide(k, t0); d.Reason != verdict.ReasonKnock {
			t.Fatalf("client4's knock %d: %v/%v, want a knock", i+1, d.Verdict, d.Reason)
		}
	}
	expectDecision(t, e, syn(t, client4, 22), t0, verdict.Accept, verdict.ReasonGranted)
}

// TestRequireSource: with spa.require_source, an unbound token is refused
// with spa.ErrUnbound and answered like a closed port, by UDP and in a SYN,
// without spending its nonce; a token bound to its sender still opens.
// Without it, both open.
func TestRequireSource(t *testing.T) {
	require := func(c *rules.Config) {
		web := c.Services["web"]
		web.SPA.RequireSource = true
		c.Services["web"] = web
	}
	now := t0
	t.Run("required", func(t *testing.T) {
		e := spaEngine(t, now.Add(-time.Minute), require)
		unbound := webToken(t, now, 1, netip.Addr{})
		for _, pkt := range [][]byte{
			udpPkt(t, client4, spaPort, unbound),
			spec{src: client6, dst: server6, sport: 5, dport: 443, flags: verdict.TCPSyn, payload: unbound}.tcp(t),
		} {
			d := e.Decide(pkt, now)
			if d.Verdict != verdict.Reject || d.Reason != verdict.ReasonBadToken || !errors.Is(d.TokenErr, spa.ErrUnbound) {
				t.Fatalf("unbound token: %v/%v, token error %v; want reject/bad-token, %v", d.Verdict, d.Reason, d.TokenErr, spa.ErrUnbound)
			}
		}
		if n := e.Remembered(); n != 0 {
			t.Errorf("refused tokens left %d nonces in the replay cache", n)
		}
		if e.Tracker().Granted(client4, e.Rules().CoverIDs(443), 40000, now) || e.Tracker().Granted(client6, e.Rules().CoverIDs(443), 40000, now) {
			t.Fatal("an unbound token granted")
		}
		expectToken(t, e, "bound to its sender, udp", udpPkt(t, client4, spaPort, webToken(t, now, 2, client4)), now, verdict.ReasonToken, nil)
		expectToken(t, e, "bound to its sender, syn", spec{src: client6, dst: server6, sport: 6, dport: 443, flags: verdict.TCPSyn, payload: webToken(t, now, 3, client6)}.tcp(t), now, verdict.ReasonToken, nil)
		expectToken(t, e, "bound to another source", udpPkt(t, client4b, spaPort, webToken(t, now, 4, client4)), now, verdict.ReasonBadToken, spa.ErrWrongSource)
	})
	t.Run("not required", func(t *testing.T) {
		e := spaEngine(t, now.Add(-time.Minute), nil)
		expectToken(t, e, "unbound", udpPkt(t, client4, spaPort, webToken(t, now, 1, netip.Addr{})), now, verdict.ReasonToken, nil)
		expectToken(t, e, "bound", udpPkt(t, client4b, spaPort, webToken(t, now, 2, client4b)), now, verdict.ReasonToken, nil)
	})
}

// TestTokensBeforeStart: an engine refuses tokens stamped at or before the
// second it started (spa.ErrBeforeStart), also within max_skew and in its
// start second, where the process before it may have accepted them; a reload
// keeps both that and the replay cache; an engine started later refuses the
// token the first one accepted.
func TestTokensBeforeStart(t *testing.T) {
	start := t0.Add(500 * time.Millisecond) // halfway through the second t0
	e := spaEngine(t, start, nil)
	sec := time.Second
	tests := []struct {
		what   string
		stamp  time.Time // the token's timestamp
		at     time.Time // when it arrives
		reason verdict.Reason
		err    error
	}{
		{"made a while before the start", t0.Add(-10 * sec), start, verdict.ReasonBadToken, spa.ErrBeforeStart},
		{"made in the start second, before the start", t0, start, verdict.ReasonBadToken, spa.ErrBeforeStart},
		{"made in the start second, arriving later", t0.Add(400 * time.Millisecond), t0.Add(2 * sec), verdict.ReasonBadToken, spa.ErrBeforeStart},
		{"made the second after", t0.Add(sec), t0.Add(sec), verdict.ReasonToken, nil},
		{"stale is stale first", t0.Add(-time.Hour), t0.Add(sec), verdict.ReasonBadToken, spa.ErrStale},
	}
	for i, tt := range tests {
		tok := webToken(t, tt.stamp, byte(i+1), netip.Addr{})
		expectToken(t, e, tt.what, udpPkt(t, client4, spaPort, tok), tt.at, tt.reason, tt.err)
	}
	accepted := webToken(t, t0.Add(sec), 4, netip.Addr{}) // the one that opened, above

	// A reload keeps the start second and the replay cache.
	set := e.Rules()
	e.SetRules(set, t0.Add(5*sec))
	expectToken(t, e, "before the start, after a reload", udpPkt(t, client4, spaPort, webToken(t, t0, 9, netip.Addr{})), t0.Add(5*sec), verdict.ReasonBadToken, spa.ErrBeforeStart)
	expectToken(t, e, "replay after a reload", udpPkt(t, client4, spaPort, accepted), t0.Add(5*sec), verdict.ReasonBadToken, spa.ErrReplay)
	expectToken(t, e, "made after the reload", udpPkt(t, client4, spaPort, webToken(t, t0.Add(4*sec), 10, netip.Addr{})), t0.Add(5*sec), verdict.ReasonToken, nil)

	// A restart: a new engine, an empty replay cache, within max_skew of
	// the accepted token. Without the start check it would open again.
	restarted := spaEngine(t, t0.Add(3*sec), nil)
	expectToken(t, restarted, "replay after a restart", udpPkt(t, client4b, spaPort, accepted), t0.Add(4*sec), verdict.ReasonBadToken, spa.ErrBeforeStart)
	if restarted.Tracker().Granted(client4b, restarted.Rules().CoverIDs(443), 40000, t0.Add(4*sec)) {
		t.Error("the replayed token granted after the restart")
	}
	expectToken(t, restarted, "fresh after a restart", udpPkt(t, client4b, spaPort, webToken(t, t0.Add(4*sec), 11, netip.Addr{})), t0.Add(4*sec), verdict.ReasonToken, nil)
}
