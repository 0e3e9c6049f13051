package firewall

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/knockwall/knockwall/rules"
)

var errInjected = errors.New("injected failure")

// recorder is a Runner that records every command and fails the failAt-th
// one (1-based; 0 never), or any command fail returns an error for.
type recorder struct {
	cmds   []rules.Command
	failAt int
	fail   func(n int, c rules.Command) error
}

func (r *recorder) run(_ context.Context, c rules.Command) error {
	r.cmds = append(r.cmds, c)
	n := len(r.cmds)
	if n == r.failAt {
		return fmt.Errorf("command %d: %w", n, errInjected)
	}
	if r.fail != nil {
		return r.fail(n, c)
	}
	return nil
}

func (r *recorder) strings() []string {
	out := make([]string, len(r.cmds))
	for i, c := range r.cmds {
		out[i] = c.String()
	}
	return out
}

func strs(cs []rules.Command) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

// fakeTables is a small model of iptables: user chains per table and a
// count of each rule per (table, chain). It fails where iptables would: a
// chain created twice, a rule deleted that is not there, a chain deleted
// while referenced or not empty, a rule appended to a missing chain.
type fakeTables struct {
	chains map[string]bool // "bin table chain"
	rules  map[string]int  // "bin table chain | spec" → copies
	rec    recorder
}

func newFake() *fakeTables {
	return &fakeTables{chains: map[string]bool{}, rules: map[string]int{}}
}

var builtin = []string{"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}

type parsed struct {
	table, op, chain, target string
	spec                     []string
}

func parse(c rules.Command) parsed {
	p := parsed{table: "filter"}
	for i := 0; i < len(c.Args); i++ {
		switch a := c.Args[i]; a {
		case "-w":
		case "-t":
			i++
			p.table = c.Args[i]
		case "-N", "-A", "-D", "-F", "-X", "-C", "-S":
			p.op = a
			i++
			p.chain = c.Args[i]
		case "-I":
			p.op = a
			i++
			p.chain = c.Args[i]
			if i+1 < len(c.Args) && c.Args[i+1] != "" && c.Args[i+1][0] >= '0' && c.Args[i+1][0] <= '9' {
				i++ // position
			}
		default:
			if a == "-j" && i+1 < len(c.Args) {
				p.target = c.Args[i+1]
			}
			p.spec = append(p.spec, a)
		}
	}
	return p
}

func (f *fakeTables) run(ctx context.Context, c rules.Command) error {
	if err := f.rec.run(ctx, c); err != nil {
		return err // injected: nothing happens
	}
	p := parse(c)
	chainKey := c.Bin + " " + p.table + " " + p.chain
	ruleKey := chainKey + " | " + strings.Join(p.spec, " ")
	userChain := !slices.Contains(builtin, p.chain)
	switch p.op {
	case "-N":
		if f.chains[chainKey] {
			return errors.New("chain already exists")
		}
		f.chains[chainKey] = true
	case "-A", "-I":
		if userChain && !f.chains[chainKey] {
			return errors.New("no chain by that name")
		}
		if t := p.target; t != "" && strings.HasPrefix(t, "KNOCKWALL") && !f.chains[c.Bin+" "+p.table+" "+t] {
			return errors.New("couldn't load target")
		}
		f.rules[ruleKey]++
	case "-D":
		if f.rules[ruleKey] == 0 {
			return errors.New("bad rule (does a matching rule exist in that chain?)")
		}
		f.rules[ruleKey]--
	case "-C":
		if f.rules[ruleKey] == 0 {
			return errors.New("bad rule (does a matching rule exist in that chain?)")
		}
	case "-S":
		if userChain && !f.chains[chainKey] {
			return errors.New("no chain by that name")
		}
	case "-F":
		if userChain && !f.chains[chainKey] {
			return errors.New("no chain by that name")
		}
		for k := range f.rules {
			if strings.HasPrefix(k, chainKey+" | ") {
				delete(f.rules, k)
			}
		}
	case "-X":
		if !f.chains[chainKey] {
			return errors.New("no chain by that name")
		}
		for k, n := range f.rules {
			if n == 0 {
				continue
			}
			if strings.HasPrefix(k, chainKey+" | ") {
				return errors.New("directory not empty")
			}
			if strings.HasPrefix(k, c.Bin+" "+p.table+" ") && strings.HasSuffix(k, " -j "+p.chain) {
				return errors.New("too many links")
			}
		}
		delete(f.chains, chainKey)
	default:
		return fmt.Errorf("fake iptables: cannot run %s", c)
	}
	return nil
}

// state lists the chains and rules present, sorted.
func (f *fakeTables) state() []string {
	var out []string
	for k, ok := range f.chains {
		if ok {
			out = append(out, "chain "+k)
		}
	}
	for k, n := range f.rules {
		for range n {
			out = append(out, "rule "+k)
		}
	}
	slices.Sort(out)
	return out
}

func plans(t *testing.T) []struct {
	name string
	plan rules.Plan
} {
	t.Helper()
	one := rules.Defaults()
	ssh := rules.ServiceDefaults()
	ssh.Ports = []int{22}
	ssh.Sequence = []string{"7000", "8000", "9000/udp"}
	one.Services = map[string]rules.ServiceConfig{"ssh": ssh}

	big := rules.Defaults()
	big.Queue.Count = 2
	many := rules.ServiceDefaults()
	for i := range 20 {
		many.Ports = append(many.Ports, 2000+i)
	}
	for i := range 20 {
		many.Sequence = append(many.Sequence, fmt.Sprintf("%d/udp", 30000+i))
	}
	big.Services = map[string]rules.ServiceConfig{"ssh": ssh, "many": many}

	var out []struct {
		name string
		plan rules.Plan
	}
	for _, c := range []struct {
		name string
		cfg  rules.Config
	}{{"example", one}, {"many ports, two queues", big}} {
		set, err := rules.Compile(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, struct {
			name string
			plan rules.Plan
		}{c.name, set.FirewallPlan()})
	}
	return out
}

// installedState is the fake's state after the plan's Install ran alone.
func installedState(t *testing.T, p rules.Plan) []string {
	t.Helper()
	f := newFake()
	for _, c := range p.Install {
		if err := f.run(context.Background(), c); err != nil {
			t.Fatalf("plan does not install on a clean fake: %s: %v", c, err)
		}
	}
	return f.state()
}

func TestInstallOnCleanHost(t *testing.T) {
	for _, tc := range plans(t) {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			if err := Install(context.Background(), f.run, tc.plan); err != nil {
				t.Fatalf("Install: %v", err)
			}
			if st := f.state(); !slices.Equal(st, installedState(t, tc.plan)) {
				t.Errorf("state after Install:\n%s", strings.Join(st, "\n"))
			}
			// The plan's commands ran in the plan's order.
			var adds []string
			for _, c := range f.rec.cmds {
				if op := parse(c).op; op == "-N" || op == "-A" || op == "-I" {
					adds = append(adds, c.String())
				}
			}
			if !slices.Equal(adds, strs(tc.plan.Install)) {
				t.Errorf("commands that add, in order:\n%s\nwant:\n%s", strings.Join(adds, "\n"), strings.Join(strs(tc.plan.Install), "\n"))
			}
		})
	}
}

