package nfq

// The NFQUEUE netlink wire format, as far as knockwall speaks it: read packet
// messages, write verdicts and queue configuration. Pure functions over
// bytes, so they are tested and fuzzed without a kernel. The layouts are the
// kernel's uapi headers: linux/netlink.h, linux/netfilter/nfnetlink.h and
// linux/netfilter/nfnetlink_queue.h. Netlink headers and attribute headers
// are in host byte order; the NFQUEUE payloads in network byte order.

import (
	"encoding/binary"
	"errors"
)

const (
	nlmsgHdrLen = 16 // struct nlmsghdr
	nfgenLen    = 4  // struct nfgenmsg
	attrHdrLen  = 4  // struct nlattr

	nlmsgNoop  = 1 // NLMSG_NOOP
	nlmsgError = 2 // NLMSG_ERROR
	nlmsgDone  = 3 // NLMSG_DONE

	nlmFRequest = 0x1 // NLM_F_REQUEST
	nlmFAck     = 0x4 // NLM_F_ACK

	subsysQueue = 3 // NFNL_SUBSYS_QUEUE

	msgPacket       = subsysQueue<<8 | 0 // NFQNL_MSG_PACKET
	msgVerdict      = subsysQueue<<8 | 1 // NFQNL_MSG_VERDICT
	msgConfig       = subsysQueue<<8 | 2 // NFQNL_MSG_CONFIG
	msgVerdictBatch = subsysQueue<<8 | 3 // NFQNL_MSG_VERDICT_BATCH

	// Packet message attributes (enum nfqnl_attr_type).
	attrPacketHdr  = 1  // NFQA_PACKET_HDR: __be32 id, __be16 hw_protocol, __u8 hook
	attrVerdictHdr = 2  // NFQA_VERDICT_HDR: __be32 verdict, __be32 id
	attrMark       = 3  // NFQA_MARK: __be32
	attrPayload    = 10 // NFQA_PAYLOAD
	attrTypeMask   = 0x3fff

	// Configuration attributes (enum nfqnl_attr_config).
	cfgCmd    = 1 // NFQA_CFG_CMD: __u8 command, __u8 pad, __be16 pf
	cfgParams = 2 // NFQA_CFG_PARAMS: __be32 copy_range, __u8 copy_mode
	cfgMaxLen = 3 // NFQA_CFG_QUEUE_MAXLEN: __be32
	cfgMask   = 4 // NFQA_CFG_MASK: __be32
	cfgFlags  = 5 // NFQA_CFG_FLAGS: __be32

	cmdBind      = 1 // NFQNL_CFG_CMD_BIND
	copyPacket   = 2 // NFQNL_COPY_PACKET
	flagFailOpen = 1 // NFQA_CFG_F_FAIL_OPEN

	nfDrop   = 0 // NF_DROP
	nfAccept = 1 // NF_ACCEPT

	// verdictMax is the longest verdict message: header, nfgenmsg, the
	// verdict attribute and a mark attribute.
	verdictMax = nlmsgHdrLen + nfgenLen + attrHdrLen + 8 + attrHdrLen + 4
)

var ne = binary.NativeEndian

// errMalformed reports a netlink message that does not parse.
var errMalformed = errors.New("malformed netlink message")

func align4(n int) int { return (n + 3) &^ 3 }

// nextMsg splits the first netlink message off b: its type, its payload
// (after the netlink header) and what follows it. A length field that does
// not fit b ends the walk with errMalformed.
func nextMsg(b []byte) (typ uint16, payload, rest []byte, err error) {
	if len(b) < nlmsgHdrLen {
		return 0, nil, nil, errMalformed
	}
	l := int(ne.Uint32(b[0:4]))
	if l < nlmsgHdrLen || l > len(b) {
		return 0, nil, nil, errMalformed
	}
	typ = ne.Uint16(b[4:6])
	payload = b[nlmsgHdrLen:l]
	if a := align4(l); a < len(b) {
		rest = b[a:]
	}
	return typ, payload, rest, nil
}

// packetMsg is what knockwall reads from an NFQNL_MSG_PACKET.
type packetMsg struct {
	id      uint32
	hasID   bool
	mark    uint32
	payload []byte
}

// parsePacket reads a packet message's payload (after the netlink header).
// It never panics; a message without a packet id is malformed, since it
// cannot be answered. If the attributes break off after the id, the id is
// still reported (hasID) so the packet can be dropped rather than left
// waiting in the kernel.
func parsePacket(b []byte) (p packetMsg, err error) {
	if len(b) < nfgenLen {
		return p, errMalformed
	}
	b = b[nfgenLen:]
	for len(b) >= attrHdrLen {
		l := int(ne.Uint16(b[0:2]))
		if l < attrHdrLen || l > len(b) {
			return p, errMalformed
		}
		v := b[attrHdrLen:l]
		switch ne.Uint16(b[2:4]) & attrTypeMask {
		case attrPacketHdr:
			if len(v) < 4 {
				return p, errMalformed
			}
			p.id, p.hasID = binary.BigEndian.Uint32(v), true
		case attrMark:
			if len(v) < 4 {
				return p, errMalformed
			}
			p.mark = binary.BigEndian.Uint32(v)
		case attrPayload:
			p.payload = v
		}
		if a := align4(l); a < len(b) {
			b = b[a:]
		} else {
			b = nil
		}
	}
	if !p.hasID {
		return p, errMalformed
	}
	return p, nil
}

