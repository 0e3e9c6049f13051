package rules_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/config"
	"github.com/knockwall/knockwall/rules"
)

// sshService is the example's service: port 22 behind 7000, 8000, 9000/udp.
func sshService() rules.ServiceConfig {
	s := rules.ServiceDefaults()
	s.Ports = []int{22}
	s.Sequence = []string{"7000", "8000", "9000/udp"}
	return s
}

// webService protects two ports behind a sequence that starts with UDP.
func webService() rules.ServiceConfig {
	s := rules.ServiceDefaults()
	s.Ports = []int{443, 8443}
	s.Sequence = []string{"10001/udp", "10002", "10003"}
	return s
}

// validConfig is a fresh Config literal with one service; every call builds
// new slices, so a test case may mutate what it gets.
func validConfig() rules.Config {
	c := rules.Defaults()
	c.Services = map[string]rules.ServiceConfig{"ssh": sshService()}
	return c
}

// twoServices is validConfig plus the web service.
func twoServices() rules.Config {
	c := validConfig()
	c.Services["web"] = webService()
	return c
}

func compile(t *testing.T, c rules.Config) *rules.Set {
	t.Helper()
	set, err := rules.Compile(c)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return set
}

func TestCompileValid(t *testing.T) {
	example, err := config.Decode(rules.ExampleYAML, nil)
	if err != nil {
		t.Fatalf("decode example: %v", err)
	}
	shared := twoServices()
	web := shared.Services["web"]
	web.Ports = append(web.Ports, 22) // shares 22 with ssh; both reject
	shared.Services["web"] = web

	tests := []struct {
		name string
		cfg  rules.Config
		// want is checked against the compiled Set.
		services []string
		ports    []uint16
	}{
		{name: "example yaml", cfg: example, services: []string{"ssh"}, ports: []uint16{22}},
		{name: "literal", cfg: validConfig(), services: []string{"ssh"}, ports: []uint16{22}},
		{name: "two services", cfg: twoServices(), services: []string{"ssh", "web"}, ports: []uint16{22, 443, 8443}},
		{name: "shared port same closed action", cfg: shared, services: []string{"ssh", "web"}, ports: []uint16{22, 443, 8443}},
		{name: "udp knock on a protected tcp port number", cfg: func() rules.Config {
			c := validConfig()
			s := c.Services["ssh"]
			s.Sequence = []string{"22/udp", "8000"}
			c.Services["ssh"] = s
			return c
		}(), services: []string{"ssh"}, ports: []uint16{22}},
		{name: "same port number tcp and udp in two services", cfg: func() rules.Config {
			c := twoServices()
			s := c.Services["web"]
			s.Sequence = []string{"7000/udp", "10002"}
			c.Services["web"] = s
			return c
		}(), services: []string{"ssh", "web"}, ports: []uint16{22, 443, 8443}},
		{name: "non-consecutive repeat in one sequence", cfg: func() rules.Config {
			c := validConfig()
			s := c.Services["ssh"]
			s.Sequence = []string{"7000", "8000", "7000"}
			c.Services["ssh"] = s
			return c
		}(), services: []string{"ssh"}, ports: []uint16{22}},
		{name: "single knock", cfg: func() rules.Config {
			c := validConfig()
			s := c.Services["ssh"]
			s.Sequence = []string{"7000"}
			c.Services["ssh"] = s
			return c
		}(), services: []string{"ssh"}, ports: []uint16{22}},
		{name: "durations at the minimum", cfg: func() rules.Config {
			c := validConfig()
			s := c.Services["ssh"]
			s.StepTimeout, s.OpenFor = rules.MinDuration, rules.MinDuration
			c.Services["ssh"] = s
			return c
		}(), services: []string{"ssh"}, ports: []uint16{22}},
		{name: "queue range ends at 65535", cfg: func() rules.Config {
			c := validConfig()
			c.Queue.Num, c.Queue.Count = 65534, 2
			return c
		}(), services: []string{"ssh"}, ports: []uint16{22}},
		{name: "64 services", cfg: func() rules.Config {
			c := rules.Defaults()
			c.Services = map[string]rules.ServiceConfig{}
			for i := range rules.MaxServices {
				s := rules.ServiceDefaults()
				s.Ports = []int{22}
				s.Sequence = []string{fmt.Sprint(10000 + i)}
				c.Services[fmt.Sprintf("s%02d", i)] = s
			}
			return c
		}(), ports: []uint16{22}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := compile(t, tt.cfg)
			if tt.services != nil {
				var got []string
				for _, s := range set.Services {
					got = append(got, s.Name)
				}
				if !slices.Equal(got, tt.services) {
					t.Errorf("services = %v, want %v", got, tt.services)
				}
			}
			if got := set.ProtectedPorts(); !slices.Equal(got, tt.ports) {
				t.Errorf("ProtectedPorts = %v, want %v", got, tt.ports)
			}
		})
	}
}

