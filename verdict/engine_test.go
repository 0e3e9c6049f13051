package verdict_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

var t0 = time.Unix(1_700_000_000, 0)

// testConfig has two services: ssh (22; 7000, 8000, 9000/udp; reject;
// 5s steps; open 30s) and db (5432; 6000/udp, 6001; drop; open 1m).
func testConfig() rules.Config {
	c := rules.Defaults()
	ssh := rules.ServiceDefaults()
	ssh.Ports = []int{22}
	ssh.Sequence = []string{"7000", "8000", "9000/udp"}
	db := rules.ServiceDefaults()
	db.Ports = []int{5432}
	db.Sequence = []string{"6000/udp", "6001"}
	db.Closed = rules.ClosedDrop
	db.OpenFor = time.Minute
	c.Services = map[string]rules.ServiceConfig{"ssh": ssh, "db": db}
	return c
}

func testSet(tb testing.TB) *rules.Set {
	tb.Helper()
	set, err := rules.Compile(testConfig())
	if err != nil {
		tb.Fatal(err)
	}
	return set
}

func newEngine(tb testing.TB, set *rules.Set) *verdict.Engine {
	tb.Helper()
	tr, err := tracker.New(tracker.Config{MaxPending: 1024, MaxGrants: 1024})
	if err != nil {
		tb.Fatal(err)
	}
	return verdict.New(set, tr, t0)
}

// knocks returns src's ssh sequence: 7000, 8000, 9000/udp.
func sshKnocks(tb testing.TB, src netip.Addr) [][]byte {
	return [][]byte{syn(tb, src, 7000), syn(tb, src, 8000), udpPkt(tb, src, 9000, nil)}
}

// step is one packet of a scenario and what it should get.
type step struct {
	what    string
	pkt     []byte
	at      time.Duration
	verdict verdict.Verdict
	reason  verdict.Reason
	event   tracker.Event // checked when not EventNone or when checkEvent
	check   bool          // check event even if EventNone
	service string        // checked when set
}

