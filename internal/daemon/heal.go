package daemon

import (
	"context"
	"time"
)

// healer keeps the firewall in place while the daemon runs: it polls the
// cheap change generation every WatchEvery and, when it moves (or every
// CheckEvery regardless), checks the rules in full and puts back what is
// missing, grants included.
type healer struct {
	d         *Daemon
	gen       uint64
	haveGen   bool
	lastCheck time.Time
	// brokenSince is when a check last found something missing that is
	// not yet put back (zero when all is in place).
	brokenSince time.Time
}

func (h *healer) poll(ctx context.Context) {
	d := h.d
	fw := d.cfg.Firewall
	if fw == nil {
		return
	}
	now := d.cfg.Now()
	changed := true
	if d.cfg.Watch != nil {
		gen, err := d.cfg.Watch()
		changed = err != nil || !h.haveGen || gen != h.gen
		if err == nil {
			h.gen, h.haveGen = gen, true
		}
	}
	if !changed && now.Sub(h.lastCheck) < CheckEvery && h.brokenSince.IsZero() {
		return
	}
	h.lastCheck = now
	d.mu.Lock()
	plan := d.plan
	d.mu.Unlock()
	if plan == nil {
		return
	}
	missing, err := fw.Check(ctx, plan) // differences, in words
	if err != nil {
		d.log.Error("cannot check the firewall rules", "backend", fw.Name(), "err", err)
		return
	}
	if len(missing) == 0 {
		h.brokenSince = time.Time{}
		return
	}
	if h.brokenSince.IsZero() {
		h.brokenSince = now
	}
	d.log.Error("firewall rules were changed by someone else; putting them back", "backend", fw.Name(), "differences", missing)
	if err := fw.Apply(ctx, plan); err != nil {
		d.log.Error("could not put the firewall rules back; will retry", "backend", fw.Name(), "err", err)
		return
	}
	if d.grants != nil {
		d.grants.resync()
	}
	d.log.Error("firewall rules restored", "backend", fw.Name(), "noticed", h.brokenSince.Format(time.RFC3339Nano), "took", d.cfg.Now().Sub(h.brokenSince).Round(time.Millisecond).String())
	d.heals.Add(1) // after the log line: a reader of the count finds it
	h.brokenSince = time.Time{}
	// Our own change moved the generation; take it as the new base.
	if d.cfg.Watch != nil {
		if gen, err := d.cfg.Watch(); err == nil {
			h.gen, h.haveGen = gen, true
		}
	}
}
