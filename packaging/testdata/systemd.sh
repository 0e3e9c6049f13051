#!/usr/bin/env bash
# Runs the packaged unit under a real systemd: boots a container
# (systemd-nspawn, private network) whose root is this machine's /usr
# under a throw-away overlay and a copy of /etc, installs the .deb with
# dpkg inside it, and checks that the unit refuses to start unconfigured,
# that the daemon works inside its sandbox (a knock over a veth pair opens
# the port, IPv4 and IPv6 resets), that reload validates, that an upgrade
# restarts it, that after a reboot the boot guard has closed the port
# before network-pre.target with no daemon, and that removal leaves no
# rule. Run by TestUnitUnderSystemd; it boots only as far as basic.target,
# twice.
#
# Usage: unshare --mount --propagation private systemd.sh WORKDIR DEB UPGRADE_DEB
set -euo pipefail

work=$1 deb=$2 deb2=$3
root=$work/root

fail() {
	echo "FAIL: $*" >&2
	exit 1
}
step() { echo "== $*"; }

[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] || fail "not in a private mount namespace (run under unshare --mount)"

mkdir -p "$root/usr" "$work/upper" "$work/ovl"
mount -t overlay overlay -o "lowerdir=/usr,upperdir=$work/upper,workdir=$work/ovl" "$root/usr"
for l in bin sbin lib lib32 lib64 libx32; do
	if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$root/$l"; fi
done
cp -a /etc "$root/etc"
: >"$root/etc/machine-id"
rm -rf "$root/etc/knockwall" "$root/etc/systemd/system/multi-user.target.wants/knockwall.service"
mkdir -p "$root"/{proc,sys,dev,run,tmp,root,var/lib,var/log,var/tmp,var/cache}
cp -a /var/lib/dpkg "$root/var/lib/"
cp "$deb" "$deb2" "$root/root/"
deb=/root/$(basename "$deb") deb2=/root/$(basename "$deb2")

# basic.target: journald and systemctl, none of the host's own services
# (sysinit.target's included, and what they pull in: the boot guard).
nspawn='' init=''
boot() {
	SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -q -D "$root" -M knockwall-test \
		--private-network --register=no --keep-unit -b -- systemd.unit=basic.target \
		>>"$work/console.log" 2>&1 </dev/null &
	nspawn=$!
	init=
	for _ in $(seq 100); do
		init=$(pgrep -P "$nspawn" | head -1) || true
		[ -n "$init" ] && nsenter -t "$init" -a systemctl is-active --quiet basic.target 2>/dev/null && break
		init=
		sleep 0.3
	done
	[ -n "$init" ] || fail "the container did not boot: $(tail -20 "$work/console.log")"
}
trap '[ -z "$nspawn" ] || kill "$nspawn" 2>/dev/null; wait 2>/dev/null || true' EXIT
boot
inside() { nsenter -t "$init" -a "$@"; }
# The client namespace and the veth pair to it (gone with each boot).
veth() {
	inside sh -c '
ip link set lo up
ip netns add cl
ip link add v0 type veth peer name v1
ip link set v1 netns cl
ip addr add 10.99.0.1/24 dev v0 && ip addr add fd99::1/64 dev v0 nodad && ip link set v0 up
ip netns exec cl sh -c "ip addr add 10.99.0.2/24 dev v1 && ip addr add fd99::2/64 dev v1 nodad && ip link set v1 up && ip link set lo up"
'
}

step "install: the unit refuses to start"
inside dpkg --force-depends -i "$deb" >/dev/null 2>&1 || fail "dpkg -i"
inside systemctl start knockwall.service || fail "systemctl start (unconfigured) failed instead of skipping"
inside systemctl is-active --quiet knockwall.service && fail "started with the shipped configuration"
inside journalctl -u knockwall --no-pager | grep -q "not started: edit" || fail "no explanation in the journal"

step "configured: the daemon runs in its sandbox"
inside sed -i '/^# knockwall-unconfigured/d' /etc/knockwall/knockwall.yaml
inside systemctl start knockwall.service || fail "systemctl start"
for _ in $(seq 50); do
	inside journalctl -u knockwall --no-pager | grep -q 'msg=ready' && break
	sleep 0.2
done
inside systemctl is-active --quiet knockwall.service || fail "not active: $(inside journalctl -u knockwall --no-pager | tail)"
inside journalctl -u knockwall --no-pager | grep -q 'msg=ready' || fail "no ready line: $(inside journalctl -u knockwall --no-pager | tail)"

step "the daemon's start ran the guard first"
[ "$(inside systemctl show -P ActiveState knockwall-guard.service)" = active ] || fail "the guard unit is not active: $(inside journalctl -u knockwall-guard --no-pager | tail)"
[ "$(inside systemctl show -P ExecMainStatus knockwall-guard.service)" = 0 ] || fail "the guard unit exited $(inside systemctl show -P ExecMainStatus knockwall-guard.service)"
inside journalctl -u knockwall-guard --no-pager | grep -q "guard installed" || fail "the guard unit did not install the guard: $(inside journalctl -u knockwall-guard --no-pager | tail)"
inside systemctl show -P After knockwall.service | grep -qw knockwall-guard.service || fail "knockwall.service is not ordered after the guard"
inside systemctl show -P Before knockwall-guard.service | grep -qw network-pre.target || fail "the guard is not ordered before network-pre.target"

