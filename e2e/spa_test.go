package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/internal/netns"
	"github.com/knockwall/knockwall/internal/pkttest"
	"github.com/knockwall/knockwall/spa"
)

// Single-packet authorization and rotating sequences, end to end:
// keys made by `knockwall keygen`, tokens sent by `knockwall knock` or built
// here with package spa, judged by the daemon on each path (eachPath)
// through real rules and NFQUEUE in a fresh namespace pair per test.

// The SPA service's settings.
const (
	spaPort    = 62201
	spaOpenFor = 2 * time.Second // short, so a test can wait a grant out
	rotateLen  = 3
	rotateLo   = 20000
	rotateHi   = 40000
	// rotatePeriod must be whole seconds (rules.RotateConfig).
	rotatePeriod = 2 * time.Second
)

// Time limits of this file, besides the harness's.
const (
	// expireWithin bounds the wait for a grant's "expire" line: open_for,
	// the janitor's 250ms tick, and slack.
	expireWithin = spaOpenFor + 2*time.Second
	// periodMargin is how much of a rotating period must be left when a
	// sequence is sent, so that the daemon judges it in the period it was
	// computed for.
	periodMargin = 500 * time.Millisecond
	// udpErrTimeout bounds the wait for a connected UDP socket's error.
	udpErrTimeout = time.Second
)

// spaYAML is the spa (and, with o.rotate, rotate) section of the ssh
// service, indented for service.extra.
func spaYAML(keyPath string, o spaOptions) string {
	s := fmt.Sprintf(`    spa:
      port: %d
      key_file: %q
      max_skew: 30s
      require_source: %t
`, spaPort, keyPath, o.requireSource)
	if o.rotate {
		s += fmt.Sprintf(`    rotate:
      length: %d
      period: %ds
      range: [%d, %d]
`, rotateLen, int(rotatePeriod/time.Second), rotateLo, rotateHi)
	}
	return s
}

// spaService is the ssh service opened by SPA (and rotation) only.
func spaService(keyPath string, o spaOptions) service {
	return service{sequence: []string{}, openFor: spaOpenFor, closed: reject, extra: spaYAML(keyPath, o)}
}

// spaEnv is an env whose daemon serves spaService, with a client config
// that holds the client's own copy of the key.
type spaEnv struct {
	*env
	dir       string   // the test's temp dir, for more keys and configs
	key       *spa.Key // the key the server knows
	clientCfg string
}

type spaOptions struct {
	backend       backend
	rotate        bool
	secondClient  bool
	requireSource bool // spa.require_source on the server
}

func newSPAEnv(t *testing.T, o spaOptions) *spaEnv {
	t.Helper()
	bin := requireBinary(t)
	dir := t.TempDir()
	serverKey := filepath.Join(dir, "server.key")
	key := keygen(t, bin, serverKey)
	e := newEnv(t, envOptions{backend: o.backend, svc: spaService(serverKey, o), secondClient: o.secondClient})

	content, err := os.ReadFile(serverKey)
	if err != nil {
		t.Fatal(err)
	}
	clientKey := filepath.Join(dir, "client.key")
	if err := os.WriteFile(clientKey, content, 0o600); err != nil {
		t.Fatal(err)
	}
	afterStartSecond()
	return &spaEnv{env: e, dir: dir, key: key, clientCfg: writeClientConfig(t, dir, "client.yaml", clientKey, o.rotate)}
}

// afterStartSecond waits, once a daemon is ready, for the next unix second:
// the daemon refuses tokens stamped in the second it started (docs/spa.md,
// "Restarts"), and the tests' tokens are stamped when they are made.
func afterStartSecond() {
	now := time.Now()
	time.Sleep(time.Unix(now.Unix()+1, 0).Sub(now))
}

