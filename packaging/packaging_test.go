package packaging

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The size budget of the 32-bit MIPS binaries, the targets of the
// smallest routers: what they take unpacked (in RAM and on an unpacked
// file system) and packed (on the flash of a squashfs image, and in a
// download), in decimal bytes. docs/decisions.md says why these numbers.
const (
	maxRouterBinary   = 10_000_000
	maxRouterBinaryGz = 3_500_000
)

// targets are what `make dist` builds: binary suffix, Debian architecture,
// and what the ELF header and the build settings must say.
type target struct {
	name     string
	debArch  string
	goarch   string
	setting  string // GOARM/GOMIPS build setting, "" if none
	machine  elf.Machine
	order    binary.ByteOrder
	maxBytes int64 // 0: no budget; else maxRouterBinary, and gzip'd maxRouterBinaryGz
}

var targets = []target{
	{"amd64", "amd64", "amd64", "", elf.EM_X86_64, binary.LittleEndian, 0},
	{"arm64", "arm64", "arm64", "", elf.EM_AARCH64, binary.LittleEndian, 0},
	{"armv7", "armhf", "arm", "GOARM=7", elf.EM_ARM, binary.LittleEndian, 0},
	{"mips", "mips", "mips", "GOMIPS=softfloat", elf.EM_MIPS, binary.BigEndian, maxRouterBinary},
	{"mipsle", "mipsel", "mipsle", "GOMIPS=softfloat", elf.EM_MIPS, binary.LittleEndian, maxRouterBinary},
}

// built is the targets dist/ holds: all of them, or those DIST_TARGETS
// names (as packaging/dist.sh reads it).
func built() []target {
	names := strings.Fields(os.Getenv("DIST_TARGETS"))
	if len(names) == 0 {
		return targets
	}
	var out []target
	for _, tt := range targets {
		if slices.Contains(names, tt.name) {
			out = append(out, tt)
		}
	}
	return out
}

const (
	confPath   = "/etc/knockwall/knockwall.yaml"
	unitPath   = "/lib/systemd/system/knockwall.service"
	guardPath  = "/lib/systemd/system/knockwall-guard.service"
	binPath    = "/usr/sbin/knockwall"
	marker     = "# knockwall-unconfigured"
	repoRoot   = ".."
	openwrtDir = "openwrt/knockwall"
)

// distDir is the dist/ directory `make package-test` built, or skips.
func distDir(t *testing.T) string {
	t.Helper()
	d := os.Getenv("DIST_DIR")
	if d == "" {
		t.Skip("DIST_DIR not set: `make package-test` builds dist/ and runs these tests on it")
	}
	if _, err := os.Stat(filepath.Join(d, "SHA256SUMS")); err != nil {
		t.Fatalf("DIST_DIR=%s holds no SHA256SUMS: run `make dist` first: %v", d, err)
	}
	return d
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/deps.sh installs it)", tool)
		}
	}
}

// run runs a command and returns its standard output; a failure is fatal
// and shows standard error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func debFor(t *testing.T, dist, debArch string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dist, "knockwall_*_"+debArch+".deb"))
	if len(m) != 1 {
		t.Fatalf("want one knockwall_*_%s.deb in %s, found %q", debArch, dist, m)
	}
	return m[0]
}

// member is one file of a package's data or control archive.
type member struct {
	mode       int64
	uid, gid   int
	typeflag   byte
	linkTarget string
	body       []byte
}

