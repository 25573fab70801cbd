#!/usr/bin/env bash
# Builds the binaries the tests run (kube-apiserver, etcd, kubectl, helm, and Prometheus' promtool
# for the chart's alert rules) from the Go modules pinned under tests/envtest/, into a cache keyed
# by version. Idempotent: binaries that are already cached are not rebuilt. Prints the cache
# directory on stdout.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
kube_version=v1.37.2
etcd_version=v3.6.16
helm_version=v3.22.0
# Prometheus 3.16.0: its Go module github.com/prometheus/prometheus tags 3.x.y as v0.3xx.y.
prometheus_version=v0.316.0
cache=${ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/adobe-credential-operator/envtest/${kube_version#v}}
mkdir -p "$cache"

# The pinned modules need Go >= 1.26; never let the build reach out for another toolchain.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

build() { # build <binary> <module dir> <package> [ldflags]
  local bin=$1 dir=$2 pkg=$3 ldflags=${4:-}
  if [ -x "$cache/$bin" ]; then return 0; fi
  echo "building $bin ($pkg) into $cache" >&2
  local start=$SECONDS
  (cd "$root/tests/envtest/$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$cache/$bin.tmp" "$pkg")
  mv "$cache/$bin.tmp" "$cache/$bin"
  echo "built $bin in $((SECONDS - start))s" >&2
}

minor=${kube_version#v1.}; minor=${minor%%.*}
kube_ldflags="-X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
build etcd etcd go.etcd.io/etcd/server/v3 "-X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version"
build kube-apiserver kube k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
build kubectl kube k8s.io/kubernetes/cmd/kubectl "$kube_ldflags"
build helm helm helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$helm_version"
prometheus_release=${prometheus_version#v0.}; prometheus_release="3.${prometheus_release#3}"
build promtool promtool github.com/prometheus/prometheus/cmd/promtool \
  "-X github.com/prometheus/common/version.Version=$prometheus_release -X github.com/prometheus/common/version.Revision=$prometheus_version"
echo "$cache"
