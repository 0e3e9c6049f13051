package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/kerneltest"
)

// Environment of the helper process of TestRefusedPeersHoldNoSlot.
const (
	holdSocketEnv = "KNOCKWALL_TEST_HOLD_SOCKET"
	holdConns     = 32
	// holdFor bounds the helper's life, whatever the test does.
	holdFor = 60 * time.Second
)

// TestRefusedPeersHoldNoSlot: 32 connections of a user that may not use
// the socket (uid 65534, a real process of that uid, so the kernel's
// SO_PEERCRED says so), kept open and reopened as the server closes
// them, do not keep root from being served: the peer is checked at
// accept, before a connection takes a slot. The refused user is answered
// 403.
func TestRefusedPeersHoldNoSlot(t *testing.T) {
	// Root, to run a process as another user; and the test binary must
	// run natively, which it does not under make unit-mips.
	kerneltest.Require(t)
	fake := &fakeDaemon{}
	var log lockedBuffer
	path := serveSocket(t, newTestServer(fake, &log))
	// Let the other user reach the socket, as a loose mode or a bind
	// mount would.
	for p, mode := range map[string]os.FileMode{filepath.Dir(filepath.Dir(path)): 0o711, filepath.Dir(path): 0o711, path: 0o666} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	// The test binary, where uid 65534 may run it.
	dir, err := os.MkdirTemp("", "kwgate-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "control.test")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyExecutable(t, self, bin)

	ctx, cancel := context.WithTimeout(context.Background(), holdFor)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestHelperHold$", "-test.v")
	cmd.Env = append(os.Environ(), holdSocketEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	waitLine := func(prefix string) string {
		t.Helper()
		for lines.Scan() {
			if l := lines.Text(); strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("the helper ended without saying %q: %v", prefix, lines.Err())
		return ""
	}
	waitLine("holding")

	c := NewClient(path)
	for i := range 20 {
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := c.Status(rctx)
		rcancel()
		if err != nil || st.Version != "1.2.3" {
			t.Fatalf("status %d as root while uid 65534 holds %d connections: %v", i, holdConns, err)
		}
	}

	// The refused user is told so (403), and root is still served after.
	waitLine("saw 403")
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("status as root after refusals: %v", err)
	}
	stdin.Close()
	l := waitLine("refused ")
	t.Logf("helper: %s", l)
	if err := cmd.Wait(); err != nil {
		t.Errorf("helper: %v", err)
	}
	if !strings.Contains(log.String(), `"uid":65534`) {
		t.Errorf("the refusal of uid 65534 is not logged:\n%s", log.String())
	}
	if len(fake.calls) != 0 {
		t.Errorf("a refused peer reached the daemon: %v", fake.calls)
	}
}

// TestHelperHold is the process of another user in
// TestRefusedPeersHoldNoSlot: it keeps holdConns connections open to the
// socket, each with a request started and never finished, reopening each
// as the server closes it, until its standard input closes. It says when
// it first reads a 403 and, at the end, how many it read.
func TestHelperHold(t *testing.T) {
	path := os.Getenv(holdSocketEnv)
	if path == "" {
		t.Skip("helper process of TestRefusedPeersHoldNoSlot")
	}
	var refused atomic.Int64
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	deadline := time.Now().Add(holdFor)
	hold := func(ready chan<- struct{}) {
		for first := true; time.Now().Before(deadline); first = false {
			c, err := net.Dial("unix", path)
			if err != nil {
				fmt.Fprintln(os.Stderr, "dial:", err)
				os.Exit(1)
			}
			c.Write([]byte("GET /v1/status HTTP/1.1\r\nHost: knockwall\r\n")) // and never the blank line
			if first {
				ready <- struct{}{}
			}
			done := make(chan struct{})
			go func() {
				select {
				case <-stop:
					c.Close()
				case <-done:
				}
			}()
			b, _ := io.ReadAll(c)
			close(done)
			c.Close()
			if strings.HasPrefix(string(b), "HTTP/1.1 403") && strings.Contains(string(b), "forbidden: uid 65534 may not use the control socket") {
				if refused.Add(1) == 1 {
					fmt.Println("saw 403")
				}
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}
	ready := make(chan struct{}, holdConns)
	finished := make(chan struct{}, holdConns)
	for range holdConns {
		go func() { hold(ready); finished <- struct{}{} }()
	}
	for range holdConns {
		<-ready
	}
	fmt.Println("holding")
	for range holdConns {
		<-finished
	}
	fmt.Println("refused", refused.Load())
}

// TestSlots: past maxConns connections of allowed peers, a connection is
// answered 503 (as an Error) at once; when one closes, the next is
// served.
func TestSlots(t *testing.T) {
	path := serveSocket(t, newTestServer(&fakeDaemon{}, io.Discard))
	var held []net.Conn
	for range maxConns {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// Each held connection is accepted when the server has seen it: a
	// request through a new connection is refused once all are.
	var resp *http.Response
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		resp, err = rawGet(path, PathStatus)
		if err == nil && resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 503 with %d connections held: %v %v", maxConns, resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("503 Content-Type %q", resp.Header.Get("Content-Type"))
	}
	held[0].Close()
	held = held[1:]
	deadline = time.Now().Add(10 * time.Second)
	for {
		resp, err := rawGet(path, PathStatus)
		if err == nil && resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not served after a slot was freed: %v %v", resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRequestLimits: a header over MaxHeader is refused 431; a client that
// connects and says nothing is cut off after the read timeout, and its
// slot is free again.
func TestRequestLimits(t *testing.T) {
	path := serveSocket(t, newTestServer(&fakeDaemon{}, io.Discard))
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: knockwall\r\nX-Big: %s\r\n\r\n", PathStatus, strings.Repeat("a", 2*MaxHeader))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("header of %d bytes: %v %v; want 431", 2*MaxHeader, resp, err)
	}

	silent, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	silent.SetReadDeadline(start.Add(readTimeout + 10*time.Second))
	if _, err := io.ReadAll(silent); err != nil {
		t.Fatalf("a silent client was not cut off: %v", err)
	}
	if d := time.Since(start); d < readTimeout/2 {
		t.Errorf("a silent client was cut off after %v, before the read timeout %v", d, readTimeout)
	}
}

// rawGet is a GET over a fresh connection to the socket at path.
func rawGet(path, target string) (*http.Response, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: knockwall\r\nConnection: close\r\n\r\n", target); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadAll(resp.Body); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return resp, nil
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
