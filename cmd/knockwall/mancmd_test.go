//go:build genman

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGenMan: with -tags genman, gen-man writes a page per command, dated
// SOURCE_DATE_EPOCH, and none for itself.
func TestGenMan(t *testing.T) {
	dir := t.TempDir()
	code, _, errOut := runCLI(t, []string{"SOURCE_DATE_EPOCH=1764151200"}, "gen-man", dir)
	if code != 0 {
		t.Fatalf("gen-man: exit %d: %s", code, errOut)
	}
	page, err := os.ReadFile(filepath.Join(dir, "knockwall-run.8"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), `"Nov 2025"`) {
		t.Errorf("knockwall-run.8 is not dated SOURCE_DATE_EPOCH:\n%.300s", page)
	}
	if _, err := os.Stat(filepath.Join(dir, "knockwall-gen-man.8")); err == nil {
		t.Error("the hidden gen-man command has a man page")
	}
	if code, _, _ := runCLI(t, []string{"SOURCE_DATE_EPOCH=soon"}, "gen-man", dir); code != exitConfig {
		t.Errorf("a bad SOURCE_DATE_EPOCH: exit %d, want %d", code, exitConfig)
	}
}
