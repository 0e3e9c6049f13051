package verdict

import (
	"math"
	"slices"
	"time"

	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
)

// rotBase is the first sequence id of a rotating variant. Ids below it are
// service indexes (fixed sequences); id rotBase+2*svc+slot is service svc's
// rotating sequence for the period whose index has parity slot. Parity keeps
// a source's progress valid when the period rolls over: the sequence it was
// following moves from "current" to "previous" but keeps its slot.
const rotBase = rules.MaxServices

// view is what the tracker follows: a rules.Set plus the rotating sequences
// of the current and previous period. It is immutable and rebuilt when a
// period rolls over or the rules change; the engine keeps it in an atomic
// pointer, so passing it as tracker.Sequences does not allocate.
type view struct {
	set *rules.Set
	gen uint16 // which configuration: bumped by every SetRules
	// until is the unix second at which some rotating period rolls over.
	until int64
	rot   [rules.MaxServices]*rotSeqs // by service index; nil without rotation
	// remap translates the sequence ids of configuration prevGen (the
	// one before this) into this one's, -1 where a sequence changed or
	// went: knock progress toward a sequence a reload left alone survives.
	prevGen uint16
	remap   *[rotBase + 2*rules.MaxServices]int16
}

type rotSeqs struct {
	seq [2][]uint32 // by period parity
	len int
}

func newView(set *rules.Set, gen uint16, now time.Time) *view {
	v := &view{set: set, gen: gen, until: math.MaxInt64}
	unix := now.Unix()
	for _, i := range set.Rotating() {
		svc := &set.Services[i]
		r := svc.Rotate
		idx := spa.Period(unix, r.Period)
		rs := &rotSeqs{len: r.Length}
		for _, p := range []int64{idx, idx - 1} {
			for _, port := range r.Sequence(svc.Name, p) {
				rs.seq[p&1] = append(rs.seq[p&1], rules.KnockKey(rules.ProtoTCP, port))
			}
		}
		v.rot[i] = rs
		periodSec := int64(r.Period / time.Second)
		v.until = min(v.until, (idx+1)*periodSec)
	}
	return v
}

// CurrentRotating returns service svc's rotating sequence for now, for
// clients.
func CurrentRotating(set *rules.Set, svc int, now time.Time) []uint16 {
	s := &set.Services[svc]
	if s.Rotate == nil {
		return nil
	}
	return s.Rotate.Sequence(s.Name, spa.Period(now.Unix(), s.Rotate.Period))
}

func (v *view) Begins(k uint32) (int, bool) {
	if i, ok := v.set.Begins(k); ok {
		return i, true
	}
	for _, i := range v.set.Rotating() {
		rs := v.rot[i]
		for slot := range 2 {
			if len(rs.seq[slot]) > 0 && rs.seq[slot][0] == k {
				return rotBase + 2*i + slot, true
			}
		}
	}
	return 0, false
}

func (v *view) Len(id int) int {
	if id < rotBase {
		return v.set.Len(id)
	}
	return v.rot[(id-rotBase)/2].len
}

func (v *view) Step(id, i int) uint32 {
	if id < rotBase {
		return v.set.Step(id, i)
	}
	return v.rot[(id-rotBase)/2].seq[(id-rotBase)%2][i]
}

// service is the index of the service sequence id belongs to.
func (v *view) service(id int) int {
	if id < rotBase {
		return id
	}
	return (id - rotBase) / 2
}

// Remap implements tracker.Sequences.
func (v *view) Remap(gen uint16, id int) (int, bool) {
	if v.remap == nil || gen != v.prevGen || id < 0 || id >= len(v.remap) || v.remap[id] < 0 {
		return 0, false
	}
	return int(v.remap[id]), true
}

// remapFrom fills v.remap from old, the view of the configuration before:
// a fixed sequence keeps its progress when its service's name, knocks and
// step timeout are the same; a rotating one when its name, key, length,
// period, range and step timeout are.
func (v *view) remapFrom(old *view) {
	m := new([rotBase + 2*rules.MaxServices]int16)
	for i := range m {
		m[i] = -1
	}
	for i := range old.set.Services {
		a := &old.set.Services[i]
		j, ok := v.set.ServiceByName([]byte(a.Name))
		if !ok {
			continue
		}
		b := &v.set.Services[j]
		if a.StepTimeout != b.StepTimeout {
			continue
		}
		if slices.Equal(a.Sequence, b.Sequence) && len(a.Sequence) > 0 {
			m[i] = int16(j)
		}
		if ra, rb := a.Rotate, b.Rotate; ra != nil && rb != nil && ra.Length == rb.Length && ra.Period == rb.Period &&
			ra.Lo == rb.Lo && ra.Hi == rb.Hi && ra.Key.Equal(rb.Key) {
			for slot := range 2 {
				m[rotBase+2*i+slot] = int16(rotBase + 2*j + slot)
			}
		}
	}
	v.prevGen, v.remap = old.gen, m
}

// Keyed implements tracker.Sequences: the rotating sequences are.
func (v *view) Keyed(id int) bool { return id >= rotBase }

func (v *view) GrantFor(id int) uint64           { return v.set.Services[v.service(id)].ID }
func (v *view) Gen() uint16                      { return v.gen }
func (v *view) StepTimeout(id int) time.Duration { return v.set.StepTimeout(v.service(id)) }
func (v *view) OpenFor(id int) time.Duration     { return v.set.OpenFor(v.service(id)) }
func (v *view) Connections(id int) int           { return v.set.Connections(v.service(id)) }
