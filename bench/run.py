# SPDX-License-Identifier: Apache-2.0
"""egress-guard overhead benchmarks: ratios against baselines of the same run,
each beside an A/A ratio (the baseline against a second copy of itself).

    sudo .venv/bin/python bench/run.py [--rounds N] [--connects N] [--execs N]
                                       [--agent-rounds N] [--old-connects N]
                                       [--tree DIR] [--skip-exec]

About two minutes with the defaults. --tree DIR runs the agent from another
checkout (with its objects built), to measure one version while the work
tree changes under it.

How the connect rows are measured (issue 16): one compiled process
(bench/connect_loop.c -a) runs every variant in turn, a block of --connects
connections each, moving itself into the variant's cgroup before its block
(a socket belongs to the cgroup its creator was in), --rounds times, the
order reversed every other round, with an untimed pause after each block
so the agent's work for one block (writing its events) is not billed to
the next. A row's ratio is the median over rounds of measured/baseline of
the same round, so drift and other work on this shared two-core machine hit
both sides of a pair alike. Each connection is socket() + SO_LINGER {1,0} +
connect() + close(): the close sends a RST and leaves no TIME_WAIT, so the
ephemeral ports never run out. The loop is started in the listener's
cgroup, which nothing guards, so no guarded cgroup sees its exec. All
connect loops run in a network namespace of their own (loopback only), so
their ports and TIME_WAIT sockets are theirs alone; TIME_WAIT is counted
from the namespace's /proc/PID/net/tcp before and after each run.

Rows:
(a) connect+close, guarded vs an unguarded sibling; A/A: a second unguarded
    sibling against the first. With the embedded default policy (one agent
    started without --policy; target <= 1.05: its logged connects are
    folded, one event per fold window, `run --fold-window-ms`, default
    1000); the same with --fold-window-ms 0 (a second agent: every connect
    an event, the cost of unfolded logging); and, from a third agent with
    one policy per cgroup: the default policy with every detection `off`;
    the same with defaultAction allow (nothing logged: the kernel alone);
    10,000 /32 block rules with the destination allowed (the old row).
(b) the tax on processes the guard does not guard: a getppid() loop
    (bench/syscall_loop.c) and a connect block in an unguarded cgroup, an
    agent (embedded default policy) guarding another cgroup vs no agent at
    all, started and stopped every round; A/A: no agent vs no agent.
    Target <= 1.02.
(c) BPF nanoseconds per connection per program, from the kernel's run-time
    statistics (bpftool's run_time_ns / run_cnt of the agent's programs),
    on only while those connections run (BPF_ENABLE_STATS: an fd, so no
    sysctl is changed and the statistics go off when it closes, even if
    this process dies). The raw_tp/sys_enter program (attached only with
    `run --syscall-hook` or a names policy: 0 here) would run for every
    system call of every task on the host: an equally long window just
    before, with nothing of this benchmark running, is subtracted from its
    figures; what remains is the loop's 4 system calls and the listener's 2.
(e) --container-parent: a cgroup below the parent that the agent took over
    (the parent's sentinel hooks and its own), one below it not taken over
    (the sentinel's only) and a guarded cgroup elsewhere, same agent.
(d) fork+exec of /bin/true, guarded (every exec reported) vs unguarded, and
    libbpf-tools' execsnoop running vs not as the baseline of exec tracing;
    agent start-up and resident memory.
Before/after: the loop this script ran until issue 16 (--old-connects
connections in a row, plain close, no pause; default 20,000), guarded vs
sibling under the embedded default policy, in a namespace of its own so
the ports it exhausts are nobody else's.

Everything it makes (cgroups tagged egbench-run, network namespaces,
listeners, agents with private control sockets, the temporary directory) is
removed on exit; processes are ended by pid.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from guard.demo.sandbox import TempCgroup  # noqa: E402
from guard.workloads.cgroups import cgroup2_mount  # noqa: E402
from procstat import FileAgent  # noqa: E402
from bpfstats import (SYS_ENTER, BpfStats, foreign_agents, held_prog_ids,  # noqa: E402
                      prog_stats)
from ratios import Row, at_most, compile_tools, print_rows  # noqa: E402

PORT = 29500
TAG = "egbench-run"
TRACEFS = Path("/sys/kernel/tracing")
AGENT_ROOT = ROOT        # --tree: the agent's code from another checkout
TCP_TIME_WAIT = "06"
# The previous figure of docs/performance.md ("Connect and exec"), measured
# with the old loop: 20,000 connects per whole-loop round, plain close.
OLD_DOC_FIGURE = "1.045 to 1.058 (10,000-CIDR policy, destination allowed)"

# The programs of part (c), in the order printed: (program name, label)
PROGRAMS = [
    ("guard_connect4", "cgroup/connect4"),
    ("guard_sock_create", "cgroup/sock_create"),
    ("guard_sock_release", "cgroup/sock_release (flow)"),
    ("guard_egress", "cgroup_skb/egress (flow)"),
    ("guard_ingress", "cgroup_skb/ingress (flow)"),
    ("guard_dns_query", "cgroup_skb/egress (dns)"),
    ("guard_dns_answer", "cgroup_skb/ingress (dns)"),
    ("guard_socket_syscall", "raw_tp/sys_enter (host-wide)"),
]


def build(out: Path) -> dict[str, Path]:
    return compile_tools(out, ("connect_loop", "syscall_loop", "exec_loop", "accept_loop"))


# ---------------------------------------------------------------------------
# Namespaces, listeners, agents


class NetNS:
    """A network namespace of this run's own with only loopback up: its
    ephemeral ports and TIME_WAIT sockets belong to this benchmark alone."""

    def __init__(self, suffix: str):
        self.name = f"{TAG}-{os.getpid()}-{suffix}"
        self.made = False

    def __enter__(self) -> "NetNS":
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.made = True
        try:
            subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def argv(self, argv: list[str]) -> list[str]:
        """argv run inside the namespace (nsenter execs it: same pid, and
        the mounts, /sys/fs/cgroup among them, stay as they are)."""
        return ["nsenter", f"--net=/run/netns/{self.name}", *argv]

    def close(self) -> None:
        if self.made:
            subprocess.run(["ip", "netns", "del", self.name], check=False)
            self.made = False


class Listener:
    """bench/accept_loop.c on 127.0.0.1:PORT in the namespace, in a cgroup
    no agent guards."""

    def __init__(self, ns: NetNS, binary: Path, cgroup: TempCgroup):
        self.ns = ns
        self.argv = ns.argv([str(binary), str(PORT)])
        self.cgroup = cgroup
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Listener":
        self.proc = self.cgroup.popen(self.argv, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "listening":
            self.close()
            raise RuntimeError(f"{self.argv}: the listener did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def time_wait(self) -> int:
        """TIME_WAIT sockets to or from PORT in the listener's namespace."""
        count = 0
        for table in ("tcp", "tcp6"):
            try:
                lines = Path(f"/proc/{self.proc.pid}/net/{table}").read_text().splitlines()
            except FileNotFoundError:
                continue
            for line in lines[1:]:
                fields = line.split()
                ports = {int(fields[1].rsplit(":", 1)[1], 16),
                         int(fields[2].rsplit(":", 1)[1], 16)}
                if fields[3] == TCP_TIME_WAIT and PORT in ports:
                    count += 1
        return count

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc.stdout.close()
            self.proc = None


