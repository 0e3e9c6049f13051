// Package nfq is knockwall's kernel edge for NFQUEUE: it binds a queue, hands
// each packet's bytes to a handler and sends the handler's verdict back. All
// policy lives in the handler; this package only moves bytes and counts what
// goes wrong.
package nfq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Verdict is a handler's answer.
type Verdict struct {
	Accept  bool   // false drops
	SetMark bool   // set Mark on the packet (Accept only)
	Mark    uint32 // the packet mark to set
}

// Handler judges one packet. pkt starts at the IP header and is only valid
// during the call; mark is the packet's current mark.
type Handler func(pkt []byte, mark uint32) Verdict

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

// verdictSender is the part of *nfqueue.Nfqueue that answers packets.
type verdictSender interface {
	SetVerdict(id uint32, verdict int) error
	SetVerdictBatch(id uint32, verdict int) error
	SetVerdictWithOption(id uint32, verdict int, options ...nfqueue.VerdictOption) error
}

// Counters are a queue's statistics.
type Counters struct {
	Packets       atomic.Uint64
	Overruns      atomic.Uint64 // ENOBUFS: the kernel dropped messages to our socket
	VerdictErrors atomic.Uint64
	Panics        atomic.Uint64
}

// Queue is one bound NFQUEUE.
type Queue struct {
	nf       *nfqueue.Nfqueue
	out      verdictSender // nf, or a recorder in tests
	cfg      Config
	log      *slog.Logger
	Counters Counters

	fatal     chan error
	fatalOnce sync.Once
	lastLog   atomic.Int64 // unix nanos of the last rate-limited log

	// Verdict batching: a run of consecutive packets with the same
	// unmarked verdict is answered with one batch verdict, sent when the
	// run ends, reaches maxBatch, or the socket has nothing more queued
	// (so an idle queue answers at once and a busy one in batches).
	mu        sync.Mutex
	run       int    // packets in the run; 0: none
	runID     uint32 // id of the run's last packet
	runAccept bool
	runSince  time.Time
	queued    func() bool // whether the socket holds more messages
	Batches   atomic.Uint64
}

// logEvery limits per-packet error logs.
const logEvery = time.Second

const (
	// maxBatch bounds a batch verdict.
	maxBatch = 64
	// batchAge is how long a run may wait if no packet comes to end it (a
	// safety net: runs end with the socket's queue).
	batchAge     = 2 * time.Millisecond
	batchJanitor = time.Millisecond
)

// Open opens and binds queue c.Num and starts delivering packets to h until
// ctx is done. It returns once the queue is bound, so the caller knows when
// it is safe to divert traffic.
func Open(ctx context.Context, c Config, h Handler, log *slog.Logger) (*Queue, error) {
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      c.Num,
		MaxQueueLen:  c.MaxLen,
		MaxPacketLen: c.CopyRange,
		Copymode:     nfqueue.NfQnlCopyPacket,
		AfFamily:     unix.AF_UNSPEC,
		// Never NfQaCfgFlagFailOpen: a full queue must drop, not accept.
		Flags:        0,
		WriteTimeout: time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("open nfqueue %d: %w", c.Num, err)
	}
	q := &Queue{nf: nf, out: nf, cfg: c, log: log.With("queue", c.Num), fatal: make(chan error, 1)}
	if c.ReadBuffer > 0 {
		if err := nf.Con.SetReadBuffer(c.ReadBuffer); err != nil {
			q.log.Warn("cannot set socket receive buffer", "bytes", c.ReadBuffer, "err", err)
		}
	}
	// Report ENOBUFS instead of hiding it: an overrun is counted and logged.
	_ = nf.SetOption(netlink.NoENOBUFS, false)
	if q.queued, err = queuedFunc(nf.Con); err != nil {
		nf.Close()
		return nil, fmt.Errorf("nfqueue %d: %w", c.Num, err)
	}

	hook := func(a nfqueue.Attribute) int {
		q.handle(a, h)
		return 0
	}
	errfn := func(err error) int {
		if ctx.Err() != nil {
			return 1
		}
		if errors.Is(err, unix.ENOBUFS) {
			q.Counters.Overruns.Add(1)
			q.rateLimited("kernel queue overrun: the kernel dropped packets for this queue", "err", err)
			return 0
		}
		var op *netlink.OpError
		if errors.As(err, &op) && (op.Timeout() || op.Temporary()) {
			return 0
		}
		q.fatalOnce.Do(func() { q.fatal <- fmt.Errorf("queue %d receive: %w", c.Num, err) })
		return 1
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, errfn); err != nil {
		nf.Close()
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("bind nfqueue %d: %w (knockwall run needs root or CAP_NET_ADMIN)", c.Num, err)
		}
		return nil, fmt.Errorf("bind nfqueue %d: %w", c.Num, err)
	}
	go q.flushStale(ctx)
	return q, nil
}

