package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/knockwall/knockwall/internal/keyfile"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
)

// clientConfigHint is where the client config is looked for, for help
// texts.
const clientConfigHint = "knockwall/client.yaml in the user's config directory: ~/.config on Linux and BSD, ~/Library/Application Support then ~/.config on macOS, %AppData% on Windows"

// maxClientConfig bounds what is read of a client config.
const maxClientConfig = 1 << 20

// clientConfig is the client's file: the servers a user knocks on.
//
//	servers:
//	  myserver:
//	    host: server.example.org
//	    source: auto
//	    default: ssh
//	    services:
//	      ssh:
//	        ports: [22]
//	        spa: {port: 62201, key_file: myserver.key}
type clientConfig struct {
	Servers map[string]clientServer `yaml:"servers"`
}

// clientServer is one server: where it is and how each of its services
// opens.
type clientServer struct {
	// Host is the name or address knocks go to (default: the server's
	// name).
	Host string `yaml:"host,omitempty"`
	// Source binds SPA tokens to this source address: "auto" (the address
	// this host sends from) or an address (the public one, behind NAT).
	Source string `yaml:"source,omitempty"`
	// Default is the service `knockwall knock SERVER` opens when the
	// server has several.
	Default  string                   `yaml:"default,omitempty"`
	Services map[string]clientService `yaml:"services"`
}

// clientService is one service of a server, named as on the server (the
// name is part of every token and rotating sequence).
type clientService struct {
	// Ports are the service's protected ports: `knockwall connect` picks
	// the service by the port it connects to.
	Ports []int `yaml:"ports,omitempty"`
	// Method is sequence, spa or rotate; it may be left out when only one
	// of sequence, spa and rotate is set.
	Method   string           `yaml:"method,omitempty"`
	Sequence []string         `yaml:"sequence,omitempty"`
	SPA      *clientSPA       `yaml:"spa,omitempty"`
	Rotate   *clientRotateCfg `yaml:"rotate,omitempty"`
}

// clientSPA is how tokens for a service are sent.
type clientSPA struct {
	Port      int    `yaml:"port,omitempty"`      // UDP port; 0: tokens only in SYNs
	KeyFile   string `yaml:"key_file"`            // the service's key, owner-only
	Transport string `yaml:"transport,omitempty"` // udp (default when port is set) or syn
}

// clientRotateCfg is a service's rotating sequence, as on the server.
type clientRotateCfg struct {
	KeyFile string        `yaml:"key_file,omitempty"` // default: spa.key_file
	Length  int           `yaml:"length"`
	Period  time.Duration `yaml:"period"`
	Range   []int         `yaml:"range"`
}

// clientConfigPaths are where the client config is looked for on goos,
// in order, given the environment: os.UserConfigDir's place for goos
// (macOS: also ~/.config after it, where users of Unix tools put theirs).
// None when the environment names no home.
func clientConfigPaths(goos string, getenv func(string) string) []string {
	var dirs []string
	xdg := func() {
		if d := getenv("XDG_CONFIG_HOME"); d != "" && filepath.IsAbs(d) {
			dirs = append(dirs, d)
		} else if h := getenv("HOME"); h != "" {
			dirs = append(dirs, filepath.Join(h, ".config"))
		}
	}
	switch goos {
	case "windows":
		if d := getenv("AppData"); d != "" {
			dirs = append(dirs, d)
		}
	case "darwin", "ios":
		if h := getenv("HOME"); h != "" {
			dirs = append(dirs, filepath.Join(h, "Library", "Application Support"))
		}
		xdg()
	default:
		xdg()
	}
	var out []string
	for _, d := range dirs {
		p := filepath.Join(d, "knockwall", "client.yaml")
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// clientConfigAt is the first of clientConfigPaths that exists, or "".
func clientConfigAt(goos string, getenv func(string) string, exists func(string) bool) string {
	for _, p := range clientConfigPaths(goos, getenv) {
		if exists(p) {
			return p
		}
	}
	return ""
}

// findClientConfig is clientConfigAt for this system.
func findClientConfig(env environment) string {
	return clientConfigAt(runtime.GOOS, env.get, func(p string) bool {
		_, err := os.Lstat(p)
		return err == nil
	})
}

// clientConfigWhere says where the client config was looked for.
func clientConfigWhere(env environment) string {
	ps := clientConfigPaths(runtime.GOOS, env.get)
	if len(ps) == 0 {
		return "the user's config directory (the environment names no home directory)"
	}
	return strings.Join(ps, " or ")
}

// isClientConfig reports whether the YAML file at path has a top-level
// servers key: a client config. A server's config has no such key. A
// file that cannot be read or parsed is taken for a client config, whose
// reader then says what is wrong.
func isClientConfig(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	var top map[string]yaml.Node
	b, err := io.ReadAll(io.LimitReader(f, maxClientConfig))
	if err != nil || yaml.Unmarshal(b, &top) != nil {
		return true
	}
	_, ok := top["servers"]
	return ok
}

// readClientConfig reads and checks the client config at path. It names
// sequences and key files, so it is read like a key: a regular file only
// its owner may access.
func readClientConfig(path string) (*clientConfig, error) {
	b, err := keyfile.ReadAs("client config", path, maxClientConfig)
	if err != nil {
		return nil, usageError{err}
	}
	c, err := decodeClientConfig(b)
	if err != nil {
		return nil, usageError{fmt.Errorf("client config %s: %w", path, err)}
	}
	return c, nil
}

// decodeClientConfig parses and checks a client config. Unknown keys are
// refused: a misspelt key would otherwise be a setting silently not
// applied.
func decodeClientConfig(b []byte) (*clientConfig, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c clientConfig
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty: it names no servers")
		}
		return nil, err
	}
	if len(c.Servers) == 0 {
		return nil, errors.New("it names no servers")
	}
	for name, s := range c.Servers {
		if err := s.check(); err != nil {
			return nil, fmt.Errorf("servers.%s: %w", name, err)
		}
	}
	return &c, nil
}

