package spa

import "github.com/knockwall/knockwall/internal/replay"

// ReplayCache remembers the nonces of accepted tokens until they could no
// longer pass the timestamp check anyway; see replay.Cache.
type ReplayCache = replay.Cache[[NonceSize]byte]

// NewReplayCache holds at most max nonces. Add returns ErrReplay for a
// nonce still remembered and ErrReplayFull when there is no room.
func NewReplayCache(max int) *ReplayCache {
	return replay.New[[NonceSize]byte](max, ErrReplay, ErrReplayFull)
}
