package main

import (
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/rules"
)

func newRulesCmd(env environment) *cobra.Command {
	cmd := &cobra.Command{Use: "rules", Short: "Show the static firewall rules knockwall uses"}
	var f configFlags
	var remove, keepGuard bool
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the iptables/ip6tables commands that install (or with --remove, remove) knockwall's static rules",
		Long: `Print the static rules as a shell script, for hosts that manage their own
firewall (firewall.manage: false). Pipe it to sh as root to apply it:

  knockwall rules print -c /etc/knockwall/knockwall.yaml | sh
  knockwall rules print -c /etc/knockwall/knockwall.yaml --remove | sh

The install script adds the guard only where it is missing, so running it
again never takes the guard away, not even for a moment. --remove
--keep-guard removes everything but the guard: with the install script
after it, that replaces the rules while protected ports stay closed
(scripts/install-rules.sh does this).`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, set, err := f.load(env)
			if err != nil {
				return err
			}
			p := set.FirewallPlan()
			w := cmd.OutOrStdout()
			fmt.Fprintln(w, "#!/bin/sh")
			if remove {
				fmt.Fprintln(w, "# Remove knockwall's static rules. Missing rules are fine.")
				if keepGuard {
					fmt.Fprintln(w, "# The guard stays, so protected ports stay closed.")
				}
				for _, c := range p.Remove {
					if keepGuard && rules.IsGuard(c) {
						continue
					}
					fmt.Fprintf(w, "%s 2>/dev/null || true\n", shellJoin(c))
				}
				return nil
			}
			fmt.Fprintln(w, "# knockwall's static rules. The guard (security table) keeps protected ports")
			fmt.Fprintln(w, "# closed whenever knockwall is not running; keep it installed. Guard rules")
			fmt.Fprintln(w, "# already in place are kept, not added twice.")
			fmt.Fprintln(w, "set -e")
			for _, c := range p.Install {
				fmt.Fprintln(w, ensureLine(c))
			}
			fmt.Fprintln(w, "# Guard rules of earlier knockwall versions, now that this guard is in place.")
			for _, c := range p.Retire {
				fmt.Fprintf(w, "%s 2>/dev/null || true\n", shellJoin(c))
			}
			return nil
		},
	}
	f.register(print)
	print.Flags().BoolVar(&remove, "remove", false, "print the commands that remove the rules")
	print.Flags().BoolVar(&keepGuard, "keep-guard", false, "with --remove: leave the guard in place")
	cmd.AddCommand(print)
	return cmd
}

// ensureLine is c as a shell line; for the guard, one that adds only what
// is missing: a chain that does not exist, a rule that -C does not find.
func ensureLine(c rules.Command) string {
	check, ok := c.Check()
	if !rules.IsGuard(c) || !ok {
		return shellJoin(c)
	}
	quiet := " 2>/dev/null" // -C says nothing on success
	if slices.Contains(c.Args, "-N") {
		quiet = " >/dev/null 2>&1" // -S lists the chain
	}
	return shellJoin(check) + quiet + " || " + shellJoin(c)
}

func shellJoin(c rules.Command) string {
	s := c.Bin
	for _, a := range c.Args {
		if a == "!" {
			a = "'!'"
		}
		s += " " + a
	}
	return s
}
