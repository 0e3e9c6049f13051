//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestFwknopClient: config fwknop-client prints what the fwknop apps ask
// for, from the server's config: its SPA port, the service's ports as
// access, the keys of the key file, the settings knockwall accepts; --qr
// adds a square QR code of the keys.
func TestFwknopClient(t *testing.T) {
	content, err := os.ReadFile("../../fwknop/testdata/fwknop.key")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "fwknop.key")
	if err := os.WriteFile(key, content, 0o600); err != nil {
		t.Fatal(err)
	}
	var enc, mac string
	for _, line := range strings.Split(string(content), "\n") {
		if v, ok := strings.CutPrefix(line, "KEY_BASE64: "); ok {
			enc = v
		}
		if v, ok := strings.CutPrefix(line, "HMAC_KEY_BASE64: "); ok {
			mac = v
		}
	}
	cfg := writeConfig(t, "services:\n  phone:\n    ports: [22, 2222]\n    open_for: 45s\n    fwknop: {port: 62300, key_file: "+key+"}\n  web:\n    ports: [443]\n    sequence: [1, 2, 3]\n")

	code, out, errOut := runCLI(t, nil, "config", "fwknop-client", "phone", "-c", cfg, "--host", "vpn.example.org")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"Server address:     vpn.example.org\n",
		"Server port:        62300 ",
		"Protocol:           UDP\n",
		"Access ports:       tcp/22,tcp/2222\n",
		"Rijndael key:       " + enc + " ",
		"HMAC key:           " + mac + " ",
		"HMAC type:          SHA256\n",
		"Encryption mode:    CBC ",
		"Server timeout:     45 ",
		"[phone]\nSPA_SERVER          vpn.example.org\nSPA_SERVER_PORT     62300\n",
		"KEY_BASE64          " + enc + "\n",
		"HMAC_KEY_BASE64     " + mac + "\n",
		"ACCESS              tcp/22,tcp/2222\n",
		"ALLOW_IP            resolve\n",
		"Allow IP:           Resolve IP  (the phone's public address; \"Source IP\" works",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "QR") {
		t.Errorf("a QR code without --qr:\n%s", out)
	}

	code, out, errOut = runCLI(t, nil, "config", "fwknop-client", "phone", "-c", cfg, "--qr")
	if code != 0 || !strings.Contains(out, "<this server's address>") {
		t.Fatalf("--qr: exit %d: %s%s", code, out, errOut)
	}
	_, block, ok := strings.Cut(out, "Scan QR\":\n")
	if !ok {
		t.Fatalf("no QR code:\n%s", out)
	}
	lines := strings.Split(strings.TrimRight(block, "\n"), "\n")
	width := utf8.RuneCountInString(lines[0])
	// Two modules per character vertically: a square of n modules is n
	// wide and about n/2 lines high.
	if width < 21 || len(lines) < width/2 || len(lines) > width/2+1 {
		t.Errorf("QR code of %d lines of %d characters is not square", len(lines), width)
	}
	for i, l := range lines {
		if utf8.RuneCountInString(l) != width {
			t.Errorf("QR line %d is %d wide, not %d", i, utf8.RuneCountInString(l), width)
		}
	}
	if got := fwknopQRPayload(enc, mac); got != "KEY_BASE64:"+enc+" HMAC_KEY_BASE64:"+mac {
		t.Errorf("QR payload %q", got)
	}

	// A server that requires bound packets says that it refuses Source IP.
	bound := writeConfig(t, "services:\n  phone:\n    ports: [22]\n    fwknop: {port: 62300, key_file: "+key+", require_source: true}\n")
	if code, out, errOut := runCLI(t, nil, "config", "fwknop-client", "phone", "-c", bound); code != 0 || !strings.Contains(out, `this server refuses "Source IP"`) {
		t.Errorf("require_source: exit %d\n%s%s", code, out, errOut)
	}

	for _, args := range [][]string{
		{"config", "fwknop-client", "web", "-c", cfg},
		{"config", "fwknop-client", "nope", "-c", cfg},
		{"config", "fwknop-client", "-c", cfg},
	} {
		if code, _, _ := runCLI(t, nil, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
