// Package e2e runs the real knockwall binary in throwaway network
// namespaces and checks, from a client namespace, what a knocking (or
// scanning) peer sees. Every test needs root; CI runs as root.
//
// Traffic stays between the namespaces each test creates (10.77.0.0/24 and
// fd00:77::/64 on a private veth); the root namespace's firewall is never
// touched: iptables runs only inside the server namespace.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// suite is what TestMain prepares once for all tests: building the binary
// per test would cost seconds each. It is written before m.Run and only
// read afterwards.
var suite struct {
	bin      string // path of the built knockwall binary
	buildErr error  // why it could not be built, with the compiler's output
}

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		// Every test skips with the reason; nothing to build.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "knockwall-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: temp dir: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	suite.bin = filepath.Join(dir, "knockwall")
	// Built as `make build` and `make dist` build it (static, trimmed):
	// the binary under test is the one shipped, and the build cache is
	// shared with theirs.
	cmd := exec.Command("go", "build", "-tags", "nethttpomithttp2", "-trimpath", "-o", suite.bin, "./cmd/knockwall")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Dir = ".." // the module root
	if out, err := cmd.CombinedOutput(); err != nil {
		suite.buildErr = fmt.Errorf("go build ./cmd/knockwall: %w\n%s", err, out)
	}
	return m.Run()
}

// requireBinary skips when not root and fails when the binary did not build.
func requireBinary(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: e2e tests need root (network namespaces, iptables, NFQUEUE); CI runs them as root")
	}
	if suite.buildErr != nil {
		t.Fatal(suite.buildErr)
	}
	return suite.bin
}