// isGuardCmd is a command on the security table (the guard).
func isGuardCmd(c rules.Command) bool { return slices.Contains(c.Args, "security") }

// TestInstallKeepsAnExistingGuard: a restart over rules left in place (a
// crash, a SIGKILL) never removes the guard, not even for a moment, and
// ends with exactly one copy of everything.
func TestInstallKeepsAnExistingGuard(t *testing.T) {
	for _, tc := range plans(t) {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			if err := Install(context.Background(), f.run, tc.plan); err != nil {
				t.Fatal(err)
			}
			f.rec = recorder{}
			if err := Install(context.Background(), f.run, tc.plan); err != nil {
				t.Fatal(err)
			}
			// (Retiring an earlier version's guard rules is tried, and
			// finds nothing: those are not this guard's rules.)
			for _, c := range f.rec.cmds {
				if op := parse(c).op; isGuardCmd(c) && (op == "-D" || op == "-F" || op == "-X") && !slices.ContainsFunc(tc.plan.Retire, func(r rules.Command) bool { return r.String() == c.String() }) {
					t.Errorf("reinstall touched the guard: %s", c)
				}
			}
			if st := f.state(); !slices.Equal(st, installedState(t, tc.plan)) {
				t.Errorf("state after reinstall:\n%s", strings.Join(st, "\n"))
			}
		})
	}
}

