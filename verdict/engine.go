// Package verdict is knockwall's decision engine: packet bytes in, verdict
// out. It is pure and deterministic given the packet, the time and the
// tracker's state, and it does not allocate.
package verdict

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
	"github.com/knockwall/knockwall/tracker"
)

// Verdict is what happens to a packet.
type Verdict uint8

// Verdicts.
const (
	Drop   Verdict = iota // discard silently; the zero value, so a forgotten verdict fails closed
	Accept                // let it through, marked as accepted by knockwall
	Reject                // answer like a closed port (RST, or ICMP port unreachable for UDP)
)

var verdictNames = [...]string{"drop", "accept", "reject"}

// NumVerdicts is the number of verdicts, for arrays indexed by Verdict.
const NumVerdicts = len(verdictNames)

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "unknown"
}

// Reason says why a verdict was given. Every verdict carries one.
type Reason uint8

// Reasons.
const (
	ReasonMalformed   Reason = iota // not a whole IPv4/IPv6 TCP or UDP header
	ReasonUnprotected               // a SYN to a port no service protects
	ReasonGranted                   // the source holds a live grant for the port
	ReasonNoGrant                   // a protected port and no grant
	ReasonKnock                     // a knock; answered like a closed port
	ReasonNotSYN                    // TCP without the SYN-only flags; not ours to judge
	ReasonNotKnock                  // UDP to a port that is no knock port
	ReasonToken                     // a valid SPA token; granted, answered like a closed port
	ReasonBadToken                  // an SPA token refused (see Decision.TokenErr); answered like a closed port
	ReasonRateLimited               // a knock attempt over the source's rate; answered like a closed port

	// NumReasons is the number of reasons, for arrays indexed by Reason.
	NumReasons = iota
)

