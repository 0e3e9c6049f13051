package verdict_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/knockwall/knockwall/verdict"
)

// gopacketView decodes b with gopacket, as the reference for what Decode
// should find in a well-formed packet.
func gopacketView(t *testing.T, b []byte) (src, dst netip.Addr, sport, dport uint16, payload int) {
	t.Helper()
	first := layers.LayerTypeIPv4
	if b[0]>>4 == 6 {
		first = layers.LayerTypeIPv6
	}
	p := gopacket.NewPacket(b, first, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket cannot decode the test packet: %v", el.Error())
	}
	nf := p.NetworkLayer().NetworkFlow()
	src, _ = netip.AddrFromSlice(nf.Src().Raw())
	dst, _ = netip.AddrFromSlice(nf.Dst().Raw())
	tl := p.TransportLayer()
	if tl == nil {
		t.Fatal("gopacket finds no transport layer")
	}
	tf := tl.TransportFlow()
	sport = binary.BigEndian.Uint16(tf.Src().Raw())
	dport = binary.BigEndian.Uint16(tf.Dst().Raw())
	return src, dst, sport, dport, len(tl.LayerPayload())
}

func TestDecodeValid(t *testing.T) {
	tests := []struct {
		name  string
		pkt   []byte
		want  verdict.Parsed
		trust bool // compare with gopacket's decode too
	}{
		{
			name: "ipv4 tcp syn",
			pkt:  syn(t, client4, 22),
			want: verdict.Parsed{Src: client4, Dst: server4, IPVersion: 4, IPProto: 6, SrcPort: 40000, DstPort: 22, TCPFlags: verdict.TCPSyn, PayloadOff: 40},
		},
		{
			name: "ipv4 tcp syn with options",
			pkt:  spec{src: client4, dst: server4, sport: 51000, dport: 443, flags: verdict.TCPSyn, tcpOpts: synOptions}.tcp(t),
			want: verdict.Parsed{Src: client4, Dst: server4, IPVersion: 4, IPProto: 6, SrcPort: 51000, DstPort: 443, TCPFlags: verdict.TCPSyn, PayloadOff: 60},
		},
		{
			name: "ipv4 tcp syn with data",
			pkt:  spec{src: client4, dst: server4, sport: 51000, dport: 443, flags: verdict.TCPSyn, payload: []byte("hello")}.tcp(t),
			want: verdict.Parsed{Src: client4, Dst: server4, IPVersion: 4, IPProto: 6, SrcPort: 51000, DstPort: 443, TCPFlags: verdict.TCPSyn, PayloadOff: 40, PayloadLen: 5},
		},
		{
			name: "ipv4 with ip options",
			pkt: spec{src: client4, dst: server4, sport: 1, dport: 2, flags: verdict.TCPSyn, ipOpts: []layers.IPv4Option{
				{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}, // router alert
			}}.tcp(t),
			want: verdict.Parsed{Src: client4, Dst: server4, IPVersion: 4, IPProto: 6, SrcPort: 1, DstPort: 2, TCPFlags: verdict.TCPSyn, PayloadOff: 44},
		},
		{
			name: "ipv4 dont-fragment is no fragment",
			pkt:  spec{src: client4, dst: server4, sport: 1, dport: 2, flags: verdict.TCPSyn, ipFlags: layers.IPv4DontFragment}.tcp(t),
			want: verdict.Parsed{Src: client4, Dst: server4, IPVersion: 4, IPProto: 6, SrcPort: 1, DstPort: 2, TCPFlags: verdict.TCPSyn, PayloadOff: 40},
		},
		{
			name: "ipv4 tcp syn-ack with all flags",
			pkt:  tcpPkt(t, client4, 22, verdict.TCPSyn|verdict.TCPAck|tcpEce|tcpCwr|tcpPsh|tcpUrg),
			want: verdict.Parsed{Src: client4, Dst: server4, IPVersion: 4, IPProto: 6, SrcPort: 40000, DstPort: 22, TCPFlags: 0xfa, PayloadOff: 40},
		},
		{
			name: "ipv4 udp",
			pkt:  udpPkt(t, client4, 9000, []byte("knock")),
			want: verdict.Parsed{Src: client4, Dst: server4, IPVersion: 4, IPProto: 17, SrcPort: 40001, DstPort: 9000, PayloadOff: 28, PayloadLen: 5},
		},
		{
			name: "ipv4 udp empty",
			pkt:  udpPkt(t, client4, 9000, nil),
			want: verdict.Parsed{Src: client4, Dst: server4, IPVersion: 4, IPProto: 17, SrcPort: 40001, DstPort: 9000, PayloadOff: 28},
		},
		{
			name: "ipv4 udp with link padding after total length",
			pkt:  append(udpPkt(t, client4, 9000, []byte("ab")), 0, 0, 0, 0, 0, 0),
			want: verdict.Parsed{Src: client4, Dst: server4, IPVersion: 4, IPProto: 17, SrcPort: 40001, DstPort: 9000, PayloadOff: 28, PayloadLen: 2},
		},
		{
			name: "ipv4 tcp options cut by the copy range",
			pkt:  spec{src: client4, dst: server4, sport: 1, dport: 22, flags: verdict.TCPSyn, tcpOpts: synOptions}.tcp(t)[:50],
			want: verdict.Parsed{Src: client4, Dst: server4, IPVersion: 4, IPProto: 6, SrcPort: 1, DstPort: 22, TCPFlags: verdict.TCPSyn, PayloadOff: 50},
		},
		{
			name: "ipv4 udp payload cut by the copy range",
			pkt:  udpPkt(t, client4, 9000, make([]byte, 100))[:40],
			want: verdict.Parsed{Src: client4, Dst: server4, IPVersion: 4, IPProto: 17, SrcPort: 40001, DstPort: 9000, PayloadOff: 28, PayloadLen: 12},
		},
		{
			name: "ipv6 tcp syn",
			pkt:  syn(t, client6, 22),
			want: verdict.Parsed{Src: client6, Dst: server6, IPVersion: 6, IPProto: 6, SrcPort: 40000, DstPort: 22, TCPFlags: verdict.TCPSyn, PayloadOff: 60},
		},
		{
			name: "ipv6 tcp syn with options",
			pkt:  spec{src: client6, dst: server6, sport: 51000, dport: 22, flags: verdict.TCPSyn, tcpOpts: synOptions}.tcp(t),
			want: verdict.Parsed{Src: client6, Dst: server6, IPVersion: 6, IPProto: 6, SrcPort: 51000, DstPort: 22, TCPFlags: verdict.TCPSyn, PayloadOff: 80},
		},
		{
			name: "ipv6 udp",
			pkt:  udpPkt(t, client6, 9000, []byte("knock")),
			want: verdict.Parsed{Src: client6, Dst: server6, IPVersion: 6, IPProto: 17, SrcPort: 40001, DstPort: 9000, PayloadOff: 48, PayloadLen: 5},
		},
		{
			name: "ipv6 hop-by-hop then tcp",
			pkt:  spec{src: client6, dst: server6, sport: 1, dport: 22, flags: verdict.TCPSyn, ext: []gopacket.SerializableLayer{hopByHop()}}.tcp(t),
			want: verdict.Parsed{Src: client6, Dst: server6, IPVersion: 6, IPProto: 6, SrcPort: 1, DstPort: 22, TCPFlags: verdict.TCPSyn, PayloadOff: 68},
		},
		{
			name: "ipv6 destination options then tcp",
			pkt:  spec{src: client6, dst: server6, sport: 1, dport: 22, flags: verdict.TCPSyn, ext: []gopacket.SerializableLayer{destOpts()}}.tcp(t),
			want: verdict.Parsed{Src: client6, Dst: server6, IPVersion: 6, IPProto: 6, SrcPort: 1, DstPort: 22, TCPFlags: verdict.TCPSyn, PayloadOff: 68},
		},
		{
			name: "ipv6 authentication header then tcp",
			pkt:  withAH(syn(t, client6, 22)),
			want: verdict.Parsed{Src: client6, Dst: server6, IPVersion: 6, IPProto: 6, SrcPort: 40000, DstPort: 22, TCPFlags: verdict.TCPSyn, PayloadOff: 84},
		},
		{
			name: "ipv6 hop-by-hop and destination options then udp",
			pkt:  spec{src: client6, dst: server6, sport: 1, dport: 9000, payload: []byte("x"), ext: []gopacket.SerializableLayer{hopByHop(), destOpts()}}.udp(t),
			want: verdict.Parsed{Src: client6, Dst: server6, IPVersion: 6, IPProto: 17, SrcPort: 1, DstPort: 9000, PayloadOff: 64, PayloadLen: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p verdict.Parsed
			p.Decode(tt.pkt)
			if p != tt.want {
				t.Errorf("Decode =\n  %+v\nwant\n  %+v", p, tt.want)
			}
			if !p.Valid() {
				t.Errorf("Valid = false")
			}
			// gopacket agrees on well-formed, whole packets.
			if len(tt.pkt) == 0 || tt.want.PayloadOff+tt.want.PayloadLen < len(tt.pkt) && tt.pkt[0]>>4 == 6 {
				return
			}
			if int(binary.BigEndian.Uint16(tt.pkt[2:4])) > len(tt.pkt) && tt.pkt[0]>>4 == 4 {
				return // cut by the copy range
			}
			if tt.pkt[0]>>4 == 6 && 40+int(binary.BigEndian.Uint16(tt.pkt[4:6])) > len(tt.pkt) {
				return
			}
			src, dst, sport, dport, payload := gopacketView(t, tt.pkt)
			if src != p.Src || dst != p.Dst || sport != p.SrcPort || dport != p.DstPort || payload != p.PayloadLen {
				t.Errorf("gopacket sees %v:%d > %v:%d payload %d; Decode %v:%d > %v:%d payload %d",
					src, sport, dst, dport, payload, p.Src, p.SrcPort, p.Dst, p.DstPort, p.PayloadLen)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	syn4 := syn(t, client4, 22)
	syn4opts := spec{src: client4, dst: server4, sport: 1, dport: 22, flags: verdict.TCPSyn, tcpOpts: synOptions}.tcp(t)
	udp4 := udpPkt(t, client4, 9000, []byte("knock"))
	syn6 := syn(t, client6, 22)
	tooManyExt := make([]gopacket.SerializableLayer, 9)
	for i := range tooManyExt {
		tooManyExt[i] = destOpts()
	}
	tests := []struct {
		name        string
		pkt         []byte
		wantVersion uint8 // IPVersion left set: the IP header was usable
	}{
		{name: "nil", pkt: nil},
		{name: "empty", pkt: []byte{}},
		{name: "one byte", pkt: []byte{0x45}},
		{name: "truncated ipv4 header", pkt: syn4[:19]},
		{name: "ipv4 header only", pkt: syn4[:20], wantVersion: 4},
		{name: "ihl below 5", pkt: edit(syn4, func(b []byte) { b[0] = 0x44 })},
		{name: "ihl 0", pkt: edit(syn4, func(b []byte) { b[0] = 0x40 })},
		{name: "ihl past the buffer", pkt: edit(syn4[:40], func(b []byte) { b[0] = 0x4f })},
		{name: "total length below ihl", pkt: edit(syn4, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 19) })},
		{name: "total length zero", pkt: edit(syn4, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 0) })},
		{name: "total length cuts the tcp header", pkt: edit(syn4, func(b []byte) { binary.BigEndian.PutUint16(b[2:], 39) }), wantVersion: 4},
		{name: "truncated tcp header", pkt: syn4[:39], wantVersion: 4},
		{name: "truncated tcp header with options", pkt: syn4opts[:35], wantVersion: 4},
		{name: "tcp data offset below 5", pkt: edit(syn4, func(b []byte) { b[32] = 0x40 }), wantVersion: 4},
		{name: "tcp data offset 0", pkt: edit(syn4, func(b []byte) { b[32] = 0x00 }), wantVersion: 4},
		{name: "truncated udp header", pkt: udp4[:27], wantVersion: 4},
		{name: "ipv4 more fragments", pkt: spec{src: client4, dst: server4, sport: 1, dport: 22, flags: verdict.TCPSyn, ipFlags: layers.IPv4MoreFragments}.tcp(t), wantVersion: 4},
		{name: "ipv4 fragment offset", pkt: spec{src: client4, dst: server4, sport: 1, dport: 22, flags: verdict.TCPSyn, fragOff: 1}.tcp(t), wantVersion: 4},
		{name: "ipv4 last fragment", pkt: spec{src: client4, dst: server4, sport: 1, dport: 22, flags: verdict.TCPSyn, fragOff: 100, ipFlags: layers.IPv4DontFragment}.tcp(t), wantVersion: 4},
		{name: "ipv4 udp fragment", pkt: spec{src: client4, dst: server4, sport: 1, dport: 9000, ipFlags: layers.IPv4MoreFragments}.udp(t), wantVersion: 4},
		{name: "ipv4 icmp", pkt: icmp4(t), wantVersion: 4},
		{name: "ipv4 unknown protocol", pkt: edit(syn4, func(b []byte) { b[9] = 132 }), wantVersion: 4},
		{name: "version 5", pkt: edit(syn4, func(b []byte) { b[0] = 0x55 })},
		{name: "version 0", pkt: edit(syn4, func(b []byte) { b[0] = 0x05 })},
		{name: "version 15", pkt: edit(syn4, func(b []byte) { b[0] = 0xf5 })},
		{name: "version 6 with an ipv4 header", pkt: edit(syn4, func(b []byte) { b[0] = 0x65 }), wantVersion: 6},
		{name: "truncated ipv6 header", pkt: syn6[:39]},
		{name: "ipv6 header only", pkt: syn6[:40], wantVersion: 6},
		{name: "ipv6 truncated tcp header", pkt: syn6[:59], wantVersion: 6},
		{name: "ipv6 payload length cuts the tcp header", pkt: edit(syn6, func(b []byte) { binary.BigEndian.PutUint16(b[4:], 19) }), wantVersion: 6},
		{name: "ipv6 tcp data offset below 5", pkt: edit(syn6, func(b []byte) { b[52] = 0x10 }), wantVersion: 6},
		{name: "ipv6 fragment header", pkt: spec{src: client6, dst: server6, sport: 1, dport: 22, flags: verdict.TCPSyn,
			ext: []gopacket.SerializableLayer{&layers.IPv6Fragment{Identification: 7}}}.tcp(t), wantVersion: 6},
		{name: "ipv6 fragment after destination options", pkt: spec{src: client6, dst: server6, sport: 1, dport: 22, flags: verdict.TCPSyn,
			ext: []gopacket.SerializableLayer{destOpts(), &layers.IPv6Fragment{Identification: 7, MoreFragments: true}}}.tcp(t), wantVersion: 6},
		{name: "ipv6 extension header truncated", pkt: spec{src: client6, dst: server6, sport: 1, dport: 22, flags: verdict.TCPSyn,
			ext: []gopacket.SerializableLayer{hopByHop()}}.tcp(t)[:47], wantVersion: 6},
		{name: "ipv6 extension header length past the end", pkt: edit(spec{src: client6, dst: server6, sport: 1, dport: 22, flags: verdict.TCPSyn,
			ext: []gopacket.SerializableLayer{hopByHop()}}.tcp(t), func(b []byte) { b[41] = 200 }), wantVersion: 6},
		{name: "ipv6 too many extension headers", pkt: spec{src: client6, dst: server6, sport: 1, dport: 22, flags: verdict.TCPSyn, ext: tooManyExt}.tcp(t), wantVersion: 6},
		{name: "ipv6 no next header", pkt: edit(syn6, func(b []byte) { b[6] = 59 }), wantVersion: 6},
		{name: "ipv6 icmp", pkt: icmp6(t), wantVersion: 6},
		{name: "ipv6 esp", pkt: edit(syn6, func(b []byte) { b[6] = 50 }), wantVersion: 6},
		{name: "ipv6 syn from an ipv4-mapped source", pkt: syn(t, mapped4, 22), wantVersion: 6},
		{name: "ipv6 udp from an ipv4-mapped source", pkt: udpPkt(t, mapped4, 62201, []byte("token")), wantVersion: 6},
		{name: "ipv6 from ::ffff:0.0.0.0", pkt: syn(t, netip.MustParseAddr("::ffff:0.0.0.0"), 22), wantVersion: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p verdict.Parsed
			p.Decode(tt.pkt)
			if p.Valid() {
				t.Fatalf("Valid = true: %+v", p)
			}
			if p.IPProto != 0 {
				t.Errorf("IPProto = %d, want 0", p.IPProto)
			}
			if p.IPVersion != tt.wantVersion {
				t.Errorf("IPVersion = %d, want %d", p.IPVersion, tt.wantVersion)
			}
			if p.PayloadOff != 0 || p.PayloadLen != 0 {
				t.Errorf("payload %d+%d on an unusable packet", p.PayloadOff, p.PayloadLen)
			}
		})
	}
}

