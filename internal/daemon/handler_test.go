package daemon

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/nfq"
	"github.com/knockwall/knockwall/internal/pkttest"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// server4 is where the tests' SYNs go.
var server4 = netip.MustParseAddr("10.77.0.1")

// TestHandlerMarks: the handler turns decisions into verdicts and marks,
// changing only knockwall's own mark bits.
func TestHandlerMarks(t *testing.T) {
	c := rules.Defaults()
	ssh := rules.ServiceDefaults()
	ssh.Ports, ssh.Sequence = []int{22}, []string{"7000", "8000", "9000"}
	c.Services = map[string]rules.ServiceConfig{"ssh": ssh}
	set, err := rules.Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	d, err := New(Config{Set: set, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	granted := netip.MustParseAddr("10.77.0.2")
	d.Tracker().Grant(granted, set.Services[0].ID, now, time.Hour, 0, tracker.MethodSequence)
	h := d.newHandler(nil, nil, nil)

	const foreign = 0x00003f00 // mwan3's bits: knockwall must leave them alone
	stranger := netip.MustParseAddr("10.77.0.3")
	for _, tt := range []struct {
		name string
		pkt  []byte
		want nfq.Answer
	}{
		{"unprotected: accept, mark untouched, batchable", pkttest.SYN(stranger, netip.AddrPortFrom(server4, 80)), nfq.Answer{Accept: true}},
		{"granted: accept with the accept mark", pkttest.SYN(granted, netip.AddrPortFrom(server4, 22)), nfq.Answer{Accept: true, SetMark: true, Mark: foreign | rules.DefaultAcceptMark, Sole: true}},
		{"no grant: the reject mark", pkttest.SYN(stranger, netip.AddrPortFrom(server4, 22)), nfq.Answer{Accept: true, SetMark: true, Mark: foreign | rules.DefaultRejectMark}},
		{"knock: the reject mark", pkttest.SYN(stranger, netip.AddrPortFrom(server4, 7000)), nfq.Answer{Accept: true, SetMark: true, Mark: foreign | rules.DefaultRejectMark}},
		{"malformed: drop", pkttest.SYN(stranger, netip.AddrPortFrom(server4, 22))[:30], nfq.Answer{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// A stale knockwall bit in the incoming mark is replaced, not
			// kept. Mark means nothing without SetMark.
			got := h(tt.pkt, foreign|rules.DefaultRejectMark|rules.DefaultAcceptMark)
			if got.Accept != tt.want.Accept || got.SetMark != tt.want.SetMark || (got.SetMark && got.Mark != tt.want.Mark) || got.Sole != tt.want.Sole {
				t.Fatalf("verdict = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestCountsEveryMethod: the counters take a decision of every grant
// method and every token result without going out of range.
func TestCountsEveryMethod(t *testing.T) {
	var c counters
	for m := range tracker.NumMethods {
		d := verdict.Decision{Verdict: verdict.Reject, Reason: verdict.ReasonToken, Method: tracker.Method(m)}
		c.count(&d)
	}
	for r := range verdict.NumReasons {
		for v := range verdict.NumVerdicts {
			c.count(&verdict.Decision{Verdict: verdict.Verdict(v), Reason: verdict.Reason(r)})
		}
	}
	for ev := range tracker.NumEvents {
		c.count(&verdict.Decision{Knock: tracker.Outcome{Event: tracker.Event(ev)}})
	}
	var got Counts
	c.addTo(&got)
	// NumMethods from the first loop, NumVerdicts from the second.
	if want := uint64(tracker.NumMethods + verdict.NumVerdicts); got.Tokens[0] != want {
		t.Errorf("ok tokens = %d, want %d", got.Tokens[0], want)
	}
	for _, e := range tokenErrs {
		if e.idx <= 0 || e.idx >= len(TokenResults)-1 {
			t.Errorf("%v counts as %d, outside TokenResults", e.err, e.idx)
		}
	}
}

// overrunQueue is a Queue whose overrun count the test sets.
type overrunQueue struct{ overruns uint64 }

func (q *overrunQueue) Fatal() <-chan error { return nil }
func (q *overrunQueue) Stats() QueueStats   { return QueueStats{Overruns: q.overruns} }
func (q *overrunQueue) Close() error        { return nil }

// TestHandlerForgetsProgressOnOverrun: once the queue reports an overrun
// (packets dropped before they were judged, perhaps a reset), knock
// progress made before it is worth nothing: a source two knocks in is not
// granted by its third, and knocks sent after the overrun open as usual.
func TestHandlerForgetsProgressOnOverrun(t *testing.T) {
	c := rules.Defaults()
	ssh := rules.ServiceDefaults()
	ssh.Ports, ssh.Sequence = []int{22}, []string{"7000", "8000", "9000"}
	c.Services = map[string]rules.ServiceConfig{"ssh": ssh}
	set, err := rules.Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	d, err := New(Config{Set: set, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	q := &overrunQueue{}
	w := &overrunWatch{}
	w.set(q)
	h := d.newHandler(nil, nil, w)
	src := netip.MustParseAddr("10.77.0.4")
	h(pkttest.SYN(src, netip.AddrPortFrom(server4, 7000)), 0)
	h(pkttest.SYN(src, netip.AddrPortFrom(server4, 8000)), 0)
	q.overruns++ // the kernel dropped something: maybe src's reset
	h(pkttest.SYN(src, netip.AddrPortFrom(server4, 9000)), 0)
	if d.Tracker().Granted(src, []uint64{set.Services[0].ID}, 40000, now) {
		t.Fatal("granted across an overrun")
	}
	for _, p := range []uint16{7000, 8000, 9000} {
		h(pkttest.SYN(src, netip.AddrPortFrom(server4, p)), 0)
	}
	if !d.Tracker().Granted(src, []uint64{set.Services[0].ID}, 40000, now) {
		t.Fatal("knocks after the overrun not granted")
	}
}
