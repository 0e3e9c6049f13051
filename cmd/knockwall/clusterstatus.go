//go:build linux

package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/knockwall/knockwall/internal/control"
)

// writeCluster prints the cluster part of `knockwall status`.
func writeCluster(w io.Writer, c *control.Cluster) {
	fmt.Fprintln(w)
	last := "never"
	if !c.LastSync.IsZero() {
		last = c.LastSync.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "cluster %s: %d events, %d spent tokens held; last sync %s\n", c.Name, c.Events, c.Tokens, last)
	fmt.Fprintf(w, "  sent %d grants, %d revokes, %d tokens; received %d grants, %d revokes, %d tokens\n",
		c.Sent["grants"], c.Sent["revokes"], c.Sent["tokens"], c.Received["grants"], c.Received["revokes"], c.Received["tokens"])
	fmt.Fprintf(w, "  refused: %d bad key, %d clock skew, %d unknown or differing service, %d malformed, %d full\n",
		c.Refused["key"], c.Refused["skew"], c.Refused["service"], c.Refused["malformed"], c.Refused["full"])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "PEER\tADDRESS\tSTATE\tLAST SYNC\n")
	for _, p := range c.Peers {
		sync := "never"
		if !p.LastSync.IsZero() {
			sync = p.LastSync.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.Addr, p.State, sync)
	}
	tw.Flush()
}
