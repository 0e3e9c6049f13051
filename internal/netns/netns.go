// Package netns makes throwaway network namespaces for tests and demos: a
// server and a client namespace joined by one veth pair, with fixed private
// addresses that exist only inside them. It shells out to iproute2 for
// setup and uses setns(2) to run Go code inside a namespace, so sockets can
// be opened there by the calling process itself.
//
// Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Addresses of a Pair. They exist only on the veth inside the namespaces,
// and are fixed so that configs and docs can name them.
const (
	ServerAddr4  = "10.77.0.1"
	ClientAddr4  = "10.77.0.2"
	Client2Addr4 = "10.77.0.3" // only with Config.SecondClient
	ServerAddr6  = "fd00:77::1"
	ClientAddr6  = "fd00:77::2"
	Client2Addr6 = "fd00:77::3" // only with Config.SecondClient
)

const (
	prefixLen4 = 24
	prefixLen6 = 64

	// DefaultPrefix starts every namespace and interface name of a Pair.
	DefaultPrefix = "kw"
	// maxIfName is IFNAMSIZ-1.
	maxIfName = 15
	// runDir is where `ip netns add` bind-mounts named namespaces.
	runDir = "/run/netns"
	// closeTimeout bounds Close, which has no context of its own.
	closeTimeout = 10 * time.Second
	// joinPolls and joinPollEvery bound the wait for IPv6 multicast joins.
	joinPolls     = 200
	joinPollEvery = 10 * time.Millisecond
)

// ErrNotRoot is returned by Check when the process cannot manage namespaces.
var ErrNotRoot = errors.New("netns: needs root")

// Check reports whether this process can create namespaces: it must be root
// and iproute2's ip must be on PATH.
func Check() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("netns: iproute2: %w", err)
	}
	return nil
}

// NS is a named network namespace as `ip netns` knows it.
type NS string

// Path is the bind mount that keeps the namespace alive.
func (n NS) Path() string { return filepath.Join(runDir, string(n)) }

// Do runs fn with the calling goroutine's OS thread inside n, then moves the
// thread back. Sockets that fn creates stay in n for their whole life, so a
// listener or connection made here can be used from any goroutine later.
// fn must not rely on goroutines it starts: they run on other threads, in
// the original namespace. If the thread cannot be moved back, it stays
// locked, so the Go runtime ends it instead of reusing it.
func (n NS) Do(fn func() error) (err error) {
	target, err := os.Open(n.Path())
	if err != nil {
		return fmt.Errorf("netns %s: open: %w", n, err)
	}
	defer target.Close()

	runtime.LockOSThread()
	// thread-self, not self: other threads of this process may be elsewhere.
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: open current namespace: %w", n, err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: setns: %w", n, err)
	}
	// Restore in a defer so that a panic in fn, recovered further up,
	// cannot leave a reusable thread in the wrong namespace.
	defer func() {
		if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
			err = errors.Join(err, fmt.Errorf("netns %s: restore namespace (thread discarded): %w", n, rerr))
			return // stay locked: the runtime kills the thread with the goroutine
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// Command returns `ip netns exec n name args...` ready to start. ip execs
// name in place, so the process's PID is name's own and may be signalled
// directly.
func (n NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", string(n), name}, args...)...)
}

// Run runs name inside n and returns its combined output. A non-zero exit
// is an error that carries the output.
func (n NS) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", string(n), name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("netns %s: %s %s: %w: %s", n, name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Config shapes a Pair.
type Config struct {
	// Prefix starts the names; DefaultPrefix when empty. With the random
	// suffix, interface names must fit IFNAMSIZ.
	Prefix string
	// SecondClient adds Client2Addr4 and Client2Addr6 (Pair.Client2v4/v6) to the client side,
	// a second source to bind to. The IPv6 one is deprecated (preferred
	// lifetime 0) so that it is never picked as a default source address.
	SecondClient bool
}

// Pair is a server and a client namespace joined by a veth pair.
type Pair struct {
	ID       string // prefix + 6 random hex digits, unique per Pair
	Server   NS
	Client   NS
	ServerIf string // veth end inside Server
	ClientIf string // veth end inside Client

	Server4, Client4, Client2v4 netip.Addr // Client2v4 is valid only with SecondClient
	Server6, Client6, Client2v6 netip.Addr // Client2v6 is valid only with SecondClient
}

// newID is prefix (DefaultPrefix when empty) and 6 random hex digits: the
// name of one test run's namespaces and links. It returns the prefix used.
func newID(prefix string) (id, used string, err error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", prefix, fmt.Errorf("netns: random id: %w", err)
	}
	return prefix + hex.EncodeToString(b[:]), prefix, nil
}

