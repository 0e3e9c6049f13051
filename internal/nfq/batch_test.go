package nfq

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// kernelPacket builds an NFQNL_MSG_PACKET the way the kernel lays it out:
// packet header, mark, a hardware address (an attribute knockwall skips) and
// the payload.
func kernelPacket(queue uint16, id, mark uint32, payload []byte) []byte {
	var attrs []byte
	add := func(typ uint16, v []byte) {
		a := make([]byte, align4(attrHdrLen+len(v)))
		putAttrHdr(a, attrHdrLen+len(v), typ)
		copy(a[attrHdrLen:], v)
		attrs = append(attrs, a...)
	}
	hdr := make([]byte, 7)
	binary.BigEndian.PutUint32(hdr, id)
	binary.BigEndian.PutUint16(hdr[4:], 0x0800)
	hdr[6] = 1 // NF_INET_LOCAL_IN
	add(attrPacketHdr, hdr)
	if mark != 0 {
		add(attrMark, binary.BigEndian.AppendUint32(nil, mark))
	}
	add(9, make([]byte, 12)) // NFQA_HWADDR
	add(attrPayload, payload)
	m := make([]byte, nlmsgHdrLen+nfgenLen+len(attrs))
	putNlmsgHdr(m, len(m), msgPacket, 0, 0, queue)
	copy(m[nlmsgHdrLen+nfgenLen:], attrs)
	return m
}

// describeVerdict reads a verdict message back as "accept 3", "batch drop 7"
// or "mark accept 5 0x10", checking its framing on the way.
func describeVerdict(t *testing.T, m []byte, queue uint16) string {
	t.Helper()
	typ, body, rest, err := nextMsg(m)
	if err != nil || rest != nil || len(body) < nfgenLen {
		t.Fatalf("verdict message % x: %v", m, err)
	}
	if ne.Uint16(m[6:8]) != nlmFRequest || binary.BigEndian.Uint16(body[2:4]) != queue {
		t.Fatalf("verdict message % x: flags or queue wrong", m)
	}
	var s []string
	if typ == msgVerdictBatch {
		s = append(s, "batch")
	} else if typ != msgVerdict {
		t.Fatalf("message type %#x is no verdict", typ)
	}
	var verdict, id uint32
	var mark string
	for a := body[nfgenLen:]; len(a) > 0; {
		l := int(ne.Uint16(a[0:2]))
		switch ne.Uint16(a[2:4]) {
		case attrVerdictHdr:
			verdict, id = binary.BigEndian.Uint32(a[4:8]), binary.BigEndian.Uint32(a[8:12])
		case attrMark:
			mark = fmt.Sprintf("%#x", binary.BigEndian.Uint32(a[4:8]))
			s = append(s, "mark")
		default:
			t.Fatalf("unexpected attribute in % x", m)
		}
		a = a[align4(l):]
	}
	switch verdict {
	case nfAccept:
		s = append(s, "accept")
	case nfDrop:
		s = append(s, "drop")
	default:
		t.Fatalf("verdict %d", verdict)
	}
	s = append(s, fmt.Sprint(id))
	if mark != "" {
		s = append(s, mark)
	}
	return strings.Join(s, " ")
}

// script is a socket that delivers datagrams in order. A nil datagram is a
// moment the socket is empty: a non-blocking read there gets EAGAIN, a
// blocking one waits past it. When the script runs out the loop is stopped.
type script struct {
	in     [][]byte
	sent   [][]byte
	q      *Queue
	stopAt int // stop the loop as datagram stopAt (1-based) is delivered; 0: never
	got    int // datagrams delivered
	fail   int // sends to fail before one succeeds
	closed int
}

func (s *script) recv(b []byte, block bool) (int, unix.Errno) {
	for len(s.in) > 0 && s.in[0] == nil {
		s.in = s.in[1:]
		if !block {
			return 0, unix.EAGAIN
		}
	}
	if len(s.in) == 0 {
		if block {
			s.q.stop.Store(true)
		}
		return 0, unix.EAGAIN
	}
	d := s.in[0]
	s.in = s.in[1:]
	if s.got++; s.got == s.stopAt {
		s.q.stop.Store(true)
	}
	copy(b, d)
	return len(d), 0 // like MSG_TRUNC: the datagram's length
}