func TestDecodeReuse(t *testing.T) {
	// A Parsed reused for a malformed packet keeps nothing of the last one.
	var p verdict.Parsed
	p.Decode(syn(t, client4, 22))
	if !p.Valid() {
		t.Fatal("first packet not valid")
	}
	p.Decode([]byte{0x45, 0})
	if p != (verdict.Parsed{}) {
		t.Errorf("after a malformed packet: %+v, want zero", p)
	}
}

func TestDecodeNoAllocs(t *testing.T) {
	tests := []struct {
		name string
		pkt  []byte
	}{
		{"ipv4 syn", syn(t, client4, 22)},
		{"ipv4 udp", udpPkt(t, client4, 9000, []byte("knock"))},
		{"ipv6 syn with hop-by-hop", spec{src: client6, dst: server6, sport: 1, dport: 22, flags: verdict.TCPSyn, ext: []gopacket.SerializableLayer{hopByHop()}}.tcp(t)},
		{"malformed", []byte{0x45, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p verdict.Parsed
			if n := testing.AllocsPerRun(1000, func() { p.Decode(tt.pkt) }); n != 0 {
				t.Errorf("Decode allocates %v times per packet, want 0", n)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"ipv4-syn", syn(b, client4, 22)},
		{"ipv4-syn-options", spec{src: client4, dst: server4, sport: 1, dport: 22, flags: verdict.TCPSyn, tcpOpts: synOptions}.tcp(b)},
		{"ipv4-udp", udpPkt(b, client4, 9000, []byte("knock"))},
		{"ipv6-syn", syn(b, client6, 22)},
		{"ipv6-ext-syn", spec{src: client6, dst: server6, sport: 1, dport: 22, flags: verdict.TCPSyn, ext: []gopacket.SerializableLayer{hopByHop(), destOpts()}}.tcp(b)},
		{"malformed", []byte{0x45}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var p verdict.Parsed
			for b.Loop() {
				p.Decode(c.pkt)
			}
		})
	}
}
