package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/daemon"
	"github.com/knockwall/knockwall/internal/nfq"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// fakeDaemon answers from fixed values and records what it was asked.
type fakeDaemon struct {
	mu        sync.Mutex
	grants    []daemon.GrantEntry
	grantErr  error
	revokeErr error
	reloadErr error
	calls     []string
}

func (f *fakeDaemon) record(format string, args ...any) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

func (f *fakeDaemon) Stats() daemon.Stats {
	st := daemon.Stats{Version: "1.2.3", Started: t0, Backend: "nftables", FastPath: true, Mode: "owned",
		Queues:  []daemon.QueueStats{{Num: 0, Packets: 10, Overruns: 1}},
		Kernel:  nfq.KernelStats{QueueDropped: 2, UserDropped: 3},
		Tracker: tracker.Stats{Pending: 4, Grants: 1, Limited: 5},
		Heals:   6, Reloads: 7}
	st.Counts.Verdicts[verdict.Reject][verdict.ReasonNoGrant] = 8
	st.Counts.Knocks[tracker.EventGrant] = 1
	st.Counts.Grants[tracker.MethodSequence] = 1
	st.Counts.Tokens[3] = 9 // unknown-key
	return st
}

func (f *fakeDaemon) Services() []daemon.ServiceStatus {
	return []daemon.ServiceStatus{{Name: "ssh", Ports: []uint16{22}, Grants: 1, Pending: 4}, {Name: "web", Ports: []uint16{443}}}
}

func (f *fakeDaemon) Grants() []daemon.GrantEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]daemon.GrantEntry(nil), f.grants...)
}

func (f *fakeDaemon) ServiceNames() []string { return []string{"ssh", "web"} }

func (f *fakeDaemon) Grant(_ context.Context, src netip.Addr, service string, dur time.Duration, who string) (daemon.GrantEntry, error) {
	f.record("grant %s %s %s %s", src, service, dur, who)
	if f.grantErr != nil {
		return daemon.GrantEntry{}, f.grantErr
	}
	if dur == 0 {
		dur = 30 * time.Second
	}
	g := daemon.GrantEntry{Src: src, Service: service, Expires: t0.Add(dur), How: tracker.MethodManual}
	f.mu.Lock()
	f.grants = append(f.grants, g)
	f.mu.Unlock()
	return g, nil
}

func (f *fakeDaemon) Revoke(_ context.Context, src netip.Addr, service string, who string) ([]tracker.GrantInfo, error) {
	f.record("revoke %s %q %s", src, service, who)
	return []tracker.GrantInfo{{Src: src}}, f.revokeErr
}

func (f *fakeDaemon) Reload(context.Context) error {
	f.record("reload")
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reloadErr
}

// newRequest is a request as ServeHTTP hands it to serve.
func newRequest(t *testing.T, method, target, body string) *request {
	t.Helper()
	u, err := url.ParseRequestURI(target)
	if err != nil {
		t.Fatal(err)
	}
	return &request{method: method, path: u.Path, query: u.Query(), body: []byte(body)}
}

// lockedBuffer is a log that a server's goroutines write while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newTestServer(d *fakeDaemon, log io.Writer) *Server {
	return New(Config{Daemon: d, Log: slog.New(slog.NewJSONHandler(log, nil)), Now: func() time.Time { return t0.Add(time.Minute) }, UID: 1000})
}

