package e2e

// A UDP port sweep never completes a sequence of UDP knocks: every new UDP
// flow from a source with knock progress reaches the daemon (on the fast
// path; every new UDP flow without it), and a datagram that is not the
// source's next knock resets its progress, as a wrong SYN does.

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// sweepBurst and sweepPause pace a sweep: sweepBurst datagrams, then
// sweepPause, so that the daemon's queue keeps up on a busy machine (a
// datagram the kernel drops from a full queue resets nothing; the test
// logs the queue's drops).
const (
	sweepBurst = 64
	sweepPause = time.Millisecond
)

// TestUDPSweepNeverOpens: one source sends a datagram to every UDP port,
// 1 to 65535, ascending against an ascending sequence of UDP knocks and
// descending against a descending one: the protected port stays closed.
// The real knocks from the same source then open it.
func TestUDPSweepNeverOpens(t *testing.T) { eachPath(t, testUDPSweepNeverOpens) }

func testUDPSweepNeverOpens(t *testing.T, b backend) {
	for _, tt := range []struct {
		name string
		seq  []string
		port func(i int) uint16
	}{
		{"ascending", []string{"7000/udp", "8000/udp", "9000/udp"}, func(i int) uint16 { return uint16(1 + i) }},
		{"descending", []string{"9000/udp", "8000/udp", "7000/udp"}, func(i int) uint16 { return uint16(65535 - i) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{backend: b, svc: service{sequence: tt.seq}})
			before := readCounters(t, e.pair.Server, e.d.cmd.Process.Pid)
			start := time.Now()
			err := e.pair.Client.Do(func() error {
				c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(e.pair.Client4, 0)))
				if err != nil {
					return err
				}
				defer c.Close()
				payload := []byte("sweep")
				for i := range 65535 {
					if _, err := c.WriteToUDPAddrPort(payload, e.server4(tt.port(i))); err != nil {
						return err
					}
					if i%sweepBurst == sweepBurst-1 {
						time.Sleep(sweepPause)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("sweep: %v", err)
			}
			after := readCounters(t, e.pair.Server, e.d.cmd.Process.Pid)
			t.Logf("%s sweep of 65535 UDP ports in %v; queued %d, queue_dropped %d, user_dropped %d", tt.name, time.Since(start),
				after.queued-before.queued, after.queueDropped-before.queueDropped, after.userDropped-before.userDropped)
			e.expectStaysClosed(t, reject, e.pair.Client4, e.server4(protectedPort))
			if e.d.has("grant", nil) {
				t.Fatalf("the sweep was granted")
			}

			e.knock(t, e.pair.Server4, tt.seq...)
			e.expectOpen(t, e.pair.Client4, e.server4(protectedPort)).Close()
		})
	}
}
