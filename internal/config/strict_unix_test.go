//go:build unix

package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/knockwall/knockwall/rules"
)

// TestFileModeUnix: a FIFO is refused without blocking, and a file that
// another user owns is refused with its owner and mode named.
func TestFileModeUnix(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("services:\n  ssh:\n    ports: [22]\n    sequence: [7000, 8000, 9000]\n"), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("a FIFO", func(t *testing.T) {
		p := filepath.Join(dir, "fifo.yaml")
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(Source{Path: p}, nil); !errors.Is(err, rules.ErrInvalid) || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("Load = %v, want a refusal", err)
		}
	})
	t.Run("another user's file", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("skipping: chown to another user needs root; CI runs as root")
		}
		p := write("nobody.yaml", 0o600)
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		_, err := Load(Source{Path: p}, nil)
		if !errors.Is(err, ErrFileMode) || !strings.Contains(err.Error(), "uid 65534") || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "mode 0600") {
			t.Fatalf("Load = %v, want a refusal naming the file, its mode and its owner", err)
		}
	})
}