func TestCompileExample(t *testing.T) {
	c, err := config.Decode(rules.ExampleYAML, nil)
	if err != nil {
		t.Fatal(err)
	}
	set := compile(t, c)
	if len(set.Services) != 1 {
		t.Fatalf("services = %d, want 1", len(set.Services))
	}
	ssh := set.Services[0]
	want := rules.Service{
		Name:        "ssh",
		Ports:       []uint16{22},
		Sequence:    []rules.Knock{{Proto: rules.ProtoTCP, Port: 7000}, {Proto: rules.ProtoTCP, Port: 8000}, {Proto: rules.ProtoUDP, Port: 9000}},
		StepTimeout: 5 * time.Second,
		OpenFor:     30 * time.Second,
		Closed:      rules.ActionReject,
	}
	if ssh.Name != want.Name || !slices.Equal(ssh.Ports, want.Ports) || !slices.Equal(ssh.Sequence, want.Sequence) ||
		ssh.StepTimeout != want.StepTimeout || ssh.OpenFor != want.OpenFor || ssh.Closed != want.Closed {
		t.Errorf("ssh = %+v, want %+v", ssh, want)
	}
	if set.Queue != (rules.QueueConfig{Num: 0, Count: 1, MaxLen: rules.DefaultQueueMaxLen}) {
		t.Errorf("queue = %+v", set.Queue)
	}
	if set.Log != (rules.LogConfig{Level: "info", Format: "text"}) {
		t.Errorf("log = %+v", set.Log)
	}
	if set.Tracker.MaxPending != 65536 || set.Tracker.MaxGrants != 16384 {
		t.Errorf("tracker = %+v", set.Tracker)
	}
	if !set.Firewall.Manage || set.Firewall.AcceptMark != rules.DefaultAcceptMark ||
		set.Firewall.RejectMark != rules.DefaultRejectMark || set.Firewall.MarkMask != rules.DefaultMarkMask {
		t.Errorf("firewall = %+v", set.Firewall)
	}
}

// withSSH returns a mutation of the ssh service of validConfig.
func withSSH(f func(s *rules.ServiceConfig)) func(c *rules.Config) {
	return func(c *rules.Config) {
		s := c.Services["ssh"]
		f(&s)
		c.Services["ssh"] = s
	}
}