func (s *script) send(b []byte) error {
	if s.fail > 0 {
		s.fail--
		return unix.ENOMEM
	}
	s.sent = append(s.sent, slices.Clone(b))
	return nil
}

func (s *script) close() { s.closed++ }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// runScript runs the receive loop over datagrams and returns the verdicts
// sent, described.
func runScript(t *testing.T, in [][]byte, h Handler) ([]string, *Queue) {
	t.Helper()
	return run(t, &script{in: in}, h)
}

// run runs the receive loop over s until it stops, checks that the loop
// closed the socket once, and returns the verdicts sent, described.
func run(t *testing.T, s *script, h Handler) ([]string, *Queue) {
	t.Helper()
	q := newQueue(s, Config{Num: 7}, quiet())
	s.q = q
	go q.loop(h)
	<-q.done
	if s.closed != 1 {
		t.Errorf("the loop closed the socket %d times, want once", s.closed)
	}
	var out []string
	for _, m := range s.sent {
		out = append(out, describeVerdict(t, m, 7))
	}
	return out, q
}

// byFirstByte answers by the payload's first byte: 'a' accept, 'm' accept
// with mark 0x10, 'n' with mark 0x20, 's' with mark 0x30 and a verdict of its
// own (Sole), anything else drop.
func byFirstByte(pkt []byte, _ uint32) Answer {
	switch pkt[0] {
	case 'a':
		return Answer{Accept: true}
	case 'm':
		return Answer{Accept: true, SetMark: true, Mark: 0x10}
	case 'n':
		return Answer{Accept: true, SetMark: true, Mark: 0x20}
	case 's':
		return Answer{Accept: true, SetMark: true, Mark: 0x30, Sole: true}
	}
	return Answer{}
}

// TestBatching feeds packets with the verdicts given by their payload's first
// byte and says after which packets the socket is empty ('|'); it checks the
// verdict messages sent. A batch verdict covers every packet up to its id, so
// a batch must never span a packet with another verdict.
func TestBatching(t *testing.T) {
	for _, tt := range []struct {
		name string
		pkts string // verdict per packet, ids 1, 2, …; '|' the socket is empty
		want []string
	}{
		{"idle: each answered at once", "a|a|a|",
			[]string{"accept 1", "accept 2", "accept 3"}},
		{"a busy run goes in one batch", "aaaa|",
			[]string{"batch accept 4"}},
		{"a change of verdict ends the run", "aadd|",
			[]string{"batch accept 2", "batch drop 4"}},
		{"a marked verdict ends the unmarked run before it", "aama|",
			[]string{"batch accept 2", "mark accept 3 0x10", "accept 4"}},
		{"equal marks go in one batch, the mark with them", "mmmaa|",
			[]string{"batch mark accept 3 0x10", "batch accept 5"}},
		{"another mark ends the run", "mmnm|",
			[]string{"batch mark accept 2 0x10", "mark accept 3 0x20", "mark accept 4 0x10"}},
		{"sole verdicts never batch, and end the run before them", "aassa|",
			[]string{"batch accept 2", "mark accept 3 0x30", "mark accept 4 0x30", "accept 5"}},
		{"drop, accept, drop", "dad|",
			[]string{"drop 1", "accept 2", "drop 3"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var in [][]byte
			id := uint32(0)
			for _, c := range []byte(tt.pkts) {
				if c == '|' {
					in = append(in, nil)
					continue
				}
				id++
				in = append(in, kernelPacket(7, id, 0, []byte{c}))
			}
			out, q := runScript(t, in, byFirstByte)
			if !slices.Equal(out, tt.want) {
				t.Fatalf("sent %q, want %q", out, tt.want)
			}
			if got := q.Counters.Packets.Load(); got != uint64(id) {
				t.Fatalf("counted %d packets, want %d", got, id)
			}
		})
	}
}

// TestRunAnsweredOnStop: a run still pending when the loop is stopped (no
// empty socket seen in between) is answered before the loop ends.
func TestRunAnsweredOnStop(t *testing.T) {
	s := &script{in: [][]byte{kernelPacket(7, 1, 0, []byte("a")), kernelPacket(7, 2, 0, []byte("a"))}, stopAt: 2}
	out, _ := run(t, s, byFirstByte)
	if want := []string{"batch accept 2"}; !slices.Equal(out, want) {
		t.Fatalf("sent %q, want %q", out, want)
	}
}

