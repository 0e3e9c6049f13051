package netns

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/kerneltest"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	kerneltest.Require(t)
	if err := Check(); err != nil {
		t.Skipf("skipping: creating network namespaces needs root and iproute2: %v", err)
	}
}

func newPair(t *testing.T, cfg Config) *Pair {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := NewPair(ctx, cfg)
	if err != nil {
		t.Fatalf("NewPair: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// echoListener listens on addr inside ns and echoes every connection.
func echoListener(t *testing.T, ns NS, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.Copy(c, c)
			}()
		}
	}()
	return ln
}

func dialIn(ns NS, local netip.Addr, remote netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: timeout}
		if local.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
		}
		var err error
		c, err = d.Dial("tcp", remote.String())
		return err
	})
	return c, err
}

// retransmits is how many segments the kernel sent again on c so far.
func retransmits(t *testing.T, c net.Conn) uint32 {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	if err := raw.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("TCP_INFO: %v", err)
	}
	return info.Total_retrans
}

func TestPairConnect(t *testing.T) {
	requireRoot(t)
	p := newPair(t, Config{SecondClient: true})
	echoListener(t, p.Server, ":2222")

	tests := []struct {
		name   string
		local  netip.Addr
		remote netip.Addr
	}{
		{name: "ipv4", remote: p.Server4},
		{name: "ipv6", remote: p.Server6},
		{name: "ipv4 second client", local: p.Client2v4, remote: p.Server4},
		{name: "ipv6 second client", local: p.Client2v6, remote: p.Server6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dialIn(p.Client, tt.local, netip.AddrPortFrom(tt.remote, 2222), 2*time.Second)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			// The first SYN is answered: a pair whose addresses or
			// neighbours are not ready yet (IPv6 duplicate address
			// detection, a lost neighbour solicitation) loses it, and the
			// kernel counts the SYN it sends again.
			if n := retransmits(t, c); n != 0 {
				t.Errorf("connect retransmitted %d segments, want the first SYN answered", n)
			}
			if tt.local.IsValid() {
				got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
				if got != tt.local {
					t.Errorf("local address = %v, want %v", got, tt.local)
				}
			}
			c.SetDeadline(time.Now().Add(2 * time.Second))
			msg := []byte("hello " + tt.name)
			if _, err := c.Write(msg); err != nil {
				t.Fatalf("write: %v", err)
			}
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(buf, msg) {
				t.Errorf("echo = %q, want %q", buf, msg)
			}
		})
	}
}

// TestPairIsolated checks that the namespaces are really separate: the
// client has no route to the server's port from the root namespace side,
// and a port open in the server is closed in the client.
func TestPairIsolated(t *testing.T) {
	requireRoot(t)
	p := newPair(t, Config{})
	echoListener(t, p.Server, "127.0.0.1:2223")

	// 127.0.0.1:2223 is the server's loopback; the client's loopback has
	// nothing there.
	_, err := dialIn(p.Client, netip.Addr{}, netip.MustParseAddrPort("127.0.0.1:2223"), time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial client loopback: err = %v, want connection refused", err)
	}
	c, err := dialIn(p.Server, netip.Addr{}, netip.MustParseAddrPort("127.0.0.1:2223"), time.Second)
	if err != nil {
		t.Fatalf("dial server loopback: %v", err)
	}
	c.Close()
}

func TestDoRestoresNamespace(t *testing.T) {
	requireRoot(t)
	p := newPair(t, Config{})
	before, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	err = p.Server.Do(func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if inside == before {
		t.Errorf("inside Do the namespace is still %s", inside)
	}
	// Many calls: every thread must come back to the original namespace.
	for range 50 {
		var got string
		if err := p.Client.Do(func() error { return nil }); err != nil {
			t.Fatalf("Do: %v", err)
		}
		got, err = os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		if got != before {
			t.Fatalf("after Do the namespace is %s, want %s", got, before)
		}
	}

	wantErr := errors.New("boom")
	if err := p.Client.Do(func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Errorf("Do error = %v, want %v", err, wantErr)
	}
	if err := NS("kw-does-not-exist").Do(func() error { return nil }); err == nil {
		t.Error("Do in a missing namespace: want error")
	}
}

func TestRunAndCommand(t *testing.T) {
	requireRoot(t)
	p := newPair(t, Config{SecondClient: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name string
		ns   NS
		want []string
		not  []string
	}{
		{name: "server", ns: p.Server, want: []string{p.ServerIf, "10.77.0.1/24", "fd00:77::1/64"}, not: []string{"10.77.0.2"}},
		{name: "client", ns: p.Client, want: []string{p.ClientIf, "10.77.0.2/24", "10.77.0.3/24", "fd00:77::2/64", "fd00:77::3/64"}, not: []string{"10.77.0.1/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.ns.Run(ctx, "ip", "addr", "show")
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("ip addr in %s lacks %q:\n%s", tt.ns, w, out)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(string(out), n) {
					t.Errorf("ip addr in %s has %q:\n%s", tt.ns, n, out)
				}
			}
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, "fd00:77:") && strings.Contains(line, "tentative") {
					t.Errorf("tentative (DAD) address in %s: %s", tt.ns, line)
				}
			}
		})
	}

	if _, err := p.Server.Run(ctx, "false"); err == nil {
		t.Error("Run false: want error")
	}

	// A long-running process, signalled by its own PID.
	cmd := p.Server.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal: %v", err)
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Errorf("wait = %v, want killed by SIGTERM (ip netns exec must exec in place)", err)
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("process did not exit on SIGTERM")
	}
}

