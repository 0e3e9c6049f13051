package e2e

// Router mode: knockwall on a router guards a port forward (DNAT from the
// router's WAN address to a LAN host, or a forwarder in user space) and
// routed hosts (a LAN prefix the WAN side reaches through the router), in
// three namespaces: a WAN client (which also plays an internet server),
// the router, and a LAN host; a fourth for a second WAN link that no
// config names. The router's LAN interface is its one trusted interface.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/netns"
)

// Ports of the router tests.
const (
	fwdPort     = 22222 // on the router's WAN address, forwarded to the LAN host's 22
	fwdOpenPort = 28080 // forwarded to the LAN host's 8080, unprotected
	relayPort   = 22223 // forwarded to the LAN host's 22 by socat on the router: no DNAT
	markedPort  = 22224 // forwarded to the LAN host's 22 by a DNAT rule that asks for knockwall's accept mark
	lanSSH      = 22    // the LAN host's SSH: behind fwdPort, and lab6's routed port
	lanWeb      = 80    // lab4's routed port on the LAN host
	lanOpen     = 8080  // unprotected on the LAN host
	labSPAPort  = 62202
)

// routerEnv is an env whose pair is the router's WAN side (the client is
// the WAN client, the server the router), plus the LAN host.
type routerEnv struct {
	*env
	r   *netns.Router
	key string // lab6's SPA key file
}

func newRouterEnv(t *testing.T, b backend, openFor time.Duration, opts ...netns.RouterOptions) *routerEnv {
	t.Helper()
	bin := requireBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := netns.NewRouter(ctx, "kwr", opts...)
	if err != nil {
		t.Fatalf("router namespaces: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("delete namespaces: %v", err)
		}
	})
	// The operator's own rules: the port forwards and masquerading.
	for _, rule := range [][]string{
		{"-t", "nat", "-A", "PREROUTING", "-i", r.RtrWANIf, "-d", netns.RouterWAN4, "-p", "tcp", "--dport", fmt.Sprint(fwdPort), "-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", netns.LANHost4, lanSSH)},
		{"-t", "nat", "-A", "PREROUTING", "-i", r.RtrWANIf, "-d", netns.RouterWAN4, "-p", "tcp", "--dport", fmt.Sprint(fwdOpenPort), "-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", netns.LANHost4, lanOpen)},
		{"-t", "nat", "-A", "PREROUTING", "-i", r.RtrWANIf, "-d", netns.RouterWAN4, "-p", "tcp", "--dport", fmt.Sprint(markedPort), "-m", "mark", "--mark", "0x10000000/0x30000000", "-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", netns.LANHost4, lanSSH)},
		{"-t", "nat", "-A", "POSTROUTING", "-o", r.RtrWANIf, "-s", netns.LANPrefix4, "-j", "MASQUERADE"},
	} {
		if out, err := r.Rtr.Run(ctx, "iptables", append([]string{"-w"}, rule...)...); err != nil {
			t.Fatalf("iptables %v: %v %s", rule, err, out)
		}
	}
	for _, p := range []uint16{lanSSH, lanWeb, lanOpen} {
		echoServer(t, r.LAN, p)
	}
	// The "internet server" a LAN client reaches, on the very ports the
	// services protect.
	echoServer(t, r.WAN, fwdPort)
	echoServer(t, r.WAN, lanSSH)

	dir := t.TempDir()
	key := filepath.Join(dir, "lab6.key")
	keygen(t, bin, key)
	cfg := filepath.Join(dir, "knockwall.yaml")
	yaml := operate{}.yaml() + fmt.Sprintf(`firewall:
  manage: true
%s  trusted_interfaces: [%s]
log:
  level: info
  format: text
services:
  nas:
    forward: true
    ports: [%d, %d, %d]
    sequence: [7100, 7200, 7300]
    open_for: %s
    closed: reject
  lab6:
    forward: true
    hosts: [%s]
    ports: [%d]
    open_for: %s
    closed: reject
    spa:
      port: %d
      key_file: %q
  lab4:
    forward: true
    hosts: [%s]
    ports: [%d]
    sequence: [7400, 7500, 7600]
    open_for: %s
    closed: reject
  web:
    ports: [%d]
    sequence: [7700, 7800, 7900]
    closed: reject
`, b.yaml(), r.RtrLANIf, fwdPort, relayPort, markedPort, openFor, netns.LANPrefix6, lanSSH, openFor, labSPAPort, key, netns.LANPrefix4, lanWeb, openFor, lanWeb)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &env{bin: bin, backend: b, pair: r.WANPair(), cfgPath: cfg}
	e.d = startDaemon(t, r.Rtr, bin, cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("firewall in %s at failure:\n%s", r.Rtr, e.firewallDump())
		}
	})
	return &routerEnv{env: e, r: r, key: key}
}