// members reads a tar stream from dpkg-deb (--fsys-tarfile or --ctrl-tarfile).
func members(t *testing.T, deb, which string) map[string]member {
	t.Helper()
	out := run(t, "dpkg-deb", which, deb)
	m := map[string]member{}
	tr := tar.NewReader(strings.NewReader(out))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return m
		}
		if err != nil {
			t.Fatalf("%s %s: %v", which, deb, err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		m[strings.TrimPrefix(h.Name, ".")] = member{h.Mode & 0o7777, h.Uid, h.Gid, h.Typeflag, h.Linkname, body}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBinaries(t *testing.T) {
	dist := distDir(t)
	for _, tt := range built() {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dist, "knockwall-linux-"+tt.name)
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("knockwall-linux-%s: %d bytes", tt.name, st.Size())
			if tt.maxBytes > 0 && st.Size() > tt.maxBytes {
				t.Errorf("knockwall-linux-%s is %d bytes, over its budget of %d", tt.name, st.Size(), tt.maxBytes)
			}
			if tt.maxBytes > 0 {
				gz := gzipSize(t, path)
				t.Logf("knockwall-linux-%s: %d bytes gzip'd", tt.name, gz)
				if gz > maxRouterBinaryGz {
					t.Errorf("knockwall-linux-%s is %d bytes gzip'd, over its budget of %d", tt.name, gz, maxRouterBinaryGz)
				}
			}
			f, err := elf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Machine != tt.machine || f.ByteOrder != tt.order {
				t.Errorf("ELF machine %v %v, want %v %v", f.Machine, f.ByteOrder, tt.machine, tt.order)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Error("has a program interpreter: not static")
				}
			}
			if f.Section(".symtab") != nil {
				t.Error("has a symbol table: not stripped (-s)")
			}
			if f.Section(".debug_info") != nil || f.Section(".zdebug_info") != nil {
				t.Error("has DWARF: not built with -w")
			}
			bi, err := buildinfo.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			settings := map[string]string{}
			for _, s := range bi.Settings {
				settings[s.Key] = s.Value
			}
			// nethttpomithttp2: the control socket and the metrics speak
			// HTTP/1.1, and HTTP/2 would only cost room. The routers' builds
			// (those with a budget) leave the cluster out too.
			tags := "nethttpomithttp2"
			if tt.maxBytes > 0 {
				tags += ",knockwall_omit_cluster,knockwall_omit_qr"
			}
			for k, want := range map[string]string{"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": tt.goarch, "-trimpath": "true", "-tags": tags} {
				if settings[k] != want {
					t.Errorf("build setting %s=%q, want %q", k, settings[k], want)
				}
			}
			if tt.setting != "" {
				k, v, _ := strings.Cut(tt.setting, "=")
				if settings[k] != v {
					t.Errorf("build setting %s=%q, want %q", k, settings[k], v)
				}
			}
			// -trimpath keeps -ldflags out of the build settings: look for
			// the stamp itself, the version the man pages carry.
			if v := stampedVersion(t, dist); !bytes.Contains(readFile(t, path), []byte(v)) {
				t.Errorf("no version stamp %q (-X main.version) in the binary", v)
			}
		})
	}
}

// gzipSize is the size of the file at path compressed by `gzip -9`, the
// tool and level bench/RESULTS.md and docs/decisions.md measure with.
func gzipSize(t *testing.T, path string) int64 {
	t.Helper()
	if _, err := exec.LookPath("gzip"); err != nil {
		t.Fatalf("gzip not installed: the size budget is measured with it: %v", err)
	}
	var n countWriter
	var stderr bytes.Buffer
	cmd := exec.Command("gzip", "-9", "-c", path)
	cmd.Stdout, cmd.Stderr = &n, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gzip -9 %s: %v %s", path, err, stderr.String())
	}
	return int64(n)
}

// countWriter counts what is written to it.
type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

