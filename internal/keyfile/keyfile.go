// Package keyfile reads secret key files the way every key of knockwall's
// is read: only a regular file (no symlink, no FIFO), only one that neither
// group nor others may access, only one owned by root or by the user
// running knockwall.
package keyfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// ErrPerm is returned for a key file that group or others may access, or
// that another user owns.
var ErrPerm = errors.New("key file is accessible by group or others")

// Load reads the key file at path as Read does and parses it with parse;
// a parse error names the file.
func Load[K any](path string, max int64, parse func([]byte) (K, error)) (K, error) {
	content, err := Read(path, max)
	if err != nil {
		var zero K
		return zero, err
	}
	k, err := parse(content)
	if err != nil {
		return k, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// Read returns the first max bytes of the key file at path, or why it
// refuses the file.
func Read(path string, max int64) ([]byte, error) {
	// No symlink (its target's permissions are not what ls shows), and no
	// blocking on a FIFO before the regular-file check.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("key file %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %04o: %w (run: chmod 600 %s)", path, perm, ErrPerm, path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 && int(sys.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("key file %s is owned by uid %d: %w (it must belong to root or to the user running knockwall)", path, sys.Uid, ErrPerm)
	}
	content, err := io.ReadAll(io.LimitReader(f, max))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return content, nil
}
