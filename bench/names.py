# SPDX-License-Identifier: Apache-2.0
"""Allow-by-name benchmarks (issue 15): ratios against a baseline measured in
the same run, each beside an A/A ratio (the baseline against a second copy
of itself) that shows how far two identical measurements land apart here.

    sudo .venv/bin/python bench/names.py [--rounds N] [--connects N] [--lookups N]

Set-up: the DNS test fixture (tests/kernel/dnsfixtures.py: dnsmasq in a
network namespace of its own, zone `egtest.`), a compiled accept loop on
every address of that namespace, and one policy file: "bench-names"
(defaultAction block; `host: one.egtest` and `host: "*.learn.egtest"`, and
`cidr:` two other addresses of the namespace, all on one port; DNS TTLs
clamped to an hour, so nothing learned expires during the run) and
"bench-plain" (the same CIDRs and the resolver by CIDR, no names), each
selecting its cgroups by path. The loops are C, built here with the system
cc, run under the fixture's client wrapper (a private mount namespace whose
resolv.conf names the test resolver), and time themselves.

Alternating rounds, in one process: for rows 1 and 2 one process runs every
variant in turn, a block of operations each (a few ms), moving itself into
the variant's cgroup before its block (a socket belongs to the cgroup its
creator was in when it made it); the order is reversed every other round.
Each block's median is a sample; a row's ratio is the median over rounds of
measured/baseline of the same round, so another process's burst of CPU (this
two-core VM is shared) hits both sides of a pair alike.

Rows:
1. connect+close in one guarded cgroup to the address of `one.egtest`
   (allowed by name; the process resolves the name itself, in that cgroup,
   before its first round, so the kernel learned it there) vs an address
   allowed by `cidr:`; A/A: the other `cidr:` address vs the first. The close
   is SO_LINGER 0: it sends a RST and leaves no TIME_WAIT, so the ephemeral
   ports never run out however long it runs (the TIME_WAIT sockets of both
   namespaces are counted around each run and printed). Target <= 1.03.
   For scale: the CIDR-allowed connect from an unguarded sibling.
2. DNS answer latency: getaddrinfo(one.egtest, AF_INET), one A query each,
   in the guarded cgroup (each answer is parsed and learned in the kernel and
   is an event the agent writes) vs an unguarded sibling; A/A: a second
   unguarded sibling. Target: no change at the median beyond the A/A noise.
   Taken apart through a cgroup under "bench-plain" (guarded, DNS not read).
   2p: the same with the loop and the resolver pinned to one CPU (the
   agent is not): a lookup then costs what its two ends and the kernel
   spend on it, without the wake-up of an idle CPU (on this VM tens of us,
   and most of row 2's spread), so the guard's cost shows beside an A/A
   that is tight.
3. Memory per 10,000 learned addresses: a fresh agent and cgroup resolve 400
   names under `learn.egtest` with 25 A records each (a 435-byte answer: UDP,
   and all of it within the 512 bytes a DNS event carries, so the agent sees
   every address). Reported: the cgroup's learned table (bpftool
   `bytes_memlock` of its `eg_dns_learned_in` map before and after, and its
   entry count), the agent's resident memory before and after, and the
   agent's NameBook alone (tracemalloc, in this process).
4. Cost to a process the guard does not guard: connect+close from an
   unguarded sibling with an agent guarding the names policy on another
   cgroup vs with no agent (started and stopped every round: this pair
   cannot alternate within one process); A/A: no agent vs no agent. Beside
   it the same for a getppid() loop: the raw_tp/sys_enter hook, which every
   system call of every process would run, is attached for a names policy
   only when it trusts a loopback resolver (not this one).

Everything it makes (cgroups tagged egbench-names, the resolver's namespace,
servers, agents with private control sockets, the temporary directory) is
removed on exit; processes are ended by pid.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from guard.demo.sandbox import TempCgroup  # noqa: E402
from guard.kernel import abi, libbpf  # noqa: E402
from guard.workloads.cgroups import cgroup2_mount  # noqa: E402
from guard.workloads.names import NameBook  # noqa: E402
from procstat import FileAgent  # noqa: E402
from bpfstats import BpfStats, held_map, held_prog_ids, per_operation, prog_stats  # noqa: E402
from ratios import Row, at_most, compile_tools, print_rows, within_noise  # noqa: E402
from tests.kernel.dnsfixtures import TestResolver  # noqa: E402

PORT = 28080                 # the accept loop's port in the resolver's namespace
TAG = "egbench-names"
TTL_S = 3600                 # the policy's TTL bounds: nothing learned expires mid-run
LEARN_ZONE = "learn.egtest"
LEARN_PER_NAME = 25          # A records per learning name: 435 bytes, under 512
LEARN_BASE = (198 << 24) | (19 << 16) | (128 << 8)   # 198.19.128.0: answered, never routed

# ---------------------------------------------------------------------------
# The compiled loops

def build(out: Path) -> dict[str, Path]:
    return compile_tools(out, ("names_loop", "resolve_loop", "accept_loop", "syscall_loop"))


# ---------------------------------------------------------------------------
# The resolver, the server, the agent


class BenchResolver(TestResolver):
    """The test resolver (queries not logged: a log line per lookup would be
    dnsmasq's largest cost) serving, besides the fixture's zone, `count`
    addresses under LEARN_ZONE, LEARN_PER_NAME per name, from a hosts file.
    Those addresses are only answered, never configured or routed."""
    __test__ = False

    def __init__(self, workdir: Path, count: int):
        super().__init__(log_queries=False)
        self.learn_names = [f"n{i}.{LEARN_ZONE}"
                            for i in range(-(-count // LEARN_PER_NAME))]
        self.learn_count = count
        self.hosts_file = workdir / "learn.hosts"
        lines = []
        for i in range(count):
            address = LEARN_BASE + i
            ip = ".".join(str((address >> shift) & 0xFF) for shift in (24, 16, 8, 0))
            lines.append(f"{ip} {self.learn_names[i // LEARN_PER_NAME]}")
        self.hosts_file.write_text("\n".join(lines) + "\n")

    def _dnsmasq_argv(self) -> list[str]:
        return super()._dnsmasq_argv() + [f"--addn-hosts={self.hosts_file}"]


class AcceptServer:
    """The compiled accept loop on every address of the resolver's namespace."""

    def __init__(self, resolver: BenchResolver, binary: Path, port: int):
        self.argv = ["ip", "netns", "exec", resolver.netns, str(binary), str(port), "any"]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "AcceptServer":
        # ip netns exec execs the server: this pid is the server's
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "listening":
            self.close()
            raise RuntimeError(f"{self.argv} did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def time_wait(self) -> int:
        return time_wait(self.proc.pid)

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc.stdout.close()
            self.proc = None


class Agent(FileAgent):
    """The benchmark's agent (procstat.FileAgent), with its events read back."""

    def __init__(self, workdir: Path, cgroups: list[TempCgroup], policy: Path):
        super().__init__(workdir, cgroups, policy, TAG, ROOT)

    def read_events(self) -> list[dict]:
        try:
            text = self.events_path.read_text()
        except FileNotFoundError:
            return []
        # only whole lines: the last may still be being written
        return [json.loads(line) for line in text.split("\n")[:-1] if line]

    def wait_for(self, predicate, timeout: float = 10.0, count: int = 1) -> dict:
        """The count-th event of the file that satisfies predicate."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.read_events() if predicate(e)]
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"agent: {len(found)} of {count} events in {timeout} s; stderr: "
                    f"{self.stderr_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)


def write_policy(path: Path, resolver: BenchResolver, cidrs: list[str],
                 named: list[TempCgroup], plain: list[TempCgroup]) -> None:
    """Two policies, each selecting its cgroups by path: "bench-names" allows
    by name and by CIDR; "bench-plain" allows the same CIDRs and the
    resolver by CIDR, and no name (a guarded cgroup whose DNS the guard
    does not read)."""
    mount = cgroup2_mount()

    def paths(cgroups: list[TempCgroup]) -> str:
        return ", ".join(f'"/{cg.path.relative_to(mount)}"' for cg in cgroups)
    by_cidr = ("    - name: by-cidr\n      action: allow\n      to:\n"
               + "".join(f"        - cidr: {ip}/32\n          ports: [{PORT}]\n" for ip in cidrs))
    path.write_text(f"""\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: bench-names
spec:
  defaultAction: block
  selector:
    cgroupPaths: [{paths(named)}]
  dns:
    resolvers:
      - cidr: {resolver.ip}/32
    ttl: {{min: {TTL_S}, max: {TTL_S}}}
  egress:
    - name: by-name
      action: allow
      to:
        - host: one.egtest
          ports: [{PORT}]
        - host: "*.{LEARN_ZONE}"
          ports: [{PORT}]
{by_cidr}---
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: bench-plain
spec:
  defaultAction: block
  selector:
    cgroupPaths: [{paths(plain)}]
  egress:
    - name: resolver
      action: allow
      to:
        - cidr: {resolver.ip}/32
          ports: [53]
{by_cidr}""")


# ---------------------------------------------------------------------------
# Measuring


@contextlib.contextmanager
def pinned(cpu: int | None, pids: list[int]):
    """pids (0: this process) on cpu alone meanwhile, then back where they were."""
    if cpu is None:
        yield
        return
    before = {pid: os.sched_getaffinity(pid) for pid in pids}
    try:
        for pid in pids:
            os.sched_setaffinity(pid, {cpu})
        yield
    finally:
        for pid, cpus in before.items():
            try:
                os.sched_setaffinity(pid, cpus)
            except ProcessLookupError:
                pass


def time_wait(pid: int | str = "self") -> int:
    """TIME_WAIT sockets of the network namespace pid is in."""
    for line in Path(f"/proc/{pid}/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("tw") + 1])
    return 0


@dataclass
class Alternation:
    """What one run of the alternate loop measured, per variant in the order given."""
    rounds: list[list[float]]    # per variant: each round's block median, us
    p99: list[float]             # per variant: over all its operations, us
    addresses: list[str]
    time_wait_growth: int        # TIME_WAIT sockets added meanwhile (the larger namespace's)


class Bench:
    """The tools, the resolver and the server every measurement uses."""

    def __init__(self, tools: dict[str, Path], resolver: BenchResolver, server: AcceptServer,
                 loop: TempCgroup):
        self.tools = tools
        self.resolver = resolver
        self.server = server
        self.loop = loop    # nothing guards it: the loop starts here, each block's child moves

    def alternate(self, mode: str, arg: str, block: int, rounds: int,
                  variants: list[tuple[TempCgroup, str | None]],
                  pin: int | None = None) -> Alternation:
        """Run the alternate loop (bench/names_loop.c), started in a cgroup
        nothing guards (its children move into the variants' cgroups: a
        process leaving a guarded cgroup would be an escape the guard stops);
        variants: (cgroup, host or None). pin: a CPU the loop and the
        resolver share meanwhile (the loop inherits this process's affinity)."""
        specs = [str(cg.path) + (f",{host}" if host else "") for cg, host in variants]
        tw = time_wait(), self.server.time_wait()
        with pinned(pin, [0, self.resolver.dnsmasq.pid]):
            result = self.resolver.run(
                [str(self.tools["names_loop"]), mode, arg, str(block), str(rounds), *specs],
                self.loop, timeout=900)
        growth = max(time_wait() - tw[0], self.server.time_wait() - tw[1])
        if result.returncode != 0:
            raise RuntimeError(f"alternate {mode}: exit {result.returncode}: "
                               f"{result.stderr.strip()[-2000:]}")
        lines = result.stdout.splitlines()
        failures = lines[-1].split()
        if failures[0] != "failures" or int(failures[1]):
            raise RuntimeError(f"alternate {mode} {arg}: {lines[-1]}")
        per_round = [[int(x) / 1000 for x in line.split()] for line in lines[:-2]]
        return Alternation(rounds=[list(column) for column in zip(*per_round)],
                           p99=[int(x) / 1000 for x in lines[-2].split()[1:]],
                           addresses=failures[3:], time_wait_growth=growth)

    def syscall_ns(self, cgroup: TempCgroup, count: int) -> float:
        result = cgroup.run([str(self.tools["syscall_loop"]), str(count)], timeout=600,
                            text=True)
        return float(result.stdout.split()[0])     # "MEDIAN MEAN": the median block


# ---------------------------------------------------------------------------
# The benchmarks


def bench_connect(bench: Bench, rounds: int, block: int, guarded: TempCgroup,
                  sibling: TempCgroup, name_ip: str, cidr_ip: str,
                  cidr2_ip: str) -> list[Row]:
    run = bench.alternate("connect", str(PORT), block, rounds, [
        (guarded, "one.egtest"), (guarded, cidr_ip), (guarded, cidr2_ip), (sibling, cidr_ip)])
    if run.addresses[0] != name_ip:
        raise RuntimeError(f"one.egtest resolved to {run.addresses[0]}, not {name_ip}")
    name, cidr, cidr2, unguarded = run.rounds
    tw = f"TIME_WAIT +{run.time_wait_growth} over {rounds * block * 4} connects"
    return [
        Row("1. connect+close, name-allowed vs CIDR-allowed (guarded)", "us/connect",
            name, cidr, cidr2, "<= 1.03", at_most(1.03),
            f"A/A: a 2nd CIDR address; p99 {run.p99[0]:.0f} vs {run.p99[1]:.0f} us; {tw}"),
        Row("   for scale: CIDR-allowed, guarded vs unguarded sibling", "us/connect",
            cidr, unguarded, None, "-", None, "the guard's whole cost on this path"),
    ]


def bpf_per_lookup(bench: Bench, agent: Agent, cgroup: TempCgroup, block: int,
                   rounds: int) -> dict[str, tuple[float, float]]:
    """BPF time per lookup in cgroup alone, per program of the agent's:
    name -> (ns per lookup, runs per lookup)."""
    ids = held_prog_ids(agent.proc.pid)
    time.sleep(0.3)                      # the agent done with earlier work
    with BpfStats():
        before = prog_stats(ids)
        bench.alternate("lookup", "one.egtest", block, rounds, [(cgroup, None)])
        after = prog_stats(ids)
    return per_operation(before, after, block * rounds)


def print_per_lookup(per: dict[str, dict[str, tuple[float, float]]]) -> None:
    """The BPF nanoseconds per lookup, per program, for each cgroup measured."""
    names = sorted({n for programs in per.values() for n in programs})
    labels = list(per)
    print("\n2b. BPF time per lookup (ns per lookup, runs per lookup), per program, "
          "measured alone with the kernel's run-time statistics\n")
    print("| program                  | " + " | ".join(f"{label:>22}" for label in labels))
    print("|--------------------------|" + "|".join("-" * 24 for _ in labels))
    for name in names:
        cells = []
        for label in labels:
            ns, runs = per[label].get(name, (0.0, 0.0))
            cells.append(f"{ns:>9.0f} ns x {runs:>4.1f}  " if runs else f"{'-':>22}")
        print(f"| {name:<24} | " + " | ".join(cells))
    totals = [sum(ns for ns, _ in per[label].values()) for label in labels]
    print("| total                    | " + " | ".join(f"{t:>9.0f} ns          " for t in totals))


def bench_dns(bench: Bench, rounds: int, block: int, guarded: TempCgroup, plain: TempCgroup,
              sibling: TempCgroup, sibling2: TempCgroup) -> list[Row]:
    variants = [(guarded, None), (sibling, None), (plain, None), (sibling2, None)]
    rows = []
    # free: where the scheduler puts them; pinned: the loop and the resolver
    # on one CPU, so a lookup's time is the CPU its two ends and the kernel
    # spend on it, without the idle CPU's wake-up (tens of us on this VM)
    # that makes most of the free row's spread
    for label, pin in (("", None), ("p", max(os.sched_getaffinity(0)))):
        run = bench.alternate("lookup", "one.egtest", block, rounds, variants, pin=pin)
        names, unguarded, plain_, unguarded2 = run.rounds
        name = ("2. DNS lookup (getaddrinfo, A), guarded vs unguarded" if pin is None else
                f"2p. the same, the loop and the resolver on CPU {pin}")
        rows += [
            Row(name, "us/lookup", names, unguarded, unguarded2, "no change", within_noise,
                f"A/A: a 2nd unguarded sibling; p99 {run.p99[0]:.0f} vs {run.p99[1]:.0f} us"),
            Row("   of which: names policy vs guarded, no names", "us/lookup",
                names, plain_, None, "-", None,
                "reading DNS: dns.bpf.c, the learned write, the event"),
            Row("   of which: guarded, no names vs unguarded", "us/lookup",
                plain_, unguarded, None, "-", None, "any guarded UDP socket"),
        ]
    return rows


def bench_unguarded(bench: Bench, rounds: int, block: int, syscalls: int, workdir: Path,
                    guarded: TempCgroup, sibling: TempCgroup, policy: Path,
                    cidr_ip: str) -> list[Row]:
    connects: dict[str, list[float]] = {"agent": [], "none": [], "none2": []}
    calls: dict[str, list[float]] = {"agent": [], "none": [], "none2": []}
    agent_cpu: list[float] = []
    sub_rounds = 10

    def measure(label: str) -> None:
        run = bench.alternate("connect", str(PORT), block, sub_rounds, [(sibling, cidr_ip)])
        connects[label].append(statistics.median(run.rounds[0]))
        calls[label].append(bench.syscall_ns(sibling, syscalls))

    for r in range(rounds):
        order = ["agent", "none", "none2"]
        for label in (order if r % 2 == 0 else order[::-1]):
            if label != "agent":
                measure(label)
                continue
            with Agent(workdir / f"agent-{r}", [guarded], policy) as agent:
                time.sleep(1.0)          # let its start-up work settle
                cpu, wall = agent.cpu_s(), time.monotonic()
                measure(label)
                agent_cpu.append((agent.cpu_s() - cpu) / (time.monotonic() - wall))
    return [
        Row("4. connect+close, unguarded process: agent on vs off", "us/connect",
            connects["agent"], connects["none"], connects["none2"], "no change",
            within_noise, "A/A: no agent vs no agent; the agent's own CPU meanwhile "
            f"{statistics.median(agent_cpu) * 100:.1f}% of one CPU"),
        Row("   getppid(), unguarded process: agent on vs off", "ns/call",
            calls["agent"], calls["none"], calls["none2"], "-", None,
            "the host-wide raw_tp/sys_enter hook is attached only for a loopback "
            "resolver (this one is not) or --syscall-hook"),
    ]


def learned_table_id(agent_pid: int, cgroup_id: int) -> int:
    """The id of the learned-address table (eg_dns_learned_in) the agent
    made for cgroup_id: the value at cgroup_id of the agent's own
    eg_dns_learned (found among the maps it holds open; other agents on this
    host have their own)."""
    fd = libbpf.map_fd_by_id(held_map(agent_pid, "eg_dns_learned")["id"])
    try:
        inner = ctypes.c_uint32()
        if not libbpf.map_lookup(fd, ctypes.c_uint64(cgroup_id), inner):
            raise RuntimeError(f"no learned table for cgroup {cgroup_id}")
        return inner.value
    finally:
        os.close(fd)


def other_agents() -> int:
    """egress-guard agents loaded on this host now (one eg_config map each)."""
    maps = json.loads(subprocess.run(["bpftool", "-j", "map", "show"], check=True,
                                     capture_output=True, text=True).stdout)
    return sum(1 for m in maps if m.get("name") == "eg_config")


def map_show(map_id: int) -> dict:
    return json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id", str(map_id)],
                                     check=True, capture_output=True, text=True).stdout)


def map_entries(map_id: int) -> int:
    fd = libbpf.map_fd_by_id(map_id)
    try:
        return len(libbpf.map_keys(fd, abi.LearnedKey))
    finally:
        os.close(fd)


def bench_memory(bench: Bench, workdir: Path, learner: TempCgroup, policy: Path) -> dict:
    resolver = bench.resolver
    names = resolver.learn_names
    with Agent(workdir / "agent-memory", [learner], policy) as agent:
        time.sleep(1.0)                              # start-up work done
        table = learned_table_id(agent.proc.pid, learner.id)
        before = map_show(table)
        rss_before = agent.rss_kib()
        result = resolver.run([str(bench.tools["resolve_loop"]), *names], learner, timeout=300)
        if result.returncode != 0 or result.stdout.strip() != "0":
            raise RuntimeError(f"resolving {len(names)} names: {result.stdout.strip()} failed; "
                               f"{result.stderr.strip()[-2000:]}")
        agent.wait_for(lambda e: e.get("kind") == "dns" and e.get("direction") == "answer"
                       and e["dns"].get("name", "").endswith(LEARN_ZONE),
                       timeout=60, count=len(names))
        time.sleep(1.0)                              # its records all handled
        after = map_show(table)
        return {"table": table, "name": after["name"], "max_entries": after["max_entries"],
                "memlock_before": before["bytes_memlock"],
                "memlock_after": after["bytes_memlock"], "entries": map_entries(table),
                "rss_before": rss_before, "rss_after": agent.rss_kib(),
                "book_holds": min(NameBook().per_workload, resolver.learn_count)}


def namebook_bytes(count: int, per_workload: int | None = None) -> tuple[int, int]:
    """(traced bytes, addresses held) of a NameBook that learned count
    addresses in one workload, LEARN_PER_NAME per name, as the agent does."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    book = NameBook(**({"per_workload": per_workload} if per_workload else {}))
    now = time.monotonic()
    for first in range(0, count, LEARN_PER_NAME):
        ips = [f"198.19.{128 + (i >> 8)}.{i & 0xFF}"
               for i in range(first, min(first + LEARN_PER_NAME, count))]
        book.learn(4242, f"n{first // LEARN_PER_NAME}.{LEARN_ZONE}", ips, TTL_S, now)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used, len(book)


# ---------------------------------------------------------------------------
# Output


def print_memory(memory: dict, book_default: tuple[int, int], book_all: tuple[int, int]) -> None:
    entries = memory["entries"]
    per = 10_000 / entries if entries else 0
    grown = memory["memlock_after"] - memory["memlock_before"]
    rss = memory["rss_after"] - memory["rss_before"]
    print(f"\n3. memory: {entries:,} addresses learned in one cgroup (its table: "
          f"{memory['name']}, map id {memory['table']}, max_entries {memory['max_entries']:,})\n")
    print(f"| {'what':<62} | {'before':>11} | {'after':>11} | {'per 10,000 addresses':>20}")
    print(f"|{'-' * 64}|{'-' * 13}|{'-' * 13}|{'-' * 22}")
    print(f"| {'kernel: learned table, bpftool bytes_memlock':<62} | "
          f"{memory['memlock_before'] / 1024:>7.0f} KiB | {memory['memlock_after'] / 1024:>7.0f} KiB"
          f" | {grown * per / 1024:>16.0f} KiB")
    print(f"| {'agent: VmRSS (its NameBook holds ' + str(memory['book_holds']) + ')':<62}"
          f" | {memory['rss_before'] / 1024:>7.1f} MiB | {memory['rss_after'] / 1024:>7.1f} MiB"
          f" | {rss * per / 1024:>16.1f} MiB")
    for label, (used, held) in (("default bounds", book_default),
                                ("per-workload bound raised", book_all)):
        print(f"| {f'agent: NameBook alone, {label}, holds {held}':<62} | {'-':>11} | "
              f"{used / 1048576:>7.2f} MiB | {used * 10_000 / max(held, 1) / 1048576:>16.2f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=60,
                        help="alternation rounds of rows 1 and 2 (default 60)")
    parser.add_argument("--connects", type=int, default=200,
                        help="connects per variant per round (default 200)")
    parser.add_argument("--lookups", type=int, default=100,
                        help="lookups per variant per round (default 100)")
    parser.add_argument("--agent-rounds", type=int, default=16,
                        help="agent on/off rounds of row 4 (default 16: with 8 its ratio "
                             "moved by 5%% from run to run)")
    parser.add_argument("--syscalls", type=int, default=1_000_000,
                        help="getppid() calls per loop of row 4 (default 1,000,000)")
    parser.add_argument("--learn", type=int, default=10_000,
                        help="addresses to learn for row 3 (default 10,000; a table holds 16384)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/names.py needs root", file=sys.stderr)
        return 4
    if not shutil.which("bpftool"):
        print("bench/names.py needs bpftool", file=sys.stderr)
        return 4
    cgroup2_mount()
    started = time.monotonic()
    others = other_agents()
    load_before = Path("/proc/loadavg").read_text().split()[0]
    with tempfile.TemporaryDirectory(prefix=f"{TAG}-") as tmp:
        workdir = Path(tmp)
        tools = build(workdir)
        with BenchResolver(workdir, args.learn) as resolver, \
                AcceptServer(resolver, tools["accept_loop"], PORT) as server, \
                TempCgroup(f"{TAG}-guarded") as guarded, \
                TempCgroup(f"{TAG}-plain") as plain, \
                TempCgroup(f"{TAG}-learn") as learner, \
                TempCgroup(f"{TAG}-sibling") as sibling, \
                TempCgroup(f"{TAG}-sibling2") as sibling2, \
                TempCgroup(f"{TAG}-loop") as loop:
            bench = Bench(tools, resolver, server, loop)
            name_ip = resolver.addresses("one.egtest")[0]
            cidr_ip, cidr2_ip = (resolver.addresses(n)[0] for n in ("two.egtest", "three.egtest"))
            policy = workdir / "policy.yaml"
            write_policy(policy, resolver, [cidr_ip, cidr2_ip], named=[guarded, learner],
                         plain=[plain])
            memory = bench_memory(bench, workdir, learner, policy)
            with Agent(workdir / "agent", [guarded, plain], policy) as agent:
                rows = bench_connect(bench, args.rounds, args.connects, guarded, sibling,
                                     name_ip, cidr_ip, cidr2_ip)
                rows += bench_dns(bench, args.rounds, args.lookups, guarded, plain, sibling,
                                  sibling2)
                per_lookup = {
                    "names policy": bpf_per_lookup(bench, agent, guarded, args.lookups, 10),
                    "guarded, no names": bpf_per_lookup(bench, agent, plain, args.lookups, 10)}
            rows += bench_unguarded(bench, args.agent_rounds, args.connects, args.syscalls,
                                    workdir, guarded, sibling, policy, cidr_ip)
    book_default = namebook_bytes(args.learn)
    book_all = namebook_bytes(args.learn, per_workload=max(args.learn, 1))
    load_after = Path("/proc/loadavg").read_text().split()[0]
    print(f"\nallow by name (issue 15): rows 1-2 {args.rounds} rounds of {args.connects} "
          f"connects / {args.lookups} lookups per variant, in one process each; row 4 "
          f"{args.agent_rounds} agent on/off rounds; {os.cpu_count()} CPUs, Linux "
          f"{os.uname().release}; {time.monotonic() - started:.0f} s; load average "
          f"{load_before} -> {load_after}; other egress-guard agents loaded at start: {others}\n")
    print_rows(rows, name_width=56, digits=1)
    print_per_lookup(per_lookup)
    print_memory(memory, book_default, book_all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
