//go:build unix

package fwknop

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReadKeyFile(t *testing.T) {
	content, err := os.ReadFile("testdata/fwknop.key")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "fwknop.key")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := ReadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r Request
	if err := k.Verify(vectorByName(t, "access_tcp22").packet, &r); err != nil {
		t.Fatalf("key read from file: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadKeyFile(path); !errors.Is(err, ErrKeyPerm) || !strings.Contains(err.Error(), path) {
			t.Errorf("mode %04o: err = %v, want ErrKeyPerm naming the file", mode, err)
		}
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(link); err == nil || !strings.Contains(err.Error(), link) {
		t.Errorf("symlink: err = %v, want a refusal naming it", err)
	}
	if _, err := ReadKeyFile(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: err = %v", err)
	}
	fifo := filepath.Join(dir, "fifo.key")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := ReadKeyFile(fifo); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a FIFO was read as a key file")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("ReadKeyFile blocked on a FIFO")
	}
	if os.Geteuid() == 0 {
		// Root may read anyone's file; the check must still refuse one
		// that belongs to another user.
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadKeyFile(path); !errors.Is(err, ErrKeyPerm) || !strings.Contains(err.Error(), "uid 65534") {
			t.Errorf("owned by nobody: err = %v, want ErrKeyPerm", err)
		}
	}
}
