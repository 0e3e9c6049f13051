package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportKnockdLimited: a knockd.conf whose only section accepts on one
// interface is not translated: exit 2, nothing on standard output, and the
// reason on standard error. Beside a plain section, that one is printed
// and the limited one still listed.
func TestImportKnockdLimited(t *testing.T) {
	const limited = "[wan]\nsequence = 1,2,3\ncommand = iptables -A INPUT -i eth1 -s %IP% -p tcp --dport 22 -j ACCEPT\n"
	const plain = "[ssh]\nsequence = 4,5,6\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 2222 -j ACCEPT\n"
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "knockd.conf")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	code, out, errOut := runCLI(t, nil, "config", "import-knockd", write(limited))
	if code != exitConfig || out != "" || !strings.Contains(errOut, "[wan] line 3: untranslatable") || !strings.Contains(errOut, "also matches -i eth1") {
		t.Errorf("limited only: exit %d, stdout %q, stderr %q; want exit %d, nothing, the reason", code, out, errOut, exitConfig)
	}
	code, out, errOut = runCLI(t, nil, "config", "import-knockd", write(limited+plain))
	if code != exitOK || !strings.Contains(out, "ports: [2222]") || strings.Contains(out, "ports: [22]") || !strings.Contains(errOut, "also matches -i eth1") {
		t.Errorf("limited beside plain: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}
