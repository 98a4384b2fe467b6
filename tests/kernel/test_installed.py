# SPDX-License-Identifier: Apache-2.0
"""The installed package (pip install .) carries its BPF objects and runs from
anywhere with only libbpf.so.1 and kernel BTF: no source tree, no compiler."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REQUIRE_KERNEL, ROOT


def installed_guard(tmp_path) -> Path | None:
    """Where `import guard` resolves outside the source tree, or None."""
    result = subprocess.run([sys.executable, "-I", "-c", "import guard; print(guard.__file__)"],
                            cwd=tmp_path, capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return Path(result.stdout.strip()).parent


def test_installed_package_has_objects_and_runs_without_the_tree(tmp_path):
    package = installed_guard(tmp_path)
    if package is None:
        message = "egress-guard is not pip-installed in this environment"
        if REQUIRE_KERNEL:
            pytest.fail(message)
        pytest.skip(message)
    assert package.resolve() != (ROOT / "guard").resolve(), \
        "imported the source tree, not the installed package"
    assert package.parent.name == "site-packages"
    objects = {p.name for p in (package / "objects").glob("*.bpf.o")}
    assert {"exec.bpf.o", "sock_addr.bpf.o", "sock_create.bpf.o", "socket_syscall.bpf.o",
            "probes.bpf.o"} <= objects
    assert (package / "data" / "default-policy.yaml").is_file()
    assert (package / "data" / "miners.yaml").is_file()
    # every module of the source tree is installed (a subpackage missing from
    # pyproject.toml's list would be left out of the wheel)
    sources = {str(f.relative_to(ROOT / "guard")) for f in (ROOT / "guard").rglob("*.py")}
    installed = {str(f.relative_to(package)) for f in package.rglob("*.py")}
    assert sources - installed == set()
    script = Path(sys.executable).parent / "egress-guard"
    assert script.is_file()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GUARD_OBJECTS_DIR")}
    result = subprocess.run([str(script), "doctor", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
