package rules

import (
	"errors"
	"fmt"
)

// ErrInvalid is wrapped by every validation error, so callers can tell a bad
// configuration (exit status 2) from other failures.
var ErrInvalid = errors.New("invalid configuration")

// KeyError is a validation error that names the offending key.
type KeyError struct {
	Key string // e.g. "services.ssh.sequence[2]"
	Msg string
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Msg }

// Unwrap lets errors.Is(err, ErrInvalid) hold.
func (e *KeyError) Unwrap() error { return ErrInvalid }

func keyErr(key, format string, args ...any) error {
	return &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)}
}
