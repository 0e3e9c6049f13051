// Package verdict is knockwall's decision engine: packet bytes in, verdict
// out. It is pure and deterministic given the packet, the time and the
// tracker's state, and it does not allocate.
package verdict

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/knockwall/knockwall/rules"
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
)

var reasonNames = [...]string{"malformed", "unprotected", "granted", "no-grant", "knock", "not-syn", "not-knock"}

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
	Service string // the service of Knock, when Knock.Event is not EventNone
}

// Engine decides. It is safe for concurrent use by several queue workers.
type Engine struct {
	rules atomic.Pointer[rules.Set]
	tr    *tracker.Tracker
}

// New returns an engine reading set and keeping state in tr.
func New(set *rules.Set, tr *tracker.Tracker) *Engine {
	e := &Engine{tr: tr}
	e.rules.Store(set)
	return e
}

// SetRules swaps the rules; tracker state and grants survive.
func (e *Engine) SetRules(set *rules.Set) { e.rules.Store(set) }

// Rules returns the rules in force.
func (e *Engine) Rules() *rules.Set { return e.rules.Load() }

// Tracker returns the engine's tracker.
func (e *Engine) Tracker() *tracker.Tracker { return e.tr }

// Decide judges one packet as diverted by knockwall's static rules: inbound
// TCP SYNs and UDP datagrams to knock ports.
func (e *Engine) Decide(b []byte, now time.Time) Decision {
	var p Parsed
	p.Decode(b)
	return e.decide(&p, now)
}

func (e *Engine) decide(p *Parsed, now time.Time) Decision {
	if !p.Valid() {
		return Decision{Verdict: Drop, Reason: ReasonMalformed, Src: p.Src}
	}
	set := e.rules.Load()
	d := Decision{Src: p.Src, Proto: p.IPProto, Port: p.DstPort}
	if p.IPProto == protoTCP && p.TCPFlags&(TCPSyn|TCPAck|TCPRst|TCPFin) != TCPSyn {
		// The static rule diverts only connection-opening SYNs; the
		// guard judges only those too. Anything else is conntrack's.
		d.Verdict, d.Reason = Accept, ReasonNotSYN
		return d
	}
	if p.IPProto == protoUDP && !set.IsKnockPort(rules.ProtoUDP, p.DstPort) {
		d.Verdict, d.Reason = Accept, ReasonNotKnock
		return d
	}

	// Every diverted packet is shown to the tracker: what is not the
	// source's next knock resets its progress.
	d.Knock = e.tr.Observe(p.Src, rules.KnockKey(p.IPProto, p.DstPort), now, set)
	if d.Knock.Event != tracker.EventNone {
		d.Service = set.Services[d.Knock.Svc].Name
	}

	if p.IPProto == protoTCP {
		if mask := set.Cover(p.DstPort); mask != 0 {
			if e.tr.Granted(p.Src, mask, now) {
				d.Verdict, d.Reason = Accept, ReasonGranted
				return d
			}
			d.Verdict, d.Reason = closed(set.ClosedAction(mask)), ReasonNoGrant
			return d
		}
	}
	if svc, ok := set.KnockService(rules.KnockKey(p.IPProto, p.DstPort)); ok {
		// Knock ports answer like any closed port, so a scan learns
		// nothing from them.
		d.Verdict, d.Reason = closed(set.Services[svc].Closed), ReasonKnock
		return d
	}
	d.Verdict, d.Reason = Accept, ReasonUnprotected
	return d
}

func closed(a rules.Action) Verdict {
	if a == rules.ActionDrop {
		return Drop
	}
	return Reject
}
