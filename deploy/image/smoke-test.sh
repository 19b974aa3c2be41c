#!/usr/bin/env bash
# Runs the image deploy/image/build.sh made with runc, as Kubernetes would
# run it (user 10001, read-only root filesystem, no capabilities, a writable
# volume at /var/lib/engram, its own network namespace with loopback only),
# and checks: health SERVING; a space, a put and a search through engramctl
# inside the container; the maintenance script; SIGTERM drains and exits 0.
# Needs root (runc) and umoci.
#
#   deploy/image/smoke-test.sh [IMAGE_DIR]     # default: build/image
set -euo pipefail
cd "$(dirname "$0")/../.."
image=$(realpath -m "${1:-build/image}")
layout="$image/oci"
[ -d "$layout" ] || { echo "smoke-test.sh: no image at $layout: run deploy/image/build.sh" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "smoke-test.sh: runc needs root" >&2; exit 1; }
tag=$(umoci ls --layout "$layout" | head -1)
work=$(mktemp -d)
name="engram-smoke-$$"
cleanup() {
  runc kill "$name" KILL > /dev/null 2>&1 || true
  runc delete --force "$name" > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "smoke-test.sh: FAIL: $*" >&2; exit 1; }

umoci unpack --image "$layout:$tag" "$work/bundle" > /dev/null
mkdir -p "$work/volume"
chown 10001:10001 "$work/volume"
# The image's own config (user, entrypoint, environment), run the pod's way.
/usr/bin/python3 - "$work/bundle/config.json" "$work/volume" <<'EOF'
import json, sys
path, volume = sys.argv[1], sys.argv[2]
spec = json.load(open(path))
process = spec["process"]
assert process["user"]["uid"] == 10001, process["user"]
assert process["args"][0] == "/usr/local/bin/engramd", process["args"]
process["terminal"] = False
process["args"] += ["--listen", "127.0.0.1:50051"]
process["args"] += ["--data-dir", "/var/lib/engram/data", "--metrics-address", "127.0.0.1:9464"]
process["capabilities"] = {k: [] for k in ("bounding", "effective", "inheritable", "permitted",
                                            "ambient")}
process["noNewPrivileges"] = True
spec["root"]["readonly"] = True
spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != "/var/lib/engram"]
spec["mounts"].append({"destination": "/var/lib/engram", "type": "bind", "source": volume,
                       "options": ["rbind", "rw"]})
spec["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", "size=65536k"]})
namespaces = [n["type"] for n in spec["linux"]["namespaces"]]
assert "network" in namespaces, "the container must have its own network namespace"
json.dump(spec, open(path, "w"), indent=1)
EOF

runc run --bundle "$work/bundle" "$name" > "$work/engramd.log" 2>&1 &
runner=$!
inside() { runc exec "$name" "$@"; }
for _ in $(seq 1 150); do
  inside /usr/local/bin/engramctl health > /dev/null 2>&1 && break
  kill -0 "$runner" 2> /dev/null || { cat "$work/engramd.log" >&2; fail "engramd exited at startup"; }
  sleep 0.2
done
inside /usr/local/bin/engramctl health > /dev/null || fail "no SERVING health within 30 s"
echo "smoke-test.sh: health SERVING"
inside /usr/local/bin/engramctl -o json space create smoke --dim 4 --metric l2 > /dev/null \
  || fail "space create"
put=$(inside /usr/local/bin/engramctl -o json put --space smoke --agent alice \
        --text "the image works" --vector 1,2,3,4) || fail "put"
id=$(echo "$put" | /usr/bin/python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["ids"][0])')
found=$(inside /usr/local/bin/engramctl -o json search --space smoke --agent alice \
          --vector 1,2,3,4.5 -k 1) || fail "search"
echo "$found" | grep -q "\"id\":\"$id\"" || fail "search did not return episode $id: $found"
echo "smoke-test.sh: put episode $id and found it"
inside env ENGRAM_SHARD_ADDRESSES=127.0.0.1:50051 /usr/local/bin/engram-maintenance > /dev/null \
  || fail "engram-maintenance"
runc kill "$name" TERM
status=0
wait "$runner" || status=$?
grep -q "event=shutdown_done" "$work/engramd.log" || { cat "$work/engramd.log" >&2; fail "no drain"; }
[ "$status" -eq 0 ] || fail "engramd exited $status after SIGTERM"
echo "smoke-test.sh: SIGTERM drained, exit 0"
echo "smoke-test.sh: PASS ($tag)"
