package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/internal/config"
	"github.com/knockwall/knockwall/rules"
)

// configFlags are the flags every command that reads a config takes.
type configFlags struct {
	path    string
	example bool
}

func (f *configFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.path, "config", "c", "", "config file (default $KNOCKWALL_CONFIG, else "+config.DefaultPath+")")
	cmd.Flags().BoolVar(&f.example, "example", false, "use the embedded example config instead of a file")
}

// load reads, overrides and compiles the configuration.
func (f *configFlags) load(env environment) (rules.Config, *rules.Set, error) {
	src := config.Source{Example: f.example, Path: config.Resolve(f.path, env.get)}
	c, err := config.Load(src, env)
	if err != nil {
		return rules.Config{}, nil, err
	}
	set, err := rules.Compile(c)
	if err != nil {
		return rules.Config{}, nil, err
	}
	return c, set, nil
}

func newConfigCmd(env environment) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect the configuration"}
	var f configFlags
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate the configuration and print it as knockwall will use it (after environment overrides)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, set, err := f.load(env)
			if err != nil {
				return err
			}
			writeEffective(cmd.OutOrStdout(), set)
			return nil
		},
	}
	f.register(check)
	cmd.AddCommand(check)
	return cmd
}

func newExampleCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "example",
		Short: "Print the embedded example configuration",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(rules.ExampleYAML)
			return err
		},
	}
}

// writeEffective prints the configuration as YAML, each service preceded by
// a plain sentence saying what it accepts.
func writeEffective(w io.Writer, s *rules.Set) {
	fmt.Fprintf(w, "# configuration is valid\n")
	fmt.Fprintf(w, "queue:\n  num: %d\n  count: %d\n  max_len: %d\n", s.Queue.Num, s.Queue.Count, s.Queue.MaxLen)
	fmt.Fprintf(w, "firewall:\n  manage: %t\n  accept_mark: 0x%x\n  reject_mark: 0x%x\n  mark_mask: 0x%x\n",
		s.Firewall.Manage, s.Firewall.AcceptMark, s.Firewall.RejectMark, s.Firewall.MarkMask)
	fmt.Fprintf(w, "log:\n  level: %s\n  format: %s\n", s.Log.Level, s.Log.Format)
	fmt.Fprintf(w, "tracker:\n  max_pending: %d\n  max_grants: %d\n", s.Tracker.MaxPending, s.Tracker.MaxGrants)
	fmt.Fprintf(w, "services:\n")
	for _, svc := range s.Services {
		ports := make([]string, len(svc.Ports))
		for i, p := range svc.Ports {
			ports[i] = fmt.Sprint(p)
		}
		seq := make([]string, len(svc.Sequence))
		for i, k := range svc.Sequence {
			seq[i] = k.String()
		}
		fmt.Fprintf(w, "  # %s: TCP port(s) %s open for %s to a source that knocks %s in order, each within %s of the one before; everyone else gets %s.\n",
			svc.Name, strings.Join(ports, ", "), svc.OpenFor, strings.Join(seq, ", "), svc.StepTimeout, svc.Closed)
		fmt.Fprintf(w, "  %s:\n    ports: [%s]\n    sequence: [%s]\n    step_timeout: %s\n    open_for: %s\n    closed: %s\n",
			svc.Name, strings.Join(ports, ", "), strings.Join(seq, ", "), svc.StepTimeout, svc.OpenFor, svc.Closed)
	}
}
