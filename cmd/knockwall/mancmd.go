//go:build genman

// The man-page generator (cobra/doc, go-md2man, blackfriday) is linked
// only into a binary built with -tags genman: only the packaging runs it,
// on the build host (packaging/dist.sh), and the daemon's binary, which
// routers store in little flash, carries none of it (docs/decisions.md).

package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func init() { buildCommands = append(buildCommands, newManCmd) }

// manSection is 8: the binary is installed in /usr/sbin and its main job,
// run, is a system daemon.
const manSection = "8"

// newManCmd writes one roff man page per command (knockwall.8,
// knockwall-run.8, ...) into DIR, for the packages. Hidden: it is a build
// step, not something an operator runs.
func newManCmd(env environment) *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "Write the man pages (section " + manSection + ") into DIR",
		Hidden: true,
		Args:   exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			date, err := buildDate(env.get("SOURCE_DATE_EPOCH"))
			if err != nil {
				return usageError{err}
			}
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			// The generated "HISTORY: auto generated on DATE" section says
			// nothing an operator needs; the date is in the page footer.
			disableAutoGenTag(root)
			return doc.GenManTree(root, &doc.GenManHeader{
				Title:   "KNOCKWALL",
				Section: manSection,
				Date:    &date,
				Source:  "knockwall " + version,
				Manual:  "knockwall manual",
			}, args[0])
		},
	}
}

// buildDate is SOURCE_DATE_EPOCH (reproducible builds) or, unset, now.
func buildDate(epoch string) (time.Time, error) {
	if epoch == "" {
		return time.Now().UTC(), nil
	}
	s, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", epoch, err)
	}
	return time.Unix(s, 0).UTC(), nil
}

func disableAutoGenTag(c *cobra.Command) {
	c.DisableAutoGenTag = true
	for _, sub := range c.Commands() {
		disableAutoGenTag(sub)
	}
}
