//go:build linux

package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/knockwall/knockwall/internal/cluster"
	"github.com/knockwall/knockwall/internal/daemon"
	"github.com/knockwall/knockwall/rules"
)

// clusterStarter returns what starts the cluster set.Cluster describes,
// or nil when it is off. The key is read here, before anything is
// changed, so a bad key file stops the start with nothing touched.
func clusterStarter(set *rules.Set, log *slog.Logger) (func(cluster.Host) (daemon.Sharer, error), error) {
	c := set.Cluster
	if !c.Enabled() {
		return nil, nil
	}
	if !cluster.Built {
		return nil, cluster.ErrOmitted
	}
	key, err := cluster.LoadKey(c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster.key_file: %w", err)
	}
	name := c.Name
	if name == "" {
		if name, err = os.Hostname(); err != nil || name == "" || len(name) > rules.MaxNodeName {
			return nil, fmt.Errorf("cluster.name: not set, and the host name %q cannot stand for it (%v)", name, err)
		}
	}
	return func(h cluster.Host) (daemon.Sharer, error) {
		n, err := cluster.Start(cluster.NodeConfig{
			Core: cluster.Config{Name: name, Host: h, Log: log, MaxSkew: c.MaxClockSkew,
				MaxEntries: 2 * set.Tracker.MaxGrants, MaxTokens: 2 * max(set.Tracker.MaxNonces, rules.DefaultMaxNonces)},
			Bind: c.Bind, Advertise: c.Advertise, Peers: c.Peers, Key: key,
		})
		if err != nil {
			return nil, err
		}
		log.Info("cluster: started", "name", name, "bind", c.Bind, "peers", len(c.Peers), "max_clock_skew", c.MaxClockSkew.String())
		return n, nil
	}, nil
}