// writeClientConfig writes a config naming keyPath for the ssh service, as
// a client would hold it, and returns its path.
func writeClientConfig(t *testing.T, dir, name, keyPath string, rotate bool) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(configYAML(spaService(keyPath, spaOptions{rotate: rotate}), nftFast, operate{})), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// keygen runs `knockwall keygen path` and reads the key back.
func keygen(t *testing.T, bin, path string) *spa.Key {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "keygen", path).CombinedOutput(); err != nil {
		t.Fatalf("knockwall keygen %s: %v: %s", path, err, out)
	}
	k, err := spa.ReadKeyFile(path)
	if err != nil {
		t.Fatalf("read the key keygen wrote: %v", err)
	}
	return k
}

// newToken builds a fresh token for ssh under k, made now with a random
// nonce, bound to src when src is valid.
func newToken(t *testing.T, k *spa.Key, src netip.Addr) []byte {
	t.Helper()
	var nonce [spa.NonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		t.Fatal(err)
	}
	tok, err := spa.Build(k, "ssh", time.Now().Unix(), nonce, src)
	if err != nil {
		t.Fatalf("spa.Build: %v", err)
	}
	return tok
}

// spaGrant matches the daemon's log line for a token grant to src.
func spaGrant(src netip.Addr) map[string]string {
	return map[string]string{"src": src.String(), "service": "ssh", "by": "spa"}
}

// tokenRefused matches the daemon's debug line for a token from src
// refused with reason.
func tokenRefused(src netip.Addr, reason error) map[string]string {
	return map[string]string{"src": src.String(), "service": "ssh", "reason": reason.Error()}
}

// waitExpired waits for the daemon to expire src's grant (logged at or
// after mark) and checks the port is closed again.
func (e *spaEnv) waitExpired(t *testing.T, mark int, src netip.Addr, remote netip.AddrPort) {
	t.Helper()
	if _, err := e.d.waitLogFrom(mark, "expire", map[string]string{"src": src.String(), "service": "ssh"}, expireWithin); err != nil {
		t.Fatalf("grant of %v did not expire: %v", src, err)
	}
	e.expectClosed(t, reject, src, remote)
}

// ---------------------------------------------------------------- tests

// TestSPAOpens: one token from `knockwall knock --service ssh` opens the
// protected port for the sender, by UDP to the SPA port (the default) or
// inside a SYN to the protected port, over IPv4 and IPv6. The port is closed
// before, and the grant is for the sender's address family only.
func TestSPAOpens(t *testing.T) { eachPath(t, testSPAOpens) }

func testSPAOpens(t *testing.T, b backend) {
	tests := []struct {
		name  string
		v6    bool
		extra []string // knock flags beyond --service ssh -c CFG
	}{
		{name: "udp ipv4"},
		{name: "udp ipv6", v6: true},
		{name: "syn ipv4", extra: []string{"--transport", "syn"}},
		{name: "syn ipv6", v6: true, extra: []string{"--transport", "syn"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSPAEnv(t, spaOptions{backend: b})
			host, src, remote, other := e.pair.Server4, e.pair.Client4, e.server4(protectedPort), e.server6(protectedPort)
			if tt.v6 {
				host, src, remote, other = e.pair.Server6, e.pair.Client6, e.server6(protectedPort), e.server4(protectedPort)
			}
			e.expectClosed(t, reject, netip.Addr{}, remote)

			mark := e.d.mark()
			e.knock(t, host, append([]string{"--service", "ssh", "-c", e.clientCfg}, tt.extra...)...)
			if _, err := e.d.waitLogFrom(mark, "grant", spaGrant(src), logTimeout); err != nil {
				t.Errorf("grant log: %v", err)
			}
			e.expectOpen(t, netip.Addr{}, remote)
			// The same host over the other family is another source.
			e.expectClosed(t, reject, netip.Addr{}, other)
		})
	}
}

// TestSPAReplay: a token datagram captured once and sent again byte for
// byte (the same IP payload: UDP header and token) opens nothing once its
// first grant has lapsed, neither from the original source nor from
// another one; the daemon says why.
func TestSPAReplay(t *testing.T) { eachPath(t, testSPAReplay) }