// TestSendRetried: a verdict the socket fails to take is sent again; given
// up after sendTries, it is counted.
func TestSendRetried(t *testing.T) {
	s := &script{in: [][]byte{kernelPacket(7, 1, 0, []byte("a")), nil}, fail: sendTries - 1}
	out, q := run(t, s, byFirstByte)
	if !slices.Equal(out, []string{"accept 1"}) || q.Counters.VerdictErrors.Load() != 0 {
		t.Fatalf("sent %q with %d errors, want accept 1 and none", out, q.Counters.VerdictErrors.Load())
	}
	s = &script{in: [][]byte{kernelPacket(7, 1, 0, []byte("a")), nil, kernelPacket(7, 2, 0, []byte("d")), nil}, fail: sendTries}
	out, q = run(t, s, byFirstByte)
	if !slices.Equal(out, []string{"drop 2"}) || q.Counters.VerdictErrors.Load() != 1 {
		t.Fatalf("sent %q with %d errors, want drop 2 and 1", out, q.Counters.VerdictErrors.Load())
	}
}

// TestLostVerdictNeverOpened: a verdict the kernel never got leaves its
// packet waiting, and a later batch verdict would cover it. Sole verdicts
// (the accept mark that opens the guard) go singly, so the lost packet can
// only be covered by a batch of verdicts that open nothing.
func TestLostVerdictNeverOpened(t *testing.T) {
	s := &script{in: [][]byte{kernelPacket(7, 1, 0, []byte("d")), nil,
		kernelPacket(7, 2, 0, []byte("s")), kernelPacket(7, 3, 0, []byte("s")), nil,
		kernelPacket(7, 4, 0, []byte("m")), kernelPacket(7, 5, 0, []byte("m")), nil}, fail: sendTries}
	out, q := run(t, s, byFirstByte)
	want := []string{"mark accept 2 0x30", "mark accept 3 0x30", "batch mark accept 5 0x10"}
	if !slices.Equal(out, want) || q.Counters.VerdictErrors.Load() != 1 {
		t.Fatalf("sent %q with %d errors, want %q and 1", out, q.Counters.VerdictErrors.Load(), want)
	}
}

// TestFatalReceiveError: an error other than the expected ones answers the
// run, ends the loop, closes the socket and reports on Fatal, which is then
// closed.
func TestFatalReceiveError(t *testing.T) {
	s := &failing{script: script{in: [][]byte{kernelPacket(7, 1, 0, []byte("a"))}}, errno: unix.EBADF}
	q := newQueue(s, Config{Num: 7}, quiet())
	s.q = q
	go q.loop(byFirstByte)
	<-q.done
	err, ok := <-q.Fatal()
	if !ok || err == nil || !strings.Contains(err.Error(), "bad file descriptor") {
		t.Fatalf("Fatal gave %v, %v; want the receive error", err, ok)
	}
	if _, ok := <-q.Fatal(); ok {
		t.Fatal("Fatal not closed after the loop ended")
	}
	if len(s.sent) != 1 || describeVerdict(t, s.sent[0], 7) != "accept 1" || s.closed != 1 {
		t.Fatalf("sent %d verdicts, closed %d times; want the pending accept and one close", len(s.sent), s.closed)
	}
}

// failing delivers its script, then fails every read with errno.
type failing struct {
	script
	errno unix.Errno
}

func (f *failing) recv(b []byte, block bool) (int, unix.Errno) {
	if len(f.in) == 0 {
		return 0, f.errno
	}
	return f.script.recv(b, block)
}

// TestBatchBound: a run never grows past maxBatch.
func TestBatchBound(t *testing.T) {
	var in [][]byte
	for i := range 2*maxBatch + 1 {
		in = append(in, kernelPacket(7, uint32(i+1), 0, []byte{'a'}))
	}
	in = append(in, nil)
	out, _ := runScript(t, in, byFirstByte)
	want := []string{fmt.Sprintf("batch accept %d", maxBatch), fmt.Sprintf("batch accept %d", 2*maxBatch), fmt.Sprintf("accept %d", 2*maxBatch+1)}
	if !slices.Equal(out, want) {
		t.Fatalf("sent %q, want %q", out, want)
	}
}

