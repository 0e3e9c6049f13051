package metrics

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/knockwall/knockwall/internal/daemon"
	"github.com/knockwall/knockwall/internal/nfq"
	"github.com/knockwall/knockwall/internal/pkttest"
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
	c.Verdicts[verdict.Reject][verdict.ReasonKnock] = 2       // shown as no-grant
	c.Verdicts[verdict.Reject][verdict.ReasonRateLimited] = 1 // likewise
	c.Knocks[tracker.EventStep] = 30
	c.Knocks[tracker.EventGrant] = 31
	c.Grants[tracker.MethodSequence] = 31
	c.Grants[tracker.MethodSPA] = 32
	c.Grants[tracker.MethodManual] = 33
	c.Tokens[0] = 32 // ok
	c.Tokens[4] = 40 // bad-mac
	c.Tokens[7] = 3  // replay
	return st
}

// TestCollector: the exposition text of every metric, against a fake.
func TestCollector(t *testing.T) {
	c := scraped{t, NewCollector(fakeSource{sampleStats()})}
	var verdicts strings.Builder
	for v := range verdict.NumVerdicts {
		for r := range verdict.NumReasons {
			if verdict.Reason(r) == verdict.ReasonKnock || verdict.Reason(r) == verdict.ReasonRateLimited {
				continue // never shown: a knock is a refused SYN
			}
			n := map[string]int{"accept/granted": 20, "reject/no-grant": 21 + 2 + 1, "drop/malformed": 22}[verdict.Verdict(v).String()+"/"+verdict.Reason(r).String()]
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
# HELP knockwall_grants_total Grants made, by how (sequence, rotating, spa, fwknop, manual).
# TYPE knockwall_grants_total counter
knockwall_grants_total{method="fwknop"} 0
knockwall_grants_total{method="manual"} 33
knockwall_grants_total{method="rotating"} 0
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
# HELP knockwall_reloads_total Configuration reloads that took effect.
# TYPE knockwall_reloads_total counter
knockwall_reloads_total 13
# HELP knockwall_start_time_seconds When the daemon started, in seconds since the Unix epoch.
# TYPE knockwall_start_time_seconds gauge
knockwall_start_time_seconds 1.7641512005e+09
# HELP knockwall_verdicts_total Packets judged, by verdict and reason (a knock counts as a refused SYN, no-grant).
# TYPE knockwall_verdicts_total counter
` + verdicts.String()
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), metricNames(want)...); err != nil {
		t.Error(err)
	}
	// Tokens: accepted, refused (whatever the refusal) or replayed.
	tokens := `# HELP knockwall_spa_tokens_total SPA and fwknop tokens, by result (accepted, refused or replayed).
# TYPE knockwall_spa_tokens_total counter
knockwall_spa_tokens_total{result="accepted"} 32
knockwall_spa_tokens_total{result="refused"} 40
knockwall_spa_tokens_total{result="replayed"} 3
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(tokens), "knockwall_spa_tokens_total"); err != nil {
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
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(scraped{t, NewCollector(fakeSource{sampleStats()})}); err != nil {
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
	// The text itself, as promlint reads an exposition.
	problems, err = promlint.New(bytes.NewReader(NewCollector(fakeSource{sampleStats()}).AppendText(nil))).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("text: %s: %s", p.Metric, p.Text)
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
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "metrics.listen "+ln.Addr().String()) {
		t.Errorf("Listen on a taken address: %v", err)
	}
	s, err := NewServer(NewCollector(fakeSource{sampleStats()}), []byte(testToken), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	resp, err := authGet("http://" + ln.Addr().String() + Path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `knockwall_grants_total{method="spa"} 32`) {
		t.Errorf("GET %s: %s\n%s", Path, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	// The scrape, read by Prometheus's parser, compared by value.
	mfs, err := parse(body)
	if err != nil {
		t.Fatal(err)
	}
	if f := mfs["knockwall_reloads_total"]; f.GetType() != dto.MetricType_COUNTER || len(f.GetMetric()) != 1 || f.GetMetric()[0].GetCounter().GetValue() != 13 ||
		f.GetHelp() != "Configuration reloads that took effect." {
		t.Errorf("knockwall_reloads_total = %v", f)
	}
	for _, tt := range []struct {
		method, path string
		wantCode     int
		wantAllow    string
	}{
		{"HEAD", Path, 200, ""},
		{"POST", Path, 405, "GET, HEAD"},
		{"GET", "/", 404, ""},
		{"GET", "/metrics/x", 404, ""},
	} {
		req, _ := http.NewRequest(tt.method, "http://"+ln.Addr().String()+tt.path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.wantCode || resp.Header.Get("Allow") != tt.wantAllow {
			t.Errorf("%s %s: %s, Allow %q", tt.method, tt.path, resp.Status, resp.Header.Get("Allow"))
		}
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

// TestText: the exposition's layout: families sorted by name, each a
// HELP and a TYPE line before its samples, label names sorted (as
// client_golang writes them, and as the end-to-end tests read them),
// counters as exact integers.
func TestText(t *testing.T) {
	st := sampleStats()
	st.Counts.Verdicts[verdict.Accept][verdict.ReasonGranted] = 1<<64 - 1
	text := string(NewCollector(fakeSource{st}).AppendText(nil))
	for _, want := range []string{
		"\nknockwall_verdicts_total{reason=\"granted\",verdict=\"accept\"} 18446744073709551615\n",
		"\nknockwall_verdicts_total{reason=\"no-grant\",verdict=\"reject\"} 24\n", // 21, and 3 knocks
		"\nknockwall_build_info{backend=\"nftables\",goversion=\"" + runtime.Version() + "\",version=\"1.2.3\"} 1\n",
		"\nknockwall_start_time_seconds 1.7641512005e+09\n",
		"\nknockwall_queue_packets_total{queue=\"1\"} 50\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("lacks %q", want)
		}
	}
	if !strings.HasSuffix(text, "\n") {
		t.Errorf("no line end at the end")
	}
	var names []string
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		switch {
		case strings.HasPrefix(l, "# HELP "):
			names = append(names, f[2])
			if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "# TYPE "+f[2]+" ") {
				t.Errorf("HELP of %s not followed by its TYPE", f[2])
			}
		case strings.HasPrefix(l, "# TYPE "):
		case len(names) == 0 || !strings.HasPrefix(l, names[len(names)-1]):
			t.Errorf("sample %q outside its family", l)
		}
	}
	if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) || len(names) != 17 {
		t.Errorf("families not sorted and unique, or not 17: %v", names)
	}
}

// TestEscaping: HELP text and label values are escaped as the format
// says, so Prometheus's parser reads back exactly what was meant;
// invalid UTF-8 is replaced.
func TestEscaping(t *testing.T) {
	st := sampleStats()
	st.Version = "v1 \"quoted\" back\\slash\nline \xff"
	text := NewCollector(fakeSource{st}).AppendText(nil)
	if !bytes.Contains(text, []byte(`version="v1 \"quoted\" back\\slash\nline `+"\uFFFD\"")) {
		t.Errorf("build_info as written:\n%s", text)
	}
	mfs, err := parse(text)
	if err != nil {
		t.Fatal(err)
	}
	var version string
	for _, lp := range mfs["knockwall_build_info"].GetMetric()[0].GetLabel() {
		if lp.GetName() == "version" {
			version = lp.GetValue()
		}
	}
	if want := "v1 \"quoted\" back\\slash\nline \uFFFD"; version != want {
		t.Errorf("version read back %q, want %q", version, want)
	}

	var w writer
	help := "a \\ backslash, a\nline feed and \"quotes\""
	w.family("x_total", counter, help)
	w.counter("x_total", 1, "l", "\"\\\n")
	if want := "# HELP knockwall_x_total a \\\\ backslash, a\\nline feed and \"quotes\"\n"; !strings.HasPrefix(string(w.b), want) {
		t.Errorf("HELP written %q, want %q", w.b, want)
	}
	mfs, err = parse(w.b)
	if err != nil {
		t.Fatal(err)
	}
	mf := mfs["knockwall_x_total"]
	if mf.GetHelp() != help || mf.GetMetric()[0].GetLabel()[0].GetValue() != "\"\\\n" {
		t.Errorf("read back help %q, label %q", mf.GetHelp(), mf.GetMetric()[0].GetLabel()[0].GetValue())
	}
}

func TestAppendFloat(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 1: "1", -1: "-1", 0.5: "0.5", 1e21: "1e+21", math.Inf(1): "+Inf", math.Inf(-1): "-Inf", math.NaN(): "NaN"} {
		if got := string(appendFloat(nil, v)); got != want {
			t.Errorf("appendFloat(%v) = %s, want %s", v, got, want)
		}
	}
}

// TestScrapeOfDaemon: a scrape of a running daemon over HTTP, read by
// Prometheus's parser, says what the daemon's own counters say: every
// verdict, knock, grant and token count, the tracker's sizes, the start.
func TestScrapeOfDaemon(t *testing.T) {
	d, h := runningDaemon(t)
	granted, stranger := netip.MustParseAddr("10.77.0.2"), netip.MustParseAddr("10.77.0.3")
	d.Tracker().Grant(granted, d.Set().Services[0].ID, time.Now(), time.Hour, 0, tracker.MethodSequence)
	pkts := [][]byte{pkttest.SYN(granted, netip.AddrPortFrom(server4, 22)), pkttest.SYN(stranger, netip.AddrPortFrom(server4, 22)), pkttest.SYN(stranger, netip.AddrPortFrom(server4, 22)), pkttest.SYN(stranger, netip.AddrPortFrom(server4, 7000)), pkttest.SYN(stranger, netip.AddrPortFrom(server4, 8000))}
	for _, p := range pkts {
		h(p, 0)
	}

	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(NewCollector(d), []byte(testToken), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	}()
	resp, err := authGet("http://" + ln.Addr().String() + Path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	st := d.Stats()
	mfs, err := parse(body)
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}

	// value is the sample of family name with these labels.
	value := func(name string, labels ...string) float64 {
		t.Helper()
	samples:
		for _, m := range mfs[name].GetMetric() {
			for i := 0; i < len(labels); i += 2 {
				if !slices.ContainsFunc(m.GetLabel(), func(lp *dto.LabelPair) bool { return lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] }) {
					continue samples
				}
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		t.Errorf("no sample %s%v", name, labels)
		return math.NaN()
	}
	var judged float64
	public := st.Counts.PublicVerdicts()
	for v := range verdict.NumVerdicts {
		for r := range verdict.NumReasons {
			if daemon.PublicReason(verdict.Reason(r)) != verdict.Reason(r) {
				continue
			}
			got := value("knockwall_verdicts_total", "verdict", verdict.Verdict(v).String(), "reason", verdict.Reason(r).String())
			if want := public[v][r]; got != float64(want) {
				t.Errorf("verdicts %s/%s = %v, the daemon says %d", verdict.Verdict(v), verdict.Reason(r), got, want)
			}
			judged += got
		}
	}
	if judged != float64(len(pkts)) {
		t.Errorf("%v verdicts, %d packets", judged, len(pkts))
	}
	if st.Counts.Knocks[tracker.EventStep] == 0 {
		t.Errorf("no knock step counted: the test's packets did not knock")
	}
	for _, name := range []string{"knockwall_knocks_total", "knockwall_pending_sources", "knockwall_pending_evicted_total", "knockwall_rate_limited_total"} {
		if _, ok := mfs[name]; ok {
			t.Errorf("%s is served: it tells knock ports from others", name)
		}
	}
	for m := 1; m < tracker.NumMethods; m++ {
		if got, want := value("knockwall_grants_total", "method", tracker.Method(m).String()), st.Counts.Grants[m]; got != float64(want) {
			t.Errorf("grants %s = %v, the daemon says %d", tracker.Method(m), got, want)
		}
	}
	outcomes := st.Counts.TokensByOutcome()
	for i, r := range daemon.TokenOutcomes {
		if got, want := value("knockwall_spa_tokens_total", "result", r), outcomes[i]; got != float64(want) {
			t.Errorf("tokens %s = %v, the daemon says %d", r, got, want)
		}
	}
	for _, c := range []struct {
		name string
		want float64
	}{
		{"knockwall_grants_active", float64(st.Tracker.Grants)},
		{"knockwall_reloads_total", float64(st.Reloads)},
		{"knockwall_start_time_seconds", float64(st.Started.UnixNano()) / 1e9},
		{"knockwall_build_info", 1},
	} {
		if got := value(c.name); got != c.want {
			t.Errorf("%s = %v, the daemon says %v", c.name, got, c.want)
		}
	}
	if st.Tracker.Grants != 1 || st.Tracker.Pending != 1 {
		t.Errorf("the daemon holds %d grants and %d pending sources; the test meant 1 and 1", st.Tracker.Grants, st.Tracker.Pending)
	}
}

// testToken is the bearer token of the servers under test.
const testToken = "0123456789abcdef-test-token"

// authGet is a GET with the test token.
func authGet(url string) (*http.Response, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	return http.DefaultClient.Do(req)
}

// TestNoKnockOracle: a SYN to a knock port and a SYN to a protected port
// leave the same metrics (apart from the start time), and so do bursts of
// them: a scraper who sends them learns nothing the network would not tell.
func TestNoKnockOracle(t *testing.T) {
	src := netip.MustParseAddr("10.77.0.9")
	scrape := func(pkts ...[]byte) string {
		d, h := runningDaemon(t)
		for _, p := range pkts {
			h(p, 0)
		}
		var out []string
		for _, l := range strings.Split(string(NewCollector(d).AppendText(nil)), "\n") {
			if !strings.HasPrefix(l, "knockwall_start_time_seconds") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	for _, tt := range []struct {
		name        string
		knock, port []byte
		n           int
	}{
		{"one syn", pkttest.SYN(src, netip.AddrPortFrom(server4, 7000)), pkttest.SYN(src, netip.AddrPortFrom(server4, 22)), 1},
		{"a later knock", pkttest.SYN(src, netip.AddrPortFrom(server4, 8000)), pkttest.SYN(src, netip.AddrPortFrom(server4, 22)), 1},
		{"a burst", pkttest.SYN(src, netip.AddrPortFrom(server4, 7000)), pkttest.SYN(src, netip.AddrPortFrom(server4, 22)), 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var knocks, protected [][]byte
			for range tt.n {
				knocks, protected = append(knocks, tt.knock), append(protected, tt.port)
			}
			if k, p := scrape(knocks...), scrape(protected...); k != p {
				t.Errorf("metrics differ:\nafter knock SYNs:\n%s\nafter protected SYNs:\n%s", k, p)
			}
		})
	}
}
