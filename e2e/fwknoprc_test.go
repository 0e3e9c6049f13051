package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFwknopClientSettings: the settings `knockwall config fwknop-client`
// prints for a phone are what the server takes: its .fwknoprc stanza,
// given as it is to the stock fwknop client, opens the service. Only the
// allow-IP is set to the client's own address (the stanza says resolve,
// which would ask a web service for it).
func TestFwknopClientSettings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	k := fwknopKeygen(t, dir, "fwknop.keys")
	e := newEnv(t, envOptions{svc: service{sequence: []string{}, closed: reject,
		extra: fmt.Sprintf("    fwknop:\n      port: %d\n      key_file: %q\n      require_source: true\n", fwknopPort, k.file)}})
	afterStartSecond() // packets stamped in the daemon's first second are refused

	out, err := e.run(e.pair.Server, e.bin, "config", "fwknop-client", "ssh", "-c", e.cfgPath, "--host", e.pair.Server4.String())
	if err != nil {
		t.Fatalf("knockwall config fwknop-client: %v\n%s", err, out)
	}
	_, stanza, ok := strings.Cut(string(out), "\n[ssh]\n")
	if !ok {
		t.Fatalf("no [ssh] stanza:\n%s", out)
	}
	if !strings.Contains(stanza, "ALLOW_IP            resolve\n") {
		t.Fatalf("the stanza's allow-IP is not resolve:\n%s", stanza)
	}
	stanza = strings.Replace(stanza, "ALLOW_IP            resolve\n", "ALLOW_IP            "+e.pair.Client4.String()+"\n", 1)
	rc := filepath.Join(dir, "fwknoprc")
	if err := os.WriteFile(rc, []byte("[ssh]\n"+stanza), 0o600); err != nil {
		t.Fatal(err)
	}

	remote := e.server4(protectedPort)
	e.expectClosed(t, reject, e.pair.Client4, remote)
	mark := e.d.mark()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := e.pair.Client.Run(ctx, "fwknop", "--rc-file", rc, "-n", "ssh", "--no-save-args"); err != nil {
		t.Fatalf("fwknop -n ssh: %v\n%s\nrc:\n[ssh]\n%s", err, out, stanza)
	}
	if _, err := e.d.waitLogFrom(mark, "grant", map[string]string{"src": e.pair.Client4.String(), "by": "fwknop"}, logTimeout); err != nil {
		t.Fatal(err)
	}
	e.expectOpen(t, e.pair.Client4, remote).Close()
}
