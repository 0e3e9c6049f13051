package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRejectMode: before the knock the protected port answers like a closed
// port, after it the port is open, and once open_for lapses new connections
// are refused again while one opened during the grant keeps working.
func TestRejectMode(t *testing.T) { eachBackend(t, testRejectMode) }

func testRejectMode(t *testing.T, b backend) {
	const openFor = 3 * time.Second
	e := newEnv(t, envOptions{backend: b, svc: service{closed: reject, openFor: openFor}})
	src := e.pair.Client4.String()

	e.expectClosed(t, reject, netip.Addr{}, e.server4(protectedPort))

	e.knock(t, e.pair.Server4, defaultSequence...)
	if _, err := e.d.waitLog("grant", map[string]string{"src": src, "service": "ssh"}, logTimeout); err != nil {
		t.Errorf("grant log: %v", err)
	}
	// The grant started no later than now, so it ends by now+openFor.
	grantSeen := time.Now()
	held := e.expectOpen(t, netip.Addr{}, e.server4(protectedPort))

	time.Sleep(time.Until(grantSeen.Add(openFor + time.Second)))
	e.expectClosed(t, reject, netip.Addr{}, e.server4(protectedPort))
	if err := echo(held, "still flowing after the grant expired"); err != nil {
		t.Errorf("connection opened during the grant, used after expiry: %v", err)
	}
	if _, err := e.d.waitLog("expire", map[string]string{"src": src, "service": "ssh"}, logTimeout); err != nil {
		t.Errorf("expire log: %v", err)
	}
}

// TestDropMode: with closed: drop the port times out before the knock
// (no RST) and opens after it.
func TestDropMode(t *testing.T) { eachBackend(t, testDropMode) }

func testDropMode(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b, svc: service{closed: drop}})
	e.expectClosed(t, drop, netip.Addr{}, e.server4(protectedPort))
	e.knock(t, e.pair.Server4, defaultSequence...)
	e.expectOpen(t, netip.Addr{}, e.server4(protectedPort))
}

// TestWrongOrder: the right ports in the wrong order open nothing; the
// right order afterwards still works (so the check above was meaningful).
func TestWrongOrder(t *testing.T) { eachPath(t, testWrongOrder) }

func testWrongOrder(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b})
	e.knock(t, e.pair.Server4, "8000", "7000", "9000/udp")
	e.expectStaysClosed(t, reject, netip.Addr{}, e.server4(protectedPort))
	if e.d.has("grant", nil) {
		t.Errorf("daemon logged a grant for a wrong-order knock")
	}

	e.knock(t, e.pair.Server4, defaultSequence...)
	e.expectOpen(t, netip.Addr{}, e.server4(protectedPort))
}

// scanStats counts what an ascending connect scan saw.
type scanStats struct {
	refused, timedOut, connected, other int
	took                                time.Duration
	notes                               []string // what connected or failed oddly
}

func (s scanStats) String() string {
	return fmt.Sprintf("refused %d, timed out %d, connected %d, other errors %d, in %v %q",
		s.refused, s.timedOut, s.connected, s.other, s.took.Round(time.Millisecond), s.notes)
}

// connectScan connects to first..last of host from the client namespace,
// one port at a time in ascending order: each connect ends (answered or
// timed out) before the next SYN leaves, so the daemon sees the ports in
// strictly ascending order.
func (e *env) connectScan(t *testing.T, host netip.Addr, first, last uint16) scanStats {
	t.Helper()
	const (
		perPort = 50 * time.Millisecond
		budget  = 30 * time.Second
	)
	var s scanStats
	start := time.Now()
	err := e.pair.Client.Do(func() error {
		d := net.Dialer{Timeout: perPort}
		for port := first; port <= last; port++ {
			if time.Since(start) > budget {
				return fmt.Errorf("scan over budget %v at port %d", budget, port)
			}
			c, err := d.Dial("tcp", netip.AddrPortFrom(host, port).String())
			var ne net.Error
			switch {
			case err == nil:
				s.connected++
				s.notes = append(s.notes, fmt.Sprintf("connected %v -> %v", c.LocalAddr(), c.RemoteAddr()))
				c.Close()
			case errors.Is(err, syscall.ECONNREFUSED):
				s.refused++
			case errors.As(err, &ne) && ne.Timeout():
				s.timedOut++
			default:
				s.other++
				s.notes = append(s.notes, err.Error())
			}
		}
		return nil
	})
	s.took = time.Since(start)
	if err != nil {
		t.Fatalf("scan: %v (%v)", err, s)
	}
	return s
}

// TestAscendingScan: with an all-TCP ascending sequence, a SYN scan of the
// ports around it in ascending order must not open the protected port.
func TestAscendingScan(t *testing.T) { eachPath(t, testAscendingScan) }

func testAscendingScan(t *testing.T, b backend) {
	seq := []string{"7000", "8000", "9000"}
	e := newEnv(t, envOptions{backend: b, svc: service{sequence: seq}})

	s := e.connectScan(t, e.pair.Server4, 6990, 9010)
	t.Logf("connect scan 6990-9010: %v", s)
	if s.connected != 0 {
		t.Errorf("scan connected to %d ports; none listens in 6990-9010", s.connected)
	}
	e.expectStaysClosed(t, reject, netip.Addr{}, e.server4(protectedPort))

	t.Run("nmap", func(t *testing.T) {
		if _, err := exec.LookPath("nmap"); err != nil {
			t.Skip("skipping: nmap not installed")
		}
		// -r: ports in order, not shuffled. --max-retries 0: a
		// retransmission would break the strict ascending order.
		out, err := e.run(e.pair.Client, "nmap", "-n", "-Pn", "-sS", "-r", "--max-retries", "0",
			"-p", "6990-9010", e.pair.Server4.String())
		if err != nil {
			t.Fatalf("nmap: %v", err)
		}
		if !strings.Contains(string(out), "Nmap done") {
			t.Errorf("nmap did not finish:\n%s", out)
		}
		e.expectStaysClosed(t, reject, netip.Addr{}, e.server4(protectedPort))
	})

	if e.d.has("grant", nil) {
		t.Errorf("daemon logged a grant during a port scan")
	}
	// Control: the real sequence still opens.
	e.knock(t, e.pair.Server4, seq...)
	e.expectOpen(t, netip.Addr{}, e.server4(protectedPort))
}

