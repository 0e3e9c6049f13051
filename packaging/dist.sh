#!/bin/sh
# Builds knockwall's release artefacts into dist/ (make dist):
#   knockwall-linux-{amd64,arm64,armv7,mips,mipsle}  static, stripped binaries
#   knockwall_VERSION_{amd64,arm64,armhf,mips,mipsel}.deb
#   knockwall_VERSION_{darwin,freebsd}_{amd64,arm64}.tar.gz  the client
#   knockwall_VERSION_windows_{amd64,arm64}.zip              the client
#   SHA256SUMS
# and, in dist/build/, what the packages are made of (man pages, changelog).
# Needs only the Go toolchain and the module cache (`go mod download`): nfpm
# is a Go tool of this module. Run from the repository root.
set -eu

GO=${GO:-go}
out=dist
build=$out/build
maintainer='knockwall maintainers <maintainers@users.noreply.r-seed-8794551e.example>'

version=$(sh packaging/version.sh)
debversion=$(sh packaging/version.sh deb)
# Debian revision: the packaging's own version of one upstream version.
revision=1
# One timestamp for every file in every package and for the man pages, so a
# rebuild of the same commit gives the same bytes.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
ldflags="-s -w -X main.version=$version"

rm -rf "$out"
mkdir -p "$build/man"

# build NAME GOARCH [GOARM=7|GOMIPS=softfloat [TAGS]]: dist/knockwall-linux-NAME,
# with build tags nethttpomithttp2 and TAGS.
build() {
	echo "dist: build knockwall-linux-$1"
	env CGO_ENABLED=0 GOOS=linux GOARCH="$2" ${3:+"$3"} \
		"$GO" build -tags "nethttpomithttp2${4:+,$4}" -trimpath -ldflags="$ldflags" -o "$out/knockwall-linux-$1" ./cmd/knockwall
}

# DIST_TARGETS picks some of the five (make package-test builds two).
targets=${DIST_TARGETS:-amd64 arm64 armv7 mips mipsle}
want() { case " $targets " in *" $1 "*) return 0 ;; esac; return 1; }

echo "dist: knockwall $version (deb $debversion-$revision): $targets"
# One at a time: side by side they took as long on two cores, and a
# failure is easier to read.
if want amd64; then build amd64 amd64; fi
if want arm64; then build arm64 arm64; fi
if want armv7; then build armv7 arm GOARM=7; fi
# The 32-bit MIPS routers' builds leave the cluster and the QR encoder out
# (they would put them over their 10 MB and 3.5 MB gzip'd budget;
# bench/RESULTS.md).
if want mips; then build mips mips GOMIPS=softfloat knockwall_omit_cluster,knockwall_omit_qr; fi
if want mipsle; then build mipsle mipsle GOMIPS=softfloat knockwall_omit_cluster,knockwall_omit_qr; fi

# Man pages come from the CLI itself, run on this machine: a build with
# -tags genman, the only one with the gen-man command (the shipped
# binaries are built without it: docs/decisions.md).
CGO_ENABLED=0 "$GO" build -tags genman -trimpath -ldflags="$ldflags" -o "$build/knockwall" ./cmd/knockwall
"$build/knockwall" gen-man "$build/man"
gzip -9n "$build"/man/*.8

# changelog.Debian.gz: one entry for this build; the project's history is
# CHANGELOG.md.
date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
cat >"$build/changelog.yaml" <<YAML
- semver: "$debversion-$revision"
  date: "$date"
  packager: "$maintainer"
  deb:
    urgency: medium
    distributions: [unstable]
  changes:
    - note: "knockwall $version. See CHANGELOG.md in the source for what changed."
YAML

# pack NAME DEBIAN-ARCH: dist/knockwall_VERSION-REVISION_ARCH.deb.
pack() {
	echo "dist: package knockwall_$debversion-${revision}_$2.deb"
	DIST_DEB_ARCH=$2 DIST_VERSION=$debversion DIST_REVISION=$revision DIST_BINARY=$out/knockwall-linux-$1 \
		"$GO" tool nfpm pkg --packager deb --config packaging/nfpm.yaml --target "$out/" >/dev/null
}
if want amd64; then pack amd64 amd64; fi
if want arm64; then pack arm64 arm64; fi
if want armv7; then pack armv7 armhf; fi
if want mips; then pack mips mips; fi
if want mipsle; then pack mipsle mipsel; fi

# Client archives: knockwall where people knock from (knock, connect,
# client init; the daemon's commands exist on Linux only). Each holds the
# binary and, where the tree has them, README.md, LICENSE and
# docs/clients.md, in a directory of the archive's name; owners, modes and
# times fixed, so a rebuild of the same commit gives the same bytes.
# DIST_CLIENTS picks some of OS-ARCH (make package-test builds two; ""
# none).
clients=${DIST_CLIENTS-darwin-amd64 darwin-arm64 freebsd-amd64 freebsd-arm64 windows-amd64 windows-arm64}
client() {
	os=${1%-*} arch=${1#*-}
	name=knockwall_${version#v}_${os}_$arch
	dir=$build/clients/$name
	exe=knockwall
	if [ "$os" = windows ]; then exe=knockwall.exe; fi
	echo "dist: client $name"
	mkdir -p "$dir"
	env CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" \
		"$GO" build -trimpath -ldflags="$ldflags" -o "$dir/$exe" ./cmd/knockwall
	for f in README.md LICENSE docs/clients.md; do
		if [ -f "$f" ]; then cp "$f" "$dir/"; fi
	done
	chmod 0755 "$dir" "$dir/$exe"
	find "$dir" -type f ! -name "$exe" -exec chmod 0644 {} +
	if [ "$os" = windows ]; then
		python3 - "$build/clients" "$name" "$out/$name.zip" "$SOURCE_DATE_EPOCH" <<'PY'
import os, sys, time, zipfile
root, name, dest, epoch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
stamp = time.gmtime(max(epoch, 315532800))[:6]  # zip times start in 1980
with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
    for f in sorted(os.listdir(os.path.join(root, name))):
        info = zipfile.ZipInfo(name + "/" + f, stamp)
        info.external_attr = (0o100755 if f.endswith(".exe") else 0o100644) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(os.path.join(root, name, f), "rb") as src:
            z.writestr(info, src.read())
PY
	else
		tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
			-C "$build/clients" -cf - "$name" | gzip -9n >"$out/$name.tar.gz"
	fi
}
for c in $clients; do client "$c"; done

(
	cd "$out"
	set -- knockwall-linux-* ./*.deb
	for f in knockwall_*.tar.gz knockwall_*.zip; do
		if [ -e "$f" ]; then set -- "$@" "$f"; fi
	done
	sha256sum "$@" | sed 's| \./| |' >SHA256SUMS
)
echo "dist: done"
ls -l "$out"