class Agent(FileAgent):
    """The benchmark's agent (procstat.FileAgent), from AGENT_ROOT (--tree)."""

    def __init__(self, workdir: Path, cgroups: list[TempCgroup], policy: Path | None = None,
                 extra: tuple[str, ...] = ()):
        super().__init__(workdir, cgroups, policy, TAG, AGENT_ROOT, extra)

    def event_lines(self) -> int:
        try:
            with open(self.events_path, "rb") as fh:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
        except FileNotFoundError:
            return 0

    def prog_ids(self) -> set[int]:
        """The BPF programs this agent holds (program and link fds)."""
        return held_prog_ids(self.proc.pid)


def selector(cgroup: TempCgroup) -> str:
    return f'["/{cgroup.path.relative_to(cgroup2_mount())}"]'


def write_policies(path: Path, off: TempCgroup, quiet: TempCgroup, cidrs: TempCgroup,
                   cidr_count: int = 10_000) -> None:
    """One file, a policy per cgroup: the embedded default with every
    detection off; the same with defaultAction allow (nothing logged);
    cidr_count /32 block rules in 10.0.0.0/8 (never contacted), the rest
    allowed silently, detections left out (each then `log`), as the old row."""
    detections_off = "\n".join(f"    {key}: off" for key in (
        "stratum", "minerExec", "sshReverseTunnel", "tunnelTool", "reverseShell", "sshOutbound"))

    def default_like(name: str, cgroup: TempCgroup, action: str) -> str:
        return (f"apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: {name}\n"
                f"spec:\n  defaultAction: {action}\n  selector:\n"
                f"    cgroupPaths: {selector(cgroup)}\n  egress: []\n  exec: []\n"
                f"  sockets:\n    raw: deny\n  detections:\n{detections_off}\n")
    base = (10 << 24) + 1
    rules = "".join(f"        - cidr: {(a >> 24) & 255}.{(a >> 16) & 255}.{(a >> 8) & 255}."
                    f"{a & 255}/32\n" for a in (base + i * 7 for i in range(cidr_count)))
    many = (f"apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n"
            f"  name: cidrs-{cidr_count}\nspec:\n  defaultAction: allow\n  selector:\n"
            f"    cgroupPaths: {selector(cidrs)}\n  egress:\n    - name: many-cidrs\n"
            f"      action: block\n      to:\n{rules}")
    path.write_text("---\n".join([default_like("detections-off", off, "log"),
                                  default_like("detections-off-allow", quiet, "allow"), many]))


