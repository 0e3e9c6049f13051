// Package metrics exposes knockwall's counters to Prometheus (opt-in:
// metrics.listen).
//
// Nothing is counted here: a custom Collector reads the daemon's Stats at
// scrape time, so the packet path carries no metrics code beyond the
// per-queue atomic counters the daemon keeps anyway. Labels are bounded
// (verdict, reason, event, result, method, queue); no metric is labelled
// by source address. The collector is registered on a registry of its own,
// never the global default one.
package metrics

import (
	"runtime"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/knockwall/knockwall/internal/daemon"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

const namespace = "knockwall"

// Source is what the collector reads at scrape time (*daemon.Daemon).
type Source interface {
	Stats() daemon.Stats
}

// Collector turns a Source's Stats into metrics at each scrape.
type Collector struct {
	src Source

	verdicts, knocks, grants, tokens                     *prometheus.Desc
	grantsRefused, grantsActive, grantsExhausted         *prometheus.Desc
	pending, evicted, rateLimited                        *prometheus.Desc
	queuePackets, queueOverruns, queueVerdictErrors      *prometheus.Desc
	kernelQueueDropped, kernelUserDropped, kernelWaiting *prometheus.Desc
	heals, reloads, buildInfo, startTime, fastPath       *prometheus.Desc
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(namespace+"_"+name, help, labels, nil)
}

// NewCollector reads src at each scrape.
func NewCollector(src Source) *Collector {
	return &Collector{
		src:                src,
		verdicts:           desc("verdicts_total", "Packets judged, by verdict and reason.", "verdict", "reason"),
		knocks:             desc("knocks_total", "Knocks, by what they did to their source's progress.", "event"),
		grants:             desc("grants_total", "Grants made, by how (sequence, spa, fwknop, manual).", "method"),
		tokens:             desc("spa_tokens_total", "SPA tokens, by result (ok, or why refused).", "result"),
		grantsRefused:      desc("grants_refused_total", "Grants refused because the grant table was full of live grants."),
		grantsActive:       desc("grants_active", "Live (source, service) grants."),
		grantsExhausted:    desc("grants_exhausted_total", "SYNs refused because their source's one-shot grants had no connection left."),
		pending:            desc("pending_sources", "Sources with knock progress."),
		evicted:            desc("pending_evicted_total", "Sources whose knock progress was evicted to make room."),
		rateLimited:        desc("rate_limited_total", "Knock attempts refused by the per-source rate limit."),
		queuePackets:       desc("queue_packets_total", "Packets received from the kernel, by NFQUEUE number.", "queue"),
		queueOverruns:      desc("queue_overruns_total", "Times the kernel reported a full socket buffer (ENOBUFS), by NFQUEUE number.", "queue"),
		queueVerdictErrors: desc("queue_verdict_errors_total", "Verdicts the kernel refused, by NFQUEUE number.", "queue"),
		kernelQueueDropped: desc("kernel_queue_dropped_total", "Packets the kernel dropped because a queue was full (queue.max_len)."),
		kernelUserDropped:  desc("kernel_user_dropped_total", "Packets the kernel dropped because a queue's socket buffer was full."),
		kernelWaiting:      desc("kernel_queue_waiting", "Packets queued in the kernel awaiting a verdict."),
		heals:              desc("firewall_heals_total", "Times firewall rules removed by someone else were put back."),
		reloads:            desc("reloads_total", "Configuration reloads that took effect."),
		buildInfo:          desc("build_info", "Always 1; the labels say what runs.", "version", "goversion", "backend"),
		startTime:          desc("start_time_seconds", "When the daemon started, in seconds since the Unix epoch."),
		fastPath:           desc("fast_path", "1 when grants are mirrored into the kernel's fast path."),
	}
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.verdicts, c.knocks, c.grants, c.tokens, c.grantsRefused, c.grantsActive, c.grantsExhausted,
		c.pending, c.evicted, c.rateLimited, c.queuePackets, c.queueOverruns, c.queueVerdictErrors,
		c.kernelQueueDropped, c.kernelUserDropped, c.kernelWaiting, c.heals, c.reloads, c.buildInfo, c.startTime, c.fastPath} {
		ch <- d
	}
}

// Collect reads the source once and sends every metric. Every label value
// that can occur is sent, zero or not, so rates start from the first
// scrape.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	n := &st.Counts
	for v := range n.Verdicts {
		for r, count := range n.Verdicts[v] {
			counter(c.verdicts, count, verdict.Verdict(v).String(), verdict.Reason(r).String())
		}
	}
	for e, count := range n.Knocks {
		if tracker.Event(e) != tracker.EventNone {
			counter(c.knocks, count, tracker.Event(e).String())
		}
	}
	for m, count := range n.Grants {
		if m != 0 {
			counter(c.grants, count, tracker.Method(m).String())
		}
	}
	for i, count := range n.Tokens {
		counter(c.tokens, count, daemon.TokenResults[i])
	}
	t := st.Tracker
	counter(c.grantsRefused, t.RefusedGrants)
	gauge(c.grantsActive, float64(t.Grants))
	counter(c.grantsExhausted, t.Exhausted)
	gauge(c.pending, float64(t.Pending))
	counter(c.evicted, t.EvictedPending)
	counter(c.rateLimited, t.Limited)
	for _, q := range st.Queues {
		num := strconv.Itoa(int(q.Num))
		counter(c.queuePackets, q.Packets, num)
		counter(c.queueOverruns, q.Overruns, num)
		counter(c.queueVerdictErrors, q.VerdictErrors, num)
	}
	counter(c.kernelQueueDropped, st.Kernel.QueueDropped)
	counter(c.kernelUserDropped, st.Kernel.UserDropped)
	gauge(c.kernelWaiting, float64(st.Kernel.Waiting))
	counter(c.heals, st.Heals)
	counter(c.reloads, st.Reloads)
	gauge(c.buildInfo, 1, st.Version, runtime.Version(), st.Backend)
	gauge(c.startTime, float64(st.Started.UnixNano())/1e9)
	fp := 0.0
	if st.FastPath {
		fp = 1
	}
	gauge(c.fastPath, fp)
}

// NewRegistry is a registry of its own holding a collector of src.
func NewRegistry(src Source) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(NewCollector(src)); err != nil {
		return nil, err
	}
	return reg, nil
}
