package spa

import (
	"crypto/hmac"
	"encoding/binary"
	"time"
)

// rotateDomain separates rotating-sequence derivation from token MACs (which
// start with "KW" and a version byte).
const rotateDomain = "knockwall rotate v1\x00"

// Period is the index of the period of length period that unix time ts falls
// in.
func Period(ts int64, period time.Duration) int64 {
	p := int64(period / time.Second)
	if p <= 0 {
		return 0
	}
	if ts < 0 {
		return (ts - p + 1) / p
	}
	return ts / p
}

// RotatingSequence derives the TCP knock ports of service for period index
// idx: n ports in [lo, hi], no port equal to the one before it. Both ends
// compute it from the shared key alone:
//
//	block_c = HMAC-SHA256(key, "knockwall rotate v1\x00" || service || 0x00 || idx (8 bytes) || c (4 bytes))
//
// for c = 0, 1, …; each block gives eight 32-bit big-endian words w, and each
// w gives the candidate port lo + w mod (hi-lo+1). A candidate equal to the
// previous port is skipped. The result is appended to dst.
func RotatingSequence(k *Key, service string, idx int64, n int, lo, hi uint16, dst []uint16) []uint16 {
	span := uint32(hi) - uint32(lo) + 1
	if n <= 0 || hi < lo || (span == 1 && n > 1) {
		return dst
	}
	msg := make([]byte, 0, len(rotateDomain)+len(service)+1+8+4)
	msg = append(msg, rotateDomain...)
	msg = append(msg, service...)
	msg = append(msg, 0)
	msg = binary.BigEndian.AppendUint64(msg, uint64(idx))
	start := len(dst)
	for c := uint32(0); len(dst)-start < n; c++ {
		m := hmac.New(sha256New, k.secret)
		m.Write(binary.BigEndian.AppendUint32(msg, c))
		block := m.Sum(nil)
		for i := 0; i+4 <= len(block) && len(dst)-start < n; i += 4 {
			port := uint16(uint32(lo) + binary.BigEndian.Uint32(block[i:])%span)
			if len(dst) > start && dst[len(dst)-1] == port {
				continue
			}
			dst = append(dst, port)
		}
	}
	return dst
}
