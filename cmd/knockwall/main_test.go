//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/knockwall/knockwall/rules"
)

func TestConfigCheck(t *testing.T) {
	good := writeConfig(t, string(rules.ExampleYAML))
	tests := []struct {
		name       string
		env        []string
		args       []string
		wantCode   int
		wantOut    string // in stdout
		wantErrOut string // in stderr
	}{
		{name: "example file", args: []string{"config", "check", "-c", good}, wantCode: 0, wantOut: "open for 30s"},
		{name: "embedded example", args: []string{"config", "check", "--example"}, wantCode: 0, wantOut: "sequence: [7000/tcp, 8000/tcp, 9000/udp]"},
		{name: "path from KNOCKWALL_CONFIG", env: []string{"KNOCKWALL_CONFIG=" + good}, args: []string{"config", "check"}, wantCode: 0},
		{name: "env override of a service key", env: []string{"KNOCKWALL_SERVICES_SSH_OPEN_FOR=2m", "KNOCKWALL_QUEUE_NUM=7"},
			args: []string{"config", "check", "-c", good}, wantCode: 0, wantOut: "open_for: 2m0s"},
		{name: "env override with a bad value names the key", env: []string{"KNOCKWALL_SERVICES_SSH_OPEN_FOR=-1s"},
			args: []string{"config", "check", "-c", good}, wantCode: 2, wantErrOut: "services.ssh.open_for"},
		{name: "unknown key", args: []string{"config", "check", "-c", writeConfig(t, "bogus: 1\nservices: {ssh: {ports: [22], sequence: [1]}}\n")},
			wantCode: 2, wantErrOut: "bogus: unknown key"},
		{name: "knock on a protected port", args: []string{"config", "check", "-c", writeConfig(t, "services: {ssh: {ports: [22], sequence: [22]}}\n")},
			wantCode: 2, wantErrOut: "services.ssh.sequence[0]"},
		{name: "a sequence in order is worth little against a sweep", args: []string{"config", "check", "-c", writeConfig(t, "services: {ssh: {ports: [22], sequence: [7000/udp, 7001/udp, 7002/udp]}}\n")},
			wantCode: 0, wantErrOut: "ssh's sequence is worth 18 bits against an attacker who sweeps ports (below 32)"},
		{name: "a sequence with no pattern", args: []string{"config", "check", "-c", writeConfig(t, "services: {ssh: {ports: [22], sequence: [7113, 52611/udp, 18842], plain_grants: 100}}\n")},
			wantCode: 0, wantOut: "worth 51 bits against a sweep (2 bits once its knocks are sniffed and only their order is left); at most 100 grants"},
		{name: "plain grants leave no room for the rest", args: []string{"config", "check", "-c", writeConfig(t, "tracker: {max_grants: 10}\nservices: {ssh: {ports: [22], sequence: [7113, 52611, 18842], plain_grants: 10}}\n")},
			wantCode: 2, wantErrOut: "tracker.max_grants"},
		{name: "without the fast path every new UDP flow is judged", args: []string{"config", "check", "-c", writeConfig(t, "firewall: {fast_path: false}\nservices: {ssh: {ports: [22], sequence: [7113, 52611/udp, 18842]}}\n")},
			wantCode: 0, wantErrOut: "every new UDP flow to this host is judged in user space"},
		{name: "missing file", args: []string{"config", "check", "-c", "/nonexistent/knockwall.yaml"}, wantCode: 2, wantErrOut: "does not exist"},
		{name: "usage error", args: []string{"config", "check", "--nope"}, wantCode: 2},
		{name: "extra argument", args: []string{"config", "check", "x"}, wantCode: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.env, tt.args...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErrOut) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant stdout ∋ %q, stderr ∋ %q", code, tt.wantCode, out, errOut, tt.wantOut, tt.wantErrOut)
			}
		})
	}
}

