//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/internal/config"
	"github.com/knockwall/knockwall/internal/knockdconf"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
)

// configFlags are the flags every command that reads a config takes.
type configFlags struct {
	path    string
	example bool
}

func (f *configFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.path, "config", "c", "", "config file (default $KNOCKWALL_CONFIG, else "+config.DefaultPath+")")
	cmd.Flags().BoolVar(&f.example, "example", false, "use the embedded example config instead of a file")
}

// load reads, overrides and compiles the configuration, and reports what
// the loading found (overrides, the file's mode).
func (f *configFlags) load(env environment) (*rules.Set, config.Report, error) {
	src := config.Source{Example: f.example, Path: config.Resolve(f.path, env.get)}
	c, rep, err := config.LoadReport(src, env)
	if err != nil {
		return nil, rep, err
	}
	set, err := compile(c)
	if err != nil {
		return nil, rep, err
	}
	return set, rep, nil
}

// compile compiles c with its key files read.
func compile(c rules.Config) (*rules.Set, error) {
	return rules.Compile(c, rules.WithKeyReader(spa.ReadKeyFile), rules.WithFwknopKeyReader(fwknop.ReadKeyFile))
}

// validate checks c as config check does: it compiles, with its key
// files, and the metrics token file, when metrics are on, is usable.
func validate(c rules.Config) error {
	set, err := compile(c)
	if err != nil {
		return err
	}
	if set.Metrics.Listen != "" {
		if _, err := metricsToken(set); err != nil {
			return err
		}
	}
	return nil
}

func newConfigCmd(env environment) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect the configuration"}
	var f configFlags
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate the configuration and print it as knockwall will use it (after environment overrides)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, rep, err := f.load(env)
			if err != nil {
				return err
			}
			if set.Metrics.Listen != "" {
				if _, err := metricsToken(set); err != nil {
					return err
				}
			}
			for _, w := range append(warnings(set, rep), hostRuleWarnings(cmd.Context(), set)...) {
				fmt.Fprintf(cmd.ErrOrStderr(), "knockwall: warning: %s\n", w)
			}
			writeEffective(cmd.OutOrStdout(), set)
			return nil
		},
	}
	f.register(check)
	imp := &cobra.Command{
		Use:   "import-knockd FILE",
		Short: "Print a knockwall configuration equivalent to a knockd.conf",
		Long: `Read a knockd.conf and print the equivalent knockwall YAML on standard output:
each section whose command opens TCP ports (iptables, ip6tables or nft
accepting --dport N for %IP%) becomes a service with its sequence
(seq_timeout becomes step_timeout, cmd_timeout open_for). What cannot be
translated (one_time_sequences, other commands, tcpflags, ...) is listed as
comments at the top and on standard error. A section whose accept also
matches on something a service cannot express (-i, -d, -m iprange, -s other
than %IP%, a match module knockwall does not know, nft's iifname or ip
daddr) is not translated, since the service would open wider than knockd
did. Exit status 0 when anything was translated, 2 when nothing could be.

  knockwall config import-knockd /etc/knockd.conf > /etc/knockwall/knockwall.yaml
  knockwall config check -c /etc/knockwall/knockwall.yaml`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			out, notes, err := knockdconf.Convert(f)
			for _, n := range notes {
				fmt.Fprintf(cmd.ErrOrStderr(), "knockwall: not translated: %s\n", n)
			}
			if err != nil {
				if errors.Is(err, knockdconf.ErrNothing) {
					return fmt.Errorf("%w (%w)", err, rules.ErrInvalid)
				}
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	cmd.AddCommand(check, imp)
	return cmd
}

func newExampleCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "example",
		Short: "Print the embedded example configuration",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(rules.ExampleYAML)
			return err
		},
	}
}

