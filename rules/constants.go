package rules

import "time"

// Named tunables and their defaults.
const (
	DefaultQueueMaxLen = 4096
	DefaultMaxPending  = 65536
	DefaultMaxGrants   = 16384
	DefaultStepTimeout = 5 * time.Second
	DefaultOpenFor     = 30 * time.Second
	// DefaultFirstConnectWithin is how long a grant from a plain sequence
	// waits for its first connection before it ends.
	DefaultFirstConnectWithin = 10 * time.Second
	DefaultMaxNonces          = 65536
	DefaultKnockRate          = 10.0
	DefaultKnockBurst         = 20
	// DefaultMaxSkew is how far a token's timestamp may be from our clock.
	DefaultMaxSkew = 30 * time.Second
	// MaxSkewLimit caps max_skew: a wider window only widens replay
	// exposure, and the replay cache holds nonces for as long.
	MaxSkewLimit = time.Hour
	// DefaultFwknopPort is fwknop's SPA port.
	DefaultFwknopPort = 62201
	// DefaultFwknopMaxAge is fwknopd's default MAX_SPA_PACKET_AGE.
	DefaultFwknopMaxAge = 120 * time.Second
	// DefaultRotatePeriod is how long a rotating sequence lives.
	DefaultRotatePeriod = 30 * time.Second
	// MinRotateBits is the least a rotating service's space of possible
	// sequences may hold, in bits: a guesser who knocks one sequence per
	// try must expect 2^(MinRotateBits-1) tries per period.
	MinRotateBits = 32
	// MinDuration is the shortest step_timeout or open_for accepted.
	MinDuration = time.Millisecond

	// Mark bits: two bits of their own, so knockwall changes nothing else of
	// a packet's mark (OpenWrt's mwan3 uses 0x3f00, kube-proxy 0x4000 and
	// 0x8000). Accept and reject differ so that one static REJECT rule and
	// one static guard rule can tell them apart.
	DefaultAcceptMark = 0x10000000
	DefaultRejectMark = 0x20000000
	DefaultMarkMask   = 0x30000000

	// MaxServices bounds the services of one configuration: each protected
	// port keeps a 64-bit mask of the services that cover it.
	MaxServices = 64
	// MaxSequence bounds the length of one knock sequence.
	MaxSequence = 32
	// MaxConnections bounds services.NAME.connections.
	MaxConnections = 65535
	// MaxQueues bounds queue.count.
	MaxQueues = 64

	// Firewall backends.
	BackendAuto     = "auto"
	BackendNftables = "nftables"
	BackendIptables = "iptables"

	// ClosedReject answers like a closed port (TCP RST, ICMP port unreachable for UDP).
	ClosedReject = "reject"
	// ClosedDrop silently discards.
	ClosedDrop = "drop"
)

// IP protocol numbers the rules speak of.
const (
	ProtoTCP uint8 = 6
	ProtoUDP uint8 = 17
)
