// Package firewall applies and removes the static rules that rules.Plan
// renders, by running iptables and ip6tables. It is the only place knockwall
// touches the host firewall.
package firewall

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
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

// Install puts the plan's rules in place. The guard (security table) is made
// sure of rather than replaced: if a guard from an earlier run is there, it is
// never removed, not even for a moment, so a restart or a crash never exposes
// a protected port. Diversion and reject rules left by an earlier run are
// removed and installed afresh. If a command fails, the diversion and reject
// rules are removed again and the guard stays: the host fails closed.
func Install(ctx context.Context, run Runner, p rules.Plan) error {
	removeWhere(ctx, run, p, notGuard)
	for _, c := range p.Install {
		var err error
		if rules.IsGuard(c) {
			err = ensure(ctx, run, c)
		} else {
			err = run(ctx, c)
		}
		if err != nil {
			removeWhere(ctx, run, p, notGuard)
			return fmt.Errorf("install firewall rules: %w (the guard stays in place, so protected ports stay closed; `knockwall rules print --remove | sh` removes it)", err)
		}
	}
	// An earlier version's guard rules, now that this guard is in place.
	for _, c := range p.Retire {
		deleteAll(ctx, run, c)
	}
	return nil
}

// Remove deletes exactly the plan's rules: every copy of each jump from a
// built-in chain, then knockwall's own chains; the guard last. Missing rules
// are not errors.
func Remove(ctx context.Context, run Runner, p rules.Plan) {
	removeWhere(ctx, run, p, func(rules.Command) bool { return true })
}

// RemoveKeepingGuard deletes the plan's diversion and reject rules and
// leaves the guard, so protected ports stay closed.
func RemoveKeepingGuard(ctx context.Context, run Runner, p rules.Plan) {
	removeWhere(ctx, run, p, notGuard)
}

func removeWhere(ctx context.Context, run Runner, p rules.Plan, keep func(rules.Command) bool) {
	isJump := make(map[string]bool, len(p.Jumps))
	for _, j := range p.Jumps {
		isJump[j.String()] = true
	}
	for _, c := range p.Remove {
		if !keep(c) {
			continue
		}
		if !isJump[c.String()] {
			_ = run(ctx, c)
			continue
		}
		deleteAll(ctx, run, c)
	}
}

// deleteAll runs the delete c until it fails (no copy left), at most
// maxJumpDeletes times.
func deleteAll(ctx context.Context, run Runner, c rules.Command) {
	for range maxJumpDeletes {
		if run(ctx, c) != nil {
			return
		}
	}
}

func notGuard(c rules.Command) bool { return !rules.IsGuard(c) }

// ensure runs c unless what it would add is there already: a chain that
// exists, or a rule that -C finds. A chain is created first and checked
// after, a rule checked first.
func ensure(ctx context.Context, run Runner, c rules.Command) error {
	check, ok := c.Check()
	if !ok {
		return run(ctx, c)
	}
	if slices.Contains(c.Args, "-N") {
		err := run(ctx, c)
		if err == nil || run(ctx, check) == nil {
			return nil // made, or there already
		}
		return err
	}
	if run(ctx, check) == nil {
		return nil
	}
	return run(ctx, c)
}