# ---------------------------------------------------------------------------
# Measuring


@dataclass
class Alternation:
    """One run of connect_loop -a, per variant in the order given."""
    means: list[list[float]]     # per variant: each round's mean us per connection
    medians: list[list[float]]   # per variant: each round's median us per connection
    time_wait: tuple[int, int]   # TIME_WAIT to/from PORT before and after
    slowest_us: float
    connections: int


def alternate(ns: NetNS, listener: Listener, tools: dict[str, Path],
              cgroups: list[TempCgroup], block: int, rounds: int, gap_ms: int) -> Alternation:
    """Run connect_loop -a (see bench/connect_loop.c). It is started in the
    listener's cgroup, which no agent guards, and moves itself: no guarded
    cgroup sees its exec."""
    tw_before = listener.time_wait()
    argv = ns.argv([str(tools["connect_loop"]), "-a", "127.0.0.1", str(PORT), str(block),
                    str(rounds), str(gap_ms), *(str(cg.path) for cg in cgroups)])
    timeout = 60 + rounds * len(cgroups) * (block * 0.001 + gap_ms / 1000)
    result = listener.cgroup.run(argv, timeout=timeout, text=True)
    tw_after = listener.time_wait()
    lines = result.stdout.splitlines()
    if result.returncode != 0 or not lines or not lines[-1].startswith("failures "):
        raise RuntimeError(f"connect_loop -a: exit {result.returncode}: "
                           f"{result.stderr.strip()[-2000:]}")
    _, failures, errno_, slowest = lines[-1].split()
    if int(failures):
        raise RuntimeError(f"connect_loop -a: {failures} connections failed "
                           f"(last errno {errno_})")
    per_round = [[int(x) / 1000 for x in line.split()] for line in lines[:-1]]
    return Alternation(means=[[r[2 * i] for r in per_round] for i in range(len(cgroups))],
                       medians=[[r[2 * i + 1] for r in per_round] for i in range(len(cgroups))],
                       time_wait=(tw_before, tw_after), slowest_us=int(slowest) / 1000,
                       connections=block * rounds * len(cgroups))


def old_loop(ns: NetNS, listener: Listener, tools: dict[str, Path], cgroup: TempCgroup,
             count: int) -> tuple[float, int, int]:
    """The old shape: count connect+close in a row, plain close. (us per
    connection, TIME_WAIT before, TIME_WAIT after)"""
    tw_before = listener.time_wait()
    argv = ns.argv([str(tools["connect_loop"]), "127.0.0.1", str(PORT), str(count),
                    str(cgroup.path)])
    result = listener.cgroup.run(argv, timeout=60 + count * 0.002, text=True)
    tw_after = listener.time_wait()
    if result.returncode != 0:
        raise RuntimeError(f"connect_loop: exit {result.returncode}: {result.stderr[-2000:]}")
    elapsed, failures = map(int, result.stdout.split())
    if failures:
        raise RuntimeError(f"connect_loop: {failures} of {count} connections failed")
    return elapsed / count / 1000, tw_before, tw_after


def syscall_ns(tools: dict[str, Path], cgroup: TempCgroup, count: int) -> float:
    """getppid() ns per call: the median block of the loop."""
    result = cgroup.run([str(tools["syscall_loop"]), str(count)], timeout=600, text=True)
    return float(result.stdout.split()[0])


def whole_loop_ns(cgroup: TempCgroup, argv: list[str], ops: int) -> float:
    result = cgroup.run(argv, timeout=600, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} in {cgroup.path.name}: exit {result.returncode} "
                           f"{result.stderr.strip()[-500:]}")
    elapsed, failures = map(int, result.stdout.split())
    if failures:
        raise RuntimeError(f"{argv[0]}: {failures} of {ops} operations failed")
    return elapsed / ops


@dataclass
class PerConnection:
    """BPF time per connection, per program: name -> (ns per connection, runs per connection)."""
    label: str
    programs: dict[str, tuple[float, float]]
    connections: int
    how: str


