package fwknop

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/knockwall/knockwall/internal/race"
)

var errByName = map[string]error{
	"ok":             nil,
	"ErrMalformed":   ErrMalformed,
	"ErrNoHMAC":      ErrNoHMAC,
	"ErrBadHMAC":     ErrBadHMAC,
	"ErrDecrypt":     ErrDecrypt,
	"ErrDigest":      ErrDigest,
	"ErrMessageType": ErrMessageType,
}

// TestVectors verifies every packet the real client made and checks what
// was parsed from the good ones.
func TestVectors(t *testing.T) {
	k := loadKey(t, "fwknop.key")
	ip := netip.MustParseAddr("10.0.0.1")
	want := map[string]struct {
		typ     uint8
		allow   netip.Addr
		access  []Access
		timeout uint32
		user    string
	}{
		"access_tcp22":        {MsgAccess, ip, []Access{{ProtoTCP, 22}}, 0, "root"},
		"access_source":       {MsgAccess, netip.IPv4Unspecified(), []Access{{ProtoTCP, 22}}, 0, "root"},
		"access_multi":        {MsgAccess, ip, []Access{{ProtoTCP, 22}, {ProtoTCP, 443}}, 0, "root"},
		"access_tcp_udp":      {MsgAccess, ip, []Access{{ProtoTCP, 22}, {ProtoUDP, 53}}, 0, "root"},
		"client_timeout":      {MsgClientTimeoutAccess, ip, []Access{{ProtoTCP, 22}}, 30, "root"},
		"client_timeout_long": {MsgClientTimeoutAccess, ip, []Access{{ProtoTCP, 22}}, 7200, "root"},
		"spoof_user":          {MsgAccess, ip, []Access{{ProtoTCP, 22}}, 0, "alice.b"},
	}
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			wantErr, ok := errByName[v.expect]
			if !ok {
				t.Fatalf("unknown expect %q", v.expect)
			}
			var r Request
			if err := k.Verify(v.packet, &r); !errors.Is(err, wantErr) || (wantErr == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v (made by: %s)", err, v.expect, v.cmd)
			}
			if wantErr != nil {
				return
			}
			w, ok := want[v.name]
			if !ok {
				t.Fatalf("no expectations for good vector %s", v.name)
			}
			if r.Timestamp != v.made || r.MessageType != w.typ || r.AllowIP != w.allow || !slices.Equal(r.Access(), w.access) ||
				r.ClientTimeout != w.timeout || r.User() != w.user {
				t.Errorf("got ts=%d type=%d allow=%v access=%v timeout=%d user=%q, want ts=%d %+v",
					r.Timestamp, r.MessageType, r.AllowIP, r.Access(), r.ClientTimeout, r.User(), v.made, w)
			}
			if r.ReplayKey == ([ReplayKeySize]byte{}) {
				t.Error("empty replay key")
			}
		})
	}
}

// TestVectorsOtherKey: a key pair the packets were not made with.
func TestVectorsOtherKey(t *testing.T) {
	k := loadKey(t, "other.key")
	for _, v := range loadVectors(t) {
		var r Request
		if err := k.Verify(v.packet, &r); !errors.Is(err, ErrBadHMAC) {
			t.Errorf("%s under other.key: err = %v, want ErrBadHMAC", v.name, err)
		}
	}
}

