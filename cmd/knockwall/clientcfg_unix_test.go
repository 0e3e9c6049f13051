//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestClientConfigModes: the client config names sequences and keys, so it
// is read like a key: refused when group or others may read it; and the
// key files it names are refused the same way.
func TestClientConfigModes(t *testing.T) {
	dir := t.TempDir()
	cfg := newClientConfigFile(t, dir, goodClientConfig)
	key := filepath.Join(dir, "ssh.key")
	for _, tt := range []struct {
		name       string
		cfg, key   os.FileMode
		args       []string
		wantErrOut string
	}{
		{"config 0644", 0o644, 0o600, []string{"knock", "lab", "-c", cfg}, "client config " + cfg + " has mode 0644"},
		{"config 0660", 0o660, 0o600, []string{"knock", "lab", "-c", cfg}, "chmod 600"},
		{"key 0644", 0o600, 0o644, []string{"knock", "lab", "--service", "ssh", "-c", cfg}, "key file " + key + " has mode 0644"},
		{"rotation key 0640", 0o600, 0o640, []string{"knock", "lab", "--service", "git", "-c", cfg}, "key file " + key + " has mode 0640"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.Chmod(cfg, tt.cfg); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(key, tt.key); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := runCLI(t, nil, tt.args...)
			if code != 2 || out != "" || !strings.Contains(errOut, tt.wantErrOut) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and %q", code, out, errOut, tt.wantErrOut)
			}
		})
	}
	// A symlink to a good config is refused too: its target's mode is
	// not what ls shows for the link.
	if err := os.Chmod(cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "client.yaml")
	if err := os.Symlink(cfg, link); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI(t, nil, "knock", "lab", "-c", link); code != 2 || !strings.Contains(errOut, "client config "+link) {
		t.Fatalf("symlink: exit %d, %s", code, errOut)
	}
}