def bpf_per_connection(label: str, agent: Agent, ns: NetNS, listener: Listener,
                       tools: dict[str, Path], cgroup: TempCgroup, block: int, rounds: int,
                       gap_ms: int) -> PerConnection:
    """Connections in cgroup alone, BPF statistics on for them only. The
    host-wide sys_enter program also runs for every other task's system
    calls: a window as long as the run, just before it with nothing of this
    benchmark running, is subtracted from its figures (other tasks vary, so
    that row is the noisiest)."""
    ids = agent.prog_ids()
    time.sleep(0.5)                      # the agent done with earlier work
    with BpfStats() as on:
        idle0 = prog_stats(ids)
        t0 = time.monotonic()
        run_s = rounds * (block * 25e-6 + gap_ms / 1000)   # about the run's length
        time.sleep(run_s)
        idle1 = prog_stats(ids)
        idle_s = time.monotonic() - t0
        before = prog_stats(ids)
        t0 = time.monotonic()
        run = alternate(ns, listener, tools, [cgroup], block, rounds, gap_ms)
        after = prog_stats(ids)
        busy_s = time.monotonic() - t0
    n = run.connections

    def delta(a, b, name):
        return [x - y for x, y in zip(a.get(name, (0, 0)), b.get(name, (0, 0)))]
    programs = {}
    for name in after:
        t, c = delta(after, before, name)
        if name == SYS_ENTER:
            it, ic = delta(idle1, idle0, name)
            t -= it * busy_s / idle_s
            c -= ic * busy_s / idle_s
        programs[name] = (t / n, c / n)
    return PerConnection(label, programs, n, on.how)


def connect_rows(run: Alternation, labels: list[tuple[str, str, Callable | None]],
                 agent_note: str) -> list[Row]:
    """Rows for the guarded variants of run (all but its last two, the
    unguarded siblings): each against the first sibling, the second sibling
    as the A/A."""
    base, aa = run.means[-2], run.means[-1]
    rows = []
    for i, (name, target, judge) in enumerate(labels):
        median_ratio = statistics.median(
            m / b for m, b in zip(run.medians[i], run.medians[-2]))
        note = f"by per-connection medians {median_ratio:.3f}"
        if i == 0:
            note += (f"; TIME_WAIT {run.time_wait[0]} -> {run.time_wait[1]} over "
                     f"{run.connections:,} connections; slowest {run.slowest_us:.0f} us; "
                     f"{agent_note}")
        rows.append(Row(name, "us/conn", run.means[i], base, aa, target, judge, note))
    return rows


# ---------------------------------------------------------------------------
# The parts


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    per_connection: list[PerConnection] = field(default_factory=list)
    before: list[tuple[str, float, int, int]] = field(default_factory=list)
    before_ratio: float | None = None
    startup_s: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    foreign: list[int] = field(default_factory=list)   # other agents seen at each sample
    notes: list[str] = field(default_factory=list)


def agent_load(agent: Agent, cpu0: float, events0: int) -> str:
    events = agent.event_lines() - events0
    cpu = agent.cpu_s() - cpu0
    # per event only where events are what it spent its CPU on (folded: a few
    # dozen events, the CPU being its ticks and flushes)
    per = f", {cpu / events * 1e6:.0f} us of agent CPU per event" if events >= 1000 else ""
    return f"agent: {events:,} events written, {cpu * 1000:.0f} ms of CPU{per}"


def part_default(args, res: Results, tools, workdir: Path, ns: NetNS, listener: Listener,
                 ns_old: NetNS | None, old_listener: Listener | None,
                 guarded: TempCgroup, s1: TempCgroup, s2: TempCgroup) -> None:
    """(a) with the embedded default policy, (c) for it, and the old loop."""
    with Agent(workdir / "agent-default", [guarded]) as agent:
        time.sleep(1.0)                  # its start-up work done
        cpu0, events0 = agent.cpu_s(), agent.event_lines()
        run = alternate(ns, listener, tools, [guarded, s1, s2], args.connects, args.rounds,
                        args.gap_ms)
        res.rows += connect_rows(run, [(
            "(a) connect+close, embedded default policy, guarded vs sibling",
            "<= 1.05", at_most(1.05))], agent_load(agent, cpu0, events0))
        res.per_connection.append(bpf_per_connection(
            "default", agent, ns, listener, tools, guarded, args.connects,
            args.stats_rounds, args.gap_ms))
        if ns_old is None:
            return
        # the old shape, both orders: (guarded, sibling), (sibling, guarded)
        ratios = []
        for r in range(2):
            order = [("guarded", guarded), ("sibling", s1)]
            took = {}
            for label, cg in (order if r == 0 else order[::-1]):
                us, tw0, tw1 = old_loop(ns_old, old_listener, tools, cg, args.old_connects)
                res.before.append((f"round {r + 1}, {label}", us, tw0, tw1))
                took[label] = us
            ratios.append(took["guarded"] / took["sibling"])
        res.before_ratio = statistics.mean(ratios)


