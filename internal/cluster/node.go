//go:build !knockwall_omit_cluster

package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/knockwall/knockwall/internal/lograte"
)

// Built reports whether this build has the cluster (builds with the
// knockwall_omit_cluster tag leave it out).
const Built = true

// Label is memberlist's label of knockwall's messages: a memberlist
// cluster of another program on the same addresses is not taken for a
// peer, even with the same key.
const Label = "knockwall"

// Timing, where memberlist's LAN defaults do not fit.
const (
	// DefaultPushPullEvery is how often a node exchanges its whole state
	// with a random peer (memberlist's LAN default is 30 s).
	DefaultPushPullEvery = 10 * time.Second
	// DefaultRejoinEvery is how often the configured peers that are not
	// members are joined again: memberlist never contacts a node it
	// declared dead, so without this a healed partition stayed split.
	DefaultRejoinEvery = 2 * time.Second
	// tcpTimeout bounds memberlist's TCP connects and exchanges (its LAN
	// default is 10 s): a join of a peer that is down holds up a stop by
	// at most this long.
	tcpTimeout = 3 * time.Second
	// retransmitMult scales how many times a broadcast is sent
	// (memberlist: mult × log10(nodes+1), at least mult).
	retransmitMult = 4
)

// NodeConfig is a Node's configuration.
type NodeConfig struct {
	Core Config // Send is set by Start
	// Bind is address:port of the UDP and TCP sockets; Advertise, when
	// set, what peers are told.
	Bind, Advertise string
	// Peers are address:port of nodes to join.
	Peers []string
	// Key seals every message (KeySize bytes).
	Key []byte
	// Timing; zero takes the defaults.
	PushPullEvery, RejoinEvery, GossipEvery, ProbeEvery time.Duration
}

// Node is this daemon's place in the cluster.
type Node struct {
	*Core
	ml    *memberlist.Memberlist
	q     *memberlist.TransmitLimitedQueue
	peers []string
	cfg   NodeConfig

	mu    sync.Mutex
	known map[string]*peer // every other node seen

	wasAlive   map[string]bool // the members alive at join's last call (loop's only)
	probeEvery time.Duration

	stop chan struct{}
	wg   sync.WaitGroup
}

// Start opens the sockets and returns; the peers are joined in the
// background at once, and those not reached again every RejoinEvery (a
// peer that is down must not hold up the start).
func Start(cfg NodeConfig) (*Node, error) {
	if len(cfg.Key) != KeySize {
		return nil, fmt.Errorf("cluster: a key of %d bytes, want %d", len(cfg.Key), KeySize)
	}
	if cfg.PushPullEvery == 0 {
		cfg.PushPullEvery = DefaultPushPullEvery
	}
	if cfg.RejoinEvery == 0 {
		cfg.RejoinEvery = DefaultRejoinEvery
	}
	if cfg.Core.Clock == nil {
		cfg.Core.Clock = SystemClock{}
	}
	n := &Node{peers: cfg.Peers, known: map[string]*peer{}, stop: make(chan struct{})}
	n.q = &memberlist.TransmitLimitedQueue{NumNodes: func() int { return n.ml.NumMembers() }, RetransmitMult: retransmitMult}
	cfg.Core.Send = n.send
	n.cfg = cfg
	n.Core = NewCore(cfg.Core)

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Core.Name
	host, port, err := splitHostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("cluster.bind: %w", err)
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = "", port
	if cfg.Advertise != "" {
		if mc.AdvertiseAddr, mc.AdvertisePort, err = splitHostPort(cfg.Advertise); err != nil {
			return nil, fmt.Errorf("cluster.advertise: %w", err)
		}
	}
	mc.SecretKey = cfg.Key
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	mc.Label = Label
	mc.PushPullInterval = cfg.PushPullEvery
	mc.TCPTimeout = tcpTimeout
	if cfg.GossipEvery > 0 {
		mc.GossipInterval = cfg.GossipEvery
	}
	if cfg.ProbeEvery > 0 {
		mc.ProbeInterval = cfg.ProbeEvery
	}
	n.probeEvery = mc.ProbeInterval
	mc.Delegate = delegate{n}
	mc.Events = events{n}
	mc.Ping = pings{n}
	mc.Logger = log.New(&logWriter{n: n, refused: lograte.Limiter{Every: RefusedLogEvery}}, "", 0)
	if n.ml, err = memberlist.Create(mc); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n.wg.Add(1)
	go n.loop()
	return n, nil
}

func splitHostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, err
	}
	return h, port, nil
}

