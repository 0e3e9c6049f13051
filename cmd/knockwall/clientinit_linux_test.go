package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/knockwall/knockwall/rules"
)

// TestClientInitFromRealCheck: what the server's `knockwall config check`
// prints is what client init reads: the client config it makes opens each
// service as the server's config says (the same token service name, spa
// port, sequence and rotation).
func TestClientInitFromRealCheck(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "ssh.key")
	if code, _, errOut := runCLI(t, nil, "keygen", key); code != 0 {
		t.Fatal(errOut)
	}
	server := writeConfig(t, `services:
  ssh:
    ports: [22]
    spa: {port: 62201, key_file: `+key+`}
    rotate: {length: 3, period: 30s, range: [20000, 40000]}
  web:
    ports: [443]
    sequence: [7000, 8000, 9000/udp]
`)
	code, check, errOut := runCLI(t, nil, "config", "check", "-c", server)
	if code != 0 {
		t.Fatalf("config check: %s", errOut)
	}
	checkFile := filepath.Join(dir, "check.txt")
	if err := os.WriteFile(checkFile, []byte(check), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "client.yaml")
	if code, _, errOut := runCLI(t, nil, "client", "init", "lab", "--host", "127.0.0.1", "-c", cfg, "--from-check", checkFile, "--key-file", key); code != 0 {
		t.Fatalf("client init: %s", errOut)
	}
	b, _ := os.ReadFile(cfg)
	c, err := decodeClientConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	lab := c.Servers["lab"]
	ssh, web := lab.Services["ssh"], lab.Services["web"]
	if ssh.Method != methodSPA || ssh.SPA == nil || ssh.SPA.Port != 62201 || ssh.Rotate == nil || ssh.Rotate.Range[1] != 40000 {
		t.Errorf("ssh: %+v\n%s", ssh, b)
	}
	if strings.Join(web.Sequence, ",") != "7000/tcp,8000/tcp,9000/udp" {
		t.Errorf("web: %+v", web)
	}
	// Both ends derive the same rotating sequence from the same key.
	svc := ssh
	svc.Method = methodRotate
	p, err := svc.plan("ssh", "", keyPathResolver(cfg, nil))
	if err != nil {
		t.Fatal(err)
	}
	set, _, err := (&configFlags{path: server}).load(nil)
	if err != nil {
		t.Fatal(err)
	}
	for idx := int64(100); idx < 103; idx++ {
		if got, want := p.rotate.Sequence("ssh", idx), set.Services[slices.IndexFunc(set.Services, func(s rules.Service) bool { return s.Name == "ssh" })].Rotate.Sequence("ssh", idx); !slices.Equal(got, want) {
			t.Errorf("period %d: client %v, server %v", idx, got, want)
		}
	}
}
