package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// The wire format of knockwall's messages, carried by memberlist (which
// seals each one with the cluster key). Big-endian; every length is
// bounded, so a decoder never allocates more than the message's size.
//
//	message: version u8 (=Version) | sender str | sent i64 (unix ns, the sender's clock) | count u32 | event × count
//	event:   kind u8 | src addr | service str | fields of the kind
//	  grant:  hash u64 | origin str | seq u64 | stamp i64 | expires i64 | method u8 | limited u8 | left u16
//	  revoke: origin str | seq u64 | stamp i64 | until i64
//	  used:   method u8 | key (u8 length: 16 or 32) | until i64
//	str:  u8 length | bytes;  addr: u8 length (4 or 16) | bytes
const (
	// Version is the message format this build writes and reads.
	Version = 1
	// MaxName bounds node and service names on the wire.
	MaxName = 64
	// MaxEvents bounds the events of one message (a push/pull state).
	MaxEvents = 1 << 20
)

// Kind is what an event says.
type Kind uint8

// Kinds of event.
const (
	KindGrant  Kind = iota + 1 // a grant made or renewed at its origin
	KindRevoke                 // a grant ended by an operator at its origin
	KindUsed                   // an SPA nonce or fwknop digest spent
)

func (k Kind) String() string {
	switch k {
	case KindGrant:
		return "grant"
	case KindRevoke:
		return "revoke"
	case KindUsed:
		return "used"
	}
	return "unknown"
}

// Token key sizes: an SPA nonce, an fwknop packet's SHA-256.
const (
	SPAKeySize    = 16
	FwknopKeySize = 32
)

// Event is one grant, revoke or spent token.
type Event struct {
	Kind    Kind
	Src     netip.Addr
	Service string
	// Hash is the origin's hash of the service's definition (grants).
	Hash uint64
	// Origin, Seq and Stamp (unix ns on the origin's clock) order grants
	// and revokes of one (Src, Service): see Version.after.
	Origin string
	Seq    uint64
	Stamp  int64
	// Expires: a grant's end, a revoke's or a token's keeping (unix ns).
	Expires int64
	// Method: how a grant was made (tracker.Method); for a used token,
	// MethodSPA or MethodFwknop.
	Method uint8
	// Limited: a one-shot grant with Left connections left.
	Limited bool
	Left    uint16
	// Key is the spent token's nonce or digest (KindUsed).
	Key []byte
}

// Message is what one memberlist message or push/pull state holds.
type Message struct {
	Sender string
	Sent   int64 // unix ns on the sender's clock
	Events []Event
}

// Errors of Decode.
var (
	ErrVersion   = errors.New("cluster message: unknown version")
	ErrMalformed = errors.New("cluster message: malformed")
)

// Append appends m's encoding to b.
func (m Message) Append(b []byte) []byte {
	b = append(b, Version)
	b = appendStr(b, m.Sender)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Sent))
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Events)))
	for i := range m.Events {
		b = m.Events[i].append(b)
	}
	return b
}

func (e *Event) append(b []byte) []byte {
	b = append(b, byte(e.Kind))
	a := e.Src.Unmap().AsSlice()
	b = append(b, byte(len(a)))
	b = append(b, a...)
	b = appendStr(b, e.Service)
	switch e.Kind {
	case KindGrant:
		b = binary.BigEndian.AppendUint64(b, e.Hash)
		b = appendStr(b, e.Origin)
		b = binary.BigEndian.AppendUint64(b, e.Seq)
		b = binary.BigEndian.AppendUint64(b, uint64(e.Stamp))
		b = binary.BigEndian.AppendUint64(b, uint64(e.Expires))
		b = append(b, e.Method, boolByte(e.Limited))
		b = binary.BigEndian.AppendUint16(b, e.Left)
	case KindRevoke:
		b = appendStr(b, e.Origin)
		b = binary.BigEndian.AppendUint64(b, e.Seq)
		b = binary.BigEndian.AppendUint64(b, uint64(e.Stamp))
		b = binary.BigEndian.AppendUint64(b, uint64(e.Expires))
	case KindUsed:
		b = append(b, e.Method, byte(len(e.Key)))
		b = append(b, e.Key...)
		b = binary.BigEndian.AppendUint64(b, uint64(e.Expires))
	}
	return b
}

