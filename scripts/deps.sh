#!/usr/bin/env bash
# Installs what knockwall's tests and demo need on a Debian machine: the
# firewall and namespace tools, the knockd package (for its stock `knock`
# client, used by the end-to-end tests), OpenSSH (server and client, for
# the ssh ProxyCommand end-to-end tests), the stock fwknop client (which made
# fwknop/testdata; fwknop/testdata/make-vectors.sh remakes them), the
# packaging tests' tools, and the Go modules (nfpm, a Go tool of the module,
# included).
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"

need=()
command -v iptables   >/dev/null || need+=(iptables)
command -v ip         >/dev/null || need+=(iproute2)
command -v knock      >/dev/null || need+=(knockd)
command -v fwknop     >/dev/null || need+=(fwknop-client)
command -v nft        >/dev/null || need+=(nftables)
command -v gcc        >/dev/null || need+=(gcc)   # go test -race needs cgo
# e2e/ssh_test.go: the real OpenSSH through `knockwall connect`.
[ -x /usr/sbin/sshd ]              || need+=(openssh-server)
command -v ssh        >/dev/null || need+=(openssh-client)
command -v socat      >/dev/null || need+=(socat) # e2e: a port forward in user space
# make package-test: lint the maintainer and init scripts, verify the
# systemd unit and run it in a systemd container, render the man pages.
command -v shellcheck      >/dev/null || need+=(shellcheck)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v systemd-nspawn  >/dev/null || need+=(systemd-container)
command -v python3         >/dev/null || need+=(python3)
command -v groff           >/dev/null || need+=(groff-base)
command -v man             >/dev/null || need+=(man-db)
# make unit-mips: the unit tests as big-endian 32-bit mips binaries, run
# by qemu-user (go test -exec qemu-mips-static; no binfmt needed).
command -v qemu-mips-static >/dev/null || need+=(qemu-user-static)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing ${need[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  echo "deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# knockd's and openssh-server's packages start their services on some
# systems; knockwall's tests never use them (e2e/ssh_test.go runs its own
# sshd in a namespace), and they are not started here.

command -v go >/dev/null || { echo "deps: Go is not installed (need Go 1.26 at /usr/local/go or on PATH)" >&2; exit 1; }
go mod download
