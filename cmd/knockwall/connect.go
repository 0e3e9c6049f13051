package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// Exit statuses of connect, besides exitOK and exitConfig (a bad client
// config or usage: nothing was sent).
const (
	exitKnock   = 3 // the knock or token could not be sent
	exitConnect = 4 // no connection within --wait after the knock
	exitRelay   = 5 // the connection broke while relaying
)

// exitStatus makes execute exit with code.
type exitStatus struct {
	code int
	err  error
}

func (e exitStatus) Error() string { return e.err.Error() }
func (e exitStatus) Unwrap() error { return e.err }

// connectOpts are connect's flags beyond knock's.
type connectOpts struct {
	knock   knockOpts
	wait    time.Duration
	attempt time.Duration
	verbose bool
}

func newConnectCmd(env environment) *cobra.Command {
	var o connectOpts
	cmd := &cobra.Command{
		Use:   "connect HOST PORT",
		Short: "Knock as the client config says, then connect to HOST:PORT and relay standard input and output (an ssh ProxyCommand)",
		Long: `Open HOST's service as the client config says (the server named HOST or
whose host is HOST; the service --service, else the one whose ports hold
PORT, else the server's default, else its only one), then connect to
HOST:PORT, trying again until the grant takes effect or --wait has passed,
and copy standard input to the connection and the connection to standard
output until both sides have finished (each end's close is passed on as a
half-close, as scp, rsync and git over ssh need).

In ~/.ssh/config:

  Host myserver
      HostName server.example.org
      ProxyCommand knockwall connect %h %p

and ssh, scp, rsync and git open myserver by themselves.

Exit status: 0 when both directions finished cleanly; 2 for a bad client
config or usage (nothing sent); 3 when the knock or token could not be sent;
4 when no connection was made within --wait; 5 when the connection broke
while relaying. Messages go to standard error; standard output carries
only the connection's data.`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.knock.changed = cmd.Flags().Changed
			port, err := strconv.Atoi(args[1])
			if err != nil || port < 1 || port > 65535 {
				return usageError{fmt.Errorf("PORT %q is not a port", args[1])}
			}
			d := retryDialer{dial: netDial, clock: realClock{}, wait: o.wait, attempt: o.attempt, pause: connectPause}
			return o.run(cmd.Context(), env, args[0], port, d, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.knock.register(cmd)
	cmd.Flags().DurationVar(&o.wait, "wait", 10*time.Second, "give up connecting this long after the knock")
	cmd.Flags().DurationVar(&o.attempt, "attempt", 2*time.Second, "bound on one connection attempt")
	cmd.Flags().BoolVarP(&o.verbose, "verbose", "v", false, "say on standard error what was sent and when the connection was made")
	return cmd
}

// connectPause is the pause between two connection attempts: a refused
// connect comes back at once, and the grant is usually in place within
// milliseconds of the knock.
const connectPause = 100 * time.Millisecond

func (o *connectOpts) run(ctx context.Context, env environment, host string, port int, d retryDialer, in io.Reader, out io.Writer, errOut io.Writer) error {
	if o.wait <= 0 || o.attempt <= 0 {
		return usageError{errors.New("--wait and --attempt must be positive")}
	}
	target, plan, err := o.knock.plan(env, host, port)
	if err != nil {
		return err
	}
	addr, err := resolve(ctx, target)
	if err != nil {
		return exitStatus{exitKnock, fmt.Errorf("knock failed: %w", err)}
	}
	say := io.Discard
	if o.verbose {
		say = errOut
	}
	if err := o.knock.send(ctx, say, addr.String(), plan); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return err
		}
		return exitStatus{exitKnock, fmt.Errorf("knock failed: %w", err)}
	}
	dst := netip.AddrPortFrom(addr, uint16(port))
	conn, attempts, err := d.connect(ctx, dst.String())
	if err != nil {
		return exitStatus{exitConnect, fmt.Errorf("connect failed: no connection to %s within %s of the knock (%d attempts): %w", dst, o.wait, attempts, err)}
	}
	defer conn.Close()
	fmt.Fprintf(say, "knockwall: connected to %s (attempt %d)\n", dst, attempts)
	if err := relay(conn, in, out); err != nil {
		return exitStatus{exitRelay, fmt.Errorf("relay failed: %w", err)}
	}
	return nil
}

// clock is the time connect's retries run on.
type clock interface {
	Now() time.Time
	// Sleep waits d or until ctx ends.
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dialFunc makes one TCP connection attempt, bounded by timeout.
type dialFunc func(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error)

func netDial(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	return (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
}

// retryDialer connects, trying again until wait has passed: each attempt
// bounded by attempt and by the time left, a pause between attempts.
type retryDialer struct {
	dial                 dialFunc
	clock                clock
	wait, attempt, pause time.Duration
}

// connect returns the connection and how many attempts it took, or the
// last attempt's error once wait has passed.
func (r retryDialer) connect(ctx context.Context, addr string) (net.Conn, int, error) {
	deadline := r.clock.Now().Add(r.wait)
	var last error
	for n := 1; ; n++ {
		left := deadline.Sub(r.clock.Now())
		if left <= 0 {
			return nil, n - 1, last
		}
		c, err := r.dial(ctx, addr, min(r.attempt, left))
		if err == nil {
			return c, n, nil
		}
		last = err
		if ctx.Err() != nil {
			return nil, n, ctx.Err()
		}
		if left = deadline.Sub(r.clock.Now()); left <= 0 {
			return nil, n, last
		}
		if err := r.clock.Sleep(ctx, min(r.pause, left)); err != nil {
			return nil, n, err
		}
	}
}

// relay copies in to conn and conn to out until both directions end. The
// end of in is passed on as a half-close (CloseWrite) and the end of the
// connection's data by closing out, so that each side sees the other's
// end while its own direction goes on. The first error ends the relay.
func relay(conn net.Conn, in io.Reader, out io.Writer) error {
	errs := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, in)
		if err != nil {
			errs <- fmt.Errorf("standard input to the connection: %w", err)
			return
		}
		if hc, ok := conn.(interface{ CloseWrite() error }); ok {
			err = hc.CloseWrite()
		}
		errs <- err
	}()
	go func() {
		_, err := io.Copy(out, conn)
		if err != nil {
			errs <- fmt.Errorf("the connection to standard output: %w", err)
			return
		}
		if c, ok := out.(io.Closer); ok {
			err = c.Close()
		}
		errs <- err
	}()
	for range 2 {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}
