//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/internal/daemon"
	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/firewall/ipt"
	"github.com/knockwall/knockwall/internal/firewall/nft"
	"github.com/knockwall/knockwall/internal/nfq"
	"github.com/knockwall/knockwall/internal/rst"
	"github.com/knockwall/knockwall/internal/state"
	"github.com/knockwall/knockwall/rules"
)

const (
	// copyRange is how much of each packet the kernel copies to us: the
	// headers, and the payload of a knock, an SPA token or a whole fwknop
	// packet (up to 1500 bytes), by UDP or in a SYN. A SYN without payload
	// costs no more for it: the kernel copies what the packet holds.
	copyRange = 2048
	// socketBuffer is the netlink receive buffer per queue (the kernel
	// doubles it for its bookkeeping): a few milliseconds of work at full
	// speed. Past it the kernel drops (fail closed), counted as
	// socket_full. bench/RESULTS.md has the measurements behind the size.
	socketBuffer = 1 << 20
)

func newRunCmd(env environment) *cobra.Command {
	var f configFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: install the static rules and judge diverted packets",
		Long: `Run the daemon. It installs knockwall's static firewall rules, judges the
packets they divert, keeps the rules in place (rules removed by someone else
are put back within a second), and reloads its configuration on SIGHUP.

A clean stop (SIGINT, SIGTERM) removes the diversion and leaves the guard, so
protected ports stay closed until the next start (firewall.keep_guard);
` + "`knockwall rules remove`" + ` removes everything. A start that fails changes nothing:
a guard already in place stays.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, rep, err := f.load(env)
			if err != nil {
				return err
			}
			log := newLogger(cmd.ErrOrStderr(), set.Log)
			logOverrides(log, rep, set)
			return run(cmd.Context(), set, func() (*rules.Set, error) { s, _, err := f.load(env); return s, err }, log)
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

// resolveBackend names the backend firewall.backend asks for: auto is
// nftables when the kernel has it, else iptables.
func resolveBackend(name string) string {
	if name != rules.BackendAuto {
		return name
	}
	if nft.Available() {
		return rules.BackendNftables
	}
	return rules.BackendIptables
}

// backends returns the firewall backend set asks for, and the other one,
// whose leftovers a start removes.
func backends(set *rules.Set) (firewall.Backend, []firewall.Backend, error) {
	switch name := resolveBackend(set.Firewall.Backend); name {
	case rules.BackendNftables:
		b, err := nft.New(nft.WithOwnedTable(set.Firewall.OwnedTable))
		if err != nil {
			return nil, nil, fmt.Errorf("firewall.backend nftables: %w", err)
		}
		var others []firewall.Backend
		if ipt.Available() {
			others = append(others, ipt.New(ipt.Run))
		}
		return b, others, nil
	default:
		var others []firewall.Backend
		if nft.Available() {
			if b, err := nft.New(); err == nil {
				others = append(others, b)
			}
		}
		return ipt.New(ipt.Run), others, nil
	}
}

// run is the daemon: it returns nil after a clean stop, and an error (exit
// status 1) when it could not start or a queue failed; the static rules
// then stay in place, so protected ports stay closed.
func run(ctx context.Context, set *rules.Set, load func() (*rules.Set, error), log *slog.Logger) error {
	ops, err := openOperate(set, log)
	if err != nil {
		return err
	}
	defer ops.close()
	var d *daemon.Daemon
	cfg := daemon.Config{
		Set:  set,
		Load: load,
		OpenQueue: func(ctx context.Context, num uint16, h nfq.Handler) (daemon.Queue, error) {
			q, err := nfq.Open(ctx, nfq.Config{Num: num, MaxLen: uint32(set.Queue.MaxLen), CopyRange: copyRange, ReadBuffer: socketBuffer}, h, log)
			if err != nil {
				return nil, err
			}
			return queue{q}, nil
		},
		NewResetter:       func() (daemon.Resetter, error) { return rst.Open(rst.AutoFlowLabels()) },
		NewRoutedResetter: func() (daemon.Resetter, error) { return rst.OpenRouted(rst.AutoFlowLabels()) },
		LocalAddrs:        localAddrs,
		KernelStats:       nfq.ReadKernelStats,
		Log:               log,
		Version:           version,
		Ready:             func() { ops.serve(d) },
	}
	if p := set.State.File; p != "" {
		cfg.State = state.NewFile(p)
	}
	if cfg.Cluster, err = clusterStarter(set, log); err != nil {
		return err
	}
	if set.Firewall.Manage {
		fw, others, err := backends(set)
		if err != nil {
			return err
		}
		defer fw.Close()
		for _, o := range others {
			defer o.Close()
		}
		cfg.Firewall, cfg.Others = fw, others
		w := firewall.NewWatcher()
		defer w.Close()
		cfg.Watch = w.Generation
		cfg.Events = w.Events
	}
	d, err = daemon.New(cfg)
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading the configuration")
				_ = d.Reload(ctx) // the daemon logs the outcome
			}
		}
	}()
	err = d.Run(ctx)
	// Stop answering before the backends close under the handlers.
	ops.close()
	return err
}

// localAddrs lists this host's addresses.
func localAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}

// queue adapts *nfq.Queue to daemon.Queue.
type queue struct{ q *nfq.Queue }

func (q queue) Fatal() <-chan error { return q.q.Fatal() }
func (q queue) Close() error        { return q.q.Close() }
func (q queue) Stats() daemon.QueueStats {
	c := &q.q.Counters
	return daemon.QueueStats{Num: q.q.Num(), Packets: c.Packets.Load(), Overruns: c.Overruns.Load(), VerdictErrors: c.VerdictErrors.Load(),
		Panics: c.Panics.Load(), Malformed: c.Malformed.Load(), Batches: c.Batches.Load()}
}
