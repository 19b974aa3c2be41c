"""Builds the engram package with its gRPC stubs (engram.v1), generated from
the repository's proto/ directory (or ENGRAM_PROTO_DIR) by protoc and
grpc_python_plugin while the package is built. The metadata is in
pyproject.toml."""

import glob
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        proto_root = os.environ.get("ENGRAM_PROTO_DIR",
                                    os.path.join(HERE, os.pardir, os.pardir, "proto"))
        protos = sorted(glob.glob(os.path.join(proto_root, "engram", "v1", "*.proto")))
        if not protos:
            raise SystemExit(f"engram: no engram/v1/*.proto under {proto_root}; build from the "
                             "repository checkout or set ENGRAM_PROTO_DIR to its proto/ directory")
        protoc = shutil.which("protoc")
        plugin = shutil.which("grpc_python_plugin")
        if not protoc or not plugin:
            raise SystemExit("engram: generating the gRPC stubs needs protoc and "
                             "grpc_python_plugin on PATH (Debian: apt install protobuf-compiler "
                             "protobuf-compiler-grpc)")
        subprocess.check_call([protoc, f"-I{proto_root}", f"--python_out={self.build_lib}",
                               f"--grpc_out={self.build_lib}",
                               f"--plugin=protoc-gen-grpc={plugin}", *protos])
        open(os.path.join(self.build_lib, "engram", "v1", "__init__.py"), "a").close()


setup(cmdclass={"build_py": BuildPyWithStubs})
