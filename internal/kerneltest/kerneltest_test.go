package kerneltest

import (
	"os"
	"testing"
)

// TestRequireSkipsWithTheReason: with EnvNoKernel set, Require skips and
// says why; the test body after it never runs.
func TestRequireSkipsWithTheReason(t *testing.T) {
	t.Setenv(EnvNoKernel, "qemu-user runs these tests")
	ran := false
	var reason string
	t.Run("kernel test", func(t *testing.T) {
		defer func() {
			if t.Skipped() {
				reason = "skipped"
			}
		}()
		Require(t)
		ran = true
	})
	if ran || reason != "skipped" {
		t.Errorf("Require with %s set: the test ran (%v), skipped (%q)", EnvNoKernel, ran, reason)
	}
}

// TestRequireAsRoot: without EnvNoKernel, a root test passes Require, and a
// test as another user is skipped.
func TestRequireAsRoot(t *testing.T) {
	t.Setenv(EnvNoKernel, "") // empty is unset
	passed := false
	t.Run("kernel test", func(t *testing.T) {
		Require(t)
		passed = true
	})
	if root := os.Geteuid() == 0; passed != root {
		t.Errorf("root %v: Require let the test run: %v", root, passed)
	}
}