// queuedFunc returns a function reporting whether the socket's receive
// queue holds another message. Netlink sockets do not answer SIOCINQ, so it
// peeks at one byte without waiting. Made once, so the per-packet call does
// not allocate.
func queuedFunc(c *netlink.Conn) (func() bool, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var (
		n   int
		buf [1]byte
	)
	probe := func(fd uintptr) {
		n, _, _ = unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	}
	return func() bool {
		n = 0
		if rc.Control(probe) != nil {
			return false
		}
		return n > 0
	}, nil
}

// flushStale sends a run that nothing ended, should a message that is no
// packet have kept the socket's queue non-empty.
func (q *Queue) flushStale(ctx context.Context) {
	t := time.NewTicker(batchJanitor)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			q.mu.Lock()
			if q.run > 0 && now.Sub(q.runSince) >= batchAge {
				q.flushLocked()
			}
			q.mu.Unlock()
		}
	}
}

func (q *Queue) flushLocked() {
	if q.run == 0 {
		return
	}
	v := nfqueue.NfDrop
	if q.runAccept {
		v = nfqueue.NfAccept
	}
	var err error
	if q.run == 1 {
		err = q.out.SetVerdict(q.runID, v)
	} else {
		err = q.out.SetVerdictBatch(q.runID, v)
		q.Batches.Add(1)
	}
	q.run = 0
	if err != nil {
		q.Counters.VerdictErrors.Add(1)
		q.rateLimited("cannot send verdict", "err", err)
	}
}

// Fatal delivers an error when the queue stopped receiving for good.
func (q *Queue) Fatal() <-chan error { return q.fatal }

// Close unbinds the queue.
func (q *Queue) Close() error { return q.nf.Close() }

func (q *Queue) handle(a nfqueue.Attribute, h Handler) {
	if a.PacketID == nil {
		return
	}
	id := *a.PacketID
	q.Counters.Packets.Add(1)
	var pkt []byte
	if a.Payload != nil {
		pkt = *a.Payload
	}
	var mark uint32
	if a.Mark != nil {
		mark = *a.Mark
	}
	v := q.safeHandle(h, pkt, mark)

	q.mu.Lock()
	defer q.mu.Unlock()
	if v.Accept && v.SetMark {
		// A marked verdict goes alone; the run before it goes first, so
		// a batch verdict never covers this packet.
		q.flushLocked()
		if err := q.out.SetVerdictWithOption(id, nfqueue.NfAccept, nfqueue.WithMark(v.Mark)); err != nil {
			q.Counters.VerdictErrors.Add(1)
			q.rateLimited("cannot send verdict", "err", err)
		}
		return
	}
	if q.run > 0 && q.runAccept != v.Accept {
		q.flushLocked()
	}
	if q.run == 0 {
		q.runSince = time.Now()
	}
	q.run++
	q.runID = id
	q.runAccept = v.Accept
	if q.run >= maxBatch || !q.queued() {
		q.flushLocked()
	}
}

// safeHandle runs h and turns a panic into a drop: a bug in the engine must
// not take the daemon down, nor let a packet through.
func (q *Queue) safeHandle(h Handler, pkt []byte, mark uint32) (v Verdict) {
	defer func() {
		if r := recover(); r != nil {
			q.Counters.Panics.Add(1)
			q.rateLimited("handler panicked; packet dropped", "panic", fmt.Sprint(r))
			v = Verdict{}
		}
	}()
	return h(pkt, mark)
}

func (q *Queue) rateLimited(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := q.lastLog.Load()
	if now-last < int64(logEvery) || !q.lastLog.CompareAndSwap(last, now) {
		return
	}
	q.log.Error(msg, args...)
}
