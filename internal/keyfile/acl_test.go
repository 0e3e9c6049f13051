package keyfile

import (
	"errors"
	"strings"
	"testing"
)

// TestCheckACL: the Windows check, on the entries Windows reports. Only
// the owner, the user running knockwall, SYSTEM and Administrators may be
// allowed anything; everyone else (Everyone, Users, Authenticated Users,
// another user) refuses the file, as does a missing DACL.
func TestCheckACL(t *testing.T) {
	const (
		me       = "S-1-5-21-1-2-3-1001"
		other    = "S-1-5-21-1-2-3-1002"
		everyone = "S-1-1-0"
		users    = "S-1-5-32-545"
		authUser = "S-1-5-11"
		full     = 0x1f01ff
		read     = 0x120089
	)
	profile := []ace{ // a file created in the user's profile
		{typ: aceAllowed, mask: full, sid: sidSystem},
		{typ: aceAllowed, mask: full, sid: sidAdministrators},
		{typ: aceAllowed, mask: full, sid: me},
	}
	tests := []struct {
		name    string
		owner   string
		noDACL  bool
		entries []ace
		want    string // "" accepts; else in the error
	}{
		{name: "profile default", owner: me, entries: profile},
		{name: "owned by administrators", owner: sidAdministrators, entries: profile},
		{name: "owner only", owner: me, entries: []ace{{typ: aceAllowed, mask: full, sid: me}}},
		{name: "empty DACL: no one may read", owner: me},
		{name: "no DACL", owner: me, noDACL: true, want: "no access control list"},
		{name: "owned by another user", owner: other, entries: profile, want: "owned by " + other},
		{name: "everyone reads", owner: me, entries: append(profile[:3:3], ace{typ: aceAllowed, mask: read, sid: everyone}), want: "lets S-1-1-0 in"},
		{name: "users read (C:\\ default)", owner: me, entries: append(profile[:3:3], ace{typ: aceAllowed, mask: read, sid: users}), want: "lets " + users},
		{name: "authenticated users", owner: me, entries: append(profile[:3:3], ace{typ: aceAllowed, mask: 0x1301bf, sid: authUser}), want: authUser},
		{name: "another user", owner: me, entries: append(profile[:3:3], ace{typ: aceAllowed, mask: read, sid: other}), want: other},
		{name: "conditional allow to everyone", owner: me, entries: []ace{{typ: aceAllowedCallback, mask: read, sid: everyone}}, want: "lets S-1-1-0 in"},
		{name: "deny to everyone is fine", owner: me, entries: append(profile[:3:3], ace{typ: aceDenied, mask: full, sid: everyone})},
		{name: "inherit-only for users is fine", owner: me, entries: append(profile[:3:3], ace{typ: aceAllowed, flags: aceFlagInheritOnly, mask: read, sid: users})},
		{name: "allow with an empty mask is fine", owner: me, entries: append(profile[:3:3], ace{typ: aceAllowed, sid: everyone})},
		{name: "unreadable allow kind", owner: me, entries: append(profile[:3:3], ace{typ: 0x5, mask: read}), want: "type 0x5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkACL("key file", `C:\k.key`, tt.owner, me, !tt.noDACL, tt.entries)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrPerm) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want ErrPerm and %q", err, tt.want)
			}
		})
	}
}
