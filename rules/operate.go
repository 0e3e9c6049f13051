package rules

import (
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
)

// Defaults of the keys that run knockwall as an appliance daemon.
const (
	// DefaultControlSocket is where `knockwall status`, `grant`, `revoke`
	// and `reload` reach the daemon.
	DefaultControlSocket = "/run/knockwall/control.sock"
	// DefaultStateFile keeps live grants across a clean restart.
	DefaultStateFile = "/var/lib/knockwall/state.json"
	// MaxSocketPath is the longest unix socket path the kernel takes
	// (sun_path holds 108 bytes with the terminating NUL).
	MaxSocketPath = 107
)

// ControlConfig is the control socket: HTTP and JSON over a unix socket,
// for root (or the daemon's own user) only.
type ControlConfig struct {
	// Socket is the socket's path; empty turns the control socket off.
	Socket string `mapstructure:"socket" yaml:"socket"`
}

// MetricsConfig is the Prometheus endpoint.
type MetricsConfig struct {
	// Listen is host:port for /metrics; empty (the default) turns it off.
	Listen string `mapstructure:"listen" yaml:"listen"`
	// TokenFile holds the bearer token scrapers must send (mode 0600, as
	// key files). Required with listen: loopback is no access control.
	TokenFile string `mapstructure:"token_file" yaml:"token_file"`
}

// StateConfig is where grants are kept across a clean restart.
type StateConfig struct {
	// File is the state file's path; empty keeps no state.
	File string `mapstructure:"file" yaml:"file"`
}

// validateOperate checks control.socket, metrics.listen and token_file,
// and state.file.
func validateOperate(c Config) error {
	if p := c.Control.Socket; p != "" {
		switch {
		case !filepath.IsAbs(p) || filepath.Clean(p) != p:
			return keyErr("control.socket", "must be an absolute, clean path (or empty to turn the socket off), got %q", p)
		case len(p) > MaxSocketPath:
			return keyErr("control.socket", "a unix socket path is at most %d bytes, got %d", MaxSocketPath, len(p))
		}
	}
	if a := c.Metrics.Listen; a != "" {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return keyErr("metrics.listen", "must be host:port (e.g. 127.0.0.1:9477), or empty to turn metrics off: %v", err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return keyErr("metrics.listen", "port must be a number from 1 to 65535, got %q", port)
		}
		if _, err := netip.ParseAddr(host); err != nil && host != "" && host != "localhost" {
			return keyErr("metrics.listen", "host must be an IP address, localhost, or empty (every address), got %q", host)
		}
		switch p := c.Metrics.TokenFile; {
		case p == "":
			return keyErr("metrics.token_file", "is required with metrics.listen: scrapers must send a bearer token, since anyone who reaches the port (any local user on loopback) could read the counters. "+
				"Write one: (umask 077; openssl rand -hex 32 > /etc/knockwall/metrics.token), set metrics.token_file: /etc/knockwall/metrics.token, "+
				"and give Prometheus authorization: {credentials_file: <a copy of it>}")
		case !filepath.IsAbs(p) || filepath.Clean(p) != p:
			return keyErr("metrics.token_file", "must be an absolute, clean path, got %q", p)
		}
	}
	if p := c.State.File; p != "" && (!filepath.IsAbs(p) || filepath.Clean(p) != p) {
		return keyErr("state.file", "must be an absolute, clean path (or empty to keep no state), got %q", p)
	}
	return nil
}
