package daemon

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/cluster"
	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/nfq"
	"github.com/knockwall/knockwall/internal/pkttest"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
	"github.com/knockwall/knockwall/tracker"
)

// coreSharer is a cluster without memberlist: a real Core whose messages
// the test reads.
type coreSharer struct{ *cluster.Core }

func (coreSharer) Stats() cluster.Stats { return cluster.Stats{Name: "a"} }
func (coreSharer) Close() error         { return nil }

type sentLog struct {
	mu   sync.Mutex
	msgs []cluster.Message
}

func (s *sentLog) add(m cluster.Message) { s.mu.Lock(); s.msgs = append(s.msgs, m); s.mu.Unlock() }

// find waits for a sent event of kind for src, service.
func (s *sentLog) find(t *testing.T, kind cluster.Kind, src netip.Addr, service string) cluster.Event {
	t.Helper()
	return s.findWhere(t, kind, src, service, func(cluster.Event) bool { return true })
}

// findWhere waits for a sent event of kind for src, service that ok
// accepts.
func (s *sentLog) findWhere(t *testing.T, kind cluster.Kind, src netip.Addr, service string, ok func(cluster.Event) bool) cluster.Event {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		for _, m := range s.msgs {
			for _, e := range m.Events {
				if e.Kind == kind && e.Src == src && e.Service == service && ok(e) {
					s.mu.Unlock()
					return e
				}
			}
		}
		s.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %s of %s/%s sent", kind, src, service)
	return cluster.Event{}
}

// startClustered runs a daemon on fakes with the fast path and a Core as
// its cluster (node "a"); the Core's clock is the daemon's.
func startClustered(t *testing.T) (*harness, *cluster.Core, *sentLog) {
	t.Helper()
	sent := &sentLog{}
	var core *cluster.Core
	var h *harness
	set := testSet(t, func(c *rules.Config) {
		ssh := c.Services["ssh"]
		ssh.Sequence = []string{"7000", "8000", "9000"}
		c.Services["ssh"] = ssh
	})
	clk := &clock{t: t0}
	h = start(t, harnessOptions{set: set, fastPath: true, cluster: func(host cluster.Host) (Sharer, error) {
		core = cluster.NewCore(cluster.Config{Name: "a", Clock: clk, Host: host, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			MaxSkew: 5 * time.Second, MaxEntries: 100, MaxTokens: 100, Send: sent.add})
		return coreSharer{core}, nil
	}})
	return h, core, sent
}

// TestClusterSharesLocalGrants: a knock's grant (again once its first
// connection makes it last open_for), an operator's grant and an
// operator's revoke are sent to the peers, with wall-clock times.
func TestClusterSharesLocalGrants(t *testing.T) {
	h, _, sent := startClustered(t)
	src := netip.MustParseAddr("10.77.0.9")
	for _, p := range []uint16{7000, 8000, 9000} {
		h.queue.judge(t, pkttest.SYN(src, netip.AddrPortFrom(server4, p)))
	}
	svc := &h.d.Set().Services[0]
	// A plain sequence's grant is sent as it stands: ending at
	// first_connect_within unless its source connects.
	e := sent.find(t, cluster.KindGrant, src, "ssh")
	if e.Expires != t0.Add(svc.FirstConnectWithin).UnixNano() || e.Method != uint8(tracker.MethodSequence) || e.Hash != serviceHash(svc) || e.Origin != "a" || e.Stamp != t0.UnixNano() {
		t.Fatalf("sent %+v", e)
	}
	// Its first connection makes it last open_for, and that is sent too.
	h.queue.judge(t, pkttest.SYN(src, netip.AddrPortFrom(server4, svc.Ports[0])))
	full := t0.Add(svc.OpenFor).UnixNano()
	if e := sent.findWhere(t, cluster.KindGrant, src, "ssh", func(e cluster.Event) bool { return e.Expires == full }); e.Method != uint8(tracker.MethodSequence) {
		t.Fatalf("sent %+v", e)
	}
	op := netip.MustParseAddr("10.77.0.10")
	if _, err := h.d.Grant(context.Background(), op, "ssh", time.Hour, "test"); err != nil {
		t.Fatal(err)
	}
	if e := sent.find(t, cluster.KindGrant, op, "ssh"); e.Expires != t0.Add(time.Hour).UnixNano() || e.Method != uint8(tracker.MethodManual) {
		t.Fatalf("sent %+v", e)
	}
	if _, err := h.d.Revoke(context.Background(), src, "", "test"); err != nil {
		t.Fatal(err)
	}
	sent.find(t, cluster.KindRevoke, src, "ssh")
}