func TestDecide(t *testing.T) {
	const (
		accept = verdict.Accept
		reject = verdict.Reject
		drop   = verdict.Drop
	)
	s := time.Second
	k4 := sshKnocks(t, client4)
	k6 := sshKnocks(t, client6)
	open := 30 * s

	// sequence is the ssh knocks of src at 0s, 1s, 2s, each answered reject.
	sequence := func(k [][]byte) []step {
		return []step{
			{what: "knock 1", pkt: k[0], at: 0, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep, service: "ssh"},
			{what: "knock 2", pkt: k[1], at: 1 * s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep, service: "ssh"},
			{what: "knock 3", pkt: k[2], at: 2 * s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventGrant, service: "ssh"},
		}
	}
	then := func(a []step, b ...step) []step { return append(append([]step{}, a...), b...) }

	tests := []struct {
		name  string
		steps []step
	}{
		{name: "syn to an unprotected port", steps: []step{
			{pkt: syn(t, client4, 80), verdict: accept, reason: verdict.ReasonUnprotected, check: true},
			{pkt: syn(t, client6, 443), verdict: accept, reason: verdict.ReasonUnprotected},
			{pkt: syn(t, client4, 1), verdict: accept, reason: verdict.ReasonUnprotected},
			{pkt: syn(t, client4, 65535), verdict: accept, reason: verdict.ReasonUnprotected},
		}},
		{name: "protected without grant, closed: reject", steps: []step{
			{pkt: syn(t, client4, 22), verdict: reject, reason: verdict.ReasonNoGrant, check: true},
			{pkt: syn(t, client6, 22), verdict: reject, reason: verdict.ReasonNoGrant},
		}},
		{name: "protected without grant, closed: drop", steps: []step{
			{pkt: syn(t, client4, 5432), verdict: drop, reason: verdict.ReasonNoGrant},
			{pkt: syn(t, client6, 5432), verdict: drop, reason: verdict.ReasonNoGrant},
		}},
		{name: "knocks get the closed action", steps: []step{
			{what: "first ssh knock", pkt: k4[0], verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep, service: "ssh"},
			{what: "ssh udp knock out of order", pkt: udpPkt(t, client4b, 9000, nil), verdict: reject, reason: verdict.ReasonKnock, check: true},
			{what: "ssh middle knock out of order", pkt: syn(t, client4b, 8000), verdict: reject, reason: verdict.ReasonKnock, check: true},
			{what: "db first knock", pkt: udpPkt(t, client6, 6000, []byte("x")), verdict: drop, reason: verdict.ReasonKnock, event: tracker.EventStep, service: "db"},
			{what: "db second knock", pkt: syn(t, client6, 6001), at: s, verdict: drop, reason: verdict.ReasonKnock, event: tracker.EventGrant, service: "db"},
		}},
		{name: "full sequence opens the port", steps: then(sequence(k4),
			step{what: "ssh", pkt: syn(t, client4, 22), at: 3 * s, verdict: accept, reason: verdict.ReasonGranted},
			step{what: "ssh again", pkt: syn(t, client4, 22), at: 4 * s, verdict: accept, reason: verdict.ReasonGranted},
			step{what: "from another source port", pkt: spec{src: client4, dst: server4, sport: 1234, dport: 22, flags: verdict.TCPSyn}.tcp(t), at: 5 * s, verdict: accept, reason: verdict.ReasonGranted},
			step{what: "only ssh's ports", pkt: syn(t, client4, 5432), at: 5 * s, verdict: drop, reason: verdict.ReasonNoGrant},
		)},
		{name: "grant expires", steps: then(sequence(k4),
			step{what: "first connection", pkt: syn(t, client4, 22), at: 3 * s, verdict: accept, reason: verdict.ReasonGranted},
			step{what: "just before", pkt: syn(t, client4, 22), at: 2*s + open - 1, verdict: accept, reason: verdict.ReasonGranted},
			step{what: "at expiry", pkt: syn(t, client4, 22), at: 2*s + open, verdict: reject, reason: verdict.ReasonNoGrant},
			step{what: "after", pkt: syn(t, client4, 22), at: time.Hour, verdict: reject, reason: verdict.ReasonNoGrant},
		)},
		{name: "a grant that opens no connection ends at first_connect_within", steps: then(sequence(k4),
			step{what: "just before", pkt: syn(t, client4b, 22), at: 2*s + 10*s - 1, verdict: reject, reason: verdict.ReasonNoGrant},
			step{what: "too late", pkt: syn(t, client4, 22), at: 2*s + 10*s, verdict: reject, reason: verdict.ReasonNoGrant},
			step{what: "still closed", pkt: syn(t, client4, 22), at: 20 * s, verdict: reject, reason: verdict.ReasonNoGrant},
		)},
		{name: "grant survives unrelated traffic", steps: then(sequence(k4),
			step{what: "scan", pkt: syn(t, client4, 7001), at: 3 * s, verdict: accept, reason: verdict.ReasonUnprotected},
			step{what: "wrong knock", pkt: syn(t, client4, 8000), at: 3 * s, verdict: reject, reason: verdict.ReasonKnock},
			step{what: "ssh", pkt: syn(t, client4, 22), at: 4 * s, verdict: accept, reason: verdict.ReasonGranted},
		)},
		{name: "db sequence opens db with drop", steps: []step{
			{pkt: udpPkt(t, client4, 6000, nil), verdict: drop, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: syn(t, client4, 6001), at: s, verdict: drop, reason: verdict.ReasonKnock, event: tracker.EventGrant},
			{pkt: syn(t, client4, 5432), at: 2 * s, verdict: accept, reason: verdict.ReasonGranted},
			{pkt: syn(t, client4, 22), at: 2 * s, verdict: reject, reason: verdict.ReasonNoGrant},
			{pkt: syn(t, client4, 5432), at: s + time.Minute, verdict: drop, reason: verdict.ReasonNoGrant},
		}},
		{name: "non-syn tcp is not judged", steps: then(
			[]step{
				{what: "syn-ack", pkt: tcpPkt(t, client4, 22, verdict.TCPSyn|verdict.TCPAck), verdict: accept, reason: verdict.ReasonNotSYN},
				{what: "ack", pkt: tcpPkt(t, client4, 22, verdict.TCPAck), verdict: accept, reason: verdict.ReasonNotSYN},
				{what: "psh-ack", pkt: tcpPkt(t, client4, 22, verdict.TCPAck|tcpPsh), verdict: accept, reason: verdict.ReasonNotSYN},
				{what: "rst", pkt: tcpPkt(t, client4, 22, verdict.TCPRst), verdict: accept, reason: verdict.ReasonNotSYN},
				{what: "fin", pkt: tcpPkt(t, client4, 22, verdict.TCPFin), verdict: accept, reason: verdict.ReasonNotSYN},
				{what: "syn-fin", pkt: tcpPkt(t, client4, 22, verdict.TCPSyn|verdict.TCPFin), verdict: accept, reason: verdict.ReasonNotSYN},
				{what: "ipv6 ack", pkt: tcpPkt(t, client6, 22, verdict.TCPAck), verdict: accept, reason: verdict.ReasonNotSYN},
				{what: "ack to a knock port", pkt: tcpPkt(t, client4, 7000, verdict.TCPAck), verdict: accept, reason: verdict.ReasonNotSYN, check: true},
				{what: "ecn syn is a syn", pkt: tcpPkt(t, client4, 22, verdict.TCPSyn|tcpEce|tcpCwr), verdict: reject, reason: verdict.ReasonNoGrant},
			},
		)},
		{name: "udp to a port that is no knock", steps: []step{
			{what: "dns", pkt: udpPkt(t, client4, 53, []byte("q")), verdict: accept, reason: verdict.ReasonNotKnock, check: true},
			{what: "tcp knock port over udp", pkt: udpPkt(t, client4, 7000, nil), verdict: accept, reason: verdict.ReasonNotKnock},
			{what: "protected port over udp", pkt: udpPkt(t, client6, 22, nil), verdict: accept, reason: verdict.ReasonNotKnock},
		}},
		{name: "malformed is dropped", steps: []step{
			{what: "empty", pkt: nil, verdict: drop, reason: verdict.ReasonMalformed},
			{what: "one byte", pkt: []byte{0x45}, verdict: drop, reason: verdict.ReasonMalformed},
			{what: "truncated tcp", pkt: syn(t, client4, 22)[:30], verdict: drop, reason: verdict.ReasonMalformed},
			{what: "icmp", pkt: icmp4(t), verdict: drop, reason: verdict.ReasonMalformed},
			{what: "ipv4 fragment", pkt: spec{src: client4, dst: server4, sport: 1, dport: 22, flags: verdict.TCPSyn, ipFlags: layers.IPv4MoreFragments}.tcp(t), verdict: drop, reason: verdict.ReasonMalformed},
			{what: "version 5", pkt: edit(syn(t, client4, 80), func(b []byte) { b[0] = 0x55 }), verdict: drop, reason: verdict.ReasonMalformed},
			{what: "ipv4-mapped source, unprotected port", pkt: syn(t, mapped4, 80), verdict: drop, reason: verdict.ReasonMalformed},
			{what: "ipv4-mapped source, knock", pkt: syn(t, mapped4, 7000), verdict: drop, reason: verdict.ReasonMalformed, check: true},
			{what: "ipv4-mapped source, udp knock", pkt: udpPkt(t, mapped4, 9000, nil), verdict: drop, reason: verdict.ReasonMalformed, check: true},
		}},
		{name: "ipv6 source granted separately from ipv4", steps: then(sequence(k4),
			step{what: "v6 not granted", pkt: syn(t, client6, 22), at: 3 * s, verdict: reject, reason: verdict.ReasonNoGrant},
			step{what: "v6 knock 1", pkt: k6[0], at: 4 * s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			step{what: "v6 knock 2", pkt: k6[1], at: 5 * s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			step{what: "v6 knock 3", pkt: k6[2], at: 6 * s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventGrant},
			step{what: "v6 granted", pkt: syn(t, client6, 22), at: 7 * s, verdict: accept, reason: verdict.ReasonGranted},
			step{what: "v4 still granted", pkt: syn(t, client4, 22), at: 7 * s, verdict: accept, reason: verdict.ReasonGranted},
			step{what: "v4 lapses first", pkt: syn(t, client4, 22), at: 2*s + open, verdict: reject, reason: verdict.ReasonNoGrant},
			step{what: "v6 lapses later", pkt: syn(t, client6, 22), at: 2*s + open, verdict: accept, reason: verdict.ReasonGranted},
		)},
		{name: "ipv6 with extension headers knocks", steps: []step{
			{what: "protected, with AH", pkt: withAH(syn(t, client6, 22)), verdict: reject, reason: verdict.ReasonNoGrant},
			{pkt: k6[0], verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: spec{src: client6, dst: server6, sport: 2, dport: 8000, flags: verdict.TCPSyn, ext: extHeaders()}.tcp(t), at: s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: withAH(spec{src: client6, dst: server6, sport: 3, dport: 9000, ext: extHeaders()}.udp(t)), at: 2 * s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventGrant},
			{pkt: spec{src: client6, dst: server6, sport: 4, dport: 22, flags: verdict.TCPSyn, ext: extHeaders()}.tcp(t), at: 3 * s, verdict: accept, reason: verdict.ReasonGranted},
			{what: "granted, with AH", pkt: withAH(syn(t, client6, 22)), at: 3 * s, verdict: accept, reason: verdict.ReasonGranted},
		}},
		{name: "a second source stays out", steps: then(sequence(k4),
			step{what: "other v4 source", pkt: syn(t, client4b, 22), at: 3 * s, verdict: reject, reason: verdict.ReasonNoGrant},
			step{what: "other v6 source", pkt: syn(t, client6b, 22), at: 3 * s, verdict: reject, reason: verdict.ReasonNoGrant},
			step{what: "other source's last knock alone", pkt: udpPkt(t, client4b, 9000, nil), at: 4 * s, verdict: reject, reason: verdict.ReasonKnock, check: true},
			step{what: "still out", pkt: syn(t, client4b, 22), at: 5 * s, verdict: reject, reason: verdict.ReasonNoGrant},
			step{what: "ipv4-mapped form of the granted source", pkt: syn(t, mapped4, 22), at: 5 * s, verdict: drop, reason: verdict.ReasonMalformed},
		)},
		{name: "interleaved sources both get in", steps: []step{
			{pkt: k4[0], verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: sshKnocks(t, client4b)[0], verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: k4[1], at: s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: sshKnocks(t, client4b)[1], at: s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: k4[2], at: 2 * s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventGrant},
			{pkt: sshKnocks(t, client4b)[2], at: 2 * s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventGrant},
			{pkt: syn(t, client4, 22), at: 3 * s, verdict: accept, reason: verdict.ReasonGranted},
			{pkt: syn(t, client4b, 22), at: 3 * s, verdict: accept, reason: verdict.ReasonGranted},
		}},
		{name: "wrong order does not open", steps: []step{
			{pkt: k4[1], verdict: reject, reason: verdict.ReasonKnock, check: true},
			{pkt: k4[0], at: s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: k4[2], at: 2 * s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventReset},
			{pkt: syn(t, client4, 22), at: 3 * s, verdict: reject, reason: verdict.ReasonNoGrant},
		}},
		{name: "a syn to another port between knocks resets", steps: []step{
			{pkt: k4[0], verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: syn(t, client4, 80), at: s, verdict: accept, reason: verdict.ReasonUnprotected, event: tracker.EventReset},
			{pkt: k4[1], at: 2 * s, verdict: reject, reason: verdict.ReasonKnock, check: true},
			{pkt: k4[2], at: 3 * s, verdict: reject, reason: verdict.ReasonKnock, check: true},
			{pkt: syn(t, client4, 22), at: 4 * s, verdict: reject, reason: verdict.ReasonNoGrant},
		}},
		{name: "a datagram to another port between knocks resets", steps: []step{
			{pkt: k4[0], verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: k4[1], at: s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: udpPkt(t, client4, 9001, nil), at: s, verdict: accept, reason: verdict.ReasonNotKnock, event: tracker.EventReset},
			{pkt: k4[2], at: 2 * s, verdict: reject, reason: verdict.ReasonKnock, check: true},
			{pkt: syn(t, client4, 22), at: 3 * s, verdict: reject, reason: verdict.ReasonNoGrant},
		}},
		{name: "a datagram to a udp knock port that is not next resets", steps: []step{
			{pkt: udpPkt(t, client6, 6000, nil), verdict: drop, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: udpPkt(t, client6, 9000, nil), at: s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventReset},
			{pkt: syn(t, client6, 6001), at: s, verdict: drop, reason: verdict.ReasonKnock, check: true},
			{pkt: syn(t, client6, 5432), at: 2 * s, verdict: drop, reason: verdict.ReasonNoGrant},
		}},
		{name: "a syn to the protected port between knocks resets", steps: []step{
			{pkt: k4[0], verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: k4[1], at: s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: syn(t, client4, 22), at: 2 * s, verdict: reject, reason: verdict.ReasonNoGrant, event: tracker.EventReset},
			{pkt: k4[2], at: 3 * s, verdict: reject, reason: verdict.ReasonKnock, check: true},
			{pkt: syn(t, client4, 22), at: 4 * s, verdict: reject, reason: verdict.ReasonNoGrant},
		}},
		{name: "step timeout", steps: []step{
			{pkt: k4[0], verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: k4[1], at: 6 * s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventReset},
			{pkt: k4[2], at: 7 * s, verdict: reject, reason: verdict.ReasonKnock, check: true},
			{pkt: syn(t, client4, 22), at: 8 * s, verdict: reject, reason: verdict.ReasonNoGrant},
		}},
		{name: "retransmitted knocks are harmless", steps: []step{
			{pkt: k4[0], verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: k4[0], at: s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventRepeat},
			{pkt: k4[1], at: 2 * s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventStep},
			{pkt: k4[1], at: 3 * s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventRepeat},
			{pkt: k4[2], at: 4 * s, verdict: reject, reason: verdict.ReasonKnock, event: tracker.EventGrant},
			{pkt: k4[2], at: 4 * s, verdict: reject, reason: verdict.ReasonKnock, check: true},
			{pkt: syn(t, client4, 22), at: 5 * s, verdict: accept, reason: verdict.ReasonGranted},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, testSet(t))
			for i, st := range tt.steps {
				d := e.Decide(st.pkt, t0.Add(st.at))
				name := st.what
				if name == "" {
					name = fmt.Sprint("step ", i)
				}
				if d.Verdict != st.verdict || d.Reason != st.reason {
					t.Fatalf("%s: %v/%v, want %v/%v (%+v)", name, d.Verdict, d.Reason, st.verdict, st.reason, d)
				}
				if (st.check || st.event != tracker.EventNone) && d.Knock.Event != st.event {
					t.Fatalf("%s: knock event %v, want %v", name, d.Knock.Event, st.event)
				}
				if st.service != "" && d.Service != st.service {
					t.Errorf("%s: service %q, want %q", name, d.Service, st.service)
				}
				if d.Knock.Event == tracker.EventNone && d.Service != "" {
					t.Errorf("%s: service %q without a knock event", name, d.Service)
				}
			}
		})
	}
}

// extHeaders is a hop-by-hop and a destination options header.
func extHeaders() []gopacketLayer { return []gopacketLayer{hopByHop(), destOpts()} }

func TestDecisionFields(t *testing.T) {
	e := newEngine(t, testSet(t))
	tests := []struct {
		name  string
		pkt   []byte
		src   netip.Addr
		proto uint8
		port  uint16
	}{
		{"tcp v4", syn(t, client4, 22), client4, rules.ProtoTCP, 22},
		{"udp v4", udpPkt(t, client4, 9000, nil), client4, rules.ProtoUDP, 9000},
		{"tcp v6", syn(t, client6, 80), client6, rules.ProtoTCP, 80},
		{"udp v6 not knock", udpPkt(t, client6, 53, nil), client6, rules.ProtoUDP, 53},
		{"non-syn", tcpPkt(t, client4, 443, verdict.TCPAck), client4, rules.ProtoTCP, 443},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.Decide(tt.pkt, t0)
			if d.Src != tt.src || d.Proto != tt.proto || d.Port != tt.port {
				t.Errorf("decision %v proto %d port %d, want %v %d %d", d.Src, d.Proto, d.Port, tt.src, tt.proto, tt.port)
			}
		})
	}
	t.Run("malformed keeps the source when the ip header was usable", func(t *testing.T) {
		d := e.Decide(syn(t, client4, 22)[:30], t0)
		if d.Src != client4 {
			t.Errorf("Src = %v, want %v", d.Src, client4)
		}
	})
}

