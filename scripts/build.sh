#!/usr/bin/env bash
# Configures (once) and builds Engram in Release mode into build/ with Ninja
# (and ccache when installed). Binaries land in build/bin/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build build -j "$(nproc)"
