package spa

import (
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"net/netip"
)

// Token format, version 1. All integers are big endian.
//
//	off  len  field
//	0    2    magic "KW"
//	2    1    version (1)
//	3    1    flags (bit 0: bound to a source address; other bits 0)
//	4    2    key id
//	6    8    timestamp, unix seconds, signed
//	14   16   nonce, random
//	30   1    service name length L, 1..32
//	31   L    service name, [a-z0-9_]
//	31+L 16   source address (only when bit 0 of flags is set): IPv6, or IPv4 as ::ffff:a.b.c.d
//	...  32   HMAC-SHA256 under the key, over every byte before it
const (
	Version        = 1
	FlagBound      = 0x01
	NonceSize      = 16
	MACSize        = 32
	MaxServiceName = 32

	headerSize = 31 // magic through service name length
	sourceSize = 16
	// MinSize and MaxSize bound a valid token's length.
	MinSize = headerSize + 1 + MACSize
	MaxSize = headerSize + MaxServiceName + sourceSize + MACSize
)

var magic = [2]byte{'K', 'W'}

// Errors a token may be refused with. The verdict path reports them as
// reasons; none of them changes what the sender sees.
var (
	ErrFormat      = errors.New("spa: not a token")                   // wrong magic, length or fields
	ErrVersion     = errors.New("spa: unsupported version")           // a version this build does not know
	ErrUnknownKey  = errors.New("spa: unknown key id")                // no configured key has this id
	ErrBadMAC      = errors.New("spa: bad mac")                       // forged, tampered, or another key
	ErrStale       = errors.New("spa: timestamp too old")             // older than max_skew
	ErrFuture      = errors.New("spa: timestamp in future")           // newer than max_skew
	ErrReplay      = errors.New("spa: nonce already used")            // replayed
	ErrReplayFull  = errors.New("spa: replay cache full")             // refused to stay safe; see ReplayCache
	ErrWrongSource = errors.New("spa: bound to other source")         // token names another source
	ErrUnbound     = errors.New("spa: not bound to a source")         // the service requires a bound token (spa.require_source)
	ErrBeforeStart = errors.New("spa: timestamp before server start") // at or before the service's not-before second (the server's start, unless it restored its replay memory): the process before may have accepted it
	ErrService     = errors.New("spa: service not served")            // no SPA service of that name here
)

// Token is a parsed token. It points into the buffer it was parsed from.
type Token struct {
	Version   uint8
	Flags     uint8
	KeyID     uint16
	Timestamp int64
	Nonce     [NonceSize]byte
	Service   []byte
	Source    netip.Addr // valid when Bound()
	signed    []byte     // the bytes the MAC covers
	mac       []byte
}

// Bound reports whether the token names the source it may come from.
func (t *Token) Bound() bool { return t.Flags&FlagBound != 0 }

// Parse decodes b into t. It checks the format only, not the MAC. It never
// allocates and never panics.
func Parse(b []byte, t *Token) error {
	*t = Token{}
	if len(b) < MinSize || len(b) > MaxSize || b[0] != magic[0] || b[1] != magic[1] {
		return ErrFormat
	}
	if b[2] != Version {
		return ErrVersion
	}
	t.Version, t.Flags = b[2], b[3]
	if t.Flags&^FlagBound != 0 {
		return ErrFormat
	}
	t.KeyID = binary.BigEndian.Uint16(b[4:6])
	t.Timestamp = int64(binary.BigEndian.Uint64(b[6:14]))
	copy(t.Nonce[:], b[14:30])
	n := int(b[30])
	want := headerSize + n + MACSize
	if t.Bound() {
		want += sourceSize
	}
	if n < 1 || n > MaxServiceName || len(b) != want {
		return ErrFormat
	}
	t.Service = b[headerSize : headerSize+n]
	if !validName(t.Service) {
		return ErrFormat
	}
	if t.Bound() {
		off := headerSize + n
		t.Source = netip.AddrFrom16([16]byte(b[off : off+sourceSize])).Unmap()
	}
	t.signed = b[:len(b)-MACSize]
	t.mac = b[len(b)-MACSize:]
	return nil
}

func validName(b []byte) bool {
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c == '_' && i > 0, c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// Verify checks t's MAC under k in constant time. It does not allocate.
func (k *Key) Verify(t *Token) bool {
	if t.KeyID != k.ID || len(t.mac) != MACSize {
		return false
	}
	st := k.macs.Get().(*macState)
	st.h.Reset()
	st.h.Write(t.signed)
	sum := st.h.Sum(st.sum[:0])
	ok := hmac.Equal(sum, t.mac)
	k.macs.Put(st)
	return ok
}

// Build makes a token for service at unix time ts with nonce, bound to src
// when src is valid. It is for clients and tests; it allocates.
func Build(k *Key, service string, ts int64, nonce [NonceSize]byte, src netip.Addr) ([]byte, error) {
	if len(service) < 1 || len(service) > MaxServiceName || !validName([]byte(service)) {
		return nil, ErrService
	}
	b := make([]byte, 0, MaxSize)
	b = append(b, magic[0], magic[1], Version, 0)
	b = binary.BigEndian.AppendUint16(b, k.ID)
	b = binary.BigEndian.AppendUint64(b, uint64(ts))
	b = append(b, nonce[:]...)
	b = append(b, byte(len(service)))
	b = append(b, service...)
	if src.IsValid() {
		b[3] |= FlagBound
		a := src.Unmap().As16() // IPv4 comes out as ::ffff:a.b.c.d
		b = append(b, a[:]...)
	}
	m := hmac.New(sha256New, k.secret)
	m.Write(b)
	return m.Sum(b), nil
}
