//go:build unix

package keyfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestReadModes: on Unix a key file is read only when group and others
// have no bit at all; a symlink and a FIFO are refused without blocking.
func TestReadModes(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", 0o600)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		want       string // "" reads; else in the error
		perm       bool   // the error is ErrPerm
	}{
		{"0600", good, "", false},
		{"0400", write("ro", 0o400), "", false},
		{"0640", write("g", 0o640), "chmod 600", true},
		{"0604", write("o", 0o604), "chmod 600", true},
		{"0610", write("gx", 0o610), "chmod 600", true},
		{"symlink", link, "too many levels of symbolic links", false},
		{"fifo", fifo, "not a regular file", false},
		{"missing", filepath.Join(dir, "nope"), "no such file", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Read(tt.path, 1024)
			if tt.want == "" {
				if err != nil || string(b) != "secret\n" {
					t.Fatalf("Read = %q, %v", b, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, ErrPerm) != tt.perm {
				t.Fatalf("err = %v; want %q (ErrPerm: %t)", err, tt.want, tt.perm)
			}
		})
	}
}
