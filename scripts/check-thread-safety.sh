#!/usr/bin/env bash
# Compiles the libraries' sources with clang's thread-safety analysis
# (-Wthread-safety, errors), syntax only, using the flags CMake recorded in
# build/compile_commands.json: the ABSL_GUARDED_BY / EXCLUSIVE_LOCKS_REQUIRED
# annotations are checked by a compiler, not decoration. GCC ignores them.
# Usage: scripts/check-thread-safety.sh [build dir]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build}"
CLANGXX="$(command -v clang++ || true)"
if [ -z "$CLANGXX" ]; then
  echo "check-thread-safety: clang++ not found (scripts/install-deps.sh installs clang)" >&2
  exit 1
fi
exec /usr/bin/python3 - "$BUILD_DIR/compile_commands.json" "$CLANGXX" "$(nproc)" <<'PY'
import json, os, shlex, subprocess, sys
from concurrent.futures import ThreadPoolExecutor

commands_path, clangxx, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
root = os.getcwd()
# The libraries: text, embed, storage, index (CPU sources; CUDA is nvcc's), retrieval, server.
checked_dirs = ("text/", "embed/", "storage/", "index/", "retrieval/", "server/")
entries = []
for entry in json.load(open(commands_path)):
    path = os.path.relpath(entry["file"], root)
    if path.startswith(checked_dirs) and path.endswith(".cc"):
        entries.append((path, entry))
if not entries:
    sys.exit("check-thread-safety: no library sources in " + commands_path)

def check(item):
    path, entry = item
    args = shlex.split(entry["command"])[1:]
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("-o", "-c"):
            skip = arg == "-o"
            continue
        if arg == entry["file"]:
            continue
        kept.append(arg)
    cmd = [clangxx, *kept, "-fsyntax-only", "-Wno-unknown-warning-option",
           "-Wthread-safety", "-Werror=thread-safety", entry["file"]]
    run = subprocess.run(cmd, cwd=entry["directory"], capture_output=True, text=True)
    return path, run.returncode, run.stderr

failed = 0
with ThreadPoolExecutor(max_workers=jobs) as pool:
    for path, code, stderr in pool.map(check, entries):
        if code != 0:
            failed += 1
            print(f"FAIL {path}\n{stderr}")
print(f"check-thread-safety: {len(entries) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
