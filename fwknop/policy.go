package fwknop

import (
	"net/netip"
	"slices"
	"time"
)

// Check applies knockwall's policy to a verified request that arrived from
// src, for a service protecting the TCP ports ports and opening for
// openFor. It returns how long to grant access:
//
//   - the timestamp must be within maxAge of now (ErrStale, ErrFuture);
//   - the allow-IP must be 0.0.0.0 or src itself: a packet never grants
//     access to an address other than the one it came from (ErrAllowIP);
//   - every proto/port asked for must be a TCP port of the service; like
//     fwknopd, one port that may not be opened refuses the whole request
//     (ErrPort);
//   - a client timeout may shorten openFor, never lengthen it.
//
// Check does not allocate. It does not consult the replay cache: the caller
// adds r.ReplayKey after Check passes, so that a packet someone else sends
// first from another address cannot burn it.
func (r *Request) Check(src netip.Addr, now time.Time, maxAge time.Duration, ports []uint16, openFor time.Duration) (time.Duration, error) {
	unix, age := now.Unix(), int64(maxAge/time.Second)
	switch {
	case r.Timestamp < unix-age:
		return 0, ErrStale
	case r.Timestamp > unix+age:
		return 0, ErrFuture
	}
	if r.AllowIP != netip.IPv4Unspecified() && r.AllowIP != src.Unmap() {
		return 0, ErrAllowIP
	}
	if r.nAccess == 0 {
		return 0, ErrPort
	}
	for _, a := range r.Access() {
		if a.Proto != ProtoTCP || !slices.Contains(ports, a.Port) {
			return 0, ErrPort
		}
	}
	d := openFor
	if r.ClientTimeout > 0 {
		if t := time.Duration(r.ClientTimeout) * time.Second; t < d {
			d = t
		}
	}
	return d, nil
}

// Unbound reports whether the request names no address (allow-IP 0.0.0.0,
// fwknop -s): it then asks for whatever address it arrives from, so
// whoever sends it first, from wherever, gets the access. A service with
// fwknop.require_source refuses such requests (ErrUnbound); Check does not.
func (r *Request) Unbound() bool { return r.AllowIP == netip.IPv4Unspecified() }

// ForgetAt is when, in unix nanoseconds, the replay cache may forget a
// packet accepted at now under maxAge: ReplayWindowFactor×maxAge later.
func ForgetAt(now time.Time, maxAge time.Duration) int64 {
	return now.UnixNano() + ReplayWindowFactor*int64(maxAge)
}
