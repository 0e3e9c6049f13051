package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/rules"
)

func newRulesCmd(env environment) *cobra.Command {
	cmd := &cobra.Command{Use: "rules", Short: "Show the static firewall rules knockwall uses"}
	var f configFlags
	var remove bool
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the iptables/ip6tables commands that install (or with --remove, remove) knockwall's static rules",
		Long: `Print the static rules as a shell script, for hosts that manage their own
firewall (firewall.manage: false). Pipe it to sh as root to apply it:

  knockwall rules print -c /etc/knockwall/knockwall.yaml | sh
  knockwall rules print -c /etc/knockwall/knockwall.yaml --remove | sh`,
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
				for _, c := range p.Remove {
					fmt.Fprintf(w, "%s 2>/dev/null\n", shellJoin(c))
				}
				return nil
			}
			fmt.Fprintln(w, "# knockwall's static rules. The guard (security table) keeps protected ports")
			fmt.Fprintln(w, "# closed whenever knockwall is not running; keep it installed.")
			fmt.Fprintln(w, "set -e")
			for _, c := range p.Install {
				fmt.Fprintln(w, shellJoin(c))
			}
			return nil
		},
	}
	f.register(print)
	print.Flags().BoolVar(&remove, "remove", false, "print the commands that remove the rules")
	cmd.AddCommand(print)
	return cmd
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
