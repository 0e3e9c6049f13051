//go:build !race

// Package race tells tests whether the race detector is on: it makes
// sync.Pool drop objects on purpose, so allocation counts are meaningless
// under it.
package race

// Enabled reports whether the binary runs under the race detector.
const Enabled = false
