#!/usr/bin/env bash
# Removes every rule knockwall owns (nftables and iptables), guard included:
# protected ports are then governed by the host's own firewall alone. This
# is what an uninstall runs. Usage: remove-rules.sh
set -euo pipefail
kw=${KNOCKWALL_BIN:-knockwall}
"$kw" rules remove
echo "knockwall static rules removed"
