package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newDemoCmd(env environment) *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Show knockwall at work in a private pair of network namespaces",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("demo: not yet")
		},
	}
}