func testSPAReplay(t *testing.T, b backend) {
	e := newSPAEnv(t, spaOptions{backend: b, secondClient: true})
	first, second := e.pair.Client4, e.pair.Client2v4
	remote := e.server4(protectedPort)

	// Unbound, so that from the second source the nonce is what refuses it.
	tok := newToken(t, e.key, netip.Addr{})
	u := pkttest.UDP{SrcPort: uint16(41000 + randUint32(t)%1000), DstPort: spaPort}
	seg := pkttest.UDPSegment(first, e.pair.Server4, u, tok)
	sent := bytes.Clone(seg) // what a sniffer on the path recorded
	send := func(from netip.Addr, seg []byte) {
		t.Helper()
		if err := e.pair.Client.Do(func() error { return sendRaw(from, e.pair.Server4, unix.IPPROTO_UDP, seg) }); err != nil {
			t.Fatalf("send token datagram from %v: %v", from, err)
		}
	}

	e.expectClosed(t, reject, first, remote)
	mark := e.d.mark()
	send(first, seg)
	if _, err := e.d.waitLogFrom(mark, "grant", spaGrant(first), logTimeout); err != nil {
		t.Fatalf("the original token did not grant: %v", err)
	}
	e.expectOpen(t, first, remote)
	e.waitExpired(t, mark, first, remote)

	t.Run("same source", func(t *testing.T) {
		if !bytes.Equal(seg, sent) {
			t.Fatal("the replayed segment differs from the one sent") // guards the test itself
		}
		mark := e.d.mark()
		send(first, sent)
		e.expectStaysClosed(t, reject, first, remote)
		if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(first, spa.ErrReplay), logTimeout); err != nil {
			t.Errorf("replay refusal log: %v", err)
		}
		e.expectNoGrantSince(t, mark, "replay from the same source")
	})

	t.Run("other source", func(t *testing.T) {
		// The same UDP header and token; only the checksum follows the
		// new source address.
		seg2 := pkttest.UDPSegment(second, e.pair.Server4, u, tok)
		if !bytes.Equal(seg2[8:], sent[8:]) || !bytes.Equal(seg2[:6], sent[:6]) {
			t.Fatalf("the datagram from %v differs beyond its checksum:\n%x\n%x", second, seg2, sent)
		}
		mark := e.d.mark()
		send(second, seg2)
		e.expectStaysClosed(t, reject, second, remote)
		if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(second, spa.ErrReplay), logTimeout); err != nil {
			t.Errorf("replay refusal log: %v", err)
		}
		e.expectNoGrantSince(t, mark, "replay from another source")
	})
}

// TestSPAReplayAfterRestart: a token datagram that opened the port, sent
// again byte for byte after the daemon restarted (its replay cache empty)
// and well within max_skew, opens nothing: the daemon refuses tokens stamped
// before it started, and answers like a closed port.
func TestSPAReplayAfterRestart(t *testing.T) { eachPath(t, testSPAReplayAfterRestart) }

func testSPAReplayAfterRestart(t *testing.T, b backend) {
	e := newSPAEnv(t, spaOptions{backend: b})
	src, remote := e.pair.Client4, e.server4(protectedPort)

	tok := newToken(t, e.key, netip.Addr{})
	u := pkttest.UDP{SrcPort: uint16(41000 + randUint32(t)%1000), DstPort: spaPort}
	seg := pkttest.UDPSegment(src, e.pair.Server4, u, tok)
	send := func() {
		t.Helper()
		if err := e.pair.Client.Do(func() error { return sendRaw(src, e.pair.Server4, unix.IPPROTO_UDP, seg) }); err != nil {
			t.Fatalf("send token datagram: %v", err)
		}
	}
	made := time.Now()

	mark := e.d.mark()
	send()
	if _, err := e.d.waitLogFrom(mark, "grant", spaGrant(src), logTimeout); err != nil {
		t.Fatalf("the token did not grant: %v", err)
	}
	e.expectOpen(t, src, remote)

	// A clean restart: grants and the replay cache go with the process.
	if _, err := e.d.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	e.d = startDaemon(t, e.pair.Server, e.bin, e.cfgPath)
	e.expectClosed(t, reject, src, remote)

	mark = e.d.mark()
	send()
	e.expectStaysClosed(t, reject, src, remote)
	if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(src, spa.ErrBeforeStart), logTimeout); err != nil {
		t.Errorf("refusal log: %v", err)
	}
	// The same token again, answered like an unused port.
	expectUDPLikeClosed(t, e.pair, src, e.pair.Server4, tok)
	e.expectNoGrantSince(t, mark, "a token replayed after a restart")
	if since := time.Since(made); since >= 30*time.Second {
		t.Fatalf("the replay came %v after the token was made, beyond max_skew 30s: it proved nothing", since)
	}
}

