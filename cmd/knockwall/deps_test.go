package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestBinaryDeps: the router build of the daemon (mipsle, with the
// knockwall_omit_cluster tag that the router builds take) imports none of
// the packages that cost far more than they give it (docs/decisions.md;
// packaging's TestBinaries checks the size budget itself). A package's
// initialisation is linked in whenever it is imported, so importing is
// enough to cost.
func TestBinaryDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH")
	}
	cmd := exec.Command(goTool, "list", "-deps", "-tags", "nethttpomithttp2,knockwall_omit_cluster,knockwall_omit_qr", ".")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	for pkg, why := range map[string]string{
		"github.com/spf13/viper":                             "internal/config reads YAML with yaml.v3 and decodes with mapstructure",
		"github.com/prometheus/client_golang/prometheus":     "brings protobuf: internal/metrics writes the text format",
		"google.golang.org/protobuf/proto":                   "its reflect.Value.MethodByName keeps every exported method",
		"github.com/spf13/cobra/doc":                         "the man-page generator is in -tags genman builds only",
		"github.com/hashicorp/memberlist":                    "the cluster (~2.1 MB) is left out of the router builds by knockwall_omit_cluster",
		"github.com/skip2/go-qrcode":                         "the router builds leave the QR code out (knockwall_omit_qr)",
		"github.com/knockwall/knockwall/internal/pkttest":    "test-only packet builder",
		"github.com/knockwall/knockwall/internal/kerneltest": "test-only kernel-test gate",
	} {
		if slices.Contains(deps, pkg) {
			t.Errorf("cmd/knockwall imports %s (%s)", pkg, why)
		}
	}
}
