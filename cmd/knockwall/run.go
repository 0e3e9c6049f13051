package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/lograte"
	"github.com/knockwall/knockwall/internal/nfq"
	"github.com/knockwall/knockwall/internal/rst"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// Log attribute keys.
const (
	keySrc     = "src"
	keyService = "service"
	keyPort    = "port"
	keyProto   = "proto"
	keyStep    = "step"
	keyReason  = "reason"
	keyOpenFor = "open_for"
)

const (
	// copyRange is how much of each packet the kernel copies to us: the
	// largest IPv4 header (60) plus the largest TCP header (60), with room
	// for IPv6 extension headers.
	copyRange = 256
	// janitorEvery is how often lapsed grants are removed and logged.
	janitorEvery = 250 * time.Millisecond
	// refusedLogEvery limits "grant refused" lines.
	refusedLogEvery = time.Second
	// kernelStatsEvery is how often the kernel's queue drop counters are read.
	kernelStatsEvery = time.Second
	// socketBuffer is the netlink receive buffer per queue (the kernel
	// doubles it for its bookkeeping): a few milliseconds of work at full
	// speed, enough that a flood at half the capacity lost nothing in the
	// tests (256 KiB lost ~0.1 % there, enough to fail a legitimate knock now
	// and then). Bigger costs throughput under overload: 4 MiB let thousands
	// of messages wait and go cold in the cache, 6–14 % fewer verdicts per
	// second (bench/RESULTS.md). Past the buffer the kernel drops (fail
	// closed), counted as socket_full.
	socketBuffer = 1 << 20
)

func newRunCmd(env environment) *cobra.Command {
	var f configFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: install the static rules and judge diverted packets",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, set, err := f.load(env)
			if err != nil {
				return err
			}
			log := newLogger(cmd.ErrOrStderr(), set.Log)
			return run(cmd.Context(), set, log, firewall.Exec)
		},
	}
	f.register(cmd)
	return cmd
}

func newLogger(w io.Writer, c rules.LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by rules.Compile
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// run is the daemon. It returns nil after a clean shutdown (ctx done), with
// exactly the rules it installed removed. On a fatal error it leaves the
// rules in place: the guard keeps protected ports closed.
func run(ctx context.Context, set *rules.Set, log *slog.Logger, fw firewall.Runner) error {
	tr, err := tracker.New(tracker.Config{
		MaxPending: set.Tracker.MaxPending, MaxGrants: set.Tracker.MaxGrants,
		KnockRate: set.Tracker.KnockRate, KnockBurst: set.Tracker.KnockBurst,
	})
	if err != nil {
		return err
	}
	clock := time.Now // the tracker measures durations on its monotonic reading
	eng := verdict.New(set, tr, clock())
	autoLabels := rst.AutoFlowLabels()

	qctx, cancelQueues := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelQueues()
	var queues []*nfq.Queue
	for i := range set.Queue.Count {
		// Each worker sends its own IPv6 resets; see package rst.
		resets, err := rst.Open(autoLabels)
		if err != nil {
			log.Warn("cannot send IPv6 resets myself; IPv6 rejects will carry flow label 0, unlike the kernel's", "err", err)
			resets = nil
		} else {
			defer resets.Close()
		}
		handler := newHandler(eng, set, log, clock, resets)
		q, err := nfq.Open(qctx, nfq.Config{
			Num:        uint16(set.Queue.Num + i),
			MaxLen:     uint32(set.Queue.MaxLen),
			CopyRange:  copyRange,
			ReadBuffer: socketBuffer,
		}, handler, log)
		if err != nil {
			return err
		}
		defer q.Close()
		queues = append(queues, q)
	}

	plan := set.FirewallPlan()
	if set.Firewall.Manage {
		if err := firewall.Install(ctx, fw, plan); err != nil {
			return err
		}
		log.Info("firewall rules installed", "rules", len(plan.Install))
	} else {
		log.Info("firewall.manage is false: install the static rules yourself (knockwall rules print)")
	}
	for _, svc := range set.Services {
		for _, warn := range weaknesses(svc) {
			log.Warn(warn)
		}
		log.Info("service", keyService, svc.Name, "ports", fmt.Sprint(svc.Ports), "knocks", len(svc.Sequence),
			keyOpenFor, svc.OpenFor.String(), "closed", svc.Closed.String())
	}
	log.Info("ready", "queues", set.Queue.Count, "first_queue", set.Queue.Num)

	fatal := make(chan error, len(queues))
	for _, q := range queues {
		go func() {
			if err, ok := <-q.Fatal(); ok {
				fatal <- err
			}
		}()
	}
	ticker := time.NewTicker(janitorEvery)
	defer ticker.Stop()
	// The kernel drops what a full queue cannot take before knockwall sees
	// it; say so, at most once per kernelStatsEvery.
	lastKernel, _ := nfq.ReadKernelStats(set.Queue.Num, set.Queue.Count)
	nextKernel := time.Now().Add(kernelStatsEvery)
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			if set.Firewall.Manage {
				// Stop diverting before the queues go, so no packet waits
				// for a verdict that will not come.
				if set.Firewall.KeepGuard {
					firewall.RemoveKeepingGuard(context.WithoutCancel(ctx), fw, plan)
					log.Info("firewall rules removed; the guard stays (firewall.keep_guard), protected ports stay closed")
				} else {
					firewall.Remove(context.WithoutCancel(ctx), fw, plan)
					log.Info("firewall rules removed")
				}
			}
			logStats(log, set, tr, queues)
			cancelQueues()
			return nil
		case err := <-fatal:
			logStats(log, set, tr, queues)
			log.Error("queue failed; static rules left in place so protected ports stay closed",
				"err", err, "remove_with", "knockwall rules print --remove | sh")
			return err
		case <-ticker.C:
			now := clock()
			if now.After(nextKernel) {
				nextKernel = now.Add(kernelStatsEvery)
				if ks, err := nfq.ReadKernelStats(set.Queue.Num, set.Queue.Count); err == nil {
					if dq, du := ks.QueueDropped-lastKernel.QueueDropped, ks.UserDropped-lastKernel.UserDropped; dq+du > 0 {
						log.Warn("kernel dropped packets: knockwall is overloaded (protected ports stay closed)",
							"queue_full", dq, "socket_full", du, "waiting", ks.Waiting)
					}
					lastKernel = ks
				}
			}
			eng.Nonces().Purge(now.UnixNano())
			for _, e := range tr.Expire(now) {
				name := "?"
				if i, ok := eng.Rules().ServiceByID(e.ID); ok {
					name = eng.Rules().Services[i].Name
				}
				log.Info("expire", keySrc, e.Src.String(), keyService, name)
			}
		}
	}
}