// TestSPABoundToOtherSource: a token bound to 10.77.0.3 but sent from
// 10.77.0.2 opens the port for neither; bound to its real source
// (--source auto) it opens.
func TestSPABoundToOtherSource(t *testing.T) { eachPath(t, testSPABoundToOtherSource) }

func testSPABoundToOtherSource(t *testing.T, b backend) {
	e := newSPAEnv(t, spaOptions{backend: b, secondClient: true})
	src, named := e.pair.Client4, e.pair.Client2v4
	remote := e.server4(protectedPort)

	e.expectClosed(t, reject, src, remote)
	mark := e.d.mark()
	e.knock(t, e.pair.Server4, "--service", "ssh", "-c", e.clientCfg, "--source", named.String())
	if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(src, spa.ErrWrongSource), logTimeout); err != nil {
		t.Errorf("refusal log: %v", err)
	}
	e.expectStaysClosed(t, reject, src, remote)
	e.expectClosed(t, reject, named, remote)
	e.expectNoGrantSince(t, mark, "token bound to another source")

	// Control: bound to the address it is really sent from, it opens.
	mark = e.d.mark()
	e.knock(t, e.pair.Server4, "--service", "ssh", "-c", e.clientCfg, "--source", "auto")
	if _, err := e.d.waitLogFrom(mark, "grant", spaGrant(src), logTimeout); err != nil {
		t.Errorf("grant log: %v", err)
	}
	e.expectOpen(t, src, remote)
	e.expectClosed(t, reject, named, remote)
}

// TestSPARequireSource: with spa.require_source, an unbound token (what
// `knockwall knock` sends by default) opens nothing, is answered like a
// closed port, and the daemon says why; the same client's token bound to
// its address (--source auto) opens, by UDP over IPv4 and in a SYN over
// IPv6.
func TestSPARequireSource(t *testing.T) { eachPath(t, testSPARequireSource) }

func testSPARequireSource(t *testing.T, b backend) {
	e := newSPAEnv(t, spaOptions{backend: b, requireSource: true})
	src, remote := e.pair.Client4, e.server4(protectedPort)

	e.expectClosed(t, reject, src, remote)
	mark := e.d.mark()
	e.knock(t, e.pair.Server4, "--service", "ssh", "-c", e.clientCfg)
	if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(src, spa.ErrUnbound), logTimeout); err != nil {
		t.Errorf("refusal log: %v", err)
	}
	e.expectStaysClosed(t, reject, src, remote)
	expectUDPLikeClosed(t, e.pair, src, e.pair.Server4, newToken(t, e.key, netip.Addr{}))
	e.expectNoGrantSince(t, mark, "unbound tokens with require_source")

	t.Run("bound udp ipv4", func(t *testing.T) {
		mark := e.d.mark()
		e.knock(t, e.pair.Server4, "--service", "ssh", "-c", e.clientCfg, "--source", "auto")
		if _, err := e.d.waitLogFrom(mark, "grant", spaGrant(src), logTimeout); err != nil {
			t.Errorf("grant log: %v", err)
		}
		e.expectOpen(t, src, remote)
	})
	t.Run("bound syn ipv6", func(t *testing.T) {
		src6, remote6 := e.pair.Client6, e.server6(protectedPort)
		e.expectClosed(t, reject, src6, remote6)
		mark := e.d.mark()
		e.knock(t, e.pair.Server6, "--service", "ssh", "-c", e.clientCfg, "--source", "auto", "--transport", "syn")
		if _, err := e.d.waitLogFrom(mark, "grant", spaGrant(src6), logTimeout); err != nil {
			t.Errorf("grant log: %v", err)
		}
		e.expectOpen(t, src6, remote6)
	})
}

