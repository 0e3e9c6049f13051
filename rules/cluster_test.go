package rules_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/rules"
)

func clusterConfig() rules.Config {
	c := validConfig()
	c.Cluster.Bind = "10.0.0.1:7946"
	c.Cluster.Peers = []string{"10.0.0.2:7946"}
	c.Cluster.KeyFile = "/etc/knockwall/cluster.key"
	return c
}

func TestClusterOffByDefault(t *testing.T) {
	set := compile(t, validConfig())
	if set.Cluster.Enabled() {
		t.Fatal("the cluster is on without cluster.bind")
	}
	if set.Cluster.MaxClockSkew != rules.DefaultMaxClockSkew {
		t.Fatalf("max_clock_skew default %s, want %s", set.Cluster.MaxClockSkew, rules.DefaultMaxClockSkew)
	}
}

func TestClusterValid(t *testing.T) {
	c := clusterConfig()
	c.Cluster.Name = "fw-a.example"
	c.Cluster.Advertise = "192.0.2.1:7946"
	c.Cluster.Bind = "0.0.0.0:7946"
	set := compile(t, c)
	if !set.Cluster.Enabled() || set.Cluster.Name != "fw-a.example" || len(set.Cluster.Peers) != 1 {
		t.Fatalf("cluster compiled to %+v", set.Cluster)
	}
	c.Cluster.Peers[0] = "10.9.9.9:1"
	if set.Cluster.Peers[0] != "10.0.0.2:7946" {
		t.Fatal("the set shares the input's peers slice")
	}
}

func TestClusterInvalid(t *testing.T) {
	tests := []struct {
		name, key, msg string
		mutate         func(c *rules.ClusterConfig)
	}{
		{"key without bind", "cluster.bind", "required", func(c *rules.ClusterConfig) { c.Bind = "" }},
		{"no key file", "cluster.key_file", "keygen --cluster", func(c *rules.ClusterConfig) { c.KeyFile = "" }},
		{"relative key file", "cluster.key_file", "absolute", func(c *rules.ClusterConfig) { c.KeyFile = "cluster.key" }},
		{"bind without port", "cluster.bind", "address:port", func(c *rules.ClusterConfig) { c.Bind = "10.0.0.1" }},
		{"bind by name", "cluster.bind", "numeric", func(c *rules.ClusterConfig) { c.Bind = "fw-a:7946" }},
		{"bind port 0", "cluster.bind", "", func(c *rules.ClusterConfig) { c.Bind = "10.0.0.1:0" }},
		{"peer unspecified", "cluster.peers[0]", "", func(c *rules.ClusterConfig) { c.Peers = []string{"0.0.0.0:7946"} }},
		{"peer port", "cluster.peers[1]", "", func(c *rules.ClusterConfig) { c.Peers = []string{"10.0.0.2:7946", "10.0.0.3:99999"} }},
		{"advertise unspecified", "cluster.advertise", "", func(c *rules.ClusterConfig) { c.Advertise = "[::]:7946" }},
		{"name with space", "cluster.name", "letters", func(c *rules.ClusterConfig) { c.Name = "fw a" }},
		{"name too long", "cluster.name", "", func(c *rules.ClusterConfig) { c.Name = strings.Repeat("a", rules.MaxNodeName+1) }},
		{"skew 0", "cluster.max_clock_skew", "", func(c *rules.ClusterConfig) { c.MaxClockSkew = 0 }},
		{"skew an hour", "cluster.max_clock_skew", "at most", func(c *rules.ClusterConfig) { c.MaxClockSkew = time.Hour }},
		{"too many peers", "cluster.peers", "at most", func(c *rules.ClusterConfig) {
			c.Peers = nil
			for range rules.MaxPeers + 1 {
				c.Peers = append(c.Peers, "10.0.0.2:7946")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := clusterConfig()
			tt.mutate(&c.Cluster)
			_, err := rules.Compile(c)
			var ke *rules.KeyError
			if !errors.As(err, &ke) || !errors.Is(err, rules.ErrInvalid) {
				t.Fatalf("Compile: %v, want a KeyError", err)
			}
			if ke.Key != tt.key || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q (key %q), want key %q mentioning %q", err, ke.Key, tt.key, tt.msg)
			}
		})
	}
}
