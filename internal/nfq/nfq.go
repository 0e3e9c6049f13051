// Package nfq is knockwall's kernel edge for NFQUEUE: it binds a queue, hands
// each packet's bytes to a handler and sends the handler's verdict back. All
// policy lives in the handler; this package only moves bytes and counts what
// goes wrong.
//
// It speaks netlink itself rather than through go-nfqueue (which stays the
// baseline in bench/bareconsumer). Each queue is served by one goroutine
// locked to its own OS thread, blocked in recv(2) on a blocking socket: the
// kernel wakes that thread directly, not Go's netpoller, and nothing on the
// way from packet to verdict allocates. go-nfqueue receives through a
// non-blocking socket (a netpoller wake per idle packet), peeks every
// message to size its buffer and allocates per packet and per verdict
// (docs/decisions.md has the measurement).
package nfq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/internal/lograte"
)

// Answer is a handler's verdict on one packet: accept (with a mark) or drop.
type Answer struct {
	Accept  bool   // false drops
	SetMark bool   // set Mark on the packet (Accept only)
	Mark    uint32 // the packet mark to set
	// Sole answers the packet with a verdict message of its own, never in
	// a batch. A batch verdict covers every packet the kernel still holds
	// up to its id, including one whose own verdict was lost (the kernel
	// refused the message, or it could not be read); a verdict whose mark
	// opens a guard must never reach such a packet.
	Sole bool
}

// Handler judges one packet. pkt starts at the IP header and is only valid
// during the call; mark is the packet's current mark.
type Handler func(pkt []byte, mark uint32) Answer

// Config tunes one queue.
type Config struct {
	Num    uint16
	MaxLen uint32 // packets the kernel holds for us before it drops
	// CopyRange is how many bytes of each packet the kernel copies to us.
	// Headers are all knockwall reads.
	CopyRange uint32
	// ReadBuffer is the netlink socket's receive buffer in bytes; 0 keeps
	// the system default.
	ReadBuffer int
}

// Counters are a queue's statistics.
type Counters struct {
	Packets       atomic.Uint64
	Overruns      atomic.Uint64 // ENOBUFS: the kernel dropped messages to our socket
	VerdictErrors atomic.Uint64
	Panics        atomic.Uint64
	Malformed     atomic.Uint64 // netlink messages that did not parse
	Batches       atomic.Uint64 // batch verdicts sent
}

// conn is the socket as the receive loop uses it; a test feeds it messages.
type conn interface {
	// recv reads one datagram into b; block false returns EAGAIN at once
	// when nothing is queued. n may exceed len(b): the datagram was cut.
	recv(b []byte, block bool) (n int, errno unix.Errno)
	send(b []byte) error
	close()
}

// Queue is one bound NFQUEUE.
type Queue struct {
	c        conn
	cfg      Config
	log      *slog.Logger
	Counters Counters

	fatal   chan error // the loop's one fatal error, then closed
	logRate lograte.Limiter
	stop    atomic.Bool
	done    chan struct{}

	// Verdict batching, owned by the receive loop: a run of consecutive
	// packets with the same verdict (and the same mark to set, if any) is
	// answered with one batch verdict, which the kernel applies, mark
	// included, to every packet it still holds up to the run's last id. The
	// run is sent when the next packet's verdict differs, at maxBatch, or
	// when the socket has nothing more queued (so an idle queue answers at
	// once and a busy one in batches).
	run   int    // packets in the run; 0: none
	runID uint32 // id of the run's last packet
	runV  Answer // the run's verdict, normalized
	vbuf  [verdictMax]byte
}

const (
	// logEvery limits per-packet error logs.
	logEvery = time.Second
	// maxBatch bounds a batch verdict.
	maxBatch = 64
	// recvBuf holds one packet message: with the daemon's copy range of
	// 2 KiB a message is about 2 KiB, well under recvBuf.
	recvBuf = 16 << 10
	// wakeEvery is how often a receive loop with nothing to read looks
	// whether it should stop (the socket's receive timeout).
	wakeEvery = 200 * time.Millisecond
	// ackTimeout bounds the wait for the kernel's answer to the bind.
	ackTimeout = 5 * time.Second
	// sendTries is how often a verdict is sent before it is given up.
	sendTries = 3
)

// Open opens and binds queue c.Num and starts delivering packets to h until
// ctx is done or Close is called. It returns once the queue is bound, so the
// caller knows when it is safe to divert traffic.
func Open(ctx context.Context, c Config, h Handler, log *slog.Logger) (*Queue, error) {
	s, err := openSocket(c)
	if err != nil {
		return nil, err
	}
	q := newQueue(s, c, log)
	if err := q.bind(); err != nil {
		s.close()
		return nil, err
	}
	q.start(ctx, h)
	return q, nil
}

func newQueue(c conn, cfg Config, log *slog.Logger) *Queue {
	return &Queue{c: c, cfg: cfg, log: log.With("queue", cfg.Num), logRate: lograte.Limiter{Every: logEvery},
		fatal: make(chan error, 1), done: make(chan struct{})}
}

