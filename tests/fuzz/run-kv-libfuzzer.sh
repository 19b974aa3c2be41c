#!/usr/bin/env bash
# Builds the KV fuzz target with clang's libFuzzer and AddressSanitizer and
# runs it for a short while on the seed corpus (ctest runs it with 20 s).
# Usage: run-kv-libfuzzer.sh BUILD_DIR SECONDS
# Only the target's own sources are compiled with clang; Abseil and OpenSSL
# come from Debian's shared libraries.
set -euo pipefail
src="$(cd "$(dirname "$0")/../.." && pwd)"
out="$1/kv_fuzz_libfuzzer"
seconds="${2:-20}"
if ! command -v clang++ >/dev/null; then
  echo "clang++ not installed (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
# shellcheck disable=SC2046
clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I "$src" "$src/tests/fuzz/kv_fuzz.cc" \
  "$src/storage/kvcache/safetensors.cc" "$src/storage/kvcache/save_assembler.cc" \
  "$src/storage/kvcache/kv_codec.cc" "$src/storage/kvcache/kv_model.cc" "$src/fileio/atomic_file.cc" \
  -ffp-contract=off $(pkg-config --libs absl_statusor absl_strings) -lcrypto -o "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$src"/tests/fuzz/corpus/kv/* "$work"/
# The seeds are copied so that new inputs libFuzzer finds stay out of the repo.
"$out" -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 "$work" 2>&1 | tail -15
