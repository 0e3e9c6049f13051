//go:build !linux

package main

import (
	"errors"
	"io"
)

// writeClusterKey: cluster keys are for daemons, which run on Linux; the
// client builds carry no cluster code.
func writeClusterKey(io.Writer, string) error {
	return errors.New("keygen --cluster: cluster keys are made with the Linux build, where the daemon runs")
}