func (q *Queue) start(ctx context.Context, h Handler) {
	go q.loop(h)
	go func() {
		select {
		case <-ctx.Done():
			q.stop.Store(true)
		case <-q.done:
		}
	}()
}

// Fatal delivers an error when the queue stopped receiving for good.
func (q *Queue) Fatal() <-chan error { return q.fatal }

// Close stops the receive loop (within wakeEvery) and waits for it. The loop
// answers what it holds and closes the socket, as it does when ctx ends; the
// kernel then drops whatever is still queued, so closing lets nothing
// through, and a closed queue no longer holds packets: with the socket gone,
// --queue-bypass lets unrelated ports work again.
func (q *Queue) Close() error {
	q.stop.Store(true)
	<-q.done
	return nil
}

// bind configures the queue in one acknowledged message and waits for the
// acknowledgement.
func (q *Queue) bind() error {
	const seq = 1
	if err := q.c.send(configMsg(seq, q.cfg.Num, q.cfg.CopyRange, q.cfg.MaxLen)); err != nil {
		return fmt.Errorf("bind nfqueue %d: %w", q.cfg.Num, err)
	}
	buf := make([]byte, recvBuf)
	deadline := time.Now().Add(ackTimeout)
	for time.Now().Before(deadline) {
		n, errno := q.c.recv(buf, true)
		switch errno {
		case 0:
		case unix.EAGAIN, unix.EINTR, unix.ENOBUFS:
			continue
		default:
			return fmt.Errorf("bind nfqueue %d: %w", q.cfg.Num, errno)
		}
		b := buf[:min(n, len(buf))]
		for len(b) > 0 {
			typ, m, rest, err := nextMsg(b)
			if err != nil {
				break
			}
			b = rest
			switch typ {
			case nlmsgError:
				errno, s, err := parseError(m)
				if err != nil || s != seq {
					continue
				}
				switch e := unix.Errno(errno); {
				case e == 0:
					return nil
				case e == unix.EPERM && q.held():
					return fmt.Errorf("bind nfqueue %d: %w: another process holds this queue (is knockwall already running?)", q.cfg.Num, e)
				case e == unix.EPERM:
					return fmt.Errorf("bind nfqueue %d: %w (knockwall run needs root or CAP_NET_ADMIN)", q.cfg.Num, e)
				default:
					return fmt.Errorf("bind nfqueue %d: %w", q.cfg.Num, e)
				}
			case msgPacket:
				// Cannot happen before the bind is acknowledged; should
				// it, the packet is dropped, never let through.
				if p, _ := parsePacket(m); p.hasID {
					q.answer(p.id, Answer{})
					q.flush()
				}
			}
		}
	}
	return fmt.Errorf("bind nfqueue %d: no answer from the kernel in %s", q.cfg.Num, ackTimeout)
}

// loop is the receive loop. It runs on its own OS thread, so a packet wakes
// this thread straight from the kernel.
func (q *Queue) loop(h Handler) {
	runtime.LockOSThread() // never unlocked: the thread ends with the loop
	defer close(q.done)
	defer close(q.fatal)
	defer q.c.close() // after the last verdict
	buf := make([]byte, recvBuf)
	for !q.stop.Load() {
		// With a run pending, look without waiting: an empty socket is
		// the moment to answer the run.
		block := q.run == 0
		n, errno := q.c.recv(buf, block)
		switch errno {
		case 0:
			if n > len(buf) {
				q.truncated(buf)
				continue
			}
			q.process(buf[:n], h)
		case unix.EAGAIN, unix.EINTR:
			if !block {
				q.flush()
			}
		case unix.ENOBUFS:
			// The kernel could not hand us some packets and dropped them
			// (fail closed: the queue is never fail-open).
			q.Counters.Overruns.Add(1)
			q.rateLimited(slog.LevelError, "kernel queue overrun: the kernel dropped packets for this queue", "err", errno)
		default:
			q.flush()
			q.fatal <- fmt.Errorf("queue %d receive: %w", q.cfg.Num, errno)
			return
		}
	}
	q.flush()
}

// process handles one datagram of netlink messages.
func (q *Queue) process(b []byte, h Handler) {
	for len(b) > 0 {
		typ, m, rest, err := nextMsg(b)
		if err != nil {
			q.Counters.Malformed.Add(1)
			return
		}
		b = rest
		switch typ {
		case msgPacket:
			p, err := parsePacket(m)
			if err != nil {
				q.Counters.Malformed.Add(1)
				if p.hasID {
					q.answer(p.id, Answer{}) // unreadable: drop
				}
				continue
			}
			q.Counters.Packets.Add(1)
			q.answer(p.id, q.safeHandle(h, p.payload, p.mark))
		case nlmsgError:
			// Verdicts ask for no acknowledgement, so this is a refused
			// one (say, for an id the kernel no longer holds).
			// ENOENT: the packet was gone already (say, its interface
			// went down); nothing was let through either way.
			if errno, _, err := parseError(m); err == nil && errno != 0 {
				q.Counters.VerdictErrors.Add(1)
				q.rateLimited(slog.LevelWarn, "the kernel refused a verdict", "err", unix.Errno(errno))
			}
		case nlmsgNoop, nlmsgDone:
		default:
			q.Counters.Malformed.Add(1)
		}
	}
}

