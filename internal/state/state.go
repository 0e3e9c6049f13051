// Package state keeps knockwall's live grants, and the memory of the
// tokens it accepted, across a clean restart: a small JSON file written at
// a clean stop and read (and removed) at the next start.
//
// The file holds no secret: per service its name, id and fingerprint (a
// hash that changes when what the service protects or how it opens
// changes; keys enter it only through their own fingerprints), and the
// replay keys still in their window (random SPA nonces, digests of fwknop
// packets) with the second before which tokens are refused; per grant the
// source, the service's name and id, the expiry as RFC 3339 wall time, how
// it was made and a one-shot grant's connections left. It is written to a
// temporary file in the same directory and renamed, mode 0600, so a reader
// sees the old file or the new one, never half of one. A file that is not
// a regular file owned by the daemon's user and writable by it alone is
// refused unread, and so is one that is larger than MaxSize, of another
// version, or not whole.
package state

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Version is the file format written; files of another version are
// refused.
const Version = 2

// Bounds of what Load accepts.
const (
	// MaxSize bounds the file: far more than any grant table (about 200
	// bytes a grant) and the replay memory the daemon saves
	// (MaxReplayBytes, a third more in base64) hold.
	MaxSize = 64 << 20
	// MaxReplayBytes bounds the packed replay keys of all services
	// together; a saver leaves out the memory of services beyond it.
	MaxReplayBytes = 24 << 20
	// MaxServices bounds the services listed.
	MaxServices = 1024
	// SPARecord and FwknopRecord are the sizes of one packed replay key:
	// the key (a 16-byte SPA nonce, a 32-byte fwknop packet digest), then
	// when it may be forgotten, unix nanoseconds, 8 bytes big endian.
	SPARecord    = 16 + 8
	FwknopRecord = 32 + 8
)

// Errors of Load. Each is wrapped with the path and the detail.
var (
	// ErrForeign: the path is not a regular file of ours (a symlink, a
	// directory, owned by another user, writable by group or others).
	ErrForeign = errors.New("not a state file this daemon wrote")
	// ErrCorrupt: the content is not a state file of this version.
	ErrCorrupt = errors.New("corrupt state file")
)

// Snapshot is the file's content. Version 0 is no file at all.
type Snapshot struct {
	Version  int       `json:"version"`
	Saved    time.Time `json:"saved"` // wall time of the save
	Services []Service `json:"services"`
	Grants   []Grant   `json:"grants"`
}

// Service is one service as the saving process served it.
type Service struct {
	Name string `json:"name"`
	// ID is rules.Service.ID (a string in JSON, so tools that read
	// numbers as doubles keep every bit).
	ID uint64 `json:"id,string"`
	// Fingerprint is rules.Service.Fingerprint, in hex.
	Fingerprint string `json:"fingerprint"`
	// Replay is the service's replay memory, whole; nil when the process
	// did not save it (then the next one refuses tokens stamped before it
	// started, for this service).
	Replay *Replay `json:"replay,omitempty"`
}

// Replay is one service's replay memory.
type Replay struct {
	// NotBefore: tokens stamped at or before this unix second were
	// refused, and still are.
	NotBefore int64 `json:"not_before"`
	// SPA and Fwknop are packed keys, SPARecord and FwknopRecord bytes
	// each (base64 in JSON).
	SPA    []byte `json:"spa,omitempty"`
	Fwknop []byte `json:"fwknop,omitempty"`
}

// Grant is one live grant.
type Grant struct {
	Src     netip.Addr `json:"src"`
	Service string     `json:"service"`
	// ServiceID is rules.Service.ID (a string in JSON, so tools that read
	// numbers as doubles keep every bit).
	ServiceID uint64    `json:"service_id,string"`
	Expires   time.Time `json:"expires"`
	How       string    `json:"how"` // tracker.Method's name
	// Limited: a one-shot grant with Left new connections left; LastPort
	// is the source port of the last one let in.
	Limited  bool   `json:"limited,omitempty"`
	Left     int    `json:"left,omitempty"`
	LastPort uint16 `json:"last_port,omitempty"`
}

// File is a state file at Path.
type File struct {
	Path string
	// UID is the owner a file must have to be read: the daemon's
	// effective uid (NewFile sets it).
	UID int
}

// NewFile is the state file at path, owned by this process's user.
func NewFile(path string) *File { return &File{Path: path, UID: os.Geteuid()} }

