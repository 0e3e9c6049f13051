// Package cluster shares grants, revokes and spent tokens between
// knockwall daemons (a router pair behind keepalived, a server group
// behind one load balancer) over hashicorp/memberlist.
//
// Membership, failure detection and encryption are memberlist's:
// knockwall's events ride on its broadcast queue, and its push/pull state
// exchange carries every live event, so a node that restarts or comes
// back from a partition catches up. Core, the merge of events and the
// checks every peer's message passes, has no network of its own and is
// unit-tested with a fake clock and a fake host; Node (left out of builds
// with the knockwall_omit_cluster tag) joins it to memberlist.
//
// The merge rule: the latest event of a (source, service) wins. Events
// are ordered by their origin's clock at the event (Stamp), then by
// origin name, then by the origin's sequence number; an event not after
// the one held changes nothing, except that the same grant with fewer
// one-shot connections left lowers the count held. So a revoke ends every
// copy of the grants made before it, wherever they were made, and a grant
// made after a revoke (by its stamp) stands. Clocks are trusted within
// max_clock_skew: messages of a peer whose clock is further from ours are
// refused, and two events of one key closer together than the skew may be
// ordered by the wrong clock.
package cluster

import (
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/knockwall/knockwall/internal/lograte"
)

// Bounds of what Core remembers.
const (
	// TombstoneFor is the least time a revoke is remembered, so that a
	// grant it ended that is still on its way (a partition) cannot come
	// back; longer when the revoked grant was known to last longer.
	TombstoneFor = time.Hour
	// RefusedLogEvery limits the log lines of refused messages.
	RefusedLogEvery = 10 * time.Second
	// maxLogged bounds the (peer, service) pairs logged once.
	maxLogged = 1024
	// maxPeers bounds the peers whose last sync is remembered.
	maxPeers = 256
)

// Clock is the time source; tests fake it.
type Clock interface{ Now() time.Time }

// SystemClock is the wall clock.
type SystemClock struct{}

// Now is time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// Grant is a grant a peer made, to be applied as a local one.
type Grant struct {
	Src     netip.Addr
	Service string
	Expires time.Time
	Method  uint8 // tracker.Method
	Limited bool
	Left    int
	Origin  string
}

// Host is the daemon as the cluster sees it.
type Host interface {
	// ServiceHash is the hash of the definition of the service named
	// (ports and how it opens); false when there is no such service.
	ServiceHash(service string) (uint64, bool)
	// ApplyGrant puts a peer's grant into the tracker and the kernel's
	// sets, as a local one (bounded by the service in force); a one-shot
	// grant with no connection left ends the local copy.
	ApplyGrant(g Grant) error
	// ApplyRevoke ends src's grant of service.
	ApplyRevoke(src netip.Addr, service string)
	// MarkTokenUsed records a token spent at a peer in the replay cache,
	// until the time given.
	MarkTokenUsed(service string, method uint8, key []byte, until time.Time)
	// GrantLeft is the connections left of src's one-shot grant of
	// service; false when it holds none.
	GrantLeft(src netip.Addr, service string) (int, bool)
}

// version orders the events of one (source, service).
type version struct {
	stamp  int64
	origin string
	seq    uint64
}

// after reports whether v is later than o.
func (v version) after(o version) bool {
	if v.stamp != o.stamp {
		return v.stamp > o.stamp
	}
	if v.origin != o.origin {
		return v.origin > o.origin
	}
	return v.seq > o.seq
}

type entryKey struct {
	src     netip.Addr
	service string
}

type usedKey struct {
	method  uint8
	service string
	key     [FwknopKeySize]byte
	n       uint8
}

// Counters are what Core and Node count, for status and metrics.
type Counters struct {
	GrantsSent, GrantsReceived   atomic.Uint64
	RevokesSent, RevokesReceived atomic.Uint64
	TokensSent, TokensReceived   atomic.Uint64
	// Messages refused, by why.
	RefusedKey, RefusedSkew, RefusedService, RefusedMalformed, RefusedFull atomic.Uint64
}

// Config is what a Core is made of.
type Config struct {
	Name    string // this node's, the origin of its events
	Clock   Clock
	Host    Host
	Log     *slog.Logger
	MaxSkew time.Duration
	// MaxEntries bounds the grants and revokes held, MaxTokens the spent
	// tokens; past them new ones are refused (counted as full).
	MaxEntries, MaxTokens int
	// Send queues a message for every peer; nil sends nothing.
	Send func(Message)
}

