//go:build !unix

package config

import "io/fs"

// openNonblock: no FIFO to block on where this builds.
const openNonblock = 0

// fileOwner: no uid where this builds (the daemon runs on Linux only; the
// mode bits are still checked).
func fileOwner(fs.FileInfo) (uint32, bool) { return 0, false }
