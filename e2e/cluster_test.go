package e2e

// A router pair sharing grants (knockwall's cluster on memberlist): a
// client and routers A and B on one segment (a bridge in a switch
// namespace), a virtual address the test moves from A to B as keepalived
// would, the cluster on the routers' own addresses. Real daemons, real
// namespaces, real connects.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/control"
	"github.com/knockwall/knockwall/internal/netns"
	"github.com/knockwall/knockwall/spa"
)

// Time limits of the cluster tests: memberlist gossips every 200 ms, joins
// missing peers again every 2 s and exchanges whole states every 10 s.
const (
	clusterPort   = 7946
	clusterSync   = 10 * time.Second // a grant, revoke or token reaches the peer
	clusterJoin   = 15 * time.Second // two nodes find each other
	clusterHeal   = 30 * time.Second // a healed partition converges
	clusterCmd    = 10 * time.Second
	haOpenFor     = 120 * time.Second
	haSPAPort     = 62201
	haSPAMaxSkew  = 30 * time.Second
	clusterRejoin = 20 * time.Second
)

// haEnv is the HA topology with a daemon on each router.
type haEnv struct {
	h      *netns.HA
	bin    string
	dir    string
	spaKey *spa.Key
	nodes  map[netns.NS]*haNode
}

type haNode struct {
	name   string
	ns     netns.NS
	cfg    string
	socket string
	d      *daemon
}

type haOptions struct {
	wrongKeyB bool // B gets a cluster key of its own
}

func newHAEnv(t *testing.T, o haOptions) *haEnv {
	t.Helper()
	bin := requireBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, err := netns.NewHA(ctx, "kwh")
	if err != nil {
		t.Fatalf("HA namespaces: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("delete namespaces: %v", err)
		}
	})
	e := &haEnv{h: h, bin: bin, dir: t.TempDir(), nodes: map[netns.NS]*haNode{}}
	spaKeyPath := filepath.Join(e.dir, "spa.key")
	e.spaKey = keygen(t, bin, spaKeyPath)
	keyA := filepath.Join(e.dir, "cluster.key")
	runOK(t, bin, "keygen", "--cluster", keyA)
	keyB := keyA
	if o.wrongKeyB {
		keyB = filepath.Join(e.dir, "other-cluster.key")
		runOK(t, bin, "keygen", "--cluster", keyB)
	}
	for _, n := range []struct {
		name      string
		ns        netns.NS
		self, key string
		peer      netip.Addr
	}{{"a", h.A, h.A4.String(), keyA, h.B4}, {"b", h.B, h.B4.String(), keyB, h.A4}} {
		dir := filepath.Join(e.dir, n.name)
		node := &haNode{name: n.name, ns: n.ns, cfg: filepath.Join(dir, "knockwall.yaml"), socket: filepath.Join(dir, "ctl.sock")}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		yaml := configYAML(service{sequence: defaultSequence, openFor: haOpenFor, closed: reject, extra: fmt.Sprintf(`    spa:
      port: %d
      key_file: %q
      max_skew: %s
`, haSPAPort, spaKeyPath, haSPAMaxSkew)}, nftFast, operate{socket: node.socket}) + fmt.Sprintf(`cluster:
  name: %s
  bind: %s:%d
  peers: [%s:%d]
  key_file: %q
`, n.name, n.self, clusterPort, n.peer, clusterPort, n.key)
		if err := os.WriteFile(node.cfg, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		echoServer(t, n.ns, protectedPort)
		e.nodes[n.ns] = node
	}
	for _, ns := range []netns.NS{h.A, h.B} {
		e.start(t, ns)
	}
	return e
}

// start starts the daemon of router ns.
func (e *haEnv) start(t *testing.T, ns netns.NS) {
	t.Helper()
	n := e.nodes[ns]
	n.d = startDaemon(t, ns, e.bin, n.cfg)
}

func (e *haEnv) a() *haNode { return e.nodes[e.h.A] }
func (e *haEnv) b() *haNode { return e.nodes[e.h.B] }

// runOK runs a command in the root namespace (no traffic: keygen).
func runOK(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func (n *haNode) client() *control.Client { return control.NewClient(n.socket) }

// grants lists n's live grants.
func (n *haNode) grants(t *testing.T) []control.Grant {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterCmd)
	defer cancel()
	gs, err := n.client().Grants(ctx)
	if err != nil {
		t.Fatalf("grants of %s: %v", n.name, err)
	}
	return gs
}

