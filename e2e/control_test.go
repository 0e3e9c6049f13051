package e2e

// Operating the daemon: the control socket (status, grants, grant, revoke,
// reload) through the real CLI, its peer-credential check, the metrics
// endpoint, and grants kept across a clean restart in the state file.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/config"
	"github.com/knockwall/knockwall/internal/control"
	"github.com/knockwall/knockwall/internal/netns"
	"github.com/knockwall/knockwall/internal/state"
	"github.com/knockwall/knockwall/rules"
)

// nobody is the unprivileged user the peer-credential test runs as.
const nobody = "65534"

// ctlResult is what one CLI run printed and how it exited.
type ctlResult struct {
	stdout, stderr string
	code           int
}

// runIn runs name args in ns with the helper timeout.
func runIn(t *testing.T, ns netns.NS, name string, args ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", string(ns), name}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return ctlResult{out.String(), errOut.String(), cmd.ProcessState.ExitCode()}
}

// ctl runs `knockwall ARGS` as root in the server namespace.
func (e *env) ctl(t *testing.T, args ...string) ctlResult {
	t.Helper()
	return runIn(t, e.pair.Server, e.bin, args...)
}

// ctlOK is ctl that must exit 0.
func (e *env) ctlOK(t *testing.T, args ...string) string {
	t.Helper()
	r := e.ctl(t, args...)
	if r.code != 0 {
		t.Fatalf("knockwall %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// grants is `knockwall grants --json`.
func (e *env) grants(t *testing.T) []control.Grant {
	t.Helper()
	var gs []control.Grant
	out := e.ctlOK(t, "grants", "--json", "--socket", e.ops.socket)
	if err := json.Unmarshal([]byte(out), &gs); err != nil {
		t.Fatalf("grants --json: %v\n%s", err, out)
	}
	return gs
}

// field returns the fields of the first line of out that starts with
// first (a table row), or nil.
func field(out, first string) []string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == first {
			return f
		}
	}
	return nil
}

// TestControlStatus: after a knock, `knockwall status` (socket found
// through -c) shows the backend, the queue and the service's grant, and
// `knockwall grants` lists the grant, in words and in JSON.
func TestControlStatus(t *testing.T) { eachPath(t, testControlStatus) }

func testControlStatus(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b, operate: true})
	e.knockGranted(t)
	out := e.ctlOK(t, "status", "-c", e.cfgPath)
	t.Logf("knockwall status:\n%s", out)
	fast := "off"
	if b.fastPath {
		fast = "on"
	}
	if !strings.HasPrefix(out, "knockwall ") || !strings.Contains(out, "firewall      "+b.firewall+", fast path "+fast) {
		t.Errorf("status lacks the version or the backend (%s, fast path %s)", b.firewall, fast)
	}
	if f := field(out, "queue"); len(f) < 3 || f[1] != "0" {
		t.Errorf("status lacks queue 0: %q", f)
	}
	if f := field(out, "ssh"); !slices.Equal(f, []string{"ssh", strconv.Itoa(protectedPort), "1", "0"}) {
		t.Errorf("service row %q; want ssh, its port, 1 grant, 0 pending", f)
	}

	gs := e.grants(t)
	if len(gs) != 1 || gs[0].Src != e.pair.Client4 || gs[0].Service != "ssh" || gs[0].How != "sequence" || gs[0].ExpiresIn <= 0 || gs[0].ExpiresIn > e.svc.openFor.Seconds() {
		t.Fatalf("grants --json = %+v; want the client's sequence grant of ssh", gs)
	}
	human := e.ctlOK(t, "grants", "--socket", e.ops.socket)
	if f := field(human, e.pair.Client4.String()); len(f) != 5 || f[1] != "ssh" || f[3] != "sequence" || f[4] != "-" {
		t.Errorf("grants row %q:\n%s", f, human)
	}
}

