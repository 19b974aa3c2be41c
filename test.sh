#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (C++ unit,
# integration and crash tests, and the Python client tests) through ctest.
# ENGRAM_CRASH_CYCLES=N raises the kill -9 cycles of the durability test.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh --test
scripts/build.sh
cd build
ctest --output-on-failure --timeout 600 -j2 "$@"
