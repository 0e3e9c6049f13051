package cluster

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/knockwall/knockwall/internal/keyfile"
)

// KeySize is the cluster key's size: AES-256-GCM, which memberlist seals
// every message with.
const KeySize = 32

// maxKeyFile bounds what is read of a key file.
const maxKeyFile = 4096

// ErrKey is wrapped by every refusal of a key file's content.
var ErrKey = errors.New("not a cluster key")

// ParseKey reads a key file's content: lines starting with '#' are
// comments; the one other line is KeySize bytes in standard base64.
func ParseKey(content []byte) ([]byte, error) {
	var key []byte
	for line := range bytes.Lines(content) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if key != nil {
			return nil, fmt.Errorf("%w: more than one key line", ErrKey)
		}
		k, err := base64.StdEncoding.DecodeString(string(line))
		if err != nil {
			return nil, fmt.Errorf("%w: not base64: %v", ErrKey, err)
		}
		if len(k) != KeySize {
			return nil, fmt.Errorf("%w: %d bytes, want %d (knockwall keygen --cluster FILE writes one)", ErrKey, len(k), KeySize)
		}
		key = k
	}
	if key == nil {
		return nil, fmt.Errorf("%w: no key line", ErrKey)
	}
	return key, nil
}

// LoadKey reads the key file at path, refusing it as every key file of
// knockwall's is refused (group or others may read it, a symlink, another
// owner).
func LoadKey(path string) ([]byte, error) {
	return keyfile.Load(path, maxKeyFile, ParseKey)
}

// WriteNewKeyFile writes a fresh random key to path, mode 0600; it never
// overwrites a file.
func WriteNewKeyFile(path string) error {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; not overwriting a key", path)
		}
		return err
	}
	content := "# knockwall cluster key: the same on every node. Keep it secret: mode 0600.\n" + base64.StdEncoding.EncodeToString(key) + "\n"
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}
