#!/usr/bin/env bash
# The OCI image: built from Debian's packages (deploy/image/build.sh) and
# smoke-tested with runc (deploy/image/smoke-test.sh). Both need root;
# without it the test is skipped (exit 77), saying so.
# Usage: image_test.sh BUILD_DIR
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "image_test: skipped: debootstrap and runc need root" >&2
  exit 77
fi
here=$(dirname "$0")
"$here/../../deploy/image/build.sh" "$1/image"
"$here/../../deploy/image/smoke-test.sh" "$1/image"
