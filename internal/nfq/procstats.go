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
	found := false
	_ = eachQueue(b, func(q queueLine) {
		found = found || q.num == uint64(num)
	})
	return found
}

// queueLine is what knockwall reads of one line of the kernel's queue list,
// "queue_number peer_portid queue_total copy_mode copy_range queue_dropped
// user_dropped id_sequence 1".
type queueLine struct {
	num, waiting, queueDropped, userDropped uint64
}

// eachQueue calls fn for each line of the kernel's queue list b.
func eachQueue(b []byte, fn func(queueLine)) error {
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
				return fmt.Errorf("parse %s: %q: %w", procFile, sc.Text(), err)
			}
			v[i] = n
		}
		fn(queueLine{num: v[0], waiting: v[2], queueDropped: v[5], userDropped: v[6]})
	}
	return sc.Err()
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

// parseKernelStats sums the counters of queues first..first+count-1 in the
// kernel's queue list b.
func parseKernelStats(b []byte, first, count int) (KernelStats, error) {
	var st KernelStats
	err := eachQueue(b, func(q queueLine) {
		if q.num < uint64(first) || q.num >= uint64(first+count) {
			return
		}
		st.Waiting += q.waiting
		st.QueueDropped += q.queueDropped
		st.UserDropped += q.userDropped
	})
	if err != nil {
		return KernelStats{}, err
	}
	return st, nil
}
