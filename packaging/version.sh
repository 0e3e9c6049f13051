#!/bin/sh
# Prints knockwall's version: `git describe` of the working tree, or 0.0.0
# outside a git checkout (a source tarball). With "deb", prints it as a
# Debian version that sorts the way the commits do:
#   v1.2.3               -> 1.2.3
#   v1.2.3-4-gabc1234    -> 1.2.3+4.gabc1234
#   abc1234 (no tag yet) -> 0.0.0~git20261129150405.abc1234 (commit time, UTC)
#   ...-dirty            -> ...+dirty (or .dirty)
# VERSION in the environment overrides git.
set -eu

v=${VERSION:-}
if [ -z "$v" ]; then
	v=$(git describe --tags --always --dirty 2>/dev/null) || v=0.0.0
fi
if [ "${1:-}" != deb ]; then
	printf '%s\n' "$v"
	exit 0
fi

dirty=
case $v in
*-dirty)
	dirty=dirty
	v=${v%-dirty}
	;;
esac
case $v in
v[0-9]* | [0-9]*.*)
	v=${v#v}
	# 1.2.3-4-gabc1234: commits after a tag sort after it.
	v=$(printf '%s\n' "$v" | sed -E 's/-([0-9]+)-(g[0-9a-f]+)$/+\1.\2/')
	sep=+
	case $v in *+*) sep=. ;; esac
	;;
*)
	# No tag: a commit hash. The commit time orders builds of successive
	# commits, and "~" sorts them before the first release.
	when=$(TZ=UTC git log -1 --date=format-local:%Y%m%d%H%M%S --format=%cd 2>/dev/null) || when=0
	v=0.0.0~git$when.$v
	sep=.
	;;
esac
[ -z "$dirty" ] || v=$v$sep$dirty
printf '%s\n' "$v"
