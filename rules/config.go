package rules

import (
	_ "embed"
	"time"
)

// ExampleYAML is the example configuration shipped with the binary. It is what
// `knockwall run --example` runs and what `knockwall example` prints.
//
//go:embed example.yaml
var ExampleYAML []byte

// Config is the user's configuration as decoded from YAML and environment
// overrides. Field tags are the user's contract: keep the names.
type Config struct {
	Queue    QueueConfig              `mapstructure:"queue" yaml:"queue"`
	Firewall FirewallConfig           `mapstructure:"firewall" yaml:"firewall"`
	Log      LogConfig                `mapstructure:"log" yaml:"log"`
	Tracker  TrackerConfig            `mapstructure:"tracker" yaml:"tracker"`
	Services map[string]ServiceConfig `mapstructure:"services" yaml:"services"`
	Control  ControlConfig            `mapstructure:"control" yaml:"control"`
	Metrics  MetricsConfig            `mapstructure:"metrics" yaml:"metrics"`
	State    StateConfig              `mapstructure:"state" yaml:"state"`
	Cluster  ClusterConfig            `mapstructure:"cluster" yaml:"cluster"`
}

// QueueConfig selects the NFQUEUE numbers knockwall reads.
type QueueConfig struct {
	Num    int `mapstructure:"num" yaml:"num"`         // first queue number
	Count  int `mapstructure:"count" yaml:"count"`     // queues, one worker each
	MaxLen int `mapstructure:"max_len" yaml:"max_len"` // kernel queue length per queue
}

// FirewallConfig controls the static rules.
type FirewallConfig struct {
	// Manage makes `run` install the static rules on start and remove exactly
	// those on exit.
	Manage bool `mapstructure:"manage" yaml:"manage"`
	// KeepGuard leaves the guard (and the rule that clears knockwall's
	// mark bits) in place when knockwall stops cleanly, so protected ports
	// stay closed between a stop and the next start. On by default;
	// `knockwall rules remove` removes everything.
	KeepGuard bool `mapstructure:"keep_guard" yaml:"keep_guard"`
	// TrustedInterfaces are the interfaces whose traffic knockwall neither
	// diverts nor guards (a router's LAN, for example br-lan). Every other
	// interface is protected, one that appears later (PPPoE, LTE,
	// WireGuard) included; lo is always trusted.
	TrustedInterfaces []string `mapstructure:"trusted_interfaces" yaml:"trusted_interfaces"`
	// Interfaces is refused: a list of the interfaces to protect fails
	// open for every interface it does not name. It is decoded only so
	// that a config setting it is told about TrustedInterfaces.
	Interfaces []string `mapstructure:"interfaces" yaml:"interfaces"`
	// Backend is auto, nftables or iptables. auto picks nftables when the
	// kernel answers nf_tables netlink.
	Backend string `mapstructure:"backend" yaml:"backend"`
	// FastPath (nftables only) mirrors grants and knock progress into
	// kernel sets, so that SYNs that need no decision never reach
	// knockwall. false judges every SYN in user space.
	FastPath bool `mapstructure:"fast_path" yaml:"fast_path"`
	// OwnedTable (nftables only) makes knockwall's table owned and
	// persistent where the kernel can (Linux 6.9 and later): no other
	// process can change or delete it, `nft flush ruleset` passes it by,
	// and it stays in place across a restart or a crash. false keeps an
	// ordinary table, which the daemon puts back when others change it.
	OwnedTable bool `mapstructure:"owned_table" yaml:"owned_table"`
	// AcceptMark and RejectMark are the packet mark values knockwall sets on
	// packets it accepts or wants rejected; MarkMask selects the bits of the
	// packet mark that belong to knockwall. Change them only if the host
	// already uses these mark bits.
	AcceptMark int64 `mapstructure:"accept_mark" yaml:"accept_mark"`
	RejectMark int64 `mapstructure:"reject_mark" yaml:"reject_mark"`
	MarkMask   int64 `mapstructure:"mark_mask" yaml:"mark_mask"`
}

