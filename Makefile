# One entry point for people and CI. `make test` is what .ci/run calls.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: test envtest lint crd crd-check chart-check unit demo bench bench-cluster

## Everything CI checks: control-plane binaries, formatting, lints, generated files, all tests.
test: envtest lint crd-check chart-check
	ENVTEST_BIN_DIR="$$(scripts/envtest-build.sh)" $(CARGO) test --workspace --all-targets --no-fail-fast

## Build (once, then cached) kube-apiserver, etcd, kubectl, helm and promtool from Go modules.
envtest:
	scripts/envtest-build.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

CRDS := adobecredentials clusteradobecredentials

## Regenerate crds/ (and the chart's copy) from the Rust types.
crd:
	for crd in $(CRDS); do \
		$(CARGO) run --quiet -- crd $$crd > crds/$$crd.yaml; \
		cp crds/$$crd.yaml charts/adobe-credential-operator/crds/$$crd.yaml; \
	done

## Fail when crds/ differs from what the code generates.
crd-check:
	for crd in $(CRDS); do \
		diff -u crds/$$crd.yaml <($(CARGO) run --quiet -- crd $$crd) || { echo "crds/ is stale: run 'make crd'"; exit 1; }; \
	done

## Fail when the Helm chart's CRD copies differ from crds/, or the chart does not lint (defaults,
## and with alerts, dashboard and ServiceMonitor on; tests/chart.rs lints every option on and off).
chart-check:
	for crd in $(CRDS); do \
		cmp -s crds/$$crd.yaml charts/adobe-credential-operator/crds/$$crd.yaml \
			|| { echo "the chart's CRDs are stale: cp crds/*.yaml charts/adobe-credential-operator/crds/"; exit 1; }; \
	done
	"$$(scripts/envtest-build.sh)/helm" lint --strict charts/adobe-credential-operator \
		--kube-version "$$(sed -n 's/^kube_version=v//p' scripts/envtest-build.sh)"
	"$$(scripts/envtest-build.sh)/helm" lint --strict charts/adobe-credential-operator \
		--kube-version "$$(sed -n 's/^kube_version=v//p' scripts/envtest-build.sh)" \
		--set prometheusRule.enabled=true,grafanaDashboard.enabled=true,serviceMonitor.enabled=true

## The operator's main job on a local default: control plane, fake IMS, CRD, the Firefly example,
## the operator minting into a Secret; prints `kubectl get adobecredentials` and the Secret's keys.
demo:
	$(CARGO) build --quiet --bin adobe-credential-operator
	ENVTEST_BIN_DIR="$$(scripts/envtest-build.sh)" $(CARGO) run --quiet --example quickstart

## Scale and speed benchmark (release builds): N credentials on one operator replica against the
## local control plane and the fake IMS; prints the figures next to their targets. More flags:
## `make bench N=10000 BENCH_ARGS="--steady-seconds 600"` (see `--help`).
N ?= 1000
BENCH_ARGS ?=
bench:
	$(CARGO) build --release --bin adobe-credential-operator
	ENVTEST_BIN_DIR="$$(scripts/envtest-build.sh)" $(CARGO) run --release --example bench_scale -- --credentials $(N) $(BENCH_ARGS)

## One ClusterAdobeCredential serving N namespaces (release builds): time until all hold the
## token, mints, copy writes, rotation latency per namespace, restart, operator RSS.
bench-cluster:
	$(CARGO) build --release --bin adobe-credential-operator
	ENVTEST_BIN_DIR="$$(scripts/envtest-build.sh)" $(CARGO) run --release --example bench_cluster -- --namespaces $(N)

## Unit tests only (no control plane).
unit:
	$(CARGO) test --workspace --lib
