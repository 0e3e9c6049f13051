//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/internal/netns"
)

// demoOpenFor is the grant lifetime in the demo: long enough to connect,
// short enough to watch it lapse.
const demoOpenFor = 4 * time.Second

func newDemoCmd(env environment) *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Show knockwall at work in a private pair of network namespaces",
		Long: `Create a private pair of network namespaces joined by a veth link, run the
daemon in one on the embedded example config (port 22 protected, knocks
7000/tcp 8000/tcp 9000/udp) with a throw-away listener on port 22, and walk
through it from the other: refused, knock, open, grant expires, refused.
Nothing outside the two namespaces is touched; they are removed at the end.
Needs root.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demo(cmd.Context(), cmd.OutOrStdout(), env)
		},
	}
}

func demo(ctx context.Context, out io.Writer, env environment) error {
	if err := netns.Check(); err != nil {
		return fmt.Errorf("demo needs root to create network namespaces (try: sudo make demo): %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	say("Setting up a private server and client network namespace...")
	pair, err := netns.NewPair(ctx, netns.Config{Prefix: "kwd"})
	if err != nil {
		return err
	}
	defer func() {
		if err := pair.Close(); err != nil {
			say("cleanup: %v", err)
		}
	}()
	server := netip.AddrPortFrom(pair.Server4, 22)
	say("  server %s (runs knockwall), client %s", pair.Server4, pair.Client4)

	// The throw-away service on the protected port.
	var ln net.Listener
	if err := pair.Server.Do(func() (err error) { ln, err = net.Listen("tcp", ":22"); return err }); err != nil {
		return fmt.Errorf("listen on port 22 in the server namespace: %w", err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "SSH-2.0-knockwall-demo (a stand-in for your SSH server)\r\n")
			c.Close()
		}
	}()

	say("Starting knockwall on the embedded example config (grants shortened to %s for the demo)...", demoOpenFor)
	// The demo's daemon keeps no state and takes no host-wide socket: a
	// daemon running on the host keeps its own.
	ctlDir, err := os.MkdirTemp("", "knockwall-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ctlDir)
	daemon := pair.Server.Command(self, "run", "--example")
	daemon.Env = append(os.Environ(), "KNOCKWALL_LOG_FORMAT=text", "KNOCKWALL_LOG_LEVEL=info",
		"KNOCKWALL_SERVICES_SSH_OPEN_FOR="+demoOpenFor.String(),
		"KNOCKWALL_CONTROL_SOCKET="+filepath.Join(ctlDir, "control.sock"), "KNOCKWALL_STATE_FILE=")
	logs, err := daemon.StderrPipe()
	if err != nil {
		return err
	}
	if err := daemon.Start(); err != nil {
		return err
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(logs)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	defer stopDaemon(daemon, say)
	if err := waitFor(ctx, lines, "msg=ready", 10*time.Second); err != nil {
		return fmt.Errorf("knockwall did not start: %w", err)
	}
	say("  ready: SYNs into the server now pass through knockwall's verdict engine")

	connect := func() string {
		var c net.Conn
		err := pair.Client.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", server.String(), 2*time.Second)
			return err
		})
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				return "REFUSED (RST: the port looks closed, exactly like an unused port)"
			}
			return "FAILED: " + err.Error()
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		banner, _ := bufio.NewReader(c).ReadString('\n')
		return "CONNECTED, the server says: " + strings.TrimSpace(banner)
	}

	say("\n1. The client connects to %s before knocking:", server)
	say("   %s", connect())

	say("\n2. The client knocks 7000/tcp, 8000/tcp, 9000/udp (knockwall knock %s --service ssh --example):", pair.Server4)
	knock := pair.Client.Command(self, "knock", pair.Server4.String(), "--service", "ssh", "--example")
	if b, err := knock.CombinedOutput(); err != nil {
		return fmt.Errorf("knock: %w: %s", err, b)
	}
	if err := waitFor(ctx, lines, "msg=grant", 5*time.Second); err != nil {
		return fmt.Errorf("no grant logged: %w", err)
	}
	say("   knockwall granted %s access to port 22 for %s; no firewall rule was added (the kernel caches the grant in a set, the engine decides)", pair.Client4, demoOpenFor)

	say("\n3. The client connects again:")
	say("   %s", connect())

	say("\n4. Waiting for the grant to expire...")
	if err := waitFor(ctx, lines, "msg=expire", demoOpenFor+5*time.Second); err != nil {
		return fmt.Errorf("no expiry logged: %w", err)
	}
	say("   knockwall logged the expiry")

	say("\n5. The client connects once more:")
	say("   %s", connect())

	say("\nDone. Stopping knockwall (a clean stop leaves only its guard, so port 22 stays closed) and deleting the namespaces.")
	return nil
}

// waitFor reads daemon log lines until one contains want.
func waitFor(ctx context.Context, lines <-chan string, want string, d time.Duration) error {
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return errors.New("knockwall exited")
			}
			if strings.Contains(l, "level=ERROR") {
				return errors.New(l)
			}
			if strings.Contains(l, want) {
				return nil
			}
		case <-timeout:
			return fmt.Errorf("timed out after %s waiting for %q", d, want)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func stopDaemon(cmd *exec.Cmd, say func(string, ...any)) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			say("knockwall exited: %v", err)
		}
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		say("knockwall did not stop in time; killed (pid %s)", strconv.Itoa(cmd.Process.Pid))
	}
}
