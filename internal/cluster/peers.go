//go:build !knockwall_omit_cluster

package cluster

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// Peer states, as status and metrics show them.
const (
	// StateAlive: a member that answers memberlist's probes.
	StateAlive = "alive"
	// StateSuspect: a member that has not answered the probes of
	// suspectRounds rounds: memberlist is deciding whether it failed.
	StateSuspect = "suspect"
	// StateDead: a node memberlist declared failed, or that left.
	StateDead = "dead"
)

// suspectRounds is how many probe rounds without an answer make a member
// suspect here. memberlist keeps its own suspicion to itself (its Node
// carries no state), so knockwall tells it by the answers to the probes.
const suspectRounds = 3

// peer is what is known of another node.
type peer struct {
	addr string
	seen time.Time // joined, answered a probe, or sent a message accepted
	gone bool      // declared dead, or left
}

// states is every other node seen, with its state now.
func (n *Node) states() map[string]PeerStatus {
	now := time.Now()
	members := n.ml.Members()
	round := n.probeEvery * time.Duration(max(1, len(members)-1))
	last := n.Core.LastSync()
	self := n.cfg.Core.Name
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range members {
		if m.Name == self {
			continue
		}
		p := n.known[m.Name]
		if p == nil {
			if len(n.known) >= maxPeers {
				continue
			}
			p = &peer{seen: now}
			n.known[m.Name] = p
		}
		p.addr, p.gone = m.Address(), false
	}
	out := make(map[string]PeerStatus, len(n.known))
	for name, p := range n.known {
		st := PeerStatus{Name: name, Addr: p.addr, State: StateAlive}
		seen := p.seen
		if t := last[name]; t.After(seen) {
			seen = t
		}
		switch {
		case p.gone:
			st.State = StateDead
		case now.Sub(seen) > suspectRounds*round:
			st.State = StateSuspect
		}
		out[name] = st
	}
	return out
}

// Stats is the cluster's state: every other node seen with its state and
// the last message accepted from it, and the counters.
func (n *Node) Stats() Stats {
	states := n.states()
	peers := make([]PeerStatus, 0, len(states))
	for _, p := range states {
		peers = append(peers, p)
	}
	return n.Core.stats(peers)
}

// touch records that name answered or joined.
func (n *Node) touch(m *memberlist.Node, gone bool) {
	if m.Name == n.cfg.Core.Name {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.known[m.Name]
	if p == nil {
		if len(n.known) >= maxPeers {
			return
		}
		p = &peer{}
		n.known[m.Name] = p
	}
	p.addr, p.gone = m.Address(), gone
	if !gone {
		p.seen = time.Now()
	}
}

// events follows joins and departures.
type events struct{ n *Node }

func (e events) NotifyJoin(m *memberlist.Node) {
	if m.Name == e.n.cfg.Core.Name {
		return
	}
	e.n.touch(m, false)
	e.n.cfg.Core.Log.Info("cluster: peer joined", "peer", m.Name, "addr", m.Address())
}

func (e events) NotifyLeave(m *memberlist.Node) {
	if m.Name == e.n.cfg.Core.Name {
		return
	}
	e.n.touch(m, true)
	e.n.cfg.Core.Log.Warn("cluster: peer gone (failed, or left)", "peer", m.Name, "addr", m.Address())
}

func (e events) NotifyUpdate(*memberlist.Node) {}

// pings takes the answers to memberlist's probes.
type pings struct{ n *Node }

func (pings) AckPayload() []byte { return nil }

func (p pings) NotifyPingComplete(m *memberlist.Node, _ time.Duration, _ []byte) { p.n.touch(m, false) }
