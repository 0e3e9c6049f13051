package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/keyfile"
)

// TestToken: over TCP, a scrape without the token, with a wrong one, with
// the token as a prefix or with another scheme is answered 401 and shows
// nothing (not even whether the path exists); with the token it is
// answered 200, the scheme in any case.
func TestToken(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(NewCollector(fakeSource{sampleStats()}), []byte(testToken), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for _, tt := range []struct {
		name, path, auth string
		want             int
	}{
		{"no header", Path, "", 401},
		{"wrong token", Path, "Bearer 0123456789abcdef-test-tokeN", 401},
		{"token prefix", Path, "Bearer " + testToken[:len(testToken)-1], 401},
		{"token and more", Path, "Bearer " + testToken + "x", 401},
		{"basic scheme", Path, "Basic " + testToken, 401},
		{"bare token", Path, testToken, 401},
		{"empty bearer", Path, "Bearer ", 401},
		{"other path, no token", "/debug", "", 401},
		{"token", Path, "Bearer " + testToken, 200},
		{"scheme in lower case", Path, "bearer " + testToken, 200},
		{"other path, token", "/debug", "Bearer " + testToken, 404},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+tt.path, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("%s: %s, want %d", tt.auth, resp.Status, tt.want)
			}
			if tt.want == 401 {
				if strings.Contains(string(body), "knockwall_") || strings.Contains(string(body), "metrics are at") {
					t.Errorf("a 401 tells something: %s", body)
				}
				if resp.Header.Get("WWW-Authenticate") != `Bearer realm="knockwall metrics"` {
					t.Errorf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
				}
			}
			if tt.want == 200 && !strings.Contains(string(body), "knockwall_reloads_total 13") {
				t.Errorf("no metrics in the answer:\n%s", body)
			}
		})
	}
}

// TestNoToken: a server without a token is not made.
func TestNoToken(t *testing.T) {
	if _, err := NewServer(NewCollector(fakeSource{sampleStats()}), nil, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("NewServer without a token succeeded")
	}
}

// TestReadToken: the token file is read as key files are (refused when
// group or others may read it), trimmed as Prometheus trims its
// credentials_file, and refused when short or not printable.
func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if tok, err := ReadToken(write("good", "  "+testToken+"\n", 0o600)); err != nil || string(tok) != testToken {
		t.Errorf("ReadToken = %q, %v; want the token, trimmed", tok, err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o644} {
		p := write("mode"+mode.String(), testToken, mode)
		if _, err := ReadToken(p); !errors.Is(err, keyfile.ErrPerm) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("ReadToken of mode %04o: %v; want keyfile.ErrPerm", mode, err)
		}
	}
	for name, body := range map[string]string{"short": "0123456789abcde", "empty": "\n", "inner space": "0123456789 abcdef", "control": "0123456789abcdef\x01"} {
		if _, err := ReadToken(write(name, body, 0o600)); err == nil {
			t.Errorf("ReadToken of a %s token succeeded", name)
		}
	}
	if _, err := ReadToken(filepath.Join(dir, "missing")); err == nil {
		t.Error("ReadToken of a missing file succeeded")
	}
}
