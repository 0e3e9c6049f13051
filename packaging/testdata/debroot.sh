#!/usr/bin/env bash
# Installs, upgrades, removes, reinstalls and purges a knockwall .deb in a
# throw-away root, with its maintainer scripts running for real (dpkg
# chroots into the root to run them). Run by TestDebLifecycle inside
# `unshare --mount --net --fork`: the mounts and the firewall rules made
# here live in namespaces of their own, and the host's root file system,
# dpkg database and firewall are never touched.
#
# Usage: debroot.sh WORKDIR DEB UPGRADE_DEB
#   UPGRADE_DEB is the same package with a higher version.
set -euo pipefail

work=$1 deb=$2 deb2=$3
root=$work/root
conf=$root/etc/knockwall/knockwall.yaml

fail() {
	echo "FAIL: $*" >&2
	exit 1
}
step() { echo "== $*"; }

# Refuse to run anywhere but in namespaces of our own.
[ "$(readlink /proc/self/ns/net)" != "$(readlink /proc/1/ns/net)" ] || fail "not in a private network namespace (run under unshare --net)"
[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] || fail "not in a private mount namespace (run under unshare --mount)"

# The root: the host's /usr under a throw-away overlay (so the maintainer
# scripts find sh, grep and iptables, and whatever dpkg writes lands in
# $work), and an empty dpkg database.
mkdir -p "$root"/{usr,etc,proc,dev,run,tmp,var/log,var/lib/dpkg/info,var/lib/dpkg/updates} "$work/upper" "$work/ovl"
mount -t overlay overlay -o "lowerdir=/usr,upperdir=$work/upper,workdir=$work/ovl" "$root/usr"
for l in bin sbin lib lib32 lib64 libx32; do
	if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$root/$l"; fi
done
: >"$root/var/lib/dpkg/status"
touch "$root/dev/null"
mount --bind /dev/null "$root/dev/null"
mount -t proc proc "$root/proc"
# What the scripts, the loader and iptables look up in /etc.
cp -a /etc/passwd /etc/group /etc/protocols /etc/services /etc/alternatives \
	/etc/ld.so.cache /etc/ld.so.conf /etc/ld.so.conf.d "$root/etc/"

dpkg_() { dpkg --root="$root" --force-depends "$@"; }
version() { dpkg-query --root="$root" -W -f='${Version}' knockwall; }
status() { dpkg-query --root="$root" -W -f='${Status}' knockwall 2>/dev/null || true; }
mode() { stat -c '%a %U:%G' "$1"; }
rules() { { iptables-save; ip6tables-save; nft list table inet knockwall; } 2>/dev/null | grep -ci knockwall || true; }
guard() { iptables -w -t security -S KNOCKWALL-GUARD >/dev/null 2>&1; }

step "install $(basename "$deb")"
out=$(dpkg_ -i "$deb" 2>&1) || fail "dpkg -i: $out"
echo "$out"
[ "$(status)" = "install ok installed" ] || fail "status after install: $(status)"
grep -q "will not start yet" <<<"$out" || fail "postinst did not tell the operator what to do"
[ "$(mode "$root/usr/sbin/knockwall")" = "755 root:root" ] || fail "binary: $(mode "$root/usr/sbin/knockwall")"
[ "$(mode "$conf")" = "600 root:root" ] || fail "config: $(mode "$conf")"
[ "$(mode "$root/lib/systemd/system/knockwall.service")" = "644 root:root" ] || fail "unit: $(mode "$root/lib/systemd/system/knockwall.service")"
[ "$(mode "$root/lib/systemd/system/knockwall-guard.service")" = "644 root:root" ] || fail "guard unit: $(mode "$root/lib/systemd/system/knockwall-guard.service")"
[ -s "$root/usr/share/man/man8/knockwall-run.8.gz" ] || fail "no man page knockwall-run.8.gz"
head -1 "$conf" | grep -q '^# knockwall-unconfigured' || fail "a fresh install's config lacks the knockwall-unconfigured line"
chroot "$root" knockwall config check >/dev/null || fail "the installed binary rejects the shipped config"

