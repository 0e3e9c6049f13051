#!/usr/bin/env bash
# Installs knockwall's static rules by hand, for hosts that manage their own
# firewall (firewall.manage: false). Usage: install-rules.sh [CONFIG]
# The rules come from the same plan the daemon applies (`knockwall rules
# print`): an nft -f script (nftables) or a shell script of iptables-restore
# input (iptables), as firewall.backend says. Each replaces knockwall's rules
# atomically, so the guard is never absent and rerunning is safe.
set -euo pipefail
cfg=${1:-${KNOCKWALL_CONFIG:-/etc/knockwall/knockwall.yaml}}
kw=${KNOCKWALL_BIN:-knockwall}
script=$("$kw" rules print -c "$cfg")
case "$script" in
  '#!/usr/sbin/nft -f'*) printf '%s\n' "$script" | nft -f - ;;
  *) printf '%s\n' "$script" | sh -e ;;
esac
echo "knockwall static rules installed from $cfg"
