//go:build knockwall_omit_cluster

package cluster

import "time"

// Built reports whether this build has the cluster: this one was built
// with the knockwall_omit_cluster tag, which leaves memberlist out (the
// small router builds).
const Built = false

// NodeConfig is a Node's configuration.
type NodeConfig struct {
	Core                                                Config
	Bind, Advertise                                     string
	Peers                                               []string
	Key                                                 []byte
	PushPullEvery, RejoinEvery, GossipEvery, ProbeEvery time.Duration
}

// Node is never made in this build.
type Node struct{ *Core }

// Start refuses: this build has no cluster.
func Start(NodeConfig) (*Node, error) { return nil, ErrOmitted }

// Close does nothing.
func (n *Node) Close() error { return nil }

// Stats is empty.
func (n *Node) Stats() Stats { return Stats{} }