func TestCompileInvalid(t *testing.T) {
	tests := []struct {
		name    string
		base    func() rules.Config // validConfig when nil
		mutate  func(c *rules.Config)
		wantKey string
		wantMsg string // a part of the message, when it matters
	}{
		{name: "port 0", mutate: withSSH(func(s *rules.ServiceConfig) { s.Ports = []int{0} }),
			wantKey: "services.ssh.ports[0]", wantMsg: "from 1 to 65535"},
		{name: "port 70000", mutate: withSSH(func(s *rules.ServiceConfig) { s.Ports = []int{22, 70000} }),
			wantKey: "services.ssh.ports[1]", wantMsg: "70000"},
		{name: "port negative", mutate: withSSH(func(s *rules.ServiceConfig) { s.Ports = []int{-22} }),
			wantKey: "services.ssh.ports[0]"},
		{name: "port listed twice", mutate: withSSH(func(s *rules.ServiceConfig) { s.Ports = []int{22, 23, 22} }),
			wantKey: "services.ssh.ports[2]", wantMsg: "twice"},
		{name: "empty ports", mutate: withSSH(func(s *rules.ServiceConfig) { s.Ports = nil }),
			wantKey: "services.ssh.ports"},
		{name: "empty sequence", mutate: withSSH(func(s *rules.ServiceConfig) { s.Sequence = []string{} }),
			wantKey: "services.ssh.sequence"},
		{name: "sequence too long", mutate: withSSH(func(s *rules.ServiceConfig) {
			s.Sequence = nil
			for i := range rules.MaxSequence + 1 {
				s.Sequence = append(s.Sequence, fmt.Sprint(7000+i))
			}
		}), wantKey: "services.ssh.sequence", wantMsg: "at most"},
		{name: "bad knock abc", mutate: withSSH(func(s *rules.ServiceConfig) { s.Sequence = []string{"7000", "abc"} }),
			wantKey: "services.ssh.sequence[1]", wantMsg: `"abc"`},
		{name: "knock 9000/sctp", mutate: withSSH(func(s *rules.ServiceConfig) { s.Sequence = []string{"7000", "8000", "9000/sctp"} }),
			wantKey: "services.ssh.sequence[2]", wantMsg: "tcp or udp"},
		{name: "knock port 0", mutate: withSSH(func(s *rules.ServiceConfig) { s.Sequence = []string{"0/udp"} }),
			wantKey: "services.ssh.sequence[0]"},
		{name: "knock port 65536", mutate: withSSH(func(s *rules.ServiceConfig) { s.Sequence = []string{"7000", "65536"} }),
			wantKey: "services.ssh.sequence[1]"},
		{name: "duplicate knock across services", base: twoServices, mutate: func(c *rules.Config) {
			s := c.Services["web"]
			s.Sequence = []string{"10001/udp", "8000"}
			c.Services["web"] = s
		}, wantKey: "services.web.sequence[1]", wantMsg: `"ssh"`},
		{name: "duplicate udp knock across services", base: twoServices, mutate: func(c *rules.Config) {
			s := c.Services["web"]
			s.Sequence = []string{"9000/udp", "10002"}
			c.Services["web"] = s
		}, wantKey: "services.web.sequence[0]", wantMsg: "9000/udp"},
		{name: "tcp knock on own protected port", mutate: withSSH(func(s *rules.ServiceConfig) { s.Sequence = []string{"7000", "22"} }),
			wantKey: "services.ssh.sequence[1]", wantMsg: "protected"},
		{name: "tcp knock on another service's protected port", base: twoServices, mutate: func(c *rules.Config) {
			s := c.Services["ssh"]
			s.Sequence = []string{"7000", "443/tcp"}
			c.Services["ssh"] = s
		}, wantKey: "services.ssh.sequence[1]", wantMsg: "protected"},
		{name: "negative step_timeout", mutate: withSSH(func(s *rules.ServiceConfig) { s.StepTimeout = -time.Second }),
			wantKey: "services.ssh.step_timeout", wantMsg: "positive"},
		{name: "zero step_timeout", mutate: withSSH(func(s *rules.ServiceConfig) { s.StepTimeout = 0 }),
			wantKey: "services.ssh.step_timeout", wantMsg: "positive"},
		{name: "unitless step_timeout", mutate: withSSH(func(s *rules.ServiceConfig) { s.StepTimeout = 5 }),
			wantKey: "services.ssh.step_timeout", wantMsg: "unit"},
		{name: "negative open_for", mutate: withSSH(func(s *rules.ServiceConfig) { s.OpenFor = -time.Minute }),
			wantKey: "services.ssh.open_for", wantMsg: "positive"},
		{name: "zero open_for", mutate: withSSH(func(s *rules.ServiceConfig) { s.OpenFor = 0 }),
			wantKey: "services.ssh.open_for", wantMsg: "positive"},
		{name: "bad closed action", mutate: withSSH(func(s *rules.ServiceConfig) { s.Closed = "accept" }),
			wantKey: "services.ssh.closed", wantMsg: `"accept"`},
		{name: "empty closed action", mutate: withSSH(func(s *rules.ServiceConfig) { s.Closed = "" }),
			wantKey: "services.ssh.closed"},
		{name: "consecutive duplicate knock", mutate: withSSH(func(s *rules.ServiceConfig) { s.Sequence = []string{"7000", "8000", "8000/tcp"} }),
			wantKey: "services.ssh.sequence[2]", wantMsg: "retransmission"},
		{name: "service name upper case", mutate: func(c *rules.Config) {
			c.Services["SSH"] = c.Services["ssh"]
			delete(c.Services, "ssh")
		}, wantKey: "services.SSH", wantMsg: "lower-case"},
		{name: "service name starts with digit", mutate: func(c *rules.Config) {
			c.Services["1ssh"] = c.Services["ssh"]
			delete(c.Services, "ssh")
		}, wantKey: "services.1ssh"},
		{name: "queue.count 0", mutate: func(c *rules.Config) { c.Queue.Count = 0 }, wantKey: "queue.count"},
		{name: "queue.count too many", mutate: func(c *rules.Config) { c.Queue.Count = rules.MaxQueues + 1 }, wantKey: "queue.count"},
		{name: "queue range past 65535", mutate: func(c *rules.Config) { c.Queue.Num, c.Queue.Count = 65535, 2 }, wantKey: "queue.count"},
		{name: "queue.num negative", mutate: func(c *rules.Config) { c.Queue.Num = -1 }, wantKey: "queue.num"},
		{name: "queue.num 65536", mutate: func(c *rules.Config) { c.Queue.Num = 65536 }, wantKey: "queue.num"},
		{name: "queue.max_len 0", mutate: func(c *rules.Config) { c.Queue.MaxLen = 0 }, wantKey: "queue.max_len"},
		{name: "bad log level", mutate: func(c *rules.Config) { c.Log.Level = "verbose" }, wantKey: "log.level", wantMsg: `"verbose"`},
		{name: "upper-case log level", mutate: func(c *rules.Config) { c.Log.Level = "INFO" }, wantKey: "log.level"},
		{name: "bad log format", mutate: func(c *rules.Config) { c.Log.Format = "xml" }, wantKey: "log.format", wantMsg: `"xml"`},
		{name: "tracker.max_pending 0", mutate: func(c *rules.Config) { c.Tracker.MaxPending = 0 }, wantKey: "tracker.max_pending"},
		{name: "tracker.max_grants 0", mutate: func(c *rules.Config) { c.Tracker.MaxGrants = 0 }, wantKey: "tracker.max_grants"},
		{name: "marks equal", mutate: func(c *rules.Config) { c.Firewall.RejectMark = c.Firewall.AcceptMark }, wantKey: "firewall.reject_mark", wantMsg: "differ"},
		{name: "mark mask 0", mutate: func(c *rules.Config) { c.Firewall.MarkMask = 0 }, wantKey: "firewall.mark_mask"},
		{name: "accept mark outside mask", mutate: func(c *rules.Config) { c.Firewall.AcceptMark = 0x10000 }, wantKey: "firewall.accept_mark"},
		{name: "reject mark 0", mutate: func(c *rules.Config) { c.Firewall.RejectMark = 0 }, wantKey: "firewall.reject_mark"},
		{name: "no services", mutate: func(c *rules.Config) { c.Services = nil }, wantKey: "services", wantMsg: "at least one"},
		{name: "too many services", mutate: func(c *rules.Config) {
			for i := range rules.MaxServices {
				s := rules.ServiceDefaults()
				s.Ports = []int{22}
				s.Sequence = []string{fmt.Sprint(20000 + i)}
				c.Services[fmt.Sprintf("s%02d", i)] = s
			}
		}, wantKey: "services", wantMsg: "at most"},
		{name: "shared protected port, different closed actions", base: twoServices, mutate: func(c *rules.Config) {
			s := c.Services["web"]
			s.Ports = []int{443, 22}
			s.Closed = rules.ClosedDrop
			c.Services["web"] = s
		}, wantKey: "services.web.closed", wantMsg: "port 22"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := tt.base
			if base == nil {
				base = validConfig
			}
			c := base()
			tt.mutate(&c)
			set, err := rules.Compile(c)
			if err == nil {
				t.Fatalf("Compile succeeded (%d services), want an error naming %q", len(set.Services), tt.wantKey)
			}
			if !errors.Is(err, rules.ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
			}
			var ke *rules.KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("error %v (%T) is not a *rules.KeyError", err, err)
			}
			if ke.Key != tt.wantKey {
				t.Errorf("key = %q, want %q (error: %v)", ke.Key, tt.wantKey, err)
			}
			if !strings.Contains(err.Error(), tt.wantKey) {
				t.Errorf("message %q does not name %q", err, tt.wantKey)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("message %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

// TestCompileRotateSpace: a rotating service whose possible sequences
// number fewer than 2^32 is refused, counted as spa.RotatingSequence draws
// them: span choices for the first port and span-1 for each next (any port
// but the one before it). The message names range and says what would do.
func TestCompileRotateSpace(t *testing.T) {
	tests := []struct {
		name    string
		length  int
		lo, hi  int
		wantMsg []string // nil: valid
	}{
		{name: "the README's and the e2e's", length: 3, lo: 20000, hi: 40000},
		{name: "length 3 over 2 ports", length: 3, lo: 30000, hi: 30001,
			wantMsg: []string{"length 3 over 2 ports is 1.0 bits", "below 32", "widen range to 1627 ports"}},
		{name: "length 3, one port short", length: 3, lo: 30000, hi: 30000 + 1626 - 1,
			wantMsg: []string{"length 3 over 1626 ports is 32.0 bits", "widen range to 1627 ports or lengthen to 4"}},
		{name: "length 3, just enough", length: 3, lo: 30000, hi: 30000 + 1627 - 1},
		{name: "length 4 over 256 ports", length: 4, lo: 30000, hi: 30255, wantMsg: []string{"length 4 over 256 ports", "widen range to 257 ports or lengthen to 5"}},
		{name: "length 4 over 257 ports", length: 4, lo: 30000, hi: 30256},
		{name: "length 2 over every port", length: 2, lo: 1, hi: 65535, wantMsg: []string{"length 2 over 65535 ports", "lengthen to 3"}},
		{name: "length 1 over most ports", length: 1, lo: 1025, hi: 65535, wantMsg: []string{"length 1 over 64511 ports is 16.0 bits", "lengthen to 3"}},
		{name: "length 32 over 2 ports", length: 32, lo: 30000, hi: 30001, wantMsg: []string{"length 32 over 2 ports is 1.0 bits", "widen range to 3 ports"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rules.Defaults()
			svc := spaService()
			svc.Rotate = rules.RotateConfig{Length: tt.length, Period: 30 * time.Second, Range: []int{tt.lo, tt.hi}}
			c.Services = map[string]rules.ServiceConfig{"ssh": svc}
			_, err := rules.Compile(c, keyReader(t))
			if tt.wantMsg == nil {
				if err != nil {
					t.Fatalf("Compile: %v", err)
				}
				return
			}
			var ke *rules.KeyError
			if !errors.As(err, &ke) || ke.Key != "services.ssh.rotate.range" {
				t.Fatalf("err = %v, want a *KeyError for services.ssh.rotate.range", err)
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(ke.Msg, w) {
					t.Errorf("message %q lacks %q", ke.Msg, w)
				}
			}
		})
	}
}

// TestCompileDoesNotKeepInput checks that the Set owns its tables: changing
// the Config afterwards changes nothing.
func TestCompileDoesNotKeepInput(t *testing.T) {
	c := validConfig()
	set := compile(t, c)
	s := c.Services["ssh"]
	s.Ports[0] = 2222
	s.Sequence[0] = "1234"
	if !set.IsProtected(22) || set.IsProtected(2222) {
		t.Error("protected ports follow the Config after Compile")
	}
	if _, ok := set.Begins(rules.KnockKey(rules.ProtoTCP, 7000)); !ok {
		t.Error("sequence follows the Config after Compile")
	}
}

func TestSetLookups(t *testing.T) {
	c := twoServices()
	web := c.Services["web"]
	web.Ports = append(web.Ports, 22) // 22 is covered by both
	web.Closed = rules.ClosedReject
	c.Services["web"] = web
	db := rules.ServiceDefaults()
	db.Ports = []int{5432}
	db.Sequence = []string{"6000/udp", "6001/udp"}
	db.Closed = rules.ClosedDrop
	db.StepTimeout = 2 * time.Second
	db.OpenFor = time.Hour
	c.Services["db"] = db
	set := compile(t, c)

	// Sorted by name: db 0, ssh 1, web 2.
	const dbI, sshI, webI = 0, 1, 2
	for i, name := range []string{"db", "ssh", "web"} {
		if set.Services[i].Name != name {
			t.Fatalf("Services[%d] = %q, want %q", i, set.Services[i].Name, name)
		}
	}
	tcp := func(p uint16) uint32 { return rules.KnockKey(rules.ProtoTCP, p) }
	udp := func(p uint16) uint32 { return rules.KnockKey(rules.ProtoUDP, p) }

	t.Run("Cover", func(t *testing.T) {
		tests := []struct {
			name string
			port uint16
			want uint64
		}{
			{"shared", 22, 1<<sshI | 1<<webI},
			{"web only", 443, 1 << webI},
			{"web second port", 8443, 1 << webI},
			{"db", 5432, 1 << dbI},
			{"unprotected", 80, 0},
			{"knock port", 7000, 0},
			{"port 0", 0, 0},
			{"port 65535", 65535, 0},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := set.Cover(tt.port); got != tt.want {
					t.Errorf("Cover(%d) = %b, want %b", tt.port, got, tt.want)
				}
				if got := set.IsProtected(tt.port); got != (tt.want != 0) {
					t.Errorf("IsProtected(%d) = %v", tt.port, got)
				}
			})
		}
	})

	t.Run("IsKnockPort", func(t *testing.T) {
		tests := []struct {
			name  string
			proto uint8
			port  uint16
			want  bool
		}{
			{"tcp knock", rules.ProtoTCP, 7000, true},
			{"tcp knock as udp", rules.ProtoUDP, 7000, false},
			{"udp knock", rules.ProtoUDP, 9000, true},
			{"udp knock as tcp", rules.ProtoTCP, 9000, false},
			{"web udp", rules.ProtoUDP, 10001, true},
			{"web tcp", rules.ProtoTCP, 10003, true},
			{"db udp", rules.ProtoUDP, 6001, true},
			{"protected port", rules.ProtoTCP, 22, false},
			{"other port", rules.ProtoTCP, 7001, false},
			{"icmp", 1, 7000, false},
			{"sctp", 132, 7000, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := set.IsKnockPort(tt.proto, tt.port); got != tt.want {
					t.Errorf("IsKnockPort(%d, %d) = %v, want %v", tt.proto, tt.port, got, tt.want)
				}
			})
		}
	})

	t.Run("KnockService", func(t *testing.T) {
		tests := []struct {
			name   string
			key    uint32
			want   int
			wantOK bool
		}{
			{"ssh first", tcp(7000), sshI, true},
			{"ssh middle", tcp(8000), sshI, true},
			{"ssh last udp", udp(9000), sshI, true},
			{"web first udp", udp(10001), webI, true},
			{"db last", udp(6001), dbI, true},
			{"wrong protocol", tcp(9000), 0, false},
			{"protected port", tcp(22), 0, false},
			{"unknown", tcp(1), 0, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, ok := set.KnockService(tt.key)
				if ok != tt.wantOK || (ok && got != tt.want) {
					t.Errorf("KnockService(%#x) = %d, %v; want %d, %v", tt.key, got, ok, tt.want, tt.wantOK)
				}
			})
		}
	})

	t.Run("Begins", func(t *testing.T) {
		tests := []struct {
			name   string
			key    uint32
			want   int
			wantOK bool
		}{
			{"ssh", tcp(7000), sshI, true},
			{"web", udp(10001), webI, true},
			{"db", udp(6000), dbI, true},
			{"second knock", tcp(8000), 0, false},
			{"last knock", udp(9000), 0, false},
			{"first port, wrong protocol", udp(7000), 0, false},
			{"protected", tcp(22), 0, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, ok := set.Begins(tt.key)
				if ok != tt.wantOK || (ok && got != tt.want) {
					t.Errorf("Begins(%#x) = %d, %v; want %d, %v", tt.key, got, ok, tt.want, tt.wantOK)
				}
			})
		}
	})

	t.Run("Len and Step", func(t *testing.T) {
		tests := []struct {
			name  string
			svc   int
			steps []uint32
		}{
			{"db", dbI, []uint32{udp(6000), udp(6001)}},
			{"ssh", sshI, []uint32{tcp(7000), tcp(8000), udp(9000)}},
			{"web", webI, []uint32{udp(10001), tcp(10002), tcp(10003)}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := set.Len(tt.svc); got != len(tt.steps) {
					t.Fatalf("Len = %d, want %d", got, len(tt.steps))
				}
				for i, want := range tt.steps {
					if got := set.Step(tt.svc, i); got != want {
						t.Errorf("Step(%d) = %#x, want %#x", i, got, want)
					}
				}
			})
		}
	})

	t.Run("durations and closed action", func(t *testing.T) {
		if got := set.StepTimeout(dbI); got != 2*time.Second {
			t.Errorf("StepTimeout(db) = %v", got)
		}
		if got := set.OpenFor(dbI); got != time.Hour {
			t.Errorf("OpenFor(db) = %v", got)
		}
		if got := set.StepTimeout(sshI); got != rules.DefaultStepTimeout {
			t.Errorf("StepTimeout(ssh) = %v", got)
		}
		if got := set.OpenFor(sshI); got != rules.DefaultOpenFor {
			t.Errorf("OpenFor(ssh) = %v", got)
		}
		if got := set.ClosedAction(set.Cover(5432)); got != rules.ActionDrop {
			t.Errorf("ClosedAction(db) = %v", got)
		}
		if got := set.ClosedAction(set.Cover(22)); got != rules.ActionReject {
			t.Errorf("ClosedAction(22) = %v", got)
		}
		if got := set.ClosedAction(0); got != rules.ActionReject {
			t.Errorf("ClosedAction(0) = %v", got)
		}
	})

	t.Run("ProtectedPorts", func(t *testing.T) {
		want := []uint16{22, 443, 5432, 8443}
		if got := set.ProtectedPorts(); !slices.Equal(got, want) {
			t.Errorf("ProtectedPorts = %v, want %v", got, want)
		}
	})
}

