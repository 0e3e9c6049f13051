package daemon

import (
	"errors"
	"time"

	"github.com/knockwall/knockwall/internal/state"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
)

// errStopped answers a reload asked of a daemon that no longer runs.
var errStopped = errors.New("daemon: stopped")

// StateStore keeps live grants across a clean restart (state.File).
type StateStore interface {
	// Load returns the grants saved at the last clean stop and forgets
	// them. An error means nothing is to be restored.
	Load() (state.Snapshot, error)
	Save(state.Snapshot) error
}

// save writes the live grants of services in set to the state store.
func (d *Daemon) save(set *rules.Set) {
	if d.cfg.State == nil {
		return
	}
	now := d.cfg.Now()
	snap := state.Snapshot{Saved: now}
	for _, g := range d.tr.Grants(now) {
		i, ok := set.ServiceByID(g.ID)
		if !ok {
			continue
		}
		snap.Grants = append(snap.Grants, state.Grant{Src: g.Src, Service: set.Services[i].Name, ServiceID: g.ID,
			Expires: g.Expires, How: g.How.String(), Limited: g.Limited, Left: g.Left, LastPort: g.LastPort})
	}
	if err := d.cfg.State.Save(snap); err != nil {
		d.log.Error("could not save the live grants; they end with this run", "err", err)
		return
	}
	d.log.Info("grants saved", "grants", len(snap.Grants))
}

// restore puts the grants of the last clean stop back into the tracker,
// before any packet is judged. A state file that cannot be read is logged
// and ignored: knockwall then starts with no grant, as without one.
func (d *Daemon) restore(set *rules.Set) {
	if d.cfg.State == nil {
		return
	}
	snap, err := d.cfg.State.Load()
	if err != nil {
		d.log.Warn("state file ignored; starting with no grant", "err", err)
		return
	}
	if len(snap.Grants) == 0 {
		return
	}
	now := d.cfg.Now()
	var restored, lapsed, dropped, full int
	for _, sg := range snap.Grants {
		g, why := restoreGrant(set, sg, snap.Saved, now)
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

// Reasons a saved grant is not restored.
const (
	whyLapsed  = "lapsed"
	whyService = "service gone or renamed"
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