// TestConfigCheckRequireSource: config check shows spa.require_source, from
// the file or the environment, in the YAML and in words.
func TestConfigCheckRequireSource(t *testing.T) {
	key := filepath.Join(t.TempDir(), "ssh.key")
	if code, _, errOut := runCLI(t, nil, "keygen", key); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errOut)
	}
	body := func(extra string) string {
		return "services: {ssh: {ports: [22], spa: {port: 62201, key_file: " + key + extra + "}}}\n"
	}
	tests := []struct {
		name    string
		env     []string
		cfg     string
		want    []string
		notWant string
	}{
		{name: "default", cfg: body(""), want: []string{"require_source: false"}, notWant: "bound to its own address"},
		{name: "set in the file", cfg: body(", require_source: true"), want: []string{"require_source: true", "token bound to its own address"}},
		{name: "set from the environment", env: []string{"KNOCKWALL_SERVICES_SSH_SPA_REQUIRE_SOURCE=true"}, cfg: body(""),
			want: []string{"require_source: true", "token bound to its own address"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.env, "config", "check", "-c", writeConfig(t, tt.cfg))
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if tt.notWant != "" && strings.Contains(out, tt.notWant) {
				t.Errorf("output has %q:\n%s", tt.notWant, out)
			}
		})
	}
}

func TestExampleRoundTrip(t *testing.T) {
	code, out, _ := runCLI(t, nil, "example")
	if code != 0 || out != string(rules.ExampleYAML) {
		t.Fatalf("example: exit %d, output differs from the embedded example", code)
	}
}

func TestRulesPrint(t *testing.T) {
	tests := []struct {
		backend string
		want    []string
		not     []string
	}{
		{"iptables", []string{
			"#!/bin/sh",
			"iptables-restore --noflush -w <<'EOF'",
			":KNOCKWALL-GUARD - [0:0]",
			"-m mark ! --mark 0x10000000/0x30000000 -j DROP",
			"NFQUEUE --queue-num 0 --queue-bypass",
			"ip6tables-restore --noflush -w <<'EOF'",
			// Jumps are added only where missing: rerunning adds nothing twice.
			"iptables -w -t security -C INPUT '!' -i lo -p tcp --syn -m comment --comment \"knockwall guard jump",
			"2>/dev/null || iptables -w -t security -I INPUT 1 '!' -i lo -p tcp --syn",
		}, []string{"fail-open", "-X KNOCKWALL-GUARD"}},
		{"nftables", []string{
			"#!/usr/sbin/nft -f",
			"add table inet knockwall",
			"add chain inet knockwall guard { type filter hook input priority 50; policy accept; }",
			"meta mark & 0x30000000 != 0x10000000 drop",
			"queue num 0 bypass",
			"update @progress4 { ip saddr timeout 5000ms }",
		}, []string{"delete chain", "delete table"}},
	}
	for _, tt := range tests {
		t.Run(tt.backend, func(t *testing.T) {
			code, out, errOut := runCLI(t, nil, "rules", "print", "--example", "--backend", tt.backend)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			for _, want := range tt.want {
				if !strings.Contains(out, want) {
					t.Errorf("rules print lacks %q:\n%s", want, out)
				}
			}
			for _, not := range tt.not {
				if strings.Contains(out, not) {
					t.Errorf("rules print has %q:\n%s", not, out)
				}
			}
		})
	}
	if code, _, _ := runCLI(t, nil, "rules", "print", "--example", "--backend", "pf"); code != 2 {
		t.Errorf("--backend pf: exit %d, want 2", code)
	}
}

func TestKeygen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k.key")
	if code, _, errOut := runCLI(t, nil, "keygen", p); code != 0 {
		t.Fatalf("keygen: %d %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, nil, "keygen", p); code == 0 || !strings.Contains(errOut, "already exists") {
		t.Fatalf("second keygen: exit %d, %s", code, errOut)
	}
	// A config naming a key readable by others is refused with the key's name.
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, "services: {ssh: {ports: [22], spa: {port: 62201, key_file: "+p+"}}}\n")
	code, _, errOut := runCLI(t, nil, "config", "check", "-c", cfg)
	if code != 2 || !strings.Contains(errOut, "services.ssh.spa.key_file") || !strings.Contains(errOut, "chmod 600") {
		t.Fatalf("0644 key: exit %d, %s", code, errOut)
	}
}

func TestKnockUsage(t *testing.T) {
	for _, args := range [][]string{
		{"knock"},
		{"knock", "10.77.0.1"},
		{"knock", "10.77.0.1", "70000"},
		{"knock", "10.77.0.1", "7000", "--service", "ssh"},
		{"knock", "10.77.0.1", "--service", "nope", "--example"},
		{"knock", "10.77.0.1", "--service", "ssh", "--example", "--method", "spa"},
	} {
		if code, _, _ := runCLI(t, nil, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