func logStats(log *slog.Logger, set *rules.Set, tr *tracker.Tracker, queues []*nfq.Queue) {
	st := tr.Stats()
	ks, _ := nfq.ReadKernelStats(set.Queue.Num, set.Queue.Count)
	var pkts, overruns, verrs, panics, batches uint64
	for _, q := range queues {
		batches += q.Counters.Batches.Load()
		pkts += q.Counters.Packets.Load()
		overruns += q.Counters.Overruns.Load()
		verrs += q.Counters.VerdictErrors.Load()
		panics += q.Counters.Panics.Load()
	}
	log.Info("stats", "packets", pkts, "batch_verdicts", batches, "overruns", overruns, "verdict_errors", verrs, "panics", panics,
		"pending", st.Pending, "grants", st.Grants, "evicted_pending", st.EvictedPending, "refused_grants", st.RefusedGrants, "rate_limited", st.Limited,
		"kernel_queue_dropped", ks.QueueDropped, "kernel_user_dropped", ks.UserDropped)
}

// newHandler adapts the engine to the queue: decision to verdict and mark,
// and the log lines a decision deserves.
func newHandler(eng *verdict.Engine, set *rules.Set, log *slog.Logger, clock func() time.Time, resets *rst.Sender) nfq.Handler {
	mask := uint32(set.Firewall.MarkMask)
	acceptMark := uint32(set.Firewall.AcceptMark)
	rejectMark := uint32(set.Firewall.RejectMark)
	debug := log.Enabled(context.Background(), slog.LevelDebug)
	// Refused grants come in floods when the table is full; say so at most
	// once per refusedLogEvery.
	refused := &lograte.Limiter{Every: refusedLogEvery}
	return func(pkt []byte, mark uint32) nfq.Verdict {
		d := eng.Decide(pkt, clock())
		if d.GrantRefused {
			if refused.Allow() {
				log.Warn("grant refused: the grant table is full of live grants", "logged", "at most once a second", keySrc, d.Src.String(), keyService, d.Service)
			}
		} else if d.Knock.Event != tracker.EventNone {
			logKnock(log, debug, d)
		}
		switch {
		case d.Reason == verdict.ReasonToken:
			log.Info("grant", keySrc, d.Src.String(), keyService, d.Service, "by", "spa")
		case d.Reason == verdict.ReasonBadToken && !d.GrantRefused && debug:
			log.Debug("token refused", keySrc, d.Src.String(), keyService, d.Service, keyReason, d.TokenErr.Error())
		}
		switch d.Verdict {
		case verdict.Accept:
			if d.Reason != verdict.ReasonGranted {
				// Only protected ports need the accept mark (the guard
				// looks for it); the rest may be answered in batches.
				return nfq.Verdict{Accept: true}
			}
			// Sole: the accept mark opens the guard, so it must never
			// reach, by a batch, a packet whose own verdict was lost.
			return nfq.Verdict{Accept: true, SetMark: true, Mark: mark&^mask | acceptMark, Sole: true}
		case verdict.Reject:
			if resets != nil && d.Proto == rules.ProtoTCP && d.Src.Is6() && resets.Reset(pkt) == nil {
				return nfq.Verdict{} // answered; the SYN itself goes no further
			}
			return nfq.Verdict{Accept: true, SetMark: true, Mark: mark&^mask | rejectMark}
		default:
			return nfq.Verdict{}
		}
	}
}

func logKnock(log *slog.Logger, debug bool, d verdict.Decision) {
	switch d.Knock.Event {
	case tracker.EventGrant:
		log.Info("grant", keySrc, d.Src.String(), keyService, d.Service)
	case tracker.EventStep, tracker.EventRepeat:
		if debug {
			log.Debug("knock", keySrc, d.Src.String(), keyService, d.Service, keyStep, d.Knock.Done, keyPort, d.Port, keyProto, d.Proto, "event", d.Knock.Event.String())
		}
	case tracker.EventReset:
		if debug {
			log.Debug("reset", keySrc, d.Src.String(), keyService, d.Service, keyPort, d.Port, keyProto, d.Proto)
		}
	}
}
