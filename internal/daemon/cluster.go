package daemon

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"time"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/internal/cluster"
	"github.com/knockwall/knockwall/internal/lograte"
	"github.com/knockwall/knockwall/internal/state"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
)

// shareEvents bounds the grants and spent tokens waiting to be told to
// the cluster; past it they are counted as dropped (the peers then learn
// of the grant only if it is renewed).
const shareEvents = 4096

// Sharer is the cluster as the daemon tells it of local events
// (*cluster.Node).
type Sharer interface {
	LocalGrant(src netip.Addr, service string, hash uint64, expires time.Time, method uint8, limited bool, left int, at time.Time)
	LocalRevoke(src netip.Addr, service string, at time.Time)
	LocalUsed(service string, method uint8, key []byte, until time.Time)
	Origin(src netip.Addr, service string) string
	Stats() cluster.Stats
	Close() error
}

// shareEvent is a grant made or a token spent on the packet path, for the
// cluster: posted without blocking or allocating.
type shareEvent struct {
	src    netip.Addr
	id     uint64
	at     int64 // unix ns of the decision
	grant  bool
	method tracker.Method
	key    [32]byte
	until  int64 // the token's keeping, unix ns; 0: no token spent
}

// share posts a decision's grant or spent token; on the packet path.
func (d *Daemon) share(ev shareEvent) {
	select {
	case d.shareCh <- ev:
	default:
		d.shareDropped.Add(1)
	}
}

// startCluster starts the cluster, before the firewall's rules: a cluster
// that cannot start stops the start with nothing changed. The grants its
// peers hand over meanwhile wait in the tracker for the first write of
// the kernel's sets.
func (d *Daemon) startCluster() error {
	if d.cfg.Cluster == nil {
		return nil
	}
	s, err := d.cfg.Cluster(clusterHost{d})
	if err != nil {
		return err // named "cluster: …" by the cluster
	}
	d.mu.Lock()
	d.sharer = s
	d.mu.Unlock()
	return nil
}

func (d *Daemon) sharerOf() Sharer {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sharer
}

// shareLoop tells the cluster of the grants and spent tokens the packet
// path posts, off that path.
func (d *Daemon) shareLoop(ctx context.Context) {
	dropped := lograte.Limiter{Every: RefusedLogEvery}
	var lastDropped uint64
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-d.shareCh:
			s := d.sharerOf()
			if s == nil {
				continue
			}
			set := d.eng.Rules()
			i, ok := set.ServiceByID(ev.id)
			if !ok {
				continue
			}
			svc := &set.Services[i]
			if ev.until != 0 {
				n := 16
				if ev.method == tracker.MethodFwknop {
					n = 32
				}
				s.LocalUsed(svc.Name, uint8(ev.method), ev.key[:n], time.Unix(0, ev.until))
			}
			if ev.grant {
				now := d.cfg.Now()
				if g, ok := d.tr.Lookup(ev.src, ev.id, now); ok {
					s.LocalGrant(g.Src, svc.Name, serviceHash(svc), wall(g.Expires, now), uint8(g.How), g.Limited, g.Left, time.Unix(0, ev.at))
				}
			}
			if n := d.shareDropped.Load(); n != lastDropped && dropped.Allow(d.cfg.Now()) {
				d.log.Warn("cluster: grants not shared: too many at once", "dropped", n-lastDropped)
				lastDropped = n
			}
		}
	}
}

// wall is t on the wall clock: tracker times carry a monotonic reading,
// which means nothing to a peer.
func wall(t, now time.Time) time.Time {
	return now.Round(0).Add(t.Sub(now))
}

// serviceHash is the hash of what a grant of svc lets in: its ports, the
// hosts it covers, whether it is forwarded, its connection limit, and how
// it opens. Two nodes whose hashes differ do not take each other's grants
// of it. open_for is not in it: a peer's grant is cut to the open_for in
// force here anyway.
func serviceHash(svc *rules.Service) uint64 {
	h := fnv.New64a()
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(len(svc.Ports)))
	for _, p := range svc.Ports {
		b = binary.BigEndian.AppendUint16(b, p)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(svc.Hosts)))
	for _, p := range svc.Hosts {
		b = fmt.Appendf(b, "%s,", p)
	}
	b = append(b, boolByte(svc.Forward), boolByte(len(svc.Sequence) > 0), boolByte(svc.SPA != nil), boolByte(svc.Fwknop != nil), boolByte(svc.Rotate != nil))
	b = binary.BigEndian.AppendUint32(b, uint32(svc.Connections))
	h.Write(b)
	return h.Sum64()
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// clusterHost is the daemon as the cluster sees it.
type clusterHost struct{ d *Daemon }

