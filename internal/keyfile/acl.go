package keyfile

import (
	"fmt"
	"slices"
)

// Well-known security identifiers (SIDs) of Windows that may hold a key:
// the system itself and the local administrators, who can take any file
// anyway, as root can on Unix.
const (
	sidSystem         = "S-1-5-18"
	sidAdministrators = "S-1-5-32-544"
)

// ACE types of a Windows DACL (winnt.h): the ones that allow and name
// their SID where a plain ACCESS_ALLOWED_ACE does, and the ones that deny.
const (
	aceAllowed                    = 0x0
	aceDenied                     = 0x1
	aceDeniedObject               = 0x6
	aceAllowedCallback            = 0x9
	aceDeniedCallback             = 0xa
	aceDeniedCallbackObject       = 0xd
	aceFlagInheritOnly      uint8 = 0x8
)

// ace is one entry of a Windows DACL as checkACL needs it.
type ace struct {
	typ   uint8
	flags uint8
	mask  uint32
	sid   string // in S-1-… form
}

// checkACL is the Windows meaning of "only the owner can read this": the
// file's owner is the user running knockwall (me), SYSTEM or the
// Administrators group, and its DACL exists and allows nothing to anyone
// but the owner, me, SYSTEM and Administrators. Deny entries and entries
// that only pass on to children (inherit-only) grant nothing here and are
// passed over; an allow entry of a kind whose SID cannot be read (object
// ACEs) refuses the file. A file without a DACL, or with a NULL one, is
// open to everyone and is refused.
func checkACL(what, path, owner, me string, hasDACL bool, entries []ace) error {
	trusted := []string{me, sidSystem, sidAdministrators}
	if !slices.Contains(trusted, owner) {
		return fmt.Errorf("%s %s is owned by %s: %w (it must belong to you, SYSTEM or Administrators)", what, path, owner, ErrPerm)
	}
	if !hasDACL {
		return fmt.Errorf("%s %s has no access control list, so everyone may read it: %w (run: icacls %s /inheritance:r /grant:r %%USERNAME%%:F)", what, path, ErrPerm, path)
	}
	trusted = append(trusted, owner)
	for _, e := range entries {
		switch {
		case e.typ == aceDenied || e.typ == aceDeniedObject || e.typ == aceDeniedCallback || e.typ == aceDeniedCallbackObject:
			continue
		case e.flags&aceFlagInheritOnly != 0 || e.mask == 0:
			continue
		case e.typ != aceAllowed && e.typ != aceAllowedCallback:
			return fmt.Errorf("%s %s: %w: its access control list has an entry of type %#x that this check cannot read (run: icacls %s /inheritance:r /grant:r %%USERNAME%%:F)", what, path, ErrPerm, e.typ, path)
		case !slices.Contains(trusted, e.sid):
			return fmt.Errorf("%s %s lets %s in (access mask %#x): %w (run: icacls %s /inheritance:r /grant:r %%USERNAME%%:F)", what, path, e.sid, e.mask, ErrPerm, path)
		}
	}
	return nil
}
