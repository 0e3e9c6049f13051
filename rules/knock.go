package rules

import (
	"fmt"
	"strconv"
	"strings"
)

// Action is what a packet that may not pass gets.
type Action uint8

// Actions.
const (
	ActionReject Action = iota // answer like a closed port
	ActionDrop                 // discard silently
)

func (a Action) String() string {
	if a == ActionDrop {
		return ClosedDrop
	}
	return ClosedReject
}

// Knock is one step of a sequence: a protocol and a destination port.
type Knock struct {
	Proto uint8
	Port  uint16
}

// Key packs a knock into the uint32 the tracker compares.
func (k Knock) Key() uint32 { return KnockKey(k.Proto, k.Port) }

// KnockKey packs a protocol and port the way Knock.Key does.
func KnockKey(proto uint8, port uint16) uint32 { return uint32(proto)<<16 | uint32(port) }

func (k Knock) String() string {
	if k.Proto == ProtoUDP {
		return strconv.Itoa(int(k.Port)) + "/udp"
	}
	return strconv.Itoa(int(k.Port)) + "/tcp"
}

// ParseKnock parses "7000", "7000/tcp" or "9000/udp".
func ParseKnock(s string) (Knock, error) {
	s = strings.TrimSpace(s)
	num, proto, hasProto := strings.Cut(s, "/")
	k := Knock{Proto: ProtoTCP}
	if hasProto {
		switch strings.ToLower(proto) {
		case "tcp":
		case "udp":
			k.Proto = ProtoUDP
		default:
			return Knock{}, fmt.Errorf("%q: protocol must be tcp or udp", s)
		}
	}
	p, err := strconv.Atoi(num)
	if err != nil || p < 1 || p > 65535 || num[0] < '0' || num[0] > '9' {
		return Knock{}, fmt.Errorf("%q: port must be a number from 1 to 65535", s)
	}
	k.Port = uint16(p)
	return k, nil
}
