package main

import (
	"fmt"
	"io"

	"github.com/knockwall/knockwall/internal/cluster"
)

// writeClusterKey is `keygen --cluster FILE`.
func writeClusterKey(w io.Writer, path string) error {
	if err := cluster.WriteNewKeyFile(path); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote a %d-byte cluster key to %s with mode 0600; copy it to every node of the cluster (cluster.key_file) over a secure channel\n", cluster.KeySize, path)
	return nil
}
