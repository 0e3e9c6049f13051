package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/windows"

	"github.com/knockwall/knockwall/rules"
)

// knockDialWait is how long a TCP knock's connect is left before it is
// abandoned. Windows answers a refused connect by trying again about half
// a second later; abandoning well before that keeps a knock one SYN.
const knockDialWait = 20 * time.Millisecond

// sendKnock sends one knock. A TCP knock is a connect abandoned after
// knockDialWait (Windows sends the SYN when the connect starts; an
// abandoned connect sends nothing more); a UDP knock is an empty datagram.
func sendKnock(addr netip.Addr, k rules.Knock) error {
	dst := netip.AddrPortFrom(addr, k.Port)
	if k.Proto == rules.ProtoUDP {
		return sendUDP(dst, nil)
	}
	c, err := net.DialTimeout("tcp", dst.String(), knockDialWait)
	if err == nil {
		// Something listens there: the knock was seen all the same.
		return c.Close()
	}
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, windows.WSAECONNREFUSED) {
		// Abandoned, or refused: the SYN went out.
		return nil
	}
	return fmt.Errorf("connect: %w", err)
}
