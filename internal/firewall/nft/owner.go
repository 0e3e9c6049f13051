package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Table flags (NFTA_TABLE_FLAGS). An owned table (NFT_TABLE_F_OWNER) can
// be changed or deleted only through the netlink socket that created or
// adopted it: every other process gets EPERM, and its `nft flush ruleset`
// passes it by. A persistent one (NFT_TABLE_F_PERSIST, Linux 6.9) stays in
// place when that socket closes, and the next process that sends NEWTABLE
// with the same flags adopts it. PERSIST cannot be changed on a table that
// exists: it is chosen when the table is made.
const (
	tableDormant = unix.NFT_TABLE_F_DORMANT
	tableOwner   = 0x2
	tablePersist = 0x4
	tableOwned   = tableOwner | tablePersist
)

// probeOwnerTable is created owned and persistent and deleted again in one
// batch by the owner probe.
const probeOwnerTable = "knockwall_probe_owner"

// ErrHeld is returned when another process holds the owned table: a
// knockwall that still runs.
var ErrHeld = errors.New("table inet knockwall is held by another process (is a knockwall daemon running? stop it first)")

// probeOwner reports whether the kernel makes owned, persistent tables:
// a batch that creates one and deletes it again either fails (an older
// kernel refuses the flags) or changes nothing.
func (b *Backend) probeOwner() error {
	return b.send([]netlink.Message{
		tableMsg(unix.NFT_MSG_NEWTABLE, probeOwnerTable, tableOwned),
		tableMsg(unix.NFT_MSG_DELTABLE, probeOwnerTable, 0),
	})
}

// wantFlags are the flags Apply gives knockwall's table.
func (b *Backend) wantFlags() uint32 {
	if b.owned {
		return tableOwned
	}
	return 0
}

// adopt makes this backend's socket the owner of a persistent table left
// by a process that ended (a restart, a crash, a clean stop with the guard
// kept). Sending the same flags to a table this socket owns changes
// nothing. Another live owner makes it fail with ErrHeld.
func (b *Backend) adopt() error {
	err := b.send([]netlink.Message{tableMsg(unix.NFT_MSG_NEWTABLE, Table.Name, tableOwned)})
	if errors.Is(err, syscall.EPERM) {
		return ErrHeld
	}
	if err != nil {
		return fmt.Errorf("nftables: adopt table inet %s: %w", Table.Name, err)
	}
	return nil
}

// tableHead is the start of an Apply batch: the table with the flags this
// backend wants. A table that exists with another persistence (an
// ordinary table from `nft -f`, or an owned one while owned_table is off)
// is deleted and made afresh in the same batch, so the guard is replaced,
// never absent; fresh reports that the batch starts from an empty table.
// Sending the wanted flags also wakes a table someone made dormant.
func (b *Backend) tableHead(st *state) (head []netlink.Message, fresh bool) {
	want := b.wantFlags()
	if st.exists && st.flags&tablePersist != want&tablePersist {
		return []netlink.Message{
			tableMsg(unix.NFT_MSG_DELTABLE, Table.Name, 0),
			tableMsg(unix.NFT_MSG_NEWTABLE, Table.Name, want),
		}, true
	}
	return []netlink.Message{tableMsg(unix.NFT_MSG_NEWTABLE, Table.Name, want)}, !st.exists
}

// tableFlags are t's flags. google/nftables decodes the attribute, a
// big-endian number on the wire, in host byte order.
func tableFlags(t *nftables.Table) uint32 {
	return binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, t.Flags))
}

// tableMsg is a NEWTABLE or DELTABLE request for the inet table name.
func tableMsg(typ int, name string, flags uint32) netlink.Message {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_TABLE_NAME, name)
	if typ == unix.NFT_MSG_NEWTABLE {
		ae.ByteOrder = binary.BigEndian
		ae.Uint32(unix.NFTA_TABLE_FLAGS, flags)
	}
	attrs, _ := ae.Encode() // a string and a number always encode
	hf := netlink.Request | netlink.Acknowledge
	if typ == unix.NFT_MSG_NEWTABLE {
		hf |= netlink.Create
	}
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ), Flags: hf},
		Data:   append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
}

// recorder returns a google/nftables connection that talks to no kernel:
// the messages of its Flush are collected in *msgs (without the batch
// markers), for send to put in a batch of its own making.
func recorder() (*nftables.Conn, *[]netlink.Message, error) {
	msgs := new([]netlink.Message)
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		var acks []netlink.Message
		for _, m := range req {
			if t := int(m.Header.Type); t == unix.NFNL_MSG_BATCH_BEGIN || t == unix.NFNL_MSG_BATCH_END {
				continue
			}
			*msgs = append(*msgs, m)
			if m.Header.Flags&netlink.Acknowledge != 0 {
				acks = append(acks, netlink.Message{
					Header: netlink.Header{Length: 4, Type: netlink.Error, Sequence: m.Header.Sequence, PID: m.Header.PID},
					Data:   []byte{0, 0, 0, 0},
				})
			}
		}
		return acks, nil
	}))
	if err != nil {
		return nil, nil, err
	}
	return c, msgs, nil
}

// send sends msgs as one nf_tables batch (one transaction: all or nothing)
// through the backend's own socket, the owner of the table, and waits for
// every acknowledgement. The kernel handles a batch while sendmsg runs, so
// all answers are queued once it returns; after an error the rest are
// drained, so that the next request on the socket reads its own answers.
func (b *Backend) send(msgs []netlink.Message) error {
	c := b.own
	req := make([]netlink.Message, 0, len(msgs)+2)
	req = append(req, batchMsg(unix.NFNL_MSG_BATCH_BEGIN))
	want := 0
	for _, m := range msgs {
		// Numbered and sized by this socket, not by the recorder.
		m.Header.Length, m.Header.Sequence, m.Header.PID = 0, 0, 0
		req = append(req, m)
		if m.Header.Flags&netlink.Acknowledge != 0 {
			want++
		}
	}
	req = append(req, batchMsg(unix.NFNL_MSG_BATCH_END))
	if _, err := c.SendMessages(req); err != nil {
		return fmt.Errorf("send batch: %w", err)
	}
	// Count acknowledgements only: a message sent with NLM_F_ECHO (a
	// rule) is answered with itself first.
	for got := 0; got < want; {
		replies, err := c.Receive()
		if err != nil {
			drain(c)
			return err
		}
		for _, r := range replies {
			if r.Header.Type == netlink.Error {
				got++
			}
		}
	}
	return nil
}

// drainWait bounds how long drain waits for an answer that is not there:
// answers to a batch are queued before sendmsg returns, so any that exist
// are read at once.
const drainWait = 5 * time.Millisecond

// drainMax bounds the answers drain reads: at most one per message of
// the largest batch knockwall sends, and then some.
const drainMax = 1 << 16

// drain reads and discards whatever answers wait on c.
func drain(c *netlink.Conn) {
	if c.SetReadDeadline(time.Now().Add(drainWait)) != nil {
		return
	}
	defer c.SetReadDeadline(time.Time{})
	for range drainMax {
		_, err := c.Receive()
		var errno syscall.Errno
		if err != nil && !errors.As(err, &errno) {
			return // the deadline, or a socket that fails: nothing more to read
		}
		// An answer, or an error answer, left over: read on.
	}
}

func batchMsg(typ int) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request},
		Data:   []byte{0, unix.NFNETLINK_V0, byte(unix.NFNL_SUBSYS_NFTABLES >> 8), byte(unix.NFNL_SUBSYS_NFTABLES & 0xff)},
	}
}