// truncated handles a datagram longer than the buffer: it cannot happen with
// the copy ranges knockwall asks for, and should it, the packet is dropped.
func (q *Queue) truncated(b []byte) {
	q.Counters.Malformed.Add(1)
	if len(b) >= nlmsgHdrLen && ne.Uint16(b[4:6]) == msgPacket {
		if p, _ := parsePacket(b[nlmsgHdrLen:]); p.hasID {
			q.answer(p.id, Answer{})
		}
	}
}

// answer adds packet id's verdict to the run. A verdict that differs from
// the run's sends the run first, so a batch verdict never covers a packet
// that should get another verdict or another mark.
func (q *Queue) answer(id uint32, v Answer) {
	if !v.Accept || !v.SetMark {
		v = Answer{Accept: v.Accept, Sole: v.Sole} // a dropped packet keeps no mark
	}
	if v.Sole {
		q.flush()
		q.sendVerdict(putVerdict(q.vbuf[:], q.cfg.Num, id, v.Accept, false, v.SetMark, v.Mark))
		return
	}
	if q.run > 0 && q.runV != v {
		q.flush()
	}
	q.run++
	q.runID = id
	q.runV = v
	if q.run >= maxBatch {
		q.flush()
	}
}

// flush sends the run's verdict.
func (q *Queue) flush() {
	if q.run == 0 {
		return
	}
	batch := q.run > 1
	v := q.runV
	q.sendVerdict(putVerdict(q.vbuf[:], q.cfg.Num, q.runID, v.Accept, batch, v.SetMark, v.Mark))
	if batch {
		q.Counters.Batches.Add(1)
	}
	q.run = 0
}

// sendVerdict sends a verdict message, trying again a few times: a verdict
// that never arrives leaves its packet waiting until a later batch verdict
// covers it, with that batch's verdict. (That is why a verdict that opens
// the guard is Sole: a batch never carries it to another packet.) Sending
// to the kernel fails only when it cannot allocate.
func (q *Queue) sendVerdict(m []byte) {
	var err error
	for range sendTries {
		if err = q.c.send(m); err == nil {
			return
		}
	}
	q.Counters.VerdictErrors.Add(1)
	q.rateLimited(slog.LevelError, "cannot send verdict", "err", err)
}

// safeHandle runs h and turns a panic into a drop: a bug in the engine must
// not take the daemon down, nor let a packet through.
func (q *Queue) safeHandle(h Handler, pkt []byte, mark uint32) (v Answer) {
	defer func() {
		if r := recover(); r != nil {
			q.Counters.Panics.Add(1)
			q.rateLimited(slog.LevelError, "handler panicked; packet dropped", "panic", fmt.Sprint(r))
			v = Answer{}
		}
	}()
	return h(pkt, mark)
}

// rateLimited logs at most one per-packet line per logEvery.
func (q *Queue) rateLimited(level slog.Level, msg string, args ...any) {
	if q.logRate.Allow(time.Now()) {
		q.log.Log(context.Background(), level, msg, args...)
	}
}

// held reports whether the kernel lists this queue as bound, in the network
// namespace of the calling thread (the one that opened the socket).
func (q *Queue) held() bool {
	b, err := os.ReadFile(threadProcFile)
	if err != nil {
		return false
	}
	return queueListed(b, q.cfg.Num)
}

// socket is a blocking NETLINK_NETFILTER socket.
type socket struct {
	fd int
}

func openSocket(c Config) (*socket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("open nfqueue %d: netlink socket: %w", c.Num, err)
	}
	s := &socket{fd: fd}
	fail := func(what string, err error) (*socket, error) {
		s.close()
		return nil, fmt.Errorf("open nfqueue %d: %s: %w", c.Num, what, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail("bind", err)
	}
	tv := unix.NsecToTimeval(int64(wakeEvery))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail("receive timeout", err)
	}
	if c.ReadBuffer > 0 {
		// FORCE passes net.core.rmem_max when we may; else ask within it.
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, c.ReadBuffer) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, c.ReadBuffer)
		}
	}
	// Errors echo only the header of the request they answer; overruns
	// are reported (ENOBUFS), which is the default, set here to be sure.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 0)
	return s, nil
}

func (s *socket) recv(b []byte, block bool) (int, unix.Errno) {
	flags := unix.MSG_TRUNC
	if !block {
		flags |= unix.MSG_DONTWAIT
	}
	// recvfrom without an address: unix.Recvfrom would allocate one.
	n, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}

func (s *socket) send(b []byte) error {
	for {
		_, err := unix.Write(s.fd, b)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func (s *socket) close() { _ = unix.Close(s.fd) }

// Num is the queue's number.
func (q *Queue) Num() uint16 { return q.cfg.Num }