step "the daemon's rules in place (as a running daemon with keep_guard would leave them)"
# iptables: the nft script's queue statements need nft_queue, which not every
# test kernel has; the removal below must find rules in either.
chroot "$root" sh -c 'knockwall rules print --backend iptables | sh' || fail "installing the static rules"
guard || fail "no guard chain after installing the rules"
before=$(rules)

step "operator edits the config"
sed -i -e '/^# knockwall-unconfigured/d' -e 's/open_for: 30s /open_for: 45s /' "$conf"
grep -q 'open_for: 45s' "$conf" || fail "test edit did not apply"

step "upgrade to $(basename "$deb2")"
v1=$(version)
out=$(dpkg_ -i "$deb2" 2>&1) || fail "dpkg -i (upgrade): $out"
echo "$out"
[ "$(version)" != "$v1" ] || fail "version unchanged after upgrade: $v1"
grep -q "will not start yet" <<<"$out" && fail "postinst printed first-install instructions on upgrade"
guard || fail "the upgrade removed the guard"
[ "$(rules)" = "$before" ] || fail "the upgrade changed the rules: $before knockwall lines before, $(rules) after"
grep -q 'open_for: 45s' "$conf" || fail "the upgrade overwrote the operator's config"
grep -q '^# knockwall-unconfigured' "$conf" && fail "the upgrade brought the knockwall-unconfigured line back"
[ "$(mode "$conf")" = "600 root:root" ] || fail "config after upgrade: $(mode "$conf")"

step "remove"
mkdir -p "$root/var/lib/knockwall" && echo '{}' >"$root/var/lib/knockwall/state.json"
out=$(dpkg_ -r knockwall 2>&1) || fail "dpkg -r: $out"
echo "$out"
[ "$(status)" = "deinstall ok config-files" ] || fail "status after remove: $(status)"
[ "$(rules)" = 0 ] || fail "removal left $(rules) knockwall rule lines: $({ iptables-save; ip6tables-save; } | grep -i knockwall)"
[ ! -e "$root/usr/sbin/knockwall" ] || fail "removal left the binary"
grep -q 'open_for: 45s' "$conf" || fail "removal (not purge) lost the operator's config"

step "reinstall after remove"
out=$(dpkg_ -i "$deb2" 2>&1) || fail "dpkg -i (reinstall): $out"
grep -q 'open_for: 45s' "$conf" || fail "reinstall lost the operator's config"
grep -q '^# knockwall-unconfigured' "$conf" && fail "reinstall brought the knockwall-unconfigured line back"

step "purge"
wants=$root/etc/systemd/system/multi-user.target.wants
swants=$root/etc/systemd/system/sysinit.target.wants
mkdir -p "$wants" "$swants" # systemctl enable knockwall (Also= the guard)
ln -s /lib/systemd/system/knockwall.service "$wants/knockwall.service"
ln -s /lib/systemd/system/knockwall-guard.service "$swants/knockwall-guard.service"
out=$(dpkg_ -P knockwall 2>&1) || fail "dpkg -P: $out"
echo "$out"
[ -z "$(status)" ] || [ "$(status)" = "unknown ok not-installed" ] || fail "status after purge: $(status)"
[ ! -e "$root/etc/knockwall" ] || fail "purge left /etc/knockwall: $(ls -la "$root/etc/knockwall")"
[ ! -e "$root/var/lib/knockwall" ] || fail "purge left /var/lib/knockwall"
[ ! -L "$wants/knockwall.service" ] || fail "purge left the systemctl enable link"
[ ! -L "$swants/knockwall-guard.service" ] || fail "purge left the guard's systemctl enable link"

step "install after purge"
out=$(dpkg_ -i "$deb" 2>&1) || fail "dpkg -i (after purge): $out"
grep -q "will not start yet" <<<"$out" || fail "postinst did not tell the operator what to do after a purge"
head -1 "$conf" | grep -q '^# knockwall-unconfigured' || fail "install after purge lacks the knockwall-unconfigured line"

echo "debroot: PASS"
