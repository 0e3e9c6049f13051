# knockwall — common tasks. Most targets need root (namespaces, iptables).
export PATH := $(PATH):/usr/local/go/bin
GO      ?= go
BIN     := bin/knockwall
# Build tags of the shipped binary: nethttpomithttp2 leaves net/http's
# HTTP/2 out (the control socket and the metrics speak HTTP/1.1; see
# docs/decisions.md).
TAGS    := nethttpomithttp2
# The 32-bit MIPS builds also leave the cluster out (knockwall_omit_cluster):
# memberlist would put them over their size budget (bench/RESULTS.md).
ROUTER_TAGS := $(TAGS),knockwall_omit_cluster,knockwall_omit_qr
PKGS    := ./...
# A count, not a duration: -fuzztime=10s can end in a spurious "context
# deadline exceeded" from the fuzz coordinator (golang/go#75804).
FUZZTIME ?= 20000x
# Fuzz targets: package:Target, each run for FUZZTIME by `make fuzz`.
FUZZ    := ./cmd/knockwall:FuzzClientConfig ./cmd/knockwall:FuzzCheckOutput ./internal/nfq:FuzzProcess ./internal/inet:FuzzWalkIPv6 ./internal/inet:FuzzChecksum ./spa:FuzzParse ./internal/rst:FuzzBuild ./verdict:FuzzDecode ./verdict:FuzzDecide ./rules:FuzzParseKnock ./internal/config:FuzzDecode ./fwknop:FuzzVerify ./fwknop:FuzzPlaintext ./internal/knockdconf:FuzzConvert ./internal/state:FuzzDecode ./internal/cluster:FuzzDecode ./internal/firewall/ipt:FuzzParseSave ./internal/firewall/hostrules:FuzzIptables

.PHONY: all build cross cross-check dist deps demo test unit unit-mips vet vet32 fmt-check fuzz bench bench-e2e package-test clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -trimpath -ldflags='-s -w' -o $(BIN) ./cmd/knockwall

# Static binaries for router targets (no cgo anywhere). The 32-bit MIPS
# builds leave the cluster out (knockwall_omit_cluster): memberlist would
# put them over their 10 MB budget (bench/RESULTS.md).
cross:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -tags $(TAGS) -trimpath -ldflags='-s -w' -o bin/knockwall-linux-arm64 ./cmd/knockwall
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -tags $(TAGS) -trimpath -ldflags='-s -w' -o bin/knockwall-linux-armv7 ./cmd/knockwall
	CGO_ENABLED=0 GOOS=linux GOARCH=mipsle GOMIPS=softfloat $(GO) build -tags $(ROUTER_TAGS) -trimpath -ldflags='-s -w' -o bin/knockwall-linux-mipsle ./cmd/knockwall
	CGO_ENABLED=0 GOOS=linux GOARCH=mips GOMIPS=softfloat $(GO) build -tags $(ROUTER_TAGS) -trimpath -ldflags='-s -w' -o bin/knockwall-linux-mips ./cmd/knockwall

# Release artefacts in dist/: static binaries for linux amd64, arm64, armv7,
# mips and mipsle, a .deb for each (nfpm, a Go tool of this module), the
# client archives for macOS, FreeBSD (tar.gz) and Windows (zip), amd64 and
# arm64, and SHA256SUMS. VERSION=v1.2.3 overrides `git describe`.
dist:
	GO=$(GO) sh packaging/dist.sh

deps:
	bash scripts/deps.sh

# First contact: a private pair of namespaces, the daemon on the embedded
# example, and a walk through refused → knock → open → expired.
demo: deps build
	./$(BIN) demo

# Everything: formatting, vet, the client's cross-compilation (cross-check),
# unit and end-to-end tests (race detector on),
# the unit tests again as big-endian mips binaries (unit-mips), a short run
# of every fuzz target, and the package tests (package-test). Run as root;
# CI runs exactly this.
test: deps fmt-check vet vet32 cross-check unit unit-mips fuzz package-test

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi

# -tags genman: cmd/knockwall's man-page generator, which only the
# packaging builds (packaging/dist.sh). -tags knockwall_omit_cluster: the
# mips and mipsle builds, without the cluster.
vet:
	$(GO) vet $(PKGS)
	$(GO) vet -tags genman ./cmd/knockwall/
	$(GO) vet -tags knockwall_omit_cluster,knockwall_omit_qr ./cmd/knockwall/ ./internal/cluster/ ./internal/daemon/

