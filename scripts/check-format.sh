#!/usr/bin/env bash
# Fails when a C++ source differs from clang-format's output (.clang-format).
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files '*.cc' '*.h' | xargs clang-format --dry-run --Werror
