package nfq

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procFile lists every bound queue of the process's network namespace, and
// threadProcFile those of the calling thread's.
const (
	procFile       = "/proc/net/netfilter/nfnetlink_queue"
	threadProcFile = "/proc/thread-self/net/netfilter/nfnetlink_queue"
)

// queueListed reports whether the kernel's queue list b has queue num.
func queueListed(b []byte, num uint16) bool {
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == strconv.Itoa(int(num)) {
			return true
		}
	}
	return false
}

// KernelStats are the kernel's own counters for a range of queues: what it
// dropped before knockwall could see it.
type KernelStats struct {
	Waiting      uint64 // packets queued now, awaiting a verdict
	QueueDropped uint64 // dropped because the queue was full (queue.max_len)
	UserDropped  uint64 // dropped because the netlink socket buffer was full
}

// ReadKernelStats sums the counters of queues first..first+count-1.
func ReadKernelStats(first, count int) (KernelStats, error) {
	b, err := os.ReadFile(procFile)
	if err != nil {
		return KernelStats{}, fmt.Errorf("read %s: %w", procFile, err)
	}
	return parseKernelStats(b, first, count)
}

// parseKernelStats reads lines of "queue_number peer_portid queue_total
// copy_mode copy_range queue_dropped user_dropped id_sequence 1".
func parseKernelStats(b []byte, first, count int) (KernelStats, error) {
	var st KernelStats
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 7 {
			continue
		}
		var v [7]uint64
		for i := range v {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return KernelStats{}, fmt.Errorf("parse %s: %q: %w", procFile, sc.Text(), err)
			}
			v[i] = n
		}
		if q := int(v[0]); q < first || q >= first+count {
			continue
		}
		st.Waiting += v[2]
		st.QueueDropped += v[5]
		st.UserDropped += v[6]
	}
	return st, sc.Err()
}
