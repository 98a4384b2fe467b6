# SPDX-License-Identifier: Apache-2.0
"""Shared test plumbing.

Kernel tests (marker `kernel`) need root and a BPF-capable kernel. Where that is
missing they skip, saying what is missing, except under GUARD_REQUIRE_KERNEL=1
(set by .ci/run), where a kernel test that would skip fails instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
REQUIRE_KERNEL = os.environ.get("GUARD_REQUIRE_KERNEL") == "1"

_kernel_reason: list[str | None] = []


def kernel_unavailable() -> str | None:
    """Why kernel tests cannot run here, or None. Probed once per session."""
    if not _kernel_reason:
        reason = None
        if os.geteuid() != 0:
            reason = "kernel tests need root"
        elif not (ROOT / "guard" / "objects" / "exec.bpf.o").is_file():
            reason = "BPF objects are not built (make -C bpf)"
        else:
            from guard.cli import doctor as features
            report = features.probe()
            if not report.ok:
                reason = "this host lacks: " + "; ".join(report.missing)
        _kernel_reason.append(reason)
    return _kernel_reason[0]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/kernel" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.kernel)


def pytest_runtest_setup(item):
    if item.get_closest_marker("kernel") is None:
        return
    reason = kernel_unavailable()
    if reason is None:
        return
    if REQUIRE_KERNEL:
        pytest.fail(f"GUARD_REQUIRE_KERNEL=1 but {reason}", pytrace=False)
    pytest.skip(reason)
