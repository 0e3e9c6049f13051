//go:build unix

package main

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/rules"
)

// sendKnock sends one knock. A TCP knock is a non-blocking connect that is
// closed at once: the kernel has sent the SYN by the time connect returns,
// and closing a socket in SYN-SENT sends nothing more (Linux and the BSDs,
// macOS included, alike).
func sendKnock(addr netip.Addr, k rules.Knock) error {
	family := unix.AF_INET
	if addr.Is6() {
		family = unix.AF_INET6
	}
	typ := unix.SOCK_STREAM
	if k.Proto == rules.ProtoUDP {
		typ = unix.SOCK_DGRAM
	}
	// Plain socket(2) and then the flags: macOS has no SOCK_NONBLOCK or
	// SOCK_CLOEXEC. Nothing runs a child in between.
	fd, err := unix.Socket(family, typ, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	var sa unix.Sockaddr
	if addr.Is4() {
		sa = &unix.SockaddrInet4{Port: int(k.Port), Addr: addr.As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(k.Port), Addr: addr.As16()}
	}
	if k.Proto == rules.ProtoUDP {
		return unix.Sendto(fd, nil, 0, sa)
	}
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		return fmt.Errorf("connect: %w", err)
	}
	return nil
}