// TestClusterPeerGrantApplied: a peer's grant enters the tracker and the
// kernel's set as a local one, shows its origin, is cut to the open_for in
// force, and a peer's revoke ends it; a grant of a service defined
// otherwise here is not applied.
func TestClusterPeerGrantApplied(t *testing.T) {
	h, core, _ := startClustered(t)
	svc := &h.d.Set().Services[0]
	src := netip.MustParseAddr("10.77.0.20")
	opened := func(a nfq.Answer) bool {
		fw := h.d.Set().Firewall
		return a.Accept && a.SetMark && a.Mark&uint32(fw.MarkMask) == uint32(fw.AcceptMark)
	}
	if a := h.queue.judge(t, pkttest.SYN(src, netip.AddrPortFrom(server4, 22))); opened(a) {
		t.Fatal("open before any grant")
	}
	core.Merge(cluster.Message{Sender: "b", Sent: t0.UnixNano(), Events: []cluster.Event{{Kind: cluster.KindGrant, Src: src, Service: "ssh",
		Hash: serviceHash(svc), Origin: "b", Seq: 1, Stamp: t0.UnixNano(), Expires: t0.Add(time.Hour).UnixNano(), Method: uint8(tracker.MethodSPA)}}})
	gs := h.d.Grants()
	if len(gs) != 1 || gs[0].Src != src || gs[0].Origin != "b" || gs[0].How != tracker.MethodSPA || !gs[0].Expires.Equal(t0.Add(svc.OpenFor)) {
		t.Fatalf("grants %+v", gs)
	}
	if a := h.queue.judge(t, pkttest.SYN(src, netip.AddrPortFrom(server4, 22))); !opened(a) {
		t.Fatal("a peer's grant does not open")
	}
	// Written to the kernel's set, by an update or a full rewrite.
	deadline := time.Now().Add(waitFor)
	for {
		h.fast.gmu.Lock()
		inKernel := slices.ContainsFunc(h.fast.written, func(e firewall.GrantElem) bool { return e.Src == src && e.Port == 22 })
		h.fast.gmu.Unlock()
		if inKernel {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not in the kernel's set: %q", h.ev.list())
		}
		time.Sleep(5 * time.Millisecond)
	}

	core.Merge(cluster.Message{Sender: "b", Sent: t0.UnixNano(), Events: []cluster.Event{{Kind: cluster.KindRevoke, Src: src, Service: "ssh",
		Origin: "b", Seq: 2, Stamp: t0.Add(time.Millisecond).UnixNano(), Expires: t0.Add(time.Hour).UnixNano()}}})
	if gs := h.d.Grants(); len(gs) != 0 {
		t.Fatalf("after the peer's revoke: %+v", gs)
	}
	if a := h.queue.judge(t, pkttest.SYN(src, netip.AddrPortFrom(server4, 22))); opened(a) {
		t.Fatal("open after the peer's revoke")
	}

	other := netip.MustParseAddr("10.77.0.21")
	core.Merge(cluster.Message{Sender: "b", Sent: t0.UnixNano(), Events: []cluster.Event{{Kind: cluster.KindGrant, Src: other, Service: "ssh",
		Hash: serviceHash(svc) + 1, Origin: "b", Seq: 3, Stamp: t0.UnixNano(), Expires: t0.Add(time.Minute).UnixNano(), Method: uint8(tracker.MethodSPA)}}})
	if gs := h.d.Grants(); len(gs) != 0 || core.RefusedService.Load() != 1 {
		t.Fatalf("a grant of a differing service: %+v", gs)
	}
}

// TestServiceHash: what a grant lets in changes the hash; open_for and
// timing do not.
func TestServiceHash(t *testing.T) {
	base := testSet(t, nil)
	h0 := serviceHash(&base.Services[0])
	for name, mod := range map[string]func(s *rules.ServiceConfig){
		"ports":       func(s *rules.ServiceConfig) { s.Ports = []int{22, 2222} },
		"connections": func(s *rules.ServiceConfig) { s.Connections = 1 },
		"forward":     func(s *rules.ServiceConfig) { s.Forward = true },
	} {
		set := testSet(t, func(c *rules.Config) { s := c.Services["ssh"]; mod(&s); c.Services["ssh"] = s })
		if serviceHash(&set.Services[0]) == h0 {
			t.Errorf("%s: same hash", name)
		}
	}
	same := testSet(t, func(c *rules.Config) { s := c.Services["ssh"]; s.OpenFor = time.Hour; c.Services["ssh"] = s })
	if serviceHash(&same.Services[0]) != h0 {
		t.Error("open_for changed the hash")
	}
}

