package e2e

// Spoofed grants cannot lock the owner out: a plain sequence travels in
// clear and its knocks need no handshake, so whoever has seen it completes
// it from as many forged sources as they like. Those grants take at most
// their service's room in the grant table (services.NAME.plain_grants, by
// default half of tracker.max_grants); SPA, fwknop, rotating-sequence and
// operator grants keep the rest; and a plain grant whose source opens no
// connection within first_connect_within ends then.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/loadgen"
	"github.com/knockwall/knockwall/rules"
)

const (
	lockoutSpoofed      = 100 // spoofed sources completing the plain sequence
	lockoutMaxGrants    = 40
	lockoutFirstConnect = 2 * time.Second
)

// TestSpoofedGrantsDoNotLockOut: 100 spoofed sources complete the plain
// sequence with max_grants 40. They get the plain room (20 grants) and no
// more; the owner's SPA knock and an operator's `knockwall grant` still
// open the port; once first_connect_within has passed without a connection
// from them, their grants are gone and a real client's plain knock opens.
func TestSpoofedGrantsDoNotLockOut(t *testing.T) { eachPath(t, testSpoofedGrantsDoNotLockOut) }

func testSpoofedGrantsDoNotLockOut(t *testing.T, b backend) {
	bin := requireBinary(t)
	pair, gen := newFloodPair(t)
	dir := t.TempDir()
	serverKey := filepath.Join(dir, "server.key")
	keygen(t, bin, serverKey)
	content, err := os.ReadFile(serverKey)
	if err != nil {
		t.Fatal(err)
	}
	clientKey := filepath.Join(dir, "client.key")
	if err := os.WriteFile(clientKey, content, 0o600); err != nil {
		t.Fatal(err)
	}
	svc := service{sequence: defaultSequence, openFor: time.Minute, closed: reject,
		extra: fmt.Sprintf("    first_connect_within: %s\n", lockoutFirstConnect) + spaYAML(serverKey, spaOptions{})}
	e := &env{bin: bin, backend: b, pair: pair, cfgPath: filepath.Join(dir, "knockwall.yaml"), svc: svc, ops: newOperate(t, dir)}
	e.ops.metrics, e.ops.tokenFile = "", ""
	cfg := strings.Replace(configYAML(svc, b, e.ops), "max_grants: 1024", fmt.Sprintf("max_grants: %d", lockoutMaxGrants), 1)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	echoServer(t, pair.Server, protectedPort)
	e.d = startDaemonAt(t, pair.Server, bin, e.cfgPath, "info")
	afterStartSecond()

	// The spoofed sources' knocks, each source's three in order, sources
	// one after the other.
	var script []loadgen.Packet
	for i := range lockoutSpoofed {
		src := netip.AddrFrom4([4]byte{10, 78, byte(i / 200), byte(1 + i%200)})
		for j, s := range defaultSequence {
			k, err := rules.ParseKnock(s)
			if err != nil {
				t.Fatal(err)
			}
			kind := loadgen.SYN
			if k.Proto == rules.ProtoUDP {
				kind = loadgen.UDP
			}
			script = append(script, loadgen.Packet{Kind: kind, Src: src, Sport: uint16(20000 + 3*i + j), Dport: k.Port})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), floodMaxTime)
	defer cancel()
	start := time.Now()
	if n, err := gen.Send(ctx, pair.Server4, script, 0); err != nil {
		t.Fatalf("spoofed knocks: %d of %d sent: %v", n, len(script), err)
	}
	// Every spoofed sequence has been judged once the table holds all the
	// grants it will: wait for the count to stop growing.
	held := e.waitGrantCount(t, lockoutMaxGrants/2)
	t.Logf("%d spoofed sources completed the sequence; %d plain grants held (%v after the first knock)", lockoutSpoofed, held, time.Since(start))
	if held != lockoutMaxGrants/2 {
		t.Errorf("%d spoofed plain grants held, want the plain room's %d", held, lockoutMaxGrants/2)
	}

	// The owner's SPA knock opens the port.
	mark := e.d.mark()
	e.knock(t, pair.Server4, "--service", "ssh", "-c", writeClientConfig(t, dir, "client.yaml", clientKey, false))
	if _, err := e.d.waitLogFrom(mark, "grant", spaGrant(pair.Client4), logTimeout); err != nil {
		t.Errorf("the owner's SPA knock: %v", err)
	}
	e.expectOpen(t, pair.Client4, e.server4(protectedPort)).Close()

	// An operator's grant opens it to another source.
	out := e.ctlOK(t, "grant", pair.Client2v4.String(), "ssh", "--for", "1m", "--socket", e.ops.socket)
	if !strings.Contains(out, "granted ssh to "+pair.Client2v4.String()) {
		t.Errorf("knockwall grant printed %q", out)
	}
	e.expectOpen(t, pair.Client2v4, e.server4(protectedPort)).Close()

	// The spoofed sources never connect: first_connect_within after their
	// grants, they are gone, and a real client's plain knock opens.
	time.Sleep(time.Until(start.Add(lockoutFirstConnect + 500*time.Millisecond)))
	e.knock(t, pair.Server6, defaultSequence...)
	e.expectOpen(t, pair.Client6, e.server6(protectedPort)).Close()
	if n := e.countGrants(t, "sequence"); n != 1 {
		t.Errorf("%d plain grants after first_connect_within, want the real client's one", n)
	}
}

// countGrants counts the live grants made by how ("sequence", "spa", ...).
func (e *env) countGrants(t *testing.T, how string) int {
	t.Helper()
	n := 0
	for _, g := range e.grants(t) {
		if g.How == how {
			n++
		}
	}
	return n
}

// waitGrantCount waits until the daemon holds at least want sequence grants
// and the count has not moved for a while, and returns it.
func (e *env) waitGrantCount(t *testing.T, want int) int {
	t.Helper()
	deadline := time.Now().Add(openWithin)
	last, since := -1, time.Now()
	for time.Now().Before(deadline) {
		n := e.countGrants(t, "sequence")
		if n != last {
			last, since = n, time.Now()
		}
		if n >= want && time.Since(since) >= 300*time.Millisecond {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return last
}
