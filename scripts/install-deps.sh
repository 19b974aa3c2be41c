#!/usr/bin/env bash
# Installs the Debian 12 packages Engram builds and tests with, if missing.
set -euo pipefail
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
