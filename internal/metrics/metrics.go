// Package metrics exposes knockwall's counters to Prometheus (opt-in:
// metrics.listen), in the text exposition format, version 0.0.4, served by
// net/http to scrapers that send the bearer token of metrics.token_file.
//
// Nothing is counted here: a Collector reads the daemon's Stats at scrape
// time, so the packet path carries no metrics code beyond the per-queue
// atomic counters the daemon keeps anyway. Labels are bounded (verdict,
// reason, result, method, queue); no metric is labelled by source address,
// and none tells a knock port from a protected port (daemon.PublicReason,
// daemon.TokenOutcomes).
//
// The format is written here, not by client_golang: a handful of
// counters and gauges need none of its machinery, and linking it would
// bring google.golang.org/protobuf (whose use of reflect.Value.MethodByName
// makes the linker keep every exported method of every reachable type)
// into a router's binary (docs/decisions.md).
// The tests read the output back with prometheus/common's expfmt parser,
// register it on client_golang's pedantic registry and lint it with its
// promlint, so Prometheus's own code checks what is served.
package metrics

import (
	"math"
	"runtime"
	"strconv"
	"strings"

	"github.com/knockwall/knockwall/internal/daemon"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// ContentType is the type of the text exposition format 0.0.4.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

const namespace = "knockwall"

// Metric types.
const (
	counter = "counter"
	gauge   = "gauge"
)

// Source is what the collector reads at scrape time (*daemon.Daemon).
type Source interface {
	Stats() daemon.Stats
}

// Collector turns a Source's Stats into the exposition format at each
// scrape.
type Collector struct {
	src Source
}

// NewCollector reads src at each scrape.
func NewCollector(src Source) *Collector {
	return &Collector{src: src}
}

// AppendText reads the source once and appends every metric to b, in the
// text exposition format: families sorted by name, each a HELP and a TYPE
// line and its samples, label names sorted. Every label value that can
// occur is written, zero or not, so rates start from the first scrape.
func (c *Collector) AppendText(b []byte) []byte {
	st := c.src.Stats()
	n := &st.Counts
	t := st.Tracker
	w := writer{b: b}

	w.family("build_info", gauge, "Always 1; the labels say what runs.")
	w.gauge("build_info", 1, "backend", st.Backend, "goversion", runtime.Version(), "version", st.Version)
	w.appendCluster(&st)
	fp := 0.0
	if st.FastPath {
		fp = 1
	}
	w.oneGauge("fast_path", "1 when grants are mirrored into the kernel's fast path.", fp)
	w.oneCounter("firewall_heals_total", "Times firewall rules removed by someone else were put back.", st.Heals)
	w.oneGauge("grants_active", "Live (source, service) grants.", float64(t.Grants))
	w.oneCounter("grants_exhausted_total", "SYNs refused because their source's one-shot grants had no connection left.", t.Exhausted)
	w.oneCounter("grants_refused_total", "Grants refused because the grant table was full of live grants.", t.RefusedGrants)
	w.family("grants_total", counter, "Grants made, by how (sequence, rotating, spa, fwknop, manual).")
	for m, count := range n.Grants {
		if m != 0 {
			w.counter("grants_total", count, "method", tracker.Method(m).String())
		}
	}
	w.oneCounter("kernel_queue_dropped_total", "Packets the kernel dropped because a queue was full (queue.max_len).", st.Kernel.QueueDropped)
	w.oneGauge("kernel_queue_waiting", "Packets queued in the kernel awaiting a verdict.", float64(st.Kernel.Waiting))
	w.oneCounter("kernel_user_dropped_total", "Packets the kernel dropped because a queue's socket buffer was full.", st.Kernel.UserDropped)
	w.family("queue_overruns_total", counter, "Times the kernel reported a full socket buffer (ENOBUFS), by NFQUEUE number.")
	for _, q := range st.Queues {
		w.counter("queue_overruns_total", q.Overruns, "queue", strconv.Itoa(int(q.Num)))
	}
	w.family("queue_packets_total", counter, "Packets received from the kernel, by NFQUEUE number.")
	for _, q := range st.Queues {
		w.counter("queue_packets_total", q.Packets, "queue", strconv.Itoa(int(q.Num)))
	}
	w.family("queue_verdict_errors_total", counter, "Verdicts the kernel refused, by NFQUEUE number.")
	for _, q := range st.Queues {
		w.counter("queue_verdict_errors_total", q.VerdictErrors, "queue", strconv.Itoa(int(q.Num)))
	}
	w.oneCounter("reloads_total", "Configuration reloads that took effect.", st.Reloads)
	w.family("spa_tokens_total", counter, "SPA and fwknop tokens, by result (accepted, refused or replayed).")
	for i, count := range n.TokensByOutcome() {
		w.counter("spa_tokens_total", count, "result", daemon.TokenOutcomes[i])
	}
	w.oneGauge("start_time_seconds", "When the daemon started, in seconds since the Unix epoch.", float64(st.Started.UnixNano())/1e9)
	w.family("verdicts_total", counter, "Packets judged, by verdict and reason (a knock counts as a refused SYN, no-grant).")
	verdicts := n.PublicVerdicts()
	for v := range verdicts {
		for r, count := range verdicts[v] {
			if daemon.PublicReason(verdict.Reason(r)) == verdict.Reason(r) {
				w.counter("verdicts_total", count, "reason", verdict.Reason(r).String(), "verdict", verdict.Verdict(v).String())
			}
		}
	}
	return w.b
}

// writer appends the text exposition format. Names are the package's
// constants, valid as they are; HELP text and label values are escaped.
type writer struct{ b []byte }

// family starts a metric family: its HELP and TYPE lines.
func (w *writer) family(name, typ, help string) {
	w.b = append(w.b, "# HELP "+namespace+"_"...)
	w.b = append(w.b, name...)
	w.b = append(w.b, ' ')
	w.b = appendEscaped(w.b, help, false)
	w.b = append(w.b, "\n# TYPE "+namespace+"_"...)
	w.b = append(w.b, name...)
	w.b = append(w.b, ' ')
	w.b = append(w.b, typ...)
	w.b = append(w.b, '\n')
}

// counter appends a sample of a counter, exact: a uint64 needs no float.
func (w *writer) counter(name string, v uint64, labels ...string) {
	w.name(name, labels)
	w.b = strconv.AppendUint(w.b, v, 10)
	w.b = append(w.b, '\n')
}

// gauge appends a sample of a gauge.
func (w *writer) gauge(name string, v float64, labels ...string) {
	w.name(name, labels)
	w.b = appendFloat(w.b, v)
	w.b = append(w.b, '\n')
}

// oneCounter writes a family of one unlabelled counter.
func (w *writer) oneCounter(name, help string, v uint64) {
	w.family(name, counter, help)
	w.counter(name, v)
}

// oneGauge writes a family of one unlabelled gauge.
func (w *writer) oneGauge(name, help string, v float64) {
	w.family(name, gauge, help)
	w.gauge(name, v)
}

// name appends a sample's name and its labels, given as name, value
// pairs, then the space before the value.
func (w *writer) name(name string, labels []string) {
	w.b = append(w.b, namespace+"_"...)
	w.b = append(w.b, name...)
	if len(labels) > 0 {
		w.b = append(w.b, '{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.b = append(w.b, labels[i]...)
			w.b = append(w.b, `="`...)
			w.b = appendEscaped(w.b, labels[i+1], true)
			w.b = append(w.b, '"')
		}
		w.b = append(w.b, '}')
	}
	w.b = append(w.b, ' ')
}

// appendEscaped appends s as the format wants it: a backslash as \\ and a
// line feed as \n, and in a label value (quoted) a double quote as \".
// Invalid UTF-8 becomes U+FFFD: the format is UTF-8.
func appendEscaped(b []byte, s string, quoted bool) []byte {
	s = strings.ToValidUTF8(s, "\uFFFD")
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quoted:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendFloat appends v as the format wants it: Go's shortest
// representation, and NaN, +Inf, -Inf.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}