// LogConfig selects the log level and format.
type LogConfig struct {
	Level  string `mapstructure:"level" yaml:"level"`
	Format string `mapstructure:"format" yaml:"format"`
}

// TrackerConfig bounds the per-source state.
type TrackerConfig struct {
	MaxPending int `mapstructure:"max_pending" yaml:"max_pending"`
	MaxGrants  int `mapstructure:"max_grants" yaml:"max_grants"`
	// MaxNonces bounds each service's SPA replay cache, and its fwknop
	// one. When a cache is full of keys still inside their window, that
	// service's new tokens are refused (never old keys forgotten); other
	// services' caches are not touched.
	MaxNonces int `mapstructure:"max_nonces" yaml:"max_nonces"`
	// KnockRate is how many knock attempts (packets to knock ports and
	// rotating ranges; SPA tokens are not charged) one source may make per
	// second, KnockBurst how many at once. A new source starts with
	// tracker.NewBucketKnocks, not the burst. 0 turns the limit off.
	KnockRate  float64 `mapstructure:"knock_rate" yaml:"knock_rate"`
	KnockBurst int     `mapstructure:"knock_burst" yaml:"knock_burst"`
}

// ServiceConfig is one protected service. A service opens by a plain
// sequence, a single-packet authorization token (SPA), a rotating sequence
// derived from a key, or several of these.
type ServiceConfig struct {
	Ports       []int         `mapstructure:"ports" yaml:"ports"`
	Sequence    []string      `mapstructure:"sequence" yaml:"sequence"`
	StepTimeout time.Duration `mapstructure:"step_timeout" yaml:"step_timeout"`
	OpenFor     time.Duration `mapstructure:"open_for" yaml:"open_for"`
	Closed      string        `mapstructure:"closed" yaml:"closed"`
	// Forward protects forwarded connections (a router's port forward, or
	// routed hosts) instead of this host's own sockets.
	Forward bool `mapstructure:"forward" yaml:"forward"`
	// Hosts are the routed (un-NATed) destinations a forward service
	// covers, as prefixes; its ports are theirs. Without hosts, a forward
	// service's ports are the ports on this host's own addresses that a
	// port forward (DNAT) sends on, as the client uses them.
	Hosts []string `mapstructure:"hosts" yaml:"hosts"`
	// Connections makes grants one-shot: a grant closes after this many
	// new connections, or at open_for, whichever comes first. 0: any
	// number until open_for.
	Connections int `mapstructure:"connections" yaml:"connections"`
	// PlainGrants bounds the grants the service's plain sequence may hold
	// at once. A plain sequence travels in clear and its knocks can be
	// spoofed, so its grants never take the room kept for SPA, fwknop,
	// rotating-sequence and operator grants. 0: half of
	// tracker.max_grants, shared evenly between the services that have a
	// plain sequence.
	PlainGrants int `mapstructure:"plain_grants" yaml:"plain_grants"`
	// FirstConnectWithin ends a grant from the plain sequence early when
	// its source opens no connection within it, so grants of spoofed
	// sources that never connect free their room. 0: the default.
	FirstConnectWithin time.Duration `mapstructure:"first_connect_within" yaml:"first_connect_within"`
	SPA                SPAConfig     `mapstructure:"spa" yaml:"spa"`
	Fwknop             FwknopConfig  `mapstructure:"fwknop" yaml:"fwknop"`
	Rotate             RotateConfig  `mapstructure:"rotate" yaml:"rotate"`
}