// writeEffective prints the configuration as YAML, each service preceded by
// plain sentences saying what opens it.
func writeEffective(w io.Writer, s *rules.Set) {
	fmt.Fprintf(w, "# configuration is valid\n")
	fmt.Fprintf(w, "queue:\n  num: %d\n  count: %d\n  max_len: %d\n", s.Queue.Num, s.Queue.Count, s.Queue.MaxLen)
	fmt.Fprintf(w, "firewall:\n  manage: %t\n  backend: %s\n  fast_path: %t\n  keep_guard: %t\n  accept_mark: 0x%x\n  reject_mark: 0x%x\n  mark_mask: 0x%x\n",
		s.Firewall.Manage, s.Firewall.Backend, s.Firewall.FastPath, s.Firewall.KeepGuard, s.Firewall.AcceptMark, s.Firewall.RejectMark, s.Firewall.MarkMask)
	if len(s.Firewall.TrustedInterfaces) > 0 {
		fmt.Fprintf(w, "  trusted_interfaces: [%s]\n", strings.Join(s.Firewall.TrustedInterfaces, ", "))
	}
	fmt.Fprintf(w, "log:\n  level: %s\n  format: %s\n", s.Log.Level, s.Log.Format)
	fmt.Fprintf(w, "tracker:\n  max_pending: %d\n  max_grants: %d\n  max_nonces: %d\n  knock_rate: %g\n  knock_burst: %d\n",
		s.Tracker.MaxPending, s.Tracker.MaxGrants, s.Tracker.MaxNonces, s.Tracker.KnockRate, s.Tracker.KnockBurst)
	writeOperate(w, s)
	fmt.Fprintf(w, "services:\n")
	for _, svc := range s.Services {
		ports := joinInts(svc.Ports)
		seq := make([]string, len(svc.Sequence))
		for i, k := range svc.Sequence {
			seq[i] = k.String()
		}
		what := "TCP port(s) " + ports
		switch {
		case len(svc.Hosts) > 0:
			what = fmt.Sprintf("TCP port(s) %s of the routed hosts in %s", ports, joinPrefixes(svc.Hosts))
		case svc.Forward:
			what = fmt.Sprintf("the port forward(s) from TCP port(s) %s of this host", ports)
		}
		fmt.Fprintf(w, "  # %s: %s open for %s to a source that", svc.Name, what, svc.OpenFor)
		var ways []string
		if len(seq) > 0 {
			ways = append(ways, fmt.Sprintf("knocks %s in order, each within %s of the one before", strings.Join(seq, ", "), svc.StepTimeout))
		}
		if a := svc.SPA; a != nil {
			where := "in a TCP SYN to a protected port"
			if a.Port != 0 {
				where = fmt.Sprintf("by UDP to port %d or %s", a.Port, where)
			}
			token := "a valid SPA token"
			if a.RequireSource {
				token = "a valid SPA token bound to its own address"
			}
			ways = append(ways, fmt.Sprintf("sends %s (%d key(s), clock skew up to %s) %s", token, len(a.Keys), a.MaxSkew, where))
		}
		if f := svc.Fwknop; f != nil {
			packet := "a packet of the fwknop client"
			if f.RequireSource {
				packet = "a packet of the fwknop client naming its own address (-a, -R; not -s)"
			}
			ways = append(ways, fmt.Sprintf("sends %s (Rijndael + HMAC key, age up to %s) by UDP or TCP (-P tcpraw) to port %d or in a TCP SYN to a protected port", packet, f.MaxAge, f.Port))
		}
		if r := svc.Rotate; r != nil {
			ways = append(ways, fmt.Sprintf("knocks the %d TCP ports derived from the key for the current %s period (or the previous one), from the range %d-%d, each within %s",
				r.Length, r.Period, r.Lo, r.Hi, svc.StepTimeout))
		}
		fmt.Fprintf(w, " %s; everyone else gets %s.\n", strings.Join(ways, "; or "), svc.Closed)
		if len(svc.Sequence) > 0 {
			fmt.Fprintf(w, "  # Its sequence is worth %.0f bits against a sweep (%d bits once its knocks are sniffed and only their order is left); at most %d grants from it at once, each ending after %s unless its source connects.\n",
				math.Floor(rules.SweepBits(svc.Sequence)), int(math.Floor(rules.OrderBits(svc.Sequence))), svc.PlainGrants, svc.FirstConnectWithin)
		}
		for _, warn := range append(weaknesses(svc), unboundTokens(svc)...) {
			fmt.Fprintf(w, "  # WARNING: %s\n", warn)
		}
		fmt.Fprintf(w, "  %s:\n    ports: [%s]\n", svc.Name, ports)
		if len(seq) > 0 {
			fmt.Fprintf(w, "    sequence: [%s]\n", strings.Join(seq, ", "))
		}
		fmt.Fprintf(w, "    step_timeout: %s\n    open_for: %s\n    closed: %s\n", svc.StepTimeout, svc.OpenFor, svc.Closed)
		if svc.Connections > 0 {
			fmt.Fprintf(w, "    connections: %d\n", svc.Connections)
		}
		if len(svc.Sequence) > 0 {
			fmt.Fprintf(w, "    plain_grants: %d\n    first_connect_within: %s\n", svc.PlainGrants, svc.FirstConnectWithin)
		}
		if svc.Forward {
			fmt.Fprintf(w, "    forward: true\n")
		}
		if len(svc.Hosts) > 0 {
			fmt.Fprintf(w, "    hosts: [%s]\n", joinPrefixes(svc.Hosts))
		}
		if f := svc.Fwknop; f != nil {
			fmt.Fprintf(w, "    fwknop:\n      port: %d\n      max_age: %s\n      require_source: %t\n", f.Port, f.MaxAge, f.RequireSource)
		}
		if a := svc.SPA; a != nil {
			ids := make([]uint16, len(a.Keys))
			for i, k := range a.Keys {
				ids[i] = k.ID
			}
			fmt.Fprintf(w, "    spa:\n      port: %d\n      key_ids: [%s]\n      max_skew: %s\n      require_source: %t\n", a.Port, joinInts(ids), a.MaxSkew, a.RequireSource)
		}
		if r := svc.Rotate; r != nil {
			fmt.Fprintf(w, "    rotate:\n      key_id: %d\n      length: %d\n      period: %s\n      range: [%d, %d]\n", r.Key.ID, r.Length, r.Period, r.Lo, r.Hi)
		}
	}
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func joinInts(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ", ")
}

