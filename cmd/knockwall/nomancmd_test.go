//go:build !genman

package main

import (
	"strings"
	"testing"
)

// TestNoGenMan: the shipped binary (built without -tags genman) has no
// gen-man command, so no man-page generator is linked into it.
func TestNoGenMan(t *testing.T) {
	code, _, errOut := runCLI(t, nil, "gen-man", t.TempDir())
	if code == 0 || !strings.Contains(errOut, `unknown command "gen-man"`) {
		t.Errorf("gen-man: exit %d: %s", code, errOut)
	}
}