// TestSecondSource: a grant is for the knocking source only.
func TestSecondSource(t *testing.T) { eachPath(t, testSecondSource) }

func testSecondSource(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b, secondClient: true})
	first, second := e.pair.Client4, e.pair.Client2v4

	e.knock(t, e.pair.Server4, defaultSequence...) // from the primary address, first
	if _, err := e.d.waitLog("grant", map[string]string{"src": first.String()}, logTimeout); err != nil {
		t.Errorf("grant log: %v", err)
	}
	e.expectOpen(t, first, e.server4(protectedPort))
	e.expectClosed(t, reject, second, e.server4(protectedPort))
	// The client's IPv6 address is another source, too.
	e.expectClosed(t, reject, e.pair.Client6, e.server6(protectedPort))
	// And the first still is in.
	e.expectOpen(t, first, e.server4(protectedPort))
}

// TestKnockClients: each knock client opens the port.
func TestKnockClients(t *testing.T) { eachPath(t, testKnockClients) }

func testKnockClients(t *testing.T, b backend) {
	tests := []struct {
		name string
		need string // a binary that must be installed
		args func(e *env) (string, []string)
	}{
		{
			name: "knockd knock",
			need: "knock",
			args: func(e *env) (string, []string) {
				return "knock", []string{e.pair.Server4.String(), "7000", "8000", "9000:udp"}
			},
		},
		{
			name: "knockwall knock --service",
			args: func(e *env) (string, []string) {
				return e.bin, []string{"knock", e.pair.Server4.String(), "--service", "ssh", "-c", e.cfgPath}
			},
		},
		{
			name: "knockwall knock --delay",
			args: func(e *env) (string, []string) {
				return e.bin, []string{"knock", e.pair.Server4.String(), "7000", "8000/tcp", "9000/udp", "--delay", "50ms"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.need != "" {
				if _, err := exec.LookPath(tt.need); err != nil {
					t.Fatalf("%s not installed (apt-get install knockd): %v", tt.need, err)
				}
			}
			e := newEnv(t, envOptions{backend: b})
			e.expectClosed(t, reject, netip.Addr{}, e.server4(protectedPort))
			name, args := tt.args(e)
			if _, err := e.run(e.pair.Client, name, args...); err != nil {
				t.Fatalf("knock: %v", err)
			}
			e.expectOpen(t, netip.Addr{}, e.server4(protectedPort))
		})
	}
}

// TestFailClosed: with the daemon SIGKILLed its rules stay, protected
// ports stay closed and every other port keeps working.
func TestFailClosed(t *testing.T) { eachBackend(t, testFailClosed) }

func testFailClosed(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b})
	e.expectOpen(t, netip.Addr{}, e.server4(openPort))
	e.expectClosed(t, reject, netip.Addr{}, e.server4(protectedPort))

	e.d.kill(t)
	if len(e.knockwallRules(t)) == 0 {
		t.Fatalf("no knockwall rule after SIGKILL; the test needs them in place")
	}

	tests := []struct {
		name   string
		remote netip.AddrPort
	}{
		{name: "ipv4", remote: e.server4(protectedPort)},
		{name: "ipv6", remote: e.server6(protectedPort)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			c, err := e.dial(netip.Addr{}, tt.remote, dropTimeout)
			if err == nil {
				c.Close()
				t.Fatalf("connected to protected %v with the daemon dead", tt.remote)
			}
			t.Logf("protected %v with the daemon dead: %v after %v", tt.remote, err, time.Since(start).Round(time.Millisecond))
		})
	}
	// A knock cannot open it either: nobody is there to judge it.
	e.knock(t, e.pair.Server4, defaultSequence...)
	time.Sleep(settle)
	if c, err := e.dial(netip.Addr{}, e.server4(protectedPort), dropTimeout); err == nil {
		c.Close()
		t.Errorf("knock opened the protected port with the daemon dead")
	}
	e.expectOpen(t, netip.Addr{}, e.server4(openPort))
	e.expectOpen(t, netip.Addr{}, e.server6(openPort))
}

// TestIPv6: closed before the knock, open after it, over IPv6.
func TestIPv6(t *testing.T) { eachBackend(t, testIPv6) }

func testIPv6(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b})
	e.expectClosed(t, reject, netip.Addr{}, e.server6(protectedPort))
	e.knock(t, e.pair.Server6, defaultSequence...)
	if _, err := e.d.waitLog("grant", map[string]string{"src": e.pair.Client6.String()}, logTimeout); err != nil {
		t.Errorf("grant log: %v", err)
	}
	e.expectOpen(t, netip.Addr{}, e.server6(protectedPort))
	// The IPv6 grant does not open IPv4 for the same host.
	e.expectClosed(t, reject, netip.Addr{}, e.server4(protectedPort))
}
