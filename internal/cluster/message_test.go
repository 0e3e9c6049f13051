package cluster

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func sampleMessage() Message {
	return Message{Sender: "fw-a", Sent: 1_700_000_000_123_456_789, Events: []Event{
		{Kind: KindGrant, Src: netip.MustParseAddr("10.1.2.3"), Service: "ssh", Hash: 0xdeadbeef, Origin: "fw-a", Seq: 7,
			Stamp: 1_700_000_000_000_000_000, Expires: 1_700_000_030_000_000_000, Method: 1},
		{Kind: KindGrant, Src: netip.MustParseAddr("fd00::7"), Service: "web", Hash: 1, Origin: "fw-b", Seq: 1 << 40,
			Stamp: -5, Expires: 9, Method: 3, Limited: true, Left: 65535},
		{Kind: KindRevoke, Src: netip.MustParseAddr("10.1.2.3"), Service: "ssh", Origin: "fw-b", Seq: 8, Stamp: 11, Expires: 12},
		{Kind: KindUsed, Src: netip.IPv4Unspecified(), Service: "ssh", Method: 2, Key: bytes.Repeat([]byte{0xab}, SPAKeySize), Expires: 13},
		{Kind: KindUsed, Src: netip.IPv4Unspecified(), Service: "ssh", Method: 4, Key: bytes.Repeat([]byte{0xcd}, FwknopKeySize), Expires: 14},
	}}
}

func TestMessageRoundTrip(t *testing.T) {
	m := sampleMessage()
	b := m.Append(nil)
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
	}
	empty := Message{Sender: "x", Sent: 1}
	if got, err := Decode(empty.Append(nil)); err != nil || got.Sender != "x" || len(got.Events) != 0 {
		t.Fatalf("empty message: %+v, %v", got, err)
	}
	// An IPv4-mapped source travels as IPv4: one key per address.
	mapped := Message{Sender: "x", Events: []Event{{Kind: KindRevoke, Src: netip.MustParseAddr("::ffff:10.0.0.1"), Service: "s", Origin: "o"}}}
	if got, _ := Decode(mapped.Append(nil)); got.Events[0].Src != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("mapped source decoded as %v", got.Events[0].Src)
	}
}

func TestDecodeRefuses(t *testing.T) {
	good := sampleMessage().Append(nil)
	for i := range len(good) {
		if _, err := Decode(good[:i]); err == nil {
			t.Fatalf("a message cut at %d of %d bytes decoded", i, len(good))
		}
	}
	if _, err := Decode(append(append([]byte(nil), good...), 0)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a trailing byte: %v", err)
	}
	v2 := append([]byte(nil), good...)
	v2[0] = 2
	if _, err := Decode(v2); !errors.Is(err, ErrVersion) {
		t.Fatalf("version 2: %v", err)
	}
	cases := map[string]Message{
		"no sender":      {Events: nil},
		"no service":     {Sender: "a", Events: []Event{{Kind: KindRevoke, Src: netip.MustParseAddr("10.0.0.1"), Origin: "o"}}},
		"no origin":      {Sender: "a", Events: []Event{{Kind: KindGrant, Src: netip.MustParseAddr("10.0.0.1"), Service: "s"}}},
		"unknown kind":   {Sender: "a", Events: []Event{{Kind: 9, Src: netip.MustParseAddr("10.0.0.1"), Service: "s"}}},
		"key of 20":      {Sender: "a", Events: []Event{{Kind: KindUsed, Src: netip.IPv4Unspecified(), Service: "s", Key: make([]byte, 20)}}},
		"invalid source": {Sender: "a", Events: []Event{{Kind: KindRevoke, Service: "s", Origin: "o"}}},
	}
	for name, m := range cases {
		if _, err := Decode(m.Append(nil)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	// A name longer than MaxName, written by hand (Append cuts it).
	long := []byte{Version, MaxName + 1}
	long = append(long, strings.Repeat("a", MaxName+1)...)
	long = append(long, make([]byte, 12)...)
	if _, err := Decode(long); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a long sender: %v", err)
	}
	// A count the bytes cannot hold is refused before anything is made.
	huge := Message{Sender: "a"}
	b := huge.Append(nil)
	copy(b[len(b)-4:], []byte{0xff, 0xff, 0xff, 0xff})
	if _, err := Decode(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a huge count: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(sampleMessage().Append(nil))
	f.Add(Message{Sender: "a", Sent: 1}.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes encodes back to the same bytes.
		if again := m.Append(nil); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, b)
		}
	})
}