// TestHandlerSeesPacket: the handler gets the payload and the mark the kernel
// sent; several messages in one datagram are each answered.
func TestHandlerSeesPacket(t *testing.T) {
	d := append(kernelPacket(7, 1, 0xab00, []byte("a1")), kernelPacket(7, 2, 0, []byte("d2"))...)
	var seen []string
	_, _ = runScript(t, [][]byte{d, nil}, func(pkt []byte, mark uint32) Answer {
		seen = append(seen, fmt.Sprintf("%s/%#x", pkt, mark))
		return byFirstByte(pkt, mark)
	})
	if want := []string{"a1/0xab00", "d2/0x0"}; !slices.Equal(seen, want) {
		t.Fatalf("handler saw %q, want %q", seen, want)
	}
}

// TestUnreadableDropped: a packet message whose attributes break off after
// the id is dropped, a datagram cut by the buffer too, and a panicking
// handler's packet is dropped.
func TestUnreadableDropped(t *testing.T) {
	broken := kernelPacket(7, 1, 0, []byte("aaaa"))
	ne.PutUint16(broken[len(broken)-8:], 200) // payload attribute claims 200 bytes
	big := kernelPacket(7, 2, 0, make([]byte, recvBuf))
	big[len(big)-1] = 'a'
	panics := kernelPacket(7, 3, 0, []byte("p"))
	out, q := runScript(t, [][]byte{broken, nil, big, nil, panics, nil}, func(pkt []byte, mark uint32) Answer {
		if pkt[0] == 'p' {
			panic("engine bug")
		}
		return Answer{Accept: true}
	})
	if want := []string{"drop 1", "drop 2", "drop 3"}; !slices.Equal(out, want) {
		t.Fatalf("sent %q, want %q", out, want)
	}
	if q.Counters.Malformed.Load() != 2 || q.Counters.Panics.Load() != 1 {
		t.Fatalf("malformed %d panics %d, want 2 and 1", q.Counters.Malformed.Load(), q.Counters.Panics.Load())
	}
}

// TestVerdictRefusal: an error the kernel sends back for a verdict is
// counted, and the loop goes on.
func TestVerdictRefusal(t *testing.T) {
	e := make([]byte, nlmsgHdrLen+4+nlmsgHdrLen)
	ne.PutUint32(e[0:4], uint32(len(e)))
	ne.PutUint16(e[4:6], nlmsgError)
	ne.PutUint32(e[nlmsgHdrLen:], errnoWord(unix.ENOENT))
	out, q := runScript(t, [][]byte{e, kernelPacket(7, 9, 0, []byte("a")), nil}, byFirstByte)
	if q.Counters.VerdictErrors.Load() != 1 || !slices.Equal(out, []string{"accept 9"}) {
		t.Fatalf("verdict errors %d, sent %q", q.Counters.VerdictErrors.Load(), out)
	}
}

// TestOverrunNotFatal: ENOBUFS is counted and the loop keeps serving.
func TestOverrunNotFatal(t *testing.T) {
	s := &overrun{script: script{in: [][]byte{kernelPacket(7, 4, 0, []byte("a")), nil}}}
	defer func() {
		if s.closed != 1 {
			t.Errorf("closed %d times", s.closed)
		}
	}()
	q := newQueue(s, Config{Num: 7}, quiet())
	s.q = q
	go q.loop(byFirstByte)
	<-q.done
	if q.Counters.Overruns.Load() != 1 || len(s.sent) != 1 {
		t.Fatalf("overruns %d, verdicts %d; want 1 and 1", q.Counters.Overruns.Load(), len(s.sent))
	}
	if err, ok := <-q.Fatal(); ok {
		t.Fatalf("overrun was fatal: %v", err)
	}
}

type overrun struct {
	script
	done bool
}

func (o *overrun) recv(b []byte, block bool) (int, unix.Errno) {
	if !o.done {
		o.done = true
		return 0, unix.ENOBUFS
	}
	return o.script.recv(b, block)
}

