package verdict

import (
	"errors"
	"time"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/spa"
	"github.com/knockwall/knockwall/tracker"
)

// Errors of MarkUsed.
var (
	// ErrTokenKind: the method spends no token, or the key is of the
	// wrong size for it.
	ErrTokenKind = errors.New("verdict: not an SPA nonce or fwknop digest")
	// ErrNoMemory: the service takes no tokens of that kind here.
	ErrNoMemory = errors.New("verdict: the service takes no such tokens here")
)

// MarkUsed records a token spent elsewhere (a cluster peer) in service
// id's replay memory until `until`, so that it is refused here too:
// method is tracker.MethodSPA (key: the nonce) or tracker.MethodFwknop
// (key: the packet's SHA-256). A key already remembered is no error.
func (e *Engine) MarkUsed(id uint64, method tracker.Method, key []byte, until, now time.Time) error {
	mem := e.replay.of(id)
	var err error
	switch {
	case method == tracker.MethodSPA && len(key) == spa.NonceSize:
		var c *spa.ReplayCache
		if mem != nil {
			c = mem.spa.Load()
		}
		if c == nil {
			return ErrNoMemory
		}
		if err = c.Add([spa.NonceSize]byte(key), until.UnixNano(), now.UnixNano()); errors.Is(err, spa.ErrReplay) {
			err = nil
		}
	case method == tracker.MethodFwknop && len(key) == fwknop.ReplayKeySize:
		var c *fwknop.ReplayCache
		if mem != nil {
			c = mem.fw.Load()
		}
		if c == nil {
			return ErrNoMemory
		}
		if err = c.Add([fwknop.ReplayKeySize]byte(key), until.UnixNano(), now.UnixNano()); errors.Is(err, fwknop.ErrReplay) {
			err = nil
		}
	default:
		return ErrTokenKind
	}
	return err
}
