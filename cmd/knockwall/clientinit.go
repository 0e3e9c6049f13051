package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// clientInitOpts are the flags of `knockwall client init`.
type clientInitOpts struct {
	config    string
	host      string
	source    string
	def       string
	fromCheck string
	force     bool
	// One service from flags.
	service   string
	method    string
	ports     []int
	sequence  []string
	keyFiles  []string // PATH, or SERVICE=PATH
	spaPort   int
	transport string
	rotLength int
	rotPeriod time.Duration
	rotRange  []int
}

func newClientCmd(env environment) *cobra.Command {
	cmd := &cobra.Command{Use: "client", Short: "Manage the client config (the servers knock and connect open)"}
	var o clientInitOpts
	initCmd := &cobra.Command{
		Use:   "init SERVER",
		Short: "Add a server to the client config, from flags or from the server's `knockwall config check` output",
		Long: `Add SERVER to the client config (-c, else ` + clientConfigHint + `),
creating the file (mode 0600, its directory 0700) if needed. A server already
there is replaced only with --force.

From the server's own description (run there: knockwall config check > check.txt;
copy check.txt here over a secure channel, with the key files):

  knockwall client init myserver --host server.example.org --from-check check.txt \
      --key-file ssh=~/.config/knockwall/myserver-ssh.key

config check prints every service's ports, sequence, spa port and rotation,
but never a key: each service that opens by spa or rotate needs
--key-file SERVICE=PATH (or --key-file PATH when there is one such service).
Services that open only by fwknop are left out (use a fwknop client; see
knockwall config fwknop-client on the server).

From flags, one service:

  knockwall client init myserver --service ssh --ports 22 --sequence 7000,8000,9000/udp
  knockwall client init myserver --service ssh --ports 22 --spa-port 62201 --key-file ssh.key`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, env, args[0])
		},
	}
	f := initCmd.Flags()
	f.StringVarP(&o.config, "config", "c", "", "client config to write (default "+clientConfigHint+")")
	f.StringVar(&o.host, "host", "", "the server's name or address (default: SERVER)")
	f.StringVar(&o.source, "source", "", "bind SPA tokens to this source: auto, or your public address behind NAT")
	f.StringVar(&o.def, "default", "", "the service knock opens when none is named")
	f.StringVar(&o.fromCheck, "from-check", "", "read the services from this output of the server's `knockwall config check` (- for standard input)")
	f.BoolVar(&o.force, "force", false, "replace SERVER if the client config has it")
	f.StringVar(&o.service, "service", "", "the service's name, as on the server")
	f.StringVar(&o.method, "method", "", "sequence | spa | rotate (default: the one given)")
	f.IntSliceVar(&o.ports, "ports", nil, "the service's protected ports")
	f.StringSliceVar(&o.sequence, "sequence", nil, "the knock sequence, e.g. 7000,8000,9000/udp")
	f.StringArrayVar(&o.keyFiles, "key-file", nil, "the SPA or rotation key: PATH, or SERVICE=PATH (repeatable)")
	f.IntVar(&o.spaPort, "spa-port", 0, "the UDP port that takes SPA tokens")
	f.StringVar(&o.transport, "transport", "", "how SPA tokens travel: udp | syn")
	f.IntVar(&o.rotLength, "rotate-length", 0, "the rotating sequence's length")
	f.DurationVar(&o.rotPeriod, "rotate-period", 0, "the rotating sequence's period")
	f.IntSliceVar(&o.rotRange, "rotate-range", nil, "the rotating sequence's port range: LOW,HIGH")
	cmd.AddCommand(initCmd)
	return cmd
}

