//go:build unix

package config

import (
	"io/fs"
	"syscall"
)

// openNonblock keeps the open of a FIFO from blocking before the
// regular-file check.
const openNonblock = syscall.O_NONBLOCK

// fileOwner is the uid that owns the file st describes.
func fileOwner(st fs.FileInfo) (uint32, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return sys.Uid, true
}