func TestEngineRules(t *testing.T) {
	set := testSet(t)
	e := newEngine(t, set)
	if e.Rules() != set {
		t.Error("Rules is not the set given to New")
	}
	if e.Tracker() == nil {
		t.Error("Tracker is nil")
	}
}

func TestSetRulesSameServices(t *testing.T) {
	// A reload that keeps the services keeps the grants.
	e := newEngine(t, testSet(t))
	for i, k := range sshKnocks(t, client4) {
		e.Decide(k, t0.Add(time.Duration(i)*time.Second))
	}
	c := testConfig()
	c.Log.Level = "debug"
	set2, err := rules.Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	e.SetRules(set2, t0.Add(3*time.Second))
	if e.Rules() != set2 {
		t.Fatal("SetRules did not swap")
	}
	if d := e.Decide(syn(t, client4, 22), t0.Add(3*time.Second)); d.Verdict != verdict.Accept {
		t.Errorf("after reload: %v/%v, want accept", d.Verdict, d.Reason)
	}
}

// TestSetRulesServiceChange reloads rules whose services differ from the old
// ones. Grants and pending progress are kept by service index, and indexes
// follow the sorted service names, so they must not carry over to whatever
// service now has the old index.
func TestSetRulesServiceChange(t *testing.T) {
	t.Run("grant does not move to another service", func(t *testing.T) {
		e := newEngine(t, testSet(t)) // db 0, ssh 1
		// client4 opens db (index 0).
		e.Decide(udpPkt(t, client4, 6000, nil), t0)
		if d := e.Decide(syn(t, client4, 6001), t0.Add(time.Second)); d.Knock.Event != tracker.EventGrant {
			t.Fatalf("db sequence: %v", d.Knock.Event)
		}
		// Reload without db: ssh becomes index 0.
		c := testConfig()
		delete(c.Services, "db")
		set2, err := rules.Compile(c)
		if err != nil {
			t.Fatal(err)
		}
		e.SetRules(set2, t0.Add(2*time.Second))
		if d := e.Decide(syn(t, client4, 22), t0.Add(2*time.Second)); d.Verdict == verdict.Accept {
			t.Errorf("ssh port opened for a source that only knocked db's sequence before a reload: %v/%v", d.Verdict, d.Reason)
		}
	})
	t.Run("pending progress of a removed service", func(t *testing.T) {
		e := newEngine(t, testSet(t)) // db 0, ssh 1
		// client4 is halfway through ssh (index 1).
		e.Decide(syn(t, client4, 7000), t0)
		// Reload with ssh alone: index 1 no longer exists.
		c := testConfig()
		delete(c.Services, "db")
		set2, err := rules.Compile(c)
		if err != nil {
			t.Fatal(err)
		}
		e.SetRules(set2, t0.Add(time.Second))
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("Decide panicked after a reload that removed a service: %v", r)
			}
		}()
		e.Decide(syn(t, client4, 8000), t0.Add(time.Second))
	})
}

