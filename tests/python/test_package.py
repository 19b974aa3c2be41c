"""`pip install ./clients/python` works offline with Debian's pip and
setuptools, and the installed package (stubs, adapters, type marker) talks
to a live engramd without the build tree on sys.path.

Run by ctest with ENGRAMD=<path to engramd>.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from engramd_fixture import EngramdTestCase

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))

USE = r"""
import os, sys, engram, engram.aio, engram.integrations.langgraph
from engram import Memory
from engram.v1 import memory_pb2
assert engram.__file__.startswith(sys.prefix), engram.__file__
assert os.path.exists(os.path.join(os.path.dirname(engram.__file__), "py.typed"))
print("version", engram.__version__)
m = Memory(sys.argv[1], space="pkg", agent="a")
m.create_space(dimension=2)
first = m.add("hello", [1.0, 0.0], key="greeting")
assert m.add("hello again", [1.0, 0.1], key="greeting").replaced
assert m.search([1.0, 0.0], k=1)[0].episode.id == first
print("ok")
"""


class PackageInstallTest(EngramdTestCase):
    def test_pip_installs_the_package_offline_and_it_works(self):
        work = tempfile.mkdtemp(prefix="engram-pkg-")
        self.addCleanup(shutil.rmtree, work, ignore_errors=True)
        # A checkout's layout, without build outputs: the package and proto/.
        ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
        shutil.copytree(os.path.join(REPO, "clients", "python"),
                        os.path.join(work, "clients", "python"), ignore=ignore)
        shutil.copytree(os.path.join(REPO, "proto"), os.path.join(work, "proto"), ignore=ignore)
        venv = os.path.join(work, "venv")
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv],
                       check=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        install = subprocess.run(
            [os.path.join(venv, "bin", "pip"), "install", "--no-index", "--no-build-isolation",
             "./clients/python"],
            cwd=work, env=env, capture_output=True, text=True)
        self.assertEqual(install.returncode, 0, install.stdout + install.stderr)
        use = subprocess.run([os.path.join(venv, "bin", "python"), "-c", USE,
                              self.server.address],
                             cwd=work, env=env, capture_output=True, text=True)
        self.assertEqual(use.returncode, 0, use.stdout + use.stderr)
        self.assertIn("ok", use.stdout)
        # The installed version is the source's.
        sys.path.insert(0, os.path.join(REPO, "clients", "python"))
        try:
            from engram._version import __version__
        finally:
            sys.path.pop(0)
        self.assertIn(f"version {__version__}", use.stdout)
        # ... and engramd's, which its ServerInfo reports too.
        engramd = subprocess.run([os.environ["ENGRAMD"], "--version"], capture_output=True,
                                 text=True, check=True)
        self.assertTrue(engramd.stdout.startswith(f"engramd {__version__} "), engramd.stdout)
        from engram import Admin
        with Admin(self.server.address) as admin:
            info = admin.server_info()
        self.assertEqual((info["version"], info["api"]), (__version__, "engram.v1"))
        self.assertIn(info["scan_backend"], ("cpu", "cuda"))
        self.assertFalse(info["auth"])


if __name__ == "__main__":
    unittest.main()
