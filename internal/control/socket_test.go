package control

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/rules"
)

// TestListen: the socket is made 0600 in a directory made 0700; a live
// socket is not taken over (and keeps working), a stale one is replaced,
// and a file that is not a socket is left alone. Closing removes the file.
func TestListen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "ctl.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{dir: fs.ModeDir | 0o700, path: fs.ModeSocket | 0o600} {
		if fi, err := os.Lstat(p); err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, fi.Mode(), err, want)
		}
	}

	t.Run("live socket is not taken over", func(t *testing.T) {
		if _, err := Listen(path); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "another knockwall is running") {
			t.Fatalf("second Listen: %v; want ErrInUse saying so", err)
		}
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("the first socket stopped answering: %v", err)
		}
		c.Close()
	})

	t.Run("stale socket is replaced", func(t *testing.T) {
		ln.SetUnlinkOnClose(false) // as after a crash
		ln.Close()
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("the stale socket should be there: %v", err)
		}
		ln2, err := Listen(path)
		if err != nil {
			t.Fatalf("Listen over a stale socket: %v", err)
		}
		ln2.Close()
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Close left the socket file: %v", err)
		}
	})

	t.Run("not a socket", func(t *testing.T) {
		if err := os.WriteFile(path, []byte("mine"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("Listen over a regular file: %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "mine" {
			t.Errorf("the file was touched")
		}
	})
}

// TestClient: the client against the server over a real socket: the
// kernel's peer credentials let this process in, every call round-trips,
// a refused reload unwraps to rules.ErrInvalid, and a missing daemon is an
// UnreachableError naming the socket.
func TestClient(t *testing.T) {
	fake := &fakeDaemon{}
	var log lockedBuffer
	path := serveSocket(t, newTestServer(fake, &log))
	ctx := context.Background()
	c := NewClient(path)

	st, err := c.Status(ctx)
	if err != nil || st.Version != "1.2.3" || len(st.Services) != 2 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	g, err := c.Grant(ctx, GrantRequest{Src: "10.0.0.9", Service: "ssh", For: "1m"})
	if err != nil || g.Src.String() != "10.0.0.9" || g.How != "manual" {
		t.Fatalf("Grant = %+v, %v", g, err)
	}
	if gs, err := c.Grants(ctx); err != nil || len(gs) != 1 || gs[0].Service != "ssh" {
		t.Fatalf("Grants = %+v, %v", gs, err)
	}
	if n, err := c.Revoke(ctx, "10.0.0.9", "ssh"); err != nil || n != 1 {
		t.Fatalf("Revoke = %d, %v", n, err)
	}
	if _, err := c.Grant(ctx, GrantRequest{Src: "10.0.0.9", Service: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Grant of an unknown service: %v; want ErrNotFound", err)
	}
	if err := c.Reload(ctx); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	fake.mu.Lock()
	fake.reloadErr = &rules.KeyError{Key: "queue.num", Msg: "bad"}
	fake.mu.Unlock()
	if err := c.Reload(ctx); !errors.Is(err, rules.ErrInvalid) || !strings.Contains(err.Error(), "queue.num: bad") {
		t.Fatalf("Reload of a bad config: %v; want the daemon's message, wrapping rules.ErrInvalid", err)
	}
	if !strings.Contains(log.String(), `"uid":`+strconv.Itoa(os.Geteuid())) {
		t.Errorf("the log does not name this process's uid:\n%s", log.String())
	}

	var ue *UnreachableError
	missing := filepath.Join(t.TempDir(), "none.sock")
	if _, err := NewClient(missing).Status(ctx); !errors.As(err, &ue) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Status of no daemon: %v; want an UnreachableError naming %s", err, missing)
	}
}

// TestCurlLike: what `curl --unix-socket` gets, through Go's own HTTP
// client: the API's answers, and the HTTP layer's refusals as Errors too.
func TestCurlLike(t *testing.T) {
	path := serveSocket(t, newTestServer(&fakeDaemon{}, io.Discard))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	tests := []struct {
		method, target string
		body           io.Reader
		wantCode       int
		wantBody       string
		wantAllow      string
	}{
		{"GET", PathStatus, nil, 200, `"version": "1.2.3"`, ""},
		{"HEAD", PathStatus, nil, 200, "", ""},
		{"GET", "http://knockwall" + PathGrants, nil, 200, `"grants": []`, ""},
		{"PUT", PathReload, nil, 405, `"error": "PUT /v1/reload: use POST"`, "POST"},
		{"POST", PathStatus, nil, 405, `"error"`, "GET, HEAD"},
		{"GET", "/v2/status", nil, 404, `"error": "no endpoint /v2/status`, ""},
		{"POST", PathGrants, bytes.NewReader(make([]byte, MaxBody+1)), 413, `"error": "Content Too Large`, ""},
		{"POST", PathGrants, io.MultiReader(strings.NewReader(`{}`)), 411, `"error": "Length Required`, ""}, // chunked
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, "http://knockwall"+strings.TrimPrefix(tt.target, "http://knockwall"), tt.body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.target, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantCode || !strings.Contains(string(body), tt.wantBody) || resp.Header.Get("Allow") != tt.wantAllow {
			t.Errorf("%s %s: %s Allow %q\n%s", tt.method, tt.target, resp.Status, resp.Header.Get("Allow"), body)
		}
		if tt.method != "HEAD" && resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: Content-Type %q", tt.method, tt.target, resp.Header.Get("Content-Type"))
		}
	}
}

// serveSocket serves s on a fresh socket until the test ends, then shuts
// it down (Shutdown and Serve must both end without error), and returns
// the socket's path.
func serveSocket(t *testing.T, s *Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}
