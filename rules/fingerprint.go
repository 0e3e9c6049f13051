package rules

import (
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// Fingerprint names what a service protects and how it opens: its name,
// ports, forward and hosts, sequence, and its SPA, fwknop and rotating
// settings with their keys (by the keys' own fingerprints, which reveal
// nothing of them). Two services have the same fingerprint exactly when a
// grant or a used token of one means the same for the other. It leaves out
// what a restored grant is re-checked against anyway (open_for,
// connections) and how refusals are answered.
func (s *Service) Fingerprint() [32]byte {
	h := sha256.New()
	var b []byte
	str := func(v string) { b = binary.AppendUvarint(b, uint64(len(v))); b = append(b, v...) }
	num := func(v uint64) { b = binary.AppendUvarint(b, v) }
	dur := func(d time.Duration) { num(uint64(d)) }
	flag := func(v bool) {
		if v {
			num(1)
		} else {
			num(0)
		}
	}
	str("knockwall service v1")
	str(s.Name)
	num(s.ID)
	num(uint64(len(s.Ports)))
	for _, p := range s.Ports {
		num(uint64(p))
	}
	flag(s.Forward)
	num(uint64(len(s.Hosts)))
	for _, p := range s.Hosts {
		str(p.String())
	}
	num(uint64(len(s.Sequence)))
	for _, k := range s.Sequence {
		num(uint64(k.Key()))
	}
	flag(s.SPA != nil)
	if a := s.SPA; a != nil {
		num(uint64(a.Port))
		dur(a.MaxSkew)
		flag(a.RequireSource)
		num(uint64(len(a.Keys)))
		for _, k := range a.Keys {
			fp := k.Fingerprint()
			b = append(b, fp[:]...)
		}
	}
	flag(s.Fwknop != nil)
	if f := s.Fwknop; f != nil {
		num(uint64(f.Port))
		dur(f.MaxAge)
		flag(f.RequireSource)
		fp := f.Key.Fingerprint()
		b = append(b, fp[:]...)
	}
	flag(s.Rotate != nil)
	if r := s.Rotate; r != nil {
		fp := r.Key.Fingerprint()
		b = append(b, fp[:]...)
		num(uint64(r.Length))
		dur(r.Period)
		num(uint64(r.Lo))
		num(uint64(r.Hi))
	}
	h.Write(b)
	return [32]byte(h.Sum(nil))
}