// TestControlGrantRevoke: `knockwall grant SRC ssh` opens the port to SRC
// at once (its first SYN connects), and `knockwall revoke SRC` closes it
// for the very next SYN; both are logged with the operator's uid, and a
// connection made during the grant keeps working.
func TestControlGrantRevoke(t *testing.T) { eachPath(t, testControlGrantRevoke) }

func testControlGrantRevoke(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b, operate: true})
	src := e.pair.Client4
	e.expectClosed(t, reject, src, e.server4(protectedPort))

	out := e.ctlOK(t, "grant", src.String(), "ssh", "--for", "1m", "--socket", e.ops.socket)
	if !strings.Contains(out, "granted ssh to "+src.String()+" for 1m0s") {
		t.Errorf("grant printed %q", out)
	}
	c, err := e.dial(src, e.server4(protectedPort), attemptTimeout)
	if err != nil {
		t.Fatalf("the first SYN after knockwall grant: %v; want connected", err)
	}
	defer c.Close()
	if err := echo(c, "granted by hand"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.waitLog("control", map[string]string{"action": "grant", "uid": "0", "src": src.String(), "service": "ssh"}, logTimeout); err != nil {
		t.Error(err)
	}
	if gs := e.grants(t); len(gs) != 1 || gs[0].How != "manual" || gs[0].ExpiresIn > 60 || gs[0].ExpiresIn < 50 {
		t.Errorf("grants = %+v; want one manual grant of about a minute", gs)
	}

	out = e.ctlOK(t, "revoke", src.String(), "--socket", e.ops.socket)
	if !strings.Contains(out, "revoked 1 grant(s) from "+src.String()) {
		t.Errorf("revoke printed %q", out)
	}
	e.expectClosed(t, reject, src, e.server4(protectedPort))
	if _, err := e.d.waitLog("control", map[string]string{"action": "revoke", "uid": "0", "src": src.String()}, logTimeout); err != nil {
		t.Error(err)
	}
	if err := echo(c, "still flowing after the revoke"); err != nil {
		t.Errorf("the connection made during the grant: %v", err)
	}
	if out := e.ctlOK(t, "revoke", src.String(), "ssh", "--socket", e.ops.socket); !strings.Contains(out, "held no grant") {
		t.Errorf("a second revoke printed %q", out)
	}
}

// TestControlNonRoot: a user other than root cannot use the control
// socket. The socket's directory (0700) stops it at connect; with the
// directory and the socket opened to everyone, the server itself refuses
// it by its peer credentials (403), logs the refusal at WARN, and does
// nothing it asked; and 32 connections of that user held open do not keep
// root from being served.
func TestControlNonRoot(t *testing.T) { eachPath(t, testControlNonRoot) }