// TestBindAnswers: the bind message's acknowledgement, and the errors that
// deserve words.
func TestBindAnswers(t *testing.T) {
	ackSeq := func(errno unix.Errno, seq uint32) []byte {
		e := make([]byte, nlmsgHdrLen+4+nlmsgHdrLen)
		ne.PutUint32(e[0:4], uint32(len(e)))
		ne.PutUint16(e[4:6], nlmsgError)
		ne.PutUint32(e[nlmsgHdrLen:], errnoWord(errno))
		ne.PutUint32(e[nlmsgHdrLen+4+8:], seq)
		return e
	}
	ack := func(errno unix.Errno) []byte { return ackSeq(errno, 1) } // the bind's sequence number
	for _, tt := range []struct {
		name  string
		in    [][]byte
		want  string // "" for success
		drops int
	}{
		{"acknowledged", [][]byte{ack(0)}, "", 0},
		{"a packet before the acknowledgement is dropped", [][]byte{kernelPacket(7, 5, 0, []byte("a")), ack(0)}, "", 1},
		{"an acknowledgement of another request is not the bind's", [][]byte{ackSeq(0, 9), ack(unix.EINVAL)}, "invalid argument", 0},
		{"overrun while waiting", nil, "", 0},
		{"not root (or held: TestRealQueue tells the two apart)", [][]byte{ack(unix.EPERM)}, "needs root or CAP_NET_ADMIN", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c conn
			s := &script{in: tt.in}
			c = s
			if tt.in == nil {
				s.in = [][]byte{ack(0)}
				c = &overrun{script: *s}
				s = &c.(*overrun).script
			}
			q := newQueue(c, Config{Num: 7, CopyRange: 256, MaxLen: 1024}, quiet())
			s.q = q
			err := q.bind()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("bind: %v, want %q", err, tt.want)
			}
			if len(s.sent) != 1+tt.drops {
				t.Fatalf("sent %d messages, want the bind and %d drops", len(s.sent), tt.drops)
			}
			for _, m := range s.sent[1:] {
				if d := describeVerdict(t, m, 7); d != "drop 5" {
					t.Fatalf("sent %q, want drop 5", d)
				}
			}
		})
	}
}

// TestConfigMessage pins the bind message byte for byte (after the netlink
// header's length, type, flags and sequence): command BIND, copy the packet
// up to 256 bytes, queue length 1024, FAIL_OPEN masked and cleared.
func TestConfigMessage(t *testing.T) {
	m := configMsg(1, 7, 256, 1024)
	typ, body, rest, err := nextMsg(m)
	if err != nil || rest != nil || typ != msgConfig || ne.Uint16(m[6:8]) != nlmFRequest|nlmFAck {
		t.Fatalf("header % x: %v", m[:16], err)
	}
	want := []byte{
		0, 0, 0, 7, // nfgenmsg: AF_UNSPEC, v0, queue 7
		8, 0, 1, 0, cmdBind, 0, 0, 0, // NFQA_CFG_CMD
		9, 0, 2, 0, 0, 0, 1, 0, copyPacket, 0, 0, 0, // NFQA_CFG_PARAMS
		8, 0, 3, 0, 0, 0, 4, 0, // NFQA_CFG_QUEUE_MAXLEN
		8, 0, 4, 0, 0, 0, 0, 1, // NFQA_CFG_MASK
		8, 0, 5, 0, 0, 0, 0, 0, // NFQA_CFG_FLAGS
	}
	if ne.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the expected bytes are written for a little-endian host")
	}
	if !slices.Equal(body, want) {
		t.Fatalf("config body\n% x\nwant\n% x", body, want)
	}
}

// TestZeroAlloc: from a datagram to its verdict nothing allocates.
func TestZeroAlloc(t *testing.T) {
	d := kernelPacket(7, 1, 0x5, make([]byte, 60))
	q := newQueue(discard{}, Config{Num: 7}, quiet())
	h := func([]byte, uint32) Answer { return Answer{Accept: true, SetMark: true, Mark: 1} }
	if n := testing.AllocsPerRun(1000, func() { q.process(d, h); q.flush() }); n != 0 {
		t.Fatalf("%v allocations per packet", n)
	}
	u := func([]byte, uint32) Answer { return Answer{Accept: true} }
	if n := testing.AllocsPerRun(1000, func() { q.process(d, h); q.process(d, u); q.flush() }); n != 0 {
		t.Fatalf("%v allocations per packet", n)
	}
}

