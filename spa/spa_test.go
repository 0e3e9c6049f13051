package spa

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/race"
)

func testKey(t testing.TB, fill byte) *Key {
	t.Helper()
	secret := bytes.Repeat([]byte{fill}, MinKeySize)
	k, err := NewKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func seqKey(t testing.TB) *Key {
	t.Helper()
	secret := make([]byte, 32)
	for i := range secret {
		secret[i] = byte(i)
	}
	k, err := NewKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestVectors pins the vectors docs/spa.md publishes for client authors.
func TestVectors(t *testing.T) {
	k := seqKey(t)
	if k.ID != 9277 {
		t.Errorf("key id = %d, want 9277", k.ID)
	}
	var nonce [NonceSize]byte
	for i := range nonce {
		nonce[i] = 0xaa
	}
	tok, err := Build(k, "ssh", 1700000000, nonce, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	const want = "4b570100243d000000006553f100aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa03737368" +
		"9c16e70cae3e487f5ce42bbe78553df1a5c05d169a28b5466a7102f6d57106e6"
	if got := hex.EncodeToString(tok); got != want {
		t.Errorf("token =\n%s\nwant\n%s", got, want)
	}
	if got := RotatingSequence(k, "ssh", 56666666, 3, 20000, 40000, nil); !slices.Equal(got, []uint16{34303, 26838, 22991}) {
		t.Errorf("rotating sequence = %v", got)
	}
}

func TestRoundTrip(t *testing.T) {
	k := testKey(t, 7)
	nonce := [NonceSize]byte{1, 2, 3}
	for _, tt := range []struct {
		name string
		src  netip.Addr
	}{
		{"unbound", netip.Addr{}},
		{"bound v4", netip.MustParseAddr("10.77.0.2")},
		{"bound v6", netip.MustParseAddr("fd00:77::2")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Build(k, "ssh", 1700000000, nonce, tt.src)
			if err != nil {
				t.Fatal(err)
			}
			var tok Token
			if err := Parse(b, &tok); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !k.Verify(&tok) {
				t.Fatal("Verify = false for a fresh token")
			}
			if string(tok.Service) != "ssh" || tok.Timestamp != 1700000000 || tok.Nonce != nonce || tok.KeyID != k.ID {
				t.Errorf("fields = %+v", tok)
			}
			if tok.Bound() != tt.src.IsValid() || (tt.src.IsValid() && tok.Source != tt.src) {
				t.Errorf("source = %v bound=%v, want %v", tok.Source, tok.Bound(), tt.src)
			}
		})
	}
}

// TestTamper flips each bit of each byte: every change must be refused,
// either by Parse or by Verify.
func TestTamper(t *testing.T) {
	k := testKey(t, 7)
	b, err := Build(k, "ssh", 1700000000, [NonceSize]byte{9}, netip.MustParseAddr("10.77.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		for bit := range 8 {
			c := bytes.Clone(b)
			c[i] ^= 1 << bit
			var tok Token
			if err := Parse(c, &tok); err == nil && k.Verify(&tok) {
				t.Fatalf("byte %d bit %d flipped: token still verifies", i, bit)
			}
		}
	}
	// Truncation and extension too.
	for n := range len(b) {
		var tok Token
		if err := Parse(b[:n], &tok); err == nil && k.Verify(&tok) {
			t.Fatalf("truncated to %d bytes: still verifies", n)
		}
	}
	var tok Token
	if err := Parse(append(bytes.Clone(b), 0), &tok); !errors.Is(err, ErrFormat) {
		t.Fatalf("extended token: err = %v, want ErrFormat", err)
	}
}

func TestWrongKey(t *testing.T) {
	k1, k2 := testKey(t, 1), testKey(t, 2)
	b, _ := Build(k1, "ssh", 1, [NonceSize]byte{}, netip.Addr{})
	var tok Token
	if err := Parse(b, &tok); err != nil {
		t.Fatal(err)
	}
	if k2.Verify(&tok) {
		t.Fatal("token verifies under another key")
	}
	// The same key id with another secret (forged id) must fail the MAC.
	forged := bytes.Clone(b)
	forged[4], forged[5] = byte(k2.ID>>8), byte(k2.ID)
	if err := Parse(forged, &tok); err != nil {
		t.Fatal(err)
	}
	if k2.Verify(&tok) || k1.Verify(&tok) {
		t.Fatal("token with a swapped key id verifies")
	}
}

func TestParseRejects(t *testing.T) {
	k := testKey(t, 3)
	good, _ := Build(k, "ssh", 1, [NonceSize]byte{}, netip.Addr{})
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tt := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrFormat},
		{"magic", mod(func(b []byte) []byte { b[0] = 'X'; return b }), ErrFormat},
		{"version", mod(func(b []byte) []byte { b[2] = 2; return b }), ErrVersion},
		{"unknown flag", mod(func(b []byte) []byte { b[3] = 0x80; return b }), ErrFormat},
		{"bound flag without source", mod(func(b []byte) []byte { b[3] = FlagBound; return b }), ErrFormat},
		{"zero service length", mod(func(b []byte) []byte { b[30] = 0; return b }), ErrFormat},
		{"long service length", mod(func(b []byte) []byte { b[30] = 40; return b }), ErrFormat},
		{"bad service char", mod(func(b []byte) []byte { b[31] = 'S'; return b }), ErrFormat},
		{"junk", bytes.Repeat([]byte{0xff}, 80), ErrFormat},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var tok Token
			if err := Parse(tt.b, &tok); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBuildRejectsBadService(t *testing.T) {
	k := testKey(t, 3)
	for _, s := range []string{"", "SSH", "1ssh", "a-b", string(bytes.Repeat([]byte{'a'}, 33))} {
		if _, err := Build(k, s, 1, [NonceSize]byte{}, netip.Addr{}); !errors.Is(err, ErrService) {
			t.Errorf("Build(%q) err = %v, want ErrService", s, err)
		}
	}
}

func TestVerifyNoAllocs(t *testing.T) {
	if race.Enabled {
		t.Skip("allocation counts are meaningless under the race detector (sync.Pool drops objects)")
	}
	k := testKey(t, 5)
	b, _ := Build(k, "ssh", 1, [NonceSize]byte{}, netip.MustParseAddr("10.0.0.1"))
	allocs := testing.AllocsPerRun(1000, func() {
		var tok Token
		if Parse(b, &tok) != nil || !k.Verify(&tok) {
			t.Fatal("token refused")
		}
	})
	if allocs != 0 {
		t.Fatalf("Parse+Verify allocs = %v, want 0", allocs)
	}
}

// TestReplayCache: the cache answers with this package's errors: a replay
// is ErrReplay, and a cache full of live keys refuses new ones with
// ErrReplayFull.
func TestReplayCache(t *testing.T) {
	c := NewReplayCache(16) // two slots per shard
	sec := int64(time.Second)
	var k [NonceSize]byte
	if err := c.Add(k, 10*sec, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Add(k, 10*sec, 5*sec); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay within window: err = %v, want ErrReplay", err)
	}
	var err error
	for i := 1; i < 256 && err == nil; i++ { // room for 32 at most
		k[15] = byte(i)
		err = c.Add(k, 10*sec, 5*sec)
	}
	if !errors.Is(err, ErrReplayFull) {
		t.Fatalf("a full cache: err = %v, want ErrReplayFull", err)
	}
}

func TestRotatingSequence(t *testing.T) {
	k := testKey(t, 9)
	a := RotatingSequence(k, "ssh", 100, 5, 20000, 20010, nil)
	b := RotatingSequence(k, "ssh", 100, 5, 20000, 20010, nil)
	if !slices.Equal(a, b) || len(a) != 5 {
		t.Fatalf("not deterministic: %v vs %v", a, b)
	}
	for i, p := range a {
		if p < 20000 || p > 20010 {
			t.Errorf("port %d out of range", p)
		}
		if i > 0 && a[i-1] == p {
			t.Errorf("consecutive duplicate at %d: %v", i, a)
		}
	}
	if c := RotatingSequence(k, "ssh", 101, 5, 20000, 40000, nil); slices.Equal(c, RotatingSequence(k, "ssh", 100, 5, 20000, 40000, nil)) {
		t.Errorf("periods 100 and 101 derive the same sequence %v", c)
	}
	if c := RotatingSequence(k, "web", 100, 5, 20000, 40000, nil); slices.Equal(c, RotatingSequence(k, "ssh", 100, 5, 20000, 40000, nil)) {
		t.Errorf("services derive the same sequence")
	}
	// A two-port range still yields a sequence without consecutive repeats.
	two := RotatingSequence(k, "ssh", 1, 6, 30000, 30001, nil)
	for i := 1; i < len(two); i++ {
		if two[i] == two[i-1] {
			t.Fatalf("two-port range repeats: %v", two)
		}
	}
}

func TestPeriod(t *testing.T) {
	for _, tt := range []struct {
		ts   int64
		p    time.Duration
		want int64
	}{{0, 30 * time.Second, 0}, {29, 30 * time.Second, 0}, {30, 30 * time.Second, 1}, {-1, 30 * time.Second, -1}, {-30, 30 * time.Second, -1}, {-31, 30 * time.Second, -2}} {
		if got := Period(tt.ts, tt.p); got != tt.want {
			t.Errorf("Period(%d, %s) = %d, want %d", tt.ts, tt.p, got, tt.want)
		}
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.key")
	k, err := WriteNewKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, err %v; want 0600", st.Mode().Perm(), err)
	}
	if _, err := WriteNewKeyFile(path); err == nil {
		t.Fatal("keygen overwrote an existing key file")
	}
	k2, err := ReadKeyFile(path)
	if err != nil || k2.ID != k.ID {
		t.Fatalf("read back: %v, id %d vs %d", err, k2.ID, k.ID)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadKeyFile(path); !errors.Is(err, ErrKeyPerm) {
			t.Errorf("mode %04o: err = %v, want ErrKeyPerm", mode, err)
		}
	}
}

func TestParseKey(t *testing.T) {
	secret := bytes.Repeat([]byte{0xfb}, 32)
	std := base64.StdEncoding.EncodeToString(secret)
	for _, tt := range []struct {
		name, content string
		wantErr       bool
	}{
		{"std padded", std, false},
		{"raw url", base64.RawURLEncoding.EncodeToString(secret), false},
		{"comment and blank lines", "# hello\n\n" + std + "\n", false},
		{"short", base64.StdEncoding.EncodeToString(secret[:16]), true},
		{"not base64", "!!!!", true},
		{"empty", "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKey([]byte(tt.content))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	k := testKey(f, 4)
	for _, src := range []netip.Addr{{}, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")} {
		b, _ := Build(k, "ssh", 1700000000, [NonceSize]byte{1}, src)
		f.Add(b)
	}
	f.Add([]byte("KW"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var tok Token
		if err := Parse(b, &tok); err != nil {
			return
		}
		if len(tok.Service) < 1 || len(tok.Service) > MaxServiceName || len(tok.mac) != MACSize {
			t.Fatalf("parsed token out of bounds: %+v", tok)
		}
		// A parsed token verifies only if it really was made with k.
		if k.Verify(&tok) {
			rebuilt, err := Build(k, string(tok.Service), tok.Timestamp, tok.Nonce, tok.Source)
			if err != nil || !bytes.Equal(rebuilt, b) {
				t.Fatalf("token verifies but is not what Build makes")
			}
		}
	})
}

func BenchmarkParseVerify(b *testing.B) {
	k := testKey(b, 5)
	tok, _ := Build(k, "ssh", 1, [NonceSize]byte{}, netip.MustParseAddr("10.0.0.1"))
	b.ReportAllocs()
	for b.Loop() {
		var t Token
		if Parse(tok, &t) != nil || !k.Verify(&t) {
			b.Fatal("refused")
		}
	}
}