// Core holds the cluster's events and merges peers' into the host.
type Core struct {
	cfg Config
	Counters

	mu      sync.Mutex
	seq     uint64
	entries map[entryKey]Event
	used    map[usedKey]int64
	peers   map[string]time.Time // sender → last message accepted
	logged  map[string]struct{}
	refused lograte.Limiter
}

// NewCore returns a Core.
func NewCore(cfg Config) *Core {
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	return &Core{cfg: cfg, entries: map[entryKey]Event{}, used: map[usedKey]int64{}, peers: map[string]time.Time{},
		logged: map[string]struct{}{}, refused: lograte.Limiter{Every: RefusedLogEvery}}
}

func (c *Core) send(e Event) {
	if c.cfg.Send != nil {
		c.cfg.Send(Message{Sender: c.cfg.Name, Sent: c.cfg.Clock.Now().UnixNano(), Events: []Event{e}})
	}
}

// LocalGrant records a grant made here at `at` and sends it to the peers.
// hash is the service's definition hash.
func (c *Core) LocalGrant(src netip.Addr, service string, hash uint64, expires time.Time, method uint8, limited bool, left int, at time.Time) {
	c.mu.Lock()
	c.seq++
	e := Event{Kind: KindGrant, Src: src.Unmap(), Service: service, Hash: hash, Origin: c.cfg.Name, Seq: c.seq,
		Stamp: at.UnixNano(), Expires: expires.UnixNano(), Method: method, Limited: limited, Left: uint16(min(max(left, 0), 65535))}
	ok := c.storeLocked(e)
	c.mu.Unlock()
	if ok {
		c.GrantsSent.Add(1)
		c.send(e)
	}
}

// LocalRevoke records that src's grant of service was ended here at `at`
// and sends it to the peers.
func (c *Core) LocalRevoke(src netip.Addr, service string, at time.Time) {
	c.mu.Lock()
	c.seq++
	k := entryKey{src.Unmap(), service}
	until := at.Add(TombstoneFor).UnixNano()
	if cur, ok := c.entries[k]; ok && cur.Expires > until {
		until = cur.Expires
	}
	e := Event{Kind: KindRevoke, Src: k.src, Service: service, Origin: c.cfg.Name, Seq: c.seq, Stamp: at.UnixNano(), Expires: until}
	ok := c.storeLocked(e)
	c.mu.Unlock()
	if ok {
		c.RevokesSent.Add(1)
		c.send(e)
	}
}

// LocalUsed records a token spent here, kept until `until`, and sends it
// to the peers. key is an SPA nonce or an fwknop digest.
func (c *Core) LocalUsed(service string, method uint8, key []byte, until time.Time) {
	e := Event{Kind: KindUsed, Service: service, Method: method, Key: append([]byte(nil), key...), Expires: until.UnixNano(),
		Src: netip.IPv4Unspecified()}
	c.mu.Lock()
	ok := c.storeUsedLocked(e)
	c.mu.Unlock()
	if ok {
		c.TokensSent.Add(1)
		c.send(e)
	}
}

// storeLocked keeps e as the latest event of its key, room permitting.
func (c *Core) storeLocked(e Event) bool {
	k := entryKey{e.Src, e.Service}
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.cfg.MaxEntries {
		c.purgeLocked(c.cfg.Clock.Now().UnixNano())
		if len(c.entries) >= c.cfg.MaxEntries {
			c.RefusedFull.Add(1)
			return false
		}
	}
	c.entries[k] = e
	return true
}

func keyOfUsed(e *Event) (usedKey, bool) {
	k := usedKey{method: e.Method, service: e.Service, n: uint8(len(e.Key))}
	if len(e.Key) != SPAKeySize && len(e.Key) != FwknopKeySize {
		return k, false
	}
	copy(k.key[:], e.Key)
	return k, true
}

