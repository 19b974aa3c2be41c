#!/usr/bin/env bash
# Installs the Debian 12 packages Engram builds and tests with, if missing.
# --test (test.sh) adds what only the tests need: the tools that check
# deploy/ offline (yamllint; kubernetes-models from npm, pinned by
# deploy/validate/package-lock.json; Debian's own kubectl 1.20, unpacked
# beside it, not installed, to render with its older kustomize too) and
# those that build and run the OCI image (debootstrap, umoci, runc).
set -euo pipefail
cd "$(dirname "$0")/.."
TEST=0
[ "${1:-}" = "--test" ] && TEST=1
PACKAGES=(
  cmake ninja-build ccache g++ pkg-config clang-format git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  librocksdb-dev libabsl-dev libyaml-cpp-dev libcli11-dev libspdlog-dev prometheus-cpp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libicu-dev libstemmer-dev libxapian-dev
  libfaiss-dev libopenblas-dev gnuplot-nox zlib1g-dev libssl-dev clang libclang-rt-14-dev
  python3 python3-grpcio python3-protobuf python3-numpy
  python3-venv python3-pip python3-setuptools python3-wheel
  curl libcurl4-openssl-dev openssl
)
if ((TEST)); then
  PACKAGES+=(python3-yaml yamllint debootstrap umoci runc)
  # kubectl renders deploy/; these machines carry 1.32, and Debian's 1.20
  # would replace it, so Debian's is only installed where there is none.
  command -v kubectl > /dev/null || PACKAGES+=(kubernetes-client)
  # Node runs deploy/validate; these machines carry Node 20, Debian has 18.
  command -v node > /dev/null || PACKAGES+=(nodejs npm)
fi
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ((TEST)); then
  validate=deploy/validate
  if [ ! -d "$validate/node_modules/kubernetes-models" ]; then
    command -v npm > /dev/null || { echo "install-deps: npm (Node 20) is needed for $validate" >&2; exit 1; }
    echo "install-deps: npm ci in $validate (kubernetes-models)"
    (cd "$validate" && npm ci --no-audit --no-fund --silent)
  fi
  if [ ! -x "$validate/debian-kubectl/usr/bin/kubectl" ]; then
    echo "install-deps: unpacking Debian's kubernetes-client into $validate/debian-kubectl"
    work=$(mktemp -d)
    (cd "$work" && apt-get download kubernetes-client > /dev/null 2>&1) \
      && dpkg -x "$work"/kubernetes-client_*.deb "$validate/debian-kubectl" \
      || echo "install-deps: could not fetch Debian's kubernetes-client; rendering with kubectl only" >&2
    rm -rf "$work"
  fi
fi
