//go:build unix

package keyfile

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// open opens path for reading: no symlink (its target's permissions are
// not what ls shows), and no blocking on a FIFO before the regular-file
// check.
func open(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}

// ownerOnly refuses a file whose mode lets group or others in at all, and
// one owned by anyone but root or the effective user.
func ownerOnly(what, path string, _ *os.File, st fs.FileInfo) error {
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s %s has mode %04o: %w (run: chmod 600 %s)", what, path, perm, ErrPerm, path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("%s %s is owned by uid %d: %w (it must belong to root or to the user running knockwall)", what, path, sys.Uid, ErrPerm)
	}
	return nil
}
