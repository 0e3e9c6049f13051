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

// Allow reports whether an event may be logged now.
func (l *Limiter) Allow() bool {
	now, last := time.Now().UnixNano(), l.last.Load()
	return now-last >= int64(l.Every) && l.last.CompareAndSwap(last, now)
}