func (s *clientServer) check() error {
	switch s.Source {
	case "", "auto":
	default:
		if _, err := netip.ParseAddr(s.Source); err != nil {
			return fmt.Errorf("source: %q is neither auto nor an address", s.Source)
		}
	}
	if len(s.Services) == 0 {
		return errors.New("services: none")
	}
	if _, ok := s.Services[s.Default]; s.Default != "" && !ok {
		return fmt.Errorf("default: %q is not one of its services", s.Default)
	}
	for name, svc := range s.Services {
		if _, err := svc.method(); err != nil {
			return fmt.Errorf("services.%s: %w", name, err)
		}
		if err := svc.check(); err != nil {
			return fmt.Errorf("services.%s: %w", name, err)
		}
	}
	return nil
}

// method is the service's method: as set, or the one way it has.
func (svc *clientService) method() (string, error) {
	var ways []string
	if len(svc.Sequence) > 0 {
		ways = append(ways, methodSequence)
	}
	if svc.SPA != nil {
		ways = append(ways, methodSPA)
	}
	if svc.Rotate != nil {
		ways = append(ways, methodRotate)
	}
	switch {
	case svc.Method != "":
		if !slices.Contains(ways, svc.Method) {
			return "", fmt.Errorf("method: %q needs its section (sequence, spa or rotate)", svc.Method)
		}
		return svc.Method, nil
	case len(ways) == 1:
		return ways[0], nil
	case len(ways) == 0:
		return "", errors.New("neither sequence, spa nor rotate: nothing opens it")
	default:
		return "", fmt.Errorf("method: it has %s; say which to use", strings.Join(ways, " and "))
	}
}

func (svc *clientService) check() error {
	for i, p := range svc.Ports {
		if p < 1 || p > 65535 {
			return fmt.Errorf("ports[%d]: %d is not a port", i, p)
		}
	}
	for i, s := range svc.Sequence {
		if _, err := rules.ParseKnock(s); err != nil {
			return fmt.Errorf("sequence[%d]: %w", i, err)
		}
	}
	if a := svc.SPA; a != nil {
		if a.KeyFile == "" {
			return errors.New("spa.key_file: missing")
		}
		if a.Port < 0 || a.Port > 65535 {
			return fmt.Errorf("spa.port: %d is not a port", a.Port)
		}
		switch a.Transport {
		case "", "udp":
			if a.Port == 0 {
				return errors.New("spa.port: missing (or set spa.transport: syn)")
			}
		case "syn":
			if len(svc.Ports) == 0 {
				return errors.New("spa.transport syn: the token goes to a protected port; set ports")
			}
		default:
			return fmt.Errorf("spa.transport: %q is neither udp nor syn", a.Transport)
		}
	}
	if r := svc.Rotate; r != nil {
		if r.KeyFile == "" && (svc.SPA == nil || svc.SPA.KeyFile == "") {
			return errors.New("rotate.key_file: missing (and no spa.key_file)")
		}
		if r.Length < 1 {
			return errors.New("rotate.length: must be at least 1")
		}
		if r.Period < time.Second || r.Period%time.Second != 0 {
			return fmt.Errorf("rotate.period: %s is not a whole number of seconds", r.Period)
		}
		if len(r.Range) != 2 || r.Range[0] < 1 || r.Range[1] > 65535 || r.Range[0] > r.Range[1] {
			return fmt.Errorf("rotate.range: want [low, high] ports, not %v", r.Range)
		}
		if r.Length > 1 && r.Range[0] == r.Range[1] {
			return errors.New("rotate.range: a single port cannot make a sequence longer than one")
		}
	}
	return nil
}