// stampedVersion is the version make dist stamped into the binaries, as the
// man pages it generated show it (.TH ... "knockwall VERSION" ...).
func stampedVersion(t *testing.T, dist string) string {
	t.Helper()
	page := run(t, "zcat", filepath.Join(dist, "build", "man", "knockwall.8.gz"))
	m := regexp.MustCompile(`(?m)^\.TH "KNOCKWALL" "8" "[^"]*" "knockwall ([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("knockwall.8 has no .TH line naming the version:\n%s", page)
	}
	if m[1] == "dev" {
		t.Fatal(`the binaries say version "dev": -X main.version was not applied`)
	}
	return m[1]
}

func TestChecksums(t *testing.T) {
	dist := distDir(t)
	listed := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, filepath.Join(dist, "SHA256SUMS"))))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q is not sha256sum output", sc.Text())
		}
		got := sha256.Sum256(readFile(t, filepath.Join(dist, name)))
		if hex.EncodeToString(got[:]) != sum {
			t.Errorf("%s: SHA256SUMS says %s, file hashes to %x", name, sum, got)
		}
		listed[name] = true
	}
	for _, tt := range built() {
		for _, name := range []string{"knockwall-linux-" + tt.name, filepath.Base(debFor(t, dist, tt.debArch))} {
			if !listed[name] {
				t.Errorf("SHA256SUMS does not list %s", name)
			}
		}
	}
}

func TestDebInfo(t *testing.T) {
	dist := distDir(t)
	need(t, "dpkg-deb")
	scripts := map[string]string{"postinst": "deb/postinst", "prerm": "deb/prerm", "postrm": "deb/postrm"}
	for _, tt := range built() {
		t.Run(tt.debArch, func(t *testing.T) {
			deb := debFor(t, dist, tt.debArch)
			info := run(t, "dpkg-deb", "--info", deb)
			for _, want := range []string{"Package: knockwall", "Architecture: " + tt.debArch, "Recommends: nftables", "Suggests: iptables", "Section: net", "Maintainer: "} {
				if !strings.Contains(info, "\n "+want) {
					t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
				}
			}
			version := strings.TrimSpace(run(t, "dpkg-deb", "--field", deb, "Version"))
			if !strings.Contains(filepath.Base(deb), "_"+version+"_") {
				t.Errorf("file name %s does not carry the version %s", filepath.Base(deb), version)
			}
			ctrl := members(t, deb, "--ctrl-tarfile")
			if got := string(ctrl["/conffiles"].body); got != confPath+"\n" {
				t.Errorf("conffiles = %q, want %q", got, confPath+"\n")
			}
			for name, src := range scripts {
				m, ok := ctrl["/"+name]
				if !ok {
					t.Errorf("no %s", name)
					continue
				}
				if m.mode != 0o755 {
					t.Errorf("%s mode %o, want 755", name, m.mode)
				}
				if !bytes.Equal(m.body, readFile(t, src)) {
					t.Errorf("%s differs from packaging/%s", name, src)
				}
			}
		})
	}
}

// TestDebContents reads dpkg-deb --contents, the listing an operator sees,
// and compares the data archive's files with their sources.
func TestDebContents(t *testing.T) {
	dist := distDir(t)
	need(t, "dpkg-deb")
	want := []struct{ path, perms string }{
		{binPath, "-rwxr-xr-x"},
		{confPath, "-rw-------"},
		{unitPath, "-rw-r--r--"},
		{guardPath, "-rw-r--r--"},
		{"/usr/share/man/man8/knockwall-rules-guard.8.gz", "-rw-r--r--"},
		{"/usr/share/man/man8/knockwall.8.gz", "-rw-r--r--"},
		{"/usr/share/man/man8/knockwall-run.8.gz", "-rw-r--r--"},
		{"/usr/share/doc/knockwall/copyright", "-rw-r--r--"},
		{"/usr/share/doc/knockwall/changelog.Debian.gz", "-rw-r--r--"},
		{"/usr/share/lintian/overrides/knockwall", "-rw-r--r--"},
	}
	for _, tt := range built() {
		t.Run(tt.debArch, func(t *testing.T) {
			deb := debFor(t, dist, tt.debArch)
			listing := map[string][2]string{} // path -> perms, owner
			for line := range strings.Lines(run(t, "dpkg-deb", "--contents", deb)) {
				f := strings.Fields(line)
				if len(f) < 6 {
					t.Fatalf("dpkg-deb --contents line %q", line)
				}
				path := strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")
				listing[path] = [2]string{f[0], f[1]}
				if f[1] != "root/root" && f[1] != "0/0" {
					t.Errorf("%s owned by %s, want root/root", path, f[1])
				}
				if strings.ContainsAny(f[0], "sStT") || f[0][8] == 'w' {
					t.Errorf("%s has mode %s: no setuid/setgid/sticky or world-writable files", path, f[0])
				}
			}
			for _, w := range want {
				got, ok := listing[w.path]
				if !ok {
					t.Errorf("%s not in the package", w.path)
				} else if got[0] != w.perms {
					t.Errorf("%s: %s, want %s", w.path, got[0], w.perms)
				}
			}
			data := members(t, deb, "--fsys-tarfile")
			for path, src := range map[string]string{
				binPath:                              filepath.Join(dist, "knockwall-linux-"+tt.name),
				confPath:                             "knockwall.yaml",
				unitPath:                             "knockwall.service",
				guardPath:                            "knockwall-guard.service",
				"/usr/share/doc/knockwall/copyright": "copyright",
			} {
				if !bytes.Equal(data[path].body, readFile(t, src)) {
					t.Errorf("%s in the package differs from %s", path, src)
				}
			}
		})
	}
}

func TestManPages(t *testing.T) {
	dist := distDir(t)
	need(t, "groff", "man")
	dir := filepath.Join(dist, "build", "man")
	pages, _ := filepath.Glob(filepath.Join(dir, "*.8.gz"))
	have := map[string]bool{}
	for _, p := range pages {
		have[strings.TrimSuffix(filepath.Base(p), ".8.gz")] = true
		page := run(t, "zcat", p)
		cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = strings.NewReader(page)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff on %s: %v\n%s", filepath.Base(p), err, out)
		}
	}
	for _, name := range []string{"knockwall", "knockwall-run", "knockwall-knock", "knockwall-config-check", "knockwall-rules-print", "knockwall-rules-guard", "knockwall-keygen", "knockwall-example"} {
		if !have[name] {
			t.Errorf("no man page %s.8.gz in %s", name, dir)
		}
	}
	if have["knockwall-gen-man"] {
		t.Error("the hidden gen-man command has a man page")
	}
	// The page an operator opens first, as man shows it, with the version
	// the binaries carry.
	version := stampedVersion(t, dist)
	cmd := exec.Command("man", "-l", filepath.Join(dir, "knockwall-run.8.gz"))
	cmd.Env = append(os.Environ(), "MANWIDTH=80")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("man -l knockwall-run.8.gz: %v\n%s", err, out)
	}
	for _, want := range []string{"knockwall run [flags]", "knockwall " + version, "--config"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("man -l knockwall-run.8.gz lacks %q:\n%s", want, out)
		}
	}
}

// TestUnitVerify runs systemd-analyze verify on the units, with the binary
// path pointing at the built binary and MANPATH at the built man pages, so
// Documentation= is checked as well.
func TestUnitVerify(t *testing.T) {
	dist := distDir(t)
	need(t, "systemd-analyze")
	bin, err := filepath.Abs(filepath.Join(dist, "build", "knockwall"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	var units []string
	for _, name := range []string{"knockwall.service", "knockwall-guard.service"} {
		unit := filepath.Join(tmp, name)
		body := strings.ReplaceAll(string(readFile(t, name)), binPath, bin)
		if err := os.WriteFile(unit, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, unit)
	}
	man, _ := filepath.Abs(filepath.Join(dist, "build", "man"))
	if err := os.Symlink(man, filepath.Join(tmp, "man8")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("systemd-analyze", append([]string{"verify"}, units...)...)
	cmd.Env = append(os.Environ(), "MANPATH="+tmp)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, unit := range units {
		cmd = exec.Command("systemd-analyze", "security", "--offline=yes", unit)
		if out, err := cmd.CombinedOutput(); err == nil {
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			t.Log(filepath.Base(unit), lines[len(lines)-1])
		}
	}
}

// TestUnitHardening keeps the unit's contract with the operator: what it
// runs, and the sandbox it runs in.
func TestUnitHardening(t *testing.T) {
	unit := string(readFile(t, "knockwall.service"))
	lines := map[string]bool{}
	for l := range strings.Lines(unit) {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{
		"Type=simple",
		"ExecStart=/usr/sbin/knockwall run -c /etc/knockwall/knockwall.yaml",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"Restart=on-failure",
		"AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW",
		"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
		"NoNewPrivileges=yes",
		"ProtectSystem=strict",
		"ProtectHome=yes",
		"PrivateTmp=yes",
		"RuntimeDirectory=knockwall",
		"RuntimeDirectoryMode=0700",
		"StateDirectory=knockwall",
		"StateDirectoryMode=0700",
		"RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6 AF_PACKET",
		"LockPersonality=yes",
		"MemoryDenyWriteExecute=yes",
		"SystemCallArchitectures=native",
		"WantedBy=multi-user.target",
	} {
		if !lines[want] {
			t.Errorf("knockwall.service lacks %q", want)
		}
	}
	for l := range lines {
		if strings.HasPrefix(l, "User=") || strings.HasPrefix(l, "ProtectKernelModules=") {
			t.Errorf("knockwall.service has %q (see packaging/README.md)", l)
		}
	}
	for _, want := range []string{"Wants=knockwall-guard.service", "After=knockwall-guard.service", "Also=knockwall-guard.service"} {
		if !lines[want] {
			t.Errorf("knockwall.service lacks %q", want)
		}
	}
}

// TestGuardUnit keeps the boot guard's contract: a oneshot that runs
// `knockwall rules guard` before the network comes up (before
// network-pre.target, with no default dependencies that would order it
// after basic.target), after the loaders that flush the ruleset, whose
// guard stays when the unit stops.
func TestGuardUnit(t *testing.T) {
	lines := map[string]bool{}
	for l := range strings.Lines(string(readFile(t, "knockwall-guard.service"))) {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{
		"DefaultDependencies=no",
		"Wants=network-pre.target",
		"Before=network-pre.target shutdown.target",
		"After=local-fs.target nftables.service netfilter-persistent.service",
		"Type=oneshot",
		"RemainAfterExit=yes",
		"ExecStart=/usr/sbin/knockwall rules guard -c /etc/knockwall/knockwall.yaml",
		"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
		"NoNewPrivileges=yes",
		"ProtectSystem=strict",
		"WantedBy=sysinit.target",
	} {
		if !lines[want] {
			t.Errorf("knockwall-guard.service lacks %q", want)
		}
	}
	for l := range lines {
		if strings.HasPrefix(l, "ExecStop") || strings.HasPrefix(l, "PrivateTmp=") {
			t.Errorf("knockwall-guard.service has %q: a stop must leave the guard; early boot has no /tmp to rely on", l)
		}
	}
}

// TestUnitRefusesUnconfigured runs the units' ExecCondition against
// configurations: the shipped one must keep the daemon from starting, and
// the boot guard from closing the ports with nobody to open them.
func TestUnitRefusesUnconfigured(t *testing.T) {
	for _, unit := range []string{"knockwall.service", "knockwall-guard.service"} {
		t.Run(unit, func(t *testing.T) { testUnitRefusesUnconfigured(t, unit) })
	}
}

func testUnitRefusesUnconfigured(t *testing.T, unit string) {
	var cond string
	for l := range strings.Lines(string(readFile(t, unit))) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "ExecCondition="); ok {
			cond = v
		}
	}
	if cond == "" {
		t.Fatalf("%s has no ExecCondition", unit)
	}
	shipped := readFile(t, "knockwall.yaml")
	_, edited, _ := bytes.Cut(shipped, []byte("\n"))
	tests := []struct {
		name    string
		config  []byte // nil: no file
		start   bool
		message string
	}{
		{"shipped config", shipped, false, "knockwall: not started: edit "},
		{"marker line deleted", edited, true, ""},
		{"no config file: the daemon reports it", nil, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "knockwall.yaml")
			if tt.config != nil {
				if err := os.WriteFile(conf, tt.config, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command("sh", "-c", strings.ReplaceAll(cond, confPath, conf))
			out, err := cmd.CombinedOutput()
			if started := err == nil; started != tt.start {
				t.Errorf("ExecCondition passed = %v, want %v (%v)\n%s", started, tt.start, err, out)
			}
			var ee *exec.ExitError
			if err != nil && errors.As(err, &ee) && ee.ExitCode() != 1 {
				t.Errorf("exit status %d: 1..254 skips the unit, 255 would fail it", ee.ExitCode())
			}
			if !strings.Contains(string(out), tt.message) {
				t.Errorf("output %q lacks %q", out, tt.message)
			}
		})
	}
}

// TestShippedConfig: the file operators start from validates, and starts
// with the line that keeps the service from starting until it is edited.
func TestShippedConfig(t *testing.T) {
	dist := distDir(t)
	conf := readFile(t, "knockwall.yaml")
	if !bytes.HasPrefix(conf, []byte(marker+":")) {
		t.Errorf("knockwall.yaml does not start with %q", marker)
	}
	out := run(t, filepath.Join(dist, "build", "knockwall"), "config", "check", "-c", "knockwall.yaml")
	if !strings.Contains(out, "keep_guard: true") {
		t.Errorf("config check: want keep_guard: true (the guard stays across restarts and upgrades):\n%s", out)
	}
	for _, section := range []string{"queue", "firewall", "log", "tracker", "services"} {
		if !regexp.MustCompile(`(?m)^# ` + section + `:`).Match(conf) {
			t.Errorf("knockwall.yaml has no comment introducing %s:", section)
		}
	}
}

