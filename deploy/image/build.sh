#!/usr/bin/env bash
# Builds the engramd OCI image without a Docker daemon, from Debian's own
# packages: debootstrap a minimal Debian 12 root, add the runtime libraries
# engramd and engramctl link (found with ldd and dpkg -S, installed as
# Debian packages), the two binaries (stripped) and the maintenance script,
# a non-root user (10001), and pack it with umoci. Needs root (debootstrap)
# and Debian's archive; the binaries come from build/ (scripts/build.sh).
#
#   deploy/image/build.sh [OUT_DIR]     # default: build/image
#
# Output: OUT_DIR/oci, an OCI image layout holding engramd:<version>
# (copy it to a registry with `skopeo copy oci:OUT_DIR/oci:engramd:<version>
# docker://REGISTRY/engram/engramd:<version>`), and OUT_DIR/engramd.oci.tar.
# deploy/image/smoke-test.sh runs it with runc.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(realpath -m "${1:-build/image}")
bin=build/bin
for tool in debootstrap umoci; do
  command -v "$tool" > /dev/null || { echo "build.sh: $tool missing: scripts/install-deps.sh --test" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "build.sh: debootstrap needs root" >&2; exit 1; }
[ -x "$bin/engramd" ] && [ -x "$bin/engramctl" ] || { echo "build.sh: build first (scripts/build.sh)" >&2; exit 1; }
version=$("$bin/engramd" --version | awk '{print $2}')
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# The Debian packages holding every shared library the binaries load.
packages=$(for binary in "$bin/engramd" "$bin/engramctl"; do
             ldd "$binary" | awk '$3 ~ /^\// {print $3}'
           done | sort -u | while read -r lib; do
             real=$(readlink -f "$lib")
             dpkg -S "$real" 2> /dev/null || dpkg -S "${real#/usr}" 2> /dev/null || dpkg -S "$lib"
           done | cut -d: -f1 | sort -u | paste -sd, -)
echo "build.sh: engramd $version; runtime packages: $packages"

rm -rf "$out"
mkdir -p "$out"
rootfs="$out/rootfs"
# minbase: essential packages only (bash and coreutils stay: the maintenance
# script and the preStop sleep use them); ca-certificates for TLS roots.
debootstrap --variant=minbase --include="ca-certificates,$packages" bookworm "$rootfs" "$mirror" \
  > "$out/debootstrap.log" 2>&1 || { tail -20 "$out/debootstrap.log" >&2; exit 1; }

install -m 0755 -s "$bin/engramd" "$rootfs/usr/local/bin/engramd"
install -m 0755 -s "$bin/engramctl" "$rootfs/usr/local/bin/engramctl"
install -m 0755 deploy/image/engram-maintenance "$rootfs/usr/local/bin/engram-maintenance"
echo "engram:x:10001:10001:engramd:/var/lib/engram:/usr/sbin/nologin" >> "$rootfs/etc/passwd"
echo "engram:x:10001:" >> "$rootfs/etc/group"
install -d -o 10001 -g 10001 -m 0750 "$rootfs/var/lib/engram"
# Nothing at run time needs apt's lists, caches, logs or documentation.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
# The binaries must find every library they link.
if chroot "$rootfs" ldd /usr/local/bin/engramd /usr/local/bin/engramctl | grep "not found"; then
  echo "build.sh: the image lacks a library (above)" >&2
  exit 1
fi

layout="$out/oci"
tag="engramd:$version"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$out/bundle" > /dev/null
rmdir "$out/bundle/rootfs"
mv "$rootfs" "$out/bundle/rootfs"
umoci repack --image "$layout:$tag" "$out/bundle"
umoci config --image "$layout:$tag" \
  --author "Engram" --os linux --architecture amd64 \
  --config.user 10001:10001 \
  --config.entrypoint /usr/local/bin/engramd \
  --config.workingdir /var/lib/engram \
  --config.volume /var/lib/engram \
  --config.exposedports 50051/tcp --config.exposedports 8081/tcp --config.exposedports 9464/tcp \
  --config.env PATH=/usr/local/bin:/usr/bin:/bin \
  --config.label "org.opencontainers.image.title=engramd" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.description=Engram, a memory database for AI agents" \
  --history.comment "deploy/image/build.sh: Debian 12 minbase, engramd $version"
umoci gc --layout "$layout"
rm -rf "$out/bundle"
tar -C "$layout" -cf "$out/engramd.oci.tar" .
echo "build.sh: $layout:$tag ($(du -sh "$layout" | cut -f1)); archive $out/engramd.oci.tar"
