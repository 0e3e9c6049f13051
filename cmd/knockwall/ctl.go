//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/internal/config"
	"github.com/knockwall/knockwall/internal/control"
	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/rules"
)

// ctlTimeout bounds one request to the daemon; a reload rewrites the
// firewall, which takes well under this.
const ctlTimeout = 30 * time.Second

// ctlFlags are the flags of the commands that talk to the running daemon.
type ctlFlags struct {
	socket string
	path   string
}

func (f *ctlFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.socket, "socket", "", "control socket (default: control.socket of the config)")
	cmd.Flags().StringVarP(&f.path, "config", "c", "", "config file naming control.socket (default $KNOCKWALL_CONFIG, else "+config.DefaultPath+")")
}

// target is what a control command talks to, and the configuration it
// read (nil when none was read).
type target struct {
	client *control.Client
	cfg    *rules.Config
	path   string // the file cfg came from
}

// target finds the socket: --socket, else control.socket of the
// configuration resolved as `run` resolves it (-c, else KNOCKWALL_CONFIG,
// else the default; environment overrides included). A configuration
// that was named (-c or KNOCKWALL_CONFIG) and cannot be read or parsed
// stops the command (exit status 2): it never falls back to another
// socket, which could be another daemon's. Only when none was named and
// the default file does not exist is the default socket (or
// KNOCKWALL_CONTROL_SOCKET) used. With readConfig, the configuration is
// read even when --socket names the socket.
func (f *ctlFlags) target(env environment, readConfig bool) (target, error) {
	if f.socket != "" && !readConfig {
		return target{client: control.NewClient(f.socket)}, nil
	}
	path := config.Resolve(f.path, env.get)
	named := f.path != "" || env.get(config.EnvPrefix+"_CONFIG") != ""
	var t target
	c, err := config.Load(config.Source{Path: path}, env)
	switch _, serr := os.Stat(path); {
	case err == nil:
		t.cfg, t.path = &c, path
	case !named && errors.Is(serr, fs.ErrNotExist):
		// No configuration at all: the defaults.
	case errors.Is(err, rules.ErrInvalid):
		return t, err
	default:
		return t, usageError{err}
	}
	switch {
	case f.socket != "":
		t.client = control.NewClient(f.socket)
	case t.cfg == nil:
		sock := rules.DefaultControlSocket
		if v := env.get(config.EnvPrefix + "_CONTROL_SOCKET"); v != "" {
			sock = v
		}
		t.client = control.NewClient(sock)
	case t.cfg.Control.Socket == "":
		return t, usageError{fmt.Errorf("control.socket is empty in %s: the control socket is off (set it, or pass --socket)", path)}
	default:
		t.client = control.NewClient(t.cfg.Control.Socket)
	}
	return t, nil
}

// ctlErr makes the daemon's refusals of a request usage errors (exit
// status 2); an unreachable daemon stays an error (exit status 1).
func ctlErr(err error) error {
	if errors.Is(err, control.ErrNotFound) || errors.Is(err, control.ErrBadRequest) {
		return usageError{err}
	}
	return err
}

// ctlCommand is a command that sends one request to the daemon.
func ctlCommand(env environment, use, short string, args cobra.PositionalArgs, run func(ctx context.Context, cmd *cobra.Command, c *control.Client, args []string) error) *cobra.Command {
	var f ctlFlags
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := f.target(env, false)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), ctlTimeout)
			defer cancel()
			return ctlErr(run(ctx, cmd, t.client, args))
		},
	}
	f.register(cmd)
	return cmd
}

func newStatusCmd(env environment) *cobra.Command {
	cmd := ctlCommand(env, "status", "Show the running daemon's state: uptime, firewall, queues, services, drops", exactArgs(0),
		func(ctx context.Context, cmd *cobra.Command, c *control.Client, _ []string) error {
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			writeStatus(cmd.OutOrStdout(), st)
			return nil
		})
	return cmd
}