func (o *clientInitOpts) run(cmd *cobra.Command, env environment, name string) error {
	path := o.config
	if path == "" {
		ps := clientConfigPaths(runtime.GOOS, env.get)
		if len(ps) == 0 {
			return usageError{fmt.Errorf("no config directory (the environment names no home): give -c")}
		}
		path = findClientConfig(env)
		if path == "" {
			path = ps[0]
		}
	}
	srv := clientServer{Source: o.source, Default: o.def, Services: map[string]clientService{}}
	if o.host != "" && o.host != name {
		srv.Host = o.host
	}
	keys, err := o.keyMap()
	if err != nil {
		return err
	}
	var notes []string
	if o.fromCheck != "" {
		in, err := o.readCheck(cmd.InOrStdin())
		if err != nil {
			return err
		}
		svcs, n, err := servicesFromCheck(in, keys)
		if err != nil {
			return usageError{fmt.Errorf("--from-check %s: %w", o.fromCheck, err)}
		}
		srv.Services, notes = svcs, n
	}
	if o.service != "" {
		svc, err := o.flagService(keys)
		if err != nil {
			return err
		}
		srv.Services[o.service] = svc
	}
	if len(srv.Services) == 0 {
		return usageError{fmt.Errorf("no service: give --service (and how it opens) or --from-check")}
	}
	if err := srv.check(); err != nil {
		return usageError{fmt.Errorf("server %s: %w", name, err)}
	}

	cfg := &clientConfig{Servers: map[string]clientServer{}}
	if _, err := os.Lstat(path); err == nil {
		if cfg, err = readClientConfig(path); err != nil {
			return err
		}
		if _, ok := cfg.Servers[name]; ok && !o.force {
			return usageError{fmt.Errorf("%s already names server %s (--force replaces it)", path, name)}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	cfg.Servers[name] = srv
	if err := writeClientConfig(path, cfg); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintf(cmd.ErrOrStderr(), "knockwall: note: %s\n", n)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "wrote server %s (services: %s) to %s\n", name, strings.Join(sortedKeys(srv.Services), ", "), path)
	return nil
}

// keyMap reads the --key-file flags: SERVICE=PATH, or a bare PATH (key
// "") for the one service that needs a key.
func (o *clientInitOpts) keyMap() (map[string]string, error) {
	m := map[string]string{}
	for _, kf := range o.keyFiles {
		svc, path, ok := strings.Cut(kf, "=")
		if !ok {
			svc, path = "", kf
		}
		if path == "" {
			return nil, usageError{fmt.Errorf("--key-file %q: no path", kf)}
		}
		if _, dup := m[svc]; dup {
			return nil, usageError{fmt.Errorf("--key-file: two keys for %q", svc)}
		}
		m[svc] = path
	}
	return m, nil
}

// flagService is the service that --service and its flags describe.
func (o *clientInitOpts) flagService(keys map[string]string) (clientService, error) {
	svc := clientService{Ports: o.ports, Method: o.method, Sequence: o.sequence}
	key := keys[o.service]
	if key == "" {
		key = keys[""]
	}
	if o.spaPort != 0 || o.transport != "" || (key != "" && o.rotLength == 0) {
		svc.SPA = &clientSPA{Port: o.spaPort, KeyFile: key, Transport: o.transport}
	}
	if o.rotLength != 0 {
		svc.Rotate = &clientRotateCfg{KeyFile: key, Length: o.rotLength, Period: o.rotPeriod, Range: o.rotRange}
		if svc.SPA != nil {
			svc.Rotate.KeyFile = ""
		}
	}
	if _, err := svc.method(); err != nil {
		return svc, usageError{fmt.Errorf("--service %s: %w", o.service, err)}
	}
	return svc, nil
}

// readCheck reads the file --from-check names, or standard input for "-".
func (o *clientInitOpts) readCheck(stdin io.Reader) ([]byte, error) {
	if o.fromCheck == "-" {
		return io.ReadAll(io.LimitReader(stdin, maxClientConfig))
	}
	f, err := os.Open(o.fromCheck)
	if err != nil {
		return nil, usageError{err}
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxClientConfig))
}

// checkOutput is what client init reads of `knockwall config check`'s
// output: per service what a client needs, and what it cannot use.
type checkOutput struct {
	Services map[string]struct {
		Ports    []int    `yaml:"ports"`
		Sequence []string `yaml:"sequence"`
		SPA      *struct {
			Port          int  `yaml:"port"`
			RequireSource bool `yaml:"require_source"`
		} `yaml:"spa"`
		Rotate *struct {
			Length int           `yaml:"length"`
			Period time.Duration `yaml:"period"`
			Range  []int         `yaml:"range"`
		} `yaml:"rotate"`
		Fwknop *struct{} `yaml:"fwknop"`
	} `yaml:"services"`
}