// grantOf is n's grant of ssh to src, if any.
func (n *haNode) grantOf(t *testing.T, src netip.Addr) (control.Grant, bool) {
	for _, g := range n.grants(t) {
		if g.Src == src && g.Service == "ssh" {
			return g, true
		}
	}
	return control.Grant{}, false
}

// waitGrant waits until n holds (want) or no longer holds (!want) a
// grant of ssh to src, and returns it.
func (n *haNode) waitGrant(t *testing.T, src netip.Addr, want bool, within time.Duration) control.Grant {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		g, ok := n.grantOf(t, src)
		if ok == want {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: grant of ssh to %s present=%v after %v, want %v; grants %+v", n.name, src, ok, within, want, n.grants(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *haNode) status(t *testing.T) control.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterCmd)
	defer cancel()
	st, err := n.client().Status(ctx)
	if err != nil {
		t.Fatalf("status of %s: %v", n.name, err)
	}
	return st
}

// waitPeer waits until n sees peer in state.
func (n *haNode) waitPeer(t *testing.T, peer, state string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := n.status(t)
		if st.Cluster != nil {
			for _, p := range st.Cluster.Peers {
				if p.Name == peer && p.State == state {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not see %s %s within %v: %+v", n.name, peer, state, within, st.Cluster)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// operatorGrant grants ssh to src at n, as `knockwall grant` does.
func (n *haNode) operatorGrant(t *testing.T, src netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterCmd)
	defer cancel()
	if _, err := n.client().Grant(ctx, control.GrantRequest{Src: src.String(), Service: "ssh", For: "10m"}); err != nil {
		t.Fatalf("grant at %s: %v", n.name, err)
	}
}

// dial connects from the client to the VIP's protected port.
func (e *haEnv) dial(timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := e.h.Client.Do(func() (err error) {
		d := net.Dialer{Timeout: timeout}
		c, err = d.Dial("tcp", netip.AddrPortFrom(e.h.VIP, protectedPort).String())
		return err
	})
	return c, err
}

// expectOpen retries until the client's connect to the VIP echoes.
func (e *haEnv) expectOpen(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var errs []string
	for time.Now().Before(deadline) {
		c, err := e.dial(attemptTimeout)
		if err == nil {
			defer c.Close()
			if err := echo(c, "hello"); err != nil {
				t.Fatalf("connected to the VIP but: %v", err)
			}
			return
		}
		errs = append(errs, err.Error())
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("VIP:%d not open within %v: %s", protectedPort, within, strings.Join(errs, "; "))
}

// expectClosed requires the client's connect to the VIP refused.
func (e *haEnv) expectClosed(t *testing.T) {
	t.Helper()
	c, err := e.dial(dropTimeout)
	if err := closedErr(reject, c, err); err != nil {
		t.Fatalf("VIP:%d: %v", protectedPort, err)
	}
}

// knock knocks the VIP from the client.
func (e *haEnv) knock(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	args := append([]string{"knock", e.h.VIP.String()}, defaultSequence...)
	if out, err := e.h.Client.Run(ctx, e.bin, args...); err != nil {
		t.Fatalf("knockwall knock: %v %s", err, out)
	}
}

// moveVIP moves the VIP to router to.
func (e *haEnv) moveVIP(t *testing.T, to netns.NS) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if err := e.h.MoveVIP(ctx, to); err != nil {
		t.Fatalf("move the VIP: %v", err)
	}
}

func (e *haEnv) setLink(t *testing.T, node netns.NS, up bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if err := e.h.SetLink(ctx, node, up); err != nil {
		t.Fatalf("link of %s up=%v: %v", node, up, err)
	}
}

// sendToken sends tok by UDP from the client to the VIP's SPA port.
func (e *haEnv) sendToken(t *testing.T, tok []byte) {
	t.Helper()
	err := e.h.Client.Do(func() error {
		c, err := net.Dial("udp", netip.AddrPortFrom(e.h.VIP, haSPAPort).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(tok)
		return err
	})
	if err != nil {
		t.Fatalf("send token: %v", err)
	}
}

// TestClusterFailover: the client knocks at A; the VIP moves to B; the
// client's connect reaches B and opens, and B shows the grant with its
// origin (knockwall grants) and A as an alive peer (knockwall status).
func TestClusterFailover(t *testing.T) {
	e := newHAEnv(t, haOptions{})
	e.a().waitPeer(t, "b", "alive", clusterJoin)
	e.expectClosed(t) // at A, before any knock
	e.moveVIP(t, e.h.B)
	e.expectClosed(t) // at B too
	e.moveVIP(t, e.h.A)

	e.knock(t)
	if _, err := e.a().d.waitLog("grant", map[string]string{"src": e.h.Client4.String(), "service": "ssh"}, logTimeout); err != nil {
		t.Fatal(err)
	}
	g := e.b().waitGrant(t, e.h.Client4, true, clusterSync)
	if g.Origin != "a" || g.How != "sequence" {
		t.Fatalf("B's copy: %+v", g)
	}
	e.moveVIP(t, e.h.B)
	e.expectOpen(t, openWithin)
	if !e.b().d.has("grant", map[string]string{"src": e.h.Client4.String(), "origin": "a"}) {
		t.Error("B did not log the peer's grant with its origin")
	}
	out := runIn(t, e.h.B, e.bin, "grants", "--socket", e.b().socket)
	if f := field(out.stdout, e.h.Client4.String()); len(f) == 0 || f[len(f)-1] != "a" {
		t.Errorf("knockwall grants at B (want origin a):\n%s", out.stdout)
	}
	st := runIn(t, e.h.B, e.bin, "status", "--socket", e.b().socket)
	if f := field(st.stdout, "a"); len(f) < 3 || f[2] != "alive" {
		t.Errorf("knockwall status at B (want peer a alive):\n%s", st.stdout)
	}
}

// TestClusterTokenReplay: an SPA token used at A and replayed at B (the
// VIP moved) is refused there as a replay.
func TestClusterTokenReplay(t *testing.T) {
	e := newHAEnv(t, haOptions{})
	e.a().waitPeer(t, "b", "alive", clusterJoin)
	afterStartSecond()
	tok := newToken(t, e.spaKey, netip.Addr{})
	e.sendToken(t, tok)
	if _, err := e.a().d.waitLog("grant", spaGrant(e.h.Client4), logTimeout); err != nil {
		t.Fatal(err)
	}
	// The spent nonce reaches B with the grant; wait for the grant.
	e.b().waitGrant(t, e.h.Client4, true, clusterSync)
	deadline := time.Now().Add(clusterSync)
	for e.b().status(t).Cluster.Received["tokens"] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("B never received the spent token")
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.moveVIP(t, e.h.B)
	mark := e.b().d.mark()
	e.sendToken(t, tok)
	if _, err := e.b().d.waitLogFrom(mark, "token refused", tokenRefused(e.h.Client4, spa.ErrReplay), logTimeout); err != nil {
		t.Fatal(err)
	}
	if e.b().d.hasFrom(mark, "grant", spaGrant(e.h.Client4)) {
		t.Fatal("B granted a replayed token")
	}
}

// TestClusterRestartCatchUp: a node killed (no state saved) and restarted
// gets every live grant back from its peer: a knock's and an operator's.
func TestClusterRestartCatchUp(t *testing.T) {
	e := newHAEnv(t, haOptions{})
	e.a().waitPeer(t, "b", "alive", clusterJoin)
	e.knock(t)
	other := netip.MustParseAddr("10.90.0.201")
	e.a().operatorGrant(t, other)
	e.b().waitGrant(t, e.h.Client4, true, clusterSync)
	e.b().waitGrant(t, other, true, clusterSync)

	e.b().d.kill(t)
	e.start(t, e.h.B)
	if g := e.b().waitGrant(t, e.h.Client4, true, clusterRejoin); g.Origin != "a" {
		t.Fatalf("after the restart B holds %+v", g)
	}
	if g := e.b().waitGrant(t, other, true, clusterRejoin); g.Origin != "a" || g.How != "manual" {
		t.Fatalf("after the restart B holds %+v", g)
	}
	e.moveVIP(t, e.h.B)
	e.expectOpen(t, openWithin)
}

// TestClusterPartitionHeal: with B cut off the segment (A's status shows
// it suspect), a grant is made on each side; once the link is back, both
// hold both.
func TestClusterPartitionHeal(t *testing.T) {
	e := newHAEnv(t, haOptions{})
	e.a().waitPeer(t, "b", "alive", clusterJoin)
	e.setLink(t, e.h.B, false)
	e.a().waitPeer(t, "b", "suspect", clusterJoin)
	e.knock(t) // at A, which holds the VIP
	if _, err := e.a().d.waitLog("grant", map[string]string{"src": e.h.Client4.String(), "service": "ssh"}, logTimeout); err != nil {
		t.Fatal(err)
	}
	onB := netip.MustParseAddr("10.90.0.202")
	e.b().operatorGrant(t, onB)
	time.Sleep(time.Second)
	if _, ok := e.b().grantOf(t, e.h.Client4); ok {
		t.Fatal("A's grant crossed the partition")
	}
	e.setLink(t, e.h.B, true)
	if g := e.b().waitGrant(t, e.h.Client4, true, clusterHeal); g.Origin != "a" {
		t.Fatalf("B after the heal: %+v", g)
	}
	if g := e.a().waitGrant(t, onB, true, clusterHeal); g.Origin != "b" {
		t.Fatalf("A after the heal: %+v", g)
	}
}

// TestClusterWrongKey: a peer whose cluster key differs is ignored and
// logged: its grants never reach A, and it never becomes A's peer.
func TestClusterWrongKey(t *testing.T) {
	e := newHAEnv(t, haOptions{wrongKeyB: true})
	if _, err := e.a().d.waitLog("cluster: message refused: not sealed with this cluster's key (is cluster.key_file the same on every node?)", nil, clusterJoin); err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("10.90.0.203")
	e.b().operatorGrant(t, src)
	time.Sleep(3 * time.Second)
	if _, ok := e.a().grantOf(t, src); ok {
		t.Fatal("A took a grant from a peer with another key")
	}
	st := e.a().status(t)
	for _, p := range st.Cluster.Peers {
		if p.Name == "b" && p.State == "alive" {
			t.Fatalf("B is A's live peer: %+v", st.Cluster)
		}
	}
	if st.Cluster.Refused["key"] == 0 {
		t.Fatalf("no refusal counted: %+v", st.Cluster)
	}
}

// TestClusterRevoke: a revoke on B ends the grant on A, in the tracker and
// in the kernel: the client's connect to A is refused again.
func TestClusterRevoke(t *testing.T) {
	e := newHAEnv(t, haOptions{})
	e.a().waitPeer(t, "b", "alive", clusterJoin)
	e.knock(t)
	e.expectOpen(t, openWithin)
	e.b().waitGrant(t, e.h.Client4, true, clusterSync)
	ctx, cancel := context.WithTimeout(context.Background(), clusterCmd)
	defer cancel()
	if n, err := e.b().client().Revoke(ctx, e.h.Client4.String(), "ssh"); err != nil || n != 1 {
		t.Fatalf("revoke at B: %d, %v", n, err)
	}
	e.a().waitGrant(t, e.h.Client4, false, clusterSync)
	e.expectClosed(t)
}

// TestClusterStartFailsCleanly: a cluster that cannot start (its address
// taken) or a cluster key others may read stops the start with an error
// and no rule changed.
func TestClusterStartFailsCleanly(t *testing.T) {
	e := newEnv(t, envOptions{noDaemon: true})
	dir := t.TempDir()
	key := filepath.Join(dir, "cluster.key")
	runOK(t, e.bin, "keygen", "--cluster", key)
	var taken net.PacketConn
	if err := e.pair.Server.Do(func() (err error) {
		taken, err = net.ListenPacket("udp", netip.AddrPortFrom(e.pair.Server4, clusterPort).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	base, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "knockwall.yaml")
	if err := os.WriteFile(cfg, append(base, fmt.Sprintf("cluster:\n  bind: %s:%d\n  key_file: %q\n", e.pair.Server4, clusterPort, key)...), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(what, want string) {
		t.Helper()
		before := e.knockwallRules(t)
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		out, err := e.pair.Server.Run(ctx, e.bin, "run", "-c", cfg)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), want) {
			t.Fatalf("%s: %v, want exit status 1 and %q\n%s", what, err, want, out)
		}
		t.Logf("%s: %s", what, bytes.TrimSpace(out[bytes.LastIndexByte(bytes.TrimSpace(out), '\n')+1:]))
		if after := e.knockwallRules(t); !slices.Equal(after, before) {
			t.Errorf("%s: the failed start changed the rules:\n%s", what, strings.Join(after, "\n"))
		}
	}
	start("address taken", "cluster")
	taken.Close()
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	start("a readable key", "cluster.key_file")
}
