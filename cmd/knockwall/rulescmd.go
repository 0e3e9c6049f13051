//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/firewall/ipt"
	"github.com/knockwall/knockwall/internal/firewall/nft"
	"github.com/knockwall/knockwall/rules"
)

func newRulesCmd(env environment) *cobra.Command {
	cmd := &cobra.Command{Use: "rules", Short: "Show or remove the static firewall rules knockwall uses"}
	var f configFlags
	var backend string
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the rules `knockwall run` installs: an nft -f script, or a shell script of iptables-restore input",
		Long: `Print the static rules as knockwall run installs them, for hosts that manage
their own firewall (firewall.manage: false):

  knockwall rules print --backend nftables | nft -f -
  knockwall rules print --backend iptables | sh

Running either again replaces knockwall's rules atomically (the guard is never
absent) and adds nothing twice. The backend defaults to firewall.backend
(auto: nftables when the kernel has it). ` + "`knockwall rules remove`" + ` removes them.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, _, err := f.load(env)
			if err != nil {
				return err
			}
			name := backend
			if name == "" {
				name = set.Firewall.Backend
			}
			switch name = resolveBackend(name); name {
			case rules.BackendNftables:
				p := firewall.NewPlan(set, firewall.Options{FastPath: set.Firewall.FastPath})
				return nft.Renderer().Render(cmd.OutOrStdout(), p)
			case rules.BackendIptables:
				p := firewall.NewPlan(set, firewall.Options{})
				return ipt.New(ipt.Run).Render(cmd.OutOrStdout(), p)
			}
			return usageError{fmt.Errorf("--backend must be nftables or iptables, got %q", name)}
		},
	}
	f.register(print)
	print.Flags().StringVar(&backend, "backend", "", "nftables or iptables (default: firewall.backend)")

	remove := &cobra.Command{
		Use:   "remove",
		Short: "Remove every rule knockwall owns, guard included, in nftables and iptables",
		Long: `Remove every rule knockwall owns: the nftables table inet knockwall, and the
KNOCKWALL-* chains and the jumps into them in iptables and ip6tables. The
guard goes too, so protected ports are then governed by the host's own
firewall alone: this is what an uninstall runs. Nothing left to remove is
not an error. Needs no configuration.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var errs []error
			removed := false
			if nft.Available() {
				b, err := nft.New()
				if err != nil {
					errs = append(errs, err)
				} else {
					defer b.Close()
					removed = true
					errs = append(errs, removeWith(ctx, b))
				}
			}
			if ipt.Available() {
				removed = true
				errs = append(errs, removeWith(ctx, ipt.New(ipt.Run)))
			}
			if !removed {
				fmt.Fprintln(cmd.ErrOrStderr(), "knockwall: neither nftables nor iptables is available here; nothing to remove")
			}
			return errors.Join(errs...)
		},
	}
	guard := &cobra.Command{
		Use:   "guard",
		Short: "Install only the guard: protected ports closed until the daemon takes over",
		Long: `Install only knockwall's guard from the configuration: SYNs to protected
ports (and to port-forwarded ports) that knockwall did not accept are
dropped, and knockwall's mark bits are cleared on what arrives. Nothing is
sent to NFQUEUE and no daemon runs: this is what the boot units run before
the network comes up (knockwall-guard.service, OpenWrt's init script), so
that no protected port is open between boot and ` + "`knockwall run`" + `, or when
the daemon fails to start. The daemon replaces the guard in one atomic step
when it starts. Interfaces in firewall.trusted_interfaces and lo are left
alone, as by the daemon.

If knockwall's full rules for this configuration are already in place (a
daemon runs), nothing is changed. If the configuration cannot be read or
does not validate, nothing is changed either (a guard already in place
stays) and the exit status is 2; a failure to install is exit status 1.
With firewall.manage: false nothing is installed.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, _, err := f.load(env)
			if err != nil {
				return fmt.Errorf("%w; no rule changed: a guard already in place stays", err)
			}
			if !set.Firewall.Manage {
				fmt.Fprintln(cmd.ErrOrStderr(), "knockwall: firewall.manage is false: no guard installed; protected ports are only as closed as rules you install (knockwall rules print)")
				return nil
			}
			b, fast, err := guardBackend(set)
			if err != nil {
				return fmt.Errorf("%w; no rule changed: a guard already in place stays", err)
			}
			defer b.Close()
			return installGuard(cmd.Context(), b, set, fast, cmd.OutOrStdout())
		},
	}
	f.register(guard)
	cmd.AddCommand(print, remove, guard)
	return cmd
}

// guardBackend opens the backend firewall.backend names, as the daemon
// does, and says whether the daemon would use the fast path on it: the
// guard is then installed in a table of the persistence the daemon's has
// (firewall.owned_table), with the sets its plan has, which its start
// adopts and keeps.
func guardBackend(set *rules.Set) (firewall.Backend, bool, error) {
	if resolveBackend(set.Firewall.Backend) == rules.BackendNftables {
		b, err := nft.New(nft.WithOwnedTable(set.Firewall.OwnedTable))
		if err != nil {
			return nil, false, fmt.Errorf("firewall.backend nftables: %w", err)
		}
		return b, set.Firewall.FastPath, nil
	}
	return ipt.New(ipt.Run), false, nil
}

// installGuard puts the guard of set's plan in the kernel in one atomic
// step, unless the kernel already holds the whole plan (a daemon runs, and
// its rules include the guard).
func installGuard(ctx context.Context, b firewall.Backend, set *rules.Set, fast bool, w io.Writer) error {
	full := firewall.NewPlan(set, firewall.Options{FastPath: fast})
	if missing, err := b.Check(ctx, full); err == nil && len(missing) == 0 {
		fmt.Fprintf(w, "knockwall: the daemon's rules for this configuration are in place (%s), guard included: nothing changed\n", b.Name())
		return nil
	}
	if err := b.Apply(ctx, full.Stopped()); err != nil {
		return fmt.Errorf("install the guard (%s): %w; whatever was in place stays", b.Name(), err)
	}
	ports := joinInts(set.ProtectedPorts())
	if fwd := set.ForwardPorts(); len(fwd) > 0 {
		ports += "; port forwards from " + joinInts(fwd)
	}
	if len(set.RoutedPrefixes()) > 0 {
		ports += "; routed hosts in " + joinPrefixes(set.RoutedPrefixes())
	}
	fmt.Fprintf(w, "knockwall: guard installed (%s): protected TCP ports (%s) closed until knockwall run takes over\n", b.Name(), ports)
	return nil
}

func removeWith(ctx context.Context, b firewall.Backend) error {
	if err := b.Remove(ctx); err != nil {
		return fmt.Errorf("%s: %w", b.Name(), err)
	}
	return nil
}