// TestHandlers: each endpoint, its errors, and the peer check, with a fake
// daemon and the peer set as the kernel would.
func TestHandlers(t *testing.T) {
	invalid := fmt.Errorf("reload: %w", &rules.KeyError{Key: "services.ssh.sequence[0]", Msg: "knock port 22 is a protected port"})
	tests := []struct {
		name     string
		method   string
		target   string
		body     string
		peer     *Peer       // nil: credentials unknown
		fake     *fakeDaemon // nil: one with no grants and no errors
		wantCode int
		wantBody []string // substrings of the answer
		wantCall string   // the daemon call made ("" = none)
		wantLog  []string // substrings of the log
	}{
		{name: "status", method: "GET", target: PathStatus, peer: &Peer{UID: 0},
			wantCode: 200, wantBody: []string{`"version": "1.2.3"`, `"uptime_seconds": 60`, `"reject/no-grant": 8`, `"grant": 1`, `"unknown-key": 9`,
				`"sequence": 1`, `"queue_dropped": 2`, `"rate_limited": 5`, `"name": "ssh"`, `"pending": 4`, `"heals": 6`, `"reloads": 7`}},
		{name: "the daemon's own uid may", method: "GET", target: PathStatus, peer: &Peer{UID: 1000}, wantCode: 200},
		{name: "another uid may not", method: "GET", target: PathStatus, peer: &Peer{UID: 65534, PID: 77},
			wantCode: 403, wantBody: []string{"uid 65534 may not"}, wantLog: []string{`"level":"WARN"`, `"uid":65534`, `"pid":77`}},
		{name: "another uid may not grant", method: "POST", target: PathGrants, body: `{"src":"10.0.0.1","service":"ssh"}`, peer: &Peer{UID: 65534},
			wantCode: 403},
		{name: "unknown credentials", method: "GET", target: PathStatus, wantCode: 403},
		{name: "grants", method: "GET", target: PathGrants, peer: &Peer{},
			fake: &fakeDaemon{grants: []daemon.GrantEntry{{Src: netip.MustParseAddr("10.0.0.1"), Service: "ssh", Expires: t0.Add(90 * time.Second),
				How: tracker.MethodSequence, Limited: true, Left: 2}}},
			wantCode: 200, wantBody: []string{`"src": "10.0.0.1"`, `"expires": "2026-11-26T10:01:30Z"`, `"expires_in": 30`, `"how": "sequence"`, `"left": 2`}},
		{name: "no grants is an empty list", method: "GET", target: PathGrants, peer: &Peer{}, wantCode: 200, wantBody: []string{`"grants": []`}},
		{name: "grant", method: "POST", target: PathGrants, body: `{"src":"10.0.0.1","service":"ssh","for":"10m"}`, peer: &Peer{UID: 0, PID: 42},
			wantCode: 200, wantBody: []string{`"how": "manual"`, `"expires": "2026-11-26T10:10:00Z"`},
			wantCall: "grant 10.0.0.1 ssh 10m0s uid=0 pid=42", wantLog: []string{`"level":"INFO"`, `"action":"grant"`, `"uid":0`, `"pid":42`, `"src":"10.0.0.1"`}},
		{name: "grant for open_for", method: "POST", target: PathGrants, body: `{"src":"fd00::1","service":"web"}`, peer: &Peer{},
			wantCode: 200, wantCall: "grant fd00::1 web 0s uid=0 pid=0"},
		{name: "grant of an unknown service", method: "POST", target: PathGrants, body: `{"src":"10.0.0.1","service":"nope"}`, peer: &Peer{},
			wantCode: 404, wantBody: []string{`no service \"nope\" (services: ssh, web)`}},
		{name: "grant to a bad source", method: "POST", target: PathGrants, body: `{"src":"10.0.0","service":"ssh"}`, peer: &Peer{},
			wantCode: 400, wantBody: []string{"not an IPv4 or IPv6 address"}},
		{name: "grant with a zone", method: "POST", target: PathGrants, body: `{"src":"fe80::1%eth0","service":"ssh"}`, peer: &Peer{}, wantCode: 400},
		{name: "grant for a bad duration", method: "POST", target: PathGrants, body: `{"src":"10.0.0.1","service":"ssh","for":"-1m"}`, peer: &Peer{},
			wantCode: 400, wantBody: []string{"not a positive duration"}},
		{name: "grant for too long", method: "POST", target: PathGrants, body: `{"src":"10.0.0.1","service":"ssh","for":"8785h"}`, peer: &Peer{},
			wantCode: 400, wantBody: []string{"at most 8784h0m0s"}},
		{name: "grant with an unknown field", method: "POST", target: PathGrants, body: `{"src":"10.0.0.1","service":"ssh","until":"x"}`, peer: &Peer{}, wantCode: 400},
		{name: "grant, table full", method: "POST", target: PathGrants, body: `{"src":"10.0.0.1","service":"ssh"}`, peer: &Peer{},
			fake: &fakeDaemon{grantErr: tracker.ErrGrantTableFull}, wantCode: 503, wantBody: []string{"grant table full"}, wantCall: "grant 10.0.0.1 ssh 0s uid=0 pid=0"},
		{name: "revoke every service", method: "DELETE", target: PathGrants + "?src=10.0.0.1", peer: &Peer{UID: 1000, PID: 9},
			wantCode: 200, wantBody: []string{`"revoked": 1`}, wantCall: `revoke 10.0.0.1 "" uid=1000 pid=9`,
			wantLog: []string{`"action":"revoke"`, `"uid":1000`}},
		{name: "revoke one service", method: "DELETE", target: PathGrants + "?src=10.0.0.1&service=ssh", peer: &Peer{},
			wantCode: 200, wantCall: `revoke 10.0.0.1 "ssh" uid=0 pid=0`},
		{name: "revoke of an unknown service", method: "DELETE", target: PathGrants + "?src=10.0.0.1&service=nope", peer: &Peer{}, wantCode: 404},
		{name: "revoke without a source", method: "DELETE", target: PathGrants, peer: &Peer{}, wantCode: 400},
		{name: "revoke, fast path failed", method: "DELETE", target: PathGrants + "?src=10.0.0.1", peer: &Peer{},
			fake: &fakeDaemon{revokeErr: errors.New("revoked in knockwall, but the kernel's fast path could not be updated")}, wantCode: 500, wantCall: `revoke 10.0.0.1 "" uid=0 pid=0`},
		{name: "reload", method: "POST", target: PathReload, peer: &Peer{PID: 5},
			wantCode: 200, wantBody: []string{`"reloaded": true`}, wantCall: "reload", wantLog: []string{`"action":"reload"`, `"uid":0`, `"pid":5`}},
		{name: "reload of a bad config", method: "POST", target: PathReload, peer: &Peer{}, fake: &fakeDaemon{reloadErr: invalid},
			wantCode: 422, wantBody: []string{`"invalid_config": true`, "services.ssh.sequence[0]: knock port 22 is a protected port"}, wantCall: "reload"},
		{name: "reload, firewall failed", method: "POST", target: PathReload, peer: &Peer{}, fake: &fakeDaemon{reloadErr: errors.New("apply firewall rules: boom")},
			wantCode: 500, wantBody: []string{"boom"}, wantCall: "reload"},
		{name: "wrong method", method: "PUT", target: PathReload, peer: &Peer{}, wantCode: 405},
		{name: "unknown path", method: "GET", target: "/v2/status", peer: &Peer{}, wantCode: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log bytes.Buffer
			if tt.fake == nil {
				tt.fake = &fakeDaemon{}
			}
			s := newTestServer(tt.fake, &log)
			r := newRequest(t, tt.method, tt.target, tt.body)
			var ctx context.Context
			if tt.peer != nil {
				ctx = withPeer(context.Background(), *tt.peer, nil)
			} else {
				ctx = withPeer(context.Background(), Peer{}, errors.New("no SO_PEERCRED"))
			}
			w := s.serve(ctx, r)
			body := string(w.body)
			if w.status != tt.wantCode {
				t.Fatalf("code %d, want %d; body %s", w.status, tt.wantCode, body)
			}
			for _, want := range tt.wantBody {
				if !strings.Contains(body, want) {
					t.Errorf("body lacks %s:\n%s", want, body)
				}
			}
			var call string
			if len(tt.fake.calls) > 0 {
				call = tt.fake.calls[0]
			}
			if call != tt.wantCall {
				t.Errorf("daemon call %q, want %q", call, tt.wantCall)
			}
			if tt.wantCode == 403 && len(tt.fake.calls) > 0 {
				t.Errorf("a refused peer reached the daemon: %v", tt.fake.calls)
			}
			for _, want := range tt.wantLog {
				if !strings.Contains(log.String(), want) {
					t.Errorf("log lacks %s:\n%s", want, log.String())
				}
			}
			if tt.wantCode != 200 {
				var e Error
				if err := json.Unmarshal(w.body, &e); (err != nil || e.Error == "") && w.status != 405 && w.status != 404 {
					t.Errorf("error answer is not an Error: %s", body)
				}
			}
		})
	}
}

// TestWhoIsLogged: every operator action is one INFO line naming the
// action and the peer's uid.
func TestWhoIsLogged(t *testing.T) {
	var log bytes.Buffer
	s := newTestServer(&fakeDaemon{}, &log)
	for _, req := range []struct{ method, target, body string }{
		{"POST", PathGrants, `{"src":"10.0.0.1","service":"ssh"}`},
		{"DELETE", PathGrants + "?src=10.0.0.1", ""},
		{"POST", PathReload, ""},
	} {
		s.serve(withPeer(context.Background(), Peer{UID: 1000, PID: 3}, nil), newRequest(t, req.method, req.target, req.body))
	}
	var actions []string
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		if l["level"] != "INFO" || l["uid"] != float64(1000) {
			t.Errorf("not INFO with uid 1000: %s", line)
		}
		actions = append(actions, fmt.Sprint(l["action"]))
	}
	if got := strings.Join(actions, ","); got != "grant,revoke,reload" {
		t.Errorf("logged actions %s, want grant,revoke,reload", got)
	}
}
