//go:build !linux

package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// daemonConfigNote: only Linux reads a server's config.
const daemonConfigNote = ""

func registerDaemonFlags(*cobra.Command, *knockOpts) {}

// daemonPlan: a file that is no client config is refused here; the server's
// config is read on Linux only, where the daemon runs.
func (o *knockOpts) daemonPlan(env environment, path string) (knockPlan, error) {
	if path == "" {
		return knockPlan{}, usageError{fmt.Errorf("%w (no client config at %s; write one with knockwall client init)", errNoKnocks, clientConfigWhere(env))}
	}
	return knockPlan{}, usageError{fmt.Errorf("%s is not a client config (it has no servers section); write one with knockwall client init", path)}
}