# The client (knock, connect) is one binary on every desktop: ./cmd/knockwall
# compiles for each of CLIENT_TARGETS (only the machine's own is run, by the
# tests), and go vet checks every knockwall package it is built from, tests
# included, for macOS and Windows.
CLIENT_TARGETS := linux/amd64 linux/arm64 linux/arm linux/mips linux/mipsle \
	darwin/amd64 darwin/arm64 windows/amd64 windows/arm64 freebsd/amd64 freebsd/arm64
cross-check:
	@set -e; for t in $(CLIENT_TARGETS); do \
	  echo "cross-check: build $$t"; \
	  CGO_ENABLED=0 GOOS=$${t%/*} GOARCH=$${t#*/} GOARM=7 GOMIPS=softfloat \
	    $(GO) build -trimpath -o /dev/null ./cmd/knockwall; \
	done; \
	for os in darwin windows; do \
	  echo "cross-check: vet $$os"; \
	  CGO_ENABLED=0 GOOS=$$os $(GO) vet $$(GOOS=$$os $(GO) list -deps ./cmd/knockwall | grep '^github.com/knockwall/knockwall'); \
	done

# Routers are 32-bit and big-endian too: compile (with tests) for arm, and
# the daemon for big-endian mips, so int overflows and the like fail here.
vet32:
	GOARCH=arm GOARM=7 $(GO) vet ./...
	CGO_ENABLED=0 GOARCH=mips GOMIPS=softfloat $(GO) build -tags $(TAGS) -trimpath -o /dev/null ./cmd/knockwall

# The end-to-end tests run after the others, alone: their floods must not
# share the two CPUs with other packages' tests. -parallel 4: the tests of
# the three firewall backends run side by side; they mostly wait on the
# network.
unit:
	$(GO) test -race -count=1 $$($(GO) list $(PKGS) | grep -v /e2e$$)
	$(GO) test -race -count=1 -tags genman -run GenMan ./cmd/knockwall/
	$(GO) test -race -count=1 -parallel 4 ./e2e/

# Routers are big-endian 32-bit mips: the unit tests of every package but
# e2e, built for mips and run by qemu-user, which covers byte order and
# 64-bit atomic alignment at run time (no race detector there). Tests that
# need the kernel skip with the reason below (internal/kerneltest).
MIPS_NO_KERNEL := qemu-user runs these tests as mips binaries and passes no NETLINK_NETFILTER socket through; the native unit run covers the kernel
unit-mips:
	GOARCH=mips GOMIPS=softfloat CGO_ENABLED=0 KNOCKWALL_TEST_NO_KERNEL="$(MIPS_NO_KERNEL)" \
	  $(GO) test -count=1 -exec qemu-mips-static $$($(GO) list $(PKGS) | grep -v /e2e$$)

fuzz:
	@set -e; for f in $(FUZZ); do \
	  pkg=$${f%%:*}; name=$${f##*:}; \
	  echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
	  $(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

# Builds dist/ and checks it: contents, modes and owners of every .deb, an
# install, upgrade, removal and purge in a throw-away root and network
# namespace (root), the systemd unit, the man pages, the OpenWrt init script.
# Of the five targets it builds this machine's and big-endian mips (whose
# compilation vet32 has cached): every test, and the routers' size budget,
# in a fraction of `make dist`'s time. PACKAGE_TARGETS="amd64 arm64 armv7
# mips mipsle" checks them all.
# Of the six client archives it builds one of each format (PACKAGE_CLIENTS;
# cross-check has compiled them all).
PACKAGE_TARGETS ?= $(shell $(GO) env GOARCH) mips
PACKAGE_CLIENTS ?= darwin-arm64 windows-amd64
package-test:
	DIST_TARGETS="$(PACKAGE_TARGETS)" DIST_CLIENTS="$(PACKAGE_CLIENTS)" GO=$(GO) sh packaging/dist.sh
	DIST_DIR=$(CURDIR)/dist DIST_TARGETS="$(PACKAGE_TARGETS)" DIST_CLIENTS="$(PACKAGE_CLIENTS)" $(GO) test -count=1 -v ./packaging/

bench-e2e: build
	KNOCKWALL_BENCH_E2E=1 $(GO) test -count=1 -v -timeout 15m -run "^TestBench" ./e2e/

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./bench/ ./verdict/ ./tracker/ ./internal/nfq/

clean:
	rm -rf bin dist
