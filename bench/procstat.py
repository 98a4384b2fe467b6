# SPDX-License-Identifier: Apache-2.0
"""Memory of a process as the benchmarks report it, from /proc/PID/status."""
from __future__ import annotations

from pathlib import Path


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """VmRSS (resident now) or VmHWM (peak resident) in KiB; 0 if gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0
