package fwknop

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"

	"github.com/knockwall/knockwall/internal/keyfile"
)

// maxKeyFile bounds how much of a key file is read.
const maxKeyFile = 16 << 10

// ErrKeyPerm is returned for key files that group or others may access, or
// that belong to another user.
var ErrKeyPerm = keyfile.ErrPerm

// Key is the pair of secrets one fwknop client shares with the server: the
// Rijndael key and the HMAC key, as `fwknop --key-gen` prints them.
type Key struct {
	enc []byte
	mac []byte
	// states pools the HMAC state and the scratch buffers, so that Verify
	// does not allocate before the MAC has passed.
	states sync.Pool
}

// state is one verification's working memory.
type state struct {
	h    hash.Hash
	sum  [sha256.Size]byte
	text [maxText]byte       // prefix + base64 ciphertext
	ct   [maxCipherText]byte // decoded, then decrypted in place
	tmp  [maxMsgB64]byte     // decoded inner base64 fields
	iv   [blockSize]byte     // here, not on the stack: cipher.NewCBCDecrypter keeps it
}

// NewKey makes a key from the raw Rijndael key (MinKeySize to MaxKeySize
// bytes) and the raw HMAC key (MinHMACKeySize to MaxHMACKeySize bytes).
func NewKey(enc, mac []byte) (*Key, error) {
	if len(enc) < MinKeySize || len(enc) > MaxKeySize {
		return nil, fmt.Errorf("KEY_BASE64 must decode to %d to %d bytes, got %d", MinKeySize, MaxKeySize, len(enc))
	}
	if len(mac) < MinHMACKeySize || len(mac) > MaxHMACKeySize {
		return nil, fmt.Errorf("HMAC_KEY_BASE64 must decode to %d to %d bytes, got %d", MinHMACKeySize, MaxHMACKeySize, len(mac))
	}
	k := &Key{enc: bytes.Clone(enc), mac: bytes.Clone(mac)}
	k.states.New = func() any { return &state{h: hmac.New(sha256.New, k.mac)} }
	return k, nil
}

// ParseKey reads the keys from a file's content in the form `fwknop
// --key-gen` prints:
//
//	KEY_BASE64: <base64>
//	HMAC_KEY_BASE64: <base64>
//
// The access.conf and .fwknoprc spelling, `KEY_BASE64  <base64>` with
// blanks instead of the colon, is accepted too. Blank lines, lines starting
// with # and other variables (SOURCE, OPEN_PORTS, …) are ignored; the
// passphrase forms KEY and HMAC_KEY are refused, since ignoring them would
// silently use another key.
func ParseKey(content []byte) (*Key, error) {
	var enc, mac string
	var haveEnc, haveMAC bool
	for i, line := range strings.Split(string(content), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		// "NAME: value" (fwknop --key-gen) or "NAME value" (access.conf).
		name, value := line, ""
		if n, v, ok := strings.Cut(line, ":"); ok && !strings.ContainsAny(n, " \t") {
			name, value = n, v
		} else if j := strings.IndexAny(line, " \t"); j >= 0 {
			name, value = line[:j], line[j:]
		}
		value = strings.TrimSpace(value)
		switch name {
		case "KEY_BASE64":
			if haveEnc {
				return nil, fmt.Errorf("line %d: KEY_BASE64 given twice", i+1)
			}
			enc, haveEnc = value, true
		case "HMAC_KEY_BASE64":
			if haveMAC {
				return nil, fmt.Errorf("line %d: HMAC_KEY_BASE64 given twice", i+1)
			}
			mac, haveMAC = value, true
		case "KEY", "HMAC_KEY":
			return nil, fmt.Errorf("line %d: %s (a passphrase) is not supported; use keys from fwknop --key-gen (KEY_BASE64, HMAC_KEY_BASE64)", i+1, name)
		}
	}
	if !haveEnc {
		return nil, errors.New("no KEY_BASE64 line")
	}
	if !haveMAC {
		return nil, errors.New("no HMAC_KEY_BASE64 line (knockwall requires fwknop's HMAC, fwknop --use-hmac)")
	}
	e, err := decodeKey(enc)
	if err != nil {
		return nil, fmt.Errorf("KEY_BASE64: %w", err)
	}
	m, err := decodeKey(mac)
	if err != nil {
		return nil, fmt.Errorf("HMAC_KEY_BASE64: %w", err)
	}
	return NewKey(e, m)
}

func decodeKey(s string) ([]byte, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	return b, nil
}

// ReadKeyFile reads and parses a key file, refusing a symlink, anything
// but a regular file, a file that group or others may access, and a file
// owned by a user other than root or the one running knockwall: a key
// others can read is no secret. Note that `fwknop -K FILE` writes with the
// process umask; chmod 600 what it wrote.
func ReadKeyFile(path string) (*Key, error) {
	return keyfile.Load(path, maxKeyFile, ParseKey)
}

// Fingerprint names the key pair without revealing it: an HMAC under the
// HMAC key of a fixed label and the SHA-256 of the Rijndael key, so two
// fingerprints are equal exactly when both keys are (the state file
// compares a service's keys across a restart with it).
func (k *Key) Fingerprint() [32]byte {
	enc := sha256.Sum256(k.enc)
	m := hmac.New(sha256.New, k.mac)
	m.Write([]byte("knockwall fwknop key fingerprint v1\x00"))
	m.Write(enc[:])
	return [32]byte(m.Sum(nil))
}
