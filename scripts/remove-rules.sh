#!/usr/bin/env bash
# Removes knockwall's static rules, and only those. Usage: remove-rules.sh [CONFIG]
# Note: this also removes the guard, so protected ports are then governed by
# the host's own firewall alone.
set -euo pipefail
cfg=${1:-${KNOCKWALL_CONFIG:-/etc/knockwall/knockwall.yaml}}
kw=${KNOCKWALL_BIN:-knockwall}
"$kw" rules print -c "$cfg" --remove | sh
echo "knockwall static rules removed"
