//go:build knockwall_omit_cluster

package cluster

import (
	"errors"
	"testing"
)

// TestOmitted: a build without the cluster refuses to start one.
func TestOmitted(t *testing.T) {
	if Built {
		t.Fatal("Built in a knockwall_omit_cluster build")
	}
	if _, err := Start(NodeConfig{}); !errors.Is(err, ErrOmitted) {
		t.Fatalf("Start: %v", err)
	}
}