// SPAConfig enables single-packet authorization for a service: set key_file.
type SPAConfig struct {
	// Port is the UDP port that takes SPA datagrams; 0 takes tokens only in
	// SYNs to the protected ports.
	Port int `mapstructure:"port" yaml:"port"`
	// KeyFile holds the key clients use (base64, mode 0600).
	KeyFile string `mapstructure:"key_file" yaml:"key_file"`
	// KeyFiles are further keys still accepted, for rotating keys.
	KeyFiles []string `mapstructure:"key_files" yaml:"key_files"`
	// MaxSkew is the largest difference accepted between a token's
	// timestamp and this host's clock.
	MaxSkew time.Duration `mapstructure:"max_skew" yaml:"max_skew"`
	// RequireSource refuses tokens that do not name the source address
	// they come from: a token seen on the wire then opens nothing for
	// anyone else. Clients behind NAT must bind to their public address.
	RequireSource bool `mapstructure:"require_source" yaml:"require_source"`
}

// FwknopConfig accepts the stock fwknop client's SPA packets for a service:
// set key_file.
type FwknopConfig struct {
	// Port takes fwknop's packets: UDP (fwknop's default transport) and
	// TCP SYNs (fwknop -P tcpraw, which aims at this port unless given
	// -p). Packets in a SYN to a protected port are taken too.
	Port int `mapstructure:"port" yaml:"port"`
	// KeyFile is what `fwknop --key-gen` prints (KEY_BASE64 and
	// HMAC_KEY_BASE64 lines), mode 0600.
	KeyFile string `mapstructure:"key_file" yaml:"key_file"`
	// MaxAge is the largest difference accepted between a packet's
	// timestamp and this host's clock (fwknopd's MAX_SPA_PACKET_AGE).
	MaxAge time.Duration `mapstructure:"max_age" yaml:"max_age"`
	// RequireSource refuses packets whose allow-IP is 0.0.0.0 (fwknop -s):
	// a packet seen on the wire then opens nothing for anyone but the
	// address it names (fwknopd's REQUIRE_SOURCE_ADDRESS). Clients behind
	// NAT must name their public address (fwknop -R or -a).
	RequireSource bool `mapstructure:"require_source" yaml:"require_source"`
}

// RotateConfig derives the service's knock sequence from a key and the time
// period: set length.
type RotateConfig struct {
	KeyFile string        `mapstructure:"key_file" yaml:"key_file"` // default: spa.key_file
	Length  int           `mapstructure:"length" yaml:"length"`
	Period  time.Duration `mapstructure:"period" yaml:"period"`
	Range   []int         `mapstructure:"range" yaml:"range"` // [low, high] TCP ports, reserved for knocking
}

// Defaults returns the values a key takes when neither the file nor the
// environment sets it. Services have no defaults beyond ServiceDefaults.
func Defaults() Config {
	return Config{
		Queue: QueueConfig{Num: 0, Count: 1, MaxLen: DefaultQueueMaxLen},
		Firewall: FirewallConfig{Manage: true, KeepGuard: true, Backend: BackendAuto, FastPath: true, OwnedTable: true,
			AcceptMark: DefaultAcceptMark, RejectMark: DefaultRejectMark, MarkMask: DefaultMarkMask},
		Log: LogConfig{Level: "info", Format: "text"},
		Tracker: TrackerConfig{
			MaxPending: DefaultMaxPending, MaxGrants: DefaultMaxGrants, MaxNonces: DefaultMaxNonces,
			KnockRate: DefaultKnockRate, KnockBurst: DefaultKnockBurst,
		},
		Control: ControlConfig{Socket: DefaultControlSocket},
		State:   StateConfig{File: DefaultStateFile},
		Cluster: ClusterConfig{MaxClockSkew: DefaultMaxClockSkew},
	}
}

// ServiceDefaults are the values of a service's keys that the service leaves out.
func ServiceDefaults() ServiceConfig {
	return ServiceConfig{
		StepTimeout: DefaultStepTimeout, OpenFor: DefaultOpenFor, Closed: ClosedReject,
		FirstConnectWithin: DefaultFirstConnectWithin,
		SPA:                SPAConfig{MaxSkew: DefaultMaxSkew},
		Fwknop:             FwknopConfig{Port: DefaultFwknopPort, MaxAge: DefaultFwknopMaxAge},
		Rotate:             RotateConfig{Period: DefaultRotatePeriod},
	}
}
