package e2e

// Drop-in for fwknop and knockd users: the stock fwknop client's packets
// open a service, and a knockd.conf imported with `knockwall config
// import-knockd` is opened by the stock knock client.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const fwknopPort = 62201

// fwknopKeys are keys `fwknop --key-gen` made.
type fwknopKeys struct{ enc, hmac, file string }

func fwknopKeygen(t *testing.T, dir, name string) fwknopKeys {
	t.Helper()
	out, err := exec.Command("fwknop", "--key-gen").Output()
	if err != nil {
		t.Fatalf("fwknop --key-gen: %v (scripts/deps.sh installs fwknop-client)", err)
	}
	var k fwknopKeys
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "KEY_BASE64: "); ok {
			k.enc = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "HMAC_KEY_BASE64: "); ok {
			k.hmac = strings.TrimSpace(v)
		}
	}
	if k.enc == "" || k.hmac == "" {
		t.Fatalf("fwknop --key-gen printed no keys:\n%s", out)
	}
	k.file = filepath.Join(dir, name)
	if err := os.WriteFile(k.file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// fwknopArgs are the client arguments for an access request to the
// protected port of server, with the keys k.
func fwknopArgs(k fwknopKeys, server netip.Addr, extra ...string) []string {
	args := []string{"--no-rc-file", "--no-save-args", "--use-hmac", "-A", fmt.Sprintf("tcp/%d", protectedPort), "-D", server.String(),
		"--key-base64-rijndael", k.enc, "--key-base64-hmac", k.hmac}
	return append(args, extra...)
}

// fwknopPacket has the client build a packet without sending it.
func fwknopPacket(t *testing.T, k fwknopKeys, server netip.Addr, extra ...string) []byte {
	t.Helper()
	f := filepath.Join(t.TempDir(), "spa.pkt")
	args := append(fwknopArgs(k, server, extra...), "--test", "-B", f)
	if out, err := exec.Command("fwknop", args...).CombinedOutput(); err != nil {
		t.Fatalf("fwknop --test: %v\n%s", err, out)
	}
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.TrimSpace(string(b)))
}

// TestFwknopClient: the real fwknop client opens the protected port over
// UDP and with -P tcpraw (a SYN to the fwknop port); a byte-identical
// replay, a packet under another HMAC key, a tampered one, one asking for
// another address and ones stamped outside max_age open nothing and are
// answered like a closed port; a client timeout shortens the grant. IPv4
// only: the stock client speaks no IPv6.
func TestFwknopClient(t *testing.T) { eachPath(t, testFwknopClient) }