// Load reads the snapshot and removes the file, so that grants revoked
// after this start cannot come back from it after a crash. A missing file
// is an empty snapshot and no error. Any error means nothing was taken
// from the file: the caller logs it and starts without.
func (f *File) Load() (Snapshot, error) {
	fi, err := os.Lstat(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return Snapshot{}, nil
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("state file %s: %w", f.Path, err)
	}
	if err := f.ours(fi); err != nil {
		return Snapshot{}, err
	}
	fd, err := os.OpenFile(f.Path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return Snapshot{}, fmt.Errorf("state file %s: %w", f.Path, err)
	}
	defer fd.Close()
	// The file opened must be the one checked: not swapped in between.
	ofi, err := fd.Stat()
	if err != nil {
		return Snapshot{}, fmt.Errorf("state file %s: %w", f.Path, err)
	}
	if !os.SameFile(fi, ofi) {
		return Snapshot{}, fmt.Errorf("state file %s: %w: replaced while being opened", f.Path, ErrForeign)
	}
	if err := f.ours(ofi); err != nil {
		return Snapshot{}, err
	}
	s, err := decode(io.LimitReader(fd, MaxSize+1))
	if err != nil {
		return Snapshot{}, fmt.Errorf("state file %s: %w", f.Path, err)
	}
	if err := os.Remove(f.Path); err != nil {
		return Snapshot{}, fmt.Errorf("state file %s: read, but cannot be removed (%w); ignored, so that a grant revoked later cannot come back from it", f.Path, err)
	}
	return s, nil
}

// ours checks that fi is a regular file owned by f.UID that only its
// owner may write.
func (f *File) ours(fi fs.FileInfo) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("state file %s: %w: a symbolic link", f.Path, ErrForeign)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("state file %s: %w: not a regular file (%s)", f.Path, ErrForeign, fi.Mode().Type())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("state file %s: %w: writable by group or others (mode %04o)", f.Path, ErrForeign, fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != f.UID {
		return fmt.Errorf("state file %s: %w: owned by uid %d, not %d", f.Path, ErrForeign, st.Uid, f.UID)
	}
	return nil
}

func decode(r io.Reader) (Snapshot, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return Snapshot{}, err
	}
	if len(b) > MaxSize {
		return Snapshot{}, fmt.Errorf("%w: larger than %d bytes", ErrCorrupt, MaxSize)
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return Snapshot{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if s.Version != Version {
		return Snapshot{}, fmt.Errorf("%w: version %d, this daemon reads %d", ErrCorrupt, s.Version, Version)
	}
	if len(s.Services) > MaxServices {
		return Snapshot{}, fmt.Errorf("%w: %d services, at most %d", ErrCorrupt, len(s.Services), MaxServices)
	}
	seen := make(map[uint64]bool, len(s.Services))
	replayBytes := 0
	for i, sv := range s.Services {
		if sv.Name == "" || sv.ID == 0 || seen[sv.ID] {
			return Snapshot{}, fmt.Errorf("%w: service %d lacks a name or id, or is listed twice", ErrCorrupt, i)
		}
		seen[sv.ID] = true
		if fp, err := hex.DecodeString(sv.Fingerprint); err != nil || len(fp) != 32 {
			return Snapshot{}, fmt.Errorf("%w: service %q: fingerprint is not 64 hex digits", ErrCorrupt, sv.Name)
		}
		if r := sv.Replay; r != nil {
			if len(r.SPA)%SPARecord != 0 || len(r.Fwknop)%FwknopRecord != 0 {
				return Snapshot{}, fmt.Errorf("%w: service %q: replay keys cut short", ErrCorrupt, sv.Name)
			}
			replayBytes += len(r.SPA) + len(r.Fwknop)
		}
	}
	if replayBytes > MaxReplayBytes {
		return Snapshot{}, fmt.Errorf("%w: %d bytes of replay keys, at most %d", ErrCorrupt, replayBytes, MaxReplayBytes)
	}
	for i, g := range s.Grants {
		if !g.Src.IsValid() || g.Service == "" || g.ServiceID == 0 || g.Expires.IsZero() {
			return Snapshot{}, fmt.Errorf("%w: grant %d lacks a source, service, service id or expiry", ErrCorrupt, i)
		}
	}
	return s, nil
}

// Save writes s (version, and times in UTC, set here): to a temporary file
// in the same directory (created 0700 if missing), synced, then renamed
// over the path, so the file is always whole.
func (f *File) Save(s Snapshot) error {
	s.Version = Version
	s.Saved = s.Saved.UTC()
	for i := range s.Grants {
		s.Grants[i].Expires = s.Grants[i].Expires.UTC()
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(f.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.Path)+".*") // mode 0600
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	done = true
	// The rename itself must reach the disk before the daemon is gone.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