func TestParseKnock(t *testing.T) {
	tests := []struct {
		in      string
		want    rules.Knock
		wantErr bool
	}{
		{in: "7000", want: rules.Knock{Proto: rules.ProtoTCP, Port: 7000}},
		{in: " 7000 ", want: rules.Knock{Proto: rules.ProtoTCP, Port: 7000}},
		{in: "7000/tcp", want: rules.Knock{Proto: rules.ProtoTCP, Port: 7000}},
		{in: "7000/TCP", want: rules.Knock{Proto: rules.ProtoTCP, Port: 7000}},
		{in: "9000/udp", want: rules.Knock{Proto: rules.ProtoUDP, Port: 9000}},
		{in: "9000/Udp", want: rules.Knock{Proto: rules.ProtoUDP, Port: 9000}},
		{in: "1", want: rules.Knock{Proto: rules.ProtoTCP, Port: 1}},
		{in: "65535/udp", want: rules.Knock{Proto: rules.ProtoUDP, Port: 65535}},
		{in: "", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "0", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "65536", wantErr: true},
		{in: "99999999999999999999", wantErr: true},
		{in: "9000/sctp", wantErr: true},
		{in: "9000/", wantErr: true},
		{in: "/udp", wantErr: true},
		{in: "9000/udp/tcp", wantErr: true},
		{in: "9000 /udp", wantErr: true},
		{in: "0x1f40", wantErr: true},
		{in: "+7000", wantErr: true},
		{in: "7000.0", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := rules.ParseKnock(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseKnock(%q) = %v, want an error", tt.in, got)
				}
				if !strings.Contains(err.Error(), strings.TrimSpace(tt.in)) {
					t.Errorf("error %q does not quote the input", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseKnock(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestKnockStringAndKey(t *testing.T) {
	tests := []struct {
		name string
		k    rules.Knock
		str  string
		key  uint32
	}{
		{"tcp", rules.Knock{Proto: rules.ProtoTCP, Port: 7000}, "7000/tcp", 6<<16 | 7000},
		{"udp", rules.Knock{Proto: rules.ProtoUDP, Port: 9000}, "9000/udp", 17<<16 | 9000},
		{"max", rules.Knock{Proto: rules.ProtoUDP, Port: 65535}, "65535/udp", 17<<16 | 65535},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.k.String(); got != tt.str {
				t.Errorf("String = %q, want %q", got, tt.str)
			}
			if got := tt.k.Key(); got != tt.key {
				t.Errorf("Key = %#x, want %#x", got, tt.key)
			}
			if got := rules.KnockKey(tt.k.Proto, tt.k.Port); got != tt.key {
				t.Errorf("KnockKey = %#x, want %#x", got, tt.key)
			}
		})
	}
}

func TestActionString(t *testing.T) {
	tests := []struct {
		a    rules.Action
		want string
	}{
		{rules.ActionReject, "reject"},
		{rules.ActionDrop, "drop"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.a.String(); got != tt.want {
				t.Errorf("String = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestKeyError(t *testing.T) {
	err := error(&rules.KeyError{Key: "services.ssh.ports[0]", Msg: "bad"})
	if got, want := err.Error(), "services.ssh.ports[0]: bad"; got != want {
		t.Errorf("Error = %q, want %q", got, want)
	}
	if !errors.Is(err, rules.ErrInvalid) {
		t.Error("KeyError does not wrap ErrInvalid")
	}
	if !errors.Is(fmt.Errorf("load: %w", err), rules.ErrInvalid) {
		t.Error("wrapped KeyError does not wrap ErrInvalid")
	}
}
