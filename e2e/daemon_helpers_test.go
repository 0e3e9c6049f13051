package e2e

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// What the daemon says about itself: its exit stats line, the kernel's
// queue counters for its queue, its memory and its overrun log lines.

const overrunMsg = "kernel queue overrun: the kernel dropped packets for this queue"

// daemonStats is the daemon's "stats" line, logged as it exits.
type daemonStats struct {
	packets, overruns, pending, grants, evictedPending, refusedGrants, rateLimited uint64
}

func (s daemonStats) String() string {
	return fmt.Sprintf("packets %d, overruns %d, pending %d, grants %d, evicted_pending %d, refused_grants %d, rate_limited %d",
		s.packets, s.overruns, s.pending, s.grants, s.evictedPending, s.refusedGrants, s.rateLimited)
}

// stopStats stops the daemon (it must exit 0) and returns its stats line.
func (fe *floodEnv) stopStats(t *testing.T) daemonStats {
	t.Helper()
	state, err := fe.d.stop()
	if err != nil {
		t.Fatalf("stop daemon: %v", err)
	}
	if state.ExitCode() != 0 {
		t.Errorf("daemon exit status = %v, want 0", state)
	}
	l, _, ok := fe.d.find(0, "stats", nil)
	if !ok {
		t.Fatalf("no stats line in the daemon's log")
	}
	n := func(key string) uint64 {
		v, ok := l[key].(float64)
		if !ok {
			t.Errorf("stats line: %s = %v, want a number", key, l[key])
		}
		return uint64(v)
	}
	s := daemonStats{
		packets: n("packets"), overruns: n("overruns"), pending: n("pending"), grants: n("grants"),
		evictedPending: n("evicted_pending"), refusedGrants: n("refused_grants"), rateLimited: n("rate_limited"),
	}
	t.Logf("daemon stats: %v", s)
	return s
}

// queueCounters reads the server namespace's NFQUEUE and TCP counters.
func (fe *floodEnv) queueCounters(t *testing.T) counters {
	t.Helper()
	return readCounters(t, fe.pair.Server, fe.pid)
}

func logQueueDelta(t *testing.T, what string, before, after counters) {
	t.Helper()
	t.Logf("%s: nfnetlink_queue: queued %d, queue_dropped %d, user_dropped %d; TCP OutRsts %d",
		what, after.queued-before.queued, after.queueDropped-before.queueDropped,
		after.userDropped-before.userDropped, after.outRsts-before.outRsts)
}

// vmRSS is the VmRSS of pid in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("daemon status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// overrunTimes are the times of the daemon's "kernel queue overrun" lines,
// per queue.
func (d *daemon) overrunTimes(t *testing.T) map[string][]time.Time {
	t.Helper()
	out := map[string][]time.Time{}
	for from := 0; ; {
		l, next, ok := d.find(from, overrunMsg, nil)
		if !ok {
			return out
		}
		from = next
		at, err := time.Parse(time.RFC3339Nano, l.str("time"))
		if err != nil {
			t.Errorf("overrun line time %q: %v", l.str("time"), err)
			continue
		}
		out[l.str("queue")] = append(out[l.str("queue")], at)
	}
}
