package firewall

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Watcher tells cheaply, without a fork and without reading any rule,
// whether the host's firewall may have changed: Generation returns a number
// that changes with every change of the nf_tables ruleset (nftables, and
// iptables-nft, which is nftables underneath) and of each iptables-legacy
// table knockwall uses. The daemon polls it and runs a full Check only when
// it moves (and now and then regardless).
type Watcher struct {
	nl *netlink.Conn // nil when the kernel has no nf_tables
}

// NewWatcher opens the netlink socket Generation asks.
func NewWatcher() *Watcher {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return &Watcher{}
	}
	return &Watcher{nl: c}
}

// Events delivers a tick, soon after, whenever the nf_tables ruleset changes
// (a netlink subscription to its multicast group; a burst of changes may
// make one tick), until ctx ends. It gives nothing when the kernel has no
// nf_tables; iptables-legacy changes are seen only by Generation.
func (w *Watcher) Events(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return out
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		c.Close()
		return out
	}
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	go func() {
		for {
			// An error (the buffer overflowed under a burst, or the socket
			// closed) ticks too: something changed, or we are done.
			_, err := c.Receive()
			select {
			case out <- struct{}{}:
			default:
			}
			if err != nil && ctx.Err() != nil {
				return
			}
		}
	}()
	return out
}

// Close closes the socket.
func (w *Watcher) Close() error {
	if w.nl == nil {
		return nil
	}
	return w.nl.Close()
}

// Generation implements the watch; see Watcher.
func (w *Watcher) Generation() (uint64, error) {
	h := fnv.New64a()
	var b [8]byte
	if w.nl != nil {
		gen, err := w.nftGen()
		if err != nil {
			return 0, err
		}
		binary.BigEndian.PutUint32(b[:], gen)
		h.Write(b[:4])
	}
	for _, f := range xtFamilies {
		// Only tables the kernel lists: asking for one that is not loaded
		// would create it (an empty legacy table hooked into every packet's
		// path, and iptables-nft warning about legacy tables from then on).
		loaded, _ := os.ReadFile(f.names)
		for _, name := range xtTables {
			if !listed(loaded, name) {
				continue
			}
			size, entries := xtInfo(f.family, name)
			h.Write([]byte(name))
			binary.BigEndian.PutUint32(b[:], size)
			binary.BigEndian.PutUint32(b[4:], entries)
			h.Write(b[:])
		}
	}
	return h.Sum64(), nil
}

// listed reports whether name is a line of names.
func listed(names []byte, name string) bool {
	for line := range bytes.Lines(names) {
		if string(bytes.TrimSpace(line)) == name {
			return true
		}
	}
	return false
}

// nftGen asks the nf_tables ruleset generation (NFT_MSG_GETGEN).
func (w *Watcher) nftGen() (uint32, error) {
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}
	msgs, err := w.nl.Execute(req)
	if err != nil {
		return 0, fmt.Errorf("nf_tables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("nf_tables generation: no answer")
}

// xtFamilies are the iptables-legacy families and where the kernel lists
// their loaded tables (the files exist once ip_tables or ip6_tables is),
// for the calling thread's network namespace, where xtInfo asks too.
var xtFamilies = []struct {
	family int
	names  string
}{{unix.AF_INET, "/proc/thread-self/net/ip_tables_names"}, {unix.AF_INET6, "/proc/thread-self/net/ip6_tables_names"}}

// xtTables are the legacy tables knockwall's rules use.
var xtTables = []string{"mangle", "filter", "security"}

// iptGetinfo is struct ipt_getinfo (and ip6t_getinfo, the same layout).
type iptGetinfo struct {
	Name       [32]byte
	ValidHooks uint32
	HookEntry  [5]uint32
	Underflow  [5]uint32
	NumEntries uint32
	Size       uint32
}

// soGetInfo is IPT_SO_GET_INFO and IP6T_SO_GET_INFO.
const soGetInfo = 64

// xtInfo returns the size and entry count of an iptables-legacy table, or
// zeros when it is not loaded (iptables-nft hosts have none).
func xtInfo(family int, table string) (size, entries uint32) {
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return 0, 0
	}
	defer unix.Close(fd)
	var info iptGetinfo
	copy(info.Name[:], table)
	level := unix.IPPROTO_IP
	if family == unix.AF_INET6 {
		level = unix.IPPROTO_IPV6
	}
	l := uint32(unsafe.Sizeof(info))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), soGetInfo,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return 0, 0
	}
	return info.Size, info.NumEntries
}