func TestInstallTwiceLeavesOneCopy(t *testing.T) {
	// A restart after a crash: Install over rules already in place.
	for _, tc := range plans(t) {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			for range 3 {
				if err := Install(context.Background(), f.run, tc.plan); err != nil {
					t.Fatalf("Install: %v", err)
				}
			}
			if st := f.state(); !slices.Equal(st, installedState(t, tc.plan)) {
				t.Errorf("state after three installs:\n%s", strings.Join(st, "\n"))
			}
		})
	}
}

// TestInstallFailsMidway fails each command of the plan in turn, on a clean
// host and over an earlier install: the diversion and reject rules are gone
// afterwards, the host's own rule is untouched, and a guard that was there
// (or got installed before the failure) stays, so protected ports stay closed.
func TestInstallFailsMidway(t *testing.T) {
	for _, tc := range plans(t) {
		t.Run(tc.name, func(t *testing.T) {
			for _, earlier := range []bool{false, true} {
				for i, c := range tc.plan.Install {
					t.Run(fmt.Sprintf("earlier=%v/%d %s", earlier, i, c), func(t *testing.T) {
						f := newFake()
						foreign := rules.Command{Bin: "iptables", Args: []string{"-w", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "80", "-j", "ACCEPT"}}
						if err := f.run(context.Background(), foreign); err != nil {
							t.Fatal(err)
						}
						if earlier {
							if err := Install(context.Background(), f.run, tc.plan); err != nil {
								t.Fatal(err)
							}
						}
						target := c.String()
						failed := false
						f.rec = recorder{fail: func(_ int, got rules.Command) error {
							// Fail the command the first time it would change
							// something (a -C or -S probe is not it).
							if got.String() == target && !failed {
								failed = true
								return errInjected
							}
							return nil
						}}
						err := Install(context.Background(), f.run, tc.plan)
						if !failed || (err == nil && earlier && parse(c).op == "-N") {
							// An earlier install made this command unnecessary,
							// or the chain it failed to create was there.
							if err != nil {
								t.Fatalf("Install = %v with nothing failing", err)
							}
							want := append(installedState(t, tc.plan), "rule iptables filter INPUT | -p tcp --dport 80 -j ACCEPT")
							slices.Sort(want)
							if st := f.state(); !slices.Equal(st, want) {
								t.Errorf("state:\n%s\nwant:\n%s", strings.Join(st, "\n"), strings.Join(want, "\n"))
							}
							return
						}
						if !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "install firewall rules") {
							t.Fatalf("Install = %v, want the runner's error, saying what failed", err)
						}
						st := f.state()
						if !slices.Contains(st, "rule iptables filter INPUT | -p tcp --dport 80 -j ACCEPT") {
							t.Errorf("the host's own rule is gone:\n%s", strings.Join(st, "\n"))
						}
						for _, line := range st {
							if strings.Contains(line, "KNOCKWALL") && !strings.Contains(line, "security") {
								t.Errorf("a diversion or reject rule is left: %s", line)
							}
						}
						// What the guard had before the failure is still there:
						// all of it over an earlier install, else what the
						// plan's guard commands before the failing one made.
						want := installedState(t, tc.plan)
						if !earlier {
							g := newFake()
							for _, pc := range tc.plan.Install[:i] {
								if isGuardCmd(pc) {
									_ = g.run(context.Background(), pc)
								}
							}
							want = g.state()
						}
						for _, line := range want {
							if strings.Contains(line, "security") && !slices.Contains(st, line) {
								t.Errorf("the guard lost %s", line)
							}
						}
					})
				}
			}
		})
	}
}

