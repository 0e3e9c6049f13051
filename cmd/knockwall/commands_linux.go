package main

import "github.com/spf13/cobra"

// daemonCommands are the commands of the daemon and of its host: they
// need Linux (NFQUEUE, nftables or iptables, network namespaces, the
// daemon's control socket).
func daemonCommands(env environment) []*cobra.Command {
	config := newConfigCmd(env)
	config.AddCommand(newFwknopClientCmd(env))
	return []*cobra.Command{
		newRunCmd(env),
		config,
		newRulesCmd(env),
		newExampleCmd(),
		newDemoCmd(env),
		newStatusCmd(env),
		newGrantsCmd(env),
		newGrantCmd(env),
		newRevokeCmd(env),
		newReloadCmd(env),
	}
}
