//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"

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
	cmd.AddCommand(print, remove)
	return cmd
}

func removeWith(ctx context.Context, b firewall.Backend) error {
	if err := b.Remove(ctx); err != nil {
		return fmt.Errorf("%s: %w", b.Name(), err)
	}
	return nil
}