func TestRemove(t *testing.T) {
	for _, tc := range plans(t) {
		t.Run(tc.name, func(t *testing.T) {
			t.Run("after install", func(t *testing.T) {
				f := newFake()
				if err := Install(context.Background(), f.run, tc.plan); err != nil {
					t.Fatal(err)
				}
				Remove(context.Background(), f.run, tc.plan)
				if st := f.state(); len(st) != 0 {
					t.Errorf("left behind:\n%s", strings.Join(st, "\n"))
				}
			})
			t.Run("duplicate jumps from a crash", func(t *testing.T) {
				f := newFake()
				for _, c := range tc.plan.Install {
					if err := f.run(context.Background(), c); err != nil {
						t.Fatal(err)
					}
				}
				// An earlier run that crashed before removing: each jump
				// into a built-in chain is there five times.
				for _, c := range tc.plan.Install {
					if p := parse(c); slices.Contains(builtin, p.chain) {
						for range 4 {
							if err := f.run(context.Background(), c); err != nil {
								t.Fatal(err)
							}
						}
					}
				}
				Remove(context.Background(), f.run, tc.plan)
				if st := f.state(); len(st) != 0 {
					t.Errorf("left behind:\n%s", strings.Join(st, "\n"))
				}
				// Each jump was tried until it failed: five deletes and one
				// failure; the jumps of earlier versions, absent, once.
				installed := map[string]bool{}
				for _, c := range tc.plan.Install {
					installed[c.Deletion().String()] = true
				}
				for _, j := range tc.plan.Jumps {
					want := 1
					if installed[j.String()] {
						want = 6
					}
					if n := countOf(f.rec.strings(), j.String()); n != want {
						t.Errorf("%s run %d times, want %d", j, n, want)
					}
				}
			})
			t.Run("nothing installed", func(t *testing.T) {
				f := newFake()
				Remove(context.Background(), f.run, tc.plan)
				if got := f.rec.strings(); !slices.Equal(got, strs(tc.plan.Remove)) {
					t.Errorf("on a clean host Remove ran:\n%s\nwant each removal once", strings.Join(got, "\n"))
				}
			})
			t.Run("foreign rules stay", func(t *testing.T) {
				f := newFake()
				foreign := []rules.Command{
					{Bin: "iptables", Args: []string{"-w", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}},
					{Bin: "ip6tables", Args: []string{"-w", "-t", "mangle", "-A", "INPUT", "-j", "MARK", "--set-mark", "1"}},
				}
				for _, c := range foreign {
					if err := f.run(context.Background(), c); err != nil {
						t.Fatal(err)
					}
				}
				want := f.state()
				if err := Install(context.Background(), f.run, tc.plan); err != nil {
					t.Fatal(err)
				}
				Remove(context.Background(), f.run, tc.plan)
				if st := f.state(); !slices.Equal(st, want) {
					t.Errorf("state:\n%s\nwant:\n%s", strings.Join(st, "\n"), strings.Join(want, "\n"))
				}
			})
		})
	}
}

// TestUpgradeFromLegacyJumps: rules as an earlier version installed them
// (the loopback exemption as a RETURN inside knockwall's chains, the guard's
// jump taking all TCP) are replaced by Install without the guard ever
// leaving, and Remove then leaves nothing.
func TestUpgradeFromLegacyJumps(t *testing.T) {
	for _, tc := range plans(t) {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			for _, bin := range []string{"iptables", "ip6tables"} {
				legacy := [][]string{
					{"-t", "security", "-N", "KNOCKWALL-GUARD"},
					{"-t", "security", "-A", "KNOCKWALL-GUARD", "-i", "lo", "-m", "comment", "--comment", "knockwall", "-j", "RETURN"},
					{"-t", "security", "-I", "INPUT", "1", "-p", "tcp", "-m", "comment", "--comment", "knockwall", "-j", "KNOCKWALL-GUARD"},
					{"-t", "mangle", "-N", "KNOCKWALL"},
					{"-t", "mangle", "-A", "KNOCKWALL", "-i", "lo", "-m", "comment", "--comment", "knockwall", "-j", "RETURN"},
					{"-t", "mangle", "-A", "KNOCKWALL", "-p", "tcp", "--syn", "-m", "comment", "--comment", "knockwall", "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"},
					{"-t", "mangle", "-A", "INPUT", "-m", "comment", "--comment", "knockwall", "-j", "KNOCKWALL"},
				}
				for _, a := range legacy {
					if err := f.run(context.Background(), rules.Command{Bin: bin, Args: append([]string{"-w"}, a...)}); err != nil {
						t.Fatal(err)
					}
				}
			}
			// The guard's DROP rules of the old version were the same.
			for _, c := range tc.plan.Install {
				if isGuardCmd(c) && slices.Contains(c.Args, "DROP") {
					if err := f.run(context.Background(), c); err != nil {
						t.Fatal(err)
					}
				}
			}
			f.rec = recorder{}
			if err := Install(context.Background(), f.run, tc.plan); err != nil {
				t.Fatalf("install over an earlier version's rules: %v", err)
			}
			// No guard rule goes before the new guard jump is in place,
			// and the guard chain is never flushed or deleted.
			newJump := map[string]bool{}
			for _, c := range tc.plan.Install {
				if p := parse(c); isGuardCmd(c) && slices.Contains(builtin, p.chain) {
					newJump[c.String()] = true
				}
			}
			jumped := map[string]bool{} // by binary
			for _, c := range f.rec.strings() {
				bin := strings.Fields(c)[0]
				if newJump[c] {
					jumped[bin] = true
				}
				if !strings.Contains(c, "security") {
					continue
				}
				if strings.Contains(c, " -F ") || strings.Contains(c, " -X ") || strings.Contains(c, " -D ") && !jumped[bin] {
					t.Errorf("install took a guard rule away before the new guard was in place: %s", c)
				}
			}
			if st, want := f.state(), installedState(t, tc.plan); !slices.Equal(st, want) {
				t.Errorf("after the upgrade:\n%s\nwant what a clean install leaves:\n%s", strings.Join(st, "\n"), strings.Join(want, "\n"))
			}
			Remove(context.Background(), f.run, tc.plan)
			if st := f.state(); len(st) != 0 {
				t.Errorf("left behind:\n%s", strings.Join(st, "\n"))
			}
		})
	}
}