// warnings are the settings of set (from the file or the environment)
// that weaken protection, and a config file others can read that holds a
// plain sequence.
func warnings(set *rules.Set, rep config.Report) []string {
	var out []string
	if !set.Firewall.Manage {
		out = append(out, "firewall.manage is false: knockwall installs no rule; protected ports are only as closed as rules you install (knockwall rules print)")
	}
	if set.Firewall.Manage && !set.Firewall.KeepGuard {
		out = append(out, "firewall.keep_guard is false: a clean stop removes the guard, and protected ports are then open to whatever the host's own firewall allows")
	}
	for _, ifc := range set.Firewall.TrustedInterfaces {
		if _, err := net.InterfaceByName(ifc); err != nil {
			out = append(out, fmt.Sprintf("firewall.trusted_interfaces names %q, which does not exist (yet): once it does, nothing arriving on it is diverted or guarded", ifc))
		}
	}
	if set.Tracker.KnockRate == 0 {
		out = append(out, "tracker.knock_rate is 0: knock attempts are not rate limited, so plain sequences can be guessed as fast as packets can be sent")
	}
	if set.Firewall.Manage && (!set.Firewall.FastPath || set.Firewall.Backend == rules.BackendIptables) && hasSequence(set) {
		out = append(out, "without the nftables fast path every new UDP flow to this host is judged in user space (a wrong datagram resets knock progress): a flood of new UDP flows loads the daemon and, once its queue is full, drops new flows to the host's own UDP services too; bench/RESULTS.md has the cost")
	}
	for _, svc := range set.Services {
		out = append(out, weaknesses(svc)...)
	}
	out = append(out, operateWarnings(set)...)
	if rep.Path != "" && rep.Mode&0o044 != 0 {
		for _, svc := range set.Services {
			if len(svc.Sequence) > 0 {
				out = append(out, fmt.Sprintf("%s is readable by others (mode %04o) and holds a plain knock sequence (%s): anyone on this host can read it; chmod 600 it", rep.Path, rep.Mode, svc.Name))
				break
			}
		}
	}
	return out
}

// logOverrides logs each environment override once (the key, never the
// value: a value may be a secret's path or a sequence), and at WARN
// whatever weakens protection.
func logOverrides(log *slog.Logger, rep config.Report, set *rules.Set) {
	for _, k := range rep.Overrides {
		log.Info("environment override", "key", k, "variable", rep.Variables[k])
	}
	for _, w := range warnings(set, rep) {
		log.Warn(w)
	}
}

// hasSequence reports whether a service opens by a knock sequence, fixed or
// rotating.
func hasSequence(set *rules.Set) bool {
	for _, svc := range set.Services {
		if len(svc.Sequence) > 0 || svc.Rotate != nil {
			return true
		}
	}
	return false
}

// weaknesses names what makes a service easy to open by guessing.
func weaknesses(svc rules.Service) []string {
	var out []string
	if b := rules.SweepBits(svc.Sequence); len(svc.Sequence) > 0 && b < rules.MinSweepBits {
		out = append(out, fmt.Sprintf("%s's sequence is worth %.0f bits against an attacker who sweeps ports (below %d): about 2^%.0f packets complete it. Use 3 or more knocks on ports with no pattern (not in order, no round steps), or spa.",
			svc.Name, math.Floor(b), rules.MinSweepBits, math.Floor(b)))
	}
	if r := svc.Rotate; r != nil && r.Length < 3 {
		out = append(out, fmt.Sprintf("%s's rotating sequence has length %d; guessing it is cheap. Use 3 or more.", svc.Name, r.Length))
	}
	return out
}