func testFwknopClient(t *testing.T, b backend) {
	dir := t.TempDir()
	k := fwknopKeygen(t, dir, "fwknop.keys")
	other := fwknopKeygen(t, dir, "other.keys")
	e := newEnv(t, envOptions{backend: b, secondClient: true, svc: service{sequence: []string{}, closed: reject,
		extra: fmt.Sprintf("    fwknop:\n      port: %d\n      key_file: %q\n      max_age: 120s\n", fwknopPort, k.file)}})
	// Many closed-port answers go to the same clients here: the kernel's
	// ICMP rate limit would silence some of them, for the unused port and
	// the fwknop port alike.
	for _, kv := range []string{"net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"} {
		if out, err := e.run(e.pair.Server, "sysctl", "-qw", kv); err != nil {
			t.Fatalf("sysctl %s: %v %s", kv, err, out)
		}
	}
	afterStartSecond() // packets stamped in the daemon's first second are refused
	server, c1, c2 := e.pair.Server4, e.pair.Client4, e.pair.Client2v4
	remote := e.server4(protectedPort)
	client := func(t *testing.T, extra ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		if out, err := e.pair.Client.Run(ctx, "fwknop", fwknopArgs(k, server, extra...)...); err != nil {
			t.Fatalf("fwknop: %v\n%s", err, out)
		}
	}
	e.expectClosed(t, reject, c1, remote)

	t.Run("udp", func(t *testing.T) {
		mark := e.d.mark()
		client(t, "-a", c1.String())
		if _, err := e.d.waitLogFrom(mark, "grant", map[string]string{"src": c1.String(), "by": "fwknop"}, logTimeout); err != nil {
			t.Fatal(err)
		}
		e.expectOpen(t, c1, remote).Close()
		e.expectClosed(t, reject, c2, remote)
	})
	t.Run("tcpraw", func(t *testing.T) {
		// A raw SYN with the packet as payload (and, as the client
		// makes it, a TCP checksum of 0) to the fwknop port: from the
		// client namespace's address the kernel picks, c1's.
		mark := e.d.mark()
		client(t, "-P", "tcpraw", "-s", "--fw-timeout", "20")
		if _, err := e.d.waitLogFrom(mark, "grant", map[string]string{"src": c1.String(), "by": "fwknop"}, logTimeout); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("replay", func(t *testing.T) {
		pkt := fwknopPacket(t, k, server, "-s")
		mark := e.d.mark()
		expectUDPLikeClosedAt(t, e.pair, c1, server, fwknopPort, pkt) // accepted, for c1
		if _, err := e.d.waitLogFrom(mark, "grant", map[string]string{"src": c1.String(), "by": "fwknop"}, logTimeout); err != nil {
			t.Fatal(err)
		}
		mark = e.d.mark()
		expectUDPLikeClosedAt(t, e.pair, c2, server, fwknopPort, pkt) // the same bytes from c2
		time.Sleep(settle)
		if e.d.hasFrom(mark, "grant", map[string]string{"src": c2.String()}) {
			t.Error("a replayed packet granted")
		}
		e.expectClosed(t, reject, c2, remote)
	})
	for _, tt := range []struct {
		name string
		pkt  func(t *testing.T) []byte
	}{
		{"other hmac key", func(t *testing.T) []byte { return fwknopPacket(t, other, server, "-s") }},
		{"tampered", func(t *testing.T) []byte {
			p := fwknopPacket(t, k, server, "-s")
			p[30] ^= 0x01
			if p[30] < '+' || p[30] > 'z' {
				p[30] = 'A'
			}
			return p
		}},
		{"allow-ip of another address", func(t *testing.T) []byte { return fwknopPacket(t, k, server, "-a", "10.77.0.99") }},
		{"stamped 5 minutes ago", func(t *testing.T) []byte { return fwknopPacket(t, k, server, "-s", "--time-offset-minus", "300s") }},
		{"stamped 5 minutes ahead", func(t *testing.T) []byte { return fwknopPacket(t, k, server, "-s", "--time-offset-plus", "300s") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mark := e.d.mark()
			pkt := tt.pkt(t)
			expectUDPLikeClosedAt(t, e.pair, c2, server, fwknopPort, pkt)
			expectSYNLikeClosed(t, e.pair, c2, server, pkt)
			time.Sleep(settle)
			if e.d.hasFrom(mark, "grant", map[string]string{"src": c2.String()}) {
				t.Errorf("%s granted", tt.name)
			}
			e.expectClosed(t, reject, c2, remote)
		})
	}
	t.Run("client timeout", func(t *testing.T) {
		// open_for is 30s; the client asks for 2s: the grant ends then.
		pkt := fwknopPacket(t, k, server, "-s", "--fw-timeout", "2")
		mark := e.d.mark()
		expectUDPLikeClosedAt(t, e.pair, c2, server, fwknopPort, pkt)
		if _, err := e.d.waitLogFrom(mark, "grant", map[string]string{"src": c2.String(), "by": "fwknop"}, logTimeout); err != nil {
			t.Fatal(err)
		}
		e.expectOpen(t, c2, remote).Close()
		if _, err := e.d.waitLogFrom(mark, "expire", map[string]string{"src": c2.String()}, 2*time.Second+logTimeout); err != nil {
			t.Errorf("the grant did not end at the client's timeout: %v", err)
		}
		e.expectClosed(t, reject, c2, remote)
	})
}

// TestKnockdImport: Debian's default knockd.conf, imported with `knockwall
// config import-knockd`, is a config `config check` accepts and the daemon
// runs, and the stock knock client opens its port 22 with its sequence.
func TestKnockdImport(t *testing.T) { eachPath(t, testKnockdImport) }

func testKnockdImport(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b, noDaemon: true})
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	yaml, err := exec.CommandContext(ctx, e.bin, "config", "import-knockd", "../internal/knockdconf/testdata/debian-knockd.conf").Output()
	if err != nil {
		t.Fatalf("import-knockd: %v", err)
	}
	cfg := filepath.Join(t.TempDir(), "imported.yaml")
	if err := os.WriteFile(cfg, yaml, 0o600); err != nil {
		t.Fatal(err)
	}
	// No control socket, state file or metrics: not the host's.
	env := []string{"KNOCKWALL_FIREWALL_BACKEND=" + b.firewall, fmt.Sprintf("KNOCKWALL_FIREWALL_FAST_PATH=%t", b.fastPath),
		"KNOCKWALL_CONTROL_SOCKET=", "KNOCKWALL_STATE_FILE=", "KNOCKWALL_METRICS_LISTEN="}
	check := exec.CommandContext(ctx, e.bin, "config", "check", "-c", cfg)
	check.Env = append(os.Environ(), env...)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("config check of the imported config: %v\n%s", err, out)
	}
	echoServer(t, e.pair.Server, 22)
	e.d = startDaemonAt(t, e.pair.Server, e.bin, cfg, "debug", env...)
	ssh := netip.AddrPortFrom(e.pair.Server4, 22)
	e.expectClosed(t, reject, e.pair.Client4, ssh)
	if out, err := e.run(e.pair.Client, "knock", "-d", "10", e.pair.Server4.String(), "7000", "8000", "9000"); err != nil {
		t.Fatalf("knock: %v %s", err, out)
	}
	e.expectOpen(t, e.pair.Client4, ssh).Close()
}
