package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
	"github.com/knockwall/knockwall/verdict"
)

var errNoKnocks = errors.New("no knocks to send: give ports or --service")

// knockOpts are the knock command's flags.
type knockOpts struct {
	cfg       configFlags
	service   string
	delay     time.Duration
	method    string
	transport string
	port      int
	source    string
	keyFile   string
	spaPort   int
}

func newKnockCmd(env environment) *cobra.Command {
	var o knockOpts
	cmd := &cobra.Command{
		Use:   "knock HOST [PORT[/tcp|/udp]...]",
		Short: "Send a knock sequence or an SPA token to HOST",
		Long: `Send knocks to HOST: a TCP SYN (a connect that is abandoned at once, so no
answer is awaited) or a UDP datagram per knock, in order.

  knockwall knock 192.0.2.1 7000 8000 9000/udp
  knockwall knock 192.0.2.1 --service ssh -c client.yaml

With --service, the service's config decides: a service with spa gets a
token (by UDP to spa.port, or with --transport syn inside a TCP SYN to the
first protected port, which needs root for a raw socket); a rotating service
gets this period's sequence; otherwise its fixed sequence. --method picks
one explicitly. Without a config, --key-file and --spa-port (or --transport
syn --port P) send a token for --service.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return usageError{fmt.Errorf("knock needs a HOST")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, env, args)
		},
	}
	o.cfg.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.service, "service", "", "take what to send from this service of the config")
	// A small default pause keeps knocks in order even when the server
	// spreads packets over several queues (queue.count > 1).
	f.DurationVar(&o.delay, "delay", 10*time.Millisecond, "pause between knocks")
	f.StringVar(&o.method, "method", "auto", "auto | sequence | rotate | spa")
	f.StringVar(&o.transport, "transport", "udp", "how an SPA token travels: udp | syn")
	f.IntVar(&o.port, "port", 0, "with --transport syn: the protected port to send the token to (default: the service's first)")
	f.StringVar(&o.source, "source", "", "bind the token to this source address (\"auto\": the address this host sends from)")
	f.StringVar(&o.keyFile, "key-file", "", "SPA key file, instead of a config")
	f.IntVar(&o.spaPort, "spa-port", 0, "SPA UDP port, instead of a config")
	return cmd
}

func (o *knockOpts) run(cmd *cobra.Command, env environment, args []string) error {
	ctx := cmd.Context()
	var knocks []rules.Knock
	for _, a := range args[1:] {
		k, err := rules.ParseKnock(a)
		if err != nil {
			return usageError{err}
		}
		knocks = append(knocks, k)
	}
	if len(knocks) > 0 && o.service != "" {
		return usageError{fmt.Errorf("give either ports or --service, not both")}
	}
	if len(knocks) == 0 && o.service == "" {
		return usageError{errNoKnocks}
	}
	addr, err := resolve(ctx, args[0])
	if err != nil {
		return err
	}
	if o.service == "" {
		return o.sendKnocks(cmd, addr, knocks)
	}

	// A token without a config.
	if o.keyFile != "" {
		k, err := spa.ReadKeyFile(o.keyFile)
		if err != nil {
			return err
		}
		return o.sendToken(cmd, addr, k, o.spaPort, o.port)
	}

	set, _, err := o.cfg.load(env)
	if err != nil {
		return err
	}
	idx := -1
	for i := range set.Services {
		if set.Services[i].Name == o.service {
			idx = i
		}
	}
	if idx < 0 {
		return usageError{fmt.Errorf("service %q is not in the config", o.service)}
	}
	svc := &set.Services[idx]
	method := o.method
	if method == "auto" {
		switch {
		case svc.SPA != nil:
			method = "spa"
		case svc.Rotate != nil:
			method = "rotate"
		default:
			method = "sequence"
		}
	}
	switch method {
	case "spa":
		if svc.SPA == nil {
			return usageError{fmt.Errorf("service %q has no spa section", o.service)}
		}
		port := o.port
		if port == 0 {
			port = int(svc.Ports[0])
		}
		return o.sendToken(cmd, addr, svc.SPA.Keys[0], int(svc.SPA.Port), port)
	case "rotate":
		if svc.Rotate == nil {
			return usageError{fmt.Errorf("service %q has no rotate section", o.service)}
		}
		for _, p := range verdict.CurrentRotating(set, idx, time.Now()) {
			knocks = append(knocks, rules.Knock{Proto: rules.ProtoTCP, Port: p})
		}
	case "sequence":
		if len(svc.Sequence) == 0 {
			return usageError{fmt.Errorf("service %q has no fixed sequence", o.service)}
		}
		knocks = svc.Sequence
	default:
		return usageError{fmt.Errorf("--method must be auto, sequence, rotate or spa, not %q", o.method)}
	}
	return o.sendKnocks(cmd, addr, knocks)
}

func (o *knockOpts) sendKnocks(cmd *cobra.Command, addr netip.Addr, knocks []rules.Knock) error {
	for i, k := range knocks {
		if i > 0 && o.delay > 0 {
			select {
			case <-time.After(o.delay):
			case <-cmd.Context().Done():
				return cmd.Context().Err()
			}
		}
		if err := sendKnock(addr, k); err != nil {
			return fmt.Errorf("knock %s: %w", k, err)
		}
	}
	fmt.Fprintf(cmd.OutOrStdout(), "knocked %s: %s\n", addr, knockList(knocks))
	return nil
}

func (o *knockOpts) sendToken(cmd *cobra.Command, addr netip.Addr, k *spa.Key, spaPort, synPort int) error {
	var src netip.Addr
	switch o.source {
	case "":
	case "auto":
		a, err := localAddrFor(addr)
		if err != nil {
			return err
		}
		src = a
	default:
		a, err := netip.ParseAddr(o.source)
		if err != nil {
			return usageError{fmt.Errorf("--source: %w", err)}
		}
		src = a.Unmap()
	}
	tok, err := newToken(k, o.service, time.Now(), src)
	if err != nil {
		return err
	}
	switch o.transport {
	case "udp":
		if spaPort < 1 || spaPort > 65535 {
			return usageError{fmt.Errorf("no SPA port: the service has no spa.port (use --transport syn) or give --spa-port")}
		}
		if err := sendUDP(netip.AddrPortFrom(addr, uint16(spaPort)), tok); err != nil {
			return fmt.Errorf("send token: %w", err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "sent SPA token for %s to %s udp/%d\n", o.service, addr, spaPort)
	case "syn":
		if synPort < 1 || synPort > 65535 {
			return usageError{fmt.Errorf("--transport syn needs --port (the protected port)")}
		}
		from, err := localAddrFor(addr)
		if err != nil {
			return err
		}
		if err := sendSYN(from, netip.AddrPortFrom(addr, uint16(synPort)), tok); err != nil {
			return fmt.Errorf("send token: %w", err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "sent SPA token for %s to %s in a SYN to tcp/%d\n", o.service, addr, synPort)
	default:
		return usageError{fmt.Errorf("--transport must be udp or syn, not %q", o.transport)}
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

// sendKnock sends one knock. A TCP knock is a non-blocking connect that is
// closed at once: the kernel has sent the SYN by the time connect returns,
// and closing a socket in SYN-SENT sends nothing more.
func sendKnock(addr netip.Addr, k rules.Knock) error {
	family := unix.AF_INET
	if addr.Is6() {
		family = unix.AF_INET6
	}
	typ := unix.SOCK_STREAM
	if k.Proto == rules.ProtoUDP {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	var sa unix.Sockaddr
	if addr.Is4() {
		sa = &unix.SockaddrInet4{Port: int(k.Port), Addr: addr.As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(k.Port), Addr: addr.As16()}
	}
	if k.Proto == rules.ProtoUDP {
		return unix.Sendto(fd, nil, 0, sa)
	}
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		return fmt.Errorf("connect: %w", err)
	}
	return nil
}
