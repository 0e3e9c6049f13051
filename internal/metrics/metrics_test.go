package metrics

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/knockwall/knockwall/internal/daemon"
	"github.com/knockwall/knockwall/internal/nfq"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// fakeSource returns fixed stats.
type fakeSource struct{ st daemon.Stats }

func (f fakeSource) Stats() daemon.Stats { return f.st }

func sampleStats() daemon.Stats {
	st := daemon.Stats{Version: "1.2.3", Started: time.Unix(1764151200, 500_000_000), Backend: "nftables", FastPath: true,
		Queues:  []daemon.QueueStats{{Num: 0, Packets: 100, Overruns: 1, VerdictErrors: 2}, {Num: 1, Packets: 50}},
		Kernel:  nfq.KernelStats{Waiting: 3, QueueDropped: 4, UserDropped: 5},
		Tracker: tracker.Stats{Pending: 6, Grants: 7, EvictedPending: 8, RefusedGrants: 9, Limited: 10, Exhausted: 11},
		Heals:   12, Reloads: 13}
	c := &st.Counts
	c.Verdicts[verdict.Accept][verdict.ReasonGranted] = 20
	c.Verdicts[verdict.Reject][verdict.ReasonNoGrant] = 21
	c.Verdicts[verdict.Drop][verdict.ReasonMalformed] = 22
	c.Knocks[tracker.EventStep] = 30
	c.Knocks[tracker.EventGrant] = 31
	c.Grants[tracker.MethodSequence] = 31
	c.Grants[tracker.MethodSPA] = 32
	c.Grants[tracker.MethodManual] = 33
	c.Tokens[0] = 32 // ok
	c.Tokens[4] = 40 // bad-mac
	return st
}