// NewPair creates the namespaces and the link between them, addresses
// assigned and every link up. On error nothing is left behind. The caller
// must Close the Pair.
func NewPair(ctx context.Context, cfg Config) (*Pair, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	id, prefix, err := newID(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	p := &Pair{
		ID:       id,
		Server:   NS(id + "-srv"),
		Client:   NS(id + "-cli"),
		ServerIf: id + "-s",
		ClientIf: id + "-c",
		Server4:  netip.MustParseAddr(ServerAddr4),
		Client4:  netip.MustParseAddr(ClientAddr4),
		Server6:  netip.MustParseAddr(ServerAddr6),
		Client6:  netip.MustParseAddr(ClientAddr6),
	}
	if cfg.SecondClient {
		p.Client2v4 = netip.MustParseAddr(Client2Addr4)
		p.Client2v6 = netip.MustParseAddr(Client2Addr6)
	}
	if len(p.ServerIf) > maxIfName {
		return nil, fmt.Errorf("netns: prefix %q too long for interface names", prefix)
	}
	if err := p.setup(ctx, cfg); err != nil {
		return nil, errors.Join(err, p.Close())
	}
	return p, nil
}

func (p *Pair) setup(ctx context.Context, cfg Config) error {
	steps := [][]string{
		{"netns", "add", string(p.Server)},
		{"netns", "add", string(p.Client)},
		{"link", "add", p.ServerIf, "netns", string(p.Server), "type", "veth", "peer", "name", p.ClientIf, "netns", string(p.Client)},
		{"-n", string(p.Server), "link", "set", "lo", "up"},
		{"-n", string(p.Client), "link", "set", "lo", "up"},
		// Links up before addresses: IPv6 addresses added to a down link
		// join their solicited-node group late, and the first neighbour
		// solicitation for them goes unanswered (a 1s stall).
		{"-n", string(p.Server), "link", "set", p.ServerIf, "up"},
		{"-n", string(p.Client), "link", "set", p.ClientIf, "up"},
		{"-n", string(p.Server), "addr", "add", prefixed(p.Server4, prefixLen4), "dev", p.ServerIf},
		{"-n", string(p.Client), "addr", "add", prefixed(p.Client4, prefixLen4), "dev", p.ClientIf},
		// nodad: usable at once instead of tentative for a second or two.
		{"-n", string(p.Server), "addr", "add", prefixed(p.Server6, prefixLen6), "dev", p.ServerIf, "nodad"},
		{"-n", string(p.Client), "addr", "add", prefixed(p.Client6, prefixLen6), "dev", p.ClientIf, "nodad"},
	}
	if cfg.SecondClient {
		// Added after the first ones, so the IPv4 one is secondary and
		// never a default source; the IPv6 one is deprecated for the same
		// reason, but still usable when bound explicitly.
		steps = append(steps,
			[]string{"-n", string(p.Client), "addr", "add", prefixed(p.Client2v4, prefixLen4), "dev", p.ClientIf},
			[]string{"-n", string(p.Client), "addr", "add", prefixed(p.Client2v6, prefixLen6), "dev", p.ClientIf, "nodad", "preferred_lft", "0"},
		)
	}
	for _, args := range steps {
		if err := ip(ctx, args...); err != nil {
			return err
		}
	}
	// The kernel joins an address's solicited-node multicast group from a
	// work queue after `ip addr add` returns; a neighbour solicitation
	// that arrives before that is dropped and retried only a second
	// later. Wait for the joins so the first IPv6 packet goes through.
	joins := []struct {
		ns    NS
		dev   string
		addrs []netip.Addr
	}{
		{p.Server, p.ServerIf, []netip.Addr{p.Server6}},
		{p.Client, p.ClientIf, []netip.Addr{p.Client6, p.Client2v6}},
	}
	for _, j := range joins {
		if err := waitJoined(ctx, j.ns, j.dev, j.addrs); err != nil {
			return err
		}
	}
	return nil
}

// waitJoined polls until dev in ns has joined the solicited-node group of
// every valid address in addrs.
func waitJoined(ctx context.Context, ns NS, dev string, addrs []netip.Addr) error {
	var want []string
	for _, a := range addrs {
		if a.IsValid() {
			want = append(want, solicitedNode(a).String())
		}
	}
	var out []byte
	for range joinPolls {
		var err error
		out, err = exec.CommandContext(ctx, "ip", "-n", string(ns), "-6", "maddr", "show", "dev", dev).CombinedOutput()
		if err != nil {
			return fmt.Errorf("netns: ip -n %s maddr: %w: %s", ns, err, bytes.TrimSpace(out))
		}
		missing := false
		for _, w := range want {
			if !bytes.Contains(out, []byte(w)) {
				missing = true
				break
			}
		}
		if !missing {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("netns: %s %s: waiting for multicast joins %v: %w", ns, dev, want, ctx.Err())
		case <-time.After(joinPollEvery):
		}
	}
	return fmt.Errorf("netns: %s %s: multicast groups %v not joined after %v:\n%s", ns, dev, want, joinPolls*joinPollEvery, out)
}

// solicitedNode is ff02::1:ffXX:XXXX for the low 24 bits of a.
func solicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 0x01, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]})
}

// Close deletes both namespaces; the veth pair goes with them. Processes
// still running inside keep their namespace alive until they exit, so stop
// them first. Close may be called more than once.
func (p *Pair) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	var errs []error
	for _, n := range []NS{p.Client, p.Server} {
		if _, err := os.Stat(n.Path()); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := ip(ctx, "netns", "delete", string(n)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netns: ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func prefixed(a netip.Addr, bits int) string {
	return netip.PrefixFrom(a, bits).String()
}

// New creates one empty namespace named prefix plus a random suffix, with
// lo up, for tests of kernel state (firewall rules) that need no traffic.
// The caller must Delete it.
func New(ctx context.Context, prefix string) (NS, error) {
	if err := Check(); err != nil {
		return "", err
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("netns: random id: %w", err)
	}
	n := NS(prefix + hex.EncodeToString(b[:]))
	if err := ip(ctx, "netns", "add", string(n)); err != nil {
		return "", err
	}
	if err := ip(ctx, "-n", string(n), "link", "set", "lo", "up"); err != nil {
		return "", errors.Join(err, n.Delete())
	}
	return n, nil
}

// Delete deletes n. Deleting a namespace that is gone is not an error.
func (n NS) Delete() error {
	if _, err := os.Stat(n.Path()); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return ip(ctx, "netns", "delete", string(n))
}
