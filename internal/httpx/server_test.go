package httpx

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// echo answers what it was asked.
func echo(_ context.Context, r *Request) Response {
	return Response{Status: 200, ContentType: "text/x-echo", Body: fmt.Appendf(nil, "%s %s %s body=%q", r.Method, r.Path, r.Query.Encode(), r.Body)}
}

// serve runs a server of cfg on a loopback TCP listener (network "tcp")
// or a unix socket ("unix") until the test ends, and returns it with its
// address.
func serve(t *testing.T, cfg Config, network string) (*Server, string) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Handler == nil {
		cfg.Handler = echo
	}
	s := NewServer(cfg)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, ln.Addr().String()
}

// raw sends b on a new connection to addr and returns all that comes
// back until the server closes.
func raw(t *testing.T, network, addr string, b string) string {
	t.Helper()
	r := rawErr(network, addr, b)
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.out
}

// rawResult is what rawErr got back.
type rawResult struct {
	out string
	err error
}

// rawErr is raw for a goroutine other than the test's, which must not
// call t.Fatal: it returns the error.
func rawErr(network, addr string, b string) rawResult {
	c, err := net.Dial(network, addr)
	if err != nil {
		return rawResult{err: err}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, b); err != nil {
		return rawResult{err: err}
	}
	out, err := io.ReadAll(c)
	if err != nil {
		return rawResult{out: string(out), err: fmt.Errorf("read: %v (after %q)", err, out)}
	}
	return rawResult{out: string(out)}
}

