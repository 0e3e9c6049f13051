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
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/internal/config"
	"github.com/knockwall/knockwall/internal/control"
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

// client finds the socket: --socket, else control.socket of the
// configuration resolved as `run` resolves it (environment overrides
// included). A configuration that cannot be read does not stop a command
// that only needs the socket: the default (or KNOCKWALL_CONTROL_SOCKET)
// is used, with a note, so a reload can still report what is wrong.
func (f *ctlFlags) client(env environment, stderr io.Writer) (*control.Client, error) {
	if f.socket != "" {
		return control.NewClient(f.socket), nil
	}
	path := config.Resolve(f.path, env.get)
	c, err := config.Load(config.Source{Path: path}, env)
	if err != nil {
		sock := rules.DefaultControlSocket
		if v := env.get(config.EnvPrefix + "_CONTROL_SOCKET"); v != "" {
			sock = v
		}
		// No file where none was named is the usual case: no note.
		if _, serr := os.Stat(path); f.path != "" || !errors.Is(serr, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "knockwall: note: control.socket not read from %s (%v); trying %s\n", path, err, sock)
		}
		return control.NewClient(sock), nil
	}
	if c.Control.Socket == "" {
		return nil, usageError{fmt.Errorf("control.socket is empty in %s: the control socket is off (set it, or pass --socket)", path)}
	}
	return control.NewClient(c.Control.Socket), nil
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
			c, err := f.client(env, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), ctlTimeout)
			defer cancel()
			return ctlErr(run(ctx, cmd, c, args))
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
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "SOURCE\tSERVICE\tEXPIRES IN\tHOW\tCONNECTIONS LEFT\n")
	for _, g := range gs {
		svc, left := g.Service, "-"
		if svc == "" {
			svc = "(gone)"
		}
		if g.Limited {
			left = fmt.Sprint(g.Left)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", g.Src, svc, seconds(g.ExpiresIn), g.How, left)
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
	cmd := ctlCommand(env, "reload", "Make the running daemon read its configuration again, and say whether it took it", exactArgs(0),
		func(ctx context.Context, cmd *cobra.Command, c *control.Client, _ []string) error {
			if err := c.Reload(ctx); err != nil {
				var ae *control.APIError
				if errors.As(err, &ae) {
					return fmt.Errorf("reload refused; the running configuration stays: %w", err)
				}
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "reloaded")
			return nil
		})
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
