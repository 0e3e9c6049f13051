package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestClientBuildDeps: where knockwall is only the client (macOS, Windows,
// FreeBSD), it is built from none of the daemon's packages: the daemon's
// commands are in Linux-only files, and nothing the client uses reaches
// into NFQUEUE, the firewall, the control socket or the state file.
func TestClientBuildDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH")
	}
	daemonOnly := []string{
		"github.com/knockwall/knockwall/internal/daemon",
		"github.com/knockwall/knockwall/internal/nfq",
		"github.com/knockwall/knockwall/internal/firewall",
		"github.com/knockwall/knockwall/internal/control",
		"github.com/knockwall/knockwall/internal/state",
		"github.com/knockwall/knockwall/internal/netns",
		"github.com/knockwall/knockwall/internal/rst",
		"github.com/knockwall/knockwall/internal/metrics",
		"github.com/knockwall/knockwall/verdict",
		"github.com/google/nftables",
		"github.com/mdlayher/netlink",
		"github.com/knockwall/knockwall/internal/cluster",
		"github.com/hashicorp/memberlist",
	}
	for _, goos := range []string{"darwin", "windows", "freebsd"} {
		cmd := exec.Command(goTool, "list", "-deps", ".")
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=arm64", "CGO_ENABLED=0")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps for %s: %v", goos, err)
		}
		deps := strings.Fields(string(out))
		for _, pkg := range daemonOnly {
			if slices.Contains(deps, pkg) {
				t.Errorf("the %s client imports %s, a package of the daemon's", goos, pkg)
			}
		}
		if !slices.Contains(deps, "github.com/knockwall/knockwall/internal/keyfile") {
			t.Errorf("the %s client does not import internal/keyfile: is it still the client?", goos)
		}
	}
}
