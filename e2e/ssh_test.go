package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The real OpenSSH through `knockwall connect`: sshd (Debian's
// openssh-server) listens on the protected port in the server namespace;
// from the client namespace, ssh and scp with
// ProxyCommand='knockwall connect %h %p' get in, and plain ssh does not.
// The client config is written by `knockwall client init` where the
// client looks for it (the user's config directory), so ssh's
// ProxyCommand is what a user writes, with no -c.

// Time limits of this file, besides the harness's.
const (
	sshdReady   = 10 * time.Second // sshd start until it listens
	sshTimeout  = 30 * time.Second // one ssh or scp command, knock and 1 MiB included
	sshRefusedT = 3                // ConnectTimeout of plain ssh, seconds
	sshPort     = 22
)

// sshEnv is a namespace pair with the daemon protecting sshd's port, sshd
// running, and the client's ssh files.
type sshEnv struct {
	*env
	dir     string // keys, configs, the files scp copies
	home    string // the client user's home: its client config is there
	sshCfg  string // ssh_config with the ProxyCommand, Host myserver
	bareCfg string // ssh_config without it, Host direct
}

// sshConfigYAML is the daemon's config: one service, ssh, on port 22, with
// the opening section svc (indented for services.ssh).
func sshConfigYAML(b backend, svc string) string {
	return fmt.Sprintf(`firewall:
  manage: true
%slog:
  level: info
  format: text
control:
  socket: ""
state:
  file: ""
services:
  ssh:
    ports: [%d]
    step_timeout: 5s
    open_for: 30s
    closed: reject
%s`, b.yaml(), sshPort, svc)
}

// newSSHEnv starts the daemon on svc's config and sshd, and writes the
// client's ssh files; it does not knock.
func newSSHEnv(t *testing.T, svc func(dir string) string) *sshEnv {
	t.Helper()
	for _, bin := range []string{"/usr/sbin/sshd", "ssh", "scp", "ssh-keygen"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not installed (apt-get install openssh-server openssh-client; scripts/deps.sh does): %v", bin, err)
		}
	}
	e := newEnv(t, envOptions{noDaemon: true})
	s := &sshEnv{env: e, dir: t.TempDir(), home: t.TempDir()}
	if err := os.WriteFile(e.cfgPath, []byte(sshConfigYAML(e.backend, svc(s.dir))), 0o600); err != nil {
		t.Fatal(err)
	}
	e.d = startDaemon(t, e.pair.Server, e.bin, e.cfgPath)
	s.startSSHD(t)
	s.writeSSHConfig(t)
	return s
}

