package e2e

import (
	"net"
	"strconv"
	"testing"
	"time"
)

// TestLoopbackExempt: the host's own connections to a protected port over
// loopback are neither judged nor guarded, while a network client is still
// refused; and the same holds with the daemon killed (the guard exempts lo).
func TestLoopbackExempt(t *testing.T) { eachBackend(t, testLoopbackExempt) }

func testLoopbackExempt(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b, svc: service{closed: reject}})
	local := func() error {
		return e.pair.Server.Do(func() error {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(protectedPort), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	if err := local(); err != nil {
		t.Fatalf("loopback connect to the protected port: %v", err)
	}
	e.expectClosed(t, reject, e.pair.Client4, e.server4(protectedPort))
	e.d.kill(t)
	if err := local(); err != nil {
		t.Fatalf("loopback connect with the daemon killed: %v", err)
	}
	e.expectClosed(t, drop, e.pair.Client4, e.server4(protectedPort))
}
