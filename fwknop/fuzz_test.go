package fwknop

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/netip"
	"testing"
)

var sentinels = []error{ErrMalformed, ErrNoHMAC, ErrBadHMAC, ErrDecrypt, ErrDigest, ErrMessageType}

func checkResult(t *testing.T, err error, r *Request) {
	t.Helper()
	if err != nil {
		for _, s := range sentinels {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("error %v is not a sentinel", err)
	}
	if r.MessageType != MsgAccess && r.MessageType != MsgClientTimeoutAccess {
		t.Fatalf("accepted message type %d", r.MessageType)
	}
	if r.nAccess == 0 || !r.AllowIP.Is4() || r.nUser == 0 || r.ClientTimeout > maxTimeout {
		t.Fatalf("accepted request out of bounds: %+v", r)
	}
	if r.MessageType == MsgAccess && r.ClientTimeout != 0 {
		t.Fatalf("access message with a client timeout: %+v", r)
	}
	for _, a := range r.Access() {
		if a.Port == 0 || (a.Proto != ProtoTCP && a.Proto != ProtoUDP) {
			t.Fatalf("accepted access %v", a)
		}
	}
}

// FuzzVerify feeds whole packets. Mutations almost never get past the
// HMAC, which is the point: whatever arrives, Verify refuses it with a
// sentinel and without panicking, and what it accepts is the real packet.
// FuzzPlaintext reaches the fields behind the HMAC.
func FuzzVerify(f *testing.F) {
	k := loadKey(f, "fwknop.key")
	for _, v := range loadVectors(f) {
		f.Add(v.packet)
	}
	f.Add([]byte(saltPrefix))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		err := k.Verify(b, &r)
		checkResult(t, err, &r)
		if err != nil {
			return
		}
		if r.ReplayKey != sha256.Sum256(b) {
			t.Fatal("replay key is not the packet's SHA-256")
		}
		var again Request
		if k.Verify(b, &again) != nil || again != r {
			t.Fatal("a second Verify of the same packet differs")
		}
	})
}

// FuzzPlaintext feeds decrypted text to the field parser, as it would come
// out of a packet made with both keys.
func FuzzPlaintext(f *testing.F) {
	k := loadKey(f, "fwknop.key")
	for _, v := range loadVectors(f) {
		if pt := plaintextOf(f, k, v.packet); pt != nil {
			f.Add(pt)
		}
	}
	f.Add([]byte(withDigest(fields("root", 1, MsgClientTimeoutAccess, "1.2.3.4,tcp/22,udp/53", b64("auth"), "30"))))
	f.Add([]byte(withDigest(fields("root", 1, MsgAccess, "0.0.0.0,tcp/1"))))
	f.Fuzz(func(t *testing.T, pt []byte) {
		st := &state{}
		var r Request
		err := parsePlaintext(pt, st, &r)
		checkResult(t, err, &r)
		if err == nil && r.AllowIP != netip.IPv4Unspecified() && r.AllowIP.String() == "" {
			t.Fatal("unprintable allow-IP")
		}
	})
}

// plaintextOf decrypts a packet the way Verify does, for seeds.
func plaintextOf(tb testing.TB, k *Key, pkt []byte) []byte {
	tb.Helper()
	raw, err := base64.RawStdEncoding.DecodeString(saltPrefix + string(pkt[:len(pkt)-MACLen]))
	if err != nil {
		return nil
	}
	st := &state{}
	pt, err := k.decrypt(st, raw[len(saltMagic):])
	if err != nil {
		return nil
	}
	return append([]byte(nil), pt...)
}
