"""deploy/ checked offline, every overlay: yamllint; kustomize rendering with
every kubectl at hand (the same objects from each); every rendered object
against its Kubernetes schema with unknown fields refused
(deploy/validate/validate.js); and the rules the manifests promise
(deploy/README.md): shards and their count, probes on the health port,
the shutdown budget, restricted pods, the disruption budget, the network
policy and the maintenance job.
"""

import copy
import json
import os
import re
import subprocess
import sys
import unittest


sys.path.insert(0, os.path.dirname(__file__))
from rendered import (DEPLOY, OVERLAYS, config_paths, container_port, engramd_config,  # noqa: E402
                      engramd_container, env_value, kubectls, one, pod_templates, port_of,
                      render)

VALIDATOR = os.path.join(DEPLOY, "validate", "validate.js")


def validate(objects):
    """(exit code, problems) of validate.js over the objects."""
    done = subprocess.run(["node", VALIDATOR], input=json.dumps(objects), capture_output=True,
                          text=True, timeout=120)
    return done.returncode, done.stdout.splitlines()


def normalized(objects):
    """Objects compared across kustomize versions: ConfigMap names without
    their content hash (each version hashes differently), env lists by name
    (a strategic merge may reorder them) and no empty label or annotation
    maps (the older one adds them to merged ConfigMaps)."""
    text = json.dumps(objects, sort_keys=True)
    text = re.sub(r'"(engramd-config)-[a-z0-9]{10}"', r'"\1"', text)
    out = json.loads(text)
    for o in out:
        for key in ("labels", "annotations"):
            if o["metadata"].get(key) == {}:
                del o["metadata"][key]
        for _, spec in pod_templates([o]):
            for c in spec.get("containers", []):
                c.get("env", []).sort(key=lambda e: e["name"])
    return sorted(out, key=lambda o: (o["kind"], o["metadata"]["name"]))


class ManifestTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.rendered = {overlay: render(overlay) for overlay in OVERLAYS}

    def test_overlays_exist(self):
        self.assertIn("dev", OVERLAYS)
        self.assertIn("production", OVERLAYS)

    def test_yamllint(self):
        done = subprocess.run(["yamllint", "--strict", "."], cwd=DEPLOY, capture_output=True,
                              text=True, timeout=120)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_every_kubectl_renders_the_same_objects(self):
        renderers = kubectls()
        if len(renderers) == 1:
            self.skipTest("Debian's kubectl 1.20 is not unpacked (scripts/install-deps.sh --test)")
        for overlay in OVERLAYS:
            first = normalized(self.rendered[overlay])
            for kubectl in renderers[1:]:
                self.assertEqual(normalized(render(overlay, kubectl)), first,
                                 f"{kubectl} renders {overlay} differently")

    def test_every_object_passes_its_schema_without_unknown_fields(self):
        for overlay, objects in self.rendered.items():
            code, problems = validate(objects)
            self.assertEqual((code, problems), (0, []), overlay)

    def test_the_validator_refuses_typos_and_bad_types(self):
        objects = copy.deepcopy(self.rendered["production"])
        statefulset = one(objects, "StatefulSet")
        engramd_container(statefulset)["readinessProbe"]["grpc"]["prot"] = 8081
        statefulset["spec"]["podManagmentPolicy"] = "Parallel"
        one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] = [1]
        code, problems = validate(objects)
        self.assertEqual(code, 1)
        text = "\n".join(problems)
        self.assertIn("unknown field .spec.template.spec.containers[0].readinessProbe.grpc.prot",
                      text)
        self.assertIn("unknown field .spec.podManagmentPolicy", text)
        self.assertIn("PodDisruptionBudget/engram: /spec/maxUnavailable", text)
        # Free-form maps (labels, resources) take any key.
        objects = copy.deepcopy(self.rendered["production"])
        one(objects, "StatefulSet")["metadata"]["labels"]["anything.example/at-all"] = "yes"
        self.assertEqual(validate(objects), (0, []))

    def test_shards_ports_probes_and_shutdown_budget(self):
        for overlay, objects in self.rendered.items():
            with self.subTest(overlay=overlay):
                statefulset = one(objects, "StatefulSet")
                spec = statefulset["spec"]
                pod = spec["template"]["spec"]
                engramd = engramd_container(statefulset)
                config = engramd_config(objects)
                # Shards: one volume each, started together, count == replicas everywhere.
                self.assertEqual(spec["podManagementPolicy"], "Parallel")
                self.assertEqual([t["metadata"]["name"] for t in spec["volumeClaimTemplates"]],
                                 ["data"])
                replicas = spec["replicas"]
                self.assertEqual(int(env_value(engramd, "SHARD_COUNT")), replicas)
                self.assertIn("--shard-count=$(SHARD_COUNT)", engramd["args"])
                self.assertIn("--shard-index=$(SHARD_INDEX)", engramd["args"])
                index = next(e for e in engramd["env"] if e["name"] == "SHARD_INDEX")
                self.assertEqual(index["valueFrom"]["fieldRef"]["fieldPath"],
                                 "metadata.labels['apps.kubernetes.io/pod-index']")
                for name, template in pod_templates(objects):
                    for c in template["containers"]:
                        if any(e["name"] == "SHARD_COUNT" for e in c.get("env", [])):
                            self.assertEqual(int(env_value(c, "SHARD_COUNT")), replicas, name)
                # Services: a headless one per-shard names come from, and a ClusterIP one.
                labels = spec["template"]["metadata"]["labels"]
                services = {o["metadata"]["name"]: o["spec"] for o in objects
                            if o["kind"] == "Service"}
                headless = services[spec["serviceName"]]
                self.assertEqual(headless["clusterIP"], "None")
                self.assertTrue(any(s.get("clusterIP") != "None" for s in services.values()))
                for service in services.values():
                    self.assertTrue(set(service["selector"].items()) <= set(labels.items()))
                    for port in service["ports"]:
                        self.assertIn(port["targetPort"], [p["name"] for p in engramd["ports"]])
                # engramd listens where the pod says, on every interface.
                self.assertEqual(config["listen_address"],
                                 f"0.0.0.0:{container_port(engramd, 'grpc')}")
                health = container_port(engramd, "health")
                self.assertEqual(config["health_address"], f"0.0.0.0:{health}")
                metrics = container_port(engramd, "metrics")
                self.assertEqual(port_of(config["metrics_address"]), metrics)
                annotations = spec["template"]["metadata"]["annotations"]
                self.assertEqual(annotations["prometheus.io/scrape"], "true")
                self.assertEqual(int(annotations["prometheus.io/port"]), metrics)
                # All state on the shard's volume, every file path absolute.
                mounts = {m["name"]: m for m in engramd["volumeMounts"]}
                data = mounts["data"]["mountPath"]
                for key in ("data_dir", "checkpoint_dir", "backup_dir", "restore_dir",
                            "kv.export_dir"):
                    self.assertTrue(config[key].startswith(data + "/"), key)
                for key in ("auth.tokens_file", "tls.cert_file", "tls.key_file"):
                    if key in config:
                        self.assertTrue(any(config[key].startswith(m["mountPath"] + "/")
                                            and m.get("readOnly") for m in mounts.values()),
                                        key)
                # Probes: native gRPC on the health port, numeric.
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    self.assertEqual(engramd[probe]["grpc"]["port"], health, probe)
                startup = engramd["startupProbe"]
                self.assertGreaterEqual(startup["periodSeconds"] * startup["failureThreshold"],
                                        600, "engramd loads its index before it listens")
                liveness = engramd["livenessProbe"]
                self.assertGreaterEqual(liveness["periodSeconds"] * liveness["failureThreshold"],
                                        300, "liveness is lenient")
                # Shutdown: preStop sleep + shutdown_grace_s + the snapshot after it.
                sleep = engramd["lifecycle"]["preStop"]["exec"]["command"]
                self.assertEqual(sleep[0], "sleep")
                budget = int(sleep[1]) + int(config.get("shutdown_grace_s", 10)) + 20
                self.assertGreaterEqual(pod["terminationGracePeriodSeconds"], budget)
                # Disruptions: one shard at a time.
                pdb = one(objects, "PodDisruptionBudget")["spec"]
                self.assertEqual(pdb["maxUnavailable"], 1)
                self.assertEqual(pdb["selector"]["matchLabels"], spec["selector"]["matchLabels"])
                # Network: the shards admit labelled clients on gRPC, scrapers on metrics.
                policy = one(objects, "NetworkPolicy")["spec"]
                self.assertEqual(policy["podSelector"]["matchLabels"],
                                 spec["selector"]["matchLabels"])
                admitted = {}
                for rule in policy["ingress"]:
                    self.assertTrue(all(set(peer) == {"podSelector"} for peer in rule["from"]))
                    for port in rule["ports"]:
                        admitted[port["port"]] = [p["podSelector"]["matchLabels"]
                                                  for p in rule["from"]]
                self.assertEqual(admitted[container_port(engramd, "grpc")],
                                 [{"engram.dev/client": "true"}])
                self.assertEqual(admitted[metrics], [{"engram.dev/metrics": "true"}])
                # Maintenance: compaction and backups of every shard, as a client.
                job = one(objects, "CronJob")
                template = job["spec"]["jobTemplate"]["spec"]["template"]
                self.assertEqual(template["metadata"]["labels"]["engram.dev/client"], "true")
                self.assertEqual(template["spec"]["containers"][0]["command"],
                                 ["/usr/local/bin/engram-maintenance"])

    def test_pods_meet_restricted_pod_security(self):
        for overlay, objects in self.rendered.items():
            for name, pod in pod_templates(objects):
                with self.subTest(overlay=overlay, pod=name):
                    security = pod["securityContext"]
                    self.assertTrue(security["runAsNonRoot"])
                    self.assertNotEqual(security.get("runAsUser"), 0)
                    self.assertEqual(security["seccompProfile"]["type"], "RuntimeDefault")
                    if "fsGroup" in security:
                        self.assertEqual(security["fsGroupChangePolicy"], "OnRootMismatch")
                    self.assertFalse(pod["automountServiceAccountToken"])
                    for key in ("hostNetwork", "hostPID", "hostIPC"):
                        self.assertFalse(pod.get(key, False), key)
                    self.assertFalse(any("hostPath" in v for v in pod.get("volumes", [])))
                    for c in pod.get("initContainers", []) + pod["containers"]:
                        context = c["securityContext"]
                        self.assertFalse(context["allowPrivilegeEscalation"], c["name"])
                        self.assertTrue(context["readOnlyRootFilesystem"], c["name"])
                        self.assertEqual(context["capabilities"]["drop"], ["ALL"], c["name"])
                        self.assertNotIn("add", context["capabilities"], c["name"])
                        self.assertFalse(context.get("privileged", False), c["name"])
                        self.assertNotEqual(context.get("runAsUser"), 0, c["name"])
                        for kind in ("requests", "limits"):
                            self.assertEqual(set(c["resources"][kind]), {"cpu", "memory"},
                                             f"{c['name']} {kind}")
            statefulset = one(objects, "StatefulSet")
            self.assertEqual(
                statefulset["spec"]["template"]["spec"]["securityContext"]["fsGroupChangePolicy"],
                "OnRootMismatch")

    def test_production_has_auth_and_tls_and_dev_says_it_has_none(self):
        production = engramd_config(self.rendered["production"])
        self.assertTrue(production["auth.tokens_file"])
        self.assertTrue(production["tls.cert_file"])
        self.assertNotIn("insecure", production)
        dev = engramd_config(self.rendered["dev"])
        self.assertTrue(dev["insecure"])
        # The layering is by argument: the overlay's file comes last.
        args = config_paths(engramd_container(one(self.rendered["dev"], "StatefulSet")))
        self.assertEqual([os.path.basename(a) for a in args], ["engramd.yaml", "security.yaml"])
        namespace = one(self.rendered["production"], "Namespace")
        self.assertEqual(namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
                         "restricted")
        self.assertTrue(all(o["metadata"].get("namespace") == "engram"
                            for o in self.rendered["production"] if o["kind"] != "Namespace"))


if __name__ == "__main__":
    unittest.main()
