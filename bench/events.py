# SPDX-License-Identifier: Apache-2.0
"""Agent throughput benchmark (issue 16, point 3): events produced at a known
rate, and what the agent spends on each.

    sudo .venv/bin/python bench/events.py [--records N] [--rates 20000,50000,100000]
                                          [--seconds S] [--skip-kernel] [--tree DIR]
                                          [--scheduling background|normal] [--profile FILE]

Under a minute with the defaults. --tree DIR runs the agent of (b) from
another checkout (with its objects built); --profile FILE runs it under
cProfile (statistics written when it stops).

Target: the agent decodes and writes at least 100,000 events/s on one core
without loss, i.e. at most 10 us of agent CPU per event.

(a) Kernel-free, in this process: --records records of each kind (connect,
    exec, dns answer; and a mix), built from the ctypes layouts of
    guard/kernel/abi.py, go through the agent's real record path:
    Agent._drain -> RecordHandlers (decode -> handler -> describe) ->
    Agent.emit -> EventWriter -> one JSON line each, written to /dev/null.
    An Agent object (embedded default policy, compiled as generation 1) is
    made without start(): no kernel, no maps; the ring is replaced by
    appending to the agent's pending list in batches of 256, as the ring
    callback does. Reported: CPU (time.process_time) per event and the
    events/s one core would reach at that cost. Connects come from one pid
    whose exec came first (its argv is known), as in a connect storm.
(b) Kernel: a real agent (`egress-guard run --cgroup X --events FILE`,
    embedded default policy, a control socket and cgroup of its own)
    guards a temporary child cgroup, in which bench/event_gen.c makes
    connect() calls on a UDP socket to 127.0.0.1 (nothing is sent; each
    call is judged by the connect4 hook and logged: one event) at each
    --rates target for --seconds. Reported per rate: the calls made, the
    kernel's counters (events_sent, events_lost, events_shed, from
    `egress-guard status`), the connect lines the agent wrote, the agent's
    CPU seconds (/proc/PID/stat utime + stime) over the run and its drain,
    us of agent CPU per event, and loss (events the generator caused that
    never became a line); beside them the generator's CPU and the rest of
    the host's busy time over the run. The agent handles records under
    SCHED_IDLE (its default, --scheduling background) beside the generator
    on this two-core VM: it gets what the rest of the host leaves.

Everything it makes (cgroups tagged egbench-events, the agent, the
generator, the temporary directory) is removed on exit; processes are
ended by pid; traffic: none (UDP connect() sends no packet), addresses:
loopback only.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from guard.kernel import abi  # noqa: E402
from procstat import cpu_seconds, stop_agent, wait_ready  # noqa: E402

TAG = "egbench-events"
PORT = 29600
BATCH = 256                 # records per drain in (a): the ring hands over batches
TARGET_US = 10.0            # agent CPU per event
TARGET_RATE = 100_000       # events/s on one core
BENCH_PID = 5_000_001       # above pid_max (2^22): never a real process's /proc
BENCH_CGROUP_ID = 4242
BENCH_CGROUP = f"/{TAG}/sandbox"
AGENT_ROOT = ROOT           # --tree: the agent's code from another checkout


# ---------------------------------------------------------------------------
# Records, as the kernel writes them (guard/kernel/abi.py layouts)


def _header(kind: abi.EventKind, policy_id: int, comm: bytes, pid: int = BENCH_PID,
            action: abi.Action = abi.Action.LOG) -> abi.EventHeader:
    return abi.EventHeader(kind=kind, ktime_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
                           cgroup_id=BENCH_CGROUP_ID, pid=pid, ppid=pid - 1 if pid else 0,
                           uid=1000 if pid else 0, policy_id=policy_id, comm=comm,
                           action=action, rule_id=abi.RULE_NONE,
                           start_ns=7_000_000_000 if pid else 0)


def _sized(ev: ctypes.Structure, used: int) -> bytes:
    ev.hdr.size = used
    return bytes(ev)[:used]


def exec_bytes(policy_id: int, argv: list[bytes]) -> bytes:
    area = b"".join(a + b"\0" for a in argv)
    ev = abi.ExecEvent(hdr=_header(abi.EventKind.EXEC, policy_id, b"python3"),
                       exe_size=len(argv[0]), argv_size=len(area))
    ev.filename = ev.exe = argv[0]
    offset = abi.ExecEvent.argv.offset
    return _sized(ev, offset + len(area))[:offset] + area


def connect_bytes(policy_id: int, port: int, ip: str = "127.0.0.1") -> bytes:
    ev = abi.ConnectEvent(hdr=_header(abi.EventKind.CONNECT, policy_id, b"python3"),
                          family=4, proto=abi.Proto.UDP, hook=abi.Hook.CONNECT4, port=port)
    packed = bytes(map(int, ip.split(".")))
    ctypes.memmove(ctypes.addressof(ev) + abi.ConnectEvent.addr.offset, packed, 4)
    return _sized(ev, ctypes.sizeof(ev))


def dns_answer_message(name: bytes = b"api.example.com", address: bytes = bytes([198, 18, 0, 7]),
                       ttl: int = 60) -> bytes:
    """A resolver's answer: one question, one A record (owner: a pointer to it)."""
    qname = b"".join(bytes([len(label)]) + label for label in name.split(b".")) + b"\0"
    return (struct.pack(">HHHHHH", 0x1234, 0x8180, 1, 1, 0, 0) + qname
            + struct.pack(">HH", 1, 1) + b"\xc0\x0c"
            + struct.pack(">HHIH", 1, 1, ttl, len(address)) + address)