// TestNetHTTPClient: Go's own client (keep-alives on, as Prometheus's is)
// gets every answer whole, sees each connection closed, and its chunked
// bodies are refused with 411.
func TestNetHTTPClient(t *testing.T) {
	_, addr := serve(t, Config{Limits: Limits{MaxBodyBytes: 64}}, "tcp")
	base := "http://" + addr
	hc := &http.Client{Timeout: 10 * time.Second}
	do := func(req *http.Request) (*http.Response, string) {
		t.Helper()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	for i := range 3 { // one transport, one request per connection
		req, _ := http.NewRequest("GET", base+"/metrics?n="+fmt.Sprint(i), nil)
		resp, body := do(req)
		if resp.StatusCode != 200 || body != fmt.Sprintf(`GET /metrics n=%d body=""`, i) || !resp.Close ||
			resp.Header.Get("Content-Type") != "text/x-echo" || resp.ContentLength != int64(len(body)) || resp.Header.Get("Date") == "" {
			t.Errorf("GET: %s %q close=%t %v", resp.Status, body, resp.Close, resp.Header)
		}
	}
	req, _ := http.NewRequest("POST", base+"/v1/grants", strings.NewReader(`{"src":"10.0.0.1"}`))
	if resp, body := do(req); resp.StatusCode != 200 || body != `POST /v1/grants  body="{\"src\":\"10.0.0.1\"}"` {
		t.Errorf("POST: %s %q", resp.Status, body)
	}
	req, _ = http.NewRequest("DELETE", base+"/v1/grants?src=10.0.0.1&service=ssh", nil)
	if resp, body := do(req); resp.StatusCode != 200 || body != `DELETE /v1/grants service=ssh&src=10.0.0.1 body=""` {
		t.Errorf("DELETE: %s %q", resp.Status, body)
	}
	req, _ = http.NewRequest("HEAD", base+"/metrics", nil)
	if resp, body := do(req); resp.StatusCode != 200 || body != "" || resp.ContentLength != int64(len(`HEAD /metrics  body=""`)) {
		t.Errorf("HEAD: %s %q length %d", resp.Status, body, resp.ContentLength)
	}
	// A body of unknown length goes chunked.
	req, _ = http.NewRequest("POST", base+"/", io.MultiReader(strings.NewReader("x")))
	if resp, body := do(req); resp.StatusCode != 411 || !strings.Contains(body, "Content-Length") {
		t.Errorf("chunked POST: %s %q", resp.Status, body)
	}
	req, _ = http.NewRequest("POST", base+"/", bytes.NewReader(make([]byte, 100_000)))
	if resp, body := do(req); resp.StatusCode != 413 || !strings.Contains(body, "over the limit of 64") {
		t.Errorf("large POST: %s %q", resp.Status, body)
	}
}

// TestUnixSocket: over a unix socket, as `curl --unix-socket` asks, the
// handler gets the connection (for its peer's credentials).
func TestUnixSocket(t *testing.T) {
	var conn atomic.Value
	_, path := serve(t, Config{Handler: func(ctx context.Context, r *Request) Response {
		conn.Store(fmt.Sprintf("%T", r.Conn))
		return echo(ctx, r)
	}}, "unix")
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	resp, err := hc.Get("http://knockwall/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `GET /v1/status  body=""` {
		t.Errorf("%s %q", resp.Status, body)
	}
	if conn.Load() != "*net.UnixConn" {
		t.Errorf("the handler's conn is %v", conn.Load())
	}
}

// TestRefusedOnTheWire: what a malformed request gets back, whole, before
// the close.
func TestRefusedOnTheWire(t *testing.T) {
	_, addr := serve(t, Config{Limits: Limits{MaxHeaderBytes: 512, MaxBodyBytes: 16}, ErrorResponse: func(status int, msg string) Response {
		return Response{Status: status, ContentType: "application/json", Body: fmt.Appendf(nil, "{%q:%q}", "error", msg)}
	}}, "tcp")
	tests := []struct {
		name, req  string
		wantStatus string
	}{
		{"not HTTP", "hello\r\n\r\n", "400 Bad Request"},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", "400 Bad Request"},
		{"HTTP/2", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", "505 HTTP Version Not Supported"},
		{"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", "411 Length Required"},
		{"a large body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("x", 100000), "413 Content Too Large"},
		{"a large head", "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("x", 1000) + "\r\n\r\n", "431 Request Header Fields Too Large"},
		{"Expect", "GET / HTTP/1.1\r\nHost: x\r\nExpect: x\r\n\r\n", "417 Expectation Failed"},
		{"a body cut short", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab", ""}, // the client half-closes: see below
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out string
			if tt.wantStatus == "" {
				out = halfClose(t, addr, tt.req)
				tt.wantStatus = "400 Bad Request"
			} else {
				out = raw(t, "tcp", addr, tt.req)
			}
			if !strings.HasPrefix(out, "HTTP/1.1 "+tt.wantStatus+"\r\n") || !strings.Contains(out, "\r\nConnection: close\r\n") ||
				!strings.Contains(out, "\r\nContent-Type: application/json\r\n") || !strings.Contains(out, "\r\n\r\n{\"error\":\""+tt.wantStatus[4:]) {
				t.Errorf("got %q", out)
			}
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
			if err != nil {
				t.Fatalf("net/http cannot read the answer: %v", err)
			}
			if b, err := io.ReadAll(resp.Body); err != nil || int64(len(b)) != resp.ContentLength {
				t.Errorf("body %q (%v), Content-Length %d", b, err, resp.ContentLength)
			}
		})
	}
}

// halfClose sends req, ends the sending side and reads the answer.
func halfClose(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, req)
	c.(*net.TCPConn).CloseWrite()
	out, _ := io.ReadAll(c)
	return string(out)
}

// TestSlowloris: a client that trickles its request is answered 408 when
// ReadTimeout ends, whatever the pace; one that sends nothing is closed.
func TestSlowloris(t *testing.T) {
	const timeout = 300 * time.Millisecond
	_, addr := serve(t, Config{ReadTimeout: timeout}, "tcp")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	stop := make(chan struct{})
	go func() {
		req := "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Slow: 1\r\n", 100)
		for i := range len(req) {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := c.Write([]byte{req[i]}); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	out, _ := io.ReadAll(c)
	close(stop)
	took := time.Since(start)
	if !strings.HasPrefix(string(out), "HTTP/1.1 408 Request Timeout\r\n") {
		t.Errorf("got %q", out)
	}
	// The server's clock starts at its accept, a little before this one.
	if took < timeout-50*time.Millisecond || took > timeout+2*time.Second {
		t.Errorf("cut off after %v; ReadTimeout is %v", took, timeout)
	}

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start = time.Now()
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if out, err := io.ReadAll(silent); err != nil || len(out) != 0 || time.Since(start) < timeout-50*time.Millisecond {
		t.Errorf("a silent client: %q, %v after %v", out, err, time.Since(start))
	}
}

// TestExpectContinue: a client that waits for 100 (Continue) gets it,
// then its answer.
func TestExpectContinue(t *testing.T) {
	_, addr := serve(t, Config{}, "tcp")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if end, _ := br.ReadString('\n'); err != nil || line != "HTTP/1.1 100 Continue\r\n" || end != "\r\n" {
		t.Fatalf("got %q %q, %v; want the 100", line, end, err)
	}
	io.WriteString(c, "ok")
	resp, err := ReadResponse(br, 0, 0)
	if err != nil || resp.Status != 200 || string(resp.Body) != `POST /x  body="ok"` {
		t.Errorf("got %+v, %v", resp, err)
	}
}

// TestTooManyConns: a connection over MaxConns is answered 503 at once;
// once one closes, the next is served.
func TestTooManyConns(t *testing.T) {
	_, addr := serve(t, Config{MaxConns: 1}, "tcp")
	hold, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	// The held connection has sent a byte, so it is served, not queued.
	io.WriteString(hold, "G")
	time.Sleep(50 * time.Millisecond)
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "too many connections") {
		t.Errorf("over MaxConns: %s %q", resp.Status, body)
	}
	hold.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not served once the held connection closed: %v %v", resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTooManyHandlers: a request while MaxHandlers handlers run is
// answered 503.
func TestTooManyHandlers(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	_, addr := serve(t, Config{MaxConns: 4, MaxHandlers: 1, Handler: func(ctx context.Context, r *Request) Response {
		if r.Path == "/block" {
			entered <- struct{}{}
			<-release
		}
		return echo(ctx, r)
	}}, "tcp")
	first := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/block")
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-entered
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "too many requests") {
		t.Errorf("over MaxHandlers: %s %q", resp.Status, body)
	}
	close(release)
	if code := <-first; code != 200 {
		t.Errorf("the first request: %d", code)
	}
}

// TestShutdown: Shutdown stops accepting, closes a connection that sent
// nothing, waits for a request under way, and returns once it is
// answered; Serve then returns nil.
func TestShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	entered, release := make(chan struct{}), make(chan struct{})
	s := NewServer(Config{Handler: func(ctx context.Context, r *Request) Response {
		close(entered)
		<-release
		return echo(ctx, r)
	}})
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	answer := make(chan rawResult, 1)
	go func() { answer <- rawErr("tcp", addr, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n") }()
	<-entered

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("an idle connection at Shutdown: %d, %v; want it closed", n, err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request under way", err)
	case <-time.After(100 * time.Millisecond):
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("a connection was accepted during Shutdown")
	}
	close(release)
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if a := <-answer; a.err != nil {
		t.Errorf("the request under way: %v", a.err)
	} else if !strings.HasPrefix(a.out, "HTTP/1.1 200 OK\r\n") {
		t.Errorf("the request under way got %q", a.out)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if err := s.Serve(ln); err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}

// TestShutdownGivesUp: a handler that outlasts Shutdown's context has its
// own context cancelled and its connection closed; Shutdown says why.
func TestShutdownGivesUp(t *testing.T) {
	entered := make(chan struct{})
	cancelled := make(chan struct{})
	s, addr := serve(t, Config{Handler: func(ctx context.Context, r *Request) Response {
		close(entered)
		<-ctx.Done()
		close(cancelled)
		return echo(ctx, r)
	}}, "tcp")
	answer := make(chan rawResult, 1)
	go func() { answer <- rawErr("tcp", addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") }()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v; want context.DeadlineExceeded", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context was not cancelled")
	}
	if a := <-answer; a.err != nil {
		t.Errorf("the abandoned request: %v", a.err)
	} else if a.out != "" {
		t.Errorf("the abandoned request got %q; want the connection closed", a.out)
	}
}

// TestHandlerPanic: a panic is logged and answered 500; the server goes
// on. So is an answer without a status.
func TestHandlerPanic(t *testing.T) {
	var log bytes.Buffer
	var logMu = make(chan struct{}, 1)
	logMu <- struct{}{}
	_, addr := serve(t, Config{
		Log: slog.New(slog.NewTextHandler(lockedWriter{&log, logMu}, nil)),
		Handler: func(ctx context.Context, r *Request) Response {
			if r.Path == "/panic" {
				panic("boom")
			}
			if r.Path == "/zero" {
				return Response{}
			}
			return echo(ctx, r)
		}}, "tcp")
	if out := raw(t, "tcp", addr, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 500 Internal Server Error\r\n") {
		t.Errorf("got %q", out)
	}
	if out := raw(t, "tcp", addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200 OK\r\n") {
		t.Errorf("after a panic: %q", out)
	}
	if out := raw(t, "tcp", addr, "GET /zero HTTP/1.1\r\nHost: x\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 500 Internal Server Error\r\n") {
		t.Errorf("a status 0: %q", out)
	}
	<-logMu
	defer func() { logMu <- struct{}{} }()
	if !strings.Contains(log.String(), "level=ERROR") || !strings.Contains(log.String(), "panic=boom") {
		t.Errorf("log: %s", log.String())
	}
}

type lockedWriter struct {
	w  io.Writer
	mu chan struct{}
}

func (l lockedWriter) Write(b []byte) (int, error) {
	<-l.mu
	defer func() { l.mu <- struct{}{} }()
	return l.w.Write(b)
}