// TestShareAllocatesNothing: posting a grant or spent token for the
// cluster, on the packet path, allocates nothing, full channel or not.
func TestShareAllocatesNothing(t *testing.T) {
	d, err := New(Config{Set: testSet(t, nil), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now,
		Cluster: func(cluster.Host) (Sharer, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ev := shareEvent{src: netip.MustParseAddr("10.77.0.30"), id: 1, at: 1, grant: true, method: tracker.MethodSPA, until: 2}
	if n := testing.AllocsPerRun(1000, func() { d.share(ev); <-d.shareCh }); n != 0 {
		t.Fatalf("share with room: %v allocations", n)
	}
	for range shareEvents {
		d.share(ev)
	}
	if n := testing.AllocsPerRun(1000, func() { d.share(ev) }); n != 0 {
		t.Fatalf("share when full: %v allocations", n)
	}
	if d.shareDropped.Load() == 0 {
		t.Fatal("a full channel dropped nothing")
	}
}

// TestClusterOneShotCount: a peer's one-shot grant keeps its connections
// left, capped by the service here; the same grant with none left ends the
// local copy.
func TestClusterOneShotCount(t *testing.T) {
	sent := &sentLog{}
	var core *cluster.Core
	set := testSet(t, func(c *rules.Config) {
		ssh := c.Services["ssh"]
		ssh.Connections = 3
		c.Services["ssh"] = ssh
	})
	h := start(t, harnessOptions{set: set, cluster: func(host cluster.Host) (Sharer, error) {
		core = cluster.NewCore(cluster.Config{Name: "a", Clock: &clock{t: t0}, Host: host, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			MaxSkew: 5 * time.Second, MaxEntries: 100, MaxTokens: 100, Send: sent.add})
		return coreSharer{core}, nil
	}})
	svc := &h.d.Set().Services[0]
	src := netip.MustParseAddr("10.77.0.40")
	grant := cluster.Event{Kind: cluster.KindGrant, Src: src, Service: "ssh", Hash: serviceHash(svc), Origin: "b", Seq: 1,
		Stamp: t0.UnixNano(), Expires: t0.Add(time.Minute).UnixNano(), Method: uint8(tracker.MethodSequence), Limited: true, Left: 9}
	core.Merge(cluster.Message{Sender: "b", Sent: t0.UnixNano(), Events: []cluster.Event{grant}})
	if gs := h.d.Grants(); len(gs) != 1 || !gs[0].Limited || gs[0].Left != 3 {
		t.Fatalf("a peer's one-shot grant of 9 under connections: 3: %+v", gs)
	}
	grant.Left = 0
	core.Merge(cluster.Message{Sender: "b", Sent: t0.UnixNano(), Events: []cluster.Event{grant}})
	if gs := h.d.Grants(); len(gs) != 0 {
		t.Fatalf("used up at the peer, still here: %+v", gs)
	}
}

// TestPeerTokenKeptNoLongerThanLocal: a spent token from a peer is
// remembered no longer than a local one could be, whatever the peer says.
func TestPeerTokenKeptNoLongerThanLocal(t *testing.T) {
	key, err := spa.NewKey(bytes.Repeat([]byte{7}, spa.MinKeySize))
	if err != nil {
		t.Fatal(err)
	}
	c := rules.Defaults()
	ssh := rules.ServiceDefaults()
	ssh.Ports, ssh.Sequence, ssh.SPA.Port, ssh.SPA.KeyFile = []int{22}, nil, 62201, "ssh.key"
	c.Services = map[string]rules.ServiceConfig{"ssh": ssh}
	set, err := rules.Compile(c, rules.WithKeyReader(func(string) (*spa.Key, error) { return key, nil }))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Set: set, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	clusterHost{d}.MarkTokenUsed("ssh", uint8(tracker.MethodSPA), make([]byte, spa.NonceSize), t0.Add(365*24*time.Hour))
	if n := d.eng.Remembered(); n != 1 {
		t.Fatalf("remembered %d, want the peer's token", n)
	}
	d.eng.PurgeNonces(t0.Add(2*ssh.SPA.MaxSkew + 2*time.Second))
	if n := d.eng.Remembered(); n != 0 {
		t.Fatal("a peer's token outlived the longest a local one is kept")
	}
}
