package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/knockwall/knockwall/spa"
)

func newKeygenCmd() *cobra.Command {
	var clusterKey bool
	cmd := &cobra.Command{
		Use:   "keygen FILE",
		Short: "Write a fresh random SPA key (or, with --cluster, a cluster key) to FILE (mode 0600; never overwrites)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if clusterKey {
				return writeClusterKey(cmd.OutOrStdout(), args[0])
			}
			k, err := spa.WriteNewKeyFile(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote a %d-byte key (id %d) to %s with mode 0600; copy it to clients over a secure channel\n", spa.MinKeySize, k.ID, args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&clusterKey, "cluster", false, "write a cluster key (cluster.key_file) instead of an SPA key")
	return cmd
}
