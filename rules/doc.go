// Package rules is knockwall's configuration model: services, the TCP ports
// they protect, their knock sequences and what a stranger gets when it
// touches them. It loads nothing from disk or the environment itself; the
// caller hands it a decoded Config. Compile validates that Config and turns it
// into an immutable Set whose lookup tables the per-packet path reads without
// locks. The same model renders the static firewall rules that divert packets
// to knockwall (see Firewall).
package rules
