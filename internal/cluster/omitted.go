package cluster

import "errors"

// ErrOmitted is the answer to a cluster section in a build without the
// cluster (Built is false).
var ErrOmitted = errors.New("cluster: this build of knockwall leaves the cluster out (built with -tags knockwall_omit_cluster, as the mips and mipsle router builds are); use an amd64, arm64 or armv7 build, or remove cluster.bind")
