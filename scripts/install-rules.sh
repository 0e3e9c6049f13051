#!/usr/bin/env bash
# Installs knockwall's static rules by hand, for hosts that manage their own
# firewall (firewall.manage: false). Usage: install-rules.sh [CONFIG]
# The rules come from the same model the daemon uses (`knockwall rules print`).
# Any knockwall rules already present are removed first, so it is safe to rerun.
set -euo pipefail
cfg=${1:-${KNOCKWALL_CONFIG:-/etc/knockwall/knockwall.yaml}}
kw=${KNOCKWALL_BIN:-knockwall}
"$kw" rules print -c "$cfg" --remove | sh
"$kw" rules print -c "$cfg" | sh
echo "knockwall static rules installed from $cfg"
