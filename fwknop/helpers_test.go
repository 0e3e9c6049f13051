package fwknop

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/fwknop/fwknoptest"
)

// vector is one packet made by the real fwknop client (testdata/vectors.txt,
// written by testdata/make-vectors.sh).
type vector struct {
	name, expect, cmd string
	made              int64
	packet            []byte
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	loaded, err := fwknoptest.Load("testdata/vectors.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) < 5 {
		t.Fatalf("only %d vectors in testdata/vectors.txt", len(loaded))
	}
	vs := make([]vector, len(loaded))
	for i, v := range loaded {
		vs[i] = vector{name: v.Name, expect: v.Expect, cmd: v.Cmd, made: v.Made, packet: v.Packet}
	}
	return vs
}

func vectorByName(t testing.TB, name string) vector {
	t.Helper()
	for _, v := range loadVectors(t) {
		if v.name == name {
			return v
		}
	}
	t.Fatalf("no vector %q", name)
	return vector{}
}

func loadKey(t testing.TB, file string) *Key {
	t.Helper()
	b, err := os.ReadFile("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The test encoder: what fwknop's client does (lib/fko_encode.c,
// lib/fko_encryption.c, lib/fko_hmac.c), written from the format in doc.go
// so the tests can build packets the client will not (other message types,
// bad digests, keys that do not match).

// b64 is fwknop's base64: standard alphabet, '=' stripped.
func b64(s string) string { return base64.RawStdEncoding.EncodeToString([]byte(s)) }

// fields builds the text before the digest.
func fields(user string, ts int64, typ int, msg string, extra ...string) string {
	s := "1234567890123456:" + b64(user) + ":" + strconv.FormatInt(ts, 10) + ":3.0.0:" + strconv.Itoa(typ) + ":" + b64(msg)
	for _, e := range extra {
		s += ":" + e
	}
	return s
}

// withDigest appends fwknop's default digest, base64 SHA-256.
func withDigest(enc string) string {
	sum := sha256.Sum256([]byte(enc))
	return enc + ":" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// seal encrypts plaintext under encKey with a fixed salt, strips the
// prefix and appends the HMAC under macKey: a packet as the client sends it.
func seal(t testing.TB, encKey, macKey []byte, plaintext string) []byte {
	t.Helper()
	pad := 16 - len(plaintext)%16
	return sealRaw(t, encKey, macKey, append([]byte(plaintext), bytes.Repeat([]byte{byte(pad)}, pad)...))
}

// sealRaw is seal for a plaintext already padded to whole blocks.
func sealRaw(t testing.TB, encKey, macKey, pt []byte) []byte {
	t.Helper()
	k, err := NewKey(encKey, macKey)
	if err != nil {
		t.Fatal(err)
	}
	salt := []byte("8bytesal")
	var key [32]byte
	var iv [16]byte
	k.deriveKeyIV(salt, &key, &iv)
	blk, err := aes.NewCipher(key[:])
	if err != nil {
		t.Fatal(err)
	}
	ct := make([]byte, len(pt))
	cipher.NewCBCEncrypter(blk, iv[:]).CryptBlocks(ct, pt)
	raw := append(append([]byte("Salted__"), salt...), ct...)
	text := base64.RawStdEncoding.EncodeToString(raw)
	if !strings.HasPrefix(text, saltPrefix) {
		t.Fatalf("ciphertext does not start with %s", saltPrefix)
	}
	m := hmac.New(sha256.New, macKey)
	m.Write([]byte(text))
	return []byte(text[len(saltPrefix):] + base64.RawStdEncoding.EncodeToString(m.Sum(nil)))
}

var (
	testEnc = bytes.Repeat([]byte{0x11}, 32)
	testMAC = bytes.Repeat([]byte{0x22}, 64)
)

func testKey(t testing.TB) *Key {
	t.Helper()
	k, err := NewKey(testEnc, testMAC)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func timeUnix(s int64) time.Time { return time.Unix(s, 0) }
