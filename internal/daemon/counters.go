package daemon

import (
	"slices"
	"sync/atomic"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/spa"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// TokenResults name the outcomes of SPA tokens and fwknop packets: "ok"
// and then one per kind of refusal.
var TokenResults = [...]string{"ok", "format", "version", "unknown-key", "bad-mac", "stale", "future", "replay",
	"replay-full", "wrong-source", "unbound", "before-start", "service", "grant-table-full", "no-hmac", "decrypt",
	"digest", "message-type", "allow-ip", "port", "other"}

// tokenErrs maps each refusal, compared by identity (spa and fwknop return
// their sentinels unwrapped), to its name in TokenResults; init finds the
// index the counters use.
var tokenErrs = [...]struct {
	err  error
	name string
	idx  int
}{
	{err: spa.ErrFormat, name: "format"},
	{err: spa.ErrVersion, name: "version"},
	{err: spa.ErrUnknownKey, name: "unknown-key"},
	{err: spa.ErrBadMAC, name: "bad-mac"},
	{err: spa.ErrStale, name: "stale"},
	{err: spa.ErrFuture, name: "future"},
	{err: spa.ErrReplay, name: "replay"},
	{err: spa.ErrReplayFull, name: "replay-full"},
	{err: spa.ErrWrongSource, name: "wrong-source"},
	{err: spa.ErrUnbound, name: "unbound"},
	{err: spa.ErrBeforeStart, name: "before-start"},
	{err: spa.ErrService, name: "service"},
	{err: tracker.ErrGrantTableFull, name: "grant-table-full"},
	{err: fwknop.ErrMalformed, name: "format"},
	{err: fwknop.ErrNoHMAC, name: "no-hmac"},
	{err: fwknop.ErrBadHMAC, name: "bad-mac"},
	{err: fwknop.ErrDecrypt, name: "decrypt"},
	{err: fwknop.ErrDigest, name: "digest"},
	{err: fwknop.ErrMessageType, name: "message-type"},
	{err: fwknop.ErrStale, name: "stale"},
	{err: fwknop.ErrFuture, name: "future"},
	{err: fwknop.ErrAllowIP, name: "allow-ip"},
	{err: fwknop.ErrUnbound, name: "unbound"},
	{err: fwknop.ErrPort, name: "port"},
	{err: fwknop.ErrReplay, name: "replay"},
	{err: fwknop.ErrReplayFull, name: "replay-full"},
}

func init() {
	for i := range tokenErrs {
		j := slices.Index(TokenResults[:], tokenErrs[i].name)
		if j < 0 {
			panic("daemon: token result " + tokenErrs[i].name + " is not in TokenResults")
		}
		tokenErrs[i].idx = j
	}
}

func tokenResult(err error) int {
	if err == nil {
		return 0
	}
	for _, e := range tokenErrs {
		if err == e.err {
			return e.idx
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
	grants   [tracker.NumMethods]atomic.Uint64
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
	Grants [tracker.NumMethods]uint64
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
			c.grants[d.Method].Add(1) // sequence or rotating
		}
	}
	switch d.Reason {
	case verdict.ReasonToken:
		c.tokens[0].Add(1)
		c.grants[d.Method].Add(1)
	case verdict.ReasonBadToken:
		r := len(TokenResults) - 1 // "other", should a refusal come without a reason
		if d.TokenErr != nil {
			r = tokenResult(d.TokenErr)
		}
		c.tokens[r].Add(1)
	}
}

// What the metrics show. Whoever can scrape them (the operator's
// Prometheus, but maybe also a container that reaches the listener) must
// not learn from them what the network does not tell: a SYN to a knock port
// and a SYN to a protected port are both refused SYNs, and move the same
// series by the same amount. So knock events (step, repeat, reset), knock
// progress and the knock rate limit are not shown (a completed sequence
// shows only as a grant), and a token's result is only accepted, refused or
// replayed. The status command, over the root-only control socket, and the
// debug log keep the detail.

// TokenOutcomes are the token results the metrics tell apart.
var TokenOutcomes = [...]string{"accepted", "refused", "replayed"}

// outcomeOf maps each index of TokenResults to one of TokenOutcomes. A
// replay is told apart: only a token whose MAC and time were good is
// checked for replay, so "replayed" says only that someone resent a token
// that was once good, which anyone who saw it could do.
func outcomeOf(result int) int {
	switch TokenResults[result] {
	case "ok":
		return 0
	case "replay":
		return 2
	}
	return 1
}

// TokensByOutcome folds c.Tokens into TokenOutcomes.
func (c *Counts) TokensByOutcome() [len(TokenOutcomes)]uint64 {
	var out [len(TokenOutcomes)]uint64
	for i, n := range c.Tokens {
		out[outcomeOf(i)] += n
	}
	return out
}

// PublicReason is the reason a verdict is shown under in the metrics: a
// knock, and a knock over its source's rate, are refused SYNs (or
// datagrams) like a SYN to a protected port without a grant.
func PublicReason(r verdict.Reason) verdict.Reason {
	switch r {
	case verdict.ReasonKnock, verdict.ReasonRateLimited:
		return verdict.ReasonNoGrant
	}
	return r
}

// PublicVerdicts folds c.Verdicts by PublicReason: the reasons it folds
// away count 0.
func (c *Counts) PublicVerdicts() [verdict.NumVerdicts][verdict.NumReasons]uint64 {
	var out [verdict.NumVerdicts][verdict.NumReasons]uint64
	for v := range c.Verdicts {
		for r, n := range c.Verdicts[v] {
			out[v][PublicReason(verdict.Reason(r))] += n
		}
	}
	return out
}
