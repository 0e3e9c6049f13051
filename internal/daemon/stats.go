package daemon

import (
	"time"

	"github.com/knockwall/knockwall/internal/cluster"
	"github.com/knockwall/knockwall/internal/nfq"
	"github.com/knockwall/knockwall/tracker"
)

// Stats is a snapshot of the daemon's counters: what status and metrics
// show. Reading it costs the packet path nothing (atomics, and one pass
// over the tracker's shards).
type Stats struct {
	Version  string
	Started  time.Time
	Backend  string // "" when firewall.manage is false
	FastPath bool
	Mode     string // firewall.ModeOwned or ModeSelfHeal; "" when firewall.manage is false
	Queues   []QueueStats
	Kernel   nfq.KernelStats
	Tracker  tracker.Stats
	Heals    uint64 // times rules removed by someone else were put back
	Reloads  uint64
	Counts   Counts
	// Cluster is nil without a cluster.
	Cluster *cluster.Stats
	// ShareDropped counts grants and tokens not told to the cluster for
	// want of room.
	ShareDropped uint64
}

// Stats returns a snapshot.
func (d *Daemon) Stats() Stats {
	d.mu.Lock()
	set, plan := d.set, d.plan
	d.mu.Unlock()
	st := Stats{Version: d.cfg.Version, Started: d.started, Backend: d.backend, Mode: d.mode, Tracker: d.tr.Stats(),
		Heals: d.heals.Load(), Reloads: d.reloadN.Load()}
	if plan != nil {
		st.FastPath = plan.FastPath
	}
	d.mu.Lock()
	for _, q := range d.queues {
		st.Queues = append(st.Queues, q.Stats())
	}
	for _, c := range d.counters {
		c.addTo(&st.Counts)
	}
	d.mu.Unlock()
	st.Counts.Grants[tracker.MethodManual] = d.manual.Load()
	if s := d.sharerOf(); s != nil {
		cs := s.Stats()
		st.Cluster = &cs
		st.ShareDropped = d.shareDropped.Load()
	}
	if d.cfg.KernelStats != nil {
		st.Kernel, _ = d.cfg.KernelStats(set.Queue.Num, set.Queue.Count)
	}
	return st
}

func (d *Daemon) logStats() {
	st := d.Stats()
	var pkts, overruns, verrs, panics, batches uint64
	for _, q := range st.Queues {
		batches += q.Batches
		pkts += q.Packets
		overruns += q.Overruns
		verrs += q.VerdictErrors
		panics += q.Panics
	}
	t := st.Tracker
	d.log.Info("stats", "packets", pkts, "batch_verdicts", batches, "overruns", overruns, "verdict_errors", verrs, "panics", panics,
		"pending", t.Pending, "grants", t.Grants, "evicted_pending", t.EvictedPending, "refused_grants", t.RefusedGrants, "rate_limited", t.Limited,
		"kernel_queue_dropped", st.Kernel.QueueDropped, "kernel_user_dropped", st.Kernel.UserDropped, "heals", st.Heals)
}
