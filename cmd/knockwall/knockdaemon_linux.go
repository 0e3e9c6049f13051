package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/internal/config"
)

// daemonConfigNote completes -c's help: on Linux a server's config is
// read too.
const daemonConfigNote = ", or a server's config (then --service is needed; without either: $KNOCKWALL_CONFIG, else " + config.DefaultPath + ")"

// registerDaemonFlags adds --example: the embedded example server config.
func registerDaemonFlags(cmd *cobra.Command, o *knockOpts) {
	cmd.Flags().BoolVar(&o.example, "example", false, "use the embedded example server config")
}

// daemonPlan finds --service in a server's config (path, or where `run`
// finds it when path is empty) and what opens it.
func (o *knockOpts) daemonPlan(env environment, path string) (knockPlan, error) {
	if o.service == "" {
		return knockPlan{}, usageError{fmt.Errorf("%w (no client config at %s, and a server's config needs --service; write a client config with knockwall client init)", errNoKnocks, clientConfigWhere(env))}
	}
	f := configFlags{path: path, example: o.example}
	set, _, err := f.load(env)
	if err != nil {
		return knockPlan{}, err
	}
	for i := range set.Services {
		if set.Services[i].Name == o.service {
			p, err := planFromService(&set.Services[i], o.method)
			if err != nil {
				return p, err
			}
			return o.flagsOver(p), nil
		}
	}
	return knockPlan{}, usageError{fmt.Errorf("service %q is not in the config", o.service)}
}