// TestSPAWrongKey: a token made with a key the server does not know opens
// nothing, and the packet that carries it, by UDP or in a SYN, is answered
// exactly as the same packet to an unused port. So is a valid token: the
// answer is no oracle.
func TestSPAWrongKey(t *testing.T) { eachPath(t, testSPAWrongKey) }

func testSPAWrongKey(t *testing.T, b backend) {
	e := newSPAEnv(t, spaOptions{backend: b, secondClient: true})
	remote := e.server4(protectedPort)
	wrongPath := filepath.Join(e.dir, "wrong.key")
	wrong := keygen(t, e.bin, wrongPath)
	// Key ids are 16 bits: two random keys share one 1 time in 65536, and
	// then the MAC is what fails.
	wantReason := spa.ErrUnknownKey
	if wrong.ID == e.key.ID {
		wantReason = spa.ErrBadMAC
	}
	wrongCfg := writeClientConfig(t, e.dir, "wrong.yaml", wrongPath, false)
	src := e.pair.Client4

	e.expectClosed(t, reject, src, remote)
	start := e.d.mark()

	t.Run("knock udp", func(t *testing.T) {
		mark := e.d.mark()
		e.knock(t, e.pair.Server4, "--service", "ssh", "-c", wrongCfg)
		if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(src, wantReason), logTimeout); err != nil {
			t.Errorf("refusal log: %v", err)
		}
	})
	t.Run("knock syn", func(t *testing.T) {
		mark := e.d.mark()
		e.knock(t, e.pair.Server4, "--service", "ssh", "-c", wrongCfg, "--transport", "syn")
		if _, err := e.d.waitLogFrom(mark, "token refused", tokenRefused(src, wantReason), logTimeout); err != nil {
			t.Errorf("refusal log: %v", err)
		}
	})
	e.expectStaysClosed(t, reject, src, remote)

	t.Run("udp answer", func(t *testing.T) {
		tok := newToken(t, wrong, netip.Addr{})
		expectUDPLikeClosed(t, e.pair, src, e.pair.Server4, tok)
	})
	t.Run("syn answer", func(t *testing.T) {
		tok := newToken(t, wrong, netip.Addr{})
		expectSYNLikeClosed(t, e.pair, src, e.pair.Server4, tok)
	})
	e.expectNoGrantSince(t, start, "tokens under a wrong key")
	e.expectClosed(t, reject, src, remote)

	// Valid tokens, each from a source that holds no grant yet: answered
	// the same, and they do open.
	t.Run("valid udp answer", func(t *testing.T) {
		from := e.pair.Client2v4
		mark := e.d.mark()
		expectUDPLikeClosed(t, e.pair, from, e.pair.Server4, newToken(t, e.key, netip.Addr{}))
		if _, err := e.d.waitLogFrom(mark, "grant", spaGrant(from), logTimeout); err != nil {
			t.Errorf("grant log: %v", err)
		}
		e.expectOpen(t, from, remote)
	})
	t.Run("valid syn answer ipv6", func(t *testing.T) {
		from := e.pair.Client6
		mark := e.d.mark()
		expectSYNLikeClosed(t, e.pair, from, e.pair.Server6, newToken(t, e.key, netip.Addr{}))
		if _, err := e.d.waitLogFrom(mark, "grant", spaGrant(from), logTimeout); err != nil {
			t.Errorf("grant log: %v", err)
		}
		e.expectOpen(t, from, e.server6(protectedPort))
	})
}