// send gives a local event to every live peer at once (a UDP message
// each, sealed like the rest), and to memberlist's broadcast queue, which
// sends it again with its gossip: a grant made just before a failover is
// on the backup within a round trip rather than a gossip interval, and a
// lost datagram is made up for.
func (n *Node) send(m Message) {
	b := m.Append(nil)
	n.q.QueueBroadcast(broadcast(b))
	self := n.cfg.Core.Name
	for _, p := range n.ml.Members() {
		if p.Name != self && p.State == memberlist.StateAlive {
			if err := n.ml.SendBestEffort(p, b); err != nil {
				n.cfg.Core.Log.Debug("cluster: direct send failed; gossip carries it", "peer", p.Name, "err", err)
			}
		}
	}
}

// loop joins the configured peers that are not members, and forgets
// lapsed events.
func (n *Node) loop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.RejoinEvery)
	defer t.Stop()
	n.join()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			n.Purge(n.cfg.Core.Clock.Now())
			n.join()
		}
	}
}

// join joins the configured peers that are not members, and exchanges the
// whole state with every member that is alive again since the last call: a
// short partition, in which memberlist only suspected the peer, ends with
// no join, and the broadcasts sent meanwhile were spent on nobody. A join
// is a push/pull with each node joined. Only loop calls it.
func (n *Node) join() {
	self := n.ml.LocalNode()
	member := map[string]bool{}
	alive := map[string]bool{}
	var targets []string
	states := n.states()
	for _, m := range n.ml.Members() {
		member[m.Address()] = true
		if m.Name == self.Name || states[m.Name].State != StateAlive {
			continue
		}
		alive[m.Name] = true
		if !n.wasAlive[m.Name] {
			targets = append(targets, m.Address())
		}
	}
	n.wasAlive = alive
	for _, p := range n.peers {
		if !member[p] && p != self.Address() {
			targets = append(targets, p)
		}
	}
	if len(targets) == 0 {
		return
	}
	if got, err := n.ml.Join(targets); err != nil {
		n.cfg.Core.Log.Debug("cluster: peers not reached; trying again", "peers", fmt.Sprint(targets), "reached", got, "err", err)
	}
}

// Close leaves the cluster (peers stop probing it at once) and closes
// the sockets.
func (n *Node) Close() error {
	select {
	case <-n.stop:
		return nil
	default:
	}
	close(n.stop)
	n.wg.Wait()
	_ = n.ml.Leave(time.Second)
	return n.ml.Shutdown()
}

// Wait returns once a node named name is a member, or ctx ends.
func (n *Node) Wait(ctx context.Context, name string) error {
	for {
		for _, m := range n.ml.Members() {
			if m.Name == name {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type broadcast []byte

func (b broadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b broadcast) Message() []byte                       { return b }
func (b broadcast) Finished()                             {}

// delegate carries knockwall's messages on memberlist.
type delegate struct{ n *Node }

func (d delegate) NodeMeta(int) []byte { return nil }

// NotifyMsg takes a broadcast. memberlist reuses buf: Decode copies.
func (d delegate) NotifyMsg(buf []byte) { d.n.Receive(buf) }

func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.n.q.GetBroadcasts(overhead, limit)
}

// LocalState is this node's every live event, for a push/pull.
func (d delegate) LocalState(bool) []byte {
	m := d.n.State()
	return m.Append(nil)
}

// MergeRemoteState takes a peer's every live event.
func (d delegate) MergeRemoteState(buf []byte, _ bool) { d.n.Receive(buf) }

// logWriter turns memberlist's log lines into slog records, and counts
// the messages it refused for want of the key.
type logWriter struct {
	n       *Node
	refused lograte.Limiter
}

// Lines memberlist writes when a message is not sealed with our key (or
// not labelled as knockwall's).
// Compared in lower case.
var badKeyMarks = [][]byte{[]byte("decrypt packet failed"), []byte("no installed keys could decrypt"), []byte("unacceptable label"),
	[]byte("message authentication failed")}

func (w *logWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	lower := bytes.ToLower(p)
	for _, m := range badKeyMarks {
		if bytes.Contains(lower, m) {
			w.n.RefusedKey.Add(1)
			if w.refused.Allow(w.n.cfg.Core.Clock.Now()) {
				w.n.cfg.Core.Log.Warn("cluster: message refused: not sealed with this cluster's key (is cluster.key_file the same on every node?)",
					"detail", line, "logged", "at most once per "+RefusedLogEvery.String())
			}
			return len(p), nil
		}
	}
	w.n.cfg.Core.Log.Debug("memberlist", "msg", line)
	return len(p), nil
}
