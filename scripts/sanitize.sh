#!/usr/bin/env bash
# Builds the whole tree with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer (CUDA off) into build-asan/ and runs every test
# there: engramd, the C++ tests and the Python tests' engramd are all
# instrumented; any report fails the test that caused it.
#
# Not part of ./test.sh: the instrumented build alone takes about as long as
# the default CI run (2 cores), so together they would pass half an hour.
# Run it before landing changes to C++ code:
#   scripts/sanitize.sh            # configure once, build, run every test
#   scripts/sanitize.sh -R engine  # extra arguments go to ctest
# Libraries from Debian (RocksDB, gRPC, ICU) are not instrumented; container
# overflow checks are off because they need every module instrumented.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build-asan
SANITIZERS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DENGRAM_CUDA=OFF -DENGRAM_TSAN_TEST=OFF -DCMAKE_CXX_FLAGS="$SANITIZERS" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined"
fi
cmake --build "$BUILD_DIR" -j "$(nproc)"
export ASAN_OPTIONS="detect_container_overflow=0:abort_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=0"
# The lint checks and the libFuzzer/TSan builds are their own builds.
exec ctest --test-dir "$BUILD_DIR" -j 2 --timeout 1800 --output-on-failure \
  -E 'format_check|thread_safety_check|libfuzzer|tsan' "$@"