// expectSYNLikeClosed sends a SYN carrying tok from src to an unused port
// and to the protected port of server and requires the same reset for both.
// The IPv6 flow label is compared as zero or not, as in
// TestRejectLooksClosed.
func expectSYNLikeClosed(t *testing.T, p *netns.Pair, src, server netip.Addr, tok []byte) {
	t.Helper()
	var ref rstFields
	for i, port := range []uint16{unusedPort, protectedPort} {
		got, err := synReply(p, src, netip.AddrPortFrom(server, port), randUint32(t), tok)
		if err != nil {
			t.Fatalf("SYN with token to port %d: %v", port, err)
		}
		t.Logf("%v -> port %d, SYN with a %d-byte token: %+v", src, port, len(tok), got)
		got.FlowLabel = min(got.FlowLabel, 1)
		if i == 0 {
			ref = got
			if got.Flags != "RST|ACK" || got.AckMinusSN != uint32(1+len(tok)) || got.Payload != 0 {
				t.Fatalf("the kernel's answer from an unused port is not a reset acknowledging the data: %+v", got)
			}
			continue
		}
		if got != ref {
			t.Errorf("SYN with token to the protected port is answered unlike an unused port:\n  unused:    %+v\n  protected: %+v\n  differences: %v",
				ref, got, diffFields(ref, got))
		}
	}
}

// expectUDPLikeClosed sends tok from src to an unused UDP port and to the
// SPA port of server (IPv4) and requires the same ICMP error for both, and
// that a connected socket reads "connection refused" both times.
func expectUDPLikeClosed(t *testing.T, p *netns.Pair, src, server netip.Addr, tok []byte) {
	t.Helper()
	expectUDPLikeClosedAt(t, p, src, server, spaPort, tok)
}

// expectUDPLikeClosedAt is expectUDPLikeClosed for the token port port.
func expectUDPLikeClosedAt(t *testing.T, p *netns.Pair, src, server netip.Addr, tokenPort uint16, tok []byte) {
	t.Helper()
	var ref icmpFields
	for i, port := range []uint16{unusedPort, tokenPort} {
		got, err := udpReply(p, src, netip.AddrPortFrom(server, port), tok)
		if err != nil {
			t.Fatalf("datagram with token to udp/%d: %v", port, err)
		}
		t.Logf("%v -> udp/%d, a %d-byte token: %+v", src, port, len(tok), got)
		if i == 0 {
			ref = got
			if got.Type != layers.ICMPv4TypeDestinationUnreachable || got.Code != layers.ICMPv4CodePort || !got.Refused {
				t.Fatalf("the kernel's answer from an unused UDP port is not a port unreachable: %+v", got)
			}
			continue
		}
		if got != ref {
			t.Errorf("datagram to the SPA port is answered unlike an unused UDP port:\n  unused: %+v\n  spa:    %+v", ref, got)
		}
	}
}

// icmpFields is what the answer to a UDP datagram tells about the port.
// The IPv4 ID is left out: an ICMP error has DF clear and takes its ID from
// the kernel's per-destination counter, whoever makes it.
type icmpFields struct {
	TTL     uint8
	DF      bool
	TOS     uint8
	IPLen   uint16
	Type    uint8
	Code    uint8
	Quoted  int  // bytes of the datagram quoted back
	Refused bool // a connected socket read ECONNREFUSED
}

// udpReply sends payload in one datagram from a UDP socket bound to src and
// connected to dst (IPv4) in the client namespace, captures the ICMP error
// that comes back for it, then reads the socket for the error the kernel
// reports.
func udpReply(p *netns.Pair, src netip.Addr, dst netip.AddrPort, payload []byte) (icmpFields, error) {
	if !dst.Addr().Is4() {
		return icmpFields{}, fmt.Errorf("udpReply: IPv4 only, not %v", dst)
	}
	var (
		conn  *net.UDPConn
		sport uint16
	)
	pkt, err := exchange(p, func() error {
		c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		conn = c
		sport = c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		_, err = c.Write(payload)
		return err
	}, func(pkt gopacket.Packet) bool {
		icmp, ok := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if !ok || !replyFrom(pkt, dst.Addr()) {
			return false
		}
		s, d, ok := quotedUDPPorts(icmp.Payload)
		return ok && s == sport && d == dst.Port()
	})
	if conn != nil {
		defer conn.Close()
	}
	if err != nil {
		return icmpFields{}, fmt.Errorf("answer from %v to udp/%d: %w", dst, sport, err)
	}
	ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	f := icmpFields{
		TTL: ip.TTL, DF: ip.Flags&layers.IPv4DontFragment != 0, TOS: ip.TOS, IPLen: ip.Length,
		Type: icmp.TypeCode.Type(), Code: icmp.TypeCode.Code(), Quoted: len(icmp.Payload),
	}
	if err := conn.SetReadDeadline(time.Now().Add(udpErrTimeout)); err != nil {
		return f, err
	}
	_, err = conn.Read(make([]byte, 64))
	f.Refused = errors.Is(err, syscall.ECONNREFUSED)
	return f, nil
}