def part_unfolded(args, res: Results, tools, workdir: Path, ns: NetNS, listener: Listener,
                  guarded: TempCgroup, s1: TempCgroup, s2: TempCgroup) -> None:
    """(a) with the embedded default policy and --fold-window-ms 0, (c) for it."""
    with Agent(workdir / "agent-unfolded", [guarded], extra=("--fold-window-ms", "0")) as agent:
        time.sleep(1.0)
        cpu0, events0 = agent.cpu_s(), agent.event_lines()
        run = alternate(ns, listener, tools, [guarded, s1, s2], args.connects, args.rounds,
                        args.gap_ms)
        res.rows += connect_rows(run, [(
            "    the same, --fold-window-ms 0 (every connect an event)", "-", None)],
            agent_load(agent, cpu0, events0))
        res.per_connection.append(bpf_per_connection(
            "default, fold 0", agent, ns, listener, tools, guarded, args.connects,
            args.stats_rounds, args.gap_ms))


def part_policies(args, res: Results, tools, workdir: Path, ns: NetNS, listener: Listener,
                  off: TempCgroup, quiet: TempCgroup, cidrs: TempCgroup,
                  s1: TempCgroup, s2: TempCgroup) -> None:
    """(a) with detections off, off + allow, 10,000 CIDRs; (c) for each."""
    policy = workdir / "policies.yaml"
    write_policies(policy, off, quiet, cidrs)
    with Agent(workdir / "agent-policies", [off, quiet, cidrs], policy) as agent:
        time.sleep(1.0)
        cpu0, events0 = agent.cpu_s(), agent.event_lines()
        run = alternate(ns, listener, tools, [off, quiet, cidrs, s1, s2], args.connects,
                        args.rounds, args.gap_ms)
        res.rows += connect_rows(run, [
            ("    every detection off (every connect logged, folded)", "<= 1.05", at_most(1.05)),
            ("    every detection off, defaultAction allow (no events)", "-", None),
            ("    10,000 CIDR rules, destination allowed (the old row)", "-", None),
        ], agent_load(agent, cpu0, events0))
        for label, cg in (("detections off", off), ("off, allow", quiet),
                          ("10k CIDRs", cidrs)):
            res.per_connection.append(bpf_per_connection(
                label, agent, ns, listener, tools, cg, args.connects, args.stats_rounds,
                args.gap_ms))


def part_parent(args, res: Results, tools, workdir: Path, ns: NetNS, listener: Listener,
                elsewhere: TempCgroup, s1: TempCgroup, s2: TempCgroup) -> None:
    """(e) --container-parent (issue 19): a cgroup below the parent that the
    agent took over runs the parent's sentinel hooks (one lookup, then they
    return) and its own; one not taken over only the sentinel's (judged by
    the parent's policy). Against a guarded cgroup outside the parent under
    the same agent and policy; (c) for each."""
    with TempCgroup(f"{TAG}-parent") as parent, \
            TempCgroup(parent=parent.path, name="adopted") as adopted, \
            TempCgroup(parent=parent.path, name="below") as below:
        with Agent(workdir / "agent-parent", [adopted, elsewhere],
                   extra=("--container-parent", str(parent.path))) as agent:
            time.sleep(1.0)
            cpu0, events0 = agent.cpu_s(), agent.event_lines()
            run = alternate(ns, listener, tools, [adopted, below, elsewhere, s1, s2],
                            args.connects, args.rounds, args.gap_ms)
            res.rows += connect_rows(run, [
                ("(e) guarded below a container parent (its hooks and the parent's)", "-", None),
                ("    below the parent, not taken over (the parent's hooks only)", "-", None),
                ("    guarded, not below a parent (same agent and policy)", "-", None),
            ], agent_load(agent, cpu0, events0))
            for label, cg in (("below parent, taken over", adopted),
                              ("below parent, sentinel only", below)):
                res.per_connection.append(bpf_per_connection(
                    label, agent, ns, listener, tools, cg, args.connects, args.stats_rounds,
                    args.gap_ms))