func TestVerdictString(t *testing.T) {
	tests := []struct {
		v    verdict.Verdict
		want string
	}{
		{verdict.Drop, "drop"},
		{verdict.Accept, "accept"},
		{verdict.Reject, "reject"},
		{verdict.Verdict(99), "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.v.String(); got != tt.want {
				t.Errorf("String = %q, want %q", got, tt.want)
			}
		})
	}
	if verdict.Verdict(0) != verdict.Drop {
		t.Error("the zero Verdict is not Drop: a forgotten verdict would not fail closed")
	}
}

func TestReasonString(t *testing.T) {
	tests := []struct {
		r    verdict.Reason
		want string
	}{
		{verdict.ReasonMalformed, "malformed"},
		{verdict.ReasonUnprotected, "unprotected"},
		{verdict.ReasonGranted, "granted"},
		{verdict.ReasonNoGrant, "no-grant"},
		{verdict.ReasonKnock, "knock"},
		{verdict.ReasonNotSYN, "not-syn"},
		{verdict.ReasonNotKnock, "not-knock"},
		{verdict.ReasonToken, "token"},
		{verdict.ReasonBadToken, "bad-token"},
		{verdict.ReasonRateLimited, "rate-limited"},
		{verdict.Reason(200), "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.r.String(); got != tt.want {
				t.Errorf("String = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSetRulesKeepsUnchangedProgress: a reload keeps knock progress toward
// a sequence it leaves unchanged, even when the service's index moves
// (a service added before it in name order), and drops progress toward a
// sequence it changes.
func TestSetRulesKeepsUnchangedProgress(t *testing.T) {
	e := newEngine(t, testSet(t)) // db 0, ssh 1
	other := netip.MustParseAddr("10.77.0.9")
	e.Decide(syn(t, client4, 7000), t0)       // ssh, 1 of 3
	e.Decide(udpPkt(t, other, 6000, nil), t0) // db, 1 of 2
	c := testConfig()
	db := c.Services["db"]
	db.Sequence = []string{"6000/udp", "6002"} // db's sequence changes
	c.Services["db"] = db
	aaa := rules.ServiceDefaults()
	aaa.Ports, aaa.Sequence = []int{80}, []string{"5000", "5001", "5002"} // moves ssh to index 2
	c.Services["aaa"] = aaa
	set2, err := rules.Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	e.SetRules(set2, t0.Add(time.Second))
	if d := e.Decide(syn(t, client4, 8000), t0.Add(time.Second)); d.Knock.Event != tracker.EventStep || d.Knock.Done != 2 {
		t.Errorf("ssh's second knock after the reload: %v (done %d, %v/%v), want step 2", d.Knock.Event, d.Knock.Done, d.Verdict, d.Reason)
	}
	if d := e.Decide(udpPkt(t, client4, 9000, nil), t0.Add(time.Second)); d.Knock.Event != tracker.EventGrant || d.Service != "ssh" {
		t.Errorf("ssh's last knock after the reload: %v %q, want a grant of ssh", d.Knock.Event, d.Service)
	}
	if d := e.Decide(syn(t, other, 6002), t0.Add(time.Second)); d.Knock.Event == tracker.EventGrant {
		t.Error("progress toward db's old sequence completed db's new one")
	}
	if d := e.Decide(syn(t, client4, 22), t0.Add(2*time.Second)); d.Verdict != verdict.Accept {
		t.Errorf("ssh after the knock across the reload: %v/%v", d.Verdict, d.Reason)
	}
}

// TestUDPSweepNeverOpens: an ascending or a descending sweep of every UDP
// port from one source never completes a sequence of UDP knocks, since
// every datagram that is not the next knock resets the source's progress;
// the knocks themselves still open it.
func TestUDPSweepNeverOpens(t *testing.T) {
	c := rules.Defaults()
	svc := rules.ServiceDefaults()
	svc.Ports = []int{22}
	svc.Sequence = []string{"7000/udp", "8000/udp", "9000/udp"}
	svc.StepTimeout = time.Hour // the sweep is not slowed down by a step timeout
	c.Services = map[string]rules.ServiceConfig{"ssh": svc}
	set, err := rules.Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		ports func(i int) uint16
	}{
		{"ascending", func(i int) uint16 { return uint16(i) }},
		{"descending", func(i int) uint16 { return uint16(65535 - i) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, set)
			at := t0
			for i := range 65536 {
				at = at.Add(time.Microsecond)
				if d := e.Decide(udpPkt(t, client4, tt.ports(i), nil), at); d.Knock.Event == tracker.EventGrant {
					t.Fatalf("the sweep granted at port %d", tt.ports(i))
				}
			}
			if d := e.Decide(syn(t, client4, 22), at); d.Reason != verdict.ReasonNoGrant {
				t.Fatalf("after the sweep: %v, want no-grant", d.Reason)
			}
			for _, p := range []uint16{7000, 8000, 9000} {
				e.Decide(udpPkt(t, client4, p, nil), at)
			}
			if d := e.Decide(syn(t, client4, 22), at); d.Reason != verdict.ReasonGranted {
				t.Fatalf("after the knocks: %v, want granted", d.Reason)
			}
		})
	}
}
