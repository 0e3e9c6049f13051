//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/control"
	"github.com/knockwall/knockwall/internal/daemon"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
)

// ctlNow is the control server's clock in these tests, and the daemon's:
// expiries and uptimes print the same however slow the host.
var ctlNow = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// ctlDaemon is a daemon as the control socket sees it.
type ctlDaemon struct {
	mu        sync.Mutex
	grants    []daemon.GrantEntry
	reloadErr error
	requests  int // Grant, Revoke and Reload calls
}

func (d *ctlDaemon) Stats() daemon.Stats {
	return daemon.Stats{Version: "9.9", Started: ctlNow.Add(-90 * time.Minute), Backend: "nftables", FastPath: true, Mode: "owned",
		Queues: []daemon.QueueStats{{Num: 3, Packets: 1234, Overruns: 5}}, Heals: 2, Reloads: 1}
}

func (d *ctlDaemon) Services() []daemon.ServiceStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	return []daemon.ServiceStatus{{Name: "ssh", Ports: []uint16{22, 2222}, Grants: len(d.grants), Pending: 3}}
}

func (d *ctlDaemon) Grants() []daemon.GrantEntry {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]daemon.GrantEntry(nil), d.grants...)
}

func (d *ctlDaemon) ServiceNames() []string { return []string{"ssh"} }

func (d *ctlDaemon) Grant(_ context.Context, src netip.Addr, service string, dur time.Duration, _ string) (daemon.GrantEntry, error) {
	if dur == 0 {
		dur = 30 * time.Second
	}
	g := daemon.GrantEntry{Src: src, Service: service, Expires: ctlNow.Add(dur), How: tracker.MethodManual}
	d.mu.Lock()
	d.requests++
	d.grants = append(d.grants, g)
	d.mu.Unlock()
	return g, nil
}

func (d *ctlDaemon) Revoke(_ context.Context, src netip.Addr, _ string, _ string) ([]tracker.GrantInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.requests++
	var out []tracker.GrantInfo
	kept := d.grants[:0]
	for _, g := range d.grants {
		if g.Src == src {
			out = append(out, tracker.GrantInfo{Src: src})
		} else {
			kept = append(kept, g)
		}
	}
	d.grants = kept
	return out, nil
}

func (d *ctlDaemon) Reload(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.requests++
	return d.reloadErr
}

// serveCtl serves a control socket for d and returns its path.
func serveCtl(t *testing.T, d control.Daemon) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s := control.New(control.Config{Daemon: d, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return ctlNow }})
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ln) }()
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		<-done
	})
	return path
}

