package e2e

// The replay memory across a clean restart: tokens the daemon accepted
// stay refused after it, through the state file, while a client whose
// clock is behind opens at once; without the state file, tokens stamped
// before the start are refused as before.

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/spa"
)

// slowClock is how far behind the slow client's clock is.
const slowClock = 30 * time.Second

// TestReplayAcrossRestart: a knockwall SPA token and a stock fwknop packet
// that opened the port are refused after a clean restart with the state
// file (the replay memory came back), while tokens stamped 30s in the past
// (knockwall's SPA format, and fwknop --time-offset-minus 30s) open at
// once. With the state file deleted, the next start refuses both the old
// token and a slow client's as stamped before it started.
func TestReplayAcrossRestart(t *testing.T) { eachPath(t, testReplayAcrossRestart) }

func testReplayAcrossRestart(t *testing.T, b backend) {
	dir := t.TempDir()
	k := fwknopKeygen(t, dir, "fwknop.keys")
	keyPath := filepath.Join(dir, "server.key")
	key := keygen(t, requireBinary(t), keyPath)
	// max_skew 60s: a token 30s old is well inside it.
	extra := fmt.Sprintf("    spa:\n      port: %d\n      key_file: %q\n      max_skew: 60s\n", spaPort, keyPath) + fwknopYAML(k, false)
	e := newEnv(t, envOptions{backend: b, secondClient: true, operate: true, svc: service{sequence: []string{}, closed: reject, extra: extra}})
	afterStartSecond()
	firstStart := time.Now()
	server, c1, c2 := e.pair.Server4, e.pair.Client4, e.pair.Client2v4
	remote := e.server4(protectedPort)
	slowToken := func() []byte {
		t.Helper()
		var nonce [spa.NonceSize]byte
		copy(nonce[:], fmt.Sprint(randUint32(t), randUint32(t)))
		tok, err := spa.Build(key, "ssh", time.Now().Add(-slowClock).Unix(), nonce, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	// The tokens that open before the restart.
	tok := newToken(t, key, netip.Addr{})
	pkt := fwknopPacket(t, k, server, "-a", c1.String())
	mark := e.d.mark()
	sendDatagram(t, e, c1, server, spaPort, tok)
	if _, err := e.d.waitLogFrom(mark, "grant", spaGrant(c1), logTimeout); err != nil {
		t.Fatalf("the spa token before the restart: %v", err)
	}
	mark = e.d.mark()
	sendDatagram(t, e, c1, server, fwknopTestPort, pkt)
	if _, err := e.d.waitLogFrom(mark, "grant", map[string]string{"src": c1.String(), "by": "fwknop"}, logTimeout); err != nil {
		t.Fatalf("the fwknop packet before the restart: %v", err)
	}

	// A slow client's token is stamped before the restart but after the
	// first start, where the first daemon would have taken it too.
	time.Sleep(time.Until(firstStart.Add(slowClock + 2*time.Second)))
	if _, err := e.d.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !e.d.has("grants saved", map[string]string{"replay_keys": "2"}) {
		t.Error("no 'grants saved' line with the 2 replay keys")
	}
	e.d = startDaemon(t, e.pair.Server, e.bin, e.cfgPath)
	if !e.d.has("replay memory restored", map[string]string{"service": "ssh", "spa_nonces": "1", "fwknop_packets": "1"}) {
		t.Error("no 'replay memory restored' line")
	}

	t.Run("replays refused", func(t *testing.T) {
		mark := e.d.mark()
		sendDatagram(t, e, c2, server, spaPort, tok)
		if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(c2, spa.ErrReplay), logTimeout); err != nil {
			t.Errorf("the spa token again: %v", err)
		}
		sendDatagram(t, e, c1, server, fwknopTestPort, pkt)
		if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(c1, fwknop.ErrReplay), logTimeout); err != nil {
			t.Errorf("the fwknop packet again: %v", err)
		}
		e.expectStaysClosed(t, reject, c2, remote)
		e.expectNoGrantSince(t, mark, "replays after a restart with the state file")
	})
	t.Run("slow clients open at once", func(t *testing.T) {
		mark := e.d.mark()
		sendDatagram(t, e, c2, server, fwknopTestPort, fwknopPacket(t, k, server, "-a", c2.String(), "--time-offset-minus", fmt.Sprintf("%ds", int(slowClock/time.Second))))
		if _, err := e.d.waitLogFrom(mark, "grant", map[string]string{"src": c2.String(), "by": "fwknop"}, logTimeout); err != nil {
			t.Errorf("fwknop --time-offset-minus 30s: %v", err)
		}
		e.expectOpen(t, c2, remote).Close()
		c6 := e.pair.Client6
		sendDatagram(t, e, c6, e.pair.Server6, spaPort, slowToken())
		if _, err := e.d.waitLogFrom(mark, "grant", spaGrant(c6), logTimeout); err != nil {
			t.Errorf("a spa token stamped 30s ago: %v", err)
		}
		e.expectOpen(t, c6, e.server6(protectedPort)).Close()
	})

	t.Run("no state file", func(t *testing.T) {
		if _, err := e.d.stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if err := os.Remove(e.ops.stateFile); err != nil {
			t.Fatal(err)
		}
		e.d = startDaemon(t, e.pair.Server, e.bin, e.cfgPath)
		if !e.d.has("no state file; refusing tokens stamped before this start", nil) {
			t.Error("no line saying there is no state file")
		}
		e.expectClosed(t, reject, c2, remote)
		mark := e.d.mark()
		sendDatagram(t, e, c2, server, spaPort, tok)
		if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(c2, spa.ErrBeforeStart), logTimeout); err != nil {
			t.Errorf("the old token: %v", err)
		}
		mark = e.d.mark()
		sendDatagram(t, e, c2, server, spaPort, slowToken())
		if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(c2, spa.ErrBeforeStart), logTimeout); err != nil {
			t.Errorf("a slow client's token: %v", err)
		}
		e.expectStaysClosed(t, reject, c2, remote)
	})
}
