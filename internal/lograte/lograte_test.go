package lograte

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestAllow: one event per Every, however many goroutines ask at once.
func TestAllow(t *testing.T) {
	l := Limiter{Every: time.Hour}
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if l.Allow(time.Now()) {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := allowed.Load(); n != 1 {
		t.Fatalf("%d events allowed within Every, want 1", n)
	}
	l = Limiter{Every: time.Nanosecond}
	l.Allow(time.Now())
	time.Sleep(time.Millisecond)
	if !l.Allow(time.Now()) {
		t.Fatal("an event after Every was refused")
	}
}