def dns_bytes(policy_id: int) -> bytes:
    message = dns_answer_message()
    ev = abi.DnsEvent(hdr=_header(abi.EventKind.DNS, policy_id, b"", pid=0),
                      cookie=0xC00C1E, family=4, proto=abi.Proto.UDP,
                      direction=abi.DnsDirection.ANSWER, port=53,
                      message_size=len(message), ttl=60, learned=0)
    ctypes.memmove(ctypes.addressof(ev) + abi.DnsEvent.addr.offset, bytes([198, 18, 0, 53]), 4)
    ctypes.memmove(ctypes.addressof(ev) + abi.DnsEvent.message.offset, message, len(message))
    return _sized(ev, abi.DnsEvent.message.offset + len(message))


# ---------------------------------------------------------------------------
# (a) the record path in this process


class _Names:
    """CgroupNames of the benchmark's one cgroup."""

    def name(self, cgroup_id: int) -> str | None:
        return BENCH_CGROUP if cgroup_id == BENCH_CGROUP_ID else None

    def close(self) -> None:
        pass


class _Maps:
    """The one map call the record path makes: the heartbeat (a long batch
    keeps it fresh), a bpf() update in the real agent every 0.25 s."""

    def heartbeat(self, timeout_ms: int) -> None:
        pass


def record_path_agent(sink):
    """An Agent (embedded default policy, generation 1) on the real record
    path, without start(): nothing of the kernel is opened."""
    from guard.agent.core import Agent
    from guard.agent.generations import SLOT_BITS, compile_all
    from guard.policy.load import default_policy
    from guard.report.events import EventWriter
    from guard.respond.responder import Responder

    agent = Agent(default_policy(), cgroup_specs=[BENCH_CGROUP], writer=EventWriter(sink))
    policy_id = 1 << SLOT_BITS
    (compiled, _fail_closed), = compile_all(agent.policies)
    agent.generations.compiled[policy_id] = compiled
    agent.generations.active, agent.generations.active_ids = 1, [policy_id]
    agent.cgroup_names = _Names()
    agent._responder = Responder(None, None)   # flush_allowed/take_errors: nothing to do
    agent._maps = _Maps()
    return agent, policy_id


@dataclass
class PathRow:
    kind: str
    events: int
    cpu_s: float

    @property
    def us(self) -> float:
        return self.cpu_s / self.events * 1e6


def run_path(agent, records: list[bytes]) -> float:
    """CPU seconds to drain records in batches, as the loop does."""
    pending = agent._pending
    started = time.process_time()
    for i in range(0, len(records), BATCH):
        pending.extend(records[i:i + BATCH])
        agent._drain()
    return time.process_time() - started


