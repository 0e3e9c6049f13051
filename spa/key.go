package spa

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"strings"
	"sync"

	"github.com/knockwall/knockwall/internal/keyfile"
)

// MinKeySize is the shortest key accepted, in bytes.
const MinKeySize = 32

// maxKeyFile bounds how much of a key file is read.
const maxKeyFile = 4096

// keyIDDomain separates key ids from every other use of a key's hash.
const keyIDDomain = "knockwall key id v1\x00"

var sha256New = sha256.New

// ErrKeyPerm is returned for key files that group or others may access.
var ErrKeyPerm = keyfile.ErrPerm

// ErrKeyShort is returned for keys shorter than MinKeySize.
var ErrKeyShort = fmt.Errorf("key is shorter than %d bytes", MinKeySize)

// Key is a shared secret with its id. The id is derived from the secret, so a
// client and a server that hold the same key agree on it without
// configuration, and a server holding several keys (during a rotation) finds
// the right one at once.
type Key struct {
	ID     uint16
	secret []byte
	// macs pools HMAC states so that verification does not allocate.
	macs sync.Pool
}

type macState struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// NewKey wraps a secret of at least MinKeySize bytes.
func NewKey(secret []byte) (*Key, error) {
	if len(secret) < MinKeySize {
		return nil, ErrKeyShort
	}
	s := append([]byte(nil), secret...)
	id := sha256.Sum256(append([]byte(keyIDDomain), s...))
	k := &Key{ID: binary.BigEndian.Uint16(id[:2]), secret: s}
	k.macs.New = func() any { return &macState{h: hmac.New(sha256New, k.secret)} }
	return k, nil
}

// ParseKey decodes a key file's content: the key in base64 (standard or URL
// alphabet, padded or not); blank lines and lines starting with # are ignored.
func ParseKey(content []byte) (*Key, error) {
	var b64 strings.Builder
	for line := range strings.SplitSeq(string(content), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b64.WriteString(line)
	}
	s := strings.TrimRight(b64.String(), "=")
	secret, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		if secret, err = base64.RawURLEncoding.DecodeString(s); err != nil {
			return nil, fmt.Errorf("key is not base64: %w", err)
		}
	}
	return NewKey(secret)
}

// ReadKeyFile reads and parses a key file, refusing what keyfile.Read
// refuses (a symlink, anything but a regular file, a file group or others
// may access, one another user owns): a key others can read is no secret.
func ReadKeyFile(path string) (*Key, error) {
	return keyfile.Load(path, maxKeyFile, ParseKey)
}

// WriteNewKeyFile writes a fresh random key of MinKeySize bytes to path with
// mode 0600. It refuses to overwrite an existing file.
func WriteNewKeyFile(path string) (*Key, error) {
	secret := make([]byte, MinKeySize)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	k, err := NewKey(secret)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%s already exists; not overwriting a key", path)
		}
		return nil, err
	}
	content := fmt.Sprintf("# knockwall key, id %d. Keep it secret: mode 0600.\n%s\n", k.ID, base64.StdEncoding.EncodeToString(secret))
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return k, f.Close()
}

// Equal reports whether k and o hold the same secret, in constant time.
func (k *Key) Equal(o *Key) bool {
	return k != nil && o != nil && hmac.Equal(k.secret, o.secret)
}

// Fingerprint names the key without revealing it: an HMAC under the key of
// a fixed label, so two fingerprints are equal exactly when the keys are
// (the state file compares a service's keys across a restart with it).
func (k *Key) Fingerprint() [32]byte {
	m := hmac.New(sha256New, k.secret)
	m.Write([]byte("knockwall key fingerprint v1"))
	return [32]byte(m.Sum(nil))
}
