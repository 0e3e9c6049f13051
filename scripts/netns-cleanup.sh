#!/bin/sh
# Delete network namespaces left behind by knockwall's tests or demo when
# the test process was killed before its cleanup ran (e.g. a go test
# timeout). Only names of the form kw<hex>-srv / kw<hex>-cli, as made by
# internal/netns, are touched. Processes still inside are listed, not
# killed: stop them yourself by PID.
set -eu
for ns in $(ip netns list | awk '{print $1}' | grep -E '^kw[a-z]*[0-9a-f]{6}-(srv|cli)$' || true); do
	pids=$(ip netns pids "$ns" 2>/dev/null || true)
	if [ -n "$pids" ]; then
		echo "netns $ns still has processes: $pids (not killed)" >&2
	fi
	ip netns delete "$ns" && echo "deleted netns $ns"
done
