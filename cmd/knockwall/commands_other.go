//go:build !linux

package main

import "github.com/spf13/cobra"

// daemonCommands: the daemon runs on Linux only; elsewhere knockwall is
// the client (knock, keygen).
func daemonCommands(environment) []*cobra.Command { return nil }
