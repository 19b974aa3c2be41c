#!/usr/bin/env bash
# Installs what is missing (Debian packages), builds Release into build/ and
# starts engramd with its embedded default config: data in ./engram-data,
# gRPC on 127.0.0.1:50051, Prometheus metrics on 127.0.0.1:9464.
# Extra arguments go to engramd (e.g. ./run.sh --config engramd.yaml).
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
scripts/build.sh
exec build/bin/engramd "$@"
