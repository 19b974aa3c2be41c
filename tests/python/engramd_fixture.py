"""A live engramd for the Python tests: started on a free port with its data,
backups and checkpoints in a temporary directory, stopped (and checked to
exit cleanly) after the test class.

Run by ctest with ENGRAMD=<path to engramd> and PYTHONPATH=<build>/python.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from engram import Memory


class EngramdProcess:
    """`extra_config`: YAML appended to the test's configuration; `env`: variables
    added to engramd's environment; `data_dir`: where the database lives
    (default: inside the temporary directory, removed at stop); `listen`:
    the gRPC address (default: a free loopback port); `args`: more flags."""

    def __init__(self, extra_config="", env=None, data_dir=None, listen="127.0.0.1:0",
                 args=()):
        self.dir = tempfile.mkdtemp(prefix="engram-py-")
        self.data_dir = data_dir or os.path.join(self.dir, "data")
        port_file = os.path.join(self.dir, "port")
        config = os.path.join(self.dir, "engramd.yaml")
        with open(config, "w") as f:  # backups and checkpoints inside the temp dir
            for key in ("backup_dir", "checkpoint_dir", "restore_dir"):
                f.write(f"{key}: {os.path.join(self.dir, key)}\n")
            f.write(extra_config)
        self.process = subprocess.Popen(
            [os.environ["ENGRAMD"], "--config", config,
             "--listen", listen, "--port-file", port_file,
             "--data-dir", self.data_dir, "--metrics-address", "off",
             "--log-level", "warn", *args], env={**os.environ, **(env or {})})
        deadline = time.time() + 30
        while not os.path.exists(port_file):
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError("engramd did not start")
            time.sleep(0.02)
        with open(port_file) as f:
            self.address = f"127.0.0.1:{f.read().strip()}"

    def kill(self):
        """kill -9: no shutdown at all."""
        self.process.kill()
        self.process.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
        return code


class EngramdTestCase(unittest.TestCase):
    """One engramd per test class (configured by the class attributes
    `engramd_config` and `engramd_env`); memory() gives a client closed after
    the test."""

    engramd_config = ""
    engramd_env = None

    @classmethod
    def setUpClass(cls):
        cls.server = EngramdProcess(cls.engramd_config, cls.engramd_env)

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0, "engramd did not shut down cleanly"

    def memory(self, space, agent="alice", **options):
        m = Memory(self.server.address, space=space, agent=agent, **options)
        m.wait_ready()
        self.addCleanup(m.close)
        return m
