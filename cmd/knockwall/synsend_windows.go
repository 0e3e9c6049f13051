package main

import "net/netip"

// synSupported: Windows gives no raw TCP sockets (it refuses to send TCP
// through raw sockets at all), so a token cannot travel inside a SYN.
const synSupported = false

func sendSYN(netip.Addr, netip.AddrPort, []byte) error { return errNoSYN }
