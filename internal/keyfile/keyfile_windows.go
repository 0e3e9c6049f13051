package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"unsafe"

	"golang.org/x/sys/windows"
)

// open opens path for reading, refusing a symbolic link or other reparse
// point (whose target's access list is not the link's): the path is
// looked at without following it, opened, and must still be the file
// looked at.
func open(path string) (*os.File, error) {
	before, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if before.Mode()&(fs.ModeSymlink|fs.ModeIrregular) != 0 {
		return nil, fmt.Errorf("a symbolic link or reparse point")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	after, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !os.SameFile(before, after) {
		f.Close()
		return nil, fmt.Errorf("replaced while being opened")
	}
	return f, nil
}

// errNoSID: a security descriptor without the owner asked for.
var errNoSID = errors.New("no owner in the security descriptor")

// ownerOnly reads the opened file's owner and DACL and applies checkACL.
func ownerOnly(what, path string, f *os.File, _ fs.FileInfo) error {
	sd, err := windows.GetSecurityInfo(windows.Handle(f.Fd()), windows.SE_FILE_OBJECT,
		windows.OWNER_SECURITY_INFORMATION|windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return fmt.Errorf("%s %s: read its access control list: %w", what, path, err)
	}
	ownerSID, _, err := sd.Owner()
	if err != nil || ownerSID == nil {
		return fmt.Errorf("%s %s: %w", what, path, errNoSID)
	}
	user, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return fmt.Errorf("%s %s: who am i: %w", what, path, err)
	}
	dacl, _, err := sd.DACL()
	hasDACL := err == nil && dacl != nil
	var entries []ace
	if hasDACL {
		for i := uint32(0); i < uint32(dacl.AceCount); i++ {
			var a *windows.ACCESS_ALLOWED_ACE
			if err := windows.GetAce(dacl, i, &a); err != nil {
				return fmt.Errorf("%s %s: read its access control list: %w", what, path, err)
			}
			e := ace{typ: a.Header.AceType, flags: a.Header.AceFlags, mask: uint32(a.Mask)}
			if e.typ == aceAllowed || e.typ == aceAllowedCallback {
				e.sid = (*windows.SID)(unsafe.Pointer(&a.SidStart)).String()
			}
			entries = append(entries, e)
		}
	}
	return checkACL(what, path, ownerSID.String(), user.User.Sid.String(), hasDACL, entries)
}
