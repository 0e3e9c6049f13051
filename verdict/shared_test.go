package verdict_test

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/knockwall/knockwall/spa"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// TestMarkUsedRefusesPeersToken: a token spent at one engine (a cluster
// peer) and marked used at another is refused there as a replay; without
// the mark the second engine would take it.
func TestMarkUsedRefusesPeersToken(t *testing.T) {
	start := t0.Add(-time.Minute)
	a, b, c := spaEngine(t, start, nil), spaEngine(t, start, nil), spaEngine(t, start, nil)
	tok := webToken(t, t0, 1, netip.Addr{})
	d := a.Decide(udpPkt(t, client4, spaPort, tok), t0)
	if d.Reason != verdict.ReasonToken || d.ReplayMethod != tracker.MethodSPA || d.ReplayUntil <= t0.UnixNano() {
		t.Fatalf("at a: %v, replay method %v until %d", d.Reason, d.ReplayMethod, d.ReplayUntil)
	}
	if err := b.MarkUsed(d.ServiceID, d.ReplayMethod, d.ReplayKey[:spa.NonceSize], time.Unix(0, d.ReplayUntil), t0); err != nil {
		t.Fatal(err)
	}
	// Marking twice is no error.
	if err := b.MarkUsed(d.ServiceID, d.ReplayMethod, d.ReplayKey[:spa.NonceSize], time.Unix(0, d.ReplayUntil), t0); err != nil {
		t.Fatal(err)
	}
	expectToken(t, b, "replayed at the peer", udpPkt(t, client4, spaPort, tok), t0.Add(time.Second), verdict.ReasonBadToken, spa.ErrReplay)
	expectToken(t, c, "at an engine that was not told", udpPkt(t, client4, spaPort, tok), t0.Add(time.Second), verdict.ReasonToken, nil)
	// A service that takes no such tokens has no memory for them.
	if err := b.MarkUsed(d.ServiceID+1, d.ReplayMethod, d.ReplayKey[:spa.NonceSize], time.Unix(0, d.ReplayUntil), t0); !errors.Is(err, verdict.ErrNoMemory) {
		t.Fatalf("an unknown service: %v", err)
	}
	// Only SPA nonces and fwknop digests are tokens.
	if err := b.MarkUsed(d.ServiceID, tracker.MethodSequence, d.ReplayKey[:spa.NonceSize], time.Unix(0, d.ReplayUntil), t0); !errors.Is(err, verdict.ErrTokenKind) {
		t.Fatalf("a sequence's key: %v", err)
	}
	if err := b.MarkUsed(d.ServiceID, tracker.MethodFwknop, d.ReplayKey[:spa.NonceSize], time.Unix(0, d.ReplayUntil), t0); !errors.Is(err, verdict.ErrTokenKind) {
		t.Fatalf("an fwknop key of 16 bytes: %v", err)
	}
}
