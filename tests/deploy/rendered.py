"""What deploy/ renders to: kustomize's output parsed, and the facts the
deploy tests read from it (the StatefulSet, engramd's configuration as its
arguments layer the ConfigMap's files, ports and probes)."""

import os
import shutil
import subprocess

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
OVERLAYS = sorted(os.listdir(os.path.join(DEPLOY, "overlays")))
DEBIAN_KUBECTL = os.path.join(DEPLOY, "validate", "debian-kubectl", "usr", "bin", "kubectl")


def kubectls():
    """Every kubectl to render with: the one on PATH (required), and Debian
    12's own 1.20 when scripts/install-deps.sh --test could unpack it."""
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl is not on PATH: run scripts/install-deps.sh --test")
    return [found] + ([DEBIAN_KUBECTL] if os.access(DEBIAN_KUBECTL, os.X_OK) else [])


def render(overlay, kubectl=None):
    """The objects `kubectl kustomize deploy/overlays/<overlay>` renders."""
    done = subprocess.run([kubectl or kubectls()[0], "kustomize",
                           os.path.join(DEPLOY, "overlays", overlay)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"kustomize {overlay} failed: {done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one(objects, kind):
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_templates(objects):
    """(name, pod spec) of every pod the objects make."""
    for o in objects:
        if o["kind"] in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield o["metadata"]["name"], o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def engramd_container(statefulset):
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "engramd")


def env_value(container, name):
    for variable in container.get("env", []):
        if variable["name"] == name:
            return variable.get("value")
    raise AssertionError(f"{container['name']} has no {name}")


def config_files(objects):
    """The ConfigMap's files by their path in the engramd container."""
    statefulset = one(objects, "StatefulSet")
    mounts = {m["name"]: m["mountPath"] for m in engramd_container(statefulset)["volumeMounts"]}
    volumes = statefulset["spec"]["template"]["spec"]["volumes"]
    files = {}
    for volume in volumes:
        if "configMap" not in volume:
            continue
        config_map = next(o for o in objects if o["kind"] == "ConfigMap"
                          and o["metadata"]["name"] == volume["configMap"]["name"])
        for key, text in config_map["data"].items():
            files[os.path.join(mounts[volume["name"]], key)] = text
    return files


def config_paths(container):
    """The --config files of engramd's arguments, in order."""
    return [a.split("=", 1)[1] for a in container["args"] if a.startswith("--config=")]


def engramd_config(objects):
    """engramd's configuration as its --config arguments layer the files
    (later keys win), as a flat {dotted.key: value}."""
    container = engramd_container(one(objects, "StatefulSet"))
    files = config_files(objects)
    merged = {}

    def flatten(node, prefix=""):
        for key, value in (node or {}).items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                flatten(value, dotted + ".")
            else:
                merged[dotted] = value

    for path in config_paths(container):
        assert path in files, f"--config={path} is not a file of the mounted ConfigMap"
        flatten(yaml.safe_load(files[path]))
    return merged


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def container_port(container, name):
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)
