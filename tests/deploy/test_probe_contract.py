"""The probe contract: engramd started exactly as the production overlay
configures it (its arguments, environment and ConfigMap files, with tokens
and TLS as the Secrets would mount them) answers the kubelet's gRPC probe on
the rendered port, serves authenticated TLS calls, runs the maintenance
job's script, and on SIGTERM reports NOT_SERVING and exits within what the
grace period leaves after the preStop sleep.

The container's filesystem is simulated under a temporary directory: every
path under a mounted volume is moved there, and 0.0.0.0 becomes 127.0.0.1
(the ports stay the rendered ones).
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(__file__))
from rendered import (DEPLOY, config_files, engramd_container, env_value, one,  # noqa: E402
                      render)

SERVING, NOT_SERVING = b"\x08\x01", b"\x08\x02"  # grpc.health.v1.HealthCheckResponse


class Container:
    """Maps the container's paths into a directory of this machine."""

    def __init__(self, root, mount_paths):
        self.root = root
        self.mounts = sorted(mount_paths, key=len, reverse=True)

    def path(self, inside):
        for mount in self.mounts:
            if inside == mount or inside.startswith(mount + "/"):
                return self.root + inside
        return inside

    def text(self, text):
        """A config file's text with its paths moved (one pass, so a moved
        path is never moved again) and its listeners on loopback."""
        mounts = "|".join(re.escape(m) for m in self.mounts)
        text = re.sub(rf"(?<![\w./-])({mounts})/", lambda m: self.root + m.group(0), text)
        return text.replace("0.0.0.0:", "127.0.0.1:")


def health_check(port, timeout=2.0):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=timeout)


class ProbeContractTest(unittest.TestCase):

    def test_rendered_engramd_probes_serves_and_drains(self):
        objects = render("production")
        statefulset = one(objects, "StatefulSet")
        pod = statefulset["spec"]["template"]["spec"]
        engramd = engramd_container(statefulset)
        work = tempfile.mkdtemp(prefix="engram-probe-")
        container = Container(work, [m["mountPath"] for m in engramd["volumeMounts"]])
        for inside, text in config_files(objects).items():
            os.makedirs(os.path.dirname(container.path(inside)), exist_ok=True)
            with open(container.path(inside), "w") as f:
                f.write(container.text(text))
        # The Secrets: a tokens file with an operator token, and TLS files.
        engramctl = os.environ["ENGRAMCTL"]
        tokens = container.path("/etc/engram/tokens/tokens.yaml")
        tls = os.path.dirname(container.path("/etc/engram/tls/tls.crt"))
        os.makedirs(os.path.dirname(tokens), exist_ok=True)
        os.makedirs(tls, exist_ok=True)
        token = subprocess.run([engramctl, "token", "--file", tokens, "create", "--operator",
                                "--role", "admin"], capture_output=True, text=True,
                               check=True).stdout.strip().split()[-1]
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=engram-test-ca", "-keyout", f"{tls}/ca.key",
                        "-out", f"{tls}/ca.crt"], check=True, capture_output=True)
        subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", f"{tls}/tls.key", "-out", f"{tls}/tls.csr"],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", f"{tls}/tls.csr", "-CA", f"{tls}/ca.crt",
                        "-CAkey", f"{tls}/ca.key", "-CAcreateserial", "-days", "2",
                        "-copy_extensions", "copy", "-out", f"{tls}/tls.crt"],
                       check=True, capture_output=True)
        # The arguments as the kubelet expands them for pod 0.
        variables = {"SHARD_INDEX": "0", "SHARD_COUNT": env_value(engramd, "SHARD_COUNT")}
        args = []
        for arg in engramd["args"]:
            for name, value in variables.items():
                arg = arg.replace(f"$({name})", value)
            flag, _, value = arg.partition("=")
            args.append(f"{flag}={container.path(value)}" if value.startswith("/") else arg)
        process = subprocess.Popen([os.environ["ENGRAMD"], *args], cwd=work)
        self.addCleanup(lambda: process.poll() is None and process.kill())

        probe = engramd["startupProbe"]
        port = probe["grpc"]["port"]
        budget = min(60, probe["periodSeconds"] * probe["failureThreshold"])
        deadline = time.time() + budget
        while True:
            self.assertIsNone(process.poll(), "engramd exited during startup")
            try:
                if health_check(port) == SERVING:
                    break
            except grpc.RpcError:
                pass
            self.assertLess(time.time(), deadline, f"no SERVING on the probe port {port}")
            time.sleep(0.1)
        self.assertEqual(health_check(engramd["readinessProbe"]["grpc"]["port"]), SERVING)
        self.assertEqual(health_check(engramd["livenessProbe"]["grpc"]["port"]), SERVING)

        # The gRPC port takes TLS with a token, as rendered.
        main = next(p["containerPort"] for p in engramd["ports"] if p["name"] == "grpc")
        client = [engramctl, "--address", f"localhost:{main}", "--tls-ca", f"{tls}/ca.crt",
                  "--token", token]
        done = subprocess.run(client + ["stats"], capture_output=True, text=True, timeout=30)
        self.assertEqual(done.returncode, 0, done.stderr)
        refused = subprocess.run(client[:5] + ["stats"], capture_output=True, text=True,
                                 timeout=30, env={k: v for k, v in os.environ.items()
                                                  if k != "ENGRAM_TOKEN"})
        self.assertNotEqual(refused.returncode, 0, "no token, yet served")
        self.assertIn("UNAUTHENTICATED", refused.stderr)

        # The CronJob's script against this shard (today its compaction day).
        job = one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        script = os.path.join(DEPLOY, "image", os.path.basename(job["containers"][0]["command"][0]))
        env = {**os.environ, "PATH": os.path.dirname(engramctl) + ":" + os.environ["PATH"],
               "ENGRAM_SHARD_ADDRESSES": f"localhost:{main}", "ENGRAM_TOKEN": token,
               "ENGRAM_TLS_CA": f"{tls}/ca.crt",
               "COMPACT_WEEKDAY": time.strftime("%u", time.gmtime())}
        done = subprocess.run([script], env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(done.returncode, 0, done.stderr)
        backups = subprocess.run(client + ["-o", "json", "backup", "list"], capture_output=True,
                                 text=True, timeout=30)
        self.assertEqual(backups.returncode, 0, backups.stderr)
        self.assertEqual(len(backups.stdout.strip().splitlines()), 1, backups.stdout)

        # SIGTERM: NOT_SERVING on the probe port, then exit in time.
        sleep = int(engramd["lifecycle"]["preStop"]["exec"]["command"][1])
        allowed = pod["terminationGracePeriodSeconds"] - sleep
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = channel.unary_stream("/grpc.health.v1.Health/Watch")(b"", timeout=allowed + 5)
            self.assertEqual(next(watch), SERVING)
            started = time.time()
            process.send_signal(signal.SIGTERM)
            seen = []
            try:
                for status in watch:
                    seen.append(status)
            except grpc.RpcError:
                pass  # the listener closes as engramd exits
        self.assertIn(NOT_SERVING, seen)
        self.assertEqual(process.wait(timeout=allowed), 0)
        self.assertLess(time.time() - started, allowed)


if __name__ == "__main__":
    unittest.main()
