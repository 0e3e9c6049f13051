package rules

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

var serviceName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// ifName is what an interface name in firewall.trusted_interfaces may be: what
// Linux allows and iptables and nft take as a plain name.
var ifName = regexp.MustCompile(`^[A-Za-z0-9._@:-]{1,15}$`)

// badInterface returns the index of the first name in names that is not
// an interface name, or -1.
func badInterface(names []string) int {
	for i, n := range names {
		if !ifName.MatchString(n) {
			return i
		}
	}
	return -1
}

func validateGlobal(c Config) error {
	switch {
	case c.Queue.Num < 0 || c.Queue.Num > 65535:
		return keyErr("queue.num", "must be from 0 to 65535, got %d", c.Queue.Num)
	case c.Queue.Count < 1 || c.Queue.Count > MaxQueues:
		return keyErr("queue.count", "must be from 1 to %d, got %d", MaxQueues, c.Queue.Count)
	case c.Queue.Num+c.Queue.Count-1 > 65535:
		return keyErr("queue.count", "queues %d..%d run past 65535", c.Queue.Num, c.Queue.Num+c.Queue.Count-1)
	case c.Queue.MaxLen < 1:
		return keyErr("queue.max_len", "must be at least 1, got %d", c.Queue.MaxLen)
	case !slices.Contains(logLevels, c.Log.Level):
		return keyErr("log.level", "must be one of %s, got %q", strings.Join(logLevels, ", "), c.Log.Level)
	case c.Log.Format != "text" && c.Log.Format != "json":
		return keyErr("log.format", "must be text or json, got %q", c.Log.Format)
	case c.Tracker.MaxPending < 1:
		return keyErr("tracker.max_pending", "must be at least 1, got %d", c.Tracker.MaxPending)
	case c.Tracker.MaxGrants < 1:
		return keyErr("tracker.max_grants", "must be at least 1, got %d", c.Tracker.MaxGrants)
	case c.Tracker.MaxNonces < 1:
		return keyErr("tracker.max_nonces", "must be at least 1, got %d", c.Tracker.MaxNonces)
	case c.Tracker.KnockRate < 0:
		return keyErr("tracker.knock_rate", "must be 0 (no limit) or positive, got %g", c.Tracker.KnockRate)
	case c.Tracker.KnockRate > 0 && c.Tracker.KnockBurst < 1:
		return keyErr("tracker.knock_burst", "must be at least 1 when tracker.knock_rate is set, got %d", c.Tracker.KnockBurst)
	case len(c.Firewall.Interfaces) > 0:
		return keyErr("firewall.interfaces", "is replaced by firewall.trusted_interfaces: list the interfaces knockwall leaves alone (a router's LAN, for example [br-lan]); every other interface, one that appears later included, is protected")
	case badInterface(c.Firewall.TrustedInterfaces) >= 0:
		i := badInterface(c.Firewall.TrustedInterfaces)
		return keyErr(fmt.Sprintf("firewall.trusted_interfaces[%d]", i), "%q is not an interface name (1 to 15 of A-Z a-z 0-9 . _ - @ :)", c.Firewall.TrustedInterfaces[i])
	case c.Firewall.Backend != BackendAuto && c.Firewall.Backend != BackendNftables && c.Firewall.Backend != BackendIptables:
		return keyErr("firewall.backend", "must be auto, nftables or iptables, got %q", c.Firewall.Backend)
	case c.Firewall.MarkMask <= 0 || c.Firewall.MarkMask > 0xffffffff:
		return keyErr("firewall.mark_mask", "must be a non-zero 32-bit mask")
	case c.Firewall.AcceptMark <= 0 || c.Firewall.AcceptMark&^c.Firewall.MarkMask != 0:
		return keyErr("firewall.accept_mark", "must be non-zero and inside firewall.mark_mask")
	case c.Firewall.RejectMark <= 0 || c.Firewall.RejectMark&^c.Firewall.MarkMask != 0:
		return keyErr("firewall.reject_mark", "must be non-zero and inside firewall.mark_mask")
	case c.Firewall.AcceptMark == c.Firewall.RejectMark:
		return keyErr("firewall.reject_mark", "must differ from firewall.accept_mark")
	}
	return nil
}