func (re *routerEnv) router4(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(re.r.RouterWAN4, port)
}
func (re *routerEnv) lan4(port uint16) netip.AddrPort { return netip.AddrPortFrom(re.r.LANHost4, port) }
func (re *routerEnv) lan6(port uint16) netip.AddrPort { return netip.AddrPortFrom(re.r.LANHost6, port) }

// TestRouterClosed: before any knock, the forwarded port is refused with
// the router's own closed-port reset, and a routed host's protected port
// (IPv4 and IPv6) with that host's own closed-port reset as the client
// sees it, hop limit included.
func TestRouterClosed(t *testing.T) { eachBackend(t, testRouterClosed) }

func testRouterClosed(t *testing.T, b backend) {
	re := newRouterEnv(t, b, 30*time.Second)
	for _, c := range []struct {
		name            string
		src             netip.Addr
		closed, guarded netip.AddrPort
	}{
		{"port forward, like the router's closed port", re.r.WANClient4, re.router4(unusedPort), re.router4(fwdPort)},
		{"routed IPv6 host, like its closed port", re.r.WANClient6, re.lan6(unusedPort), re.lan6(lanSSH)},
		{"routed IPv4 host, like its closed port", re.r.WANClient4, re.lan4(unusedPort), re.lan4(lanWeb)},
	} {
		t.Run(c.name, func(t *testing.T) {
			ref, err := synReply(re.pair, c.src, c.closed, randUint32(t), nil)
			if err != nil {
				t.Fatalf("closed port %v: %v", c.closed, err)
			}
			got, err := synReply(re.pair, c.src, c.guarded, randUint32(t), nil)
			if err != nil {
				t.Fatalf("protected %v: %v", c.guarded, err)
			}
			t.Logf("closed %v: %+v", c.closed, ref)
			t.Logf("protected %v: %+v", c.guarded, got)
			if ref.Flags != "RST|ACK" {
				t.Fatalf("the closed port's answer is no reset: %+v", ref)
			}
			ref.FlowLabel, got.FlowLabel = min(ref.FlowLabel, 1), min(got.FlowLabel, 1)
			if got != ref {
				t.Errorf("answered unlike the closed port: %v", diffFields(ref, got))
			}
		})
	}
}

// TestRouterKnock: a knock at the router opens the port forward for the
// knocking source alone, end to end to the LAN host; an SPA token opens a
// routed IPv6 host, a sequence a routed IPv4 one. After open_for, new
// connects are refused while an open connection keeps flowing.
func TestRouterKnock(t *testing.T) { eachBackend(t, testRouterKnock) }

