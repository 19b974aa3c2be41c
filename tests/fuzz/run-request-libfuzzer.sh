#!/usr/bin/env bash
# Builds request_fuzz (tests/fuzz/request_fuzz.cc) with clang, libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer, every library of the tree
# instrumented for coverage, and runs it:
#   tests/fuzz/run-request-libfuzzer.sh BUILD_DIR SECONDS [JOBS]
# JOBS > 1 runs that many workers (libFuzzer -fork) sharing one corpus.
# Findings are written to BUILD_DIR/findings/; the corpus grows in
# BUILD_DIR/corpus/ (seeded from tests/fuzz/corpus/requests). The last lines
# of the output give the executions done ("stat::number_of_executed_units").
set -euo pipefail
SOURCE_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD_DIR="$1"
SECONDS_TO_RUN="$2"
JOBS="${3:-1}"
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  FLAGS="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
  CC=clang CXX=clang++ cmake -S "$SOURCE_DIR" -B "$BUILD_DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENGRAM_CUDA=OFF -DENGRAM_TSAN_TEST=OFF -DENGRAM_FUZZ=ON \
    -DCMAKE_CXX_FLAGS="$FLAGS" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
fi
cmake --build "$BUILD_DIR" --target request_fuzz -j "$(nproc)"
mkdir -p "$BUILD_DIR/corpus" "$BUILD_DIR/findings"
cp -n "$SOURCE_DIR"/tests/fuzz/corpus/requests/* "$BUILD_DIR/corpus/" 2>/dev/null || true
export ASAN_OPTIONS="detect_container_overflow=0:detect_leaks=0:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ARGS=(-max_total_time="$SECONDS_TO_RUN" -artifact_prefix="$BUILD_DIR/findings/" -print_final_stats=1
      -rss_limit_mb=4096 -timeout=30)
if [ "$JOBS" -gt 1 ]; then ARGS+=(-fork="$JOBS" -ignore_crashes=0); fi
exec "$BUILD_DIR/bin/request_fuzz" "${ARGS[@]}" "$BUILD_DIR/corpus"