def wait_alone(mine: set[int], limit_s: float) -> bool:
    """Wait up to limit_s for no other agent's sys_enter program to be
    loaded (other sessions' tests start agents): whether it came to that."""
    deadline = time.monotonic() + limit_s
    while foreign_agents(mine):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def part_unguarded(args, res: Results, tools, workdir: Path, ns: NetNS, listener: Listener,
                   idle: TempCgroup, unguarded: TempCgroup) -> None:
    """(b): an agent guarding idle vs no agent, measured in unguarded. Another
    agent's sys_enter program taxes every side alike, so each sample waits
    for none to be loaded, and a round in which one was loaded during a
    sample is left out of the rows (unless too few are left)."""
    labels = ("agent", "none", "none2")
    rounds: list[dict[str, tuple[float, float, bool]]] = []

    def measure(mine: set[int] = frozenset()) -> tuple[float, float, bool]:
        alone = wait_alone(mine, args.alone_wait)
        calls = syscall_ns(tools, unguarded, args.syscalls)
        run = alternate(ns, listener, tools, [unguarded], args.connects, 3, args.gap_ms)
        alone = alone and not foreign_agents(mine)
        res.foreign.append(0 if alone else 1)
        return calls, statistics.median(run.means[0]), alone

    for r in range(args.agent_rounds):
        took = {}
        for label in (labels if r % 2 == 0 else labels[::-1]):
            if label != "agent":
                took[label] = measure()
                continue
            with Agent(workdir / f"agent-tax-{r}", [idle]) as agent:
                res.startup_s.append(agent.startup_s)
                res.rss_kib.append(agent.rss_ready_kib)
                time.sleep(1.0)
                took[label] = measure(agent.prog_ids())
            time.sleep(1.0)              # its exit and the programs' release done
        rounds.append(took)
    clean = [t for t in rounds if all(alone for _, _, alone in t.values())]
    used = clean if len(clean) >= 3 else rounds
    note = (f"{len(used)} of {len(rounds)} rounds, "
            + ("those with no other agent's sys_enter attached" if used is clean else
               f"ALL (only {len(clean)} had no other agent's sys_enter attached: "
               "every side taxed)"))

    def column(label: str, index: int) -> list[float]:
        return [t[label][index] for t in used]
    res.rows.append(Row("(b) getppid(), unguarded process: agent vs no agent", "ns/call",
                        column("agent", 0), column("none", 0), column("none2", 0), "<= 1.02",
                        at_most(1.02), f"any host-wide hook of the agent's; {note}"))
    res.rows.append(Row("    connect+close, unguarded process: agent vs no agent", "us/conn",
                        column("agent", 1), column("none", 1), column("none2", 1), "-", None))


def part_exec(args, res: Results, tools, workdir: Path, guarded: TempCgroup,
              s1: TempCgroup, s2: TempCgroup) -> None:
    """(d) fork+exec, whole loops, the order reversed every other round."""
    argv = [str(tools["exec_loop"]), "/bin/true", str(args.execs)]
    took: dict[str, list[float]] = {"guarded": [], "s1": [], "s2": []}
    with Agent(workdir / "agent-exec", [guarded]):
        time.sleep(1.0)
        for r in range(args.exec_rounds):
            order = [("guarded", guarded), ("s1", s1), ("s2", s2)]
            for label, cg in (order if r % 2 == 0 else order[::-1]):
                took[label].append(whole_loop_ns(cg, argv, args.execs) / 1000)
    res.rows.append(Row("(d) fork+exec /bin/true, every exec reported", "us/exec",
                        took["guarded"], took["s1"], took["s2"], "<= 1.05", at_most(1.05)))
    snoop, why = execsnoop_rounds(args, tools, s1)
    if snoop:
        res.rows.append(Row("    baseline: execsnoop (libbpf-tools) on vs off", "us/exec",
                            snoop[0], snoop[1], None, "-", None))
    else:
        res.notes.append(f"execsnoop row skipped: {why}")