func testRouterKnock(t *testing.T, b backend) {
	const openFor = 3 * time.Second
	re := newRouterEnv(t, b, openFor)
	c4, other := re.r.WANClient4, re.r.WANClient24
	re.expectClosed(t, reject, c4, re.router4(fwdPort))

	re.knock(t, re.r.RouterWAN4, "7100", "8000") // a wrong knock: nothing
	re.knock(t, re.r.RouterWAN4, "7100", "7200", "7300")
	held := re.expectOpen(t, c4, re.router4(fwdPort))
	if err := echo(held, "through the port forward"); err != nil {
		t.Fatal(err)
	}
	re.expectClosed(t, reject, other, re.router4(fwdPort))
	re.expectClosed(t, reject, re.r.WANClient6, re.lan6(lanSSH)) // no lab6 grant yet

	// lab6 by SPA, from the client's IPv6 address to the router's.
	mark := re.d.mark()
	afterStartSecond()
	if out, err := re.run(re.pair.Client, re.bin, "knock", re.r.RouterWAN6.String(), "--service", "lab6", "--key-file", re.key, "--spa-port", fmt.Sprint(labSPAPort)); err != nil {
		t.Fatalf("knock lab6: %v %s", err, out)
	}
	if _, err := re.d.waitLogFrom(mark, "grant", map[string]string{"src": re.r.WANClient6.String(), "service": "lab6"}, logTimeout); err != nil {
		t.Fatal(err)
	}
	c := re.expectOpen(t, re.r.WANClient6, re.lan6(lanSSH))
	if err := echo(c, "routed v6"); err != nil {
		t.Error(err)
	}
	c.Close()
	re.expectClosed(t, reject, re.r.WANClient26, re.lan6(lanSSH))

	// The router's own web service shares lab4's port number: its grant
	// opens the router's port, never the routed host's.
	re.knock(t, re.r.RouterWAN4, "7700", "7800", "7900")
	time.Sleep(settle) // the fast path's element is written
	re.expectClosed(t, reject, c4, re.lan4(lanWeb))

	// lab4 by its sequence.
	re.knock(t, re.r.RouterWAN4, "7400", "7500", "7600")
	re.expectOpen(t, c4, re.lan4(lanWeb)).Close()
	re.expectClosed(t, reject, other, re.lan4(lanWeb))

	// Expiry.
	if _, err := re.d.waitLogFrom(mark, "expire", map[string]string{"src": c4.String(), "service": "nas"}, openFor+logTimeout); err != nil {
		t.Fatal(err)
	}
	re.expectClosed(t, reject, c4, re.router4(fwdPort))
	if err := echo(held, "after the grant ended"); err != nil {
		t.Errorf("the connection opened during the grant: %v", err)
	}
	held.Close()
}

// TestRouterFailClosed: with the daemon killed, the port forward and the
// routed hosts' protected ports stay closed, while an unprotected port
// forward and a routed host's unprotected port work.
func TestRouterFailClosed(t *testing.T) { eachBackend(t, testRouterFailClosed) }

func testRouterFailClosed(t *testing.T, b backend) {
	re := newRouterEnv(t, b, 30*time.Second)
	re.d.kill(t)
	re.knock(t, re.r.RouterWAN4, "7100", "7200", "7300") // nobody to judge it
	time.Sleep(settle)
	for _, dst := range []netip.AddrPort{re.router4(fwdPort), re.lan4(lanWeb)} {
		re.expectClosed(t, drop, re.r.WANClient4, dst)
	}
	re.expectClosed(t, drop, re.r.WANClient6, re.lan6(lanSSH))
	re.expectOpen(t, re.r.WANClient4, re.router4(fwdOpenPort)).Close()
	re.expectOpen(t, re.r.WANClient4, re.lan4(lanOpen)).Close()
	re.expectOpen(t, re.r.WANClient6, re.lan6(lanOpen)).Close()
}

// TestRouterLANOutbound: a LAN client reaching a server on the WAN side on
// the very port numbers the services protect is never diverted (the queue
// counter does not move) and works.
func TestRouterLANOutbound(t *testing.T) { eachBackend(t, testRouterLANOutbound) }

