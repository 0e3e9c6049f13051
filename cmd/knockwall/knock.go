package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
)

var (
	errNoKnocks = errors.New("no knocks to send: give ports, --service, or a server of the client config")
	// errNoSYN says why --transport syn is refused where raw TCP sockets
	// do not exist (synSupported).
	errNoSYN = errors.New("--transport syn is not available on windows: windows does not send TCP through raw sockets; use --transport udp (the service needs an spa port)")
)

// The ways a service is opened, as --method and a client config's method
// name them.
const (
	methodSequence = "sequence"
	methodSPA      = "spa"
	methodRotate   = "rotate"
)

// knockOpts are the knock command's flags.
type knockOpts struct {
	config    string // -c: a client config, or (Linux) a server's config
	example   bool   // Linux: the embedded example server config
	service   string
	delay     time.Duration
	method    string
	transport string
	port      int
	source    string
	keyFile   string
	spaPort   int
	// changed reports whether the user gave a flag (it then wins over the
	// client config).
	changed func(name string) bool
}

func newKnockCmd(env environment) *cobra.Command {
	var o knockOpts
	cmd := &cobra.Command{
		Use:   "knock HOST|SERVER [PORT[/tcp|/udp]...]",
		Short: "Send a knock sequence or an SPA token to a host",
		Long: `Send knocks to HOST: a TCP SYN (a connect that is abandoned at once, so no
answer is awaited) or a UDP datagram per knock, in order.

  knockwall knock myserver                  (a server of the client config)
  knockwall knock myserver --service web
  knockwall knock 192.0.2.1 7000 8000 9000/udp
  knockwall knock 192.0.2.1 --service ssh -c /etc/knockwall/knockwall.yaml

Without ports, the client config says what to send: the server named SERVER
(or whose host is HOST), and its service --service, else its default
service, else its only one. The client config is -c, else ` + clientConfigHint + `.
On Linux, -c (or, without a client config, $KNOCKWALL_CONFIG or
/etc/knockwall/knockwall.yaml) may also be a server's config: then --service
is required.

A service with spa gets a token (by UDP to its spa port, or with --transport
syn inside a TCP SYN to the first protected port, which needs root for a raw
socket, and is not available on Windows); a rotating service gets this
period's sequence; otherwise its fixed sequence. --method picks one
explicitly. Without a config, --key-file and --spa-port (or --transport syn
--port P) send a token for --service.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return usageError{fmt.Errorf("knock needs a HOST")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.changed = cmd.Flags().Changed
			return o.run(cmd.Context(), cmd.OutOrStdout(), env, args)
		},
	}
	o.register(cmd)
	return cmd
}

// register adds the flags that knock and connect share.
func (o *knockOpts) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&o.config, "config", "c", "", "client config (default "+clientConfigHint+")"+daemonConfigNote)
	f.StringVar(&o.service, "service", "", "the service to open")
	// A small default pause keeps knocks in order even when the server
	// spreads packets over several queues (queue.count > 1).
	f.DurationVar(&o.delay, "delay", 10*time.Millisecond, "pause between knocks")
	f.StringVar(&o.method, "method", "auto", "auto | sequence | rotate | spa")
	f.StringVar(&o.transport, "transport", "udp", "how an SPA token travels: udp | syn (a raw SYN: root; not on windows)")
	f.IntVar(&o.port, "port", 0, "with --transport syn: the protected port to send the token to (default: the service's first)")
	f.StringVar(&o.source, "source", "", "bind the token to this source address (\"auto\": the address this host sends from)")
	f.StringVar(&o.keyFile, "key-file", "", "SPA key file, instead of a config")
	f.IntVar(&o.spaPort, "spa-port", 0, "SPA UDP port, instead of a config")
	registerDaemonFlags(cmd, o)
}

// knockPlan is what to send to open one service, whichever config it came
// from.
type knockPlan struct {
	service   string
	method    string
	knocks    []rules.Knock // methodSequence
	key       *spa.Key      // methodSPA
	spaPort   int           // UDP port for tokens; 0: none
	synPort   int           // protected port for a token in a SYN
	transport string        // "udp" or "syn"
	source    string        // "", "auto" or an address
	rotate    *rules.Rotate // methodRotate
}

func (o *knockOpts) run(ctx context.Context, out io.Writer, env environment, args []string) error {
	var knocks []rules.Knock
	for _, a := range args[1:] {
		k, err := rules.ParseKnock(a)
		if err != nil {
			return usageError{err}
		}
		knocks = append(knocks, k)
	}
	if len(knocks) > 0 {
		if o.service != "" {
			return usageError{fmt.Errorf("give either ports or --service, not both")}
		}
		addr, err := resolve(ctx, args[0])
		if err != nil {
			return err
		}
		return o.sendKnocks(ctx, out, addr, knocks)
	}
	host, plan, err := o.plan(env, args[0], 0)
	if err != nil {
		return err
	}
	return o.send(ctx, out, host, plan)
}

// plan finds what to send to open a service on host (a server's name or
// host): from --key-file, a client config or a server's config. port,
// when not 0, is the port about to be connected to, which picks the
// service a client config names it under. It returns the host to send to.
func (o *knockOpts) plan(env environment, host string, port int) (string, knockPlan, error) {
	if o.keyFile != "" {
		if o.service == "" {
			return "", knockPlan{}, usageError{fmt.Errorf("--key-file needs --service (the name the token is for)")}
		}
		k, err := spa.ReadKeyFile(o.keyFile)
		if err != nil {
			return "", knockPlan{}, err
		}
		return host, o.flagsOver(knockPlan{service: o.service, method: methodSPA, key: k, spaPort: o.spaPort, synPort: o.port, transport: "udp"}), nil
	}
	path := o.config
	if path == "" && !o.example {
		path = findClientConfig(env)
	}
	if o.example || path == "" || !isClientConfig(path) {
		plan, err := o.daemonPlan(env, path)
		return host, plan, err
	}
	cc, err := readClientConfig(path)
	if err != nil {
		return "", knockPlan{}, err
	}
	name, srv, err := cc.lookup(host)
	if err != nil {
		return "", knockPlan{}, err
	}
	svcName, svc, err := srv.pick(name, o.service, port)
	if err != nil {
		return "", knockPlan{}, err
	}
	if o.method != "auto" {
		// --method picks another of the ways the service has.
		svc.Method = o.method
	}
	plan, err := svc.plan(svcName, srv.Source, keyPathResolver(path, env))
	if err != nil {
		return "", knockPlan{}, usageError{fmt.Errorf("%s: servers.%s.services.%s: %w", path, name, svcName, err)}
	}
	return srv.host(name), o.flagsOver(plan), nil
}

// planFromService is what opens svc of a server's config, by method
// ("auto": spa, else rotate, else the fixed sequence).
func planFromService(svc *rules.Service, method string) (knockPlan, error) {
	if method == "auto" {
		switch {
		case svc.SPA != nil:
			method = methodSPA
		case svc.Rotate != nil:
			method = methodRotate
		default:
			method = methodSequence
		}
	}
	p := knockPlan{service: svc.Name, method: method, transport: "udp", synPort: int(svc.Ports[0])}
	switch method {
	case methodSPA:
		if svc.SPA == nil {
			return p, usageError{fmt.Errorf("service %q has no spa section", svc.Name)}
		}
		p.key, p.spaPort = svc.SPA.Keys[0], int(svc.SPA.Port)
	case methodRotate:
		if svc.Rotate == nil {
			return p, usageError{fmt.Errorf("service %q has no rotate section", svc.Name)}
		}
		p.rotate = svc.Rotate
	case methodSequence:
		if len(svc.Sequence) == 0 {
			return p, usageError{fmt.Errorf("service %q has no fixed sequence", svc.Name)}
		}
		p.knocks = svc.Sequence
	default:
		return p, usageError{fmt.Errorf("--method must be auto, sequence, rotate or spa, not %q", method)}
	}
	return p, nil
}

// flagsOver lets the flags the user gave win over the config's settings.
func (o *knockOpts) flagsOver(p knockPlan) knockPlan {
	if o.changed == nil {
		return p
	}
	if o.changed("transport") {
		p.transport = o.transport
	}
	if o.changed("source") {
		p.source = o.source
	}
	if o.changed("port") {
		p.synPort = o.port
	}
	if o.changed("spa-port") {
		p.spaPort = o.spaPort
	}
	return p
}

// send carries out plan against host.
func (o *knockOpts) send(ctx context.Context, out io.Writer, host string, p knockPlan) error {
	if p.method == methodSPA && p.transport == "syn" && !synSupported {
		return usageError{errNoSYN}
	}
	addr, err := resolve(ctx, host)
	if err != nil {
		return err
	}
	switch p.method {
	case methodSPA:
		return o.sendToken(out, addr, p)
	case methodRotate:
		now := time.Now()
		seq := p.rotate.Sequence(p.service, spa.Period(now.Unix(), p.rotate.Period))
		knocks := make([]rules.Knock, len(seq))
		for i, port := range seq {
			knocks[i] = rules.Knock{Proto: rules.ProtoTCP, Port: port}
		}
		return o.sendKnocks(ctx, out, addr, knocks)
	default:
		return o.sendKnocks(ctx, out, addr, p.knocks)
	}
}

func (o *knockOpts) sendKnocks(ctx context.Context, out io.Writer, addr netip.Addr, knocks []rules.Knock) error {
	for i, k := range knocks {
		if i > 0 && o.delay > 0 {
			select {
			case <-time.After(o.delay):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := sendKnock(addr, k); err != nil {
			return fmt.Errorf("knock %s: %w", k, err)
		}
	}
	fmt.Fprintf(out, "knocked %s: %s\n", addr, knockList(knocks))
	return nil
}

func (o *knockOpts) sendToken(out io.Writer, addr netip.Addr, p knockPlan) error {
	var src netip.Addr
	switch p.source {
	case "":
	case "auto":
		a, err := localAddrFor(addr)
		if err != nil {
			return err
		}
		src = a
	default:
		a, err := netip.ParseAddr(p.source)
		if err != nil {
			return usageError{fmt.Errorf("source: %w", err)}
		}
		src = a.Unmap()
	}
	tok, err := newToken(p.key, p.service, time.Now(), src)
	if err != nil {
		return err
	}
	switch p.transport {
	case "udp":
		if p.spaPort < 1 || p.spaPort > 65535 {
			return usageError{fmt.Errorf("no SPA port: the service has no spa port (use --transport syn) or give --spa-port")}
		}
		if err := sendUDP(netip.AddrPortFrom(addr, uint16(p.spaPort)), tok); err != nil {
			return fmt.Errorf("send token: %w", err)
		}
		fmt.Fprintf(out, "sent SPA token for %s to %s udp/%d\n", p.service, addr, p.spaPort)
	case "syn":
		if p.synPort < 1 || p.synPort > 65535 {
			return usageError{fmt.Errorf("--transport syn needs --port (the protected port)")}
		}
		from, err := localAddrFor(addr)
		if err != nil {
			return err
		}
		if err := sendSYN(from, netip.AddrPortFrom(addr, uint16(p.synPort)), tok); err != nil {
			return fmt.Errorf("send token: %w", err)
		}
		fmt.Fprintf(out, "sent SPA token for %s to %s in a SYN to tcp/%d\n", p.service, addr, p.synPort)
	default:
		return usageError{fmt.Errorf("--transport must be udp or syn, not %q", p.transport)}
	}
	return nil
}

func knockList(ks []rules.Knock) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = k.String()
	}
	return strings.Join(s, " ")
}

func resolve(ctx context.Context, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	return ips[0].Unmap(), nil
}
