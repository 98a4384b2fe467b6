# SPDX-License-Identifier: Apache-2.0
"""Builds the CO-RE BPF objects with clang into the package (bpf/Makefile).

The installed package then needs only libbpf.so.1 and kernel BTF at run time:
no compiler and no kernel headers.
"""
import os
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithBpf(build_py):
    def run(self):
        out = os.path.join(os.path.abspath(self.build_lib), "guard", "objects")
        subprocess.check_call(["make", "-C", os.path.join(HERE, "bpf"), f"OUT={out}"])
        super().run()


setup(cmdclass={"build_py": BuildWithBpf})
