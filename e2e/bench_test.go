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
	benchConnects      = 10000
	benchKnockTrials   = 20
)

// knockwallRcvbuf is the socket buffer knockwall asks for (cmd/knockwall:
// socketBuffer), for bare consumers meant to compare with it.
const knockwallRcvbuf = "1048576"

func requireBench(t *testing.T) string {
	t.Helper()
	if os.Getenv("KNOCKWALL_BENCH_E2E") != "1" {
		t.Skip("end-to-end benchmark: run with KNOCKWALL_BENCH_E2E=1 (make bench-e2e)")
	}
	return requireBinary(t)
}

// benchPair is a namespace pair with the flood generator ready.
type benchPair struct {
	pair *netns.Pair
	gen  *loadgen.Gen
}

func newBenchPair(t *testing.T) *benchPair {
	t.Helper()
	p, gen := newFloodPair(t)
	return &benchPair{pair: p, gen: gen}
}

// counters are what the server namespace's kernel says.
type counters struct {
	outRsts       uint64 // TCP resets sent: SYNs to closed ports that got all the way through
	udpNoPorts    uint64 // UDP datagrams to closed ports that got all the way through
	queueDropped  uint64 // queue full
	userDropped   uint64 // netlink socket full (ENOBUFS)
	queued        uint64 // id_sequence: packets ever queued
	consumerTicks uint64 // utime+stime of the consumer process, in clock ticks
	machineTicks  uint64 // busy time of the whole machine (user, system, softirq...), in clock ticks
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
	heads := map[string][]string{}
	for line := range strings.SplitSeq(string(snmp), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || (f[0] != "Tcp:" && f[0] != "Udp:") {
			continue
		}
		head, ok := heads[f[0]]
		if !ok {
			heads[f[0]] = f
			continue
		}
		if i := slices.Index(head, "OutRsts"); i > 0 {
			c.outRsts, _ = strconv.ParseUint(f[i], 10, 64)
		}
		if i := slices.Index(head, "NoPorts"); i > 0 {
			c.udpNoPorts, _ = strconv.ParseUint(f[i], 10, 64)
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
	if st, err := os.ReadFile("/proc/stat"); err == nil {
		// cpu  user nice system idle iowait irq softirq steal ...
		f := strings.Fields(strings.SplitN(string(st), "\n", 2)[0])
		for i, v := range f[1:] {
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			n, _ := strconv.ParseUint(v, 10, 64)
			c.machineTicks += n
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
	cpuNsPerPkt           float64 // the consumer's (knockwall's) CPU per handled SYN
	machineNsPerPkt       float64 // the whole machine's busy CPU per handled SYN, sender included
}

// flood sends unrelated SYNs from spoofed sources and measures how many the
// server handled: every such SYN that gets through ends in a kernel RST.
func (b *benchPair) flood(t *testing.T, mode string, pid int) throughput {
	return b.floodOf(t, loadgen.SYN, mode, pid)
}

// floodOf is flood of SYNs or UDP datagrams; a datagram is handled when
// the kernel counts it as one for a closed port (Udp NoPorts: the ICMP
// answers are rate limited).
func (b *benchPair) floodOf(t *testing.T, kind loadgen.Kind, mode string, pid int) throughput {
	t.Helper()
	before := readCounters(t, b.pair.Server, pid)
	var st loadgen.Stats
	err := b.pair.Client.Do(func() (err error) {
		st, err = b.gen.Run(context.Background(), loadgen.Config{
			Kind: kind, Dst: b.pair.Server4, Sources: netip.MustParsePrefix(spoofedSources),
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
	handled := after.outRsts - before.outRsts
	if kind == loadgen.UDP {
		handled = after.udpNoPorts - before.udpNoPorts
	}
	r := throughput{
		mode: mode, sent: st.Sent, sendPPS: st.PPS(),
		handledPPS: float64(handled) / st.Elapsed.Seconds(),
		queueDrops: after.queueDropped - before.queueDropped,
		userDrops:  after.userDropped - before.userDropped,
	}
	if handled > 0 {
		const tick = float64(10 * time.Millisecond) // USER_HZ = 100
		r.machineNsPerPkt = float64(after.machineTicks-before.machineTicks) * tick / float64(handled)
		if pid > 0 {
			r.cpuNsPerPkt = float64(after.consumerTicks-before.consumerTicks) * tick / float64(handled)
		}
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
	if want == "" {
		return cmd
	}
	select {
	case <-ready:
	case <-time.After(readyTimeout):
		t.Fatalf("%s did not print %q", name, want)
	}
	return cmd
}

func benchConfig(t *testing.T, queues int, b backend) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bench.yaml")
	yaml := fmt.Sprintf(`queue: {num: 0, count: %d}
log: {level: info, format: json}
firewall:
`+b.yaml()+operate{}.yaml()+`services:
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

// queueRule diverts the server's inbound SYNs to queue 0, for a bare
// consumer (knockwall installs its own rules).
func queueRule(t *testing.T, p *netns.Pair) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := p.Server.Run(ctx, "iptables", "-t", "mangle", "-A", "INPUT", "-p", "tcp", "--syn", "-j", "NFQUEUE", "--queue-num", "0"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
}

// buildBare builds bench/bareconsumer.
func buildBare(t *testing.T) string {
	t.Helper()
	bare := filepath.Join(t.TempDir(), "bareconsumer")
	if out, err := exec.Command("go", "build", "-o", bare, "../bench/bareconsumer").CombinedOutput(); err != nil {
		t.Fatalf("build bareconsumer: %v\n%s", err, out)
	}
	return bare
}

// TestBenchThroughput: SYN verdicts per second through each consumer, in one run.
func TestBenchThroughput(t *testing.T) {
	bin := requireBench(t)
	bare := buildBare(t)
	var rows []throughput
	run := func(mode string, setup func(t *testing.T, b *benchPair) int) {
		t.Run(mode, func(t *testing.T) {
			b := newBenchPair(t)
			pid := setup(t, b)
			rows = append(rows, b.flood(t, mode, pid))
		})
	}
	run("kernel alone", func(t *testing.T, b *benchPair) int { return 0 })
	for _, mode := range []struct {
		name string
		args []string
	}{
		{"bare consumer, batch 1", []string{"-batch", "1"}},
		{"bare consumer, batch 64", []string{"-batch", "64"}},
		{"bare consumer, batch 64+peek", []string{"-batch", "64", "-peek"}},
		{"bare consumer, own loop", []string{"-direct", "-rcvbuf", knockwallRcvbuf}},
		// What the queue's settings do, on the bare loop: knockwall's
		// copy range, a whole packet; the system's socket buffer, 256 KiB,
		// and 4 MiB.
		{"bare consumer, own loop, copy 256", []string{"-direct", "-rcvbuf", knockwallRcvbuf, "-copy", "256"}},
		{"bare consumer, own loop, copy 65535", []string{"-direct", "-rcvbuf", knockwallRcvbuf, "-copy", "65535"}},
		{"bare consumer, own loop, default rcvbuf", []string{"-direct", "-rcvbuf", "0"}},
		{"bare consumer, own loop, rcvbuf 256 KiB", []string{"-direct", "-rcvbuf", "262144"}},
		{"bare consumer, own loop, rcvbuf 4 MiB", []string{"-direct", "-rcvbuf", "4194304"}},
	} {
		run(mode.name, func(t *testing.T, b *benchPair) int {
			cmd := startProc(t, b.pair.Server, "ready", nil, bare, mode.args...)
			queueRule(t, b.pair)
			return cmd.Process.Pid
		})
	}
	// The same bare loop behind knockwall's whole static ruleset (diversion,
	// reject and guard chains, as `knockwall rules print` gives them): what
	// the kernel's side of knockwall costs, without its engine.
	run("bare consumer, loop + rules", func(t *testing.T, b *benchPair) int {
		cmd := startProc(t, b.pair.Server, "ready", nil, bare, "-direct", "-rcvbuf", knockwallRcvbuf)
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		script, err := exec.CommandContext(ctx, bin, "rules", "print", "--backend", "iptables", "-c", benchConfig(t, 1, iptBack)).Output()
		if err != nil {
			t.Fatalf("rules print: %v", err)
		}
		if out, err := b.pair.Server.Run(ctx, "sh", "-c", string(script)); err != nil {
			t.Fatalf("install rules: %v %s", err, out)
		}
		return cmd.Process.Pid
	})
	for _, c := range []struct {
		b      backend
		queues int
	}{{nftFast, 1}, {nftInline, 1}, {iptBack, 1}, {iptBack, 2}} {
		run(fmt.Sprintf("knockwall, %s, %d queue(s)", c.b.name, c.queues), func(t *testing.T, b *benchPair) int {
			cmd := startProc(t, b.pair.Server, `"msg":"ready"`, nil, bin, "run", "-c", benchConfig(t, c.queues, c.b))
			return cmd.Process.Pid
		})
	}
	var base, kernel float64
	var kernelCPU float64
	t.Logf("%-44s %9s %9s %10s %8s %8s %9s %9s %7s %7s", "mode", "sent", "sent/s", "handled/s", "q-drops", "u-drops", "cpu ns/p", "mach ns/p", "/bare", "/kernel")
	for _, r := range rows {
		if strings.HasPrefix(r.mode, "bare consumer") && r.handledPPS > base {
			base = r.handledPPS
		}
		if r.mode == "kernel alone" {
			kernel, kernelCPU = r.handledPPS, r.machineNsPerPkt
		}
	}
	for _, r := range rows {
		ratio, kr := "-", "-"
		if base > 0 {
			ratio = fmt.Sprintf("%.2f", r.handledPPS/base)
		}
		if kernel > 0 {
			kr = fmt.Sprintf("%.2f", r.handledPPS/kernel)
		}
		t.Logf("%-44s %9d %9.0f %10.0f %8d %8d %9.0f %9.0f %7s %7s", r.mode, r.sent, r.sendPPS, r.handledPPS, r.queueDrops, r.userDrops, r.cpuNsPerPkt, r.machineNsPerPkt, ratio, kr)
	}
	t.Logf("machine CPU per handled SYN, kernel alone: %.0f ns (the sender's share included; the difference of a row to it is the server side's extra)", kernelCPU)
}

// TestBenchUDPThroughput: what judging new UDP flows costs. Spoofed sources
// flood closed UDP ports (no knock ports, no source with knock progress):
// on the nftables fast path they stay in the kernel (one set look-up each);
// inline and on iptables every one is a new flow and goes to the daemon, so
// that a wrong datagram can reset its source's knock progress.
func TestBenchUDPThroughput(t *testing.T) {
	bin := requireBench(t)
	var rows []throughput
	run := func(mode string, start func(t *testing.T, b *benchPair) int) {
		t.Run(mode, func(t *testing.T) {
			b := newBenchPair(t)
			rows = append(rows, b.floodOf(t, loadgen.UDP, mode, start(t, b)))
		})
	}
	run("kernel alone", func(t *testing.T, b *benchPair) int { return 0 })
	for _, c := range []backend{nftFast, nftInline, iptBack} {
		run("knockwall, "+c.name, func(t *testing.T, b *benchPair) int {
			return startProc(t, b.pair.Server, `"msg":"ready"`, nil, bin, "run", "-c", benchConfig(t, 1, c)).Process.Pid
		})
	}
	t.Logf("%-32s %9s %9s %10s %8s %8s %9s %9s", "mode", "sent", "sent/s", "handled/s", "q-drops", "u-drops", "cpu ns/p", "mach ns/p")
	for _, r := range rows {
		t.Logf("%-32s %9d %9.0f %10.0f %8d %8d %9.0f %9.0f", r.mode, r.sent, r.sendPPS, r.handledPPS, r.queueDrops, r.userDrops, r.cpuNsPerPkt, r.machineNsPerPkt)
	}
}

// TestBenchStart: how long `knockwall run` takes from exec to ready, per
// backend: the iptables backend applies each family with one
// iptables-restore (a save and a restore per family), the nftables backend
// one netlink batch.
func TestBenchStart(t *testing.T) {
	bin := requireBench(t)
	const runs = 10
	type subject struct {
		name, bin string
		cfg       func(t *testing.T) string
	}
	var subjects []subject
	for _, b := range []backend{nftFast, nftInline, iptBack} {
		subjects = append(subjects, subject{b.name, bin, func(t *testing.T) string { return benchConfig(t, 1, b) }})
	}
	// KNOCKWALL_BENCH_OLD names a knockwall that runs iptables and
	// ip6tables once per rule (e.g. commit 45a8f76); it reads no firewall
	// backend keys.
	if old := os.Getenv("KNOCKWALL_BENCH_OLD"); old != "" {
		subjects = append(subjects, subject{"one exec per rule (KNOCKWALL_BENCH_OLD)", old, func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "old.yaml")
			if err := os.WriteFile(path, []byte("log: {level: info, format: json}\nservices:\n  ssh: {ports: [2222], sequence: [7000, 8000, 9000/udp]}\n  web: {ports: [443, 8443], sequence: [10001/udp, 10002, 10003], closed: drop}\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return path
		}})
	}
	for _, sub := range subjects {
		t.Run(sub.name, func(t *testing.T) {
			var d []time.Duration
			for range runs {
				p := newBenchPair(t)
				start := time.Now()
				cmd := startProc(t, p.pair.Server, `"msg":"ready"`, nil, sub.bin, "run", "-c", sub.cfg(t))
				d = append(d, time.Since(start))
				_ = cmd.Process.Signal(syscall.SIGTERM)
				_ = cmd.Wait()
			}
			t.Logf("start to ready, %s: p50 %v, max %v (%d runs)", sub.name, percentile(d, 0.5).Round(time.Millisecond), percentile(d, 1).Round(time.Millisecond), runs)
		})
	}
}

// connectTimes dials remote n times from the client namespace, timing each
// connect alone (the namespace switch is outside the clock).
func connectTimes(t *testing.T, p *netns.Pair, remote netip.AddrPort, n int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, n)
	err := p.Client.Do(func() error {
		for range n {
			start := time.Now()
			c, err := net.DialTimeout("tcp", remote.String(), time.Second)
			el := time.Since(start)
			if err != nil {
				return err
			}
			c.Close()
			out = append(out, el)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("connect %s: %v", remote, err)
	}
	return out
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// openAfter sends knocks with send, then retries connecting every
// millisecond; it returns the time from the last knock to the first
// successful connect.
func openAfter(t *testing.T, p *netns.Pair, remote netip.AddrPort, send func() error) time.Duration {
	t.Helper()
	if err := send(); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	var took time.Duration
	err := p.Client.Do(func() error {
		for deadline := sent.Add(3 * time.Second); time.Now().Before(deadline); {
			c, err := net.DialTimeout("tcp", remote.String(), 50*time.Millisecond)
			if err == nil {
				took = time.Since(sent)
				c.Close()
				return nil
			}
			time.Sleep(500 * time.Microsecond)
		}
		return fmt.Errorf("not open within 3s of the knock")
	})
	if err != nil {
		t.Fatal(err)
	}
	return took
}

// goKnocks sends 7000/tcp, 8000/tcp, 9000/udp from the client namespace
// without starting a process, so the clock measures the server alone.
func goKnocks(p *netns.Pair) func() error {
	return func() error {
		return p.Client.Do(func() error {
			for _, port := range []int{7000, 8000} {
				d := net.Dialer{Timeout: 20 * time.Millisecond}
				if c, err := d.Dial("tcp", netip.AddrPortFrom(p.Server4, uint16(port)).String()); err == nil {
					c.Close()
				}
			}
			c, err := net.Dial("udp", netip.AddrPortFrom(p.Server4, 9000).String())
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte{0})
			return err
		})
	}
}

// TestBenchLatency: connect latency through knockwall against the kernel
// alone, and knock-to-open latency of knockwall against knockd, in one run.
func TestBenchLatency(t *testing.T) {
	bin := requireBench(t)
	type row struct {
		what     string
		p50, p99 time.Duration
	}
	var rows []row
	measure := func(what string, d []time.Duration) {
		rows = append(rows, row{what, percentile(d, 0.5), percentile(d, 0.99)})
	}

	// Connect latency. Every setup lives at once, each in its own pair of
	// namespaces, and the connects take turns, one to each target per
	// round, so the machine's noise falls on all of them alike. The bare
	// consumers show the NFQUEUE round trip without knockwall: go-nfqueue's
	// (one verdict per packet, its fastest answer to a lone SYN) and
	// knockwall's own loop accepting everything.
	type target struct {
		what   string
		pair   *netns.Pair
		remote netip.AddrPort
	}
	var targets []target
	kernel := newBenchPair(t)
	echoServer(t, kernel.pair.Server, openPort)
	echoServer(t, kernel.pair.Server, protectedPort)
	targets = append(targets,
		target{"connect, kernel alone, port 4080", kernel.pair, netip.AddrPortFrom(kernel.pair.Server4, openPort)},
		target{"connect, kernel alone, port 2222", kernel.pair, netip.AddrPortFrom(kernel.pair.Server4, protectedPort)})
	bare := buildBare(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"go-nfqueue", []string{"-batch", "1"}},
		{"own loop", []string{"-direct"}},
	} {
		b := newBenchPair(t)
		echoServer(t, b.pair.Server, openPort)
		startProc(t, b.pair.Server, "ready", nil, bare, c.args...)
		queueRule(t, b.pair)
		targets = append(targets, target{"connect, bare " + c.name + ", port 4080", b.pair, netip.AddrPortFrom(b.pair.Server4, openPort)})
	}
	for _, b := range []backend{nftFast, nftInline, iptBack} {
		kw := newBenchPair(t)
		echoServer(t, kw.pair.Server, openPort)
		echoServer(t, kw.pair.Server, protectedPort)
		startProc(t, kw.pair.Server, `"msg":"ready"`, nil, bin, "run", "-c", benchConfig(t, 1, b))
		granted := netip.AddrPortFrom(kw.pair.Server4, protectedPort)
		var opens []time.Duration
		for range benchKnockTrials {
			opens = append(opens, openAfter(t, kw.pair, granted, goKnocks(kw.pair)))
		}
		measure("knock to open, knockwall "+b.name, opens)
		targets = append(targets,
			target{"connect, knockwall " + b.name + ", unprotected 4080", kw.pair, netip.AddrPortFrom(kw.pair.Server4, openPort)},
			target{"connect, knockwall " + b.name + ", granted 2222", kw.pair, granted})
	}

	times := make([][]time.Duration, len(targets))
	for range benchConnects {
		for i, tg := range targets {
			times[i] = append(times[i], connectTimes(t, tg.pair, tg.remote, 1)...)
		}
	}
	for i, tg := range targets {
		measure(tg.what, times[i])
	}
	byName := func(what string) row {
		for _, r := range rows {
			if r.what == what {
				return r
			}
		}
		t.Fatalf("no row %q", what)
		return row{}
	}
	k4080, k2222 := byName("connect, kernel alone, port 4080"), byName("connect, kernel alone, port 2222")
	for _, b := range []backend{nftFast, nftInline, iptBack} {
		kw4080, kw2222 := byName("connect, knockwall "+b.name+", unprotected 4080"), byName("connect, knockwall "+b.name+", granted 2222")
		t.Logf("added by knockwall %s: unprotected %+v p50, %+v p99; granted %+v p50, %+v p99", b.name,
			kw4080.p50-k4080.p50, kw4080.p99-k4080.p99, kw2222.p50-k2222.p50, kw2222.p99-k2222.p99)
	}
	t.Run("knockd", func(t *testing.T) {
		if _, err := exec.LookPath("knockd"); err != nil {
			t.Skip("knockd not installed (apt-get install knockd)")
		}
		b := newBenchPair(t)
		echoServer(t, b.pair.Server, protectedPort)
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		ipt := func(args ...string) {
			if out, err := b.pair.Server.Run(ctx, "iptables", args...); err != nil {
				t.Fatalf("iptables %v: %v %s", args, err, out)
			}
		}
		ipt("-A", "INPUT", "-p", "tcp", "--dport", strconv.Itoa(protectedPort), "-j", "REJECT", "--reject-with", "tcp-reset")
		dir := t.TempDir()
		conf := filepath.Join(dir, "knockd.conf")
		// Same sequence; knockd opens with iptables -I, as it is deployed.
		body := fmt.Sprintf(`[options]
	LogFile = %s
	Interface = %s
[open]
	sequence    = 7000:tcp,8000:tcp,9000:udp
	seq_timeout = 5
	tcpflags    = syn
	start_command = /usr/sbin/iptables -I INPUT -s %%IP%% -p tcp --dport %d -j ACCEPT
	cmd_timeout = 3600
	stop_command = /usr/sbin/iptables -D INPUT -s %%IP%% -p tcp --dport %d -j ACCEPT
`, filepath.Join(dir, "knockd.log"), b.pair.ServerIf, protectedPort, protectedPort)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		startProc(t, b.pair.Server, "", nil, "knockd", "-c", conf)
		// knockd's stdout is block-buffered into a pipe; its log file says
		// when it listens.
		for deadline := time.Now().Add(readyTimeout); ; time.Sleep(20 * time.Millisecond) {
			if l, _ := os.ReadFile(filepath.Join(dir, "knockd.log")); strings.Contains(string(l), "listening") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("knockd did not start listening")
			}
		}
		remote := netip.AddrPortFrom(b.pair.Server4, protectedPort)
		var opens []time.Duration
		for range benchKnockTrials {
			opens = append(opens, openAfter(t, b.pair, remote, goKnocks(b.pair)))
			// Close again for the next trial, as knockd's stop command would.
			ipt("-D", "INPUT", "-s", b.pair.Client4.String(), "-p", "tcp", "--dport", strconv.Itoa(protectedPort), "-j", "ACCEPT")
		}
		measure("knock to open, knockd", opens)
	})

	t.Logf("%-40s %10s %10s", "what", "p50", "p99")
	for _, r := range rows {
		t.Logf("%-40s %10s %10s", r.what, r.p50, r.p99)
	}
}
