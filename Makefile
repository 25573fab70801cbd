# One entry point for people and CI. `make test` is what .ci/run calls.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: test envtest lint crd crd-check unit demo

## Everything CI checks: control-plane binaries, formatting, lints, generated files, all tests.
test: envtest lint crd-check
	ENVTEST_BIN_DIR="$$(scripts/envtest-build.sh)" $(CARGO) test --workspace --all-targets --no-fail-fast

## Build (once, then cached) kube-apiserver, etcd, kubectl and helm from Go modules.
envtest:
	scripts/envtest-build.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Regenerate crds/ from the Rust types.
crd:
	$(CARGO) run --quiet -- crd > crds/adobecredentials.yaml

## Fail when crds/ differs from what the code generates.
crd-check:
	diff -u crds/adobecredentials.yaml <($(CARGO) run --quiet -- crd) || { echo "crds/ is stale: run 'make crd'"; exit 1; }

## Unit tests only (no control plane).
unit:
	$(CARGO) test --workspace --lib