func appendStr(b []byte, s string) []byte {
	if len(s) > MaxName {
		s = s[:MaxName] // Valid refuses it at the other end
	}
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// Decode parses a message. It never panics, and refuses anything that is
// not a whole, valid message of this Version: trailing bytes, names longer
// than MaxName, addresses that are neither IPv4 nor IPv6, unknown kinds,
// keys of the wrong size.
func Decode(b []byte) (Message, error) {
	r := reader{b: b}
	var m Message
	if v := r.u8(); r.err == nil && v != Version {
		return m, fmt.Errorf("%w %d (this build reads %d)", ErrVersion, v, Version)
	}
	m.Sender = r.str()
	m.Sent = int64(r.u64())
	n := r.u32()
	if r.err != nil {
		return Message{}, r.err
	}
	if m.Sender == "" {
		return Message{}, fmt.Errorf("%w: no sender", ErrMalformed)
	}
	// Each event takes at least 8 bytes: no count beyond what the rest
	// could hold is believed before reading.
	if n > MaxEvents || int(n) > r.left()/8 {
		return Message{}, fmt.Errorf("%w: %d events in %d bytes", ErrMalformed, n, r.left())
	}
	if n > 0 {
		m.Events = make([]Event, 0, n)
	}
	for range n {
		e := r.event()
		if r.err != nil {
			return Message{}, r.err
		}
		m.Events = append(m.Events, e)
	}
	if r.left() != 0 {
		return Message{}, fmt.Errorf("%w: %d bytes after the last event", ErrMalformed, r.left())
	}
	return m, nil
}

type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) left() int { return len(r.b) - r.off }

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > r.left() {
		r.err = fmt.Errorf("%w: truncated", ErrMalformed)
		return nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

func (r *reader) u8() uint8 {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if p := r.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if p := r.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (r *reader) str() string {
	n := int(r.u8())
	if n > MaxName && r.err == nil {
		r.err = fmt.Errorf("%w: a name of %d bytes (at most %d)", ErrMalformed, n, MaxName)
	}
	return string(r.take(n))
}

func (r *reader) bool() bool {
	switch v := r.u8(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		if r.err == nil {
			r.err = fmt.Errorf("%w: boolean %d", ErrMalformed, v)
		}
		return false
	}
}

func (r *reader) event() Event {
	var e Event
	e.Kind = Kind(r.u8())
	n := int(r.u8())
	if r.err == nil && n != 4 && n != 16 {
		r.err = fmt.Errorf("%w: an address of %d bytes", ErrMalformed, n)
		return e
	}
	if a, ok := netip.AddrFromSlice(r.take(n)); ok {
		if a.Is4In6() && r.err == nil {
			r.err = fmt.Errorf("%w: an IPv4-mapped address (IPv4 travels as 4 bytes)", ErrMalformed)
		}
		e.Src = a
	}
	e.Service = r.str()
	switch e.Kind {
	case KindGrant:
		e.Hash = r.u64()
		e.Origin = r.str()
		e.Seq = r.u64()
		e.Stamp = int64(r.u64())
		e.Expires = int64(r.u64())
		e.Method = r.u8()
		e.Limited = r.bool()
		e.Left = r.u16()
	case KindRevoke:
		e.Origin = r.str()
		e.Seq = r.u64()
		e.Stamp = int64(r.u64())
		e.Expires = int64(r.u64())
	case KindUsed:
		e.Method = r.u8()
		k := int(r.u8())
		if r.err == nil && k != SPAKeySize && k != FwknopKeySize {
			r.err = fmt.Errorf("%w: a token key of %d bytes", ErrMalformed, k)
			return e
		}
		if p := r.take(k); p != nil {
			e.Key = append([]byte(nil), p...)
		}
		e.Expires = int64(r.u64())
	default:
		if r.err == nil {
			r.err = fmt.Errorf("%w: event kind %d", ErrMalformed, e.Kind)
		}
		return e
	}
	if r.err == nil && e.Service == "" {
		r.err = fmt.Errorf("%w: an event without a service", ErrMalformed)
	}
	if r.err == nil && e.Kind != KindUsed && e.Origin == "" {
		r.err = fmt.Errorf("%w: a %s without an origin", ErrMalformed, e.Kind)
	}
	return e
}
