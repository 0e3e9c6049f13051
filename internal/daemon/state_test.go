package daemon

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/pkttest"
	"github.com/knockwall/knockwall/internal/state"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
)

// savedServices is how a process serving set lists its services in the
// state file, without replay memory.
func savedServices(set *rules.Set) []state.Service {
	var out []state.Service
	for i := range set.Services {
		fp := set.Services[i].Fingerprint()
		out = append(out, state.Service{Name: set.Services[i].Name, ID: set.Services[i].ID, Fingerprint: hex.EncodeToString(fp[:])})
	}
	return out
}

// Ports and keys of spaSet.
const (
	sshSPAPort = 62201
	apiSPAPort = 62202
)

var (
	sshKey = mustKey(0x42)
	apiKey = mustKey(0x43)
)

func mustKey(b byte) *spa.Key {
	k, err := spa.NewKey(bytes.Repeat([]byte{b}, spa.MinKeySize))
	if err != nil {
		panic(err)
	}
	return k
}

// spaSet serves ssh (22) and api (8443) to SPA tokens, each under its own
// key, max_skew 1m, each replay cache bounded to 16 keys; mod changes the
// config before it is compiled.
func spaSet(t *testing.T, mod func(c *rules.Config)) *rules.Set {
	t.Helper()
	c := rules.Defaults()
	c.Tracker.KnockRate, c.Tracker.MaxNonces = 0, 16
	c.Services = map[string]rules.ServiceConfig{}
	for name, port := range map[string]int{"ssh": sshSPAPort, "api": apiSPAPort} {
		s := rules.ServiceDefaults()
		s.Ports = []int{22}
		if name == "api" {
			s.Ports = []int{8443}
		}
		s.SPA.Port, s.SPA.KeyFile, s.SPA.MaxSkew = port, name+".key", time.Minute
		c.Services[name] = s
	}
	if mod != nil {
		mod(&c)
	}
	set, err := rules.Compile(c, rules.WithKeyReader(func(path string) (*spa.Key, error) {
		switch path {
		case "ssh.key":
			return sshKey, nil
		case "api.key":
			return apiKey, nil
		}
		return mustKey(0x44), nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func token(t *testing.T, k *spa.Key, service string, ts time.Time, n byte) []byte {
	t.Helper()
	tok, err := spa.Build(k, service, ts.Unix(), [spa.NonceSize]byte{n, 0x5a}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// expectGrant sends tok by UDP from src and checks whether src may then
// reach port.
func expectGrant(t *testing.T, h *harness, what string, src netip.Addr, spaPort, port uint16, tok []byte, want bool) {
	t.Helper()
	h.queue.judge(t, pkttest.Datagram(src, netip.AddrPortFrom(server4, spaPort), tok))
	if a := h.queue.judge(t, pkttest.SYN(src, netip.AddrPortFrom(server4, port))); (a.Mark&rules.DefaultAcceptMark != 0) != want {
		t.Errorf("%s: a SYN from %v to %d after the token: %+v; want granted %v", what, src, port, a, want)
	}
}

// TestStateReplay: the replay memory goes through the state file across a
// clean restart. The token accepted before is refused after it, while a
// token stamped 30s before the restart (a client clock 30s slow) opens at
// once, and the grant comes back. Without a state file, or for a service
// whose key changed, the start-second rule refuses that token, the grant
// does not come back, and the log says why.
func TestStateReplay(t *testing.T) {
	set := spaSet(t, nil)
	st := &fakeState{}
	started := t0.Add(-100 * time.Second)
	h := start(t, harnessOptions{set: set, state: st, at: started})
	if !strings.Contains(h.log.String(), `"msg":"no state file; refusing tokens stamped before this start"`) {
		t.Error("no line saying there is no state file")
	}
	first := netip.MustParseAddr("10.0.0.2")
	h.clock.advance(time.Minute)
	accepted := token(t, sshKey, "ssh", h.clock.Now(), 1)
	expectGrant(t, h, "before the restart", first, sshSPAPort, 22, accepted, true)
	h.clock.advance(time.Second)
	h.stop(t)
	if len(st.saved) != 1 {
		t.Fatalf("saved %d times", len(st.saved))
	}
	snap := st.saved[0]
	snap.Version = state.Version
	var ssh *state.Service
	for i := range snap.Services {
		if snap.Services[i].Name == "ssh" {
			ssh = &snap.Services[i]
		}
	}
	if ssh == nil || ssh.Replay == nil || len(ssh.Replay.SPA) != state.SPARecord || ssh.Replay.NotBefore != started.Unix() {
		t.Fatalf("saved ssh %+v; want one nonce and not-before %d", ssh, started.Unix())
	}

	restart := h.clock.Now().Add(5 * time.Second)
	later := netip.MustParseAddr("10.0.0.3")
	for _, tt := range []struct {
		name    string
		set     *rules.Set
		load    state.Snapshot
		slowOK  bool
		logLine string
	}{
		{"restored", set, snap, true, `"msg":"replay memory restored","service":"ssh","spa_nonces":1`},
		{"no state file", set, state.Snapshot{}, false, `"msg":"no state file; refusing tokens stamped before this start"`},
		{"key changed", spaSet(t, func(c *rules.Config) { s := c.Services["ssh"]; s.SPA.KeyFile = "new.key"; c.Services["ssh"] = s }), snap, false,
			`"service":"ssh","reason":"service changed (ports, sequence, keys or token settings)"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, harnessOptions{set: tt.set, state: &fakeState{load: tt.load}, at: restart})
			h.clock.advance(time.Second)
			if !strings.Contains(h.log.String(), tt.logLine) {
				t.Errorf("log lacks %s", tt.logLine)
			}
			// The grant made before the restart comes back only with its
			// service unchanged.
			if a := h.queue.judge(t, pkttest.SYN(first, netip.AddrPortFrom(server4, 22))); (a.Mark&rules.DefaultAcceptMark != 0) != (tt.name == "restored") {
				t.Errorf("the grant saved for %v: %+v after the restart", first, a)
			}
			key := sshKey
			if tt.name == "key changed" {
				key = mustKey(0x44)
			} else {
				expectGrant(t, h, "the token accepted before, replayed", later, sshSPAPort, 22, accepted, false)
			}
			slow := token(t, key, "ssh", h.clock.Now().Add(-30*time.Second), 2)
			expectGrant(t, h, "a client 30s slow", later, sshSPAPort, 22, slow, tt.slowOK)
		})
	}
}

// TestReplayCachePerServiceDaemon: the holder of api's key fills api's
// replay cache until tokens are refused as "cache full"; ssh's token still
// opens ssh.
func TestReplayCachePerServiceDaemon(t *testing.T) {
	h := start(t, harnessOptions{set: spaSet(t, nil)})
	h.clock.advance(2 * time.Second)
	now := h.clock.Now()
	attacker := netip.MustParseAddr("10.0.0.66")
	for i := range 64 {
		h.queue.judge(t, pkttest.Datagram(attacker, netip.AddrPortFrom(server4, apiSPAPort), token(t, apiKey, "api", now, byte(i))))
	}
	if !strings.Contains(h.log.String(), "replay cache full") {
		t.Fatal("api's cache never filled: the test proves nothing")
	}
	expectGrant(t, h, "ssh's token while api's cache is full", netip.MustParseAddr("10.0.0.2"), sshSPAPort, 22, token(t, sshKey, "ssh", now, 1), true)
}