func TestCloseRemovesNamespaces(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := NewPair(ctx, Config{})
	if err != nil {
		t.Fatalf("NewPair: %v", err)
	}
	t.Cleanup(func() { p.Close() }) // in case a check below fails first

	for _, n := range []NS{p.Server, p.Client} {
		if _, err := os.Stat(n.Path()); err != nil {
			t.Errorf("namespace %s missing after NewPair: %v", n, err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, n := range []NS{p.Server, p.Client} {
		if _, err := os.Stat(n.Path()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still there after Close (stat: %v)", n, err)
		}
		if strings.Contains(string(out), string(n)) {
			t.Errorf("ip netns list still shows %s:\n%s", n, out)
		}
	}
	// The veth went with the namespaces; nothing leaked into the root.
	links, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, links)
	}
	if strings.Contains(string(links), p.ID) {
		t.Errorf("interface of %s left in the root namespace:\n%s", p.ID, links)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestNewPairNames(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		prefix  string
		wantErr bool
	}{
		{name: "default", prefix: ""},
		{name: "custom", prefix: "kwt"},
		{name: "too long", prefix: "kwtoolongprefix", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			p, err := NewPair(ctx, Config{Prefix: tt.prefix})
			if tt.wantErr {
				if err == nil {
					p.Close()
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatalf("NewPair: %v", err)
			}
			t.Cleanup(func() { p.Close() })
			want := tt.prefix
			if want == "" {
				want = DefaultPrefix
			}
			if !strings.HasPrefix(p.ID, want) || len(p.ID) != len(want)+6 {
				t.Errorf("ID = %q, want %q + 6 hex digits", p.ID, want)
			}
			if len(p.ServerIf) > maxIfName || len(p.ClientIf) > maxIfName {
				t.Errorf("interface names too long: %q %q", p.ServerIf, p.ClientIf)
			}
		})
	}
}

func TestSolicitedNode(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"fd00:77::1", "ff02::1:ff00:1"},
		{"fd00:77::3", "ff02::1:ff00:3"},
		{"fe80::80cd:a8ff:fe71:a74d", "ff02::1:ff71:a74d"},
		{"2001:db8::1234:5678", "ff02::1:ff34:5678"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := solicitedNode(netip.MustParseAddr(tt.addr)).String(); got != tt.want {
				t.Errorf("solicitedNode(%s) = %s, want %s", tt.addr, got, tt.want)
			}
		})
	}
}

// TestRouter: the router topology forwards: each WAN client, the second
// WAN's too, reaches the LAN host's routed addresses, over IPv4 and IPv6.
func TestRouter(t *testing.T) {
	kerneltest.Require(t)
	if err := Check(); err != nil {
		t.Skipf("skipping: %v (CI runs as root)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := NewRouter(ctx, "kwtr", RouterOptions{SecondWAN: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	var ln net.Listener
	if err := r.LAN.Do(func() (err error) { ln, err = net.Listen("tcp", ":7777"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for _, wan := range []NS{r.WAN, r.WAN2} {
		for _, dst := range []string{LANHost4, LANHost6} {
			err := wan.Do(func() error {
				c, err := net.DialTimeout("tcp", net.JoinHostPort(dst, "7777"), 2*time.Second)
				if err == nil {
					c.Close()
				}
				return err
			})
			if err != nil {
				t.Errorf("connect to %s from %s: %v", dst, wan, err)
			}
		}
	}
}
