package nfq

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/kerneltest"
	"github.com/knockwall/knockwall/internal/netns"
	"golang.org/x/sys/unix"
)

// The queue against the real kernel: a pair of namespaces of its own, an
// NFQUEUE rule in the server namespace, real TCP connects from the client.

const testQueue = 5

// dstPort reads an IPv4 TCP packet's destination port.
func dstPort(pkt []byte) uint16 {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return 0
	}
	ihl := int(pkt[0]&0xf) * 4
	if len(pkt) < ihl+4 {
		return 0
	}
	return binary.BigEndian.Uint16(pkt[ihl+2:])
}

func kernelPair(t *testing.T) *netns.Pair {
	t.Helper()
	kerneltest.Require(t)
	if err := netns.Check(); err != nil {
		t.Skipf("needs root and iproute2: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := netns.NewPair(ctx, netns.Config{Prefix: "kq"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close namespaces: %v", err)
		}
	})
	return p
}

func nsRun(t *testing.T, ns netns.NS, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := ns.Run(ctx, name, args...)
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// listen accepts and closes connections on port inside ns until the test ends.
func listen(t *testing.T, ns netns.NS, port int) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func dial(p *netns.Pair, port int, timeout time.Duration) error {
	return p.Client.Do(func() error {
		c, err := net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", p.Server4, port), timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// queueList reads the server namespace's kernel queue list.
func queueList(t *testing.T, ns netns.NS) []byte {
	t.Helper()
	var b []byte
	if err := ns.Do(func() (err error) { b, err = os.ReadFile(threadProcFile); return err }); err != nil {
		t.Fatal(err)
	}
	return b
}

// listed reports whether the server namespace's kernel lists the queue.
func listed(t *testing.T, ns netns.NS) bool { return queueListed(queueList(t, ns), testQueue) }

// waiting is how many packets the kernel holds for a verdict.
func waiting(t *testing.T, ns netns.NS) int {
	t.Helper()
	b := queueList(t, ns)
	if !queueListed(b, testQueue) {
		t.Fatal("queue not listed")
	}
	st, err := parseKernelStats(b, testQueue, 1)
	if err != nil {
		t.Fatal(err)
	}
	return int(st.Waiting)
}

// markCount is the packet counter of the server's rule that counts SYNs
// carrying mark.
func markCount(t *testing.T, ns netns.NS, mark string) string {
	t.Helper()
	out := nsRun(t, ns, "iptables", "-w", "-t", "filter", "-L", "INPUT", "-v", "-x", "-n")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "mark match "+mark) {
			return strings.Fields(l)[0]
		}
	}
	t.Fatalf("no rule counting mark %s in\n%s", mark, out)
	return ""
}

// connectAll starts a non-blocking connect to each port from the client
// namespace at once, so the SYNs reach the queue together, and returns each
// connect's outcome (nil: connected) once all have one.
func connectAll(t *testing.T, p *netns.Pair, ports []int, started func()) []error {
	t.Helper()
	errs := make([]error, len(ports))
	err := p.Client.Do(func() error {
		fds := make([]int, len(ports))
		for i, port := range ports {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			fds[i] = fd
			sa := &unix.SockaddrInet4{Port: port, Addr: p.Server4.As4()}
			if err := unix.Connect(fd, sa); err != unix.EINPROGRESS {
				return fmt.Errorf("connect %d: %v", port, err)
			}
		}
		started()
		deadline := time.Now().Add(5 * time.Second)
		for i, fd := range fds {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			for {
				n, err := unix.Poll(pfd, int(time.Until(deadline).Milliseconds()))
				if err == unix.EINTR {
					continue
				}
				if err != nil || n == 0 {
					return fmt.Errorf("connect %d: no outcome (%v)", ports[i], err)
				}
				break
			}
			if e, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil {
				return err
			} else if e != 0 {
				errs[i] = unix.Errno(e)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return errs
}

// TestRealQueue: bind, verdicts (accept, accept with a mark, drop), batch
// verdicts with and without a mark, a second binder told apart from a
// missing privilege, and a stop that unbinds the queue.
func TestRealQueue(t *testing.T) {
	p := kernelPair(t)
	listen(t, p.Server, 4000)
	listen(t, p.Server, 4002)
	var holding atomic.Bool
	release := make(chan struct{})
	h := func(pkt []byte, mark uint32) Answer {
		if holding.CompareAndSwap(true, false) {
			<-release
		}
		switch dstPort(pkt) {
		case 4000:
			return Answer{Accept: true, SetMark: true, Mark: mark | 0x1, Sole: true}
		case 4002:
			return Answer{Accept: true}
		case 4003:
			return Answer{Accept: true, SetMark: true, Mark: mark | 0x2}
		}
		return Answer{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var q *Queue
	cfg := Config{Num: testQueue, MaxLen: 64, CopyRange: 128, ReadBuffer: 1 << 20}
	if err := p.Server.Do(func() (err error) { q, err = Open(ctx, cfg, h, quiet()); return err }); err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	// No --queue-bypass: with no queue bound, the SYN is dropped, so a
	// connect that works is one this queue answered.
	nsRun(t, p.Server, "iptables", "-w", "-t", "mangle", "-A", "INPUT", "-p", "tcp", "--syn", "-j", "NFQUEUE", "--queue-num", fmt.Sprint(testQueue))
	nsRun(t, p.Server, "iptables", "-w", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--syn", "-m", "mark", "--mark", "0x1")

	nsRun(t, p.Server, "iptables", "-w", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--syn", "-m", "mark", "--mark", "0x2")

	if err := dial(p, 4000, time.Second); err != nil {
		t.Fatalf("accepted with a mark: %v", err)
	}
	if n := markCount(t, p.Server, "0x1"); n != "1" {
		t.Errorf("%s SYNs carried mark 0x1, want 1", n)
	}
	if err := dial(p, 4002, time.Second); err != nil {
		t.Fatalf("accepted: %v", err)
	}
	if n := markCount(t, p.Server, "0x1"); n != "1" {
		t.Errorf("%s SYNs carried mark 0x1 after an unmarked accept, want 1", n)
	}
	var ne net.Error
	if err := dial(p, 4001, 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("dropped SYN: connect gave %v, want a timeout", err)
	}
	// The timeout was the drop verdict, not a packet left waiting.
	if n := waiting(t, p.Server); n != 0 {
		t.Errorf("%d packets still wait for a verdict", n)
	}

	// Batches, on the kernel: the handler holds the first SYN of a burst
	// until the rest wait in the queue, so the loop then finds them queued
	// and answers runs with batch verdicts: 16 SYNs marked 0x2 (their port
	// is closed: refused), 16 accepted unmarked (connected).
	holding.Store(true)
	batches := q.Counters.Batches.Load()
	var ports []int
	for range 16 {
		ports = append(ports, 4003)
	}
	for range 16 {
		ports = append(ports, 4002)
	}
	errs := connectAll(t, p, ports, func() {
		for deadline := time.Now().Add(5 * time.Second); waiting(t, p.Server) < len(ports) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		close(release)
	})
	for i, err := range errs {
		if want := ports[i] == 4002; (err == nil) != want {
			t.Errorf("burst connect %d to %d: %v", i, ports[i], err)
		}
	}
	if n := markCount(t, p.Server, "0x2"); n != "16" {
		t.Errorf("%s SYNs carried mark 0x2, want 16", n)
	}
	if n := markCount(t, p.Server, "0x1"); n != "1" {
		t.Errorf("%s SYNs carried mark 0x1 after the burst, want still 1", n)
	}
	if got := q.Counters.Batches.Load() - batches; got < 2 {
		t.Errorf("%d batch verdicts for the burst, want at least 2", got)
	}
	if n := waiting(t, p.Server); n != 0 {
		t.Errorf("%d packets still wait for a verdict after the burst", n)
	}
	if got := q.Counters.Packets.Load(); got < 3 {
		t.Errorf("%d packets counted, want at least 3", got)
	}

	// The queue is ours: a second binder hears so.
	err := p.Server.Do(func() error {
		q2, err := Open(ctx, cfg, h, quiet())
		if err == nil {
			q2.Close()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "another process holds this queue") {
		t.Errorf("second bind: %v, want it told the queue is held", err)
	}

	// Stopping (ctx, not Close) unbinds: the socket is closed by the loop.
	if !listed(t, p.Server) {
		t.Fatal("the kernel does not list the bound queue")
	}
	cancel()
	deadline := time.Now().Add(2 * wakeEvery)
	for listed(t, p.Server) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if listed(t, p.Server) {
		t.Fatalf("queue still bound %v after ctx ended", 2*wakeEvery)
	}
	if _, ok := <-q.Fatal(); ok {
		t.Error("Fatal reported an error on a clean stop")
	}
}
