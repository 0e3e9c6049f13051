package e2e

// Tokens that name no source, attacked: an on-path attacker who sees one
// (or holds it back) sends it first from its own address. With
// require_source the packet must name its sender, and a copy sent from
// anywhere else opens nothing.

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/internal/pkttest"
	"github.com/knockwall/knockwall/spa"
)

// fwknopTestPort is the fwknop port of the services in this file and in
// the restart tests, apart from the SPA port (spaPort).
const fwknopTestPort = 62202

// fwknopYAML is an fwknop section under the key file k, indented for
// service.extra.
func fwknopYAML(k fwknopKeys, requireSource bool) string {
	return fmt.Sprintf("    fwknop:\n      port: %d\n      key_file: %q\n      max_age: 120s\n      require_source: %t\n", fwknopTestPort, k.file, requireSource)
}

// sendDatagram sends payload in one UDP datagram from from (an address of
// the client namespace) to dst, port, from a random source port, as a
// sniffer's raw socket would.
func sendDatagram(t *testing.T, e *env, from, dst netip.Addr, port uint16, payload []byte) {
	t.Helper()
	seg := pkttest.UDPSegment(from, dst, pkttest.UDP{SrcPort: uint16(41000 + randUint32(t)%1000), DstPort: port}, payload)
	if err := e.pair.Client.Do(func() error { return sendRaw(from, dst, unix.IPPROTO_UDP, seg) }); err != nil {
		t.Fatalf("send a datagram from %v: %v", from, err)
	}
}

// TestFwknopRequireSource: with fwknop.require_source, the stock client's
// `fwknop -s` (allow-IP 0.0.0.0) is refused and answered like a closed
// port, and `fwknop -a` its own address opens.
func TestFwknopRequireSource(t *testing.T) { eachPath(t, testFwknopRequireSource) }

func testFwknopRequireSource(t *testing.T, b backend) {
	k := fwknopKeygen(t, t.TempDir(), "fwknop.keys")
	e := newEnv(t, envOptions{backend: b, svc: service{sequence: []string{}, closed: reject, extra: fwknopYAML(k, true)}})
	afterStartSecond()
	server, c1 := e.pair.Server4, e.pair.Client4
	remote := e.server4(protectedPort)
	client := func(extra ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		args := append(fwknopArgs(k, server, "-p", fmt.Sprint(fwknopTestPort)), extra...)
		if out, err := e.pair.Client.Run(ctx, "fwknop", args...); err != nil {
			t.Fatalf("fwknop %v: %v\n%s", extra, err, out)
		}
	}
	e.expectClosed(t, reject, c1, remote)

	mark := e.d.mark()
	client("-s")
	if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(c1, fwknop.ErrUnbound), logTimeout); err != nil {
		t.Errorf("refusal of fwknop -s: %v", err)
	}
	e.expectStaysClosed(t, reject, c1, remote)
	e.expectNoGrantSince(t, mark, "fwknop -s with require_source")

	mark = e.d.mark()
	client("-a", c1.String())
	if _, err := e.d.waitLogFrom(mark, "grant", map[string]string{"src": c1.String(), "by": "fwknop"}, logTimeout); err != nil {
		t.Fatalf("fwknop -a %v: %v", c1, err)
	}
	e.expectOpen(t, c1, remote).Close()
}

// expectNoGrantSince fails if any grant was logged at or after mark.
func (e *env) expectNoGrantSince(t *testing.T, mark int, what string) {
	t.Helper()
	if e.d.hasFrom(mark, "grant", nil) {
		t.Errorf("%s: the daemon logged a grant", what)
	}
}

// TestUnboundTokenRace: a token or fwknop packet that names no source,
// taken off the wire before it reaches the server (the attacker holds the
// original back, or is simply faster) and sent first from another address
// of the client namespace, opens the port for that address and burns the
// original, which is then refused as a replay. This is what
// require_source: false (the default) allows. With require_source: true
// the client must name its address; the attacker's copy of that opens
// nothing, and the client's own packet still opens for the client.
func TestUnboundTokenRace(t *testing.T) { eachPath(t, testUnboundTokenRace) }

func testUnboundTokenRace(t *testing.T, b backend) {
	for _, require := range []bool{false, true} {
		for _, method := range []string{"spa", "fwknop"} {
			t.Run(fmt.Sprintf("%s require_source %t", method, require), func(t *testing.T) {
				raceUnbound(t, b, method, require)
			})
		}
	}
}

// raceUnbound is one case of TestUnboundTokenRace, in its own world.
func raceUnbound(t *testing.T, b backend, method string, require bool) {
	dir := t.TempDir()
	k := fwknopKeygen(t, dir, "fwknop.keys")
	keyPath := filepath.Join(dir, "server.key")
	key := keygen(t, requireBinary(t), keyPath)
	e := newEnv(t, envOptions{backend: b, secondClient: true, svc: service{sequence: []string{}, closed: reject,
		extra: spaYAML(keyPath, spaOptions{requireSource: require}) + fwknopYAML(k, require)}})
	afterStartSecond()
	server, client, sniffer := e.pair.Server4, e.pair.Client4, e.pair.Client2v4
	remote := e.server4(protectedPort)

	// What the client sends: unbound by default; bound to its own address
	// when the server requires it.
	port, payload, wantErr, replayErr := uint16(spaPort), newToken(t, key, netip.Addr{}), error(spa.ErrWrongSource), error(spa.ErrReplay)
	if require {
		payload = newToken(t, key, client)
	}
	if method == "fwknop" {
		port, wantErr, replayErr = fwknopTestPort, fwknop.ErrAllowIP, fwknop.ErrReplay
		if require {
			payload = fwknopPacket(t, k, server, "-a", client.String())
		} else {
			payload = fwknopPacket(t, k, server, "-s")
		}
	}

	e.expectClosed(t, reject, sniffer, remote)
	e.expectClosed(t, reject, client, remote)
	mark := e.d.mark()
	sendDatagram(t, e, sniffer, server, port, payload) // first, from the sniffer
	if !require {
		if _, err := e.d.waitLogFrom(mark, "grant", map[string]string{"src": sniffer.String(), "by": method}, logTimeout); err != nil {
			t.Fatalf("the sniffer's copy of an unbound %s token did not open (it can, without require_source): %v", method, err)
		}
		e.expectOpen(t, sniffer, remote).Close()
		mark = e.d.mark()
		sendDatagram(t, e, client, server, port, payload)
		if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(client, replayErr), logTimeout); err != nil {
			t.Errorf("the client's original after the sniffer's copy: %v", err)
		}
		e.expectClosed(t, reject, client, remote)
		return
	}
	if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(sniffer, wantErr), logTimeout); err != nil {
		t.Errorf("the sniffer's copy: %v", err)
	}
	e.expectStaysClosed(t, reject, sniffer, remote)
	e.expectNoGrantSince(t, mark, "the sniffer's copy of a bound token")
	// The copy spent nothing: the client's own still opens.
	mark = e.d.mark()
	sendDatagram(t, e, client, server, port, payload)
	if _, err := e.d.waitLogFrom(mark, "grant", map[string]string{"src": client.String(), "by": method}, logTimeout); err != nil {
		t.Fatalf("the client's bound %s token: %v", method, err)
	}
	e.expectOpen(t, client, remote).Close()
	e.expectClosed(t, reject, sniffer, remote)
}