// TestVectorsPolicy runs Check on the real packets, at the time they were
// made, as the engine will.
func TestVectorsPolicy(t *testing.T) {
	k := loadKey(t, "fwknop.key")
	src := netip.MustParseAddr("10.0.0.1")
	other := netip.MustParseAddr("192.0.2.7")
	ports := []uint16{22, 443}
	for _, tt := range []struct {
		vector  string
		src     netip.Addr
		openFor time.Duration
		want    time.Duration
		wantErr error
	}{
		{"access_tcp22", src, time.Minute, time.Minute, nil},
		{"access_tcp22", other, time.Minute, 0, ErrAllowIP},
		{"access_tcp22", netip.MustParseAddr("::ffff:10.0.0.1"), time.Minute, time.Minute, nil},
		{"access_source", other, time.Minute, time.Minute, nil},
		{"access_source", netip.MustParseAddr("2001:db8::1"), time.Minute, time.Minute, nil},
		{"access_multi", src, time.Minute, time.Minute, nil},
		{"access_tcp_udp", src, time.Minute, 0, ErrPort},
		{"client_timeout", src, time.Minute, 30 * time.Second, nil},
		{"client_timeout", src, 10 * time.Second, 10 * time.Second, nil},
		{"client_timeout_long", src, time.Minute, time.Minute, nil},
	} {
		t.Run(tt.vector, func(t *testing.T) {
			v := vectorByName(t, tt.vector)
			var r Request
			if err := k.Verify(v.packet, &r); err != nil {
				t.Fatal(err)
			}
			d, err := r.Check(tt.src, time.Unix(v.made, 0), 2*time.Minute, ports, tt.openFor)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) || d != tt.want {
				t.Fatalf("Check from %v = %v, %v; want %v, %v", tt.src, d, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestTCPRaw checks what `fwknop -P tcpraw` really sent (testdata/tcpraw.pcap,
// captured on a namespace's loopback): a bare SYN with the packet as its
// payload and a TCP checksum of 0, to port 62201 unless -p says otherwise.
func TestTCPRaw(t *testing.T) {
	f, err := os.Open("testdata/tcpraw.pcap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	k := loadKey(t, "fwknop.key")
	var ports []uint16
	for {
		data, _, err := rd.ReadPacketData()
		if err != nil {
			break
		}
		p := gopacket.NewPacket(data, rd.LinkType(), gopacket.Default)
		tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok {
			t.Fatalf("not TCP: %v", p)
		}
		if !tcp.SYN || tcp.ACK || tcp.Checksum != 0 || len(tcp.Options) != 0 || tcp.Seq != 1 || tcp.Window != 32767 {
			t.Errorf("header: syn=%v ack=%v checksum=%#x options=%d seq=%d window=%d", tcp.SYN, tcp.ACK, tcp.Checksum, len(tcp.Options), tcp.Seq, tcp.Window)
		}
		var r Request
		if err := k.Verify(tcp.Payload, &r); err != nil {
			t.Errorf("SYN payload to port %d: %v", tcp.DstPort, err)
		}
		ports = append(ports, uint16(tcp.DstPort))
	}
	if !slices.Equal(ports, []uint16{62201, 22}) {
		t.Fatalf("destination ports = %v, want [62201 22] (default, then -p 22)", ports)
	}
}

// TestTamper flips every bit of a real packet: each change must be refused
// before decryption, without allocating.
func TestTamper(t *testing.T) {
	k := loadKey(t, "fwknop.key")
	good := vectorByName(t, "access_tcp22").packet
	var r Request
	for i := range good {
		for bit := range 8 {
			b := bytes.Clone(good)
			b[i] ^= 1 << bit
			err := k.Verify(b, &r)
			if !errors.Is(err, ErrBadHMAC) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNoHMAC) {
				t.Fatalf("byte %d bit %d flipped: err = %v", i, bit, err)
			}
			if race.Enabled || i%16 != 0 {
				continue
			}
			if a := testing.AllocsPerRun(5, func() { k.Verify(b, &r) }); a != 0 {
				t.Fatalf("byte %d bit %d flipped: %v allocs", i, bit, a)
			}
		}
	}
	// The last MAC character carries two spare bits: a second spelling of
	// the same MAC bytes must not pass (nor dodge the replay cache).
	b := bytes.Clone(good)
	c := strings.IndexByte(b64Alphabet, b[len(b)-1])
	b[len(b)-1] = b64Alphabet[c^1]
	if err := k.Verify(b, &r); !errors.Is(err, ErrBadHMAC) {
		t.Fatalf("MAC spelled differently: err = %v, want ErrBadHMAC", err)
	}
}

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

func TestTruncateAndExtend(t *testing.T) {
	k := loadKey(t, "fwknop.key")
	good := vectorByName(t, "access_tcp22").packet
	var r Request
	for n := range len(good) {
		if err := k.Verify(good[:n], &r); err == nil {
			t.Fatalf("truncated to %d bytes: verifies", n)
		}
	}
	for _, tail := range []string{"A", "AAAA", "\n", "="} {
		if err := k.Verify(append(bytes.Clone(good), tail...), &r); err == nil {
			t.Fatalf("extended by %q: verifies", tail)
		}
	}
	// Without its MAC the packet is refused as having none.
	if err := k.Verify(good[:len(good)-MACLen], &r); !errors.Is(err, ErrNoHMAC) && !errors.Is(err, ErrBadHMAC) {
		t.Fatalf("MAC stripped: err = %v", err)
	}
}

// TestCrafted builds packets the client would not make, with the test
// encoder, to reach each check behind the HMAC.
func TestCrafted(t *testing.T) {
	k := testKey(t)
	const ts = 1800000000
	access := "10.0.0.1,tcp/22"
	otherEnc := bytes.Repeat([]byte{0x33}, 32)
	for _, tt := range []struct {
		name    string
		pkt     []byte
		want    error
		timeout uint32
	}{
		{"access", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgAccess, access))), nil, 0},
		{"access with server auth", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgAccess, access, b64("crypt,pw")))), nil, 0},
		{"client timeout", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgClientTimeoutAccess, access, "45"))), nil, 45},
		{"client timeout with server auth", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgClientTimeoutAccess, access, b64("x"), "45"))), nil, 45},
		{"client timeout max", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgClientTimeoutAccess, access, "65536"))), nil, 65536},
		{"client timeout too long", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgClientTimeoutAccess, access, "65537"))), ErrMalformed, 0},
		{"client timeout missing", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgClientTimeoutAccess, access))), ErrMalformed, 0},
		{"client timeout not a number", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgClientTimeoutAccess, access, "4x"))), ErrMalformed, 0},
		{"type 0 command", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgCommand, "10.0.0.1,touch /tmp/x"))), ErrMessageType, 0},
		{"type 2 nat", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgNATAccess, access, b64("192.168.1.2,22")))), ErrMessageType, 0},
		{"type 4", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgClientTimeoutNATAccess, access, b64("192.168.1.2,22"), "30"))), ErrMessageType, 0},
		{"type 5", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgLocalNATAccess, access, b64("192.168.1.2,22")))), ErrMessageType, 0},
		{"type 6", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgClientTimeoutLocalNATAccess, access, b64("192.168.1.2,22"), "30"))), ErrMessageType, 0},
		{"type 7", seal(t, testEnc, testMAC, withDigest(fields("root", ts, 7, access))), ErrMalformed, 0},
		{"type 99", seal(t, testEnc, testMAC, withDigest(fields("root", ts, 99, access))), ErrMalformed, 0},
		{"too many fields", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgAccess, access, "a", "b"))), ErrMalformed, 0},
		{"digest of other text", seal(t, testEnc, testMAC, fields("root", ts, MsgAccess, access)+":"+withDigest("x")[2:]), ErrDigest, 0},
		{"md5-sized digest", seal(t, testEnc, testMAC, fields("root", ts, MsgAccess, access)+":"+strings.Repeat("A", 22)), ErrDigest, 0},
		{"no digest", seal(t, testEnc, testMAC, "1234567890123456:"+strings.Repeat("A", 60)), ErrDigest, 0},
		{"other rijndael key", seal(t, otherEnc, testMAC, withDigest(fields("root", ts, MsgAccess, access))), ErrDecrypt, 0},
		{"random field not digits", seal(t, testEnc, testMAC, withDigest("123456789012345x"+fields("root", ts, MsgAccess, access)[16:])), ErrDecrypt, 0},
		{"non-printable", seal(t, testEnc, testMAC, withDigest(fields("ro\x01ot", ts, MsgAccess, access)+"\x01")), ErrMalformed, 0},
		{"user forbidden char", seal(t, testEnc, testMAC, withDigest(fields("a/b", ts, MsgAccess, access))), ErrMalformed, 0},
		{"user empty", seal(t, testEnc, testMAC, withDigest(fields("", ts, MsgAccess, access))), ErrMalformed, 0},
		{"timestamp not a number", seal(t, testEnc, testMAC, withDigest(strings.Replace(fields("root", ts, MsgAccess, access), "1800000000", "18000x0000", 1))), ErrMalformed, 0},
		{"allow ip leading zero", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgAccess, "010.0.0.1,tcp/22"))), ErrMalformed, 0},
		{"allow ip 256", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgAccess, "10.0.0.256,tcp/22"))), ErrMalformed, 0},
		{"allow ip three parts", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgAccess, "10.0.1,tcp/22"))), ErrMalformed, 0},
		{"allow ip v6", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgAccess, "::1,tcp/22"))), ErrMalformed, 0},
		{"no port", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgAccess, "10.0.0.1"))), ErrMalformed, 0},
		{"trailing comma", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgAccess, "10.0.0.1,tcp/22,"))), ErrMalformed, 0},
		{"icmp", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgAccess, "10.0.0.1,icmp/0"))), ErrMalformed, 0},
		{"port 0", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgAccess, "10.0.0.1,tcp/0"))), ErrMalformed, 0},
		{"port 65536", seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgAccess, "10.0.0.1,tcp/65536"))), ErrMalformed, 0},
		{"message not base64", seal(t, testEnc, testMAC, withDigest(strings.Replace(fields("root", ts, MsgAccess, access), b64(access), "!!!!", 1))), ErrMalformed, 0},
		{"prefix left on", append([]byte(saltPrefix), seal(t, testEnc, testMAC, withDigest(fields("root", ts, MsgAccess, access)))...), ErrMalformed, 0},
		{"not base64", bytes.Repeat([]byte{'*'}, 200), ErrMalformed, 0},
		{"short", bytes.Repeat([]byte{'A'}, MinPacketSize-1), ErrMalformed, 0},
		{"long", bytes.Repeat([]byte{'A'}, MaxPacketSize+1), ErrMalformed, 0},
		{"empty", nil, ErrMalformed, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			err := k.Verify(tt.pkt, &r)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err == nil && (r.ClientTimeout != tt.timeout || r.Timestamp != ts) {
				t.Fatalf("timeout = %d, ts = %d", r.ClientTimeout, r.Timestamp)
			}
		})
	}
}