func (h clusterHost) service(name string) (*rules.Service, bool) {
	set := h.d.eng.Rules()
	i, ok := set.ServiceByName([]byte(name))
	if !ok {
		return nil, false
	}
	return &set.Services[i], true
}

func (h clusterHost) ServiceHash(name string) (uint64, bool) {
	svc, ok := h.service(name)
	if !ok {
		return 0, false
	}
	return serviceHash(svc), true
}

// ApplyGrant enters a peer's grant as a restored one is entered: bounded
// by the service in force (a knock's or token's grant ends no later than
// now plus open_for; one-shot counts capped by connections).
func (h clusterHost) ApplyGrant(g cluster.Grant) error {
	d := h.d
	svc, ok := h.service(g.Service)
	if !ok {
		return fmt.Errorf("no service %q", g.Service)
	}
	how := tracker.Method(g.Method)
	now := d.cfg.Now()
	gi, why := restoreGrant(d.eng.Rules(), state.Grant{Src: g.Src, Service: svc.Name, ServiceID: svc.ID, Expires: g.Expires,
		How: how.String(), Limited: g.Limited, Left: g.Left}, time.Time{}, now)
	switch why {
	case "":
	case whyUsed:
		h.revoke(g.Src, svc.ID)
		d.log.Info("grant used up", keySrc, g.Src.String(), keyService, svc.Name, "origin", g.Origin)
		return nil
	case whyLapsed:
		return nil
	default:
		return fmt.Errorf("grant not applied: %s", why)
	}
	// Times from the peer are wall times; the tracker's carry the
	// monotonic reading of now.
	gi.Expires = now.Add(gi.Expires.Sub(now.Round(0)))
	if !d.tr.Put(gi, now) {
		return tracker.ErrGrantTableFull
	}
	if d.grants != nil {
		d.grants.granted(gi.Src, gi.ID)
	}
	d.log.Info("grant", keySrc, gi.Src.String(), keyService, svc.Name, "by", how.String(), "origin", g.Origin)
	return nil
}

func (h clusterHost) ApplyRevoke(src netip.Addr, name string) {
	svc, ok := h.service(name)
	if !ok {
		return
	}
	if n := h.revoke(src, svc.ID); n > 0 {
		h.d.log.Info("revoke", keySrc, src.String(), keyService, name, "by", "cluster")
	}
}

// revoke ends src's grant of id here; the kernel's sets are rewritten
// off this goroutine.
func (h clusterHost) revoke(src netip.Addr, id uint64) int {
	ended := h.d.tr.Revoke(src, id)
	if len(ended) > 0 && h.d.grants != nil {
		h.d.grants.resync()
	}
	return len(ended)
}

func (h clusterHost) MarkTokenUsed(name string, method uint8, key []byte, until time.Time) {
	svc, ok := h.service(name)
	if !ok {
		return
	}
	now := h.d.cfg.Now()
	if limit := now.Add(tokenWindow(svc, tracker.Method(method))); until.After(limit) {
		until = limit
	}
	if err := h.d.eng.MarkUsed(svc.ID, tracker.Method(method), key, until, now); err != nil {
		h.d.log.Warn("cluster: a token spent at a peer could not be remembered", keyService, name, "err", err)
	}
}

// tokenWindow is the longest a token of svc spent now is remembered here
// (the engine's own rule): a peer's spent token is kept no longer, so a
// peer cannot fill the replay memory for longer than a local token could.
func tokenWindow(svc *rules.Service, m tracker.Method) time.Duration {
	switch {
	case m == tracker.MethodSPA && svc.SPA != nil:
		return 2*svc.SPA.MaxSkew + time.Second
	case m == tracker.MethodFwknop && svc.Fwknop != nil:
		return fwknop.ReplayWindowFactor * svc.Fwknop.MaxAge
	}
	return 0
}

func (h clusterHost) GrantLeft(src netip.Addr, name string) (int, bool) {
	svc, ok := h.service(name)
	if !ok {
		return 0, false
	}
	g, ok := h.d.tr.Lookup(src, svc.ID, h.d.cfg.Now())
	if !ok || !g.Limited {
		return 0, false
	}
	return g.Left, true
}