func testControlNonRoot(t *testing.T, b backend) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) not installed: %v", err)
	}
	// A directory nobody may traverse to, holding a copy of the binary
	// nobody may run (the suite's build directory is root's alone).
	dir, err := os.MkdirTemp("", "kwctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "knockwall")
	copyFile(t, requireBinary(t), bin, 0o755)
	e := newEnv(t, envOptions{backend: b, operate: true, opsDir: dir})
	asNobody := func(args ...string) ctlResult {
		t.Helper()
		args = append([]string{"--reuid=" + nobody, "--regid=" + nobody, "--clear-groups", bin}, append(args, "--socket", e.ops.socket)...)
		return runIn(t, e.pair.Server, "setpriv", args...)
	}

	r := asNobody("status")
	if r.code != 1 || !strings.Contains(r.stderr, "permission denied") || !strings.Contains(r.stderr, e.ops.socket) {
		t.Errorf("status as uid %s with the socket as made: exit %d, %q; want exit 1, permission denied, naming the socket", nobody, r.code, r.stderr)
	}

	for p, mode := range map[string]fs.FileMode{filepath.Dir(e.ops.socket): 0o711, e.ops.socket: 0o666} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	mark := e.d.mark()
	for _, args := range [][]string{{"status"}, {"grant", e.pair.Client4.String(), "ssh"}, {"revoke", e.pair.Client4.String()}, {"reload"}} {
		r := asNobody(args...)
		if r.code != 1 || !strings.Contains(r.stderr, "forbidden: uid "+nobody+" may not use the control socket") {
			t.Errorf("%s as uid %s: exit %d, %q; want exit 1 and the server's refusal", args[0], nobody, r.code, r.stderr)
		}
	}
	if _, err := e.d.waitLogFrom(mark, "control: peer refused", map[string]string{"uid": nobody, "level": "WARN"}, logTimeout); err != nil {
		t.Error(err)
	}
	if e.d.hasFrom(mark, "control", map[string]string{"action": "grant"}) || e.d.hasFrom(mark, "reloaded", nil) || len(e.grants(t)) != 0 {
		t.Error("a refused peer's request was carried out")
	}
	e.expectClosed(t, reject, e.pair.Client4, e.server4(protectedPort))

	// 32 connections of that user, each with a request begun and never
	// ended, reopened as the daemon closes them, do not keep root out:
	// the peer is checked before a connection takes a slot.
	ctx, cancel := context.WithTimeout(context.Background(), 2*cmdTimeout)
	defer cancel()
	hold := exec.CommandContext(ctx, "setpriv", "--reuid="+nobody, "--regid="+nobody, "--clear-groups", systemPython(t), "-c", holdScript, e.ops.socket, "32")
	stdin, err := hold.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := hold.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var holdErr bytes.Buffer
	hold.Stderr = &holdErr
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "holding" {
		t.Fatalf("the holder did not start: %q %v\n%s", lines.Text(), hold.Wait(), holdErr.String())
	}
	for range 10 {
		e.ctlOK(t, "status", "--socket", e.ops.socket)
	}
	// The held connections are refused (403) in their turn, and root is
	// served after that too.
	if !lines.Scan() || lines.Text() != "saw 403" {
		t.Errorf("the holder says %q, want a 403\n%s", lines.Text(), holdErr.String())
	}
	e.ctlOK(t, "status", "--socket", e.ops.socket)
	stdin.Close()
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "refused ") {
		t.Errorf("the holder says %q, want how many 403s it read\n%s", lines.Text(), holdErr.String())
	}
	if err := hold.Wait(); err != nil {
		t.Errorf("holder: %v\n%s", err, holdErr.String())
	}
}

// systemPython is a python3 that other users may run: the system's, not a
// per-user install found first in root's PATH.
func systemPython(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	p, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 not installed (scripts/deps.sh installs it): %v", err)
	}
	return p
}

// holdScript (python3 PATH N) keeps N connections open to the socket at
// PATH, each with a request begun and never ended, reopening each as the
// other end closes it, until its standard input closes (at most a
// minute); it prints "holding" once all are open, "saw 403" at the first
// 403 answer, and at the end "refused K", K the 403 answers it read.
const holdScript = `
import select, socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: knockwall\r\n")
    except OSError:
        pass  # closed at once: read as closed below
    return s
socks = [conn() for _ in range(n)]
print("holding", flush=True)
refused, deadline = 0, time.time() + 60
while time.time() < deadline:
    ready, _, _ = select.select(socks + [sys.stdin], [], [], 1)
    if sys.stdin in ready:
        break
    for s in ready:
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if data.startswith(b"HTTP/1.1 403"):
            refused += 1
            if refused == 1:
                print("saw 403", flush=True)
        if not data:
            socks.remove(s)
            s.close()
            socks.append(conn())
print("refused", refused, flush=True)
`

