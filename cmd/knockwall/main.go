// Command knockwall is a port-knocking firewall that decides inline: static
// nftables or iptables rules divert inbound TCP SYNs (and UDP knock ports) to NFQUEUE, and
// knockwall accepts, drops or rejects each one, opening protected ports only
// to sources that knocked.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/rules"
)

// Exit statuses.
const (
	exitOK     = 0
	exitError  = 1
	exitConfig = 2 // bad configuration or usage: nothing was started or changed
	// connect's own statuses (exitKnock, exitConnect, exitRelay) are in
	// connect.go.
)

// version is set at build time (-ldflags -X main.version=...), on every
// system.
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// A HUP must never kill the daemon and its grants: ignored here, and
	// `run` reloads on it (signal.Notify there undoes the Ignore).
	signal.Ignore(syscall.SIGHUP)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Environ())
	stop()
	os.Exit(code)
}

// usageError marks errors in how the command was called.
type usageError struct{ error }

func execute(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) int {
	root := newRoot(stdout, stderr, environ)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "knockwall:", err)
	var ue usageError
	var ee exitStatus
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, rules.ErrInvalid) || errors.As(err, &ue) {
		return exitConfig
	}
	return exitError
}

func newRoot(stdout, stderr io.Writer, environ []string) *cobra.Command {
	root := &cobra.Command{
		Use:           "knockwall",
		Short:         "Port-knocking firewall that decides inline through NFQUEUE",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	env := environment(environ)
	// The client's commands build everywhere; the daemon's only where it
	// runs (daemonCommands).
	root.AddCommand(
		newKnockCmd(env),
		newConnectCmd(env),
		newClientCmd(env),
		newKeygenCmd(),
	)
	root.AddCommand(daemonCommands(env)...)
	for _, c := range buildCommands {
		root.AddCommand(c(env))
	}
	return root
}

// buildCommands are commands that files under build tags add from their
// init: gen-man (-tags genman), a build step kept out of the shipped
// binary.
var buildCommands []func(environment) *cobra.Command

// environment is the process environment, passed down rather than read deep
// inside, so commands are testable.
type environment []string

func (e environment) get(key string) string {
	for _, kv := range e {
		if len(kv) > len(key) && kv[:len(key)] == key && kv[len(key)] == '=' {
			return kv[len(key)+1:]
		}
	}
	return ""
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
