package state

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzDecode: the state file's parser never panics on any content, and
// whatever it accepts is within its bounds and reads back the same once
// written again.
func FuzzDecode(f *testing.F) {
	b, err := json.Marshal(func() Snapshot { s := sample(); s.Version = Version; return s }())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add([]byte(`{"version": 2}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := decode(bytes.NewReader(in))
		if err != nil {
			return
		}
		if len(s.Services) > MaxServices {
			t.Fatalf("%d services accepted", len(s.Services))
		}
		n := 0
		for _, sv := range s.Services {
			if r := sv.Replay; r != nil {
				if len(r.SPA)%SPARecord != 0 || len(r.Fwknop)%FwknopRecord != 0 {
					t.Fatalf("replay keys of %q cut short", sv.Name)
				}
				n += len(r.SPA) + len(r.Fwknop)
			}
		}
		if n > MaxReplayBytes {
			t.Fatalf("%d bytes of replay keys accepted", n)
		}
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decode(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("written again, refused: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(normal(s), normal(again)) {
			t.Fatalf("read back differently:\n%+v\n%+v", s, again)
		}
	})
}

// normal drops what JSON cannot tell apart: an empty list from none, and
// a time's location and monotonic reading.
func normal(s Snapshot) Snapshot {
	if len(s.Services) == 0 {
		s.Services = nil
	}
	if len(s.Grants) == 0 {
		s.Grants = nil
	}
	s.Saved = s.Saved.UTC()
	for i := range s.Grants {
		s.Grants[i].Expires = s.Grants[i].Expires.UTC()
	}
	for i := range s.Services {
		if r := s.Services[i].Replay; r != nil {
			c := *r
			if len(c.SPA) == 0 {
				c.SPA = nil
			}
			if len(c.Fwknop) == 0 {
				c.Fwknop = nil
			}
			s.Services[i].Replay = &c
		}
	}
	return s
}
