//go:build race

package verdict_test

// raceEnabled: the race detector makes sync.Pool drop objects on purpose, so
// allocation counts are meaningless under it.
const raceEnabled = true