// quotedUDPPorts reads the ports of the IPv4 UDP datagram an ICMP error
// quotes.
func quotedUDPPorts(q []byte) (src, dst uint16, ok bool) {
	if len(q) < 20 || q[0]>>4 != 4 || q[9] != unix.IPPROTO_UDP {
		return 0, 0, false
	}
	ihl := int(q[0]&0x0f) * 4
	if ihl < 20 || len(q) < ihl+4 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(q[ihl:]), binary.BigEndian.Uint16(q[ihl+2:]), true
}

// TestSPARotatingSequence: with a 2s period, this period's sequence
// (`knockwall knock --method rotate`) opens, the previous period's still
// opens, and one two periods old does not.
func TestSPARotatingSequence(t *testing.T) { eachPath(t, testSPARotatingSequence) }

func testSPARotatingSequence(t *testing.T, b backend) {
	e := newSPAEnv(t, spaOptions{backend: b, rotate: true})
	src, remote := e.pair.Client4, e.server4(protectedPort)
	seq := func(idx int64) []uint16 {
		return spa.RotatingSequence(e.key, "ssh", idx, rotateLen, rotateLo, rotateHi, nil)
	}
	e.expectClosed(t, reject, src, remote)

	// Negative first: nothing is granted, so nothing must be waited out.
	t.Run("two periods old", func(t *testing.T) {
		idx := steadyPeriod(t)
		old := seq(idx - 2)
		if slices.Equal(old, seq(idx)) || slices.Equal(old, seq(idx-1)) {
			t.Fatalf("sequence of period %d equals a live one: %v", idx-2, old)
		}
		mark := e.d.mark()
		e.knock(t, e.pair.Server4, portArgs(old)...)
		e.expectStaysClosed(t, reject, src, remote)
		e.expectNoGrantSince(t, mark, fmt.Sprintf("sequence of period %d in period %d", idx-2, idx))
	})

	t.Run("current, knock --method rotate", func(t *testing.T) {
		idx := steadyPeriod(t)
		mark := e.d.mark()
		out, err := e.run(e.pair.Client, e.bin, "knock", e.pair.Server4.String(), "--service", "ssh", "-c", e.clientCfg, "--method", "rotate")
		if err != nil {
			t.Fatalf("knockwall knock --method rotate: %v", err)
		}
		t.Logf("knockwall knock: %s", bytes.TrimSpace(out))
		if want := "knocked " + e.pair.Server4.String() + ": " + knockList(seq(idx)); !strings.Contains(string(out), want) {
			t.Errorf("knock output %q does not show this period's (%d) sequence %q", out, idx, want)
		}
		if _, err := e.d.waitLogFrom(mark, "grant", map[string]string{"src": src.String(), "service": "ssh"}, logTimeout); err != nil {
			t.Errorf("grant log: %v", err)
		}
		e.expectOpen(t, src, remote)
		e.waitExpired(t, mark, src, remote)
	})

	t.Run("previous period", func(t *testing.T) {
		idx := steadyPeriod(t)
		prev := seq(idx - 1)
		if slices.Equal(prev, seq(idx)) {
			t.Fatalf("sequences of periods %d and %d are equal: %v", idx-1, idx, prev)
		}
		mark := e.d.mark()
		e.knock(t, e.pair.Server4, portArgs(prev)...)
		if _, err := e.d.waitLogFrom(mark, "grant", map[string]string{"src": src.String(), "service": "ssh"}, logTimeout); err != nil {
			t.Errorf("grant log: %v", err)
		}
		e.expectOpen(t, src, remote)
	})
}

