# SPDX-License-Identifier: Apache-2.0
"""Builds the CO-RE BPF objects with clang into the package (bpf/Makefile).

The installed package then needs only libbpf.so.1 and kernel BTF at run time:
no compiler and no kernel headers. A package carries the objects of one
architecture, named in guard/objects/arch (the loader refuses another's):

  GUARD_BPF_ARCH=arm64      build the objects for that architecture (x86,
                            arm64; amd64/x86_64/aarch64 are read as those)
                            instead of this machine's
  GUARD_BPF_OBJECTS=DIR     take DIR/*.bpf.o and DIR/arch, built beforehand
                            (`make -C bpf ARCH=... OUT=DIR`), and compile
                            nothing: how deploy/Containerfile builds for
                            another architecture without clang in emulation
"""
import glob
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithBpf(build_py):
    def run(self):
        # package data first: objects built or copied now replace any that a
        # source tree's guard/objects (another ARCH's, a stale build) gave
        super().run()
        out = os.path.join(os.path.abspath(self.build_lib), "guard", "objects")
        prebuilt = os.environ.get("GUARD_BPF_OBJECTS")
        if prebuilt:
            objects = glob.glob(os.path.join(prebuilt, "*.bpf.o"))
            if not objects or not os.path.isfile(os.path.join(prebuilt, "arch")):
                raise SystemExit(f"GUARD_BPF_OBJECTS={prebuilt}: no *.bpf.o and arch there "
                                 "(make -C bpf ARCH=... OUT=DIR)")
            os.makedirs(out, exist_ok=True)
            for path in objects + [os.path.join(prebuilt, "arch")]:
                shutil.copy2(path, out)
        else:
            arch = os.environ.get("GUARD_BPF_ARCH")
            subprocess.check_call(["make", "-C", os.path.join(HERE, "bpf"), f"OUT={out}",
                                   *([f"ARCH={arch}"] if arch else [])])


setup(cmdclass={"build_py": BuildWithBpf})
