// Package packaging holds knockwall's packaging: the .deb (nfpm.yaml,
// maintainer scripts, systemd unit, commented configuration) that
// `make dist` builds, and the OpenWrt package in openwrt/. Its tests check
// the built artefacts; `make package-test` builds dist/ and runs them.
package packaging
