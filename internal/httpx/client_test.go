package httpx

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func unixClient(path string) *Client {
	return &Client{Host: "knockwall", Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
}

// TestClient: the client against the server: what the server reads is
// what was sent, and the answer comes back whole.
func TestClient(t *testing.T) {
	_, path := serve(t, Config{Handler: func(_ context.Context, r *Request) Response {
		return Response{Status: 201, ContentType: "application/json", Body: fmt.Appendf(nil, "%s %s %s host=%s type=%s body=%s",
			r.Proto, r.Method, r.Target, r.Header.Get("Host"), r.Header.Get("Content-Type"), r.Body)}
	}}, "unix")
	c := unixClient(path)
	ctx := context.Background()
	resp, err := c.Do(ctx, "POST", "/v1/grants?x=1", "application/json", []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `HTTP/1.1 POST /v1/grants?x=1 host=knockwall type=application/json body={"a":1}`; resp.Status != 201 || string(resp.Body) != want || resp.ContentType != "application/json" {
		t.Errorf("got %d %q %q; want 201 %q", resp.Status, resp.ContentType, resp.Body, want)
	}
	resp, err = c.Do(ctx, "GET", "/v1/status", "", nil)
	if err != nil || string(resp.Body) != "HTTP/1.1 GET /v1/status host=knockwall type= body=" {
		t.Errorf("GET: %q, %v", resp.Body, err)
	}
	for _, bad := range [][2]string{{"GE T", "/"}, {"GET", "/a b"}, {"GET", "/\r\nX: y"}, {"GET", "nope"}} {
		if _, err := c.Do(ctx, bad[0], bad[1], "", nil); err == nil {
			t.Errorf("Do(%q, %q) sent it", bad[0], bad[1])
		}
	}
}

// canned serves each connection one fixed answer after reading the
// request's head; "" answers nothing and holds the connection.
func canned(t *testing.T, answer string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			ReadRequest(bufio.NewReader(c), Limits{})
			if answer == "" {
				go func() { c.Read(make([]byte, 1)); c.Close() }()
				continue
			}
			c.Write([]byte(answer))
			c.Close()
		}
	}()
	return path
}

// TestClientAnswers: answers read, and answers refused, within bounds of
// size and time.
func TestClientAnswers(t *testing.T) {
	tests := []struct {
		name       string
		answer     string
		wantStatus int
		wantBody   string
		wantErr    string
	}{
		{name: "Content-Length", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokTRAILING", wantStatus: 200, wantBody: "ok"},
		{name: "until the close", answer: "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n\r\nmissing", wantStatus: 404, wantBody: "missing"},
		{name: "no reason phrase", answer: "HTTP/1.1 204\r\n\r\n", wantStatus: 204},
		{name: "an interim answer first", answer: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", wantStatus: 200},
		{name: "a body at the limit", answer: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", wantStatus: 200, wantBody: "0123456789"},
		{name: "chunked", answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", wantErr: "Transfer-Encoding"},
		{name: "a body over the limit", answer: "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a", wantErr: "over the limit"},
		{name: "a body over the limit, unsized", answer: "HTTP/1.1 200 OK\r\n\r\n0123456789a", wantErr: "over the limit"},
		{name: "a bad status", answer: "HTTP/1.1 2x0 OK\r\n\r\n", wantErr: "malformed HTTP status line"},
		{name: "a status under 100", answer: "HTTP/1.1 099 OK\r\n\r\n", wantErr: "malformed HTTP status line"},
		{name: "not HTTP", answer: "SSH-2.0-OpenSSH\r\n", wantErr: "malformed HTTP status line"},
		{name: "a bad field", answer: "HTTP/1.1 200 OK\r\nNo colon\r\n\r\n", wantErr: "malformed HTTP response"},
		{name: "a body cut short", answer: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", wantErr: "malformed HTTP response"},
		{name: "a head cut short", answer: "HTTP/1.1 200 OK\r\nContent-Len", wantErr: "connection closed before a whole HTTP response"},
		{name: "a head over the limit", answer: "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("x", DefaultMaxHeaderBytes) + "\r\n\r\n", wantErr: "malformed HTTP response"},
		{name: "no answer", answer: "", wantErr: context.DeadlineExceeded.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := unixClient(canned(t, tt.answer))
			c.MaxResponseBytes = 10
			c.Timeout = 200 * time.Millisecond
			start := time.Now()
			resp, err := c.Do(context.Background(), "GET", "/", "", nil)
			if time.Since(start) > 3*time.Second {
				t.Errorf("took %v; Timeout is %v", time.Since(start), c.Timeout)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v; want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || resp.Status != tt.wantStatus || string(resp.Body) != tt.wantBody {
				t.Errorf("got %d %q, %v; want %d %q", resp.Status, resp.Body, err, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

// TestClientCancel: cancelling the context ends a request under way at
// once, with the context's error.
func TestClientCancel(t *testing.T) {
	c := unixClient(canned(t, ""))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	if _, err := c.Do(ctx, "GET", "/", "", nil); !errors.Is(err, context.Canceled) || time.Since(start) > 3*time.Second {
		t.Errorf("err %v after %v; want context.Canceled at once", err, time.Since(start))
	}
}
