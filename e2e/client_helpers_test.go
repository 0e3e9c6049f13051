package e2e

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/knockwall/knockwall/rules"
	"golang.org/x/sys/unix"
)

// Real clients from chosen sources in the client namespace: knocks sent
// the way `knockwall knock` sends them, connects to the protected port,
// and legitimate knock-and-connect tries.

const (
	// tryAttempt is one connect attempt's timeout.
	tryAttempt = 100 * time.Millisecond
	// grantGap is waited beyond open_for before a source knocks again.
	grantGap = 50 * time.Millisecond
)

// knockFrom sends seq to dst from src, in the client namespace, the way
// `knockwall knock` does (an abandoned non-blocking connect per TCP knock,
// an empty datagram per UDP knock), but from a chosen source address.
func (e *env) knockFrom(src, dst netip.Addr, seq ...string) error {
	return e.pair.Client.Do(func() error {
		for _, s := range seq {
			k, err := rules.ParseKnock(s)
			if err != nil {
				return err
			}
			if err := sendKnockFrom(src, netip.AddrPortFrom(dst, k.Port), k.Proto); err != nil {
				return fmt.Errorf("knock %s from %v: %w", s, src, err)
			}
		}
		return nil
	})
}

func sendKnockFrom(src netip.Addr, dst netip.AddrPort, proto uint8) error {
	typ := unix.SOCK_STREAM
	if proto == rules.ProtoUDP {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	if proto == rules.ProtoUDP {
		return unix.Sendto(fd, nil, 0, sa)
	}
	// The SYN is out when connect returns; closing in SYN-SENT sends nothing.
	if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return fmt.Errorf("connect: %w", err)
	}
	return nil
}

// connectWithin dials the protected port from src, each attempt bounded by
// attempt, until one connects and echoes or budget has passed.
func (e *env) connectWithin(src netip.Addr, budget, attempt time.Duration) error {
	deadline := time.Now().Add(budget)
	var errs []string
	for {
		c, err := e.dial(src, e.server4(protectedPort), attempt)
		if err == nil {
			err = echo(c, "hi from "+src.String())
			c.Close()
			if err == nil {
				return nil
			}
		}
		errs = append(errs, err.Error())
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%d attempts in %v: %s", len(errs), budget, strings.Join(errs, "; "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// knockConnect is one legitimate try: the knock, then connects for up to
// budget.
func (e *env) knockConnect(src netip.Addr, budget time.Duration) error {
	if err := e.knockFrom(src, e.pair.Server4, defaultSequence...); err != nil {
		return err
	}
	return e.connectWithin(src, budget, tryAttempt)
}

// notConnected dials once from src and returns an error only if it
// connected: refused (RST) and timed out (a drop, or a queue-full drop)
// both count as closed.
func (e *env) notConnected(src netip.Addr, timeout time.Duration) (refused bool, err error) {
	c, err := e.dial(src, e.server4(protectedPort), timeout)
	if err == nil {
		c.Close()
		return false, fmt.Errorf("%v connected to the protected port %v", src, c.RemoteAddr())
	}
	return errors.Is(err, syscall.ECONNREFUSED), nil
}

// triesResult counts legitimate tries.
type triesResult struct {
	ok, total int
	fails     []string
}

// knockTries makes n tries, each connecting for up to budget after its
// knock, taking sources in turn; a source knocks again only once its last
// grant must have lapsed (openFor after its last try ended), and first
// checks that the port is closed to it. It stops early when keepGoing says
// so.
func (e *env) knockTries(t *testing.T, n int, openFor, budget time.Duration, keepGoing func() bool, srcs ...netip.Addr) triesResult {
	t.Helper()
	var r triesResult
	free := make([]time.Time, len(srcs)) // when each source's grant is over
	for i := 0; i < n && keepGoing(); i++ {
		j := i % len(srcs)
		src := srcs[j]
		time.Sleep(time.Until(free[j]))
		if _, err := e.notConnected(src, tryAttempt); err != nil {
			t.Errorf("try %d: before the knock: %v (a grant outlived open_for %v)", i, err, openFor)
		}
		start := time.Now()
		err := e.knockConnect(src, budget)
		free[j] = time.Now().Add(openFor + grantGap)
		r.total++
		if err != nil {
			r.fails = append(r.fails, fmt.Sprintf("try %d from %v after %v: %v", i, src, time.Since(start).Round(time.Millisecond), err))
			continue
		}
		r.ok++
	}
	return r
}
