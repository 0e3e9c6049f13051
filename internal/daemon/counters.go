package daemon

import (
	"sync/atomic"

	"github.com/knockwall/knockwall/spa"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// TokenResults name the outcomes of SPA tokens, in the order of
// tokenErrs: "ok" and then one per refusal.
var TokenResults = [...]string{"ok", "format", "version", "unknown-key", "bad-mac", "stale", "future", "replay",
	"replay-full", "wrong-source", "unbound", "before-start", "service", "grant-table-full", "other"}

// tokenErrs are the refusals of TokenResults[1:], compared by identity
// (spa returns its sentinels unwrapped).
var tokenErrs = [...]error{spa.ErrFormat, spa.ErrVersion, spa.ErrUnknownKey, spa.ErrBadMAC, spa.ErrStale, spa.ErrFuture,
	spa.ErrReplay, spa.ErrReplayFull, spa.ErrWrongSource, spa.ErrUnbound, spa.ErrBeforeStart, spa.ErrService, tracker.ErrGrantTableFull}

func tokenResult(err error) int {
	if err == nil {
		return 0
	}
	for i, e := range tokenErrs {
		if err == e {
			return i + 1
		}
	}
	return len(TokenResults) - 1
}

// counters are the decisions of one queue, counted by its handler: one
// uncontended atomic add per packet on a cache line of the queue's own
// (each queue has its own counters). Readers sum them at any time.
type counters struct {
	verdicts [verdict.NumVerdicts][verdict.NumReasons]atomic.Uint64
	knocks   [tracker.NumEvents]atomic.Uint64
	tokens   [len(TokenResults)]atomic.Uint64
	grants   [4]atomic.Uint64 // by tracker.Method
	_        [64]byte
}

// Counts are decision counts summed over the queues.
type Counts struct {
	Verdicts [verdict.NumVerdicts][verdict.NumReasons]uint64
	// Knocks by what they did (tracker.Event).
	Knocks [tracker.NumEvents]uint64
	// Tokens by TokenResults.
	Tokens [len(TokenResults)]uint64
	// Grants made, by tracker.Method.
	Grants [4]uint64
}

func (c *counters) addTo(out *Counts) {
	for v := range c.verdicts {
		for r := range c.verdicts[v] {
			out.Verdicts[v][r] += c.verdicts[v][r].Load()
		}
	}
	for i := range c.knocks {
		out.Knocks[i] += c.knocks[i].Load()
	}
	for i := range c.tokens {
		out.Tokens[i] += c.tokens[i].Load()
	}
	for i := range c.grants {
		out.Grants[i] += c.grants[i].Load()
	}
}

// count records one decision.
func (c *counters) count(d *verdict.Decision) {
	c.verdicts[d.Verdict][d.Reason].Add(1)
	if d.Knock.Event != tracker.EventNone {
		c.knocks[d.Knock.Event].Add(1)
		if d.Knock.Event == tracker.EventGrant {
			c.grants[tracker.MethodSequence].Add(1)
		}
	}
	switch d.Reason {
	case verdict.ReasonToken:
		c.tokens[0].Add(1)
		c.grants[tracker.MethodSPA].Add(1)
	case verdict.ReasonBadToken:
		c.tokens[tokenResult(d.TokenErr)].Add(1)
	}
}
