package e2e

// The end-to-end benchmark harness (make bench-e2e). It is a test so it can
// share this package's namespace helpers, and it skips unless
// KNOCKWALL_BENCH_E2E=1, so `make test` does not run it. It measures, in one
// run and on one machine, the kernel alone, a bare go-nfqueue consumer (the
// baseline, bench/bareconsumer) and knockwall, and prints a table that
// bench/RESULTS.md records.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/loadgen"
	"github.com/knockwall/knockwall/internal/netns"
)

const (
	benchFloodPackets  = 3_000_000
	benchFloodDuration = 3 * time.Second
	benchConnects      = 1000
	benchKnockTrials   = 20
)

func requireBench(t *testing.T) string {
	t.Helper()
	if os.Getenv("KNOCKWALL_BENCH_E2E") != "1" {
		t.Skip("end-to-end benchmark: run with KNOCKWALL_BENCH_E2E=1 (make bench-e2e)")
	}
	return requireBinary(t)
}

// benchPair is a namespace pair with the spoofed-source subnet routed back
// to the client, and the flood generator ready in the client namespace.
type benchPair struct {
	pair *netns.Pair
	gen  *loadgen.Gen
}

func newBenchPair(t *testing.T) *benchPair {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	p, err := netns.NewPair(ctx, netns.Config{SecondClient: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if out, err := p.Server.Run(ctx, "ip", "route", "add", "10.78.0.0/16", "via", p.Client4.String()); err != nil {
		t.Fatalf("route: %v %s", err, out)
	}
	var srvMAC net.HardwareAddr
	if err := p.Server.Do(func() error {
		ifi, err := net.InterfaceByName(p.ServerIf)
		if err == nil {
			srvMAC = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var gen *loadgen.Gen
	if err := p.Client.Do(func() (err error) { gen, err = loadgen.Open(p.ClientIf, srvMAC); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gen.Close() })
	return &benchPair{pair: p, gen: gen}
}

// counters are what the server namespace's kernel says.
type counters struct {
	outRsts       uint64 // TCP resets sent: SYNs to closed ports that got all the way through
	queueDropped  uint64 // queue full
	userDropped   uint64 // netlink socket full (ENOBUFS)
	queued        uint64 // id_sequence: packets ever queued
	consumerTicks uint64 // utime+stime of the consumer process, in clock ticks
}

func readCounters(t *testing.T, ns netns.NS, pid int) counters {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var c counters
	snmp, err := ns.Run(ctx, "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var head []string
	for line := range strings.SplitSeq(string(snmp), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		if i := slices.Index(head, "OutRsts"); i > 0 {
			c.outRsts, _ = strconv.ParseUint(f[i], 10, 64)
		}
	}
	if q, err := ns.Run(ctx, "cat", "/proc/net/netfilter/nfnetlink_queue"); err == nil {
		for line := range strings.SplitSeq(string(q), "\n") {
			f := strings.Fields(line)
			if len(f) >= 8 {
				a, _ := strconv.ParseUint(f[5], 10, 64)
				b, _ := strconv.ParseUint(f[6], 10, 64)
				d, _ := strconv.ParseUint(f[7], 10, 64)
				c.queueDropped += a
				c.userDropped += b
				c.queued += d
			}
		}
	}
	if pid > 0 {
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			s := string(st)
			f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
			u, _ := strconv.ParseUint(f[11], 10, 64)
			k, _ := strconv.ParseUint(f[12], 10, 64)
			c.consumerTicks = u + k
		}
	}
	return c
}

type throughput struct {
	mode                  string
	sent                  int
	sendPPS, handledPPS   float64
	queueDrops, userDrops uint64
	cpuNsPerPkt           float64
}

// flood sends unrelated SYNs from spoofed sources and measures how many the
// server handled: every such SYN that gets through ends in a kernel RST.
func (b *benchPair) flood(t *testing.T, mode string, pid int) throughput {
	t.Helper()
	before := readCounters(t, b.pair.Server, pid)
	var st loadgen.Stats
	err := b.pair.Client.Do(func() (err error) {
		st, err = b.gen.Run(context.Background(), loadgen.Config{
			Kind: loadgen.SYN, Dst: b.pair.Server4, Sources: netip.MustParsePrefix("10.78.0.0/16"),
			Ports: []uint16{5001, 5002, 5003, 5004, 5005, 5006, 5007, 5008}, Distinct: 8192,
			Count: benchFloodPackets, Duration: benchFloodDuration, Seed: 1,
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let queues drain
	after := readCounters(t, b.pair.Server, pid)
	r := throughput{
		mode: mode, sent: st.Sent, sendPPS: st.PPS(),
		handledPPS: float64(after.outRsts-before.outRsts) / st.Elapsed.Seconds(),
		queueDrops: after.queueDropped - before.queueDropped,
		userDrops:  after.userDropped - before.userDropped,
	}
	if handled := after.outRsts - before.outRsts; pid > 0 && handled > 0 {
		ticks := after.consumerTicks - before.consumerTicks
		r.cpuNsPerPkt = float64(ticks) * float64(10*time.Millisecond) / float64(handled) // USER_HZ = 100
	}
	return r
}

// startProc runs a long-lived process in ns and waits for want on stdout or
// stderr; it is stopped with SIGTERM at cleanup.
func startProc(t *testing.T, ns netns.NS, want string, env []string, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := ns.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), want) && ready != nil {
				close(ready)
				ready = nil
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	select {
	case <-ready:
	case <-time.After(readyTimeout):
		t.Fatalf("%s did not print %q", name, want)
	}
	return cmd
}

func benchConfig(t *testing.T, queues int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bench.yaml")
	yaml := fmt.Sprintf(`queue: {num: 0, count: %d}
log: {level: info, format: json}
services:
  ssh:
    ports: [2222]
    sequence: [7000, 8000, 9000/udp]
    open_for: 1h
  web:
    ports: [443, 8443]
    sequence: [10001/udp, 10002, 10003]
    open_for: 1h
    closed: drop
`, queues)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBenchThroughput: SYN verdicts per second through each consumer, in one run.
func TestBenchThroughput(t *testing.T) {
	bin := requireBench(t)
	bare := filepath.Join(t.TempDir(), "bareconsumer")
	if out, err := exec.Command("go", "build", "-o", bare, "../bench/bareconsumer").CombinedOutput(); err != nil {
		t.Fatalf("build bareconsumer: %v\n%s", err, out)
	}
	var rows []throughput
	run := func(mode string, setup func(t *testing.T, b *benchPair) int) {
		t.Run(mode, func(t *testing.T) {
			b := newBenchPair(t)
			pid := setup(t, b)
			rows = append(rows, b.flood(t, mode, pid))
		})
	}
	queueRule := func(t *testing.T, b *benchPair, target ...string) {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		args := append([]string{"-t", "mangle", "-A", "INPUT", "-p", "tcp", "--syn", "-j", "NFQUEUE"}, target...)
		if out, err := b.pair.Server.Run(ctx, "iptables", args...); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}
	run("kernel alone", func(t *testing.T, b *benchPair) int { return 0 })
	for _, batch := range []int{1, 64} {
		run(fmt.Sprintf("bare consumer, batch %d", batch), func(t *testing.T, b *benchPair) int {
			cmd := startProc(t, b.pair.Server, "ready", nil, bare, "-batch", strconv.Itoa(batch))
			queueRule(t, b, "--queue-num", "0")
			return cmd.Process.Pid
		})
	}
	for _, queues := range []int{1, 2} {
		run(fmt.Sprintf("knockwall, %d queue(s)", queues), func(t *testing.T, b *benchPair) int {
			cmd := startProc(t, b.pair.Server, `"msg":"ready"`, nil, bin, "run", "-c", benchConfig(t, queues))
			return cmd.Process.Pid
		})
	}
	var base float64
	t.Logf("%-26s %10s %10s %12s %10s %10s %10s %8s", "mode", "sent", "sent/s", "handled/s", "q-drops", "u-drops", "cpu ns/p", "ratio")
	for _, r := range rows {
		if strings.HasPrefix(r.mode, "bare consumer") && r.handledPPS > base {
			base = r.handledPPS
		}
	}
	for _, r := range rows {
		ratio := "-"
		if base > 0 {
			ratio = fmt.Sprintf("%.2f", r.handledPPS/base)
		}
		t.Logf("%-26s %10d %10.0f %12.0f %10d %10d %10.0f %8s", r.mode, r.sent, r.sendPPS, r.handledPPS, r.queueDrops, r.userDrops, r.cpuNsPerPkt, ratio)
	}
}