def part_record_path(count: int) -> list[PathRow]:
    rows = []
    with open(os.devnull, "wb") as sink:
        agent, policy_id = record_path_agent(sink)
        argv = [b"/usr/bin/python3", b"-m", b"agent.tools", b"--task", b"fetch-data"]
        agent._pending.append(exec_bytes(policy_id, argv))   # the connects' process
        agent._drain()
        kinds = {
            "connect": [connect_bytes(policy_id, 1024 + i % 60000) for i in range(count)],
            "exec": [exec_bytes(policy_id, argv) for _ in range(count // 4)],
            "dns (answer)": [dns_bytes(policy_id) for _ in range(count // 4)],
        }
        kinds["mixed (8:1:1)"] = [
            rec for i in range(count // 10) for rec in (
                [kinds["connect"][i * 8 + j] for j in range(8)]
                + [kinds["exec"][i % len(kinds["exec"])], kinds["dns (answer)"][0]])]
        run_path(agent, kinds["connect"][:BATCH * 8])    # warm-up: caches, allocators
        for kind, records in kinds.items():
            before = agent.stats.events
            cpu = min(run_path(agent, records) for _ in range(3))
            written = (agent.stats.events - before) // 3
            if written != len(records) or agent.stats.handler_errors or agent.stats.decode_errors:
                raise RuntimeError(f"{kind}: {written} of {len(records)} events written, "
                                   f"{agent.stats.handler_errors} handler errors, "
                                   f"{agent.stats.decode_errors} decode errors")
            rows.append(PathRow(kind, len(records), cpu))
    return rows


# ---------------------------------------------------------------------------
# (b) a real agent, a generator at a known rate


class TempCgroup:
    """A child cgroup of the cgroup2 mount (never the root), removed on exit;
    the processes started in it are ended by pid first."""

    def __init__(self, parent: Path, name: str):
        self.path = parent / name
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "TempCgroup":
        self.path.mkdir()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        procs = str(self.path / "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as fh:
                fh.write("0")
        proc = subprocess.Popen(argv, preexec_fn=join, **kwargs)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while self.path.exists():
            try:
                self.path.rmdir()
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    print(f"warning: could not remove {self.path}", file=sys.stderr)
                    break
                time.sleep(0.05)


def cgroup2_mount() -> Path:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    raise SystemExit("no cgroup2 mount")


class AgentRun:
    """`egress-guard run` (embedded default policy) guarding one cgroup,
    in a cgroup of its own, events to a file, a control socket of its own."""

    def __init__(self, workdir: Path, parent: Path, guarded: TempCgroup,
                 scheduling: str = "background", profile: Path | None = None):
        self.workdir = workdir
        self.events_path = workdir / "events.jsonl"
        self.stderr_path = workdir / "agent.stderr"
        self.socket = workdir / "agent.sock"
        self.own = TempCgroup(parent, "agent")
        # --profile: the agent under cProfile (written when SIGTERM ends it)
        python = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
        self.argv = python + ["-m", "guard", "run", "--cgroup", str(guarded.path),
                              "--events", str(self.events_path),
                              "--control-socket", str(self.socket),
                              "--state-dir", str(workdir), "--scheduling", scheduling]
        self.proc: subprocess.Popen | None = None
        self._read_at = self._connects = 0

    def __enter__(self) -> "AgentRun":
        self.own.__enter__()
        try:
            with open(self.stderr_path, "wb") as stderr:
                self.proc = self.own.popen(self.argv, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=stderr,
                                           cwd=AGENT_ROOT,
                                           env=dict(os.environ, PYTHONPATH=str(AGENT_ROOT)))
            wait_ready(self.events_path, self.proc, self.stderr_path, time.monotonic() + 60)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the agent has used so far."""
        return cpu_seconds(self.proc.pid)

    def counters(self) -> dict[str, int]:
        out = subprocess.run([sys.executable, "-m", "guard", "status", "--json",
                              "--socket", str(self.socket)], capture_output=True, text=True,
                             timeout=30, cwd=AGENT_ROOT,
                             env=dict(os.environ, PYTHONPATH=str(AGENT_ROOT)))
        if out.returncode != 0:
            raise RuntimeError(f"status: {out.stderr.strip()}")
        return json.loads(out.stdout)["counters"]

    def connect_lines(self) -> int:
        """Connect lines written so far, read on from where the last call
        stopped (bytes.count: this process must not take the CPU the agent
        is draining with)."""
        with open(self.events_path, "rb") as fh:
            fh.seek(self._read_at)
            data = fh.read()
        whole = data.rfind(b"\n") + 1        # only whole lines
        self._read_at += whole
        self._connects += data[:whole].count(b'"kind":"connect"')
        return self._connects

    def lines(self) -> dict[str, int]:
        """Lines written so far, by kind (connect, loss, error, ...)."""
        kinds: dict[str, int] = {}
        with open(self.events_path, "rb") as fh:
            for line in fh:
                at = line.find(b'"kind":"')
                kind = line[at + 8:line.index(b'"', at + 8)].decode() if at >= 0 else "?"
                kinds[kind] = kinds.get(kind, 0) + 1
        return kinds

    def close(self) -> None:
        try:
            stop_agent(self.proc)                       # SIGTERM: it detaches everything
        finally:
            self.own.close()


@dataclass
class KernelRow:
    target: int
    calls: int
    gen_s: float
    sent: int
    lost: int
    shed: int
    written: int
    cpu_s: float
    drain_s: float
    gen_cpu_s: float      # the generator's CPU (its connect() calls and the hook)
    others_s: float       # the rest of the host's CPU over the run (other work here)

    @property
    def produced(self) -> int:
        return self.sent + self.lost + self.shed

    @property
    def us(self) -> float:
        return self.cpu_s / self.written * 1e6 if self.written else float("nan")

    @property
    def missing(self) -> int:
        return self.calls - self.written


def settle(agent: AgentRun, want: int, before: int, timeout: float = 20.0) -> tuple[int, float]:
    """Wait until the agent wrote want connect lines past before, or its
    CPU time stops moving: (lines, seconds waited)."""
    started = time.monotonic()
    last_cpu, still = -1.0, 0
    while True:
        written = agent.connect_lines() - before
        cpu = agent.cpu_s()
        still = still + 1 if cpu == last_cpu else 0
        last_cpu = cpu
        if written >= want or still >= 5 or time.monotonic() - started > timeout:
            return written, time.monotonic() - started
        time.sleep(0.1)


def busy_s() -> float:
    """CPU seconds the whole host has spent (every CPU, /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def part_kernel(rates: list[int], seconds: float, tools: Path, scheduling: str,
                profile: Path | None) -> list[KernelRow]:
    mount = cgroup2_mount()
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"{TAG}-") as tmp, \
            TempCgroup(mount, f"{TAG}-{os.getpid()}") as parent, \
            TempCgroup(parent.path, "guarded") as guarded, \
            AgentRun(Path(tmp), parent.path, guarded, scheduling, profile) as agent:
        time.sleep(1.0)   # its start-up work done
        for rate in rates:
            counters0, lines0 = agent.counters(), agent.connect_lines()
            cpu0, busy0, gen0 = agent.cpu_s(), busy_s(), children_s()
            gen = guarded.popen([str(tools), str(rate), str(seconds), str(PORT)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
            out, _ = gen.communicate(timeout=seconds + 60)
            gen_cpu = children_s() - gen0
            calls, elapsed_ns, failures = map(int, out.split())
            written, drain_s = settle(agent, calls, lines0)
            cpu = agent.cpu_s() - cpu0
            others = max(0.0, busy_s() - busy0 - cpu - gen_cpu)   # jiffies: may dip below 0
            counters = agent.counters()
            delta = {k: counters.get(k, 0) - counters0.get(k, 0)
                     for k in ("events_sent", "events_lost", "events_shed")}
            rows.append(KernelRow(rate, calls, elapsed_ns / 1e9, delta["events_sent"],
                                  delta["events_lost"], delta["events_shed"], written, cpu,
                                  drain_s, gen_cpu, others))
            if failures:
                print(f"note: {failures} of {calls} connect() calls failed at {rate}/s",
                      file=sys.stderr)
            time.sleep(0.5)
        kinds = agent.lines()
    extra = {k: n for k, n in kinds.items() if k not in ("connect", "agent", "exec")}
    if extra:
        print(f"other lines the agent wrote: {extra}")
    return rows


# ---------------------------------------------------------------------------


def verdict(us: float, loss: int) -> str:
    ok = us <= TARGET_US and loss == 0
    return "met" if ok else "NOT met"


def print_path(rows: list[PathRow]) -> None:
    print("\n(a) record path, kernel-free (decode -> handler -> describe -> JSON line), one core")
    print(f"{'kind':<16}{'events':>9}{'us CPU/event':>14}{'events/s/core':>15}  target <= "
          f"{TARGET_US:.0f} us, >= {TARGET_RATE:,}/s")
    for row in rows:
        print(f"{row.kind:<16}{row.events:>9,}{row.us:>14.2f}{1e6 / row.us:>15,.0f}  "
              f"{verdict(row.us, 0)}")


def print_kernel(rows: list[KernelRow], scheduling: str) -> None:
    print(f"\n(b) real agent (--scheduling {scheduling}), generator at a set rate "
          "(UDP connect() to loopback)")
    print(f"{'target/s':>9}{'made/s':>9}{'calls':>9}{'sent':>9}{'lost':>8}{'shed':>8}"
          f"{'written':>9}{'missing':>8}{'agent CPU s':>12}{'us/event':>9}{'drain s':>8}"
          f"{'gen CPU s':>10}{'other CPU s':>12}  verdict")
    for r in rows:
        print(f"{r.target:>9,}{r.calls / r.gen_s:>9,.0f}{r.calls:>9,}{r.sent:>9,}{r.lost:>8,}"
              f"{r.shed:>8,}{r.written:>9,}{r.missing:>8,}{r.cpu_s:>12.2f}{r.us:>9.2f}"
              f"{r.drain_s:>8.1f}{r.gen_cpu_s:>10.2f}{r.others_s:>12.2f}  "
              f"{verdict(r.us, r.lost + r.shed + max(r.missing, 0))}")
    print("sent/lost/shed: the kernel's counters over the run (events_sent, events_lost, "
          "events_shed); missing: calls made that never became a connect line; "
          "drain: seconds after the generator ended until the agent caught up; "
          "gen CPU: the generator's (its calls and the BPF hook); other CPU: the rest of "
          "the host's busy time over the run (this VM is shared; under --scheduling "
          "background the agent runs SCHED_IDLE and gets only what the rest leaves). "
          f"Verdict: <= {TARGET_US:.0f} us of agent CPU per event and nothing lost, shed "
          "or missing.")


def build(out: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("bench/events.py needs a C compiler (cc)")
    binary = out / "event_gen"
    subprocess.run([cc, "-O2", "-Wall", "-o", str(binary), str(HERE / "event_gen.c")],
                   check=True)
    return binary


def main() -> int:
    global AGENT_ROOT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=40_000,
                        help="connect records in (a); a quarter as many exec and dns")
    parser.add_argument("--rates", default="20000,50000,100000",
                        help="events/s the generator makes in (b), comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate in (b)")
    parser.add_argument("--skip-kernel", action="store_true", help="(a) only: no root needed")
    parser.add_argument("--tree", type=Path, help="run the agent from another checkout")
    parser.add_argument("--scheduling", choices=("background", "normal"), default="background",
                        help="the agent's --scheduling in (b)")
    parser.add_argument("--profile", type=Path,
                        help="(b): run the agent under cProfile, its statistics to this file")
    args = parser.parse_args()
    if args.tree:
        AGENT_ROOT = args.tree.resolve()
    print_path(part_record_path(args.records))
    if args.skip_kernel:
        return 0
    if os.geteuid() != 0:
        raise SystemExit("(b) needs root (or --skip-kernel)")
    with tempfile.TemporaryDirectory(prefix=f"{TAG}-build-") as tmp:
        tools = build(Path(tmp))
        rows = part_kernel([int(r) for r in args.rates.split(",")], args.seconds, tools,
                           args.scheduling, args.profile.resolve() if args.profile else None)
    print_kernel(rows, args.scheduling)
    return 0


if __name__ == "__main__":
    sys.exit(main())
