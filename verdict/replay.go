package verdict

import (
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/internal/replay"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
)

// replays is the engine's memory of accepted tokens: one SPA cache and one
// fwknop cache per service, by service id, so that whoever holds one
// service's key can fill only that service's memory, never refuse another
// service's tokens as "cache full". Each cache holds up to
// tracker.max_nonces keys.
//
// The per-packet path reads the map through an atomic pointer, without a
// lock and without allocating; the janitor and the rules' owner replace it
// (copy on write) under mu.
type replays struct {
	mu   sync.Mutex
	byID atomic.Pointer[map[uint64]*serviceReplay]
	max  int
	// start is the unix second the engine was made in: the not-before of
	// a service whose memory was not restored.
	start int64
}

// serviceReplay is one service's memory.
type serviceReplay struct {
	spa atomic.Pointer[spa.ReplayCache]    // nil until the service takes SPA tokens
	fw  atomic.Pointer[fwknop.ReplayCache] // nil until it takes fwknop packets
	// notBefore: tokens stamped at or before this unix second are
	// refused. A process that starts with an empty memory sets it to its
	// start second, since the process before may have accepted any token
	// stamped up to then (in that very second too); one that restored the
	// memory of the process before takes that process's not-before.
	notBefore atomic.Int64
}

// ServiceReplay is a service's replay memory as handed from one process to
// the next over a clean restart: every key still in its window, and the
// not-before second that went with them.
type ServiceReplay struct {
	ID        uint64
	NotBefore int64
	SPA       []replay.Entry[[spa.NonceSize]byte]
	Fwknop    []replay.Entry[[fwknop.ReplayKeySize]byte]
}

func newReplays(max int, now time.Time) *replays {
	r := &replays{max: max, start: now.Unix()}
	m := map[uint64]*serviceReplay{}
	r.byID.Store(&m)
	return r
}

// sync gives every service of set that takes tokens its memory, keeping
// the memory of services that stay, and of services that went until it
// is empty (a service added back by a later reload finds its keys).
func (r *replays) sync(set *rules.Set) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.byID.Load()
	var m map[uint64]*serviceReplay
	for i := range set.Services {
		s := &set.Services[i]
		if s.SPA == nil && s.Fwknop == nil {
			continue
		}
		sr := old[s.ID]
		if sr == nil {
			if m == nil {
				m = maps.Clone(old)
			}
			sr = &serviceReplay{}
			sr.notBefore.Store(r.start)
			m[s.ID] = sr
		}
		if s.SPA != nil && sr.spa.Load() == nil {
			sr.spa.Store(spa.NewReplayCache(r.max))
		}
		if s.Fwknop != nil && sr.fw.Load() == nil {
			sr.fw.Store(fwknop.NewReplayCache(r.max))
		}
	}
	if m != nil {
		r.byID.Store(&m)
	}
}

// of returns the memory of service id; nil only if sync never saw it.
func (r *replays) of(id uint64) *serviceReplay { return (*r.byID.Load())[id] }

// purge forgets keys whose window has passed, and the memory of services
// set no longer has once it is empty.
func (r *replays) purge(set *rules.Set, now int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.byID.Load()
	var gone []uint64
	for id, sr := range old {
		n := 0
		if c := sr.spa.Load(); c != nil {
			c.Purge(now)
			n += c.Len()
		}
		if c := sr.fw.Load(); c != nil {
			c.Purge(now)
			n += c.Len()
		}
		if _, ok := set.ServiceByID(id); !ok && n == 0 {
			gone = append(gone, id)
		}
	}
	if len(gone) > 0 {
		m := maps.Clone(old)
		for _, id := range gone {
			delete(m, id)
		}
		r.byID.Store(&m)
	}
}

func (r *replays) len() int {
	n := 0
	for _, sr := range *r.byID.Load() {
		if c := sr.spa.Load(); c != nil {
			n += c.Len()
		}
		if c := sr.fw.Load(); c != nil {
			n += c.Len()
		}
	}
	return n
}

// SealReplay ends the acceptance of tokens (every later one is refused
// with replay.ErrSealed; a replay is still told as one) and returns each
// service's memory: every token this process accepted that could still
// pass its timestamp check at now. Call it once, at a clean stop, before
// the memory is saved for the next process; it allocates.
func (e *Engine) SealReplay(now time.Time) []ServiceReplay {
	r := e.replay
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []ServiceReplay
	for id, sr := range *r.byID.Load() {
		s := ServiceReplay{ID: id, NotBefore: sr.notBefore.Load()}
		if c := sr.spa.Load(); c != nil {
			s.SPA = c.Seal(now.UnixNano())
		}
		if c := sr.fw.Load(); c != nil {
			s.Fwknop = c.Seal(now.UnixNano())
		}
		out = append(out, s)
	}
	return out
}

// RestoreReplay puts back the memory a service had in the process before
// (SealReplay there), before any packet is judged. When every key still in
// its window finds room, the service takes that process's not-before
// instead of this one's start second: a token the process before
// accepted is refused as a replay, and a client whose clock is behind is
// not refused for the restart. Otherwise it returns why, and the service
// keeps this process's start second (the keys that found room stay).
func (e *Engine) RestoreReplay(s ServiceReplay, now time.Time) error {
	r := e.replay
	r.mu.Lock()
	defer r.mu.Unlock()
	sr := (*r.byID.Load())[s.ID]
	if sr == nil {
		return fmt.Errorf("verdict: service %d takes no tokens", s.ID)
	}
	at := now.UnixNano()
	if c := sr.spa.Load(); c != nil {
		for _, en := range s.SPA {
			if !c.Restore(en.Key, en.ForgetAt, at) {
				return fmt.Errorf("verdict: no room for the %d spa nonces of the process before (tracker.max_nonces %d)", len(s.SPA), r.max)
			}
		}
	}
	if c := sr.fw.Load(); c != nil {
		for _, en := range s.Fwknop {
			if !c.Restore(en.Key, en.ForgetAt, at) {
				return fmt.Errorf("verdict: no room for the %d fwknop packets of the process before (tracker.max_nonces %d)", len(s.Fwknop), r.max)
			}
		}
	}
	sr.notBefore.Store(s.NotBefore)
	return nil
}
