package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/rules"
)

func newKnockCmd(env environment) *cobra.Command {
	var (
		f       configFlags
		service string
		delay   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "knock HOST [PORT[/tcp|/udp]...]",
		Short: "Send a knock sequence to HOST",
		Long: `Send knocks to HOST: a TCP SYN (a connect that is abandoned at once, so no
answer is awaited) or a UDP datagram per knock, in order.

  knockwall knock 192.0.2.1 7000 8000 9000/udp
  knockwall knock 192.0.2.1 --service ssh -c client.yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return usageError{fmt.Errorf("knock needs a HOST")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var knocks []rules.Knock
			for _, a := range args[1:] {
				k, err := rules.ParseKnock(a)
				if err != nil {
					return usageError{err}
				}
				knocks = append(knocks, k)
			}
			if service != "" {
				if len(knocks) > 0 {
					return usageError{fmt.Errorf("give either ports or --service, not both")}
				}
				_, set, err := f.load(env)
				if err != nil {
					return err
				}
				for _, svc := range set.Services {
					if svc.Name == service {
						knocks = svc.Sequence
					}
				}
				if knocks == nil {
					return usageError{fmt.Errorf("service %q is not in the config", service)}
				}
			}
			if len(knocks) == 0 {
				return usageError{errNoKnocks}
			}
			addr, err := resolve(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			for i, k := range knocks {
				if i > 0 && delay > 0 {
					select {
					case <-time.After(delay):
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
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&service, "service", "", "take the sequence of this service from the config")
	cmd.Flags().DurationVar(&delay, "delay", 0, "pause between knocks")
	return cmd
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
