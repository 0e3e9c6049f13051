package metrics

import "github.com/knockwall/knockwall/internal/daemon"

// peerStates are the states a peer is counted in, each written.
var peerStates = []string{"alive", "suspect", "dead"}

// appendCluster writes the cluster's families (sorted by name; between
// build_info and fast_path); nothing without a cluster.
func (w *writer) appendCluster(st *daemon.Stats) {
	c := st.Cluster
	if c == nil {
		return
	}
	w.oneGauge("cluster_last_sync_seconds", "When a peer's message was last accepted, in seconds since the Unix epoch (0: never).", lastSync(c.LastSync.UnixNano(), c.LastSync.IsZero()))
	w.family("cluster_peers", gauge, "Other nodes of the cluster, by state (alive; suspect: not answering probes; dead: failed or stopped).")
	for _, s := range peerStates {
		n := 0
		for _, p := range c.Peers {
			if p.State == s {
				n++
			}
		}
		w.gauge("cluster_peers", float64(n), "state", s)
	}
	w.family("cluster_received_total", counter, "Events taken from peers, by kind (grant, revoke, token).")
	w.counter("cluster_received_total", c.GrantsReceived, "kind", "grant")
	w.counter("cluster_received_total", c.RevokesReceived, "kind", "revoke")
	w.counter("cluster_received_total", c.TokensReceived, "kind", "token")
	w.family("cluster_refused_total", counter, "Cluster messages or events refused, by why (key: not sealed with the cluster key; skew: the peer's clock; service: unknown or differing service; malformed; full).")
	w.counter("cluster_refused_total", c.RefusedKey, "reason", "key")
	w.counter("cluster_refused_total", c.RefusedSkew, "reason", "skew")
	w.counter("cluster_refused_total", c.RefusedService, "reason", "service")
	w.counter("cluster_refused_total", c.RefusedMalformed, "reason", "malformed")
	w.counter("cluster_refused_total", c.RefusedFull, "reason", "full")
	w.family("cluster_sent_total", counter, "Events sent to peers, by kind (grant, revoke, token).")
	w.counter("cluster_sent_total", c.GrantsSent, "kind", "grant")
	w.counter("cluster_sent_total", c.RevokesSent, "kind", "revoke")
	w.counter("cluster_sent_total", c.TokensSent, "kind", "token")
}

func lastSync(ns int64, zero bool) float64 {
	if zero {
		return 0
	}
	return float64(ns) / 1e9
}