step "a knock over a veth pair opens the port"
veth
# The listener is a unit of the container's systemd, so the shutdown stops it.
inside systemd-run --quiet --unit=listener python3 -c '
import socket, time
socks = []
for fam, addr in ((socket.AF_INET, "10.99.0.1"), (socket.AF_INET6, "fd99::1")):
    s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((addr, 22)); s.listen(16); socks.append(s)
time.sleep(600)
' || fail "listener"
sleep 1
connect='
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET); s.settimeout(2)
try:
    s.connect((sys.argv[1], 22)); print("open")
except OSError as e:
    print(e.__class__.__name__)
'
[ "$(inside ip netns exec cl python3 -c "$connect" 10.99.0.1)" = ConnectionRefusedError ] || fail "IPv4: port 22 not closed (reset) before the knock"
[ "$(inside ip netns exec cl python3 -c "$connect" fd99::1)" = ConnectionRefusedError ] || fail "IPv6: port 22 not closed (knockwall's own reset, raw socket) before the knock"
inside ip netns exec cl knockwall knock 10.99.0.1 7000 8000 9000/udp >/dev/null || fail "knock"
sleep 0.2
[ "$(inside ip netns exec cl python3 -c "$connect" 10.99.0.1)" = open ] || fail "port 22 not open after the knock"

step "reload validates"
inside systemctl reload knockwall.service || fail "reload of a good configuration"
inside cp /etc/knockwall/knockwall.yaml /root/good.yaml
inside sed -i 's/closed: reject /closed: bogus /' /etc/knockwall/knockwall.yaml
inside systemctl reload knockwall.service 2>/dev/null && fail "reload accepted an invalid configuration"
inside systemctl is-active --quiet knockwall.service || fail "a failed reload stopped the daemon"
inside cp /root/good.yaml /etc/knockwall/knockwall.yaml

step "upgrade restarts the daemon"
pid=$(inside systemctl show -P MainPID knockwall.service)
inside dpkg --force-depends -i "$deb2" >/dev/null 2>&1 || fail "dpkg -i (upgrade)"
inside systemctl is-active --quiet knockwall.service || fail "not active after the upgrade"
[ "$(inside systemctl show -P MainPID knockwall.service)" != "$pid" ] || fail "the upgrade did not restart the daemon"

step "boot: the guard runs before network-pre.target, and closes the port with no daemon"
inside systemctl enable knockwall.service >/dev/null 2>&1 || fail "systemctl enable"
inside test -L /etc/systemd/system/sysinit.target.wants/knockwall-guard.service || fail "enabling knockwall did not enable the guard (Also=)"
inside systemctl poweroff || true
wait "$nspawn" 2>/dev/null || true
nspawn=
boot
# basic.target: multi-user.target's knockwall.service does not start.
inside systemctl is-active --quiet knockwall.service && fail "the daemon runs at basic.target"
[ "$(inside systemctl show -P ActiveState knockwall-guard.service)" = active ] || fail "the guard did not run at boot: $(inside journalctl -b -u knockwall-guard --no-pager | tail)"
inside journalctl -b -u knockwall-guard --no-pager | grep -q "guard installed" || fail "no guard installed at boot: $(inside journalctl -b -u knockwall-guard --no-pager | tail)"
guard_done=$(inside systemctl show -P ExecMainExitTimestampMonotonic knockwall-guard.service)
pre_up=$(inside systemctl show -P ActiveEnterTimestampMonotonic network-pre.target)
[ "${pre_up:-0}" -gt 0 ] || fail "network-pre.target was not reached at boot"
[ "$guard_done" -le "$pre_up" ] || fail "the guard finished at ${guard_done}us, after network-pre.target at ${pre_up}us"
echo "guard done at ${guard_done}us, network-pre.target at ${pre_up}us (monotonic)"
inside systemd-analyze critical-chain network-pre.target --no-pager 2>/dev/null || true
veth
[ "$(inside ip netns exec cl python3 -c "$connect" 10.99.0.1)" = TimeoutError ] || fail "IPv4: port 22 not dropped by the boot guard"
[ "$(inside ip netns exec cl python3 -c "$connect" fd99::1)" = TimeoutError ] || fail "IPv6: port 22 not dropped by the boot guard"

step "removal leaves no rule"
inside dpkg -r knockwall >/dev/null 2>&1 || fail "dpkg -r"
inside systemctl is-active --quiet knockwall.service && fail "still running after removal"
left=$(inside sh -c '{ iptables-save; ip6tables-save; nft list table inet knockwall; } 2>/dev/null | grep -ci knockwall' || true)
[ "$left" = 0 ] || fail "removal left $left knockwall rule lines"
if inside journalctl --no-pager | grep -iE 'knockwall.*(SIGSYS|seccomp|operation not permitted)'; then
	fail "the sandbox refused something (above)"
fi
echo "systemd: PASS"
