#!/usr/bin/env bash
# Installs knockwall's static rules by hand, for hosts that manage their own
# firewall (firewall.manage: false). Usage: install-rules.sh [CONFIG]
# The rules come from the same model the daemon uses (`knockwall rules print`).
# Knockwall rules already present are replaced, except the guard, which is
# kept (and completed), so protected ports stay closed throughout: safe to rerun.
set -euo pipefail
cfg=${1:-${KNOCKWALL_CONFIG:-/etc/knockwall/knockwall.yaml}}
kw=${KNOCKWALL_BIN:-knockwall}
"$kw" rules print -c "$cfg" --remove --keep-guard | sh
"$kw" rules print -c "$cfg" | sh
echo "knockwall static rules installed from $cfg"
