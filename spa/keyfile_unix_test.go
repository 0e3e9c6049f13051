//go:build unix

package spa

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestReadKeyFileRefusesLinksAndFIFOs(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "k.key")
	if _, err := WriteNewKeyFile(real); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(link); err == nil {
		t.Error("a symlinked key file was read")
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
}
