//go:build !knockwall_omit_cluster

package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// lockedHost is a fakeHost for memberlist's goroutines.
type lockedHost struct {
	mu sync.Mutex
	h  *fakeHost
}

func (l *lockedHost) ServiceHash(s string) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.h.ServiceHash(s)
}
func (l *lockedHost) ApplyGrant(g Grant) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.h.ApplyGrant(g)
}
func (l *lockedHost) ApplyRevoke(s netip.Addr, svc string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.h.ApplyRevoke(s, svc)
}
func (l *lockedHost) MarkTokenUsed(s string, m uint8, k []byte, u time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.h.MarkTokenUsed(s, m, k, u)
}
func (l *lockedHost) GrantLeft(s netip.Addr, svc string) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.h.GrantLeft(s, svc)
}
func (l *lockedHost) has(src netip.Addr, svc string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.h.grants[entryKey{src, svc}]
	return ok
}

// syncBuffer is a log sink for several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// freePort returns a loopback port free for UDP and TCP alike.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func startNode(t *testing.T, name string, key []byte, peers ...string) (*Node, *lockedHost, *syncBuffer, string) {
	t.Helper()
	host := &lockedHost{h: newFakeHost()}
	logs := &syncBuffer{}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	n, err := Start(NodeConfig{
		Core: Config{Name: name, Host: host, Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			MaxSkew: 5 * time.Second, MaxEntries: 1000, MaxTokens: 1000},
		Bind: addr, Peers: peers, Key: key,
		PushPullEvery: time.Second, RejoinEvery: 200 * time.Millisecond, GossipEvery: 50 * time.Millisecond, ProbeEvery: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { n.Close() })
	return n, host, logs, addr
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNodesShareOverMemberlist(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, KeySize)
	a, _, _, addrA := startNode(t, "a", key)
	b, hostB, _, _ := startNode(t, "b", key, addrA)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Wait(ctx, "b"); err != nil {
		t.Fatalf("b never joined a: %v", err)
	}
	a.LocalGrant(src, "ssh", 1, time.Now().Add(time.Minute), 1, false, 0, time.Now())
	waitFor(t, "a's grant at b", func() bool { return hostB.has(src, "ssh") })
	a.LocalRevoke(src, "ssh", time.Now())
	waitFor(t, "a's revoke at b", func() bool { return !hostB.has(src, "ssh") })

	st := b.Stats()
	if len(st.Peers) != 1 || st.Peers[0].Name != "a" || st.Peers[0].State != "alive" || st.Peers[0].LastSync.IsZero() {
		t.Fatalf("b's peers: %+v", st.Peers)
	}
	if st.GrantsReceived != 1 || st.RevokesReceived != 1 {
		t.Fatalf("b's counters: %+v", st)
	}
}

func TestWrongKeyIgnoredAndLogged(t *testing.T) {
	a, hostA, logsA, addrA := startNode(t, "a", bytes.Repeat([]byte{1}, KeySize))
	m, _, _, _ := startNode(t, "mallory", bytes.Repeat([]byte{2}, KeySize), addrA)
	m.LocalGrant(src, "ssh", 1, time.Now().Add(time.Minute), 1, false, 0, time.Now())
	waitFor(t, "a refusing mallory's messages", func() bool { return a.RefusedKey.Load() > 0 })
	time.Sleep(500 * time.Millisecond)
	if hostA.has(src, "ssh") {
		t.Fatal("a applied a grant sealed with another key")
	}
	for _, p := range a.Stats().Peers {
		if p.Name == "mallory" {
			t.Fatalf("mallory is a's peer: %+v", p)
		}
	}
	if !bytes.Contains([]byte(logsA.String()), []byte("not sealed with this cluster's key")) {
		t.Fatalf("a's log says nothing of the key:\n%s", logsA)
	}
}

// TestPeerStates: a peer that stops answering is no longer alive, and
// dead once memberlist declares it failed.
func TestPeerStates(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, KeySize)
	a, _, _, addrA := startNode(t, "a", key)
	b, _, _, _ := startNode(t, "b", key, addrA)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Wait(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	state := func() string {
		for _, p := range a.Stats().Peers {
			if p.Name == "b" {
				return p.State
			}
		}
		return ""
	}
	waitFor(t, "b alive at a", func() bool { return state() == StateAlive })
	// A crash: no leave. (Close then finds b stopped.)
	close(b.stop)
	b.wg.Wait()
	b.ml.Shutdown()
	// Suspect first, unless memberlist declares b failed sooner (its
	// closed ports answer the probes at once here); the partition test in
	// e2e sees suspect.
	waitFor(t, "b suspect or dead at a", func() bool { return state() != StateAlive })
	waitFor(t, "b dead at a", func() bool { return state() == StateDead })
}