// TestCollector: the exposition text of every metric, against a fake.
func TestCollector(t *testing.T) {
	c := NewCollector(fakeSource{sampleStats()})
	var verdicts strings.Builder
	for v := range verdict.NumVerdicts {
		for r := range verdict.NumReasons {
			n := map[string]int{"accept/granted": 20, "reject/no-grant": 21, "drop/malformed": 22}[verdict.Verdict(v).String()+"/"+verdict.Reason(r).String()]
			fmt.Fprintf(&verdicts, "knockwall_verdicts_total{reason=%q,verdict=%q} %d\n", verdict.Reason(r), verdict.Verdict(v), n)
		}
	}
	want := `
# HELP knockwall_build_info Always 1; the labels say what runs.
# TYPE knockwall_build_info gauge
knockwall_build_info{backend="nftables",goversion="` + runtime.Version() + `",version="1.2.3"} 1
# HELP knockwall_fast_path 1 when grants are mirrored into the kernel's fast path.
# TYPE knockwall_fast_path gauge
knockwall_fast_path 1
# HELP knockwall_firewall_heals_total Times firewall rules removed by someone else were put back.
# TYPE knockwall_firewall_heals_total counter
knockwall_firewall_heals_total 12
# HELP knockwall_grants_active Live (source, service) grants.
# TYPE knockwall_grants_active gauge
knockwall_grants_active 7
# HELP knockwall_grants_exhausted_total SYNs refused because their source's one-shot grants had no connection left.
# TYPE knockwall_grants_exhausted_total counter
knockwall_grants_exhausted_total 11
# HELP knockwall_grants_refused_total Grants refused because the grant table was full of live grants.
# TYPE knockwall_grants_refused_total counter
knockwall_grants_refused_total 9
# HELP knockwall_grants_total Grants made, by how (sequence, spa, fwknop, manual).
# TYPE knockwall_grants_total counter
knockwall_grants_total{method="fwknop"} 0
knockwall_grants_total{method="manual"} 33
knockwall_grants_total{method="sequence"} 31
knockwall_grants_total{method="spa"} 32
# HELP knockwall_kernel_queue_dropped_total Packets the kernel dropped because a queue was full (queue.max_len).
# TYPE knockwall_kernel_queue_dropped_total counter
knockwall_kernel_queue_dropped_total 4
# HELP knockwall_kernel_queue_waiting Packets queued in the kernel awaiting a verdict.
# TYPE knockwall_kernel_queue_waiting gauge
knockwall_kernel_queue_waiting 3
# HELP knockwall_kernel_user_dropped_total Packets the kernel dropped because a queue's socket buffer was full.
# TYPE knockwall_kernel_user_dropped_total counter
knockwall_kernel_user_dropped_total 5
# HELP knockwall_knocks_total Knocks, by what they did to their source's progress.
# TYPE knockwall_knocks_total counter
knockwall_knocks_total{event="grant"} 31
knockwall_knocks_total{event="grant-refused"} 0
knockwall_knocks_total{event="repeat"} 0
knockwall_knocks_total{event="reset"} 0
knockwall_knocks_total{event="step"} 30
# HELP knockwall_pending_evicted_total Sources whose knock progress was evicted to make room.
# TYPE knockwall_pending_evicted_total counter
knockwall_pending_evicted_total 8
# HELP knockwall_pending_sources Sources with knock progress.
# TYPE knockwall_pending_sources gauge
knockwall_pending_sources 6
# HELP knockwall_queue_overruns_total Times the kernel reported a full socket buffer (ENOBUFS), by NFQUEUE number.
# TYPE knockwall_queue_overruns_total counter
knockwall_queue_overruns_total{queue="0"} 1
knockwall_queue_overruns_total{queue="1"} 0
# HELP knockwall_queue_packets_total Packets received from the kernel, by NFQUEUE number.
# TYPE knockwall_queue_packets_total counter
knockwall_queue_packets_total{queue="0"} 100
knockwall_queue_packets_total{queue="1"} 50
# HELP knockwall_queue_verdict_errors_total Verdicts the kernel refused, by NFQUEUE number.
# TYPE knockwall_queue_verdict_errors_total counter
knockwall_queue_verdict_errors_total{queue="0"} 2
knockwall_queue_verdict_errors_total{queue="1"} 0
# HELP knockwall_rate_limited_total Knock attempts refused by the per-source rate limit.
# TYPE knockwall_rate_limited_total counter
knockwall_rate_limited_total 10
# HELP knockwall_reloads_total Configuration reloads that took effect.
# TYPE knockwall_reloads_total counter
knockwall_reloads_total 13
# HELP knockwall_start_time_seconds When the daemon started, in seconds since the Unix epoch.
# TYPE knockwall_start_time_seconds gauge
knockwall_start_time_seconds 1.7641512005e+09
# HELP knockwall_verdicts_total Packets judged, by verdict and reason.
# TYPE knockwall_verdicts_total counter
` + verdicts.String()
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), metricNames(want)...); err != nil {
		t.Error(err)
	}
	// SPA tokens: every result, ok and each refusal.
	var tokens strings.Builder
	tokens.WriteString("# HELP knockwall_spa_tokens_total SPA tokens, by result (ok, or why refused).\n# TYPE knockwall_spa_tokens_total counter\n")
	for i, r := range daemon.TokenResults {
		fmt.Fprintf(&tokens, "knockwall_spa_tokens_total{result=%q} %d\n", r, map[int]int{0: 32, 4: 40}[i])
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(tokens.String()), "knockwall_spa_tokens_total"); err != nil {
		t.Error(err)
	}
	// Nothing else is exposed.
	if n, total := testutil.CollectAndCount(c, append(metricNames(want), "knockwall_spa_tokens_total")...), testutil.CollectAndCount(c); n != total {
		t.Errorf("%d metrics exposed, %d of them compared", total, n)
	}
}

func metricNames(exposition string) []string {
	var names []string
	for _, l := range strings.Split(exposition, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == "#" && f[1] == "TYPE" {
			names = append(names, f[2])
		}
	}
	return names
}

// TestLint: every metric follows Prometheus's naming conventions.
func TestLint(t *testing.T) {
	reg, err := NewRegistry(fakeSource{sampleStats()})
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9477": true, "127.1.2.3:9477": true, "[::1]:9477": true, "localhost:9477": true,
		":9477": false, "0.0.0.0:9477": false, "[::]:9477": false, "10.0.0.1:9477": false, "bogus": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %t, want %t", addr, got, want)
		}
	}
}

// TestServer: /metrics over HTTP on a listener of its own; a taken
// address is refused with a message naming metrics.listen.
func TestServer(t *testing.T) {
	reg, err := NewRegistry(fakeSource{sampleStats()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "metrics.listen "+ln.Addr().String()) {
		t.Errorf("Listen on a taken address: %v", err)
	}
	s := NewServer(reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + Path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `knockwall_grants_total{method="spa"} 32`) {
		t.Errorf("GET %s: %s\n%s", Path, resp.Status, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Error(err)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}
