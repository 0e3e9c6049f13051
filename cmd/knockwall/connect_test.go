package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told: Sleep moves it at once.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.advance(d)
	return nil
}

// fakeDialer answers attempts from a script, moving the clock by what
// each attempt takes: a refusal comes back after 1ms, a dropped SYN
// after the attempt's whole timeout.
type fakeDialer struct {
	clock    *fakeClock
	outcomes []string // per attempt: "refused", "drop" or "ok"; the last repeats
	timeouts []time.Duration
}

func (f *fakeDialer) dial(_ context.Context, _ string, timeout time.Duration) (net.Conn, error) {
	f.timeouts = append(f.timeouts, timeout)
	o := f.outcomes[min(len(f.timeouts), len(f.outcomes))-1]
	switch o {
	case "refused":
		f.clock.advance(time.Millisecond)
		return nil, syscall.ECONNREFUSED
	case "drop":
		f.clock.advance(timeout)
		return nil, errors.New("i/o timeout")
	}
	c, _ := net.Pipe()
	return c, nil
}

// TestRetryBound: connect tries again until the grant takes effect, and
// never past --wait: each attempt is bounded by the time left, and the
// last error is returned once wait has passed.
func TestRetryBound(t *testing.T) {
	const (
		wait    = 10 * time.Second
		attempt = 2 * time.Second
		pause   = 100 * time.Millisecond
	)
	tests := []struct {
		name     string
		outcomes []string
		ok       bool
		attempts int
	}{
		{"open at once", []string{"ok"}, true, 1},
		{"open on the third", []string{"refused", "refused", "ok"}, true, 3},
		{"a dropped SYN, then open", []string{"drop", "ok"}, true, 2},
		// 1ms refusals and 100ms pauses: the 100th attempt starts at
		// 9.999s and ends at the bound.
		{"refused throughout", []string{"refused"}, false, 100},
		// 2s+0.1s per attempt: 4 whole ones (8.4s), then one of 1.6s.
		{"dropped throughout", []string{"drop"}, false, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{now: time.Unix(1e9, 0)}
			f := &fakeDialer{clock: clk, outcomes: tt.outcomes}
			d := retryDialer{dial: f.dial, clock: clk, wait: wait, attempt: attempt, pause: pause}
			start := clk.Now()
			c, n, err := d.connect(context.Background(), "10.77.0.1:22")
			if (err == nil) != tt.ok || n != tt.attempts || (c != nil) != tt.ok {
				t.Fatalf("conn %v, %d attempts, %v; want ok=%t after %d", c, n, err, tt.ok, tt.attempts)
			}
			if c != nil {
				c.Close()
			}
			if took := clk.Now().Sub(start); took > wait {
				t.Errorf("took %s, past the bound of %s", took, wait)
			}
			if !tt.ok && err == nil {
				t.Error("no error after giving up")
			}
			for i, to := range f.timeouts {
				if to <= 0 || to > attempt {
					t.Errorf("attempt %d had timeout %s", i+1, to)
				}
			}
			if tt.name == "dropped throughout" && f.timeouts[len(f.timeouts)-1] != 1600*time.Millisecond {
				t.Errorf("the last attempt's timeout %s is not the time left (1.6s)", f.timeouts[len(f.timeouts)-1])
			}
		})
	}
	// A cancelled context ends the retries at once.
	clk := &fakeClock{now: time.Unix(1e9, 0)}
	f := &fakeDialer{clock: clk, outcomes: []string{"refused"}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, n, err := (retryDialer{dial: f.dial, clock: clk, wait: wait, attempt: attempt, pause: pause}).connect(ctx, "x:1"); !errors.Is(err, context.Canceled) || n != 1 {
		t.Errorf("cancelled: %d attempts, %v", n, err)
	}
}

// pipeCloser is standard output as a pipe, whose Close ends the reader.
type pipeCloser struct{ *io.PipeWriter }

// TestRelayHalfClose: over real loopback TCP, the end of standard input
// reaches the server as a half-close while the server's answer still
// comes back whole, and the server's close ends standard output.
func TestRelayHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The server reads to EOF (the client's half-close), then answers
	// with everything it read, and closes.
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		c.Write([]byte("got "))
		c.Write(b)
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	pr, pw := io.Pipe()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(pr)
		got <- b
	}()
	done := make(chan error, 1)
	go func() { done <- relay(conn, bytes.NewReader(payload), pipeCloser{pw}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end after both sides closed")
	}
	b := <-got
	if !bytes.Equal(b, append([]byte("got "), payload...)) {
		t.Fatalf("stdout got %d bytes, want %d", len(b), 4+len(payload))
	}
}

// TestConnectExitStatus: connect says which step failed, by exit status
// and message: a bad client config (2) and no connection within --wait
// (4: nothing listens on 127.0.0.1 at the port).
func TestConnectExitStatus(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := newClientConfigFile(t, filepath.Join(t.TempDir(), "c"), goodClientConfig)
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no server", []string{"connect", "elsewhere", "22", "-c", cfg}, exitConfig, "names no server elsewhere"},
		{"bad port", []string{"connect", "lab", "x", "-c", cfg}, exitConfig, `PORT "x"`},
		{"refused throughout", []string{"connect", "lab", strconv.Itoa(closedPort), "-c", cfg, "--wait", "300ms"}, exitConnect, "connect failed: no connection to 127.0.0.1:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, nil, tt.args...)
			if code != tt.code || out != "" || !strings.Contains(errOut, tt.want) {
				t.Fatalf("exit %d (want %d), stdout %q, stderr %q (want %q)", code, tt.code, out, errOut, tt.want)
			}
		})
	}
}
