# SPDX-License-Identifier: Apache-2.0
"""Container discovery benchmark.

    sudo .venv/bin/python bench/containers.py [--containers 100] [--starts 10]

- from a container cgroup appearing (the kernel's mkdir) to its hooks being
  attached and the cgroup marked guarded: p50 and p99 over N container-shaped
  cgroups (libpod-ID below a parent of the benchmark's own);
- agent memory with those N containers guarded;
- real container start time (podman run --rm ... true, runc) with the agent
  guarding every container vs without an agent, alternating: the ratio.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from guard.demo.sandbox import TempCgroup  # noqa: E402
from procstat import memory_kib  # noqa: E402

IMAGE = "localhost/egress-guard-bench-busybox:latest"
PODMAN_RUN = ["podman", "run", "--rm", "--runtime", "runc", "--network", "host",
              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


class Agent:
    """`egress-guard run` in discovery mode; its events are collected."""

    def __init__(self, control_socket: str):
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "guard", "run", "--control-socket", control_socket],
            stdout=subprocess.PIPE, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        first = orjson.loads(self.proc.stdout.readline())
        if first.get("state") != "ready":
            raise RuntimeError(f"agent not ready: {first}")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            event = orjson.loads(line)
            with self._lock:
                self.events.append(event)

    def guarded_latencies(self) -> dict[int, float]:
        with self._lock:
            return {e["cgroup"]["id"]: e["latency_ms"] for e in self.events
                    if e["kind"] == "container" and e["state"] == "guarded"}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def attach_latency(count: int, socket_path: str) -> tuple[list[float], float, float]:
    agent = Agent(socket_path)
    try:
        with TempCgroup("egress-guard-bench") as parent:
            rss_before = memory_kib(agent.proc.pid) / 1024
            made = []
            try:
                for _ in range(count):
                    cg = TempCgroup(parent=parent.path, name=f"libpod-{secrets.token_hex(32)}")
                    made.append(cg.__enter__())
                    time.sleep(0.01)  # containers start apart, not in one burst
                deadline = time.monotonic() + 30
                while len(agent.guarded_latencies()) < count and time.monotonic() < deadline:
                    time.sleep(0.05)
                latencies = agent.guarded_latencies()
                rss_after = memory_kib(agent.proc.pid) / 1024
                missing = [cg for cg in made if cg.id not in latencies]
                if missing:
                    raise RuntimeError(f"{len(missing)} cgroups were never guarded")
                return [latencies[cg.id] for cg in made], rss_before, rss_after
            finally:
                for cg in made:
                    cg.close()
    finally:
        agent.stop()


def build_image(workdir: Path) -> None:
    archive = workdir / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(shutil.which("busybox"), arcname="bin/busybox")
        info = tarfile.TarInfo("bin/true")
        info.type, info.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(info)
    subprocess.run(["podman", "import", "-q", str(archive), IMAGE], check=True,
                   capture_output=True)


def start_seconds() -> float:
    started = time.perf_counter()
    subprocess.run([*PODMAN_RUN, IMAGE, "/bin/true"], check=True, capture_output=True)
    return time.perf_counter() - started


def start_ratio(starts: int, socket_path: str) -> tuple[float, float]:
    with_agent, without = [], []
    for _ in range(starts):
        without.append(start_seconds())
        agent = Agent(socket_path)
        try:
            with_agent.append(start_seconds())
        finally:
            agent.stop()
    return statistics.median(with_agent), statistics.median(without)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--starts", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/containers.py needs root", file=sys.stderr)
        return 4
    with tempfile.TemporaryDirectory(prefix="egress-guard-bench-") as tmp:
        socket_path = str(Path(tmp) / "agent.sock")
        latencies, rss_before, rss_after = attach_latency(args.containers, socket_path)
        build_image(Path(tmp))
        try:
            start_ratio(1, socket_path)  # warm podman's storage and the page cache
            guarded, plain = start_ratio(args.starts, socket_path)
        finally:
            subprocess.run(["podman", "rmi", "-f", IMAGE], capture_output=True)
    print(f"\ncontainer discovery ({args.containers} containers, {args.starts} podman starts)\n")
    print(f"cgroup mkdir -> hooks attached: p50 {percentile(latencies, 0.5):.1f} ms, "
          f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms")
    print(f"agent memory: {rss_before:.1f} MiB idle, {rss_after:.1f} MiB with "
          f"{args.containers} containers guarded")
    print(f"\n| {'podman run --rm ... true':<28} | {'seconds':>8} |")
    print(f"|{'-' * 30}|{'-' * 10}|")
    print(f"| {'without an agent':<28} | {plain:>8.3f} |")
    print(f"| {'agent guarding containers':<28} | {guarded:>8.3f} |")
    print(f"| {'ratio':<28} | {guarded / plain:>8.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
