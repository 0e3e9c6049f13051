// Command bareconsumer is the NFQUEUE baseline for knockwall's end-to-end
// benchmark: a consumer that accepts every packet and does nothing else.
// By default it is a go-nfqueue v2 consumer, written to be as fast as the
// library allows: with -batch N it accepts with one SetVerdictBatch per N
// packets and on a short idle timer, so no packet waits long; with -peek as
// well whenever the socket holds no further message. With -direct it is
// knockwall's own queue loop (internal/nfq) with a handler that accepts
// everything: knockwall minus its engine. It prints the packets it verdicted
// when it gets SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/knockwall/knockwall/internal/nfq"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func main() {
	queue := flag.Uint("queue", 0, "queue number")
	batch := flag.Int("batch", 1, "packets per verdict message (1: one verdict each)")
	maxLen := flag.Uint("maxlen", 4096, "kernel queue length")
	rcvbuf := flag.Int("rcvbuf", 4<<20, "socket receive buffer bytes (0: the system default)")
	copyRange := flag.Uint("copy", 128, "bytes of each packet the kernel copies (-direct)")
	peek := flag.Bool("peek", false, "with -batch: also flush when the socket holds no further message")
	direct := flag.Bool("direct", false, "use knockwall's own queue loop (internal/nfq) instead of go-nfqueue")
	flag.Parse()
	if *direct {
		if err := runDirect(uint16(*queue), uint32(*maxLen), *rcvbuf, uint32(*copyRange)); err != nil {
			fmt.Fprintln(os.Stderr, "bareconsumer:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(uint16(*queue), *batch, uint32(*maxLen), *rcvbuf, *peek); err != nil {
		fmt.Fprintln(os.Stderr, "bareconsumer:", err)
		os.Exit(1)
	}
}

func runDirect(queue uint16, maxLen uint32, rcvbuf int, copyRange uint32) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	q, err := nfq.Open(ctx, nfq.Config{Num: queue, MaxLen: maxLen, CopyRange: copyRange, ReadBuffer: rcvbuf},
		func([]byte, uint32) nfq.Answer { return nfq.Answer{Accept: true} },
		slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	_ = q.Close()
	fmt.Println("verdicted", q.Counters.Packets.Load())
	return nil
}

func run(queue uint16, batch int, maxLen uint32, rcvbuf int, peek bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue: queue, MaxQueueLen: maxLen, MaxPacketLen: 128,
		Copymode: nfqueue.NfQnlCopyPacket, AfFamily: unix.AF_UNSPEC, WriteTimeout: time.Second,
	})
	if err != nil {
		return err
	}
	defer nf.Close()
	_ = nf.Con.SetReadBuffer(rcvbuf)
	_ = nf.SetOption(netlink.NoENOBUFS, true)

	var verdicted, lastID, flushed atomic.Uint64
	var pending atomic.Int64
	more := func() bool { return true }
	if peek {
		rc, err := nf.Con.SyscallConn()
		if err != nil {
			return err
		}
		var n int
		var buf [1]byte
		probe := func(fd uintptr) { n, _, _ = unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT) }
		more = func() bool { n = 0; _ = rc.Control(probe); return n > 0 }
	}
	hook := func(a nfqueue.Attribute) int {
		id := *a.PacketID
		if batch <= 1 {
			_ = nf.SetVerdict(id, nfqueue.NfAccept)
			verdicted.Add(1)
			return 0
		}
		lastID.Store(uint64(id))
		if pending.Add(1) >= int64(batch) || !more() {
			_ = nf.SetVerdictBatch(id, nfqueue.NfAccept)
			verdicted.Add(uint64(pending.Swap(0)))
			flushed.Store(uint64(id))
		}
		return 0
	}
	errfn := func(e error) int {
		if ctx.Err() != nil {
			return 1
		}
		var op *netlink.OpError
		if errors.As(e, &op) && (op.Timeout() || op.Temporary()) {
			return 0
		}
		return 0 // keep going: the baseline must not stop on overruns
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, errfn); err != nil {
		return err
	}
	fmt.Println("ready")
	if batch > 1 {
		// Idle flush: a packet never waits more than a millisecond.
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				fmt.Println("verdicted", verdicted.Load())
				return nil
			case <-t.C:
				if id := uint32(lastID.Load()); pending.Load() > 0 && uint64(id) != flushed.Load() {
					_ = nf.SetVerdictBatch(id, nfqueue.NfAccept)
					verdicted.Add(uint64(pending.Swap(0)))
					flushed.Store(uint64(id))
				}
			}
		}
	}
	<-ctx.Done()
	fmt.Println("verdicted", verdicted.Load())
	return nil
}