// TestBadPadding: a good HMAC over a ciphertext whose PKCS#7 padding is
// wrong: the last byte out of range, or the bytes before it not all equal
// to it.
func TestBadPadding(t *testing.T) {
	k := testKey(t)
	pt := withDigest(fields("root", 1, MsgAccess, "10.0.0.1,tcp/22"))
	for _, last := range []byte{0, 5, 16, 17, 255} {
		p := []byte(pt)
		for len(p)%16 != 15 {
			p = append(p, 'A')
		}
		p = append(p, last)
		var r Request
		if err := k.Verify(sealRaw(t, testEnc, testMAC, p), &r); !errors.Is(err, ErrDecrypt) {
			t.Errorf("last byte %d: err = %v, want ErrDecrypt", last, err)
		}
	}
}

func TestNoHMAC(t *testing.T) {
	k := testKey(t)
	good := seal(t, testEnc, testMAC, withDigest(fields("root", 1, MsgAccess, "10.0.0.1,tcp/22")))
	var r Request
	// Find a plaintext length whose MAC-less form is not also a valid
	// length with a MAC, and check that it is reported as such.
	found := false
	for pad := 0; pad < 64; pad++ {
		b := seal(t, testEnc, testMAC, withDigest(fields("root", 1, MsgAccess, "10.0.0.1,tcp/22", strings.Repeat("A", pad+1))))
		noMAC := b[:len(b)-MACLen]
		if cipherTextLen(len(noMAC) - MACLen + len(saltPrefix)) {
			continue
		}
		found = true
		if err := k.Verify(noMAC, &r); !errors.Is(err, ErrNoHMAC) {
			t.Fatalf("packet without MAC: err = %v, want ErrNoHMAC", err)
		}
	}
	if !found {
		t.Fatal("no unambiguous length found")
	}
	if err := k.Verify(good, &r); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	now := time.Unix(1800000000, 0)
	src := netip.MustParseAddr("198.51.100.9")
	req := func(ts int64, allow string, timeout uint32, acc ...Access) *Request {
		r := &Request{Timestamp: ts, MessageType: MsgAccess, AllowIP: netip.MustParseAddr(allow), ClientTimeout: timeout}
		for _, a := range acc {
			r.access[r.nAccess] = a
			r.nAccess++
		}
		return r
	}
	ssh := Access{ProtoTCP, 22}
	ports := []uint16{22, 2222}
	for _, tt := range []struct {
		name    string
		r       *Request
		src     netip.Addr
		want    time.Duration
		wantErr error
	}{
		{"ok", req(now.Unix(), "198.51.100.9", 0, ssh), src, time.Minute, nil},
		{"ok 0.0.0.0", req(now.Unix(), "0.0.0.0", 0, ssh), src, time.Minute, nil},
		{"ok mapped source", req(now.Unix(), "198.51.100.9", 0, ssh), netip.MustParseAddr("::ffff:198.51.100.9"), time.Minute, nil},
		{"edge past", req(now.Unix()-120, "0.0.0.0", 0, ssh), src, time.Minute, nil},
		{"edge future", req(now.Unix()+120, "0.0.0.0", 0, ssh), src, time.Minute, nil},
		{"stale", req(now.Unix()-121, "0.0.0.0", 0, ssh), src, 0, ErrStale},
		{"future", req(now.Unix()+121, "0.0.0.0", 0, ssh), src, 0, ErrFuture},
		{"other address", req(now.Unix(), "198.51.100.10", 0, ssh), src, 0, ErrAllowIP},
		{"other address from v6", req(now.Unix(), "198.51.100.9", 0, ssh), netip.MustParseAddr("2001:db8::9"), 0, ErrAllowIP},
		{"unprotected port", req(now.Unix(), "0.0.0.0", 0, Access{ProtoTCP, 80}), src, 0, ErrPort},
		{"udp port", req(now.Unix(), "0.0.0.0", 0, Access{ProtoUDP, 22}), src, 0, ErrPort},
		{"one bad port of two", req(now.Unix(), "0.0.0.0", 0, ssh, Access{ProtoTCP, 80}), src, 0, ErrPort},
		{"two good ports", req(now.Unix(), "0.0.0.0", 0, ssh, Access{ProtoTCP, 2222}), src, time.Minute, nil},
		{"no ports", req(now.Unix(), "0.0.0.0", 0), src, 0, ErrPort},
		{"timeout shortens", req(now.Unix(), "0.0.0.0", 10, ssh), src, 10 * time.Second, nil},
		{"timeout never lengthens", req(now.Unix(), "0.0.0.0", 3600, ssh), src, time.Minute, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, err := tt.r.Check(tt.src, now, 2*time.Minute, ports, time.Minute)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) || d != tt.want {
				t.Fatalf("Check = %v, %v; want %v, %v", d, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestReplayCache: the cache answers with this package's errors: a replay
// is ErrReplay, and a cache full of live keys refuses new ones with
// ErrReplayFull.
func TestReplayCache(t *testing.T) {
	c := NewReplayCache(16) // two slots per shard
	sec := int64(time.Second)
	var k [ReplayKeySize]byte
	if err := c.Add(k, 10*sec, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Add(k, 10*sec, 5*sec); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay within window: err = %v, want ErrReplay", err)
	}
	var err error
	for i := 1; i < 256 && err == nil; i++ { // room for 32 at most
		k[31] = byte(i)
		err = c.Add(k, 10*sec, 5*sec)
	}
	if !errors.Is(err, ErrReplayFull) {
		t.Fatalf("a full cache: err = %v, want ErrReplayFull", err)
	}
}

// TestReplayVector: the real packet, accepted once, is refused the second
// time within 2×max_age, and forgotten after.
func TestReplayVector(t *testing.T) {
	k := loadKey(t, "fwknop.key")
	v := vectorByName(t, "access_tcp22")
	c := NewReplayCache(1024)
	maxAge := 2 * time.Minute
	now := time.Unix(v.made, 0)
	var r Request
	for i, want := range []error{nil, ErrReplay} {
		if err := k.Verify(v.packet, &r); err != nil {
			t.Fatal(err)
		}
		if err := c.Add(r.ReplayKey, ForgetAt(now, maxAge), now.UnixNano()); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Fatalf("send %d: err = %v, want %v", i, err, want)
		}
	}
	late := now.Add(2*maxAge - time.Second)
	if err := c.Add(r.ReplayKey, ForgetAt(late, maxAge), late.UnixNano()); !errors.Is(err, ErrReplay) {
		t.Fatalf("just inside 2×max_age: err = %v, want ErrReplay", err)
	}
	after := now.Add(2 * maxAge)
	if err := c.Add(r.ReplayKey, ForgetAt(after, maxAge), after.UnixNano()); err != nil {
		t.Fatalf("after 2×max_age: err = %v", err)
	}
}

func TestParseKey(t *testing.T) {
	const enc = "c1cuOfgb08lFsMqktVv5QpnvGweLzfCQm6nqHZj252Q="
	const mac = "3FJNPlf6NJuD20DE2q5ARMz+dzzFMDAHYEeJ0u4DM/JaXJPtRNhZm2V/+G9mCoweq+8zNtt7pz4TXhFqw21Jjw=="
	for _, tt := range []struct {
		name, content string
		wantErr       string
	}{
		{"key-gen output", "KEY_BASE64: " + enc + "\nHMAC_KEY_BASE64: " + mac + "\n", ""},
		{"access.conf spelling", "SOURCE    ANY\nKEY_BASE64\t\t" + enc + "\nHMAC_KEY_BASE64     " + mac + "\nOPEN_PORTS tcp/22\n", ""},
		{"comments, CRLF, no padding", "# mine\r\nKEY_BASE64: " + strings.TrimRight(enc, "=") + "\r\n\r\nHMAC_KEY_BASE64: " + mac + "\r\n", ""},
		{"no hmac key", "KEY_BASE64: " + enc + "\n", "no HMAC_KEY_BASE64"},
		{"no key", "HMAC_KEY_BASE64: " + mac + "\n", "no KEY_BASE64"},
		{"twice", "KEY_BASE64: " + enc + "\nKEY_BASE64: " + enc + "\nHMAC_KEY_BASE64: " + mac + "\n", "given twice"},
		{"passphrase", "KEY: secret\nHMAC_KEY_BASE64: " + mac + "\n", "not supported"},
		{"not base64", "KEY_BASE64: !!!\nHMAC_KEY_BASE64: " + mac + "\n", "not base64"},
		{"short key", "KEY_BASE64: " + b64("short") + "\nHMAC_KEY_BASE64: " + mac + "\n", "must decode to"},
		{"long key", "KEY_BASE64: " + b64(strings.Repeat("x", 33)) + "\nHMAC_KEY_BASE64: " + mac + "\n", "must decode to"},
		{"empty", "", "no KEY_BASE64"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKey([]byte(tt.content))
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestKeyBase64: Base64 gives back the key file's KEY_BASE64 and
// HMAC_KEY_BASE64.
func TestKeyBase64(t *testing.T) {
	content, err := os.ReadFile("testdata/fwknop.key")
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseKey(content)
	if err != nil {
		t.Fatal(err)
	}
	enc, mac := k.Base64()
	if !strings.Contains(string(content), "KEY_BASE64: "+enc+"\n") || !strings.Contains(string(content), "HMAC_KEY_BASE64: "+mac+"\n") {
		t.Errorf("Base64 = %q, %q; the file:\n%s", enc, mac, content)
	}
}