// errnoWord is errno as NLMSG_ERROR carries it: negated, two's complement.
func errnoWord(e unix.Errno) uint32 { return uint32(-int32(e)) }

type discard struct{}

func (discard) recv([]byte, bool) (int, unix.Errno) { return 0, unix.EAGAIN }
func (discard) send([]byte) error                   { return nil }
func (discard) close()                              {}

// BenchmarkProcess is the queue edge's own cost per packet: parse the
// message, call a handler, queue or write the verdict (to nowhere).
func BenchmarkProcess(b *testing.B) {
	d := kernelPacket(7, 1, 0, make([]byte, 60))
	q := newQueue(discard{}, Config{Num: 7}, quiet())
	h := func([]byte, uint32) Answer { return Answer{Accept: true} }
	b.ReportAllocs()
	for b.Loop() {
		q.process(d, h)
	}
	q.flush()
}

// FuzzProcess: whatever the socket delivers, the loop's parser neither panics
// nor sends anything but well-formed verdicts. When the packet ids rise, as
// the kernel numbers them, every packet with a readable id is answered
// exactly once (singly or by a batch verdict, which covers every id up to
// its own), with the handler's verdict, or a drop when unreadable.
func FuzzProcess(f *testing.F) {
	f.Add(kernelPacket(7, 1, 0x10, []byte{0x45, 0, 0, 40}))
	f.Add(append(kernelPacket(7, 1, 0, []byte("a")), kernelPacket(7, 2, 0, []byte("m"))...))
	f.Add(kernelPacket(7, 3, 0, nil)[:30])
	h := func(pkt []byte, _ uint32) Answer {
		switch {
		case len(pkt) > 0 && pkt[0]&3 == 3:
			return Answer{Accept: true, SetMark: true, Mark: 5, Sole: true}
		case len(pkt) > 0 && pkt[0]&1 == 1:
			return Answer{Accept: true, SetMark: true, Mark: 3}
		}
		return Answer{Accept: len(pkt) > 0}
	}
	f.Fuzz(func(t *testing.T, d []byte) {
		rec := &script{}
		q := newQueue(rec, Config{Num: 7}, quiet())
		q.process(d, h)
		q.flush()

		// What each packet message in d should get.
		type want struct{ accept, mark, sole bool }
		var ids []uint32
		wants := map[uint32]want{}
		rising := true
		for b := d; len(b) > 0; {
			typ, m, rest, err := nextMsg(b)
			if err != nil {
				break
			}
			b = rest
			if typ != msgPacket {
				continue
			}
			p, err := parsePacket(m)
			if !p.hasID {
				continue
			}
			var w want // unreadable: drop
			if err == nil {
				v := h(p.payload, p.mark)
				w = want{v.Accept, v.Accept && v.SetMark, v.Sole}
			}
			if len(ids) > 0 && p.id <= ids[len(ids)-1] {
				rising = false
			}
			ids = append(ids, p.id)
			wants[p.id] = w
		}
		answered := map[uint32]int{}
		for _, m := range rec.sent {
			f := strings.Fields(describeVerdict(t, m, 7))
			batch := f[0] == "batch"
			if batch {
				f = f[1:]
			}
			marked := f[0] == "mark"
			if marked {
				f = f[1:]
			}
			accept := f[0] == "accept"
			var id uint32
			fmt.Sscan(f[1], &id)
			if !rising {
				continue
			}
			for _, pid := range ids {
				if pid == id || batch && pid < id && answered[pid] == 0 {
					answered[pid]++
					if w := wants[pid]; w.accept != accept || w.mark != marked || w.sole && batch {
						t.Fatalf("packet %d answered %v, want %+v", pid, f, w)
					}
				}
			}
		}
		if rising {
			for _, pid := range ids {
				if answered[pid] != 1 {
					t.Fatalf("packet %d answered %d times, want once (verdicts %d)", pid, answered[pid], len(rec.sent))
				}
			}
		}
	})
}