// startSSHD runs sshd -D in the server namespace on sshPort of the
// server's address, with a throw-away host key and the client's key
// authorized, until the test ends.
func (s *sshEnv) startSSHD(t *testing.T) {
	t.Helper()
	s.sshKeygen(t, "hostkey")
	s.sshKeygen(t, "id")
	pub, err := os.ReadFile(filepath.Join(s.dir, "id.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	hostPub, err := os.ReadFile(filepath.Join(s.dir, "hostkey.pub"))
	if err != nil {
		t.Fatal(err)
	}
	// ssh looks the host up by the name it connects to (HostName).
	known := fmt.Sprintf("%s %s", s.pair.Server4, bytes.Join(bytes.Fields(hostPub)[:2], []byte(" ")))
	if err := os.WriteFile(filepath.Join(s.dir, "known_hosts"), []byte(known+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd refuses to start without its privilege separation directory;
	// Debian's package makes it at boot (tmpfiles), not on install.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(s.dir, "sshd_config")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`Port %d
ListenAddress %s
HostKey %s
AuthorizedKeysFile %s
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
LogLevel VERBOSE
`, sshPort, s.pair.Server4, filepath.Join(s.dir, "hostkey"), filepath.Join(s.dir, "authorized_keys"))), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd must be started by its absolute path (it re-executes itself).
	cmd := s.pair.Server.Command("/usr/sbin/sshd", "-D", "-e", "-f", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	var log bytes.Buffer
	listening := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "Server listening on") {
				once = true
				close(listening)
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-readDone:
		case <-time.After(stopTimeout):
			cmd.Process.Kill()
			<-readDone
		}
		cmd.Wait()
		if t.Failed() {
			t.Logf("sshd log:\n%s", log.String())
		}
	})
	select {
	case <-listening:
	case <-readDone:
		t.Fatalf("sshd exited before listening:\n%s", log.String())
	case <-time.After(sshdReady):
		t.Fatalf("sshd not listening within %s", sshdReady)
	}
}

func (s *sshEnv) sshKeygen(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "knockwall-e2e", "-f", filepath.Join(s.dir, name)).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %s: %v: %s", name, err, out)
	}
}

// writeSSHConfig writes the client's two ssh configs: myserver through
// `knockwall connect`, direct without it.
func (s *sshEnv) writeSSHConfig(t *testing.T) {
	t.Helper()
	common := fmt.Sprintf(`    HostName %s
    Port %d
    User root
    IdentityFile %s
    IdentitiesOnly yes
    UserKnownHostsFile %s
    StrictHostKeyChecking yes
    CheckHostIP no
    BatchMode yes
    LogLevel ERROR
`, s.pair.Server4, sshPort, filepath.Join(s.dir, "id"), filepath.Join(s.dir, "known_hosts"))
	s.sshCfg = filepath.Join(s.dir, "ssh_config")
	if err := os.WriteFile(s.sshCfg, []byte("Host myserver\n"+common+"    ProxyCommand "+s.bin+" connect %h %p\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.bareCfg = filepath.Join(s.dir, "ssh_config.direct")
	if err := os.WriteFile(s.bareCfg, []byte(fmt.Sprintf("Host direct\n%s    ConnectTimeout %d\n", common, sshRefusedT)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// clientEnv is the environment of the client's commands: its own home and
// config directory, where client init writes and connect looks.
func (s *sshEnv) clientEnv() []string {
	env := []string{"HOME=" + s.home, "XDG_CONFIG_HOME=" + filepath.Join(s.home, ".config")}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "HOME" && k != "XDG_CONFIG_HOME" {
			env = append(env, kv)
		}
	}
	return env
}

// client runs name args in the client namespace with clientEnv, bounded by
// sshTimeout, and returns its exit status, stdout and stderr.
func (s *sshEnv) client(t *testing.T, name string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sshTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", string(s.pair.Client), name}, args...)...)
	cmd.Env = s.clientEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v: not done within %s\nstderr: %s", name, args, sshTimeout, errOut.String())
	}
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v", name, err)
		}
		code = ee.ExitCode()
	}
	return code, out.String(), errOut.String()
}

// clientInit runs `knockwall client init myserver --host SERVER ARGS...`
// with clientEnv.
func (s *sshEnv) clientInit(t *testing.T, args ...string) {
	t.Helper()
	code, out, errOut := s.client(t, s.bin, append([]string{"client", "init", "myserver", "--host", s.pair.Server4.String()}, args...)...)
	if code != 0 {
		t.Fatalf("knockwall client init: exit %d: %s", code, errOut)
	}
	t.Logf("knockwall client init: %s%s", out, errOut)
}

// check is what every service's test proves: plain ssh is refused,
// ssh through the ProxyCommand runs a command, and scp through it copies
// a random 1 MiB file intact.
func (s *sshEnv) check(t *testing.T) {
	t.Helper()
	code, _, errOut := s.client(t, "ssh", "-F", s.bareCfg, "direct", "true")
	if code == 0 || !(strings.Contains(errOut, "Connection refused") || strings.Contains(errOut, "timed out")) {
		t.Fatalf("plain ssh before any knock: exit %d, %q; want refused", code, errOut)
	}

	code, out, errOut := s.client(t, "ssh", "-F", s.sshCfg, "myserver", "echo", "knockwall-ok")
	if code != 0 || strings.TrimSpace(out) != "knockwall-ok" {
		t.Fatalf("ssh with ProxyCommand knockwall connect: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	src := filepath.Join(s.dir, "payload.bin")
	payload := make([]byte, 1<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(s.dir, "received.bin")
	code, _, errOut = s.client(t, "scp", "-F", s.sshCfg, src, "myserver:"+dst)
	if code != 0 {
		t.Fatalf("scp with ProxyCommand knockwall connect: exit %d, %s", code, errOut)
	}
	got, err := os.ReadFile(dst) // the server namespace shares this file system
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("scp: %d bytes arrived, sha256 differs from the %d sent", len(got), len(payload))
	}
}

// TestSSHSequence: a service opened by a plain knock sequence.
func TestSSHSequence(t *testing.T) {
	t.Parallel()
	s := newSSHEnv(t, func(string) string { return "    sequence: [7000, 8000, 9000/udp]\n" })
	// A client config with a wrong sequence (ports that are no knocks):
	// the knocks go out, no grant follows, and connect says the connect
	// failed (exit 4).
	s.clientInit(t, "--service", "ssh", "--ports", "22", "--sequence", "7100,8100,9100/udp")
	code, out, errOut := s.client(t, s.bin, "connect", s.pair.Server4.String(), "22", "--wait", "1s")
	if code != 4 || out != "" || !strings.Contains(errOut, "connect failed") {
		t.Fatalf("connect after a wrong sequence: exit %d, stdout %q, stderr %q; want 4, connect failed", code, out, errOut)
	}
	s.clientInit(t, "--force", "--service", "ssh", "--ports", "22", "--sequence", "7000,8000,9000/udp")
	// A server the client has no route to (the client namespace routes
	// only its own /24): the knock cannot be sent (exit 3), and nothing
	// leaves the namespace.
	if code, _, errOut := s.client(t, s.bin, "client", "init", "unroutable", "--host", "10.99.0.1", "--service", "ssh", "--sequence", "7000,8000"); code != 0 {
		t.Fatalf("client init unroutable: %s", errOut)
	}
	code, out, errOut = s.client(t, s.bin, "connect", "10.99.0.1", "22", "--wait", "1s")
	if code != 3 || out != "" || !strings.Contains(errOut, "knock failed") {
		t.Fatalf("connect to an unroutable server: exit %d, stdout %q, stderr %q; want 3, knock failed", code, out, errOut)
	}
	s.check(t)
}

// TestSSHSPA: a service opened by an SPA token, bound to the client's
// address (the server requires it).
func TestSSHSPA(t *testing.T) {
	t.Parallel()
	var serverKey string
	s := newSSHEnv(t, func(dir string) string {
		serverKey = filepath.Join(dir, "server.key")
		keygen(t, requireBinary(t), serverKey)
		return fmt.Sprintf("    spa:\n      port: %d\n      key_file: %q\n      require_source: true\n", spaPort, serverKey)
	})
	afterStartSecond()
	clientKey := copyKey(t, serverKey, filepath.Join(s.home, "myserver.key"))
	s.clientInit(t, "--service", "ssh", "--ports", "22", "--spa-port", fmt.Sprint(spaPort), "--key-file", clientKey, "--source", "auto")
	s.check(t)
}

// TestSSHRotate: a service opened by a rotating sequence.
func TestSSHRotate(t *testing.T) {
	t.Parallel()
	var serverKey string
	s := newSSHEnv(t, func(dir string) string {
		serverKey = filepath.Join(dir, "server.key")
		keygen(t, requireBinary(t), serverKey)
		return fmt.Sprintf("    rotate:\n      key_file: %q\n      length: 3\n      period: 30s\n      range: [%d, %d]\n", serverKey, rotateLo, rotateHi)
	})
	clientKey := copyKey(t, serverKey, filepath.Join(s.home, "myserver.key"))
	s.clientInit(t, "--service", "ssh", "--ports", "22", "--key-file", clientKey,
		"--rotate-length", "3", "--rotate-period", "30s", "--rotate-range", fmt.Sprintf("%d,%d", rotateLo, rotateHi))
	s.check(t)
}

// copyKey copies the server's key to dst (mode 0600), as a user copies it
// to the client.
func copyKey(t *testing.T, src, dst string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}