// steadyPeriod returns the index of the current rotating period, first
// waiting for the next period if less than periodMargin of this one is
// left, so that what is sent now is judged in the period returned.
func steadyPeriod(t *testing.T) int64 {
	t.Helper()
	secs := int64(rotatePeriod / time.Second)
	for range 3 {
		now := time.Now()
		idx := spa.Period(now.Unix(), rotatePeriod)
		end := time.Unix((idx+1)*secs, 0)
		if left := end.Sub(now); left >= periodMargin {
			return idx
		}
		time.Sleep(time.Until(end) + 50*time.Millisecond)
	}
	t.Fatal("no steady rotating period after three tries")
	return 0
}

func portArgs(ports []uint16) []string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return s
}

// knockList is how `knockwall knock` prints TCP knocks: "p1/tcp p2/tcp".
func knockList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprintf("%d/tcp", p)
	}
	return strings.Join(s, " ")
}

// TestSPAKeyFileMode: a key file that others may read makes `knockwall
// run` refuse to start: exit status 2 at once, a message naming the file
// and the fix, and no rule left in the server namespace's firewall. With
// mode 0600 the same config starts.
func TestSPAKeyFileMode(t *testing.T) {
	bin := requireBinary(t)
	keyPath := filepath.Join(t.TempDir(), "loose.key")
	keygen(t, bin, keyPath)
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{svc: spaService(keyPath, spaOptions{}), noDaemon: true})
	before := e.knockwallRules(t)

	start := time.Now()
	out, err := e.run(e.pair.Server, bin, "run", "-c", e.cfgPath)
	took := time.Since(start)
	t.Logf("knockwall run with a 0644 key, after %v: %v\n%s", took.Round(time.Millisecond), err, out)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("exit: %v; want exit status 2", err)
	}
	for _, want := range []string{keyPath, "chmod 600"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("message does not contain %q:\n%s", want, out)
		}
	}
	if after := e.knockwallRules(t); !slices.Equal(after, before) || len(after) > 0 {
		t.Errorf("the refused start changed knockwall's rules:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}

	// Control: the refusal was the mode's doing.
	if err := os.Chmod(keyPath, 0o600); err != nil {
		t.Fatal(err)
	}
	e.d = startDaemon(t, e.pair.Server, bin, e.cfgPath)
}

// TestSPAKeygen: `knockwall keygen FILE` writes a readable key with mode
// 0600 even under umask 000, and never overwrites an existing file.
func TestSPAKeygen(t *testing.T) {
	bin := requireBinary(t)
	dir := t.TempDir()
	// Under umask 000 the mode is exactly what keygen asks for.
	keygenCmd := func(path string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		return exec.CommandContext(ctx, "sh", "-c", `umask 000 && exec "$0" keygen "$1"`, bin, path).CombinedOutput()
	}

	path := filepath.Join(dir, "fresh.key")
	out, err := keygenCmd(path)
	if err != nil {
		t.Fatalf("keygen: %v: %s", err, out)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want a regular file with -rw-------", path, st.Mode())
	}
	k, err := spa.ReadKeyFile(path)
	if err != nil {
		t.Fatalf("the written key does not read back: %v", err)
	}
	if !strings.Contains(string(out), fmt.Sprintf("id %d", k.ID)) {
		t.Errorf("keygen output does not name key id %d: %s", k.ID, out)
	}

	other := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(other, []byte("not a key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, other} {
		t.Run(filepath.Base(p), func(t *testing.T) {
			before, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			stBefore, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			out, err := keygenCmd(p)
			if err == nil {
				t.Errorf("keygen over an existing file succeeded: %s", out)
			} else if !strings.Contains(string(out), "already exists") {
				t.Errorf("keygen over an existing file: %v: %s; want it to say the file already exists", err, out)
			}
			after, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, before) {
				t.Errorf("%s was changed:\nbefore: %q\nafter:  %q", p, before, after)
			}
			if st, err := os.Stat(p); err != nil || st.Mode() != stBefore.Mode() {
				t.Errorf("%s mode changed: %v -> %v (%v)", p, stBefore.Mode(), st.Mode(), err)
			}
		})
	}
}
