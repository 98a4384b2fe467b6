# SPDX-License-Identifier: Apache-2.0
"""egress-guard benchmarks: ratios against a baseline measured in the same run.

    sudo .venv/bin/python bench/run.py [--rounds N] [--connects N] [--execs N]

Rows (each a median over alternating rounds, so drift hits both sides alike):
- connect+close to loopback (compiled loop) in a guarded cgroup vs an
  unguarded sibling, under a 10,000-CIDR policy; once with the destination
  allowed silently (the verdict's cost) and once with every connect logged
  (verdict + event + the agent decoding it). Target <= 1.05.
- fork+exec of /bin/true, guarded (every exec reported) vs unguarded.
  Target <= 1.05. Beside it the same ratio for libbpf-tools' execsnoop
  (running vs not running), as the baseline of what exec tracing costs.
- agent start-up (process start to the ready line) and resident memory.
- a noise floor: the unguarded connect loop against itself, to show how far
  apart two identical measurements land on this machine.

Uses only child cgroups it makes and removes, and loopback traffic.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from guard.workloads.cgroups import cgroup2_mount  # noqa: E402
from guard.demo.sandbox import TempCgroup  # noqa: E402
from procstat import memory_kib  # noqa: E402

PORT = 29500
TRACEFS = Path("/sys/kernel/tracing")


def build(out: Path) -> dict[str, Path]:
    out.mkdir(exist_ok=True)
    tools = {}
    for name in ("connect_loop", "exec_loop", "accept_loop"):
        binary = out / name
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(HERE / f"{name}.c")], check=True)
        tools[name] = binary
    return tools


def policy_with_cidrs(path: Path, count: int, default_action: str) -> None:
    """count /32 block rules in 10.0.0.0/8 (never contacted) plus the default."""
    lines = ["apiVersion: egress-guard/v1", "kind: EgressPolicy",
             "metadata:", f"  name: bench-{count}", "spec:",
             f"  defaultAction: {default_action}", "  egress:",
             "    - name: many-cidrs", "      action: block", "      to:"]
    base = int(ipaddress.IPv4Address("10.0.0.1"))
    for i in range(count):
        lines.append(f"        - cidr: {ipaddress.IPv4Address(base + i * 7)}/32")
    path.write_text("\n".join(lines) + "\n")


class Agent:
    """`egress-guard run` as a subprocess writing its events to a file, as a
    deployment would (a pipe to a reader process would compete for the same
    cores as the measured loop), in a cgroup of its own, as systemd and the
    DaemonSet give it (its loop then runs in the background: docs/design.md, "The
    agent's share of the CPUs")."""

    def __init__(self, policy: Path | None, cgroup: Path):
        self.events = Path(tempfile.mkdtemp(prefix="egress-guard-bench-")) / "events.jsonl"
        argv = [sys.executable, "-m", "guard", "run", "--cgroup", str(cgroup),
                "--events", str(self.events),
                "--control-socket", str(self.events.parent / "agent.sock")]
        if policy:
            argv += ["--policy", str(policy)]
        self.argv = argv

    def __enter__(self):
        self.started = time.monotonic()
        self.own_cgroup = TempCgroup("egress-guard-bench-agent").__enter__()
        try:
            self.proc = self.own_cgroup.popen(self.argv, cwd=ROOT,
                                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
            deadline = self.started + 60
            while not (self.events.exists() and b'"ready"' in self.events.read_bytes()[:4096]):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("agent did not become ready")
                time.sleep(0.005)
        except BaseException:
            self.own_cgroup.close()   # ends the agent too
            raise
        self.startup_s = time.monotonic() - self.started
        return self

    def rss_kib(self, field: str = "VmRSS") -> int:
        return memory_kib(self.proc.pid, field)

    def __exit__(self, *exc):
        try:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        finally:
            self.own_cgroup.close()
            shutil.rmtree(self.events.parent, ignore_errors=True)


def per_op_ns(cg: TempCgroup, argv: list[str], ops: int) -> float:
    result = cg.run(argv, timeout=600, text=True)
    elapsed, failures = map(int, result.stdout.split())
    if failures:
        raise RuntimeError(f"{argv[0]}: {failures} of {ops} operations failed")
    return elapsed / ops


def alternate(rounds: int, measure_a, measure_b) -> tuple[float, float]:
    """Medians of measure_a and measure_b, run alternately, rounds times each."""
    a, b = [], []
    for _ in range(rounds):
        a.append(measure_a())
        b.append(measure_b())
    return statistics.median(a), statistics.median(b)


def bench_connect(tools, rounds, connects, guarded, sibling, workdir, default_action):
    policy = workdir / f"cidrs-{default_action}.yaml"
    policy_with_cidrs(policy, 10_000, default_action)
    argv = [str(tools["connect_loop"]), "127.0.0.1", str(PORT), str(connects)]
    with Agent(policy, guarded.path) as agent:
        g, u = alternate(rounds, lambda: per_op_ns(guarded, argv, connects),
                         lambda: per_op_ns(sibling, argv, connects))
        rss = agent.rss_kib("VmHWM")
    return g, u, rss


def bench_exec(tools, rounds, execs, guarded, sibling):
    argv = [str(tools["exec_loop"]), "/bin/true", str(execs)]
    with Agent(None, guarded.path):
        return alternate(rounds, lambda: per_op_ns(guarded, argv, execs),
                         lambda: per_op_ns(sibling, argv, execs))


def bench_execsnoop(tools, rounds, execs, sibling):
    """execsnoop (libbpf-tools) running vs not, same loop, same unguarded cgroup."""
    execsnoop = shutil.which("execsnoop") or "/usr/sbin/execsnoop"
    if not os.path.exists(execsnoop):
        return None, "execsnoop not installed (Debian package libbpf-tools)"
    mounted_here = False
    if not (TRACEFS / "events").is_dir():
        # execsnoop uses classic tracepoints, which need tracefs
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True)
        mounted_here = True
    argv = [str(tools["exec_loop"]), "/bin/true", str(execs)]
    try:
        def with_execsnoop():
            snoop = subprocess.Popen([execsnoop], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
            try:
                time.sleep(1.0)  # let it attach
                if snoop.poll() is not None:
                    raise RuntimeError(f"execsnoop exited: {snoop.stderr.read().decode()}")
                return per_op_ns(sibling, argv, execs)
            finally:
                snoop.terminate()
                snoop.wait(timeout=10)
        traced, plain = alternate(rounds, with_execsnoop, lambda: per_op_ns(sibling, argv, execs))
        return (traced, plain), None
    finally:
        if mounted_here:
            subprocess.run(["umount", str(TRACEFS)], check=False)


def bench_startup(rounds, guarded):
    times, rss = [], []
    for _ in range(rounds):
        with Agent(None, guarded.path) as agent:
            times.append(agent.startup_s)
            rss.append(agent.rss_kib())
    return statistics.median(times), statistics.median(rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connects", type=int, default=20_000)
    parser.add_argument("--execs", type=int, default=2_000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/run.py needs root", file=sys.stderr)
        return 4
    cgroup2_mount()
    rows = []
    with tempfile.TemporaryDirectory(prefix="egress-guard-bench-") as tmp:
        workdir = Path(tmp)
        tools = build(workdir)
        server = subprocess.Popen([str(tools["accept_loop"]), str(PORT)], stdout=subprocess.PIPE)
        try:
            server.stdout.readline()
            with TempCgroup("egress-guard-bench") as guarded, \
                    TempCgroup("egress-guard-bench-sibling") as sibling:
                argv = [str(tools["connect_loop"]), "127.0.0.1", str(PORT), str(args.connects)]
                a, b = alternate(args.rounds, lambda: per_op_ns(sibling, argv, args.connects),
                                 lambda: per_op_ns(sibling, argv, args.connects))
                rows.append(("noise floor: connect, unguarded vs itself", a, b, "~1.00",
                             "how far apart two identical runs land here"))
                for default_action, label in (("allow", "verdict only"),
                                              ("log", "every connect logged")):
                    g, u, rss = bench_connect(tools, args.rounds, args.connects, guarded,
                                              sibling, workdir, default_action)
                    rows.append((f"connect+close, 10k CIDRs, {label}", g, u, "<= 1.05",
                                 f"agent peak RSS {rss / 1024:.1f} MiB"))
                g, u = bench_exec(tools, args.rounds, args.execs, guarded, sibling)
                rows.append(("fork+exec /bin/true, every exec reported", g, u, "<= 1.05", ""))
                snoop, why = bench_execsnoop(tools, args.rounds, args.execs, sibling)
                if snoop:
                    rows.append(("  baseline: execsnoop (libbpf-tools) on vs off",
                                 snoop[0], snoop[1], "-", ""))
                else:
                    rows.append(("  baseline: execsnoop", 0, 0, "-", why))
                startup, rss = bench_startup(args.rounds, guarded)
        finally:
            server.kill()
            server.wait()

    print(f"\negress-guard benchmarks ({args.rounds} alternating rounds, medians; "
          f"{args.connects} connects, {args.execs} execs per round)\n")
    print(f"| {'benchmark':<46} | {'guarded ns/op':>13} | {'baseline ns/op':>14} | "
          f"{'ratio':>6} | {'target':>7} | note")
    print(f"|{'-' * 48}|{'-' * 15}|{'-' * 16}|{'-' * 8}|{'-' * 9}|------")
    for name, g, u, target, note in rows:
        ratio = f"{g / u:.3f}" if u else "n/a"
        print(f"| {name:<46} | {g:>13.0f} | {u:>14.0f} | {ratio:>6} | {target:>7} | {note}")
    print(f"\nagent start-up to ready line: {startup * 1000:.0f} ms (median); "
          f"resident memory at ready: {rss / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
