package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/knockwall/knockwall/internal/keyfile"
)

func TestKeyFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.key")
	if err := WriteNewKeyFile(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode(), err)
	}
	k, err := LoadKey(path)
	if err != nil || len(k) != KeySize {
		t.Fatalf("LoadKey: %d bytes, %v", len(k), err)
	}
	if err := WriteNewKeyFile(path); err == nil || !strings.Contains(err.Error(), "not overwriting") {
		t.Fatalf("a second keygen on the same path: %v, want a refusal", err)
	}
	other := filepath.Join(t.TempDir(), "other.key")
	if err := WriteNewKeyFile(other); err != nil {
		t.Fatal(err)
	}
	k2, _ := LoadKey(other)
	if string(k) == string(k2) {
		t.Fatal("two keys are equal")
	}
}

func TestKeyFileRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cluster.key")
	if err := WriteNewKeyFile(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path); !errors.Is(err, keyfile.ErrPerm) {
		t.Fatalf("a world-readable key: %v, want ErrPerm", err)
	}
	for name, content := range map[string]string{
		"short":   "c2hvcnQ=\n",
		"garbage": "not base64 at all!\n",
		"empty":   "# only a comment\n",
		"two":     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
	} {
		if _, err := ParseKey([]byte(content)); !errors.Is(err, ErrKey) {
			t.Errorf("%s: %v, want ErrKey", name, err)
		}
	}
}