var reasonNames = [...]string{"malformed", "unprotected", "granted", "no-grant", "knock", "not-syn", "not-knock", "token", "bad-token", "rate-limited"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// Decision is the engine's answer for one packet, with what the caller needs
// to log it.
type Decision struct {
	Verdict Verdict
	Reason  Reason
	Src     netip.Addr
	Proto   uint8
	Port    uint16
	Knock   tracker.Outcome
	Service string // the service of Knock or of the token, when there is one
	// ServiceID is that service's id (rules.Service.ID).
	ServiceID uint64
	// TokenErr says why an SPA token was refused (Reason is ReasonBadToken).
	TokenErr error
	// GrantRefused is set when a completed sequence or a valid token could
	// not be granted because the grant table, or the plain-sequence room
	// of its service, is full of live grants.
	GrantRefused bool
	// Method is how a grant was made: by a token (spa or fwknop), with
	// ReasonToken, or by a sequence (sequence or rotating), with
	// tracker.EventGrant.
	Method tracker.Method
	// FirstConnect: a granted SYN (ReasonGranted) that is the first
	// connection of a plain sequence's grant, of service ServiceID. Only
	// now may the grant be mirrored into the kernel's fast path: until
	// its first SYN, every SYN of it must reach the engine.
	FirstConnect bool
	// Routed: the packet is for a routed host of a forward service; a
	// reject answers like that host's closed port, not this host's.
	Routed bool
	// ReplayKey is the token spent (ReplayMethod spa: a nonce in its
	// first 16 bytes; fwknop: the packet's SHA-256), remembered until
	// ReplayUntil (unix ns); ReplayUntil is 0 when no token was spent.
	ReplayKey    [32]byte
	ReplayUntil  int64
	ReplayMethod tracker.Method
}

// Engine decides. It is safe for concurrent use by several queue workers.
type Engine struct {
	view atomic.Pointer[view]
	tr   *tracker.Tracker
	// local holds this host's own addresses, for routed prefixes that
	// hold one of them (a router's LAN address inside its routed /64).
	local atomic.Pointer[[]netip.Addr]
	// replay remembers, per service, the SPA nonces accepted until the
	// token is stale and the fwknop packets accepted, by SHA-256, for
	// twice their max_age (fwknopd's window), and the second at or before
	// which tokens are refused. SetRules keeps it.
	replay *replays
}

// New returns an engine reading set and keeping state in tr, started at now.
func New(set *rules.Set, tr *tracker.Tracker, now time.Time) *Engine {
	max := set.Tracker.MaxNonces
	if max < 1 {
		max = rules.DefaultMaxNonces
	}
	e := &Engine{tr: tr, replay: newReplays(max, now)}
	e.replay.sync(set)
	e.view.Store(newView(set, 0, now))
	tr.SetRooms(Rooms(set))
	return e
}

// SetRules swaps the rules. Grants survive (they are kept per service id,
// derived from the name), and so do the replay memory and the not-before
// seconds; knock progress survives toward sequences the new rules leave
// unchanged and is dropped at the source's next packet for the rest.
func (e *Engine) SetRules(set *rules.Set, now time.Time) {
	e.replay.sync(set) // before the rules that need it
	for {
		old := e.view.Load()
		nv := newView(set, old.gen+1, now)
		nv.remapFrom(old)
		if e.view.CompareAndSwap(old, nv) {
			e.tr.SetRooms(Rooms(set))
			return
		}
	}
}

// Rooms is the tracker's plain-sequence room of each service of set that has
// a plain sequence, by service id.
func Rooms(set *rules.Set) map[uint64]tracker.Room {
	out := map[uint64]tracker.Room{}
	for _, s := range set.Services {
		if len(s.Sequence) > 0 {
			out[s.ID] = tracker.Room{Max: s.PlainGrants, FirstConnect: s.FirstConnectWithin}
		}
	}
	return out
}

// Rules returns the rules in force.
func (e *Engine) Rules() *rules.Set { return e.view.Load().set }

// Remembered is how many SPA nonces and fwknop packets the replay memory
// holds, all services together.
func (e *Engine) Remembered() int { return e.replay.len() }

// SetLocal tells the engine this host's own addresses: a packet for one of
// them is this host's to judge, even inside a routed prefix.
func (e *Engine) SetLocal(addrs []netip.Addr) { e.local.Store(&addrs) }

func (e *Engine) isLocal(a netip.Addr) bool {
	if l := e.local.Load(); l != nil {
		for _, x := range *l {
			if x == a {
				return true
			}
		}
	}
	return false
}

// PurgeNonces forgets the SPA nonces and fwknop packets that can no longer
// be replayed at now; the janitor calls it.
func (e *Engine) PurgeNonces(now time.Time) {
	e.replay.purge(e.view.Load().set, now.UnixNano())
}

// viewAt returns the view for now, rebuilding it when a rotating period has
// rolled over. The rebuild allocates once per period, never per packet.
func (e *Engine) viewAt(now time.Time) *view {
	v := e.view.Load()
	if now.Unix() < v.until {
		return v
	}
	nv := newView(v.set, v.gen, now)
	nv.prevGen, nv.remap = v.prevGen, v.remap
	if !e.view.CompareAndSwap(v, nv) {
		return e.view.Load()
	}
	return nv
}

// Pending counts the sources with knock progress toward each service, by
// service id.
func (e *Engine) Pending() map[uint64]int { return e.tr.PendingBy(e.view.Load()) }

// Tracker returns the engine's tracker.
func (e *Engine) Tracker() *tracker.Tracker { return e.tr }

// Decide judges one packet as diverted by knockwall's static rules: inbound
// TCP SYNs, UDP datagrams to knock and token ports, and datagrams that open
// new UDP flows (from sources with knock progress, on the fast path).
func (e *Engine) Decide(b []byte, now time.Time) Decision {
	var p Parsed
	p.Decode(b)
	return e.decide(&p, b, now)
}

func (e *Engine) decide(p *Parsed, b []byte, now time.Time) Decision {
	if !p.Valid() {
		return Decision{Verdict: Drop, Reason: ReasonMalformed, Src: p.Src}
	}
	v := e.viewAt(now)
	set := v.set
	d := Decision{Src: p.Src, Proto: p.IPProto, Port: p.DstPort}
	if p.IPProto == protoTCP && p.TCPFlags&(TCPSyn|TCPAck|TCPRst|TCPFin) != TCPSyn {
		// The static rule diverts only connection-opening SYNs; the
		// guard judges only those too. Anything else is conntrack's.
		d.Verdict, d.Reason = Accept, ReasonNotSYN
		return d
	}
	c := e.classify(set, p)
	d.Routed = c.routed

	// Knocks (fixed knock ports, rotating ranges) are charged to the
	// source's budget; over it, the packet neither advances nor resets
	// anything and is answered like a closed port. SPA tokens, by UDP or in
	// a SYN, are not: anyone could spend a victim's budget by spoofing junk
	// from its address, and a token costs about a microsecond to refuse.
	if c.kind == kindKnock && !e.tr.Allow(p.Src, now) {
		d.Verdict, d.Reason = closed(set.Services[c.svc].Closed), ReasonRateLimited
		return d
	}

	// Every diverted packet is shown to the tracker: what is not the
	// source's next knock resets its progress.
	d.Knock = e.tr.Observe(p.Src, c.key, now, v)
	d.GrantRefused = d.Knock.Event == tracker.EventGrantRefused
	if d.Knock.Event != tracker.EventNone {
		ks := &set.Services[v.service(d.Knock.Svc)]
		d.Service, d.ServiceID = ks.Name, ks.ID
		if d.Knock.Event == tracker.EventGrant {
			d.Method = tracker.MethodSequence
			if v.Keyed(d.Knock.Svc) {
				d.Method = tracker.MethodRotating
			}
		}
	}

	payload := b[p.PayloadOff : p.PayloadOff+p.PayloadLen]
	switch c.kind {
	case kindSPA:
		// The SPA port answers like a closed port whatever the token, so
		// it is no oracle.
		e.token(&d, set, payload, p.Src, 0, c.svc, now)
		d.Verdict = closed(set.Services[c.svc].Closed)
	case kindFwknop:
		// Likewise the fwknop port, by UDP or in a SYN (fwknop -P tcpraw).
		e.fwknopToken(&d, set, payload, p.Src, 0, c.svc, now)
		d.Verdict = closed(set.Services[c.svc].Closed)
	case kindProtected:
		mask := c.mask
		ids := set.CoverIDs(p.DstPort)
		if c.routed {
			var buf [rules.MaxServices]uint64
			ids = set.IDs(buf[:0], mask)
		}
		if a := e.tr.Admit(p.Src, ids, p.SrcPort, now); a.OK {
			d.Verdict, d.Reason = Accept, ReasonGranted
			if a.First {
				d.FirstConnect, d.ServiceID = true, a.ID
			}
			return d
		}
		d.Verdict, d.Reason = closed(set.ClosedAction(mask)), ReasonNoGrant
		if p.PayloadLen > 0 {
			// A token in the SYN: granted or not, this SYN gets the
			// closed answer; the client connects afterwards. A
			// knockwall token starts with its magic; anything else may
			// be an fwknop packet.
			if set.HasSPA(mask) {
				e.token(&d, set, payload, p.Src, mask, -1, now)
			}
			if (!set.HasSPA(mask) || d.TokenErr == spa.ErrFormat) && set.HasFwknop(mask) {
				e.fwknopToken(&d, set, payload, p.Src, mask, -1, now)
			}
		}
	case kindKnock:
		// Knock ports answer like any closed port, so a scan learns
		// nothing from them.
		d.Verdict, d.Reason = closed(set.Services[c.svc].Closed), ReasonKnock
	case kindUDP:
		// A new UDP flow that is no knock: it has reset the source's
		// progress above, and is the host's to answer.
		d.Verdict, d.Reason = Accept, ReasonNotKnock
	default:
		d.Verdict, d.Reason = Accept, ReasonUnprotected
	}
	return d
}

// token checks an SPA token and grants its service to src when it is good.
// A token is good for the service it names only if that service takes SPA
// and the token came the service's way: to its SPA port (wantSvc) or in a
// SYN to one of its protected ports (mask).
func (e *Engine) token(d *Decision, set *rules.Set, payload []byte, src netip.Addr, mask uint64, wantSvc int, now time.Time) {
	d.Reason = ReasonBadToken
	var t spa.Token
	if err := spa.Parse(payload, &t); err != nil {
		d.TokenErr = err
		return
	}
	svc, ok := set.ServiceByName(t.Service)
	if !ok || set.Services[svc].SPA == nil || (wantSvc >= 0 && svc != wantSvc) || (wantSvc < 0 && mask&(1<<uint(svc)) == 0) {
		d.TokenErr = spa.ErrService
		return
	}
	s := &set.Services[svc]
	d.Service, d.ServiceID = s.Name, s.ID
	key := s.SPA.Key(t.KeyID)
	if key == nil {
		d.TokenErr = spa.ErrUnknownKey
		return
	}
	if !key.Verify(&t) {
		d.TokenErr = spa.ErrBadMAC
		return
	}
	skew := int64(s.SPA.MaxSkew / time.Second)
	unix := now.Unix()
	switch {
	case t.Timestamp < unix-skew:
		d.TokenErr = spa.ErrStale
		return
	case t.Timestamp > unix+skew:
		d.TokenErr = spa.ErrFuture
		return
	}
	mem := e.replay.of(s.ID)
	if mem == nil || t.Timestamp <= mem.notBefore.Load() {
		d.TokenErr = spa.ErrBeforeStart
		return
	}
	// The source is checked before the nonce is spent, so a bound token
	// that someone else sends first cannot burn it. (src is never
	// IPv4-mapped: Decode leaves such packets unknown.)
	switch {
	case t.Bound() && t.Source != src:
		d.TokenErr = spa.ErrWrongSource
		return
	case !t.Bound() && s.SPA.RequireSource:
		d.TokenErr = spa.ErrUnbound
		return
	}
	// Remember the nonce until the token would be stale anyway.
	forgetAt := (t.Timestamp + skew + 1) * int64(time.Second)
	nonces := mem.spa.Load()
	if nonces == nil {
		d.TokenErr = spa.ErrReplayFull
		return
	}
	if err := nonces.Add(t.Nonce, forgetAt, now.UnixNano()); err != nil {
		d.TokenErr = err
		return
	}
	copy(d.ReplayKey[:], t.Nonce[:])
	d.ReplayUntil, d.ReplayMethod = forgetAt, tracker.MethodSPA
	if !e.tr.Grant(src, s.ID, now, s.OpenFor, s.Connections, tracker.MethodSPA) {
		d.GrantRefused = true
		d.TokenErr = tracker.ErrGrantTableFull
		return
	}
	d.Reason, d.Method = ReasonToken, tracker.MethodSPA
}

// fwknopToken checks a packet of the stock fwknop client and grants its
// service to src when it is good: for service wantSvc (its fwknop port) or
// one of the services in mask (a SYN to a protected port) that takes
// fwknop packets. Every refusal is told apart in d.TokenErr; the sender
// sees a closed port whatever it is.
func (e *Engine) fwknopToken(d *Decision, set *rules.Set, payload []byte, src netip.Addr, mask uint64, wantSvc int, now time.Time) {
	d.Reason = ReasonBadToken
	d.TokenErr = fwknop.ErrMalformed
	for i := range set.Services {
		s := &set.Services[i]
		if s.Fwknop == nil || (wantSvc >= 0 && i != wantSvc) || (wantSvc < 0 && mask&(1<<uint(i)) == 0) {
			continue
		}
		var r fwknop.Request
		if err := s.Fwknop.Key.Verify(payload, &r); err != nil {
			d.TokenErr = err
			continue // another service's key may open it
		}
		d.Service, d.ServiceID = s.Name, s.ID
		openFor, err := r.Check(src, now, s.Fwknop.MaxAge, s.Ports, s.OpenFor)
		if err != nil {
			d.TokenErr = err
			return
		}
		if s.Fwknop.RequireSource && r.Unbound() {
			d.TokenErr = fwknop.ErrUnbound
			return
		}
		mem := e.replay.of(s.ID)
		if mem == nil || r.Timestamp <= mem.notBefore.Load() {
			d.TokenErr = spa.ErrBeforeStart
			return
		}
		packets := mem.fw.Load()
		if packets == nil {
			d.TokenErr = fwknop.ErrReplayFull
			return
		}
		forgetAt := fwknop.ForgetAt(now, s.Fwknop.MaxAge)
		if err := packets.Add(r.ReplayKey, forgetAt, now.UnixNano()); err != nil {
			d.TokenErr = err
			return
		}
		d.ReplayKey, d.ReplayUntil, d.ReplayMethod = r.ReplayKey, forgetAt, tracker.MethodFwknop
		if !e.tr.Grant(src, s.ID, now, openFor, s.Connections, tracker.MethodFwknop) {
			d.GrantRefused = true
			d.TokenErr = tracker.ErrGrantTableFull
			return
		}
		d.Reason, d.Method, d.TokenErr = ReasonToken, tracker.MethodFwknop, nil
		return
	}
}

func closed(a rules.Action) Verdict {
	if a == rules.ActionDrop {
		return Drop
	}
	return Reject
}