def execsnoop_rounds(args, tools, cgroup: TempCgroup):
    """execsnoop running vs not, same loop, same unguarded cgroup."""
    execsnoop = shutil.which("execsnoop") or "/usr/sbin/execsnoop"
    if not os.path.exists(execsnoop):
        return None, "execsnoop not installed (Debian package libbpf-tools)"
    mounted_here = False
    if not (TRACEFS / "events").is_dir():
        # execsnoop uses classic tracepoints, which need tracefs
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True)
        mounted_here = True
    argv = [str(tools["exec_loop"]), "/bin/true", str(args.execs)]
    traced, plain = [], []
    try:
        def with_execsnoop() -> float:
            snoop = subprocess.Popen([execsnoop], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
            try:
                time.sleep(1.0)  # let it attach
                if snoop.poll() is not None:
                    raise RuntimeError(f"execsnoop exited: {snoop.stderr.read().decode()}")
                return whole_loop_ns(cgroup, argv, args.execs) / 1000
            finally:
                snoop.terminate()
                snoop.wait(timeout=10)
                snoop.stderr.close()
        for r in range(args.exec_rounds):
            if r % 2 == 0:
                traced.append(with_execsnoop())
                plain.append(whole_loop_ns(cgroup, argv, args.execs) / 1000)
            else:
                plain.append(whole_loop_ns(cgroup, argv, args.execs) / 1000)
                traced.append(with_execsnoop())
        return (traced, plain), None
    finally:
        if mounted_here:
            subprocess.run(["umount", str(TRACEFS)], check=False)


# ---------------------------------------------------------------------------
# Output


def print_per_connection(per: list[PerConnection]) -> None:
    if not per:
        return
    print(f"\n(c) BPF time per connection, by program (ns per connection = runs per "
          f"connection x ns per run; statistics on through {per[0].how}, for "
          f"{per[0].connections:,} connections in the guarded cgroup alone)\n")
    print(f"| {'program':<38} | " + " | ".join(f"{p.label:>22}" for p in per))
    print(f"|{'-' * 40}|" + "|".join("-" * 24 for _ in per))
    for name, label in PROGRAMS:
        cells = []
        for p in per:
            ns_, runs = p.programs.get(name, (0.0, 0.0))
            if name == SYS_ENTER and runs < 0:
                cells.append("- (idle was busier)")   # other tasks' calls swamped it
            else:
                cells.append(f"{ns_:>6.0f} ({runs:4.1f} x {ns_ / runs:>4.0f})" if runs > 0.05
                             else f"{ns_:>6.0f}")
        if name == SYS_ENTER:
            label += ", net of idle"
        print(f"| {label:<38} | " + " | ".join(f"{c:>22}" for c in cells))
    totals = []
    for p in per:
        guard = sum(p.programs.get(name, (0.0, 0.0))[0] for name, _ in PROGRAMS
                    if name != SYS_ENTER)
        totals.append(f"{guard + max(p.programs.get(SYS_ENTER, (0.0, 0.0))[0], 0):>6.0f} "
                      f"({guard:.0f})")
    print(f"| {'total (without sys_enter)':<38} | " + " | ".join(f"{t:>22}" for t in totals))


def print_before(res: Results, args) -> None:
    if not res.before:
        return
    print(f"\nbefore/after: the old loop ({args.old_connects:,} connect+close in a row, "
          f"plain close, no pause), embedded default policy, in a namespace of its own\n")
    print(f"| {'run':<22} | {'us/conn':>8} | {'TIME_WAIT before':>16} | {'after':>7}")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 18}|{'-' * 9}")
    for label, us, tw0, tw1 in res.before:
        print(f"| {label:<22} | {us:>8.1f} | {tw0:>16,} | {tw1:>7,}")
    new = res.rows[0] if res.rows and res.rows[0].name.startswith("(a)") else None
    if new is None or res.before_ratio is None:
        return
    print(f"\nold loop: guarded/sibling {res.before_ratio:.3f} (mean of the 2 rounds' ratios); "
          f"new loop: {new.ratio:.3f} at {statistics.median(new.baseline):.1f} us a connection "
          f"unguarded (A/A {new.aa_ratio:.3f}); docs/performance.md until issue 16: "
          f"{OLD_DOC_FIGURE}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=60,
                        help="alternation rounds of the connect rows (default 60: with "
                             "30 the median of a row moved by +-3%% from run to run)")
    parser.add_argument("--connects", type=int, default=1000,
                        help="connections per variant per round (default 1000; until issue "
                             "16 this was per whole-loop round)")
    parser.add_argument("--gap-ms", type=int, default=50,
                        help="untimed pause after each block (default 50)")
    parser.add_argument("--stats-rounds", type=int, default=5,
                        help="blocks of --connects per variant with BPF statistics on "
                             "(default 5)")
    parser.add_argument("--agent-rounds", type=int, default=16,
                        help="agent on/off rounds of the syscall-tax rows (default 16: "
                             "with 8, one run of a row with nothing on its path read 1.054)")
    parser.add_argument("--alone-wait", type=float, default=20,
                        help="seconds a syscall-tax sample waits for other agents to "
                             "unload (default 20)")
    parser.add_argument("--syscalls", type=int, default=1_000_000,
                        help="getppid() calls per loop (default 1,000,000)")
    parser.add_argument("--execs", type=int, default=1_000,
                        help="fork+execs per loop (default 1,000)")
    parser.add_argument("--exec-rounds", type=int, default=5,
                        help="rounds of the exec rows (default 5)")
    parser.add_argument("--old-connects", type=int, default=20_000,
                        help="connections per run of the old loop, for before/after "
                             "(default 20,000; 0 skips it)")
    parser.add_argument("--skip-exec", action="store_true", help="leave out the exec rows")
    parser.add_argument("--tree", type=Path, metavar="DIR",
                        help="run the agent from DIR, a checkout with its objects built "
                             "(e.g. `git archive HEAD` unpacked and `make -C bpf`), to measure "
                             "one version while this work tree changes")
    args = parser.parse_args()
    global AGENT_ROOT
    if args.tree:
        AGENT_ROOT = args.tree.resolve()
        if not (AGENT_ROOT / "guard" / "objects").is_dir():
            print(f"--tree {args.tree}: no guard/objects (make -C bpf there)", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("bench/run.py needs root", file=sys.stderr)
        return 4
    for tool in ("bpftool", "nsenter", "ip"):
        if not shutil.which(tool):
            print(f"bench/run.py needs {tool}", file=sys.stderr)
            return 4
    cgroup2_mount()
    started = time.monotonic()
    load_before = Path("/proc/loadavg").read_text().split()[0]
    others_before = foreign_agents()
    res = Results()
    with tempfile.TemporaryDirectory(prefix=f"{TAG}-") as tmp:
        workdir = Path(tmp)
        tools = build(workdir)
        with NetNS("loop") as ns, \
                NetNS("old") as ns_old, \
                TempCgroup(f"{TAG}-server") as server_cg, \
                Listener(ns, tools["accept_loop"], server_cg) as listener, \
                Listener(ns_old, tools["accept_loop"], server_cg) as old_listener, \
                TempCgroup(f"{TAG}-guarded") as guarded, \
                TempCgroup(f"{TAG}-off") as off, \
                TempCgroup(f"{TAG}-quiet") as quiet, \
                TempCgroup(f"{TAG}-cidrs") as cidrs, \
                TempCgroup(f"{TAG}-idle") as idle, \
                TempCgroup(f"{TAG}-sibling") as s1, \
                TempCgroup(f"{TAG}-sibling2") as s2:
            use_old = args.old_connects > 0
            parts = [
                ("(a) default policy", lambda: part_default(
                    args, res, tools, workdir, ns, listener, ns_old if use_old else None,
                    old_listener if use_old else None, guarded, s1, s2)),
                ("(a) default policy, folding off", lambda: part_unfolded(
                    args, res, tools, workdir, ns, listener, guarded, s1, s2)),
                ("(a) other policies", lambda: part_policies(
                    args, res, tools, workdir, ns, listener, off, quiet, cidrs, s1, s2)),
                ("(e) container parent", lambda: part_parent(
                    args, res, tools, workdir, ns, listener, off, s1, s2)),
                ("(b) unguarded tax", lambda: part_unguarded(
                    args, res, tools, workdir, ns, listener, idle, s1)),
            ]
            if not args.skip_exec:
                parts.append(("(d) exec", lambda: part_exec(
                    args, res, tools, workdir, guarded, s1, s2)))
            for name, part in parts:
                try:
                    part()
                except Exception as exc:        # the other parts still run and print
                    res.notes.append(f"part {name} FAILED: {type(exc).__name__}: {exc}")
    others_after = foreign_agents()
    load_after = Path("/proc/loadavg").read_text().split()[0]
    head = subprocess.run(["git", "-C", str(AGENT_ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True).stdout.strip() or str(AGENT_ROOT)
    print(f"\negress-guard overhead (issue 16): connect rows {args.rounds} rounds of "
          f"{args.connects} connections per variant in one process, {args.gap_ms} ms pause "
          f"after each block; {args.agent_rounds} agent on/off rounds; {os.cpu_count()} CPUs, "
          f"Linux {os.uname().release}; code {head}; {time.monotonic() - started:.0f} s; "
          f"load average {load_before} -> {load_after}; other agents' sys_enter programs "
          f"loaded: {others_before} at start, {others_after} at the end, "
          f"{sum(1 for n in res.foreign if n)} of {len(res.foreign)} samples of (b)\n")
    print_rows(res.rows)
    print_per_connection(res.per_connection)
    print_before(res, args)
    if res.startup_s:
        print(f"\nagent start-up to the ready line: {statistics.median(res.startup_s) * 1000:.0f}"
              f" ms (median of {len(res.startup_s)}); resident memory at ready: "
              f"{statistics.median(res.rss_kib) / 1024:.1f} MiB")
    for note in res.notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
