// Package kerneltest decides whether a test may use the running kernel:
// network namespaces, netfilter (nftables, iptables) and NFQUEUE. Tests that
// do call Require first, so that every such test skips for the same stated
// reason when it cannot run.
//
// Only test code imports it.
package kerneltest

import (
	"os"
	"testing"
)

// EnvNoKernel names the environment variable that, when set, says why the
// tests must not use the kernel; the tests that need it skip with that
// reason. `make unit-mips` sets it: it runs the unit tests as big-endian
// mips binaries under qemu-user, which passes no NETLINK_NETFILTER socket
// through, and the namespace tests exercise host tools that the native run
// already covers.
const EnvNoKernel = "KNOCKWALL_TEST_NO_KERNEL"

// Require skips t when EnvNoKernel is set or when the test does not run as
// root (CI runs as root, so there kernel tests always run).
func Require(t testing.TB) {
	t.Helper()
	if why := os.Getenv(EnvNoKernel); why != "" {
		t.Skipf("skipping: needs the kernel, and %s says not to use it: %s", EnvNoKernel, why)
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (network namespaces, the firewall); CI runs as root")
	}
}