// storeUsedLocked keeps a spent token until its Expires; false when it
// is known already for as long, or there is no room.
func (c *Core) storeUsedLocked(e Event) bool {
	k, ok := keyOfUsed(&e)
	if !ok {
		return false
	}
	if until, ok := c.used[k]; ok {
		if until >= e.Expires {
			return false
		}
	} else if len(c.used) >= c.cfg.MaxTokens {
		c.purgeLocked(c.cfg.Clock.Now().UnixNano())
		if len(c.used) >= c.cfg.MaxTokens {
			c.RefusedFull.Add(1)
			return false
		}
	}
	c.used[k] = e.Expires
	return true
}

// Purge forgets events that ended before now.
func (c *Core) Purge(now time.Time) {
	c.mu.Lock()
	c.purgeLocked(now.UnixNano())
	c.mu.Unlock()
}

func (c *Core) purgeLocked(now int64) {
	for k, e := range c.entries {
		if e.Expires <= now {
			delete(c.entries, k)
		}
	}
	for k, until := range c.used {
		if until <= now {
			delete(c.used, k)
		}
	}
}

// Receive takes one message from a peer (a broadcast, or a push/pull
// state) and merges what it may into the host.
func (c *Core) Receive(b []byte) {
	m, err := Decode(b)
	if err != nil {
		c.RefusedMalformed.Add(1)
		if c.refused.Allow(c.cfg.Clock.Now()) {
			c.cfg.Log.Warn("cluster: message refused", "err", err, "logged", "at most once per "+RefusedLogEvery.String())
		}
		return
	}
	c.Merge(m)
}

// Merge merges a decoded message into the host.
func (c *Core) Merge(m Message) {
	if m.Sender == c.cfg.Name {
		return // our own, back through a peer's state
	}
	now := c.cfg.Clock.Now()
	if skew := time.Duration(now.UnixNano() - m.Sent); skew > c.cfg.MaxSkew || -skew > c.cfg.MaxSkew {
		c.RefusedSkew.Add(1)
		if c.refused.Allow(now) {
			c.cfg.Log.Warn("cluster: peer refused: its clock differs from ours by more than cluster.max_clock_skew, so its expiries and token windows cannot be trusted",
				"peer", m.Sender, "skew", skew.Round(time.Millisecond).String(), "max_clock_skew", c.cfg.MaxSkew.String(),
				"logged", "at most once per "+RefusedLogEvery.String())
		}
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.peers[m.Sender]; ok || len(c.peers) < maxPeers {
		c.peers[m.Sender] = now
	}
	for i := range m.Events {
		c.mergeLocked(m.Sender, &m.Events[i], now)
	}
}

func (c *Core) mergeLocked(peer string, e *Event, now time.Time) {
	if e.Expires <= now.UnixNano() {
		return
	}
	if e.Kind == KindUsed {
		if _, ok := c.cfg.Host.ServiceHash(e.Service); !ok {
			return // no such service here: no token of it can pass
		}
		if c.storeUsedLocked(*e) {
			c.TokensReceived.Add(1)
			c.cfg.Host.MarkTokenUsed(e.Service, e.Method, e.Key, time.Unix(0, e.Expires))
		}
		return
	}
	k := entryKey{e.Src, e.Service}
	v := version{e.Stamp, e.Origin, e.Seq}
	cur, held := c.entries[k]
	if held {
		cv := version{cur.Stamp, cur.Origin, cur.Seq}
		if !v.after(cv) {
			if v == cv && e.Kind == KindGrant && cur.Kind == KindGrant && e.Limited && e.Left < cur.Left {
				cur.Left = e.Left
				c.entries[k] = cur
				c.applyGrantLocked(cur)
			}
			return
		}
	}
	if e.Kind == KindRevoke {
		// A revoke is applied whatever the service's definition: ending
		// access is never unsafe.
		if c.storeLocked(*e) {
			c.RevokesReceived.Add(1)
			c.cfg.Host.ApplyRevoke(e.Src, e.Service)
		}
		return
	}
	hash, ok := c.cfg.Host.ServiceHash(e.Service)
	switch {
	case !ok:
		c.RefusedService.Add(1)
		c.logOnce(peer, e.Service, "cluster: grants of a service this node does not have are ignored")
		return
	case hash != e.Hash:
		c.RefusedService.Add(1)
		c.logOnce(peer, e.Service, "cluster: the peer's service differs from ours (ports or how it opens); its grants of it are ignored until both agree")
		return
	}
	if c.storeLocked(*e) {
		c.GrantsReceived.Add(1)
		c.applyGrantLocked(*e)
	}
}

func (c *Core) applyGrantLocked(e Event) {
	g := Grant{Src: e.Src, Service: e.Service, Expires: time.Unix(0, e.Expires), Method: e.Method, Limited: e.Limited, Left: int(e.Left), Origin: e.Origin}
	if err := c.cfg.Host.ApplyGrant(g); err != nil {
		c.cfg.Log.Warn("cluster: a peer's grant could not be applied", "src", e.Src.String(), "service", e.Service, "origin", e.Origin, "err", err)
	}
}

func (c *Core) logOnce(peer, service, msg string) {
	k := peer + "\x00" + service + "\x00" + msg
	if _, ok := c.logged[k]; ok || len(c.logged) >= maxLogged {
		return
	}
	c.logged[k] = struct{}{}
	c.cfg.Log.Warn(msg, "peer", peer, "service", service, "logged", "once")
}

// State is every live event, for a peer's push/pull: grants with their
// one-shot counts as the host holds them now.
func (c *Core) State() Message {
	now := c.cfg.Clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := Message{Sender: c.cfg.Name, Sent: now.UnixNano(), Events: make([]Event, 0, len(c.entries)+len(c.used))}
	ts := now.UnixNano()
	for k, e := range c.entries {
		if e.Expires <= ts {
			continue
		}
		if e.Kind == KindGrant && e.Limited {
			left, ok := c.cfg.Host.GrantLeft(k.src, k.service)
			if !ok {
				left = 0 // used up here
			}
			if left < int(e.Left) {
				e.Left = uint16(left)
				c.entries[k] = e
			}
		}
		m.Events = append(m.Events, e)
	}
	for k, until := range c.used {
		if until > ts {
			m.Events = append(m.Events, Event{Kind: KindUsed, Src: netip.IPv4Unspecified(), Service: k.service, Method: k.method,
				Key: append([]byte(nil), k.key[:k.n]...), Expires: until})
		}
	}
	return m
}

// Origin names the node that made src's grant of service, when the
// cluster knows it.
func (c *Core) Origin(src netip.Addr, service string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[entryKey{src.Unmap(), service}]; ok && e.Kind == KindGrant {
		return e.Origin
	}
	return ""
}

// LastSync is when each peer's last message was accepted.
func (c *Core) LastSync() map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]time.Time, len(c.peers))
	for p, t := range c.peers {
		out[p] = t
	}
	return out
}