// servicesFromCheck turns the output of the server's `knockwall config
// check` into client services, with keys (SERVICE=PATH, or "" for the one
// that needs one) for those that open by spa or rotate; notes say what
// was left out and why.
func servicesFromCheck(b []byte, keys map[string]string) (map[string]clientService, []string, error) {
	var c checkOutput
	if err := yaml.Unmarshal(b, &c); err != nil {
		return nil, nil, fmt.Errorf("not the output of knockwall config check: %w", err)
	}
	if !bytes.HasPrefix(bytes.TrimSpace(b), []byte("# configuration is valid")) || len(c.Services) == 0 {
		return nil, nil, errors.New("not the output of knockwall config check (it starts with \"# configuration is valid\" and has services)")
	}
	var needKey []string
	for _, name := range sortedKeys(c.Services) {
		s := c.Services[name]
		if s.SPA != nil || s.Rotate != nil {
			needKey = append(needKey, name)
		}
	}
	keyFor := func(name string) string {
		if k := keys[name]; k != "" {
			return k
		}
		if len(needKey) == 1 {
			return keys[""]
		}
		return ""
	}
	out := map[string]clientService{}
	var notes, missing []string
	for _, name := range sortedKeys(c.Services) {
		s := c.Services[name]
		svc := clientService{Ports: s.Ports, Sequence: s.Sequence}
		key := keyFor(name)
		if (s.SPA != nil || s.Rotate != nil) && key == "" {
			missing = append(missing, name)
			continue
		}
		if a := s.SPA; a != nil {
			svc.SPA = &clientSPA{Port: a.Port, KeyFile: key}
			if a.Port == 0 {
				svc.SPA.Transport = "syn"
			}
			if a.RequireSource {
				notes = append(notes, fmt.Sprintf("%s requires tokens bound to their source: set --source (auto, or your public address behind NAT)", name))
			}
		}
		if r := s.Rotate; r != nil {
			svc.Rotate = &clientRotateCfg{Length: r.Length, Period: r.Period, Range: r.Range}
			if svc.SPA == nil {
				svc.Rotate.KeyFile = key
			}
		}
		ways := 0
		for _, has := range []bool{len(svc.Sequence) > 0, svc.SPA != nil, svc.Rotate != nil} {
			if has {
				ways++
			}
		}
		switch {
		case ways == 0 && s.Fwknop != nil:
			notes = append(notes, fmt.Sprintf("%s opens only by fwknop: left out (use a fwknop client; knockwall config fwknop-client %s on the server prints its settings)", name, name))
			continue
		case ways == 0:
			notes = append(notes, fmt.Sprintf("%s: nothing a client sends opens it: left out", name))
			continue
		case svc.SPA != nil:
			svc.Method = methodSPA // the strongest, when several open it
		case svc.Rotate != nil && ways > 1:
			svc.Method = methodRotate
		}
		out[name] = svc
	}
	if len(missing) > 0 {
		return nil, nil, fmt.Errorf("config check prints no keys: give --key-file SERVICE=PATH for %s (the key, copied from the server over a secure channel)", strings.Join(missing, ", "))
	}
	if len(out) == 0 {
		return nil, notes, errors.New("no service a knockwall client can open")
	}
	return out, notes, nil
}

// writeClientConfig writes cfg to path through a temporary file renamed
// over it: mode 0600, its directory created 0700.
func writeClientConfig(path string, cfg *clientConfig) error {
	var buf bytes.Buffer
	buf.WriteString("# knockwall client config: the servers `knockwall knock` and `knockwall connect` open.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	if _, err := decodeClientConfig(buf.Bytes()); err != nil {
		return fmt.Errorf("client config as written would not read back: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".client.yaml.*") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
