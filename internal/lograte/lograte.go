// Package lograte limits log lines that packets can cause: a flood must not
// turn into a flood of log lines.
package lograte

import (
	"sync/atomic"
	"time"
)

// Limiter lets one event through per Every; it is safe for concurrent use.
type Limiter struct {
	Every time.Duration
	last  atomic.Int64 // unix nanos of the last event let through
}

// Allow reports whether an event at now may be logged.
func (l *Limiter) Allow(now time.Time) bool {
	t, last := now.UnixNano(), l.last.Load()
	return t-last >= int64(l.Every) && l.last.CompareAndSwap(last, t)
}
