package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// checkSample is what `knockwall config check` prints for a server with a
// plain sequence, an SPA service that wants bound tokens, a rotating one
// and one that opens by fwknop only (writeEffective's format).
const checkSample = `# configuration is valid
queue:
  num: 0
  count: 1
control:
  socket: "/run/knockwall/control.sock"
metrics:
  listen: ""  # off
services:
  # web: TCP port(s) 443 open for 30s to a source that knocks ...
  web:
    ports: [443]
    sequence: [7000/tcp, 8000/tcp, 9000/udp]
    step_timeout: 5s
    open_for: 30s
    closed: reject
  ssh:
    ports: [22]
    step_timeout: 5s
    open_for: 30s
    closed: reject
    spa:
      port: 62201
      key_ids: [4242]
      max_skew: 30s
      require_source: true
  git:
    ports: [9418]
    step_timeout: 5s
    open_for: 30s
    closed: drop
    rotate:
      key_id: 7
      length: 3
      period: 30s
      range: [20000, 40000]
  phone:
    ports: [8022]
    step_timeout: 5s
    open_for: 30s
    closed: reject
    fwknop:
      port: 62201
      max_age: 2m0s
`

// TestClientInit: client init writes a client config (0600, in a 0700
// directory) that knock then reads, from the server's config check output
// or from flags; it never replaces a server without --force, and says what
// config check cannot give (keys).
func TestClientInit(t *testing.T) {
	dir := t.TempDir()
	check := filepath.Join(dir, "check.txt")
	if err := os.WriteFile(check, []byte(checkSample), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "new", "client.yaml")
	key := filepath.Join(dir, "ssh.key")
	if code, _, errOut := runCLI(t, nil, "keygen", key); code != 0 {
		t.Fatal(errOut)
	}

	code, _, errOut := runCLI(t, nil, "client", "init", "lab", "-c", cfg, "--from-check", check)
	if code != 2 || !strings.Contains(errOut, "--key-file SERVICE=PATH for git, ssh") {
		t.Fatalf("without keys: exit %d, %s", code, errOut)
	}
	code, out, errOut := runCLI(t, nil, "client", "init", "lab", "-c", cfg, "--host", "127.0.0.1", "--from-check", check,
		"--key-file", "ssh="+key, "--key-file", "git="+key)
	if code != 0 || !strings.Contains(out, "wrote server lab (services: git, ssh, web)") ||
		!strings.Contains(errOut, "phone opens only by fwknop") || !strings.Contains(errOut, "ssh requires tokens bound to their source") {
		t.Fatalf("from check: exit %d\n%s\n%s", code, out, errOut)
	}
	for p, want := range map[string]os.FileMode{cfg: 0o600, filepath.Dir(cfg): 0o700 | os.ModeDir} {
		if fi, err := os.Stat(p); err != nil || (runtime.GOOS != "windows" && fi.Mode() != want) {
			t.Errorf("%s: %v %v, want %v", p, fi.Mode(), err, want)
		}
	}
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := decodeClientConfig(b)
	if err != nil {
		t.Fatalf("written config: %v\n%s", err, b)
	}
	lab := c.Servers["lab"]
	if web := lab.Services["web"]; strings.Join(web.Sequence, " ") != "7000/tcp 8000/tcp 9000/udp" || web.Ports[0] != 443 {
		t.Errorf("web: %+v", web)
	}
	if ssh := lab.Services["ssh"]; ssh.SPA == nil || ssh.SPA.Port != 62201 || ssh.SPA.KeyFile != key {
		t.Errorf("ssh: %+v", ssh)
	}
	if git := lab.Services["git"]; git.Rotate == nil || git.Rotate.Length != 3 || git.Rotate.Period.String() != "30s" || git.Rotate.KeyFile != key {
		t.Errorf("git: %+v", git)
	}

	// knock reads what init wrote.
	if code, out, errOut := runCLI(t, nil, "knock", "lab", "-c", cfg, "--service", "web"); code != 0 || !strings.Contains(out, "knocked 127.0.0.1: 7000/tcp 8000/tcp 9000/udp") {
		t.Fatalf("knock: exit %d %s %s", code, out, errOut)
	}

	// A second server from flags joins the first; the first is kept.
	code, out, errOut = runCLI(t, nil, "client", "init", "home", "-c", cfg, "--service", "ssh", "--ports", "22",
		"--spa-port", "62201", "--key-file", key, "--source", "auto")
	if code != 0 || !strings.Contains(out, "wrote server home (services: ssh)") {
		t.Fatalf("from flags: exit %d %s %s", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, nil, "client", "init", "home", "-c", cfg, "--service", "x", "--sequence", "1,2,3"); code != 2 || !strings.Contains(errOut, "--force") {
		t.Fatalf("replace without --force: exit %d %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, nil, "client", "init", "home", "-c", cfg, "--force", "--service", "x", "--sequence", "1,2,3"); code != 0 {
		t.Fatalf("replace with --force: exit %d %s", code, errOut)
	}
	b, _ = os.ReadFile(cfg)
	if c, err = decodeClientConfig(b); err != nil || len(c.Servers) != 2 || len(c.Servers["lab"].Services) != 3 || c.Servers["home"].Services["x"].Sequence == nil {
		t.Fatalf("after both: %v\n%s", err, b)
	}

	for _, bad := range [][]string{
		{"client", "init", "x", "-c", cfg},
		{"client", "init", "x", "-c", cfg, "--service", "s"},
		{"client", "init", "x", "-c", cfg, "--service", "s", "--sequence", "1", "--key-file", key},
		{"client", "init", "x", "-c", cfg, "--service", "s", "--rotate-length", "3", "--rotate-period", "30s", "--rotate-range", "9,1", "--key-file", key},
		{"client", "init", "x", "-c", cfg, "--from-check", cfg},
	} {
		if code, _, _ := runCLI(t, nil, bad...); code != 2 {
			t.Errorf("%v: exit %d, want 2", bad, code)
		}
	}
}
