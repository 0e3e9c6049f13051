package knockdconf

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/config"
	"github.com/knockwall/knockwall/rules"
)

// svc is what a converted service must decode to.
type svc struct {
	ports    []int
	sequence []string
	step     time.Duration
	openFor  time.Duration
}

func file(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// load decodes yaml the way the daemon does (config.Load on a file) and
// compiles it.
func load(t *testing.T, yaml []byte) rules.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "knockwall.yaml")
	if err := os.WriteFile(path, yaml, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Source{Path: path}, nil)
	if err != nil {
		t.Fatalf("config.Load: %v\n%s", err, yaml)
	}
	if _, err := rules.Compile(cfg); err != nil {
		t.Fatalf("rules.Compile: %v\n%s", err, yaml)
	}
	return cfg
}

func TestConvert(t *testing.T) {
	const sshOpen = "/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"
	for _, tt := range []struct {
		name      string
		input     string
		want      map[string]svc
		wantYAML  []string
		wantNotes []string
		wantErr   error
	}{
		{
			name:  "debian default /etc/knockd.conf",
			input: file(t, "debian-knockd.conf"),
			want: map[string]svc{
				"openssh":   {[]int{22}, []string{"7000", "8000", "9000"}, 5 * time.Second, 30 * time.Second},
				"openhttps": {[]int{443}, []string{"12345", "54321", "24680", "13579"}, 5 * time.Second, 30 * time.Second},
			},
			wantYAML:  []string{"# from [openSSH], line 4", "seq_timeout bounds the whole sequence", "#   - line 2: UseSyslog"},
			wantNotes: []string{"UseSyslog", "[closeSSH] line 13: its command deletes a firewall rule", "tcpflags = syn", "knockwall closes it after open_for"},
		},
		{
			name:  "man page example 1: open and close sequences, no -p",
			input: file(t, "manpage-example1.conf"),
			want: map[string]svc{
				"openssh": {[]int{22}, []string{"7000", "8000", "9000"}, 10 * time.Second, 30 * time.Second},
			},
			wantNotes: []string{"LogFile /var/log/knockd.log", "names no protocol", "[closeSSH] line", "a close sequence"},
		},
		{
			name:      "man page example 2: accepts every port",
			input:     file(t, "manpage-example2.conf"),
			wantNotes: []string{"accepts every port", "section dropped"},
			wantErr:   ErrNothing,
		},
		{
			name:      "man page example 3: one_time_sequences",
			input:     file(t, "manpage-example3.conf"),
			wantNotes: []string{"one_time_sequences (/etc/knockd/smtp_sequences) cannot be translated"},
			wantErr:   ErrNothing,
		},
		{
			name:      "man page example 4: one_time_sequences, v4 and v6",
			input:     file(t, "manpage-example4.conf"),
			wantNotes: []string{"one_time_sequences"},
			wantErr:   ErrNothing,
		},
		{
			name: "start/stop/cmd_timeout with udp and tcp knocks",
			input: `[options]
	logfile = /var/log/knockd.log
[opencloseSSH]
	sequence      = 2222:udp,3333:tcp,4444:udp
	seq_timeout   = 15
	tcpflags      = syn,ack
	start_command = /usr/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
	cmd_timeout   = 5
	stop_command  = /usr/sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
`,
			want:      map[string]svc{"openclosessh": {[]int{22}, []string{"2222/udp", "3333", "4444/udp"}, 15 * time.Second, 5 * time.Second}},
			wantYAML:  []string{"sequence: [2222/udp, 3333, 4444/udp]", "open_for: 5s # knockd's cmd_timeout"},
			wantNotes: []string{"tcpflags = syn,ack cannot be translated"},
		},
		{
			name: "stop_command without cmd_timeout: knockd's default 10s",
			input: "[ssh]\nsequence = 1,2,3\nstart_command = " + sshOpen +
				"\nstop_command = /sbin/iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT\n",
			want: map[string]svc{"ssh": {[]int{22}, []string{"1", "2", "3"}, 25 * time.Second, 10 * time.Second}},
		},
		{
			name: "openHTTPS with one_time_sequences beside a good section",
			input: "[openSSH]\nsequence = 7000,8000,9000\ncommand = " + sshOpen + "\n" +
				"[openHTTPS]\none_time_sequences = /etc/knockd/https_sequences\nseq_timeout = 5\ncommand = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 443 -j ACCEPT\n",
			want:      map[string]svc{"openssh": {[]int{22}, []string{"7000", "8000", "9000"}, 25 * time.Second, 30 * time.Second}},
			wantNotes: []string{"[openHTTPS] line 5: one_time_sequences (/etc/knockd/https_sequences) cannot be translated"},
		},
		{
			name: "odd spelling: tabs, comments, upper-case keys, no [options], CRLF, aliases",
			input: "# my knockd\r\n\r\n\t[SSH-Door 2]\r\n\tSEQUENCE=7000:TCP, 8000 :udp ,9000\r\n" +
				"   # a comment\r\n\tTimeout\t=\t7\r\n\tCommand\t=\tsudo /usr/sbin/iptables -I INPUT 1 -s %IP% -p tcp -m multiport --dports 22,2222 -j ACCEPT\r\n",
			want: map[string]svc{"ssh_door_2": {[]int{22, 2222}, []string{"7000", "8000/udp", "9000"}, 7 * time.Second, 30 * time.Second}},
		},
		{
			name: "nft accept, set of ports, and a logger",
			input: "[web]\nsequence = 5000,6000,7000\nstart_command = nft add rule inet filter input ip saddr %IP% tcp dport { 80, 443 } accept && logger opened\n" +
				"cmd_timeout = 60\nstop_command = nft delete rule inet filter input handle 7\n",
			want:      map[string]svc{"web": {[]int{80, 443}, []string{"5000", "6000", "7000"}, 25 * time.Second, 60 * time.Second}},
			wantNotes: []string{`"logger opened" is not a firewall command`},
		},
		{
			name:  "nft quoted, single port",
			input: "[ssh]\nsequence = 5000,6000,7000\ncommand = /usr/sbin/nft 'insert rule ip filter input ip saddr %IP% tcp dport 22 accept'\n",
			want:  map[string]svc{"ssh": {[]int{22}, []string{"5000", "6000", "7000"}, 25 * time.Second, 30 * time.Second}},
		},
		{
			name: "ip6tables command_6 adds a port",
			input: "[ssh]\nsequence = 5000,6000,7000\ncommand = " + sshOpen +
				"\ncommand_6 = /sbin/ip6tables -A INPUT -s %IP% -p tcp --dport 2222 -j ACCEPT\n",
			want:      map[string]svc{"ssh": {[]int{22, 2222}, []string{"5000", "6000", "7000"}, 25 * time.Second, 30 * time.Second}},
			wantNotes: []string{"start_command_6 opens 2222, start_command 22"},
		},
		{
			name:  "knockd's helper script",
			input: "[openHTTPS]\nsequence = 12345,54321,24680\ncommand = /usr/local/sbin/knock_add -i -c INPUT -p tcp -d 443 -f %IP%\n",
			want:  map[string]svc{"openhttps": {[]int{443}, []string{"12345", "54321", "24680"}, 25 * time.Second, 30 * time.Second}},
		},
		{
			name:      "short sequence kept with a note",
			input:     "[ssh]\nsequence = 7000\ncommand = " + sshOpen + "\n",
			want:      map[string]svc{"ssh": {[]int{22}, []string{"7000"}, 25 * time.Second, 30 * time.Second}},
			wantNotes: []string{"a sequence of 1 knock(s) is short"},
		},
		{
			name: "names: digits first, duplicates",
			input: "[1st]\nsequence = 1001,1002,1003\ncommand = " + sshOpen + "\n" +
				"[ssh]\nsequence = 2001,2002,2003\ncommand = " + sshOpen + "\n" +
				"[SSH]\nsequence = 3001,3002,3003\ncommand = " + sshOpen + "\n",
			want: map[string]svc{
				"knock_1st": {[]int{22}, []string{"1001", "1002", "1003"}, 25 * time.Second, 30 * time.Second},
				"ssh":       {[]int{22}, []string{"2001", "2002", "2003"}, 25 * time.Second, 30 * time.Second},
				"ssh_2":     {[]int{22}, []string{"3001", "3002", "3003"}, 25 * time.Second, 30 * time.Second},
			},
		},
		{
			name: "conflicts: shared knock, knock on a protected port, repeated knock",
			input: "[a]\nsequence = 7000,8000,9000\ncommand = " + sshOpen + "\n" +
				"[b]\nsequence = 9000,1,2\ncommand = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 80 -j ACCEPT\n" +
				"[c]\nsequence = 3,22,4\ncommand = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 81 -j ACCEPT\n" +
				"[d]\nsequence = 5,5,6\ncommand = /sbin/iptables -A INPUT -s %IP% -p tcp --dport 82 -j ACCEPT\n" +
				"[e]\nsequence = 7,22,8\ncommand = " + sshOpen + "\n",
			want:      map[string]svc{"a": {[]int{22}, []string{"7000", "8000", "9000"}, 25 * time.Second, 30 * time.Second}},
			wantNotes: []string{"[b] line 4: knock 9000/tcp is also in the sequence of [a]", "[c] line 7: knock 22/tcp is a port that [a] protects", "[d] line 11: knock 5/tcp repeats", "[e] line 14: knock 22/tcp is the protected port itself"},
		},
		{
			name: "udp accept and unknown directives",
			input: "[dns]\nsequence = 1,2,3\ncommand = /sbin/iptables -A INPUT -s %IP% -p udp --dport 53 -j ACCEPT\n" +
				"[ssh]\nsequence = 4,5,6\ncommand = " + sshOpen + "\nfoo = bar\ntarget = 192.0.2.1\n",
			want:      map[string]svc{"ssh": {[]int{22}, []string{"4", "5", "6"}, 25 * time.Second, 30 * time.Second}},
			wantNotes: []string{"knockwall protects TCP ports only", "[ssh] line 7: foo is unknown to knockd", "target = 192.0.2.1 cannot be translated"},
		},
		{
			name:      "bad sequence",
			input:     "[ssh]\nsequence = 7000,http,9000\ncommand = " + sshOpen + "\n",
			wantNotes: []string{`knock "http": port must be a number`},
			wantErr:   ErrNothing,
		},
		{
			name:      "port out of range and bad protocol",
			input:     "[a]\nsequence = 70000\ncommand = " + sshOpen + "\n[b]\nsequence = 7:icmp\ncommand = " + sshOpen + "\n",
			wantNotes: []string{`knock "70000"`, `knock "7:icmp": protocol must be tcp or udp`},
			wantErr:   ErrNothing,
		},
		{
			name:      "arbitrary command",
			input:     "[wake]\nsequence = 1,2,3\ncommand = /usr/bin/etherwake 00:11:22:33:44:55\n",
			wantNotes: []string{`command "/usr/bin/etherwake 00:11:22:33:44:55" is not a recognisable`},
			wantErr:   ErrNothing,
		},
		{
			name:      "accept to everyone",
			input:     "[ssh]\nsequence = 1,2,3\ncommand = iptables -A INPUT -p tcp --dport 22 -j ACCEPT\n",
			want:      map[string]svc{"ssh": {[]int{22}, []string{"1", "2", "3"}, 25 * time.Second, 30 * time.Second}},
			wantNotes: []string{"opens to every source"},
		},
		{
			name: "accepts limited by an interface, a destination, an address range or a source network: untranslatable",
			input: "[wan]\nsequence = 1,2,3\ncommand = iptables -A INPUT -i eth1 -s %IP% -p tcp --dport 22 -j ACCEPT\n" +
				"[dst]\nsequence = 4,5,6\ncommand = iptables -A INPUT -s %IP% -d 192.0.2.1 -p tcp --dport 23 -j ACCEPT\n" +
				"[range]\nsequence = 7,8,9\ncommand = iptables -A INPUT -m iprange --src-range 10.0.0.1-10.0.0.9 -p tcp --dport 24 -j ACCEPT\n" +
				"[lan]\nsequence = 10,11,12\ncommand = iptables -A INPUT -s 10.0.0.0/8 -p tcp --dport 25 -j ACCEPT\n" +
				"[geo]\nsequence = 13,14,15\ncommand = iptables -A INPUT -s %IP% -m geoip --src-cc DE -p tcp --dport 26 -j ACCEPT\n" +
				"[v6]\nsequence = 16,17,18\ncommand = " + sshOpen + "\ncommand_6 = ip6tables -A INPUT -i wg0 -s %IP% -p tcp --dport 22 -j ACCEPT\n",
			wantNotes: []string{
				`[wan] line 3: untranslatable: "iptables -A INPUT -i eth1 -s %IP% -p tcp --dport 22 -j ACCEPT" also matches -i eth1`,
				`[dst] line 6: untranslatable: "iptables -A INPUT -s %IP% -d 192.0.2.1 -p tcp --dport 23 -j ACCEPT" also matches -d 192.0.2.1`,
				"also matches -m iprange, --src-range 10.0.0.1-10.0.0.9",
				"also matches -s 10.0.0.0/8",
				"also matches -m geoip",
				"[v6] line 18: untranslatable", "also matches -i wg0",
				"it would open the port to every knocker from anywhere",
			},
			wantErr: ErrNothing,
		},
		{
			name: "nft and helper accepts limited beyond the knocker: untranslatable; a plain one beside them stays",
			input: "[ssh]\nsequence = 1,2,3\ncommand = " + sshOpen + "\n" +
				"[wan]\nsequence = 4,5,6\ncommand = nft add rule inet filter input iifname eth1 ip saddr %IP% tcp dport 80 accept\n" +
				"[dst]\nsequence = 7,8,9\ncommand = nft add rule inet filter input ip saddr %IP% ip daddr 192.0.2.1 tcp dport 81 accept\n" +
				"[lan]\nsequence = 10,11,12\ncommand = nft add rule filter input ip saddr 10.0.0.0/8 tcp dport 82 accept\n" +
				"[helper]\nsequence = 13,14,15\ncommand = knock_add -i -c INPUT -p tcp -d 83 -f 10.0.0.1\n",
			want: map[string]svc{"ssh": {[]int{22}, []string{"1", "2", "3"}, 25 * time.Second, 30 * time.Second}},
			wantNotes: []string{"[wan] line 6: untranslatable", "also matches iifname eth1", "also matches ip daddr 192.0.2.1",
				"also matches ip saddr 10.0.0.0/8", "[helper] line 15: untranslatable", "also matches -f 10.0.0.1"},
		},
		{
			name: "matches that limit no further than a grant (state, comment, wait, counter) translate; an option=value limit does not",
			input: "[ssh]\nsequence = 1,2,3\ncommand = iptables -w 5 -I INPUT 1 -s %IP% -p tcp -m tcp --syn -m state --state NEW -m comment --comment 'knockd ssh' --dport 22 -j ACCEPT\n" +
				"[web]\nsequence = 4,5,6\ncommand = nft add rule inet filter input ip saddr %IP% meta l4proto tcp ct state new tcp dport 443 counter accept comment knockd\n" +
				"[wan]\nsequence = 7,8,9\ncommand = iptables -A INPUT --in-interface=eth1 -s %IP% -p tcp --dport 25 -j ACCEPT\n",
			want: map[string]svc{
				"ssh": {[]int{22}, []string{"1", "2", "3"}, 25 * time.Second, 30 * time.Second},
				"web": {[]int{443}, []string{"4", "5", "6"}, 25 * time.Second, 30 * time.Second},
			},
			wantNotes: []string{"also matches --in-interface=eth1"},
		},
		{
			name:      "port range not translated",
			input:     "[ssh]\nsequence = 1,2,3\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 1000:2000 -j ACCEPT\n",
			wantNotes: []string{"only single port numbers are translated"},
			wantErr:   ErrNothing,
		},
		{
			name:      "bad timeouts fall back to knockd's defaults",
			input:     "[ssh]\nsequence = 1,2,3\nseq_timeout = soon\ncommand = " + sshOpen + "\ncmd_timeout = -4\nstop_command = true\n",
			want:      map[string]svc{"ssh": {[]int{22}, []string{"1", "2", "3"}, 25 * time.Second, 10 * time.Second}},
			wantNotes: []string{`seq_timeout "soon"`, `cmd_timeout "-4"`, `stop_command "true" is not recognisably the delete`},
		},
		{
			name:      "directives outside a section",
			input:     "sequence = 1,2,3\n[options]\nInterface = eth1\nPidFile = /run/k.pid\nUseSyslog\n",
			wantNotes: []string{"outside any section", "Interface eth1", "PidFile /run/k.pid", "UseSyslog"},
			wantErr:   ErrNothing,
		},
		{
			name:     "leading zeros are written as decimal, not octal",
			input:    "[ssh]\nsequence = 07000,0800:udp,9000\ncommand = " + sshOpen + "\n",
			want:     map[string]svc{"ssh": {[]int{22}, []string{"7000", "800/udp", "9000"}, 25 * time.Second, 30 * time.Second}},
			wantYAML: []string{"sequence: [7000, 800/udp, 9000]"},
		},
		{
			name:      "knockd reads 7000/udp as 7000 tcp; refused rather than guessed",
			input:     "[ssh]\nsequence = 7000/udp,8000,9000\ncommand = " + sshOpen + "\n",
			wantNotes: []string{`knock "7000/udp": port must be a number`},
			wantErr:   ErrNothing,
		},
		{
			name: "names YAML would read as null or bool",
			input: "[null]\nsequence = 1,2,3\ncommand = " + sshOpen + "\n" +
				"[Yes]\nsequence = 4,5,6\ncommand = " + sshOpen + "\n",
			want: map[string]svc{
				"null": {[]int{22}, []string{"1", "2", "3"}, 25 * time.Second, 30 * time.Second},
				"yes":  {[]int{22}, []string{"4", "5", "6"}, 25 * time.Second, 30 * time.Second},
			},
		},
		{
			name: "control and line-break characters in a section name stay in the comment",
			input: "\ufeff[a\u0085services: x]\nsequence = 1,2,3\ncommand = " + sshOpen + "\n" +
				"[b\u2028c\x14]\nsequence = 4,5,6\ncommand = " + sshOpen + "\n",
			want: map[string]svc{
				"a_services__x": {[]int{22}, []string{"1", "2", "3"}, 25 * time.Second, 30 * time.Second},
				"b_c_":          {[]int{22}, []string{"4", "5", "6"}, 25 * time.Second, 30 * time.Second},
			},
			wantYAML: []string{"# from [a?services: x], line 1", "# from [b?c?], line 4"},
		},
		{
			name:    "empty",
			input:   "",
			wantErr: ErrNothing,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			yaml, notes, err := Convert(strings.NewReader(tt.input))
			all := strings.Join(notes, "\n")
			for _, w := range tt.wantNotes {
				if !strings.Contains(all, w) {
					t.Errorf("notes lack %q:\n%s", w, all)
				}
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v\nnotes:\n%s", err, tt.wantErr, all)
			}
			if err != nil {
				if yaml != nil {
					t.Error("yaml returned with an error")
				}
				return
			}
			for _, w := range tt.wantYAML {
				if !strings.Contains(string(yaml), w) {
					t.Errorf("yaml lacks %q:\n%s", w, yaml)
				}
			}
			for _, n := range notes {
				if !strings.Contains(string(yaml), "#   - "+n+"\n") {
					t.Errorf("note %q is not a comment in the yaml", n)
				}
			}
			cfg := load(t, yaml)
			if len(cfg.Services) != len(tt.want) {
				t.Fatalf("services = %v, want %d\n%s", keys(cfg.Services), len(tt.want), yaml)
			}
			for name, w := range tt.want {
				got, ok := cfg.Services[name]
				if !ok {
					t.Fatalf("no service %q in %v\n%s", name, keys(cfg.Services), yaml)
				}
				if !slices.Equal(got.Ports, w.ports) || !slices.Equal(got.Sequence, w.sequence) || got.StepTimeout != w.step || got.OpenFor != w.openFor || got.Closed != rules.ClosedReject {
					t.Errorf("%s = ports %v sequence %v step %v open %v closed %s, want %+v", name, got.Ports, got.Sequence, got.StepTimeout, got.OpenFor, got.Closed, w)
				}
			}
		})
	}
}

