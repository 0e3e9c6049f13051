package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/loadgen"
)

// rssSources is how many sources the RSS benchmark makes the daemon
// track: the default tracker.max_pending.
const rssSources = 65536

// TestBenchRSS: the daemon's resident memory after start, and once about
// rssSources spoofed sources (spoofedSources drawn at random four times
// over) have each made a first knock, so that the pending table is full,
// per backend. KNOCKWALL_BENCH_OLD names another knockwall binary to
// measure the same way. It reports; it asserts only that the sources were
// tracked (bench/RESULTS.md has the numbers).
func TestBenchRSS(t *testing.T) {
	bins := []string{requireBench(t)}
	if old := os.Getenv("KNOCKWALL_BENCH_OLD"); old != "" {
		bins = append(bins, old)
	}
	for _, bin := range bins {
		for _, b := range []backend{nftFast, iptBack} {
			t.Run(filepath.Base(bin)+"/"+b.name, func(t *testing.T) { benchRSS(t, bin, b) })
		}
	}
}

func benchRSS(t *testing.T, bin string, b backend) {
	p := newBenchPair(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "ctl.sock")
	cfg := filepath.Join(dir, "rss.yaml")
	yaml := fmt.Sprintf(`log: {level: info, format: json}
firewall:
%scontrol: {socket: %q}
state: {file: ""}
tracker: {max_pending: %d}
services:
  ssh:
    ports: [2222]
    sequence: [7000, 8000, 9000/udp]
`, b.yaml(), sock, rssSources)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := startProc(t, p.pair.Server, `"msg":"ready"`, nil, bin, "run", "-c", cfg)
	pid := cmd.Process.Pid
	idle := vmRSS(t, pid)

	var st loadgen.Stats
	err := p.pair.Client.Do(func() (err error) {
		st, err = p.gen.Run(context.Background(), loadgen.Config{
			Kind: loadgen.SYN, Dst: p.pair.Server4, Sources: netip.MustParsePrefix(spoofedSources),
			Ports: []uint16{7000}, Distinct: 4 * rssSources, Rate: 20000,
			Count: 4 * rssSources, Duration: time.Minute, Seed: 7,
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // let the queue drain
	out, err := p.pair.Server.Run(context.Background(), bin, "status", "--socket", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := field(string(out), "tracker")
	if len(f) < 2 {
		t.Fatalf("status has no tracker row:\n%s", out)
	}
	pending, _ := strconv.Atoi(f[1])
	full := vmRSS(t, pid)
	t.Logf("%s, %s: sent %d knocks (%.0f/s); pending sources %d; VmRSS %d KiB after start, %d KiB with them (%+d KiB)",
		bin, b.name, st.Sent, st.PPS(), pending, idle>>10, full>>10, (full-idle)>>10)
	if pending < rssSources/2 {
		t.Errorf("only %d sources tracked: the measurement says little", pending)
	}
}
