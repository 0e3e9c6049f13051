package rules

import "math"

// Sequence strength against an attacker who can send any stream of knocks
// and then try the protected port, and who sees nothing of a source's knock
// progress (knock ports answer like closed ports, and the metrics do not
// tell them apart). Every packet that is not a source's next knock resets
// its progress, TCP and UDP alike, so a stream completes a sequence only if
// it holds the sequence's knocks back to back; one stream of N^k + k - 1
// packets (a de Bruijn sequence) holds every sequence of k knocks from N,
// so a guess costs about one packet, not k.
//
// SweepBits is log2 of the packets that attacker needs in the worst case:
//
//	bits = min(16·k + π, 16 + log2(2·|d| + 1) + π)
//
// where k is the number of knocks, 16 bits is a knock's port, and π is what
// guessing the protocols costs: 1 bit when every knock has the same
// protocol (all TCP or all UDP), k bits when they are mixed. The second
// term counts only for a sequence whose ports step by a constant d (any
// sequence of two knocks does): an attacker sweeps every starting port with
// steps 0, ±1, ±2, ... in turn, so a sequence in order (7000, 7001, 7002 is
// an ordinary ascending scan) or with a round step (7000, 8000, 9000) is
// found long before the first term.
//
// The order of the knocks is part of what the first term counts. Once an
// attacker knows which knocks a sequence holds (a sniffer sees them: plain
// sequences travel in clear), the order alone is left: OrderBits.
const (
	portBits = 16
	// MinSweepBits is the strength below which `config check` warns.
	MinSweepBits = 32
)

// SweepBits is how many bits seq is worth against a sweeping attacker (see
// above). A sequence without knocks is worth 0.
func SweepBits(seq []Knock) float64 {
	k := len(seq)
	if k == 0 {
		return 0
	}
	proto := 1.0
	for _, kn := range seq[1:] {
		if kn.Proto != seq[0].Proto {
			proto = float64(k)
		}
	}
	bits := portBits*float64(k) + proto
	if k < 2 {
		return bits
	}
	d := int(seq[1].Port) - int(seq[0].Port)
	for i := 2; i < k; i++ {
		if int(seq[i].Port)-int(seq[i-1].Port) != d {
			return bits
		}
	}
	return math.Min(bits, portBits+math.Log2(2*math.Abs(float64(d))+1)+proto)
}

// RotatingBits is what a rotating sequence of length knocks from a range of
// width ports is worth within one period: its knocks are derived from a key
// and carry no pattern, so only the first term counts (all TCP).
func RotatingBits(length, width int) float64 {
	return float64(length) * math.Log2(float64(width))
}

// OrderBits is log2 of the distinct orders of seq's knocks: what is left to
// guess for an attacker who knows which knocks seq holds but not their
// order, k!/(m1!·m2!·...) for knocks repeated m1, m2, ... times.
func OrderBits(seq []Knock) float64 {
	bits := 0.0
	seen := map[Knock]int{}
	for i, kn := range seq {
		seen[kn]++
		bits += math.Log2(float64(i+1)) - math.Log2(float64(seen[kn]))
	}
	return bits
}