func keys[V any](m map[string]V) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	slices.Sort(k)
	return k
}

func TestConvertTooLarge(t *testing.T) {
	big := strings.Repeat("# padding\n", MaxInput/10+1)
	if _, _, err := Convert(strings.NewReader(big)); err == nil || errors.Is(err, ErrNothing) {
		t.Fatalf("err = %v, want a size error", err)
	}
}

func TestServiceName(t *testing.T) {
	taken := map[string]bool{}
	for _, tt := range []struct{ in, want string }{
		{"openSSH", "openssh"},
		{"openSSH", "openssh_2"},
		{"open-HTTPS v2", "open_https_v2"},
		{"2fa", "knock_2fa"},
		{"_x", "knock__x"},
		{"ÄÖÜ", "knock____"},
		{"", "knock_"},
	} {
		got := serviceName(tt.in, taken)
		taken[got] = true
		if got != tt.want {
			t.Errorf("serviceName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzConvert(f *testing.F) {
	for _, name := range []string{"debian-knockd.conf", "manpage-example1.conf", "manpage-example2.conf", "manpage-example3.conf"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("[a]\nsequence=1:udp,2\ncommand=nft add rule inet f i ip saddr %IP% tcp dport {22,443} accept\ncmd_timeout=3\nstop_command=nft delete rule inet f i handle 3\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		yaml, notes, err := Convert(strings.NewReader(string(in)))
		for _, n := range notes {
			if strings.ContainsAny(n, "\r\n") {
				t.Fatalf("note spans lines: %q", n)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrNothing) {
				t.Fatalf("err = %v", err) // Convert validates its own output
			}
			return
		}
		cfg, err := config.Decode(yaml, nil)
		if err != nil {
			t.Fatalf("output does not decode: %v\n%s", err, yaml)
		}
		if _, err := rules.Compile(cfg); err != nil {
			t.Fatalf("output does not compile: %v\n%s", err, yaml)
		}
	})
}