// lookup finds the server named host, else the one whose host is host.
func (c *clientConfig) lookup(host string) (string, *clientServer, error) {
	if s, ok := c.Servers[host]; ok {
		return host, &s, nil
	}
	var found []string
	for name, s := range c.Servers {
		if s.Host == host {
			found = append(found, name)
		}
	}
	slices.Sort(found)
	switch len(found) {
	case 1:
		s := c.Servers[found[0]]
		return found[0], &s, nil
	case 0:
		return "", nil, usageError{fmt.Errorf("the client config names no server %s (servers: %s)", host, strings.Join(sortedKeys(c.Servers), ", "))}
	default:
		return "", nil, usageError{fmt.Errorf("servers %s all have host %s: knock on one by its name", strings.Join(found, " and "), host)}
	}
}

// host is where the server's knocks and connections go.
func (s *clientServer) host(name string) string {
	if s.Host != "" {
		return s.Host
	}
	return name
}

// pick chooses the service: the one named, else the one whose ports hold
// port (when not 0), else the default, else the only one.
func (s *clientServer) pick(server, service string, port int) (string, *clientService, error) {
	if service != "" {
		svc, ok := s.Services[service]
		if !ok {
			return "", nil, usageError{fmt.Errorf("server %s has no service %s (services: %s)", server, service, strings.Join(sortedKeys(s.Services), ", "))}
		}
		return service, &svc, nil
	}
	if port != 0 {
		var found []string
		for name, svc := range s.Services {
			if slices.Contains(svc.Ports, port) {
				found = append(found, name)
			}
		}
		slices.Sort(found)
		if len(found) > 1 {
			return "", nil, usageError{fmt.Errorf("services %s of server %s all name port %d: give --service", strings.Join(found, " and "), server, port)}
		}
		if len(found) == 1 {
			svc := s.Services[found[0]]
			return found[0], &svc, nil
		}
	}
	if s.Default != "" {
		svc := s.Services[s.Default]
		return s.Default, &svc, nil
	}
	if len(s.Services) == 1 {
		for name, svc := range s.Services {
			return name, &svc, nil
		}
	}
	return "", nil, usageError{fmt.Errorf("server %s has several services (%s) and no default: give --service", server, strings.Join(sortedKeys(s.Services), ", "))}
}

// plan reads the service's keys (through keyPath) and says what opens it.
func (svc *clientService) plan(name, source string, keyPath func(string) string) (knockPlan, error) {
	method, err := svc.method()
	if err != nil {
		return knockPlan{}, err
	}
	p := knockPlan{service: name, method: method, source: source, transport: "udp"}
	if len(svc.Ports) > 0 {
		p.synPort = svc.Ports[0]
	}
	switch method {
	case methodSequence:
		for _, s := range svc.Sequence {
			k, err := rules.ParseKnock(s)
			if err != nil {
				return p, err
			}
			p.knocks = append(p.knocks, k)
		}
	case methodSPA:
		k, err := spa.ReadKeyFile(keyPath(svc.SPA.KeyFile))
		if err != nil {
			return p, err
		}
		p.key, p.spaPort = k, svc.SPA.Port
		if svc.SPA.Transport != "" {
			p.transport = svc.SPA.Transport
		}
	case methodRotate:
		r := svc.Rotate
		file := r.KeyFile
		if file == "" {
			file = svc.SPA.KeyFile
		}
		k, err := spa.ReadKeyFile(keyPath(file))
		if err != nil {
			return p, err
		}
		p.rotate = &rules.Rotate{Key: k, Length: r.Length, Period: r.Period, Lo: uint16(r.Range[0]), Hi: uint16(r.Range[1])}
	}
	return p, nil
}

// keyPathResolver makes a client config's key file names paths: "~/" is
// the home directory, and a relative name is relative to the config's
// directory.
func keyPathResolver(configPath string, env environment) func(string) string {
	return func(name string) string {
		if rest, ok := strings.CutPrefix(name, "~"+string(filepath.Separator)); ok || strings.HasPrefix(name, "~/") {
			if !ok {
				rest = name[2:]
			}
			if h := homeDir(env); h != "" {
				return filepath.Join(h, rest)
			}
		}
		if filepath.IsAbs(name) {
			return name
		}
		return filepath.Join(filepath.Dir(configPath), name)
	}
}

// homeDir is the user's home directory as the environment names it.
func homeDir(env environment) string {
	if runtime.GOOS == "windows" {
		return env.get("USERPROFILE")
	}
	return env.get("HOME")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