// putNlmsgHdr writes a netlink header and the nfgenmsg after it.
func putNlmsgHdr(b []byte, length int, typ, flags uint16, seq uint32, queue uint16) {
	ne.PutUint32(b[0:4], uint32(length))
	ne.PutUint16(b[4:6], typ)
	ne.PutUint16(b[6:8], flags)
	ne.PutUint32(b[8:12], seq)
	ne.PutUint32(b[12:16], 0) // to the kernel
	b[16] = 0                 // AF_UNSPEC: the queue, not a family
	b[17] = 0                 // NFNETLINK_V0
	binary.BigEndian.PutUint16(b[18:20], queue)
}

func putAttrHdr(b []byte, length int, typ uint16) {
	ne.PutUint16(b[0:2], uint16(length))
	ne.PutUint16(b[2:4], typ)
}

// putVerdict writes into buf (at least verdictMax bytes) the verdict message
// for packet id of queue, and returns the message. batch makes it cover every
// packet up to id (NFQNL_MSG_VERDICT_BATCH); setMark sets the packet mark.
// It does not allocate.
func putVerdict(buf []byte, queue uint16, id uint32, accept, batch, setMark bool, mark uint32) []byte {
	n := nlmsgHdrLen + nfgenLen + attrHdrLen + 8
	if setMark {
		n += attrHdrLen + 4
	}
	typ := uint16(msgVerdict)
	if batch {
		typ = msgVerdictBatch
	}
	b := buf[:n]
	putNlmsgHdr(b, n, typ, nlmFRequest, 0, queue)
	a := b[nlmsgHdrLen+nfgenLen:]
	putAttrHdr(a, attrHdrLen+8, attrVerdictHdr)
	v := uint32(nfDrop)
	if accept {
		v = nfAccept
	}
	binary.BigEndian.PutUint32(a[4:8], v)
	binary.BigEndian.PutUint32(a[8:12], id)
	if setMark {
		putAttrHdr(a[12:], attrHdrLen+4, attrMark)
		binary.BigEndian.PutUint32(a[16:20], mark)
	}
	return b
}

// configMsg is the one message that binds queue and sets it up, asking for
// an acknowledgement: the kernel applies the command first (creating the
// queue instance), then the parameters. In the moment between the two, a
// packet meets a queue that copies nothing (6.x: it is refused and dropped)
// or only metadata (older kernels: Queue.bind drops it); either way it is
// dropped, never let through. FAIL_OPEN is masked and cleared: a full queue
// drops.
func configMsg(seq uint32, queue uint16, copyRange, maxLen uint32) []byte {
	n := nlmsgHdrLen + nfgenLen +
		attrHdrLen + 4 + // cmd
		attrHdrLen + align4(5) + // params
		attrHdrLen + 4 + // maxlen
		attrHdrLen + 4 + // mask
		attrHdrLen + 4 // flags
	b := make([]byte, n)
	putNlmsgHdr(b, n, msgConfig, nlmFRequest|nlmFAck, seq, queue)
	a := b[nlmsgHdrLen+nfgenLen:]
	putAttrHdr(a, attrHdrLen+4, cfgCmd)
	a[4] = cmdBind // pf (a[6:8]) is unused by BIND
	a = a[8:]
	putAttrHdr(a, attrHdrLen+5, cfgParams)
	binary.BigEndian.PutUint32(a[4:8], copyRange)
	a[8] = copyPacket
	a = a[attrHdrLen+align4(5):]
	putAttrHdr(a, attrHdrLen+4, cfgMaxLen)
	binary.BigEndian.PutUint32(a[4:8], maxLen)
	a = a[8:]
	putAttrHdr(a, attrHdrLen+4, cfgMask)
	binary.BigEndian.PutUint32(a[4:8], flagFailOpen)
	a = a[8:]
	putAttrHdr(a, attrHdrLen+4, cfgFlags)
	binary.BigEndian.PutUint32(a[4:8], 0)
	return b
}

// parseError reads an NLMSG_ERROR payload: the (negative) errno and the
// sequence number of the request it answers. errno 0 is an acknowledgement.
func parseError(b []byte) (errno int32, seq uint32, err error) {
	if len(b) < 4+nlmsgHdrLen {
		return 0, 0, errMalformed
	}
	return -int32(ne.Uint32(b[0:4])), ne.Uint32(b[4+8 : 4+12]), nil
}