func testRouterLANOutbound(t *testing.T, b backend) {
	re := newRouterEnv(t, b, 30*time.Second)
	before := re.queued(t)
	for _, dst := range []netip.AddrPort{
		netip.AddrPortFrom(re.r.WANClient4, fwdPort), netip.AddrPortFrom(re.r.WANClient4, lanSSH),
		netip.AddrPortFrom(re.r.WANClient6, fwdPort), netip.AddrPortFrom(re.r.WANClient6, lanSSH),
	} {
		err := re.r.LAN.Do(func() error {
			c, err := net.DialTimeout("tcp", dst.String(), openWithin)
			if err != nil {
				return err
			}
			defer c.Close()
			return echo(c, "from the LAN")
		})
		if err != nil {
			t.Errorf("LAN -> %v: %v", dst, err)
		}
	}
	if n := re.queued(t) - before; n != 0 {
		t.Errorf("LAN traffic to the WAN side queued %d packets, want 0", n)
	}
}

// dialFrom connects from ns, as env.dial does from the client namespace.
func dialFrom(ns netns.NS, remote netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", remote.String(), timeout)
		return err
	})
	return c, err
}

// expectClosedFrom dials once from ns and requires mode's kind of failure.
func expectClosedFrom(t *testing.T, ns netns.NS, mode closedMode, remote netip.AddrPort) {
	t.Helper()
	c, err := dialFrom(ns, remote, dropTimeout)
	if err := closedErr(mode, c, err); err != nil {
		t.Errorf("%s -> %v: %v", ns, remote, err)
	}
}

// expectOpenFrom retries from ns for up to openWithin until a connection
// echoes.
func expectOpenFrom(t *testing.T, ns netns.NS, remote netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(openWithin)
	var last error
	for attempt := 0; attempt < 50 && time.Now().Before(deadline); attempt++ {
		c, err := dialFrom(ns, remote, attemptTimeout)
		if err == nil {
			err = echo(c, "hello from "+string(ns))
			c.Close()
			if err == nil {
				return
			}
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s -> %v not open within %v: %v", ns, remote, openWithin, last)
}

// TestRouterSecondWAN: every interface but the trusted LAN is protected,
// one that no config names included (a second WAN link, an LTE uplink, a
// PPPoE session): a SYN to the router's protected port arriving there is
// refused, over IPv4 and IPv6, by the daemon and, with the daemon killed,
// by the guard; a knock arriving there is seen. The LAN on its trusted
// interface reaches the same port, never diverted (the queue counter does
// not move), with the daemon running and without.
func TestRouterSecondWAN(t *testing.T) { eachBackend(t, testRouterSecondWAN) }

func testRouterSecondWAN(t *testing.T, b backend) {
	re := newRouterEnv(t, b, 30*time.Second, netns.RouterOptions{SecondWAN: true})
	// The router's own web service (the "web" service's port) and an
	// unprotected port.
	echoServer(t, re.r.Rtr, lanWeb)
	echoServer(t, re.r.Rtr, openPort)
	wan2 := re.r.WAN2
	web4 := netip.AddrPortFrom(netip.MustParseAddr(netns.RouterWAN24), lanWeb)
	web6 := netip.AddrPortFrom(netip.MustParseAddr(netns.RouterWAN26), lanWeb)
	lanWebAddr := netip.AddrPortFrom(netip.MustParseAddr(netns.RouterLAN4), lanWeb)

	before := re.queued(t)
	expectOpenFrom(t, re.r.LAN, lanWebAddr)
	if n := re.queued(t) - before; n != 0 {
		t.Errorf("the trusted LAN's SYNs to the router queued %d packets, want 0", n)
	}

	expectClosedFrom(t, wan2, reject, web4)
	expectClosedFrom(t, wan2, reject, web6)
	expectOpenFrom(t, wan2, netip.AddrPortFrom(netip.MustParseAddr(netns.RouterWAN24), openPort))

	// A knock on the second WAN opens the port for its source.
	mark := re.d.mark()
	if out, err := re.run(wan2, re.bin, "knock", netns.RouterWAN24, "7700", "7800", "7900"); err != nil {
		t.Fatalf("knock from the second WAN: %v %s", err, out)
	}
	if _, err := re.d.waitLogFrom(mark, "grant", map[string]string{"src": netns.WAN2Client4, "service": "web"}, logTimeout); err != nil {
		t.Fatal(err)
	}
	expectOpenFrom(t, wan2, web4)
	expectClosedFrom(t, wan2, reject, web6) // another source: no grant

	re.d.kill(t)
	expectClosedFrom(t, wan2, drop, web6)
	expectOpenFrom(t, re.r.LAN, lanWebAddr)
}

// TestRouterForwarderFailClosed: a port forward done in user space (socat
// on the router, no DNAT: the SYN arrives on the router's input) is
// guarded like a DNAT one: closed before the knock, open after it through
// the forwarder, and closed with the daemon killed.
func TestRouterForwarderFailClosed(t *testing.T) { eachBackend(t, testRouterForwarderFailClosed) }

func testRouterForwarderFailClosed(t *testing.T, b backend) {
	if _, err := exec.LookPath("socat"); err != nil {
		t.Fatalf("socat: %v (scripts/deps.sh installs it)", err)
	}
	re := newRouterEnv(t, b, 30*time.Second)
	relay := re.r.Rtr.Command("socat", fmt.Sprintf("TCP-LISTEN:%d,fork,reuseaddr", relayPort), fmt.Sprintf("TCP:%s:%d", netns.LANHost4, lanSSH))
	relay.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := relay.Start(); err != nil {
		t.Fatalf("socat: %v", err)
	}
	t.Cleanup(func() {
		relay.Process.Kill()
		relay.Wait()
	})
	// The forwarder works (from the router itself: lo is always trusted).
	expectOpenFrom(t, re.r.Rtr, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), relayPort))

	c4, other := re.r.WANClient4, re.r.WANClient24
	re.expectClosed(t, reject, c4, re.router4(relayPort))
	re.knock(t, re.r.RouterWAN4, "7100", "7200", "7300")
	held := re.expectOpen(t, c4, re.router4(relayPort))
	if err := echo(held, "through the forwarder"); err != nil {
		t.Fatal(err)
	}
	re.expectClosed(t, reject, other, re.router4(relayPort))

	re.d.kill(t)
	re.knock(t, re.r.RouterWAN4, "7100", "7200", "7300") // nobody to judge it
	time.Sleep(settle)
	re.expectClosed(t, drop, other, re.router4(relayPort))
	re.expectClosed(t, drop, other, re.router4(fwdPort))
	if err := echo(held, "after the daemon died"); err != nil {
		t.Errorf("the connection opened before the daemon died: %v", err)
	}
}

