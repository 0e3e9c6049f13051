package fwknop

import "github.com/knockwall/knockwall/internal/replay"

// ReplayCache remembers the replay keys (packet digests) of accepted
// packets until they could no longer pass the timestamp check anyway (see
// ForgetAt); see replay.Cache.
type ReplayCache = replay.Cache[[ReplayKeySize]byte]

// NewReplayCache holds at most max keys. Add returns ErrReplay for a key
// still remembered and ErrReplayFull when there is no room.
func NewReplayCache(max int) *ReplayCache {
	return replay.New[[ReplayKeySize]byte](max, ErrReplay, ErrReplayFull)
}
