package daemon

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"slices"
	"time"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/internal/replay"
	"github.com/knockwall/knockwall/internal/state"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// errStopped answers a reload asked of a daemon that no longer runs.
var errStopped = errors.New("daemon: stopped")

// StateStore keeps live grants and the replay memory across a clean
// restart (state.File).
type StateStore interface {
	// Load returns what was saved at the last clean stop and forgets it.
	// An error means nothing is to be restored.
	Load() (state.Snapshot, error)
	Save(state.Snapshot) error
}

// save writes the live grants and the replay memory of services in set to
// the state store. The replay memory is sealed first: from then on no
// token is accepted, so the file holds every token this process accepted
// that could still pass its timestamp check.
func (d *Daemon) save(set *rules.Set) {
	if d.cfg.State == nil {
		return
	}
	now := d.cfg.Now()
	mem := d.eng.SealReplay(now)
	snap := state.Snapshot{Saved: now}
	budget := state.MaxReplayBytes
	var keys, left int
	for i := range set.Services {
		svc := &set.Services[i]
		fp := svc.Fingerprint()
		ss := state.Service{Name: svc.Name, ID: svc.ID, Fingerprint: hex.EncodeToString(fp[:])}
		if j := slices.IndexFunc(mem, func(m verdict.ServiceReplay) bool { return m.ID == svc.ID }); j >= 0 {
			m := mem[j]
			if n := len(m.SPA)*state.SPARecord + len(m.Fwknop)*state.FwknopRecord; n <= budget {
				budget -= n
				ss.Replay = packReplay(m)
				keys += len(m.SPA) + len(m.Fwknop)
			} else {
				left++
			}
		}
		snap.Services = append(snap.Services, ss)
	}
	for _, g := range d.tr.Grants(now) {
		i, ok := set.ServiceByID(g.ID)
		if !ok || g.Awaiting {
			// A plain sequence's grant that let in no connection may be
			// a spoofer's: it is not carried over.
			continue
		}
		snap.Grants = append(snap.Grants, state.Grant{Src: g.Src, Service: set.Services[i].Name, ServiceID: g.ID,
			Expires: g.Expires, How: g.How.String(), Limited: g.Limited, Left: g.Left, LastPort: g.LastPort})
	}
	if left > 0 {
		d.log.Warn("replay memory too large for the state file; after the restart, those services refuse tokens stamped before it", "services", left)
	}
	if err := d.cfg.State.Save(snap); err != nil {
		d.log.Error("could not save the live grants and the replay memory; grants end with this run, and the next refuses tokens stamped before it starts", "err", err)
		return
	}
	d.log.Info("grants saved", "grants", len(snap.Grants), "replay_keys", keys)
}

// packReplay packs a service's replay memory for the state file.
func packReplay(m verdict.ServiceReplay) *state.Replay {
	r := &state.Replay{NotBefore: m.NotBefore}
	if len(m.SPA) > 0 {
		r.SPA = make([]byte, 0, len(m.SPA)*state.SPARecord)
		for _, e := range m.SPA {
			r.SPA = binary.BigEndian.AppendUint64(append(r.SPA, e.Key[:]...), uint64(e.ForgetAt))
		}
	}
	if len(m.Fwknop) > 0 {
		r.Fwknop = make([]byte, 0, len(m.Fwknop)*state.FwknopRecord)
		for _, e := range m.Fwknop {
			r.Fwknop = binary.BigEndian.AppendUint64(append(r.Fwknop, e.Key[:]...), uint64(e.ForgetAt))
		}
	}
	return r
}

// unpackReplay is packReplay's inverse (state.Load checked the lengths).
func unpackReplay(id uint64, r *state.Replay) verdict.ServiceReplay {
	m := verdict.ServiceReplay{ID: id, NotBefore: r.NotBefore}
	for b := r.SPA; len(b) >= state.SPARecord; b = b[state.SPARecord:] {
		m.SPA = append(m.SPA, replay.Entry[[spa.NonceSize]byte]{Key: [spa.NonceSize]byte(b), ForgetAt: int64(binary.BigEndian.Uint64(b[spa.NonceSize:]))})
	}
	for b := r.Fwknop; len(b) >= state.FwknopRecord; b = b[state.FwknopRecord:] {
		m.Fwknop = append(m.Fwknop, replay.Entry[[fwknop.ReplayKeySize]byte]{Key: [fwknop.ReplayKeySize]byte(b), ForgetAt: int64(binary.BigEndian.Uint64(b[fwknop.ReplayKeySize:]))})
	}
	return m
}

