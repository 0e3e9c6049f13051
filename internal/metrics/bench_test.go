package metrics

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/daemon"
	"github.com/knockwall/knockwall/internal/nfq"
	"github.com/knockwall/knockwall/internal/pkttest"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
)

// benchQueue is a queue that delivers nothing: the benchmark calls the
// handler the daemon gave it.
type benchQueue struct{ fatal chan error }

func (q benchQueue) Fatal() <-chan error      { return q.fatal }
func (q benchQueue) Stats() daemon.QueueStats { return daemon.QueueStats{} }
func (q benchQueue) Close() error             { return nil }

// server4 is where the tests' SYNs go.
var server4 = netip.MustParseAddr("10.77.0.1")

// runningDaemon runs a daemon with no firewall and one queue, and returns
// it with the queue's handler: the per-packet path, counters included.
func runningDaemon(b testing.TB) (*daemon.Daemon, nfq.Handler) {
	b.Helper()
	c := rules.Defaults()
	c.Firewall.Manage = false
	c.Tracker.KnockRate = 0
	ssh := rules.ServiceDefaults()
	ssh.Ports, ssh.Sequence, ssh.OpenFor = []int{22}, []string{"7000", "8000", "9000/udp"}, time.Hour
	c.Services = map[string]rules.ServiceConfig{"ssh": ssh}
	set, err := rules.Compile(c)
	if err != nil {
		b.Fatal(err)
	}
	handlers := make(chan nfq.Handler, 1)
	ready := make(chan struct{})
	d, err := daemon.New(daemon.Config{Set: set, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OpenQueue: func(_ context.Context, _ uint16, h nfq.Handler) (daemon.Queue, error) {
			handlers <- h
			return benchQueue{make(chan error)}, nil
		},
		Ready: func() { close(ready) }})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	<-ready
	return d, <-handlers
}

// BenchmarkHandlerWhileScraping: the handler's cost per packet (decision,
// counters, grant bookkeeping) alone and while /metrics is scraped without
// pause from another goroutine, the worst a scraper can do. A scrape reads
// atomics and the tracker's sizes. allocs/op counts the whole process: in
// the scraping runs it is the scraper's allocations spread over the
// packets (the idle runs show the packet path's own: none). Results:
// bench/RESULTS.md.
func BenchmarkHandlerWhileScraping(b *testing.B) {
	granted := netip.MustParseAddr("10.77.0.2")
	stranger := netip.MustParseAddr("10.77.0.3")
	paths := []struct {
		name string
		pkt  []byte
	}{
		{"granted SYN", pkttest.SYN(granted, netip.AddrPortFrom(server4, 22))},
		{"refused SYN", pkttest.SYN(stranger, netip.AddrPortFrom(server4, 22))},
		{"knock", pkttest.SYN(stranger, netip.AddrPortFrom(server4, 7000))},
	}
	// every is the pause between scrapes: -1 none, 0 back to back.
	modes := []struct {
		name  string
		every time.Duration
	}{{"idle", -1}, {"scraping every 10ms", 10 * time.Millisecond}, {"scraping back to back", 0}}
	for _, m := range modes {
		for _, p := range paths {
			b.Run(p.name+"/"+m.name, func(b *testing.B) {
				d, h := runningDaemon(b)
				ssh := d.Set().Services[0].ID
				d.Tracker().Grant(granted, ssh, time.Now(), time.Hour, 0, tracker.MethodSequence)
				var scrapes atomic.Int64
				stop := make(chan struct{})
				var wg sync.WaitGroup
				if m.every >= 0 {
					scrape := scraper(b, d)
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							select {
							case <-stop:
								return
							default:
							}
							if code := scrape(); code != http.StatusOK {
								panic(code)
							}
							scrapes.Add(1)
							if m.every > 0 {
								select {
								case <-stop:
									return
								case <-time.After(m.every):
								}
							}
						}
					}()
				}
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					h(p.pkt, 0)
				}
				b.StopTimer()
				close(stop)
				wg.Wait()
				if m.every >= 0 {
					b.ReportMetric(float64(scrapes.Load())/b.Elapsed().Seconds(), "scrapes/s")
				}
			})
		}
	}
}

// BenchmarkScrape is one whole scrape of /metrics (collect and write the
// text):
// what it costs the host, on a CPU of its own, once per scrape interval.
func BenchmarkScrape(b *testing.B) {
	d, _ := runningDaemon(b)
	scrape := scraper(b, d)
	b.ReportAllocs()
	for range b.N {
		if code := scrape(); code != http.StatusOK {
			b.Fatal(code)
		}
	}
}

// scraper is one authorised scrape of d's metrics through the server's
// handler, without the network; it returns the status.
func scraper(b testing.TB, d *daemon.Daemon) func() int {
	s, err := NewServer(NewCollector(d), []byte(testToken), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest("GET", Path, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	return func() int {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		return w.Code
	}
}