// TestRouterMarkedForward: a port forward whose DNAT rule asks for
// knockwall's accept mark (as docs/router.md says to write it) forwards a
// knocked source's connection, and with knockwall's rules gone (the daemon
// killed, `knockwall rules remove`) forwards nothing, while a plain DNAT
// port forward is then open to anyone.
func TestRouterMarkedForward(t *testing.T) { eachBackend(t, testRouterMarkedForward) }

func testRouterMarkedForward(t *testing.T, b backend) {
	re := newRouterEnv(t, b, 30*time.Second)
	c4, other := re.r.WANClient4, re.r.WANClient24
	re.expectClosed(t, reject, c4, re.router4(markedPort))
	re.knock(t, re.r.RouterWAN4, "7100", "7200", "7300")
	held := re.expectOpen(t, c4, re.router4(markedPort))
	if err := echo(held, "through the marked port forward"); err != nil {
		t.Fatal(err)
	}

	re.d.kill(t)
	re.rulesRemove(t)
	if got := re.knockwallRules(t); len(got) > 0 {
		t.Fatalf("knockwall's rules left: %q", got)
	}
	// No DNAT without the mark: the router's own closed port answers.
	re.expectClosed(t, reject, other, re.router4(markedPort))
	re.expectClosed(t, reject, c4, re.router4(markedPort))
	// What the mark test replaces: the plain port forward is open.
	re.expectOpen(t, other, re.router4(fwdPort)).Close()
}