func copyFile(t *testing.T, from, to string, mode fs.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestControlReload: `knockwall reload -c FILE` checks FILE itself first:
// one that does not parse or does not validate exits 2 and the daemon is
// not asked (no reload, not even a refused one). Without -c (no config
// named, none at the default path) the daemon reads its own file and
// refuses a bad one: exit 2 with the daemon's reason, nothing changed
// (rules, sequence). With a good file, exit 0 and the new sequence opens.
func TestControlReload(t *testing.T) { eachPath(t, testControlReload) }

func testControlReload(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b, operate: true, secondClient: true})
	before := e.knockwallRules(t)
	write := func(seq ...string) {
		t.Helper()
		svc := e.svc
		svc.sequence = seq
		if err := os.WriteFile(e.cfgPath, []byte(configYAML(svc, b, e.ops)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	reloads := func() string {
		t.Helper()
		f := field(e.ctlOK(t, "status", "--socket", e.ops.socket), "reloads")
		if len(f) != 2 {
			t.Fatalf("status has no reloads row: %q", f)
		}
		return f[1]
	}

	mark := e.d.mark()
	broken := filepath.Join(t.TempDir(), "broken.yaml")
	writeMode(t, broken, []byte("services:\n  ssh: {ports: [2222\n"), 0o600)
	write(strconv.Itoa(protectedPort), "8000", "9000/udp") // a knock on the protected port
	for _, tt := range []struct{ file, want string }{{broken, "yaml"}, {e.cfgPath, "services.ssh.sequence[0]"}} {
		r := e.ctl(t, "reload", "-c", tt.file)
		if r.code != 2 || !strings.Contains(r.stderr, tt.file) || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("reload -c %s: exit %d, stderr %q; want exit 2 naming the file and %q", tt.file, r.code, r.stderr, tt.want)
		}
	}
	if e.d.hasFrom(mark, "reload refused; the running configuration stays", nil) || e.d.hasFrom(mark, "control", map[string]string{"action": "reload"}) {
		t.Error("the daemon was asked to reload a file the CLI refused")
	}
	if n := reloads(); n != "0" {
		t.Errorf("reloads after refused files: %s", n)
	}

	// No config named and none at the default path: the daemon's own file,
	// judged by the daemon.
	r := e.ctl(t, "reload", "--socket", e.ops.socket)
	if r.code != 2 || !strings.Contains(r.stderr, "reload refused") || !strings.Contains(r.stderr, "services.ssh.sequence[0]") {
		t.Fatalf("reload of a broken config by the daemon: exit %d, stderr %q; want exit 2 and the daemon's reason", r.code, r.stderr)
	}
	if _, err := e.d.waitLog("reload refused; the running configuration stays", nil, logTimeout); err != nil {
		t.Error(err)
	}
	if after := e.knockwallRules(t); !slices.Equal(after, before) {
		t.Errorf("a refused reload changed the rules:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	if n := reloads(); n != "0" {
		t.Errorf("reloads after a refused reload: %s", n)
	}
	e.knock(t, e.pair.Server4, defaultSequence...) // the old sequence still opens
	e.expectOpen(t, e.pair.Client4, e.server4(protectedPort)).Close()

	newSeq := []string{"7100", "8100", "9100/udp"}
	write(newSeq...)
	if out := e.ctlOK(t, "reload", "-c", e.cfgPath); strings.TrimSpace(out) != "reloaded" {
		t.Errorf("reload printed %q", out)
	}
	if n := reloads(); n != "1" {
		t.Errorf("reloads after a reload: %s", n)
	}
	stranger := e.pair.Client2v4
	e.expectClosed(t, reject, stranger, e.server4(protectedPort))
	if err := e.knockFrom(stranger, e.pair.Server4, newSeq...); err != nil {
		t.Fatal(err)
	}
	e.expectOpen(t, stranger, e.server4(protectedPort)).Close()
}

// scrape fetches /metrics with the token from inside the server
// namespace and returns each sample line's value by its name and labels.
func (e *env) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := e.scrapeAs("Bearer " + metricsToken)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape: %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

// scrapeAs is a GET of /metrics from inside the server namespace with
// this Authorization header ("" for none).
func (e *env) scrapeAs(auth string) (*http.Response, error) {
	hc := &http.Client{Timeout: cmdTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = e.pair.Server.Do(func() (err error) {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	req, err := http.NewRequest("GET", "http://"+e.ops.metrics+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return hc.Do(req)
}

// TestMetricsToken: the daemon's metrics answer 401, and show no
// counter, to a scrape without the token or with a wrong one, as
// Prometheus would send it; with the token from metrics.token_file they
// answer 200.
func TestMetricsToken(t *testing.T) {
	e := newEnv(t, envOptions{operate: true})
	if _, err := e.d.waitLog("metrics ready", map[string]string{"listen": metricsAddr}, logTimeout); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		auth string
		want int
	}{
		{"", http.StatusUnauthorized},
		{"Bearer wrong-token-0123456789abcdef", http.StatusUnauthorized},
		{"Bearer " + metricsToken[:len(metricsToken)-1], http.StatusUnauthorized},
		{"Basic " + metricsToken, http.StatusUnauthorized},
		{"Bearer " + metricsToken, http.StatusOK},
	} {
		resp, err := e.scrapeAs(tt.auth)
		if err != nil {
			t.Fatalf("scrape with %q: %v", tt.auth, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("scrape with %q: %s, want %d", tt.auth, resp.Status, tt.want)
		}
		if tt.want != http.StatusOK && bytes.Contains(body, []byte("knockwall_")) {
			t.Errorf("scrape with %q shows counters:\n%s", tt.auth, body)
		}
		if tt.want == http.StatusOK && !bytes.Contains(body, []byte("knockwall_build_info")) {
			t.Errorf("scrape with the token shows no counters:\n%s", body)
		}
	}
}

// TestMetricsNeedToken: a daemon whose config turns metrics on without a
// token file does not start (exit 2, the message naming the fix), and one
// whose token file others may read does not either.
func TestMetricsNeedToken(t *testing.T) {
	e := newEnv(t, envOptions{noDaemon: true})
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose.token")
	writeMode(t, loose, []byte(metricsToken), 0o644)
	for _, tt := range []struct {
		name, metrics string
		want          []string
	}{
		{"no token file", "metrics:\n  listen: \"" + metricsAddr + "\"\n", []string{"metrics.token_file", "is required", "credentials_file"}},
		{"token file readable by others", "metrics:\n  listen: \"" + metricsAddr + "\"\n  token_file: \"" + loose + "\"\n", []string{"metrics.token_file", "mode 0644"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".yaml")
			off := operate{}.yaml()
			body := strings.Replace(configYAML(e.svc, e.backend, operate{}), off, strings.Replace(off, "metrics:\n  listen: \"\"\n  token_file: \"\"\n", tt.metrics, 1), 1)
			if !strings.Contains(body, tt.metrics) {
				t.Fatalf("config without %q:\n%s", tt.metrics, body)
			}
			writeMode(t, cfg, []byte(body), 0o600)
			for _, args := range [][]string{{"config", "check", "-c", cfg}, {"run", "-c", cfg}} {
				r := e.ctl(t, args...)
				if r.code != 2 {
					t.Errorf("knockwall %s: exit %d, want 2\n%s", args[0], r.code, r.stderr)
				}
				for _, w := range tt.want {
					if !strings.Contains(r.stderr, w) {
						t.Errorf("knockwall %s: stderr lacks %q: %s", args[0], w, r.stderr)
					}
				}
			}
		})
	}
	if dump := e.knockwallRules(t); len(dump) != 0 {
		t.Errorf("a refused start left rules:\n%s", strings.Join(dump, "\n"))
	}
}

// TestMetrics: a scrape after a refused SYN and a knock shows them: the
// refused packets, the grant, the queue's packets; the build info names
// the backend.
func TestMetrics(t *testing.T) { eachPath(t, testMetrics) }

func testMetrics(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b, operate: true})
	if _, err := e.d.waitLog("metrics ready", map[string]string{"listen": metricsAddr}, logTimeout); err != nil {
		t.Fatal(err)
	}
	e.expectClosed(t, reject, e.pair.Client4, e.server4(protectedPort))
	e.knockGranted(t)
	m := e.scrape(t)
	fastPath := 0.0
	if b.fastPath {
		fastPath = 1
	}
	for _, c := range []struct {
		sample string
		min    float64
		max    float64
	}{
		// The refused SYN and the three knocks: all refused, none told
		// apart (the UDP knock is a refused datagram).
		{`knockwall_verdicts_total{reason="no-grant",verdict="reject"}`, 4, 4},
		{`knockwall_grants_total{method="sequence"}`, 1, 1},
		{`knockwall_grants_total{method="manual"}`, 0, 0},
		{`knockwall_grants_active`, 1, 1},
		{`knockwall_queue_packets_total{queue="0"}`, 4, 1e9},
		{`knockwall_kernel_queue_dropped_total`, 0, 0},
		{`knockwall_firewall_heals_total`, 0, 0},
		{`knockwall_fast_path`, fastPath, fastPath},
	} {
		v, ok := m[c.sample]
		if !ok || v < c.min || v > c.max {
			t.Errorf("%s = %v (present: %t); want %v..%v", c.sample, v, ok, c.min, c.max)
		}
	}
	var build bool
	for k, v := range m {
		if strings.HasPrefix(k, `knockwall_build_info{backend="`+b.firewall+`",goversion="go`) && v == 1 {
			build = true
		}
	}
	if !build {
		t.Errorf("no knockwall_build_info naming backend %s", b.firewall)
	}
	for k := range m {
		if strings.Contains(k, e.pair.Client4.String()) {
			t.Errorf("a metric is labelled with a source address: %s", k)
		}
	}
}

// TestState: a grant made before a clean stop is back after the next
// start, its first SYN connects, it ends at its original expiry, and the
// state file (0600, consumed by the start) held it and nothing secret. A
// plain-sequence grant that let in no connection (a spoofer's, say) is not
// carried over.
func TestState(t *testing.T) { eachPath(t, testState) }

func testState(t *testing.T, b backend) {
	const openFor = 8 * time.Second
	e := newEnv(t, envOptions{backend: b, operate: true, secondClient: true, svc: service{openFor: openFor}})
	src := e.pair.Client4
	e.knockGranted(t)
	e.expectOpen(t, src, e.server4(protectedPort)).Close()
	// A second source completes the sequence and never connects, as a
	// spoofed one would: its grant is not carried across the restart.
	if err := e.knockFrom(e.pair.Client2v4, e.pair.Server4, defaultSequence...); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.waitLog("grant", map[string]string{"src": e.pair.Client2v4.String(), "service": "ssh"}, logTimeout); err != nil {
		t.Fatal(err)
	}
	var expires time.Time
	for _, g := range e.grants(t) {
		if g.Src == src {
			expires = g.Expires
		}
	}
	if expires.IsZero() {
		t.Fatalf("grants %+v; want one of %v", e.grants(t), src)
	}

	if st, err := e.d.stop(); err != nil || st.ExitCode() != 0 {
		t.Fatalf("stop: %v %v", st, err)
	}
	if !e.d.has("grants saved", map[string]string{"grants": "1"}) {
		t.Error("no 'grants saved' line")
	}
	fi, err := os.Stat(e.ops.stateFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, %v; want mode 0600", fi, err)
	}
	raw, err := os.ReadFile(e.ops.stateFile)
	if err != nil {
		t.Fatal(err)
	}
	var snap state.Snapshot
	if err := json.Unmarshal(raw, &snap); err != nil {
		t.Fatalf("state file: %v\n%s", err, raw)
	}
	if len(snap.Grants) != 1 || snap.Grants[0].Src != src || snap.Grants[0].Service != "ssh" || !snap.Grants[0].Expires.Equal(expires) || snap.Grants[0].How != "sequence" {
		t.Errorf("state file holds %+v; want the grant, ending %v", snap.Grants, expires)
	}

	e.d = startDaemon(t, e.pair.Server, e.bin, e.cfgPath)
	if !e.d.has("grant restored", map[string]string{"src": src.String(), "service": "ssh", "by": "sequence"}) {
		t.Error("no 'grant restored' line")
	}
	c, err := e.dial(src, e.server4(protectedPort), attemptTimeout)
	if err != nil {
		t.Fatalf("the restored grant's first SYN: %v; want connected", err)
	}
	c.Close()
	e.expectClosed(t, reject, e.pair.Client2v4, e.server4(protectedPort))
	if gs := e.grants(t); len(gs) != 1 || gs[0].Expires.Sub(expires).Abs() > time.Millisecond {
		t.Errorf("after the restart grants = %+v; want the same grant ending %v", gs, expires)
	}
	if _, err := os.Lstat(e.ops.stateFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the state file is still there after the start: %v", err)
	}
	time.Sleep(time.Until(expires.Add(time.Second)))
	e.expectClosed(t, reject, src, e.server4(protectedPort))
}

// TestStateRefused: a state file that is corrupt, writable by others, or a
// symlink (the last two holding a grant that would open the port) is
// logged at WARN and ignored; the daemon starts with no grant, and knocks
// work.
func TestStateRefused(t *testing.T) { eachPath(t, testStateRefused) }

func testStateRefused(t *testing.T, b backend) {
	for _, tt := range []struct {
		name string
		make func(t *testing.T, path string, good []byte)
	}{
		{"corrupt", func(t *testing.T, path string, _ []byte) {
			writeMode(t, path, []byte(`{"version": 1, "grants": [{"src": "10.77`), 0o600)
		}},
		{"world writable", func(t *testing.T, path string, good []byte) { writeMode(t, path, good, 0o666) }},
		{"symlink", func(t *testing.T, path string, good []byte) {
			writeMode(t, path+".real", good, 0o600)
			if err := os.Symlink(path+".real", path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{backend: b, operate: true, noDaemon: true})
			if err := os.MkdirAll(filepath.Dir(e.ops.stateFile), 0o700); err != nil {
				t.Fatal(err)
			}
			tt.make(t, e.ops.stateFile, goodState(t, e))
			e.d = startDaemon(t, e.pair.Server, e.bin, e.cfgPath)
			l, err := e.d.waitLog("state file ignored; starting with no grant", map[string]string{"level": "WARN"}, logTimeout)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("refused: %s", l.str("err"))
			e.expectClosed(t, reject, e.pair.Client4, e.server4(protectedPort))
			e.knockOpen(t).Close()
		})
	}
}

// goodState is a state file's content granting the client ssh for an
// hour: what a refused file would open if it were read.
func goodState(t *testing.T, e *env) []byte {
	t.Helper()
	c, err := config.Load(config.Source{Path: e.cfgPath}, nil)
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	svc := &set.Services[0]
	fp := svc.Fingerprint()
	snap := state.Snapshot{Version: state.Version, Saved: now.UTC(),
		Services: []state.Service{{Name: svc.Name, ID: svc.ID, Fingerprint: hex.EncodeToString(fp[:])}},
		Grants: []state.Grant{{Src: e.pair.Client4, Service: "ssh",
			ServiceID: svc.ID, Expires: now.Add(time.Hour).UTC(), How: "manual"}}}
	b, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeMode(t *testing.T, path string, b []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// TestConfigMode: a config file that group or others may write, or that
// another user owns, is refused by config check, run and reload (exit 2,
// naming the file and its mode), and by the running daemon when asked to
// reload it: whoever may change the file must not decide what opens.
func TestConfigMode(t *testing.T) {
	e := newEnv(t, envOptions{operate: true})
	check := func(r ctlResult, what string, want ...string) {
		t.Helper()
		if r.code != 2 {
			t.Errorf("%s: exit %d, want 2\nstderr: %s", what, r.code, r.stderr)
		}
		for _, w := range want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%s: stderr lacks %q: %s", what, w, r.stderr)
			}
		}
	}
	for _, mode := range []fs.FileMode{0o664, 0o606} {
		if err := os.Chmod(e.cfgPath, mode); err != nil {
			t.Fatal(err)
		}
		m := "mode " + strconv.FormatUint(uint64(mode), 8)
		for _, args := range [][]string{{"config", "check", "-c", e.cfgPath}, {"run", "-c", e.cfgPath}, {"reload", "-c", e.cfgPath}} {
			check(e.ctl(t, args...), strings.Join(args[:len(args)-2], " ")+" "+m, e.cfgPath, "0"+m[5:], "chmod 600")
		}
		check(e.ctl(t, "reload", "--socket", e.ops.socket), "the daemon's reload, "+m, "reload refused", e.cfgPath)
	}
	if err := os.Chmod(e.cfgPath, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(e.cfgPath, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	check(e.ctl(t, "config", "check", "-c", e.cfgPath), "config check of another user's file", e.cfgPath, "uid 65534", "mode 0600")
	if f := field(e.ctlOK(t, "status", "--socket", e.ops.socket), "reloads"); len(f) != 2 || f[1] != "0" {
		t.Errorf("reloads: %q", f)
	}
	if !e.d.running() {
		t.Error("the daemon stopped")
	}
}

// TestMetricsNoKnockOracle: the metrics after one SYN to a knock port
// equal those after one SYN to a protected port (both are refused SYNs;
// only the start time and the process's own figures differ), so whoever
// can both scrape and send learns nothing of the knock ports that the
// network would not tell.
func TestMetricsNoKnockOracle(t *testing.T) { eachPath(t, testMetricsNoKnockOracle) }

func testMetricsNoKnockOracle(t *testing.T, b backend) {
	after := func(port uint16) map[string]float64 {
		e := newEnv(t, envOptions{backend: b, operate: true})
		if _, err := e.d.waitLog("metrics ready", map[string]string{"listen": metricsAddr}, logTimeout); err != nil {
			t.Fatal(err)
		}
		mark := e.d.mark()
		e.expectClosed(t, reject, e.pair.Client4, e.server4(port))
		// The SYN was judged and nothing waits in the queue (a knock is
		// logged at debug, a refused SYN is not: wait for the queue's
		// counts instead).
		deadline := time.Now().Add(logTimeout)
		m := e.scrape(t)
		for (m[`knockwall_queue_packets_total{queue="0"}`] < 1 || m[`knockwall_kernel_queue_waiting`] != 0) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			m = e.scrape(t)
		}
		if port == 7000 && !e.d.hasFrom(mark, "knock", map[string]string{"src": e.pair.Client4.String(), "service": "ssh"}) {
			t.Errorf("the SYN to %d was no knock", port)
		}
		for k := range m {
			if strings.HasPrefix(k, "knockwall_start_time_seconds") || strings.HasPrefix(k, "knockwall_build_info") {
				delete(m, k)
			}
		}
		return m
	}
	knock, protected := after(7000), after(protectedPort)
	if len(knock) == 0 || len(knock) != len(protected) {
		t.Errorf("%d samples after the knock, %d after the protected SYN", len(knock), len(protected))
	}
	for k, v := range knock {
		if w, ok := protected[k]; !ok || w != v {
			t.Errorf("%s = %v after a SYN to a knock port, %v (present: %t) after a SYN to the protected port", k, v, w, ok)
		}
	}
}