// restore puts back, before any packet is judged, the replay memory and
// the grants of the last clean stop, for each service whose definition
// (state.Service.Fingerprint) is unchanged. A service without a whole
// memory from the state file (no file, a file that cannot be read, one
// from another configuration, a changed or new service) keeps the rule
// that covers for it: tokens stamped at or before this process's start
// second are refused, since the process before may have accepted them.
func (d *Daemon) restore(set *rules.Set) {
	if d.cfg.State == nil {
		return
	}
	snap, err := d.cfg.State.Load()
	if err != nil {
		d.log.Warn("state file ignored; starting with no grant", "err", err,
			"tokens", "refused when stamped at or before this start")
		return
	}
	if snap.Version == 0 {
		d.log.Info("no state file; refusing tokens stamped before this start")
		return
	}
	now := d.cfg.Now()
	same := d.restoreReplay(set, snap, now)
	var restored, lapsed, dropped, full int
	for _, sg := range snap.Grants {
		g, why := restoreGrant(set, sg, snap.Saved, now)
		if why == "" && !same[sg.ServiceID] {
			why = whyChanged
		}
		switch {
		case why != "":
			if why == whyLapsed || why == whyUsed {
				lapsed++
			} else {
				dropped++
			}
			d.log.Debug("grant not restored", keySrc, sg.Src.String(), keyService, sg.Service, keyReason, why)
		case !d.tr.Put(g, now):
			full++
		default:
			restored++
			d.log.Info("grant restored", keySrc, g.Src.String(), keyService, sg.Service, "by", g.How.String(),
				"until", g.Expires.UTC().Format(time.RFC3339Nano))
		}
	}
	d.log.Info("grants restored", "restored", restored, "lapsed", lapsed, "dropped", dropped, "table_full", full)
}

// restoreReplay restores the replay memory of every service of set that
// the state file lists with the same definition, and says which those are
// (by id). Each other service that takes tokens is logged with the reason
// it keeps the start-second rule.
func (d *Daemon) restoreReplay(set *rules.Set, snap state.Snapshot, now time.Time) map[uint64]bool {
	same := make(map[uint64]bool, len(set.Services))
	for i := range set.Services {
		svc := &set.Services[i]
		tokens := svc.SPA != nil || svc.Fwknop != nil
		j := slices.IndexFunc(snap.Services, func(s state.Service) bool { return s.ID == svc.ID })
		fp := svc.Fingerprint()
		var why string
		switch {
		case j < 0:
			why = "not in the state file"
		case snap.Services[j].Name != svc.Name:
			why = whyService
		case snap.Services[j].Fingerprint != hex.EncodeToString(fp[:]):
			why = whyChanged
		}
		if why != "" {
			d.log.Info("service not restored from the state file: its saved grants and replay memory are dropped, and it refuses tokens stamped before this start",
				keyService, svc.Name, keyReason, why)
			continue
		}
		same[svc.ID] = true
		if !tokens {
			continue
		}
		r := snap.Services[j].Replay
		if r == nil {
			d.log.Info("no replay memory saved for the service; it refuses tokens stamped before this start", keyService, svc.Name)
			continue
		}
		m := unpackReplay(svc.ID, r)
		if err := d.eng.RestoreReplay(m, now); err != nil {
			d.log.Warn("replay memory not restored; the service refuses tokens stamped before this start", keyService, svc.Name, "err", err)
			continue
		}
		d.log.Info("replay memory restored", keyService, svc.Name, "spa_nonces", len(m.SPA), "fwknop_packets", len(m.Fwknop),
			"not_before", time.Unix(m.NotBefore, 0).UTC().Format(time.RFC3339))
	}
	return same
}

// Reasons a saved grant is not restored.
const (
	whyLapsed  = "lapsed"
	whyService = "service gone or renamed"
	whyChanged = "service changed (ports, sequence, keys or token settings)"
	whyMethod  = "unknown method"
	whyUsed    = "no connection left"
)

// restoreGrant turns a saved grant into the grant to Put at now, or says
// why there is none. The rules (invariant: a restart never lengthens a
// grant, nor lets it in more than the configuration in force allows):
//   - its service must still exist under the same name and id;
//   - it ends at its recorded expiry, and no later than now plus what it
//     had left when saved (a wall clock set back across the restart gives
//     nothing);
//   - a grant made by a knock or a token ends no later than now plus the
//     service's open_for in force (a shortened open_for applies at once);
//     an operator's grant keeps the length the operator chose;
//   - connection limits follow the service in force: a grant of a one-shot
//     service keeps its connections left, capped by the service's
//     connections (a grant saved without a limit gets that many); a grant
//     of a service that is no longer one-shot has no limit, as a new one
//     would not (the fast path could not count its connections anyway).
func restoreGrant(set *rules.Set, sg state.Grant, saved, now time.Time) (tracker.GrantInfo, string) {
	i, ok := set.ServiceByID(sg.ServiceID)
	if !ok || set.Services[i].Name != sg.Service {
		return tracker.GrantInfo{}, whyService
	}
	svc := &set.Services[i]
	how, ok := tracker.ParseMethod(sg.How)
	if !ok {
		return tracker.GrantInfo{}, whyMethod
	}
	until := sg.Expires
	if !saved.IsZero() {
		if left := sg.Expires.Sub(saved); now.Add(left).Before(until) {
			until = now.Add(left)
		}
	}
	if how != tracker.MethodManual {
		if limit := now.Add(svc.OpenFor); limit.Before(until) {
			until = limit
		}
	}
	if !until.After(now) {
		return tracker.GrantInfo{}, whyLapsed
	}
	g := tracker.GrantInfo{Src: sg.Src.Unmap(), ID: svc.ID, Expires: until, How: how, Limited: sg.Limited, Left: sg.Left, LastPort: sg.LastPort}
	if c := svc.Connections; c > 0 {
		if !g.Limited || g.Left > c {
			g.Left = c
		}
		g.Limited = true
	} else {
		g.Limited, g.Left = false, 0
	}
	if g.Limited && g.Left <= 0 {
		return tracker.GrantInfo{}, whyUsed
	}
	return g, ""
}