func countOf(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

func TestRemoveIsBounded(t *testing.T) {
	// A runner on which deleting never fails (a broken iptables, or a
	// recorder) must not make Remove loop for ever.
	for _, tc := range plans(t) {
		t.Run(tc.name, func(t *testing.T) {
			var r recorder
			Remove(context.Background(), r.run, tc.plan)
			got := r.strings()
			for _, j := range tc.plan.Jumps {
				if n := countOf(got, j.String()); n != maxJumpDeletes {
					t.Errorf("%s run %d times, want %d", j, n, maxJumpDeletes)
				}
			}
			if want := maxJumpDeletes*len(tc.plan.Jumps) + len(tc.plan.Remove) - len(tc.plan.Jumps); len(got) != want {
				t.Errorf("%d commands, want %d", len(got), want)
			}
			// Order: each removal in plan order, a jump's repeats together.
			var compact []string
			for _, s := range got {
				if len(compact) == 0 || compact[len(compact)-1] != s {
					compact = append(compact, s)
				}
			}
			if !slices.Equal(compact, strs(tc.plan.Remove)) {
				t.Errorf("removal order:\n%s", strings.Join(compact, "\n"))
			}
		})
	}
}

func TestRemoveStopsAtFirstFailedDelete(t *testing.T) {
	plan := plans(t)[0].plan
	jump := plan.Jumps[0].String()
	tests := []struct {
		name   string
		copies int // deletes of the jump that succeed
	}{
		{"none", 0},
		{"one", 1},
		{"three", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			left := tt.copies
			r := recorder{fail: func(_ int, c rules.Command) error {
				if c.String() != jump {
					return nil
				}
				if left == 0 {
					return errors.New("bad rule")
				}
				left--
				return nil
			}}
			Remove(context.Background(), r.run, plan)
			if n := countOf(r.strings(), jump); n != tt.copies+1 {
				t.Errorf("jump run %d times, want %d", n, tt.copies+1)
			}
		})
	}
}

func TestRunnerGetsContext(t *testing.T) {
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "v")
	plan := plans(t)[0].plan
	var seen int
	run := func(c context.Context, _ rules.Command) error {
		if c.Value(key{}) != "v" {
			t.Error("runner did not get the caller's context")
		}
		seen++
		return errors.New("absent")
	}
	if err := Install(ctx, run, plan); err == nil {
		t.Error("Install succeeded with a failing runner")
	}
	Remove(ctx, run, plan)
	if seen == 0 {
		t.Error("runner never called")
	}
}

func TestExec(t *testing.T) {
	tests := []struct {
		name    string
		c       rules.Command
		wantErr []string
	}{
		{"success", rules.Command{Bin: "sh", Args: []string{"-c", "exit 0"}}, nil},
		{"failure carries output", rules.Command{Bin: "sh", Args: []string{"-c", "echo 'iptables: Bad rule.' >&2; exit 1"}},
			[]string{"sh -c", "exit status 1", "iptables: Bad rule."}},
		{"missing binary", rules.Command{Bin: "knockwall-no-such-binary", Args: []string{"-w"}},
			[]string{"knockwall-no-such-binary", "install the iptables package"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Exec(context.Background(), tt.c)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Exec = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Exec succeeded")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
