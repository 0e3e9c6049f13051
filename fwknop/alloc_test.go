package fwknop

import (
	"bytes"
	"errors"
	"testing"

	"github.com/knockwall/knockwall/internal/race"
)

// verifyPath is one path through Verify: a packet and the error it must
// get. One table drives the allocation assertions and the benchmarks.
type verifyPath struct {
	name   string
	packet func(tb testing.TB) []byte
	want   error
	// allocs is the most allocations the path may make: 0 on every
	// refusal a packet without the HMAC key can reach.
	allocs float64
}

var verifyPaths = []verifyPath{
	// After the HMAC, AES: crypto/aes.NewCipher and cipher.NewCBCDecrypter
	// each allocate, since the key is derived from each packet's salt.
	{"valid", func(tb testing.TB) []byte { return vectorByName(tb, "access_tcp22").packet }, nil, 2},
	{"bad hmac", func(tb testing.TB) []byte {
		b := bytes.Clone(vectorByName(tb, "access_tcp22").packet)
		b[len(b)-1] ^= 1
		return b
	}, ErrBadHMAC, 0},
	{"other key", func(tb testing.TB) []byte { return vectorByName(tb, "hmac_sha512").packet }, ErrBadHMAC, 0},
	{"no hmac", func(tb testing.TB) []byte {
		for pad := 0; ; pad++ {
			b := seal(tb, testEnc, testMAC, withDigest(fields("root", 1, MsgAccess, "10.0.0.1,tcp/22", b64(string(make([]byte, pad+1))))))
			if noMAC := b[:len(b)-MACLen]; !cipherTextLen(len(noMAC) - MACLen + len(saltPrefix)) {
				return noMAC
			}
		}
	}, ErrNoHMAC, 0},
	{"garbage", func(tb testing.TB) []byte { return bytes.Repeat([]byte{0xa5}, 512) }, ErrMalformed, 0},
	{"base64 garbage", func(tb testing.TB) []byte { return bytes.Repeat([]byte{'Q'}, 256) }, ErrMalformed, 0},
	{"short", func(tb testing.TB) []byte { return []byte("hello") }, ErrMalformed, 0},
}

// The "no hmac" row is sealed under the test key, the rest are real.
func pathKey(tb testing.TB, name string) *Key {
	if name == "no hmac" {
		return testKey(tb)
	}
	return loadKey(tb, "fwknop.key")
}

func TestVerifyAllocs(t *testing.T) {
	if race.Enabled {
		t.Skip("allocation counts are meaningless under the race detector (sync.Pool drops objects)")
	}
	for _, p := range verifyPaths {
		t.Run(p.name, func(t *testing.T) {
			k, b := pathKey(t, p.name), p.packet(t)
			var r Request
			if err := k.Verify(b, &r); !errors.Is(err, p.want) || (p.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, p.want)
			}
			if a := testing.AllocsPerRun(1000, func() { k.Verify(b, &r) }); a > p.allocs {
				t.Fatalf("allocs = %v, want at most %v", a, p.allocs)
			}
		})
	}
}

// TestCheckAllocs: the policy check runs on the verdict path too.
func TestCheckAllocs(t *testing.T) {
	v := vectorByName(t, "access_multi")
	k := loadKey(t, "fwknop.key")
	var r Request
	if err := k.Verify(v.packet, &r); err != nil {
		t.Fatal(err)
	}
	ports := []uint16{22, 443}
	src := r.AllowIP
	a := testing.AllocsPerRun(1000, func() {
		if _, err := r.Check(src, timeUnix(v.made), 120e9, ports, 30e9); err != nil {
			t.Fatal(err)
		}
	})
	if a != 0 {
		t.Fatalf("Check allocs = %v, want 0", a)
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, p := range verifyPaths {
		b.Run(p.name, func(b *testing.B) {
			k, pkt := pathKey(b, p.name), p.packet(b)
			var r Request
			b.ReportAllocs()
			b.SetBytes(int64(len(pkt)))
			for b.Loop() {
				k.Verify(pkt, &r)
			}
		})
	}
}
