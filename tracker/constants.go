package tracker

import "time"

// Named tunables of the tracker.
const (
	// defaultShards is the shard count for large tables; a power of two.
	defaultShards = 16

	// purgeEvery bounds how often a full grant table is swept for lapsed
	// grants on the packet path.
	purgeEvery = 100 * time.Millisecond

	// NewBucketKnocks is what a knock-rate bucket holds when it is made:
	// min(NewBucketKnocks, knock_burst) knocks, not the full burst. It is
	// one sequence's worth, so a new client completes a normal sequence
	// (3–5 knocks, MaxSequence at most) at once, and an address gains
	// little by being new.
	NewBucketKnocks = 8

	// Prefix48Hosts is how many hosts' knock budget one IPv6 /48 holds in
	// all. Every IPv6 knock is charged to its /64's bucket and, at
	// 1/Prefix48Hosts of the price, to its /48's; a /64 that its /48
	// cannot pay for gets no bucket. So hopping through the 65536 /64s of
	// a /48 buys at most Prefix48Hosts times one host's budget, while many
	// hosts of one site still knock side by side.
	Prefix48Hosts = 16

	// debtCellsPerSlot sizes a shard's memory of evicted buckets' debts
	// (16 bytes a cell): at least this many cells per bucket slot, rounded
	// up to a power of two. More cells make it costlier for spoofed
	// sources to push a debt out of the memory.
	debtCellsPerSlot = 1

	// SYNRetransmitWindow is how long after a one-shot grant let a
	// connection in a SYN from the same source port still counts as that
	// connection's retransmission rather than a new connection. A client
	// that gets no answer resends its SYN after its initial retransmission
	// timeout, doubling each time: Linux (RFC 6298's 1 s initial RTO) at 1,
	// 3 and 7 s after the first. A SYN later than that from the same port is
	// a new connection (a port-preserving NAT reuses ports, and so can an
	// on-path spoofer).
	SYNRetransmitWindow = 7 * time.Second
)
