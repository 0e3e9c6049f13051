//go:build linux

package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/control"
)

// TestWriteGrantsOrigin: the ORIGIN column appears when a cluster names
// one, and not for a daemon alone.
func TestWriteGrantsOrigin(t *testing.T) {
	g := control.Grant{Src: netip.MustParseAddr("10.0.0.1"), Service: "ssh", ExpiresIn: 30, How: "sequence"}
	var alone bytes.Buffer
	writeGrants(&alone, []control.Grant{g})
	if strings.Contains(alone.String(), "ORIGIN") {
		t.Errorf("ORIGIN without a cluster:\n%s", alone.String())
	}
	other := g
	other.Src, other.Origin = netip.MustParseAddr("10.0.0.2"), "fw-b"
	var clustered bytes.Buffer
	writeGrants(&clustered, []control.Grant{g, other})
	out := clustered.String()
	if f := field(out, "10.0.0.2"); len(f) != 6 || f[5] != "fw-b" {
		t.Errorf("row of fw-b's grant %q:\n%s", f, out)
	}
	if f := field(out, "10.0.0.1"); len(f) != 6 || f[5] != "-" {
		t.Errorf("row of a grant without origin %q:\n%s", f, out)
	}
}

// TestWriteCluster: status lists each peer with its state and last sync.
func TestWriteCluster(t *testing.T) {
	sync := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	writeCluster(&b, &control.Cluster{Name: "fw-a", LastSync: sync, Events: 2,
		Peers:    []control.ClusterPeer{{Name: "fw-b", Addr: "10.255.0.2:7946", State: "alive", LastSync: sync}, {Name: "fw-c", Addr: "10.255.0.3:7946", State: "dead"}},
		Refused:  map[string]uint64{"skew": 3},
		Sent:     map[string]uint64{},
		Received: map[string]uint64{}})
	out := b.String()
	if f := field(out, "fw-b"); len(f) != 4 || f[2] != "alive" || f[3] != sync.Format(time.RFC3339) {
		t.Errorf("fw-b's row %q:\n%s", f, out)
	}
	if f := field(out, "fw-c"); len(f) != 4 || f[2] != "dead" || f[3] != "never" {
		t.Errorf("fw-c's row %q:\n%s", f, out)
	}
	if !strings.Contains(out, "3 clock skew") {
		t.Errorf("no skew count:\n%s", out)
	}
}

// field returns the fields of the first line of out that starts with
// first, or nil.
func field(out, first string) []string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == first {
			return f
		}
	}
	return nil
}
