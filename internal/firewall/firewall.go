// Package firewall applies and removes the static rules that rules.Plan
// renders, by running iptables and ip6tables. It is the only place knockwall
// touches the host firewall.
package firewall

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/knockwall/knockwall/rules"
)

// Runner runs one command. Tests may record instead of running.
type Runner func(ctx context.Context, c rules.Command) error

// Exec runs c with os/exec and returns its stderr in the error.
func Exec(ctx context.Context, c rules.Command) error {
	cmd := exec.CommandContext(ctx, c.Bin, c.Args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			return fmt.Errorf("%s: %w (install the iptables package)", c.Bin, err)
		}
		return fmt.Errorf("%s: %w: %s", c, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// maxJumpDeletes bounds how many duplicate jumps Remove deletes per rule.
const maxJumpDeletes = 64

// Install removes any knockwall rules left by an earlier run, then adds the
// plan's rules. If any command fails it removes what it added and returns the
// error, so the firewall ends as it was found (without stale knockwall rules).
func Install(ctx context.Context, run Runner, p rules.Plan) error {
	Remove(ctx, run, p)
	for _, c := range p.Install {
		if err := run(ctx, c); err != nil {
			Remove(ctx, run, p)
			return fmt.Errorf("install firewall rules: %w", err)
		}
	}
	return nil
}

// Remove deletes exactly the plan's rules: every copy of each jump from a
// built-in chain, then knockwall's own chains. Missing rules are not errors.
func Remove(ctx context.Context, run Runner, p rules.Plan) {
	isJump := make(map[string]bool, len(p.Jumps))
	for _, j := range p.Jumps {
		isJump[j.String()] = true
	}
	for _, c := range p.Remove {
		if !isJump[c.String()] {
			_ = run(ctx, c)
			continue
		}
		for range maxJumpDeletes {
			if run(ctx, c) != nil {
				break
			}
		}
	}
}
