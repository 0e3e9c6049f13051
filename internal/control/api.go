package control

import (
	"net/netip"
	"time"

	"github.com/knockwall/knockwall/internal/daemon"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// The API's paths.
const (
	PathStatus = "/v1/status"
	PathGrants = "/v1/grants"
	PathReload = "/v1/reload"
)

// Status is GET /v1/status.
type Status struct {
	Version       string    `json:"version"`
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Backend       string    `json:"backend"` // "" when firewall.manage is false
	FastPath      bool      `json:"fast_path"`
	FirewallMode  string    `json:"firewall_mode,omitempty"` // "owned" (no other process can change the rules), "self-heal"; "" when not managed
	Queues        []Queue   `json:"queues"`
	Kernel        Kernel    `json:"kernel"`
	Tracker       Tracker   `json:"tracker"`
	Services      []Service `json:"services"`
	Heals         uint64    `json:"heals"`
	Reloads       uint64    `json:"reloads"`
	// Counts since the start, non-zero only: verdicts by "verdict/reason",
	// knocks by event, SPA tokens by result, grants made by method.
	Verdicts   map[string]uint64 `json:"verdicts"`
	Knocks     map[string]uint64 `json:"knocks"`
	Tokens     map[string]uint64 `json:"spa_tokens"`
	GrantsMade map[string]uint64 `json:"grants_made"`
	// Cluster is absent when the daemon runs alone.
	Cluster *Cluster `json:"cluster,omitempty"`
}

// Cluster is the cluster's state as this node sees it.
type Cluster struct {
	Name     string        `json:"name"`
	Peers    []ClusterPeer `json:"peers"`
	LastSync time.Time     `json:"last_sync"` // the latest message accepted from any peer
	Events   int           `json:"events"`    // grants and revokes held
	Tokens   int           `json:"tokens"`    // spent tokens held
	// Sent and Received count grants, revokes and tokens; Refused counts
	// messages by why: key, skew, service, malformed, full.
	Sent     map[string]uint64 `json:"sent"`
	Received map[string]uint64 `json:"received"`
	Refused  map[string]uint64 `json:"refused"`
}

// ClusterPeer is one other node of the cluster.
type ClusterPeer struct {
	Name     string    `json:"name"`
	Addr     string    `json:"addr"`
	State    string    `json:"state"` // alive, suspect, dead
	LastSync time.Time `json:"last_sync"`
}

// Queue is one NFQUEUE's counters.
type Queue struct {
	Num           uint16 `json:"num"`
	Packets       uint64 `json:"packets"`
	Overruns      uint64 `json:"overruns"`
	VerdictErrors uint64 `json:"verdict_errors"`
	Malformed     uint64 `json:"malformed"`
	Panics        uint64 `json:"panics"`
}

// Kernel is the kernel's counters of knockwall's queues.
type Kernel struct {
	Waiting      uint64 `json:"waiting"`
	QueueDropped uint64 `json:"queue_dropped"` // the queue was full
	UserDropped  uint64 `json:"user_dropped"`  // the socket buffer was full
}

// Tracker is the tracker's size and counters.
type Tracker struct {
	Pending        int    `json:"pending"`
	Grants         int    `json:"grants"`
	EvictedPending uint64 `json:"evicted_pending"`
	RefusedGrants  uint64 `json:"refused_grants"`
	RateLimited    uint64 `json:"rate_limited"`
	Exhausted      uint64 `json:"exhausted"`
}

// Service is one service's state.
type Service struct {
	Name    string   `json:"name"`
	Ports   []uint16 `json:"ports"`
	Grants  int      `json:"grants"`
	Pending int      `json:"pending"`
}

// Grant is one live grant (GET /v1/grants lists them; POST /v1/grants
// answers with the one made).
type Grant struct {
	Src     netip.Addr `json:"src"`
	Service string     `json:"service"` // "" when the service is gone from the configuration
	Expires time.Time  `json:"expires"`
	// ExpiresIn is the seconds left, on the daemon's clock.
	ExpiresIn float64 `json:"expires_in"`
	How       string  `json:"how"`
	// Limited: one-shot, with Left new connections left.
	Limited bool `json:"limited"`
	Left    int  `json:"left,omitempty"`
	// Origin is the cluster node that made it (absent without a cluster).
	Origin string `json:"origin,omitempty"`
}

// Grants is GET /v1/grants.
type Grants struct {
	Grants []Grant `json:"grants"`
}

// GrantRequest is POST /v1/grants.
type GrantRequest struct {
	Src     string `json:"src"`
	Service string `json:"service"`
	// For is a Go duration ("10m"); empty grants the service's open_for.
	For string `json:"for,omitempty"`
}

// Revoked is DELETE /v1/grants?src=ADDR[&service=NAME].
type Revoked struct {
	Revoked int `json:"revoked"`
}

// Reloaded is POST /v1/reload when the new configuration is in force.
type Reloaded struct {
	Reloaded bool `json:"reloaded"`
}

// Error is every answer that is not 200.
type Error struct {
	Error string `json:"error"`
	// InvalidConfig: a reload refused for a bad configuration
	// (rules.ErrInvalid); the running configuration stays.
	InvalidConfig bool `json:"invalid_config,omitempty"`
}

func statusOf(st daemon.Stats, svcs []daemon.ServiceStatus, now time.Time) Status {
	s := Status{Version: st.Version, Started: st.Started.UTC(), UptimeSeconds: now.Sub(st.Started).Seconds(),
		Backend: st.Backend, FastPath: st.FastPath, FirewallMode: st.Mode, Heals: st.Heals, Reloads: st.Reloads,
		Queues:   []Queue{},
		Services: []Service{},
		Kernel:   Kernel{Waiting: st.Kernel.Waiting, QueueDropped: st.Kernel.QueueDropped, UserDropped: st.Kernel.UserDropped},
		Tracker: Tracker{Pending: st.Tracker.Pending, Grants: st.Tracker.Grants, EvictedPending: st.Tracker.EvictedPending,
			RefusedGrants: st.Tracker.RefusedGrants, RateLimited: st.Tracker.Limited, Exhausted: st.Tracker.Exhausted},
		Verdicts: map[string]uint64{}, Knocks: map[string]uint64{}, Tokens: map[string]uint64{}, GrantsMade: map[string]uint64{},
	}
	for _, q := range st.Queues {
		s.Queues = append(s.Queues, Queue{Num: q.Num, Packets: q.Packets, Overruns: q.Overruns, VerdictErrors: q.VerdictErrors,
			Malformed: q.Malformed, Panics: q.Panics})
	}
	for _, v := range svcs {
		s.Services = append(s.Services, Service{Name: v.Name, Ports: v.Ports, Grants: v.Grants, Pending: v.Pending})
	}
	c := &st.Counts
	for v := range c.Verdicts {
		for r, n := range c.Verdicts[v] {
			if n > 0 {
				s.Verdicts[verdict.Verdict(v).String()+"/"+verdict.Reason(r).String()] = n
			}
		}
	}
	for e, n := range c.Knocks {
		if n > 0 && tracker.Event(e) != tracker.EventNone {
			s.Knocks[tracker.Event(e).String()] = n
		}
	}
	for i, n := range c.Tokens {
		if n > 0 {
			s.Tokens[daemon.TokenResults[i]] = n
		}
	}
	for m, n := range c.Grants {
		if n > 0 && m > 0 {
			s.GrantsMade[tracker.Method(m).String()] = n
		}
	}
	if cs := st.Cluster; cs != nil {
		s.Cluster = &Cluster{Name: cs.Name, Peers: []ClusterPeer{}, LastSync: cs.LastSync.UTC(), Events: cs.Entries, Tokens: cs.Tokens,
			Sent:     map[string]uint64{"grants": cs.GrantsSent, "revokes": cs.RevokesSent, "tokens": cs.TokensSent},
			Received: map[string]uint64{"grants": cs.GrantsReceived, "revokes": cs.RevokesReceived, "tokens": cs.TokensReceived},
			Refused: map[string]uint64{"key": cs.RefusedKey, "skew": cs.RefusedSkew, "service": cs.RefusedService,
				"malformed": cs.RefusedMalformed, "full": cs.RefusedFull}}
		for _, p := range cs.Peers {
			s.Cluster.Peers = append(s.Cluster.Peers, ClusterPeer{Name: p.Name, Addr: p.Addr, State: p.State, LastSync: p.LastSync.UTC()})
		}
	}
	return s
}

func grantOf(g daemon.GrantEntry, now time.Time) Grant {
	return Grant{Src: g.Src, Service: g.Service, Expires: g.Expires.UTC(), ExpiresIn: max(g.Expires.Sub(now), 0).Seconds(),
		How: g.How.String(), Limited: g.Limited, Left: g.Left, Origin: g.Origin}
}
