package state

import (
	"bytes"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sample() Snapshot {
	saved := time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)
	return Snapshot{Saved: saved, Services: []Service{
		{Name: "ssh", ID: 0xfedcba9876543210, Fingerprint: strings.Repeat("ab", 32), Replay: &Replay{NotBefore: saved.Unix() - 60,
			SPA: bytes.Repeat([]byte{1}, 2*SPARecord), Fwknop: bytes.Repeat([]byte{2}, FwknopRecord)}},
		{Name: "web", ID: 42, Fingerprint: strings.Repeat("0f", 32)},
	}, Grants: []Grant{
		{Src: netip.MustParseAddr("10.77.0.2"), Service: "ssh", ServiceID: 0xfedcba9876543210, Expires: saved.Add(30 * time.Second), How: "sequence"},
		{Src: netip.MustParseAddr("fd00:77::2"), Service: "web", ServiceID: 42, Expires: saved.Add(time.Hour), How: "manual",
			Limited: true, Left: 2, LastPort: 40000},
	}}
}

// TestSaveLoad: what Save writes, Load reads back exactly, once: the file
// is gone afterwards. The file is 0600 in a directory made 0700.
func TestSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "state.json")
	f := NewFile(path)
	want := sample()
	if err := f.Save(want); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]fs.FileMode{path: 0o600, filepath.Dir(path): 0o700 | fs.ModeDir} {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v, %v; want mode %v", p, fi.Mode(), err, mode)
		}
	}
	got, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	want.Version = Version
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load = %+v\nwant %+v", got, want)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the file is still there after Load: %v", err)
	}
	if got, err := f.Load(); err != nil || len(got.Grants) != 0 {
		t.Errorf("second Load = %+v, %v; want nothing and no error", got, err)
	}
}

// TestSaveReplaces: Save replaces an old file, and a symlink at the path
// is replaced, its target untouched; no temporary file is left.
func TestSaveReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	f := NewFile(path)
	if err := f.Save(sample()); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(Snapshot{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	if got, err := f.Load(); err != nil || len(got.Grants) != 0 {
		t.Errorf("Load = %+v, %v; want the second, empty snapshot", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "target" {
		t.Errorf("left in the directory: %v", entries)
	}
}

// TestLoadRefuses: files this daemon did not write, or cannot read as a
// state file, are refused with the reason and left where they are.
func TestLoadRefuses(t *testing.T) {
	good := func(t *testing.T, path string) {
		t.Helper()
		if err := NewFile(path).Save(sample()); err != nil {
			t.Fatal(err)
		}
	}
	write := func(body string, mode fs.FileMode) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(body), mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil { // past the umask
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name    string
		make    func(t *testing.T, path string)
		uid     int // 0: this process's
		wantErr error
	}{
		{"not JSON", write("{grants: [", 0o600), 0, ErrCorrupt},
		{"empty", write("", 0o600), 0, ErrCorrupt},
		{"an older version", write(`{"version": 1, "grants": []}`, 0o600), 0, ErrCorrupt},
		{"a newer version", write(`{"version": 3, "grants": []}`, 0o600), 0, ErrCorrupt},
		{"truncated", func(t *testing.T, p string) {
			good(t, p)
			b, _ := os.ReadFile(p)
			write(string(b[:len(b)/2]), 0o600)(t, p)
		}, 0, ErrCorrupt},
		{"a grant without a source", write(`{"version": 2, "grants": [{"service": "ssh", "service_id": "1", "expires": "2026-11-26T10:00:00Z", "how": "manual"}]}`, 0o600), 0, ErrCorrupt},
		{"replay keys cut short", write(`{"version": 2, "services": [{"name": "ssh", "id": "1", "fingerprint": "`+strings.Repeat("ab", 32)+`", "replay": {"not_before": 1, "spa": "AAAA"}}]}`, 0o600), 0, ErrCorrupt},
		{"a short fingerprint", write(`{"version": 2, "services": [{"name": "ssh", "id": "1", "fingerprint": "abab"}]}`, 0o600), 0, ErrCorrupt},
		{"a service twice", write(`{"version": 2, "services": [{"name": "ssh", "id": "1", "fingerprint": "`+strings.Repeat("ab", 32)+`"}, {"name": "ssh", "id": "1", "fingerprint": "`+strings.Repeat("ab", 32)+`"}]}`, 0o600), 0, ErrCorrupt},
		{"world writable", func(t *testing.T, p string) { good(t, p); os.Chmod(p, 0o602) }, 0, ErrForeign},
		{"group writable", func(t *testing.T, p string) { good(t, p); os.Chmod(p, 0o620) }, 0, ErrForeign},
		{"owned by another user", good, os.Geteuid() + 1, ErrForeign},
		{"a symlink to a good file", func(t *testing.T, p string) {
			good(t, p+".real")
			if err := os.Symlink(p+".real", p); err != nil {
				t.Fatal(err)
			}
		}, 0, ErrForeign},
		{"a directory", func(t *testing.T, p string) { os.Mkdir(p, 0o700) }, 0, ErrForeign},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			tt.make(t, path)
			f := NewFile(path)
			if tt.uid != 0 {
				f.UID = tt.uid
			}
			got, err := f.Load()
			if !errors.Is(err, tt.wantErr) || len(got.Grants) != 0 {
				t.Fatalf("Load = %+v, %v; want nothing and %v", got, err, tt.wantErr)
			}
			if _, err := os.Lstat(path); err != nil {
				t.Errorf("a refused file was removed: %v", err)
			}
		})
	}
}