// TestCopyrightCoversBinary: every module linked into the binary is in the
// copyright file, so a new dependency cannot ship without its license;
// and every module the file names is in the binary, so it says what
// ships, not what once did.
func TestCopyrightCoversBinary(t *testing.T) {
	dist := distDir(t)
	bi, err := buildinfo.ReadFile(filepath.Join(dist, "knockwall-linux-amd64"))
	if err != nil {
		t.Fatal(err)
	}
	copyright := string(readFile(t, "copyright"))
	inBinary := map[string]bool{"*": true, "go-stdlib": true}
	for _, d := range bi.Deps {
		inBinary[d.Path] = true
		if !regexp.MustCompile(`(?m)^Files:.*\s` + regexp.QuoteMeta(d.Path) + `(\s|$)`).MatchString(copyright) {
			t.Errorf("packaging/copyright has no Files: paragraph for %s %s", d.Path, d.Version)
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^Files:(.*)$`).FindAllStringSubmatch(copyright, -1) {
		for _, path := range strings.Fields(m[1]) {
			if !inBinary[path] {
				t.Errorf("packaging/copyright names %s, which is not in the binary", path)
			}
		}
	}
}

// hostDeb is the package for this machine's architecture and, built from
// it, the same package one Debian revision up, for upgrades.
func hostDeb(t *testing.T, dist string) (deb, upgrade string) {
	t.Helper()
	need(t, "dpkg-deb", "go")
	name, debArch := "", ""
	for _, tt := range built() {
		if tt.goarch == runtime.GOARCH {
			name, debArch = tt.name, tt.debArch
		}
	}
	if debArch == "" {
		t.Skipf("no package is built for this machine's architecture %s", runtime.GOARCH)
	}
	deb, err := filepath.Abs(debFor(t, dist, debArch))
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(run(t, "dpkg-deb", "--field", deb, "Version"))
	upstream, revision, ok := cutLast(version, "-")
	rev, err := strconv.Atoi(revision)
	if !ok || err != nil {
		t.Fatalf("version %s has no numeric Debian revision", version)
	}
	bin, _ := filepath.Abs(filepath.Join(dist, "knockwall-linux-"+name))
	up := t.TempDir()
	cmd := exec.Command("go", "tool", "nfpm", "pkg", "--packager", "deb", "--config", "packaging/nfpm.yaml", "--target", up+"/")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "DIST_DEB_ARCH="+debArch, "DIST_VERSION="+upstream, "DIST_REVISION="+strconv.Itoa(rev+1), "DIST_BINARY="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the upgrade package: %v\n%s", err, out)
	}
	return deb, debFor(t, up, debArch)
}

// TestDebLifecycle installs, upgrades, removes and purges the package for
// this machine's architecture in a throw-away root and network namespace,
// running its maintainer scripts (testdata/debroot.sh).
func TestDebLifecycle(t *testing.T) {
	dist := distDir(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: dpkg --root, mounts and a network namespace")
	}
	need(t, "unshare", "dpkg", "iptables-save", "ip6tables-save")
	deb, deb2 := hostDeb(t, dist)
	cmd := exec.Command("unshare", "--mount", "--net", "--fork", "bash", "testdata/debroot.sh", t.TempDir(), deb, deb2)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testdata/debroot.sh: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// TestUnitUnderSystemd runs the unit under a real systemd in a container
// (testdata/systemd.sh): the sandbox with a working daemon in it, which
// systemd-analyze verify cannot show. PACKAGING_SYSTEMD_TEST=0 skips it.
func TestUnitUnderSystemd(t *testing.T) {
	dist := distDir(t)
	if os.Getenv("PACKAGING_SYSTEMD_TEST") == "0" {
		t.Skip("PACKAGING_SYSTEMD_TEST=0")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts and systemd-nspawn")
	}
	need(t, "unshare", "systemd-nspawn", "nsenter", "python3")
	deb, deb2 := hostDeb(t, dist)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "bash", "testdata/systemd.sh", t.TempDir(), deb, deb2)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testdata/systemd.sh: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// TestOpenWrtConfigIsDebianConfig: one configuration, two packages.
func TestOpenWrtConfigIsDebianConfig(t *testing.T) {
	if !bytes.Equal(readFile(t, filepath.Join(openwrtDir, "files", "knockwall.yaml")), readFile(t, "knockwall.yaml")) {
		t.Error("openwrt/knockwall/files/knockwall.yaml differs from knockwall.yaml: copy it over")
	}
}

// openwrtScripts are the maintainer scripts embedded in the OpenWrt
// Makefile (define Package/knockwall/NAME ... endef), with make's $$
// unescaped.
func openwrtScripts(t *testing.T) map[string]string {
	t.Helper()
	mk := string(readFile(t, filepath.Join(openwrtDir, "Makefile")))
	scripts := map[string]string{}
	for _, m := range regexp.MustCompile(`(?ms)^define Package/knockwall/(postinst|prerm)\n(.*?)^endef$`).FindAllStringSubmatch(mk, -1) {
		scripts[m[1]] = strings.ReplaceAll(m[2], "$$", "$")
	}
	return scripts
}

func TestShellScripts(t *testing.T) {
	need(t, "sh", "shellcheck")
	files := []string{"deb/postinst", "deb/prerm", "deb/postrm", "version.sh", "dist.sh", filepath.Join(openwrtDir, "files", "knockwall.init"),
		filepath.Join(openwrtDir, "files", "knockwall-guard.init")}
	tmp := t.TempDir()
	for name, body := range openwrtScripts(t) {
		path := filepath.Join(tmp, "openwrt-"+name)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, path)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if out, err := exec.Command("sh", "-n", f).CombinedOutput(); err != nil {
				t.Errorf("sh -n: %v\n%s", err, out)
			}
			if out, err := exec.Command("shellcheck", "-s", "sh", f).CombinedOutput(); err != nil {
				t.Errorf("shellcheck -s sh: %v\n%s", err, out)
			}
		})
	}
	for _, bash := range []string{"testdata/debroot.sh", "testdata/systemd.sh"} {
		if out, err := exec.Command("shellcheck", bash).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s: %v\n%s", bash, err, out)
		}
	}
}

func TestOpenWrtMakefile(t *testing.T) {
	mk := string(readFile(t, filepath.Join(openwrtDir, "Makefile")))
	for _, want := range []string{
		"include $(TOPDIR)/rules.mk",
		"include $(INCLUDE_DIR)/package.mk",
		"include ../../lang/golang/golang-package.mk",
		"PKG_NAME:=knockwall",
		"GO_PKG:=github.com/knockwall/knockwall",
		"GO_PKG_BUILD_PKG:=$(GO_PKG)/cmd/knockwall",
		"GO_PKG_LDFLAGS_X:=main.version=$(PKG_VERSION)",
		"GO_PKG_TAGS:=nethttpomithttp2,knockwall_omit_cluster,knockwall_omit_qr",
		"+kmod-nft-queue +kmod-nft-core",
		"$(INSTALL_BIN) ./files/knockwall.init $(1)/etc/init.d/knockwall",
		"$(INSTALL_BIN) ./files/knockwall-guard.init $(1)/etc/init.d/knockwall-guard",
		"$(INSTALL_CONF) ./files/knockwall.yaml $(1)/etc/knockwall/knockwall.yaml", // mode 0600
		"$(eval $(call BuildPackage,knockwall))",
	} {
		if !strings.Contains(mk, want) {
			t.Errorf("openwrt Makefile lacks %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^define Package/knockwall/conffiles\n/etc/knockwall/knockwall.yaml\nendef$`).MatchString(mk) {
		t.Error("openwrt Makefile: the config is not a conffile")
	}
	scripts := openwrtScripts(t)
	if !strings.Contains(scripts["prerm"], `"${PKG_UPGRADE}" = 1 ] && exit 0`) {
		t.Error("openwrt prerm does not leave the rules alone on upgrade")
	}
	if !strings.Contains(scripts["prerm"], "knockwall rules remove") {
		t.Error("openwrt prerm does not remove knockwall's rules")
	}
}

// TestOpenWrtInit sources the procd init script with procd's functions
// replaced by recorders, the way rc.common would call it.
func TestOpenWrtInit(t *testing.T) {
	need(t, "sh")
	init := string(readFile(t, filepath.Join(openwrtDir, "files", "knockwall.init")))
	shipped := readFile(t, "knockwall.yaml")
	_, edited, _ := bytes.Cut(shipped, []byte("\n"))
	tests := []struct {
		name    string
		config  []byte
		call    string // start_service | reload_service
		checkRC int    // exit status of the stand-in `knockwall config check`
		wantRC  int
		want    []string
		notWant []string
	}{
		{
			name: "unconfigured: start refused", config: shipped, call: "start_service", wantRC: 1,
			want:    []string{"stderr: knockwall: not started: edit", "logger -t knockwall"},
			notWant: []string{"procd_open_instance"},
		},
		{
			name: "configured: start", config: edited, call: "start_service",
			want: []string{
				"procd_open_instance",
				"procd_set_param command /usr/sbin/knockwall run -c /etc/knockwall/knockwall.yaml",
				"procd_set_param respawn",
				"procd_set_param term_timeout",
				"procd_close_instance",
			},
		},
		{
			name: "reload: validate, then SIGHUP", config: edited, call: "reload_service",
			want: []string{"knockwall config check -c /etc/knockwall/knockwall.yaml", "procd_send_signal knockwall * HUP"},
		},
		{
			name: "reload: a bad config never reaches the daemon", config: edited, call: "reload_service", checkRC: 2, wantRC: 1,
			want: []string{"knockwall config check"}, notWant: []string{"procd_send_signal"},
		},
		{
			name: "reload: unconfigured", config: shipped, call: "reload_service", wantRC: 1,
			notWant: []string{"procd_send_signal", "config check"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			conf := filepath.Join(tmp, "knockwall.yaml")
			if err := os.WriteFile(conf, tt.config, 0o600); err != nil {
				t.Fatal(err)
			}
			log := filepath.Join(tmp, "calls")
			harness := `
rec() { echo "$*" >>"$CALLS"; }
procd_open_instance() { rec procd_open_instance "$@"; }
procd_set_param() { rec procd_set_param "$@"; }
procd_close_instance() { rec procd_close_instance "$@"; }
procd_send_signal() { rec procd_send_signal "$@"; }
logger() { rec logger "$@"; }
` + init + `
CONF=$TEST_CONF
[ "$START" -gt 19 ] || { echo "START=$START is not after fw4 (19)"; exit 99; }
[ "$USE_PROCD" = 1 ] || exit 98
case $1 in reload_service) PROG=knockwall_stub ;; esac
knockwall_stub() { rec knockwall "$@"; return "$CHECK_RC"; }
"$1" 2>"$CALLS.err"; rc=$?
sed 's/^/stderr: /' "$CALLS.err" >>"$CALLS"
exit $rc
`
			cmd := exec.Command("sh", "-c", harness, "harness", tt.call)
			cmd.Env = append(os.Environ(), "CALLS="+log, "TEST_CONF="+conf, "CHECK_RC="+strconv.Itoa(tt.checkRC))
			out, err := cmd.CombinedOutput()
			rc := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				rc = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			calls, _ := os.ReadFile(log)
			// The harness runs with CONF pointing at the test file; the
			// recorded command line names the real path.
			got := strings.ReplaceAll(string(calls), conf, confPath)
			if rc != tt.wantRC {
				t.Errorf("%s exit %d, want %d\n%s%s", tt.call, rc, tt.wantRC, out, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("calls lack %q:\n%s", w, got)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(got, w) {
					t.Errorf("calls have %q:\n%s", w, got)
				}
			}
		})
	}
}

// TestOpenWrtGuardInit runs the boot guard's init script as rc.common
// would, with a stand-in knockwall: it runs `knockwall rules guard` before
// the firewall and the network start, not with the shipped configuration,
// logs what went wrong, and leaves the guard when stopped.
func TestOpenWrtGuardInit(t *testing.T) {
	need(t, "sh")
	init := string(readFile(t, filepath.Join(openwrtDir, "files", "knockwall-guard.init")))
	shipped := readFile(t, "knockwall.yaml")
	_, edited, _ := bytes.Cut(shipped, []byte("\n"))
	tests := []struct {
		name    string
		config  []byte
		call    string // start | stop
		guardRC int    // exit status of the stand-in `knockwall rules guard`
		wantRC  int
		want    []string
		notWant []string
	}{
		{name: "configured: guard", config: edited, call: "start",
			want: []string{"knockwall rules guard -c /etc/knockwall/knockwall.yaml", "logger -t knockwall -p daemon.notice knockwall: guard installed"}},
		{name: "unconfigured: no guard", config: shipped, call: "start",
			want: []string{"logger -t knockwall -p daemon.notice guard not installed"}, notWant: []string{"rules guard"}},
		{name: "bad config: logged, non-zero", config: edited, call: "start", guardRC: 2, wantRC: 1,
			want: []string{"knockwall rules guard", "logger -t knockwall -p daemon.err"}},
		{name: "stop leaves the guard", config: edited, call: "stop", notWant: []string{"knockwall"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			conf := filepath.Join(tmp, "knockwall.yaml")
			if err := os.WriteFile(conf, tt.config, 0o600); err != nil {
				t.Fatal(err)
			}
			log := filepath.Join(tmp, "calls")
			harness := `
rec() { echo "$*" >>"$CALLS"; }
logger() { rec logger "$@"; }
` + init + `
CONF=$TEST_CONF
[ "$START" -lt 19 ] || { echo "START=$START is not before fw4 (19) and the network (20)"; exit 99; }
[ "$START" -gt 10 ] || { echo "START=$START is not after boot (10)"; exit 98; }
PROG=knockwall_stub
knockwall_stub() {
	rec knockwall "$@"
	if [ "$GUARD_RC" = 0 ]; then echo "knockwall: guard installed (nftables)"; else echo "knockwall: bad config; no rule changed" >&2; fi
	return "$GUARD_RC"
}
"$1"
`
			cmd := exec.Command("sh", "-c", harness, "harness", tt.call)
			cmd.Env = append(os.Environ(), "CALLS="+log, "TEST_CONF="+conf, "GUARD_RC="+strconv.Itoa(tt.guardRC))
			out, err := cmd.CombinedOutput()
			rc := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				rc = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			calls, _ := os.ReadFile(log)
			got := strings.ReplaceAll(string(calls), conf, confPath)
			if rc != tt.wantRC {
				t.Errorf("%s exit %d, want %d\n%s%s", tt.call, rc, tt.wantRC, out, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("calls lack %q:\n%s", w, got)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(got, w) {
					t.Errorf("calls have %q:\n%s", w, got)
				}
			}
		})
	}
}
