package rules

import (
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// Defaults and bounds of the cluster section.
const (
	// DefaultMaxClockSkew is how far a peer's clock may be from ours
	// before its messages are refused: expiries and token windows travel
	// as absolute times.
	DefaultMaxClockSkew = 5 * time.Second
	// MaxClockSkewLimit caps cluster.max_clock_skew: a wider bound lets a
	// peer's clock stretch every grant it sends by as much.
	MaxClockSkewLimit = time.Minute
	// MaxPeers bounds cluster.peers.
	MaxPeers = 64
	// MaxNodeName bounds cluster.name, which travels in every message.
	MaxNodeName = 64
)

// ClusterConfig shares grants and used tokens with peers (a router pair
// behind keepalived, a server group behind a load balancer). Off unless
// bind is set.
type ClusterConfig struct {
	// Name is this node's name among its peers; empty: the host name.
	Name string `mapstructure:"name" yaml:"name"`
	// Bind is address:port of the cluster's UDP and TCP sockets; empty
	// turns the cluster off.
	Bind string `mapstructure:"bind" yaml:"bind"`
	// Advertise is address:port told to peers, when it is not bind's
	// (NAT, or bind on 0.0.0.0).
	Advertise string `mapstructure:"advertise" yaml:"advertise"`
	// Peers are address:port of nodes to join at start and after a
	// partition.
	Peers []string `mapstructure:"peers" yaml:"peers"`
	// KeyFile holds the cluster's key (32 random bytes, base64, mode
	// 0600): every message is encrypted and authenticated with it.
	KeyFile string `mapstructure:"key_file" yaml:"key_file"`
	// MaxClockSkew is the largest difference accepted between a peer's
	// clock and ours.
	MaxClockSkew time.Duration `mapstructure:"max_clock_skew" yaml:"max_clock_skew"`
}

// Enabled reports whether the cluster section turns sharing on.
func (c *ClusterConfig) Enabled() bool { return c.Bind != "" }

// Equal reports whether c and o are the same configuration.
func (c *ClusterConfig) Equal(o *ClusterConfig) bool {
	return c.Name == o.Name && c.Bind == o.Bind && c.Advertise == o.Advertise && slices.Equal(c.Peers, o.Peers) &&
		c.KeyFile == o.KeyFile && c.MaxClockSkew == o.MaxClockSkew
}

var nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// validateCluster checks the cluster section.
func validateCluster(c ClusterConfig) error {
	if !c.Enabled() {
		if c.KeyFile != "" || len(c.Peers) > 0 || c.Advertise != "" {
			return keyErr("cluster.bind", "is required when cluster.key_file, peers or advertise is set (the cluster is off without it)")
		}
		return nil
	}
	if n := c.Name; n != "" && (len(n) > MaxNodeName || !nodeName.MatchString(n)) {
		return keyErr("cluster.name", "must be 1 to %d letters, digits, '.', '_' or '-', starting with a letter or digit, got %q", MaxNodeName, n)
	}
	if err := checkHostPort(c.Bind, true); err != nil {
		return keyErr("cluster.bind", "must be address:port with a numeric address (e.g. 10.0.0.1:7946): %v", err)
	}
	if c.Advertise != "" {
		if err := checkHostPort(c.Advertise, false); err != nil {
			return keyErr("cluster.advertise", "must be address:port with a numeric, specific address: %v", err)
		}
	}
	if len(c.Peers) > MaxPeers {
		return keyErr("cluster.peers", "at most %d peers, got %d", MaxPeers, len(c.Peers))
	}
	for i, p := range c.Peers {
		if err := checkHostPort(p, false); err != nil {
			return keyErr("cluster.peers["+strconv.Itoa(i)+"]", "must be address:port with a numeric, specific address: %v", err)
		}
	}
	switch k := c.KeyFile; {
	case k == "":
		return keyErr("cluster.key_file", "is required: every cluster message is encrypted and authenticated with it (knockwall keygen --cluster FILE writes one)")
	case !filepath.IsAbs(k) || filepath.Clean(k) != k:
		return keyErr("cluster.key_file", "must be an absolute, clean path, got %q", k)
	}
	if s := c.MaxClockSkew; s <= 0 || s > MaxClockSkewLimit {
		return keyErr("cluster.max_clock_skew", "must be more than 0 and at most %s, got %s", MaxClockSkewLimit, s)
	}
	return nil
}

// checkHostPort checks that s is a numeric address and a port from 1 to
// 65535; the unspecified address (0.0.0.0, ::) only when anyOK.
func checkHostPort(s string, anyOK bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return &net.AddrError{Err: "port must be a number from 1 to 65535", Addr: port}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	if a.IsUnspecified() && !anyOK {
		return &net.AddrError{Err: "the unspecified address names no peer", Addr: host}
	}
	if a.Zone() != "" {
		return &net.AddrError{Err: "no zone", Addr: host}
	}
	return nil
}