// TestControlCommands: the commands against a control socket, their
// output and exit statuses (0 ok, 1 no daemon, 2 usage or a refused
// reload).
func TestControlCommands(t *testing.T) {
	d := &ctlDaemon{}
	sock := serveCtl(t, d)
	cfg := writeConfig(t, "control: {socket: "+sock+"}\nservices: {ssh: {ports: [22], sequence: [7000, 8000, 9000]}}\n")
	off := writeConfig(t, "control: {socket: \"\"}\nservices: {ssh: {ports: [22], sequence: [7000, 8000, 9000]}}\n")
	tests := []struct {
		name     string
		env      []string
		args     []string
		setup    func()
		wantCode int
		wantOut  []string
		wantErr  string
	}{
		{name: "status", args: []string{"status", "--socket", sock}, wantOut: []string{
			"knockwall 9.9, up 1h30m0s", "firewall      nftables, fast path on, owned table (no other process can change it)", "queue 3       1234 packets, 5 overruns",
			"heals         2", "reloads       1", "SERVICE  PORTS     GRANTS  PENDING", "ssh      22, 2222  0       3"}},
		{name: "socket from -c", args: []string{"status", "-c", cfg}, wantOut: []string{"knockwall 9.9"}},
		{name: "socket from KNOCKWALL_CONFIG", env: []string{"KNOCKWALL_CONFIG=" + cfg}, args: []string{"status"}, wantOut: []string{"knockwall 9.9"}},
		{name: "socket from the environment", env: []string{"KNOCKWALL_CONFIG=" + off, "KNOCKWALL_CONTROL_SOCKET=" + sock}, args: []string{"status"}, wantOut: []string{"knockwall 9.9"}},
		{name: "socket off in the config", args: []string{"status", "-c", off}, wantCode: 2, wantErr: "control.socket is empty"},
		{name: "no grants", args: []string{"grants", "--socket", sock}, wantOut: []string{"no grants"}},
		{name: "grant", args: []string{"grant", "10.77.0.2", "ssh", "--for", "10m", "--socket", sock}, wantOut: []string{"granted ssh to 10.77.0.2 for 10m0s (until "}},
		{name: "grants", args: []string{"grants", "--socket", sock}, wantOut: []string{
			"SOURCE     SERVICE  EXPIRES IN  HOW     CONNECTIONS LEFT", "10.77.0.2  ssh      10m0s       manual  -"}},
		{name: "grant, bad source", args: []string{"grant", "10.77.0", "ssh", "--socket", sock}, wantCode: 2, wantErr: "not an IPv4 or IPv6 address"},
		{name: "grant, unknown service", args: []string{"grant", "10.77.0.2", "web", "--socket", sock}, wantCode: 2, wantErr: `no service "web" (services: ssh)`},
		{name: "grant, negative duration", args: []string{"grant", "10.77.0.2", "ssh", "--for", "-1m", "--socket", sock}, wantCode: 2},
		{name: "grant, missing argument", args: []string{"grant", "10.77.0.2", "--socket", sock}, wantCode: 2},
		{name: "revoke", args: []string{"revoke", "10.77.0.2", "--socket", sock}, wantOut: []string{"revoked 1 grant(s) from 10.77.0.2"}},
		{name: "revoke again", args: []string{"revoke", "10.77.0.2", "ssh", "--socket", sock}, wantOut: []string{"10.77.0.2 held no grant of ssh"}},
		{name: "revoke, no argument", args: []string{"revoke", "--socket", sock}, wantCode: 2},
		{name: "reload", args: []string{"reload", "--socket", sock}, wantOut: []string{"reloaded"}},
		{name: "reload refused", args: []string{"reload", "--socket", sock},
			setup: func() {
				d.mu.Lock()
				d.reloadErr = &rules.KeyError{Key: "services.ssh.sequence[0]", Msg: "knock port 22 is a protected port"}
				d.mu.Unlock()
			},
			wantCode: 2, wantErr: "reload refused; the running configuration stays: services.ssh.sequence[0]: knock port 22 is a protected port"},
		{name: "reload failed", args: []string{"reload", "--socket", sock},
			setup:    func() { d.mu.Lock(); d.reloadErr = errors.New("apply firewall rules: boom"); d.mu.Unlock() },
			wantCode: 1, wantErr: "boom"},
		{name: "no daemon", args: []string{"status", "--socket", sock + ".none"}, wantCode: 1, wantErr: "cannot reach the knockwall daemon at " + sock + ".none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			code, out, errOut := runCLI(t, tt.env, tt.args...)
			if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant stderr ∋ %q", code, tt.wantCode, out, errOut, tt.wantErr)
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(out, want) {
					t.Errorf("stdout lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestNamedConfigNoFallback: when the configuration named by -c or
// KNOCKWALL_CONFIG cannot be read or parsed, every control command exits
// 2 with the reason and asks no daemon anything, even with a daemon on the
// socket a fallback would have tried (KNOCKWALL_CONTROL_SOCKET). reload
// also checks a file that parses but does not validate.
func TestNamedConfigNoFallback(t *testing.T) {
	d := &ctlDaemon{}
	sock := serveCtl(t, d)
	broken := writeConfig(t, "control: {socket: "+sock+"}\nservices: {ssh: {ports: [22], sequence: [7000, 8000, 9000]\n")
	unknown := writeConfig(t, "control: {socket: "+sock+"}\nservice: {ssh: {ports: [22], sequence: [7000, 8000, 9000]}}\n")
	invalid := writeConfig(t, "control: {socket: "+sock+"}\nservices: {ssh: {ports: [22], sequence: [22, 8000, 9000]}}\n")
	nokey := writeConfig(t, "control: {socket: "+sock+"}\nservices: {ssh: {ports: [22], spa: {key_file: /nonexistent/spa.key}}}\n")
	loose := writeConfig(t, "control: {socket: "+sock+"}\nservices: {ssh: {ports: [22], sequence: [7000, 8000, 9000]}}\n")
	if err := os.Chmod(loose, 0o664); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	fallback := []string{"KNOCKWALL_CONTROL_SOCKET=" + sock}
	commands := [][]string{{"status"}, {"grants"}, {"grant", "10.77.0.2", "ssh"}, {"revoke", "10.77.0.2"}, {"reload"}}
	for _, tt := range []struct {
		name    string
		file    string
		wantErr string
	}{
		{"does not parse", broken, "yaml"},
		{"unknown key", unknown, "service: unknown key (line 2)"},
		{"missing", missing, "does not exist"},
		{"group-writable", loose, "mode 0664"},
	} {
		for _, c := range commands {
			t.Run(tt.name+"/"+c[0]+"/-c", func(t *testing.T) {
				code, out, errOut := runCLI(t, fallback, append(c, "-c", tt.file)...)
				if code != 2 || !strings.Contains(errOut, tt.wantErr) || !strings.Contains(errOut, tt.file) {
					t.Errorf("exit %d (want 2), stderr %q (want it to name %s and say %q), stdout %q", code, errOut, tt.file, tt.wantErr, out)
				}
			})
			t.Run(tt.name+"/"+c[0]+"/KNOCKWALL_CONFIG", func(t *testing.T) {
				code, _, errOut := runCLI(t, append([]string{"KNOCKWALL_CONFIG=" + tt.file}, fallback...), c...)
				if code != 2 || !strings.Contains(errOut, tt.wantErr) {
					t.Errorf("exit %d (want 2), stderr %q", code, errOut)
				}
			})
		}
	}
	for _, tt := range []struct {
		name, file, wantErr string
	}{
		{"knock on the protected port", invalid, "services.ssh.sequence[0]"},
		{"key file missing", nokey, "/nonexistent/spa.key"},
	} {
		t.Run("reload/"+tt.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, nil, "reload", "-c", tt.file)
			if code != 2 || !strings.Contains(errOut, tt.wantErr) || !strings.Contains(errOut, "the daemon was not asked to reload") {
				t.Errorf("exit %d (want 2), stderr %q", code, errOut)
			}
		})
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.requests != 0 || len(d.grants) != 0 {
		t.Errorf("the daemon was asked %d time(s) (grants %v)", d.requests, d.grants)
	}
}

// TestGrantsJSON: grants --json is the control API's list.
func TestGrantsJSON(t *testing.T) {
	d := &ctlDaemon{grants: []daemon.GrantEntry{{Src: netip.MustParseAddr("fd00:77::2"), Service: "ssh", Expires: ctlNow.Add(time.Minute),
		How: tracker.MethodSPA, Limited: true, Left: 1}}}
	sock := serveCtl(t, d)
	code, out, errOut := runCLI(t, nil, "grants", "--json", "--socket", sock)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var gs []control.Grant
	if err := json.Unmarshal([]byte(out), &gs); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(gs) != 1 || gs[0].Src.String() != "fd00:77::2" || gs[0].How != "spa" || !gs[0].Limited || gs[0].Left != 1 || gs[0].ExpiresIn <= 50 {
		t.Errorf("grants --json = %+v", gs)
	}
}

// TestConfigCheckOperate: config check prints the operate keys, warns
// about metrics on a non-loopback address, and refuses metrics without a
// usable token file (exit 2, the message saying what to do).
func TestConfigCheckOperate(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "metrics.token")
	if err := os.WriteFile(tok, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, "metrics: {listen: \":9477\", token_file: "+strconv.Quote(tok)+"}\nstate: {file: \"\"}\nservices: {ssh: {ports: [22], sequence: [7000, 8000, 9000]}}\n")
	code, out, errOut := runCLI(t, nil, "config", "check", "-c", cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"control:\n  socket: \"/run/knockwall/control.sock\"\n", "metrics:\n  listen: \":9477\"\n  token_file: " + strconv.Quote(tok) + "\n", "state:\n  file: \"\"  # off\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "metrics.listen :9477 is not a loopback address") {
		t.Errorf("no warning about metrics.listen:\n%s", errOut)
	}

	loose := filepath.Join(dir, "loose.token")
	if err := os.WriteFile(loose, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, metrics string
		want          []string
	}{
		{"no token file", "{listen: \"127.0.0.1:9477\"}", []string{"metrics.token_file", "is required", "openssl rand", "credentials_file"}},
		{"token file missing", "{listen: \"127.0.0.1:9477\", token_file: " + strconv.Quote(filepath.Join(dir, "none")) + "}", []string{"metrics.token_file", "no such file"}},
		{"token file readable by others", "{listen: \"127.0.0.1:9477\", token_file: " + strconv.Quote(loose) + "}", []string{"metrics.token_file", "mode 0644", "chmod 600"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := writeConfig(t, "metrics: "+tt.metrics+"\nservices: {ssh: {ports: [22], sequence: [7000, 8000, 9000]}}\n")
			code, _, errOut := runCLI(t, nil, "config", "check", "-c", cfg)
			if code != 2 {
				t.Errorf("exit %d, want 2: %s", code, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q: %s", w, errOut)
				}
			}
		})
	}
}
