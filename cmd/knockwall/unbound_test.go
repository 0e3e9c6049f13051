package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCheckUnboundTokens: for each way a service takes tokens that
// name no source, config check says what an attacker on the path can do
// with one and gives the NAT recipe; with require_source set it says
// nothing of the kind, and shows the setting in the YAML.
func TestConfigCheckUnboundTokens(t *testing.T) {
	dir := t.TempDir()
	spaKey := filepath.Join(dir, "ssh.key")
	if code, _, errOut := runCLI(t, nil, "keygen", spaKey); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errOut)
	}
	fwKey := filepath.Join(dir, "fwknop.keys")
	raw := func(b byte) string { return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(b), 32))) }
	if err := os.WriteFile(fwKey, []byte("KEY_BASE64: "+raw('k')+"\nHMAC_KEY_BASE64: "+raw('h')+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := func(spaExtra, fwExtra string) string {
		return "services: {ssh: {ports: [22], spa: {port: 62201, key_file: " + spaKey + spaExtra +
			"}, fwknop: {port: 62202, key_file: " + fwKey + fwExtra + "}}}\n"
	}
	spaWarn := []string{"takes SPA tokens bound to no source", "send it first, from their own address", "--source PUBLIC_ADDR"}
	fwWarn := []string{"takes fwknop packets with allow-IP 0.0.0.0", "send it first, from their own address", "fwknop -R"}
	tests := []struct {
		name      string
		cfg       string
		want, not []string
	}{
		{name: "default", cfg: body("", ""), want: append(append([]string{"fwknop:\n      port: 62202\n      max_age: 2m0s\n      require_source: false"}, spaWarn...), fwWarn...)},
		{name: "spa bound", cfg: body(", require_source: true", ""), want: fwWarn, not: spaWarn[:1]},
		{name: "fwknop bound", cfg: body("", ", require_source: true"),
			want: append([]string{"require_source: true", "naming its own address"}, spaWarn...), not: fwWarn[:1]},
		{name: "both bound", cfg: body(", require_source: true", ", require_source: true"), not: []string{spaWarn[0], fwWarn[0]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, nil, "config", "check", "-c", writeConfig(t, tt.cfg))
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}
