// Package keyfile reads secret key files the way every key of knockwall's
// is read: only a regular file (no symlink, no FIFO), only one that no one
// but its owner may access, only one owned by an administrator or by the
// user running knockwall. What "no one but its owner" means is each
// system's own notion: the mode bits on Linux, macOS and the BSDs, the
// file's access control list on Windows (see checkACL).
package keyfile

import (
	"errors"
	"fmt"
	"io"
)

// ErrPerm is returned for a key file that others may access, or that
// another user owns.
var ErrPerm = errors.New("key file is accessible by group or others")

// Load reads the key file at path as Read does and parses it with parse;
// a parse error names the file.
func Load[K any](path string, max int64, parse func([]byte) (K, error)) (K, error) {
	content, err := Read(path, max)
	if err != nil {
		var zero K
		return zero, err
	}
	k, err := parse(content)
	if err != nil {
		return k, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// Read returns the first max bytes of the key file at path, or why it
// refuses the file.
func Read(path string, max int64) ([]byte, error) { return ReadAs("key file", path, max) }

// ReadAs is Read for a secret file that is not a key (a client config that
// names sequences and keys): what names it in errors.
func ReadAs(what, path string, max int64) ([]byte, error) {
	f, err := open(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s: not a regular file", what, path)
	}
	if err := ownerOnly(what, path, f, st); err != nil {
		return nil, err
	}
	content, err := io.ReadAll(io.LimitReader(f, max))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return content, nil
}
