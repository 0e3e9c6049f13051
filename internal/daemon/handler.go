package daemon

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/knockwall/knockwall/internal/lograte"
	"github.com/knockwall/knockwall/internal/nfq"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// Log attribute keys.
const (
	keySrc     = "src"
	keyService = "service"
	keyPort    = "port"
	keyProto   = "proto"
	keyStep    = "step"
	keyReason  = "reason"
	keyOpenFor = "open_for"
)

// overrunWatch gives a queue's handler the queue it serves, once it is
// open, to read its overrun count.
type overrunWatch struct {
	q atomic.Pointer[Queue]
}

func (w *overrunWatch) set(q Queue) { w.q.Store(&q) }

// newHandler adapts the engine to a queue: decision to verdict and mark,
// the log lines a decision deserves, and new grants to the fast path. When
// the queue reports an overrun (the kernel dropped packets it could not
// deliver), every source's knock progress is forgotten before the next
// packet is judged: a dropped packet may have been the reset of someone's
// progress, and a sweep fast enough to overflow the queue must not
// complete a sequence by having its resets dropped.
func (d *Daemon) newHandler(resets, routed Resetter, w *overrunWatch) nfq.Handler {
	set := d.cfg.Set
	mask := uint32(set.Firewall.MarkMask)
	acceptMark := uint32(set.Firewall.AcceptMark)
	rejectMark := uint32(set.Firewall.RejectMark)
	log := d.log
	debug := log.Enabled(context.Background(), slog.LevelDebug)
	// Refused grants come in floods when the table is full; say so at most
	// once per RefusedLogEvery.
	refused := &lograte.Limiter{Every: RefusedLogEvery}
	forgot := &lograte.Limiter{Every: RefusedLogEvery}
	var overruns uint64 // seen so far; the handler runs on one goroutine
	eng, now := d.eng, d.cfg.Now
	c := &counters{}
	d.mu.Lock()
	d.counters = append(d.counters, c)
	d.mu.Unlock()
	return func(pkt []byte, mark uint32) nfq.Answer {
		t := now()
		if w != nil {
			if q := w.q.Load(); q != nil {
				if o := (*q).Stats().Overruns; o != overruns {
					overruns = o
					if n := eng.Tracker().ForgetPending(); n > 0 && forgot.Allow(t) {
						log.Warn("knock progress forgotten: the kernel dropped packets of a full queue, and one may have been a reset", "sources", n, "logged", "at most once a second")
					}
				}
			}
		}
		dec := eng.Decide(pkt, t)
		c.count(&dec)
		if dec.GrantRefused {
			if refused.Allow(t) {
				log.Warn("grant refused: no room for it in the grant table (full, or its plain-sequence room is)", "logged", "at most once a second", keySrc, dec.Src.String(), keyService, dec.Service)
			}
		} else if dec.Knock.Event != tracker.EventNone {
			logKnock(log, debug, dec)
		}
		switch {
		case dec.Reason == verdict.ReasonToken:
			log.Info("grant", keySrc, dec.Src.String(), keyService, dec.Service, "by", dec.Method.String())
		case dec.Reason == verdict.ReasonBadToken && !dec.GrantRefused && debug:
			log.Debug("token refused", keySrc, dec.Src.String(), keyService, dec.Service, keyReason, dec.TokenErr.Error())
		}
		// A plain sequence's grant is mirrored (and told to cluster peers
		// with its whole open_for) only once the engine has let in its
		// first connection: until then its SYNs must reach the engine, or
		// the grant would end at first_connect_within with the kernel still
		// letting the source in. The writer skips a grant still awaiting
		// it; peers get it with the end it has now.
		granted := dec.Reason == verdict.ReasonToken || dec.Knock.Event == tracker.EventGrant || dec.FirstConnect
		if g := d.grants; g != nil && granted {
			g.granted(dec.Src, dec.ServiceID)
		}
		if d.shareCh != nil && (granted || dec.ReplayUntil != 0) {
			d.share(shareEvent{src: dec.Src, id: dec.ServiceID, at: t.UnixNano(), grant: granted, method: dec.ReplayMethod,
				key: dec.ReplayKey, until: dec.ReplayUntil})
		}
		switch dec.Verdict {
		case verdict.Accept:
			if dec.Reason != verdict.ReasonGranted {
				// Only protected ports need the accept mark (the guard
				// looks for it); the rest may be answered in batches.
				return nfq.Answer{Accept: true}
			}
			// Sole: the accept mark opens the guard, so it must never
			// reach, by a batch, a packet whose own verdict was lost.
			return nfq.Answer{Accept: true, SetMark: true, Mark: mark&^mask | acceptMark, Sole: true}
		case verdict.Reject:
			// A TCP SYN is answered here and dropped: no mark that a
			// later host rule could change decides its fate.
			if dec.Proto == rules.ProtoTCP {
				s := resets
				if dec.Routed {
					s = routed // as the routed host would answer
				}
				if s != nil && s.Reset(pkt) == nil {
					return nfq.Answer{}
				}
			}
			// UDP (port unreachable), or no reset sender: the refuse
			// chain's REJECT answers by the mark.
			return nfq.Answer{Accept: true, SetMark: true, Mark: mark&^mask | rejectMark}
		default:
			return nfq.Answer{}
		}
	}
}

func logKnock(log *slog.Logger, debug bool, d verdict.Decision) {
	switch d.Knock.Event {
	case tracker.EventGrant:
		log.Info("grant", keySrc, d.Src.String(), keyService, d.Service)
	case tracker.EventStep, tracker.EventRepeat:
		if debug {
			log.Debug("knock", keySrc, d.Src.String(), keyService, d.Service, keyStep, d.Knock.Done, keyPort, d.Port, keyProto, d.Proto, "event", d.Knock.Event.String())
		}
	case tracker.EventReset:
		if debug {
			log.Debug("reset", keySrc, d.Src.String(), keyService, d.Service, keyPort, d.Port, keyProto, d.Proto)
		}
	}
}