func writeStatus(w io.Writer, st control.Status) {
	up := seconds(st.UptimeSeconds)
	fmt.Fprintf(w, "knockwall %s, up %s (since %s)\n", st.Version, up, st.Started.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fw := "not managed (firewall.manage: false)"
	if st.Backend != "" {
		fw = st.Backend + ", fast path " + onOff(st.FastPath)
		switch st.FirewallMode {
		case firewall.ModeOwned:
			fw += ", owned table (no other process can change it)"
		case firewall.ModeSelfHeal:
			fw += ", self-heal (changes by others are put back)"
		}
	}
	fmt.Fprintf(tw, "firewall\t%s\n", fw)
	for _, q := range st.Queues {
		fmt.Fprintf(tw, "queue %d\t%d packets, %d overruns\n", q.Num, q.Packets, q.Overruns)
	}
	fmt.Fprintf(tw, "kernel drops\t%d queue full, %d socket full\n", st.Kernel.QueueDropped, st.Kernel.UserDropped)
	t := st.Tracker
	fmt.Fprintf(tw, "tracker\t%d pending, %d grants, %d evicted, %d refused, %d rate-limited\n", t.Pending, t.Grants, t.EvictedPending, t.RefusedGrants, t.RateLimited)
	fmt.Fprintf(tw, "heals\t%d\n", st.Heals)
	fmt.Fprintf(tw, "reloads\t%d\n", st.Reloads)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "SERVICE\tPORTS\tGRANTS\tPENDING\n")
	for _, s := range st.Services {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", s.Name, joinInts(s.Ports), s.Grants, s.Pending)
	}
	tw.Flush()
	if st.Cluster != nil {
		writeCluster(w, st.Cluster)
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func newGrantsCmd(env environment) *cobra.Command {
	var asJSON bool
	cmd := ctlCommand(env, "grants", "List the live grants", exactArgs(0),
		func(ctx context.Context, cmd *cobra.Command, c *control.Client, _ []string) error {
			gs, err := c.Grants(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(gs)
			}
			writeGrants(cmd.OutOrStdout(), gs)
			return nil
		})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func writeGrants(w io.Writer, gs []control.Grant) {
	if len(gs) == 0 {
		fmt.Fprintln(w, "no grants")
		return
	}
	// ORIGIN only when a cluster names one: a daemon alone has none.
	clustered := slices.ContainsFunc(gs, func(g control.Grant) bool { return g.Origin != "" })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "SOURCE\tSERVICE\tEXPIRES IN\tHOW\tCONNECTIONS LEFT"
	if clustered {
		head += "\tORIGIN"
	}
	fmt.Fprintln(tw, head)
	for _, g := range gs {
		svc, left := g.Service, "-"
		if svc == "" {
			svc = "(gone)"
		}
		if g.Limited {
			left = fmt.Sprint(g.Left)
		}
		row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s", g.Src, svc, seconds(g.ExpiresIn), g.How, left)
		if clustered {
			origin := g.Origin
			if origin == "" {
				origin = "-"
			}
			row += "\t" + origin
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
}

func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(time.Second)
}

func newGrantCmd(env environment) *cobra.Command {
	var dur time.Duration
	cmd := ctlCommand(env, "grant SRC SERVICE", "Grant SERVICE to source address SRC now, in the kernel too", exactArgs(2),
		func(ctx context.Context, cmd *cobra.Command, c *control.Client, args []string) error {
			src, err := parseSrcArg(args[0])
			if err != nil {
				return err
			}
			if dur < 0 {
				return usageError{fmt.Errorf("--for %s: must be positive", dur)}
			}
			req := control.GrantRequest{Src: src.String(), Service: args[1]}
			if dur > 0 {
				req.For = dur.String()
			}
			g, err := c.Grant(ctx, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "granted %s to %s for %s (until %s)\n", g.Service, g.Src, seconds(g.ExpiresIn), g.Expires.Format(time.RFC3339))
			return nil
		})
	cmd.Flags().DurationVar(&dur, "for", 0, "how long (default: the service's open_for)")
	return cmd
}

func newRevokeCmd(env environment) *cobra.Command {
	cmd := ctlCommand(env, "revoke SRC [SERVICE]", "End source address SRC's grants (of SERVICE, or all) now, in the kernel too", rangeArgs(1, 2),
		func(ctx context.Context, cmd *cobra.Command, c *control.Client, args []string) error {
			src, err := parseSrcArg(args[0])
			if err != nil {
				return err
			}
			var service string
			if len(args) == 2 {
				service = args[1]
			}
			n, err := c.Revoke(ctx, src.String(), service)
			if err != nil {
				return err
			}
			of := ""
			if service != "" {
				of = " of " + service
			}
			if n == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%s held no grant%s\n", src, of)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %d grant(s)%s from %s\n", n, of, src)
			return nil
		})
	return cmd
}

func newReloadCmd(env environment) *cobra.Command {
	var f ctlFlags
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Check the configuration, make the running daemon read it again, and say whether it took it",
		Long: `Check the configuration as ` + "`knockwall config check`" + ` does (key files and the
metrics token included), then ask the daemon to read it again. Exit status 0
only when the daemon answered that the new configuration is in force; 2 when
the file does not validate (nothing is sent to the daemon) or the daemon
refused it (the running configuration stays); 1 when the daemon cannot be
reached.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := f.target(env, true)
			if err != nil {
				return err
			}
			if t.cfg != nil {
				if err := validate(*t.cfg); err != nil {
					return fmt.Errorf("%s does not validate; the daemon was not asked to reload: %w", t.path, err)
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), ctlTimeout)
			defer cancel()
			if err := t.client.Reload(ctx); err != nil {
				var ae *control.APIError
				if errors.As(err, &ae) {
					return ctlErr(fmt.Errorf("reload refused; the running configuration stays: %w", err))
				}
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "reloaded")
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

func parseSrcArg(s string) (netip.Addr, error) {
	a, err := control.ParseSrc(s)
	if err != nil {
		return a, usageError{err}
	}
	return a, nil
}

func rangeArgs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.RangeArgs(lo, hi)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
