package e2e

// One-shot grants (services.NAME.connections): a SYN from the source port of
// the grant's last connection is that connection's retransmission only
// within tracker.SYNRetransmitWindow; after it, it is a new connection, and
// a grant with none left refuses it. Otherwise a second user behind a
// port-preserving NAT, or an on-path spoofer, could reuse the port for as
// many connections as they like until open_for ends.

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/tracker"
)

// TestOneShotSamePortAfterWindow: with connections: 1, the one connection
// from source port P connects; P again within the window still connects
// (a retransmission's due); P again after the window, and any other port,
// are refused.
func TestOneShotSamePortAfterWindow(t *testing.T) { eachPath(t, testOneShotSamePortAfterWindow) }

func testOneShotSamePortAfterWindow(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b, svc: service{openFor: time.Minute, extra: "    connections: 1\n"}})
	const port = 41234
	from := netip.AddrPortFrom(e.pair.Client4, port)
	remote := e.server4(protectedPort)
	e.knockGranted(t)

	first := time.Now()
	if err := e.connectFrom(from, remote); err != nil {
		t.Fatalf("the one connection: %v", err)
	}
	if err := e.connectFrom(from, remote); err != nil {
		t.Errorf("the same port within the retransmission window: %v; want connected", err)
	}
	if err := closedErr(reject, nil, e.connectFromErr(netip.AddrPortFrom(e.pair.Client4, port+1), remote)); err != nil {
		t.Errorf("another port: %v", err)
	}
	time.Sleep(time.Until(first.Add(tracker.SYNRetransmitWindow + time.Second)))
	if err := closedErr(reject, nil, e.connectFromErr(from, remote)); err != nil {
		t.Errorf("the same port after the window: %v", err)
	}
}

// connectFrom connects from local to remote, checks the echo and ends the
// connection with a reset, so that local's port is free again at once.
func (e *env) connectFrom(local, remote netip.AddrPort) error {
	var c net.Conn
	err := e.pair.Client.Do(func() (err error) {
		c, err = reusePortDialer(local).Dial("tcp", remote.String())
		return err
	})
	if err != nil {
		return err
	}
	defer func() {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}()
	return echo(c, "one shot")
}

// connectFromErr is connectFrom's dial error alone: nil when it connected.
func (e *env) connectFromErr(local, remote netip.AddrPort) error {
	var c net.Conn
	err := e.pair.Client.Do(func() (err error) {
		c, err = reusePortDialer(local).Dial("tcp", remote.String())
		return err
	})
	if err == nil {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		return errConnected
	}
	return err
}

var errConnected = syscall.EISCONN

// reusePortDialer dials from local with SO_REUSEADDR, so one test can use the
// same source port for several connections.
func reusePortDialer(local netip.AddrPort) *net.Dialer {
	return &net.Dialer{
		Timeout:   dropTimeout,
		LocalAddr: net.TCPAddrFromAddrPort(local),
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) }); err != nil {
				return err
			}
			return serr
		},
	}
}