// Held counts the events held: grants and revokes, spent tokens.
func (c *Core) Held() (entries, tokens int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), len(c.used)
}

// PeerStatus is one peer as status shows it.
type PeerStatus struct {
	Name     string
	Addr     string
	State    string // alive, suspect, dead
	LastSync time.Time
}

// Stats is the cluster's state for status and metrics.
type Stats struct {
	Name                                                                                 string
	Peers                                                                                []PeerStatus
	LastSync                                                                             time.Time // the latest of the peers'
	Entries                                                                              int       // grants and revokes held
	Tokens                                                                               int       // spent tokens held
	GrantsSent, GrantsReceived, RevokesSent, RevokesReceived, TokensSent, TokensReceived uint64
	RefusedKey, RefusedSkew, RefusedService, RefusedMalformed, RefusedFull               uint64
}

// stats fills what Core knows; peers come from the membership.
func (c *Core) stats(peers []PeerStatus) Stats {
	st := Stats{Name: c.cfg.Name,
		GrantsSent: c.GrantsSent.Load(), GrantsReceived: c.GrantsReceived.Load(),
		RevokesSent: c.RevokesSent.Load(), RevokesReceived: c.RevokesReceived.Load(),
		TokensSent: c.TokensSent.Load(), TokensReceived: c.TokensReceived.Load(),
		RefusedKey: c.RefusedKey.Load(), RefusedSkew: c.RefusedSkew.Load(), RefusedService: c.RefusedService.Load(),
		RefusedMalformed: c.RefusedMalformed.Load(), RefusedFull: c.RefusedFull.Load()}
	st.Entries, st.Tokens = c.Held()
	last := c.LastSync()
	for i := range peers {
		peers[i].LastSync = last[peers[i].Name]
		if peers[i].LastSync.After(st.LastSync) {
			st.LastSync = peers[i].LastSync
		}
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].Name < peers[j].Name })
	st.Peers = peers
	return st
}
