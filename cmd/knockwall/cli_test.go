package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// runCLI runs the command line args as main does, with env as the
// environment, and returns the exit status and what was printed.
func runCLI(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = execute(context.Background(), args, &out, &errOut, env)
	return code, out.String(), errOut.String()
}

// writeConfig writes body to a fresh knockwall.yaml, mode 0600.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "knockwall.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
