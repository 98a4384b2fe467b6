# SPDX-License-Identifier: Apache-2.0
"""Data-path benchmark: bulk TCP throughput and a benign flow's first-reply
latency on loopback, from a guarded cgroup vs an unguarded sibling.

    sudo .venv/bin/python bench/throughput.py [--rounds 9] [--seconds 2] [--connections 200]

An agent (`egress-guard run`, embedded default policy: every connection
logged, a process's repeated ones to one destination folded into one event
per window, none blocked) guards the first of two child cgroups and not the
second. The benchmark measures whatever programs the agent attaches (it
lists them from bpftool), so a new hook such as a cgroup_skb payload
sampler shows up here as soon as the agent attaches it.

Rows (each a median over alternating rounds; the order flips every round,
so drift and warm-up hit both sides alike):
- iperf3 bulk TCP to a one-off `iperf3 -s -1` on 127.0.0.1, client in the
  cgroup, --seconds per run: received Gbit/s. Target ratio >= 0.97.
  The same with client and server pinned to one CPU (iperf3 -A): the
  guard's cost against one CPU's budget, with far less spread.
- a benign flow's first payload: a Python client in the cgroup (one process
  for all --connections, so start-up is not measured) connects to a small
  loopback echo server, sends an HTTP GET and waits for the echo; connect
  alone and connect+first reply, median and p99 per round (of 200, the p99
  is the second-slowest connection). Target: no measurable difference
  (ratio within the noise floor).
  Also the first payload's own round trip (GET sent -> echo back, connect
  excluded), which is what the issue's "extra latency of a benign flow's
  first payload" names.
- the same latency rounds with the agent paused (SIGSTOP): the kernel's
  share alone (hooks, socket storage, the sample copied into the ring
  buffer), without the agent's work competing for the CPUs.
- a noise floor for both: the same two cgroups measured again after the
  agent has exited, to show how far apart two unguarded measurements land.
- the agent's CPU time per benign flow over the guarded latency rounds.
Bulk rows also give the median of per-round ratios (each round's guarded
and sibling runs are adjacent in time, so drift cancels within a pair).
Beside the tables: the agent's resident memory (now and peak).

Uses only child cgroups it makes and removes, loopback traffic, and ends
only the processes it started.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from guard.workloads.cgroups import cgroup2_mount  # noqa: E402
from guard.demo.sandbox import TempCgroup  # noqa: E402
from procstat import memory_kib  # noqa: E402

HOST = "127.0.0.1"
# Bulk runs again with iperf3's client and server both on this CPU: the
# transfer is then bound by one CPU, so the guard's per-packet cost shows in
# full, and the run-to-run spread (2 vCPU VM: 13-33 Gbit/s across CPUs) falls
# to a few percent.
ONE_CPU = 0

#: A loopback echo server: echoes what each connection sends until it closes.
ECHO_SERVER = r"""
import selectors, socket, sys, time
sel = selectors.DefaultSelector()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 0))
srv.listen(512)
sel.register(srv, selectors.EVENT_READ)
print(srv.getsockname()[1], flush=True)
deadline = time.monotonic() + 3600
while time.monotonic() < deadline:
    for key, _ in sel.select(timeout=1.0):
        sock = key.fileobj
        if sock is srv:
            conn, _ = srv.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sel.register(conn, selectors.EVENT_READ)
            continue
        try:
            data = sock.recv(65536)
        except ConnectionError:
            data = b""
        if data:
            sock.sendall(data)
        else:
            sel.unregister(sock)
            sock.close()
"""

#: Runs in the cgroup: warm-up connections, then N timed ones; prints
#: {"connect": [ns...], "first": [ns...], "reply": [ns...]}: connect alone,
#: the first payload's round trip (send the GET -> its echo is back) and the
#: two together. Run from a file, so that its command line is an ordinary one
#: (an interpreter whose -c code says "sock" is held at exec for the agent's
#: verdict, which the paused-agent rows could not get).
LATENCY_CLIENT = r"""
import json, socket, sys, time
host, port, count, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
request = (b"GET /index.html HTTP/1.1\r\nHost: " + host.encode() +
           b"\r\nUser-Agent: egress-guard-bench/1\r\nAccept: */*\r\n\r\n")
clock = time.perf_counter_ns
connect, first, reply = [], [], []
for i in range(warmup + count):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    started = clock()
    sock.connect((host, port))
    connected = clock()
    sock.sendall(request)
    got = 0
    while got < len(request):
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("echo server closed the connection early")
        got += len(chunk)
    done = clock()
    sock.close()
    if i >= warmup:
        connect.append(connected - started)
        first.append(done - connected)
        reply.append(done - started)
print(json.dumps({"connect": connect, "first": first, "reply": reply}))
"""
WARMUP_CONNECTIONS = 20
# An event line's kind: every event begins {"ts": ..., "kind": ...} (output.py)
EVENT_KIND = re.compile(rb'^\{"ts":[^,\n]*,"kind":"([^"]+)"', re.M)


class Agent:
    """`egress-guard run` guarding one cgroup; ready once its first line,
    {"kind": "agent", "state": "ready"}, arrives. Its later lines are read
    and counted by kind (never kept), so the pipe never fills. It runs in a
    cgroup of its own, as systemd and the DaemonSet give it (its loop then
    runs in the background: docs/design.md, "The agent's share of the CPUs")."""

    def __init__(self, cgroup: Path, workdir: Path, policy: str | None = None):
        self.argv = [sys.executable, "-m", "guard", "run", "--cgroup", str(cgroup),
                     "--control-socket", str(workdir / "agent.sock"),
                     "--state-dir", str(workdir)] + (["--policy", policy] if policy else [])
        self.stderr_path = workdir / "agent.stderr"
        self.counts: dict[str, int] = {}
        self._ready = threading.Event()
        self.ready_event: dict | None = None

    def __enter__(self) -> "Agent":
        self.started = time.monotonic()
        self._stderr = open(self.stderr_path, "wb")
        self.own_cgroup = TempCgroup("egress-guard-bench-agent").__enter__()
        try:
            self.proc = self.own_cgroup.popen(self.argv, stdout=subprocess.PIPE,
                                              stderr=self._stderr, cwd=ROOT,
                                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        except BaseException:
            self.own_cgroup.close()
            self._stderr.close()
            raise
        threading.Thread(target=self._read, daemon=True).start()
        try:
            if not self._ready.wait(60) or (self.ready_event or {}).get("state") != "ready":
                raise RuntimeError(f"agent did not become ready: {self.ready_event}; stderr: "
                                   f"{self.stderr_path.read_text(errors='replace')[-2000:]}")
        except BaseException:
            self.close()
            raise
        self.startup_s = time.monotonic() - self.started
        return self

    def _read(self) -> None:
        # The ready line is read whole; the later ones are only counted by
        # kind, a chunk at a time with one regular expression: this reader
        # is measuring apparatus, and a json.loads per event (5-10 us each,
        # at normal priority) would itself compete with the measured flows.
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self._count([event.get("kind", "?").encode()])
            if event.get("kind") == "agent":
                self.ready_event = event
                break
        self._ready.set()
        rest = b""
        while chunk := self.proc.stdout.read1(1 << 16):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            self._count(EVENT_KIND.findall(data, 0, cut))
            rest = data[cut:]

    def _count(self, kinds: list[bytes]) -> None:
        for kind in kinds:
            name = kind.decode()
            self.counts[name] = self.counts.get(name, 0) + 1

    def rss_kib(self, field: str = "VmRSS") -> int:
        return memory_kib(self.proc.pid, field)

    def cpu_s(self) -> float:
        """User + system CPU time the agent has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @contextlib.contextmanager
    def paused(self):
        """The agent stopped (SIGSTOP): the kernel side alone, samples
        queueing in the ring buffer with nobody reading them."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            self.own_cgroup.close()
            self._stderr.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def iperf3_gbits(cg: TempCgroup, seconds: int, cpu: int | None = None) -> float:
    """One iperf3 run, client in cg, a fresh one-off server outside it; with
    cpu, both pinned to that CPU (iperf3 -A)."""
    port = free_port()
    pinned = ["-A", str(cpu)] if cpu is not None else []
    server = subprocess.Popen(["iperf3", "-s", "-1", "-B", HOST, "-p", str(port), "--forceflush",
                               *pinned],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        while line and "listening" not in line.lower():
            line = server.stdout.readline()
        if not line:
            raise RuntimeError("iperf3 server did not start")
        result = cg.run(["iperf3", "-c", HOST, "-p", str(port), "-t", str(seconds), "-J", *pinned],
                        timeout=seconds + 60, text=True)
        report = json.loads(result.stdout)
        if result.returncode or "error" in report:
            raise RuntimeError(f"iperf3 client failed: {report.get('error', result.stderr)}")
        return report["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=10)


def first_reply_us(cg: TempCgroup, client: Path, port: int,
                   connections: int) -> dict[str, list[float]]:
    result = cg.run([sys.executable, str(client), HOST, str(port), str(connections),
                     str(WARMUP_CONNECTIONS)], timeout=300, text=True)
    if result.returncode:
        raise RuntimeError(f"latency client failed: {result.stderr.strip()[-500:]}")
    timings = json.loads(result.stdout)
    return {k: [ns / 1000 for ns in v] for k, v in timings.items()}


def alternate(rounds: int, measure_a, measure_b) -> tuple[list, list]:
    """measure_a and measure_b, rounds times each, the first of each pair flipping."""
    a, b = [], []
    for r in range(rounds):
        if r % 2 == 0:
            a.append(measure_a())
            b.append(measure_b())
        else:
            b.append(measure_b())
            a.append(measure_a())
    return a, b


def latency_rows(a: list[dict], b: list[dict]) -> list[tuple]:
    """(what, median a, median b, p99 a, p99 b): medians over rounds of each round's figure."""
    rows = []
    for key, label in (("connect", "connect"), ("first", "first payload: GET -> echo"),
                       ("reply", "connect + GET + echo")):
        rows.append((label,
                     statistics.median(statistics.median(r[key]) for r in a),
                     statistics.median(statistics.median(r[key]) for r in b),
                     statistics.median(percentile(r[key], 0.99) for r in a),
                     statistics.median(percentile(r[key], 0.99) for r in b)))
    return rows


def cgroup_programs(path: Path) -> list[dict]:
    """bpftool's JSON for the programs attached to this cgroup itself."""
    bpftool = shutil.which("bpftool")
    if not bpftool:
        raise RuntimeError("bpftool not installed")
    result = subprocess.run([bpftool, "-j", "cgroup", "show", str(path)],
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"bpftool: {result.stderr.strip()}")
    return json.loads(result.stdout.strip() or "[]")


def attached(path: Path) -> str:
    """Programs attached to this cgroup itself, as bpftool lists them."""
    try:
        progs = cgroup_programs(path)
    except RuntimeError as exc:
        return f"({exc})"
    return ", ".join(f"{p.get('attach_type')}:{p.get('name')}" for p in progs) or "none"


@contextlib.contextmanager
def bpf_stats():
    """kernel.bpf_stats_enabled on for the block (each program run is timed,
    which costs a little itself), and back to what it was."""
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    previous = knob.read_text().strip()
    knob.write_text("1")
    try:
        yield
    finally:
        knob.write_text(previous)


def program_runs(path: Path) -> dict[str, tuple[int, int]]:
    """(run time ns, run count) of each program attached to this cgroup."""
    ids = {p["id"] for p in cgroup_programs(path)}
    listed = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                            check=True)
    return {p["name"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0))
            for p in json.loads(listed.stdout) if p["id"] in ids}


def timed_programs(path: Path, measure) -> tuple[object, dict[str, tuple[int, int]]]:
    """measure()'s result and what the cgroup's programs cost during it:
    name -> (ns, runs)."""
    with bpf_stats():
        before = program_runs(path)
        result = measure()
        after = program_runs(path)
    return result, {name: (after[name][0] - before.get(name, (0, 0))[0],
                           after[name][1] - before.get(name, (0, 0))[1]) for name in after}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--policy", help="policy file for the agent (default: the embedded "
                                         "default policy, which logs every connection)")
    parser.add_argument("--seconds", type=int, default=2, help="length of each iperf3 run")
    parser.add_argument("--connections", type=int, default=200,
                        help="timed connections per latency round")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/throughput.py needs root", file=sys.stderr)
        return 4
    if not shutil.which("iperf3"):
        print("bench/throughput.py needs iperf3", file=sys.stderr)
        return 4
    cgroup2_mount()

    workdir = Path(tempfile.mkdtemp(prefix="egress-guard-bench-"))
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, HOST], stdout=subprocess.PIPE,
                            text=True)
    try:
        echo_port = int(echo.stdout.readline())
        with TempCgroup("egress-guard-bench") as guarded, \
                TempCgroup("egress-guard-bench-sibling") as sibling:
            def bulk(cg):
                return lambda: iperf3_gbits(cg, args.seconds)

            def bulk_one_cpu(cg):
                return lambda: iperf3_gbits(cg, args.seconds, cpu=ONE_CPU)

            client = workdir / "latency_client.py"
            client.write_text(LATENCY_CLIENT)

            def latency(cg):
                return lambda: first_reply_us(cg, client, echo_port, args.connections)

            agent_cpu = {"s": 0.0, "flows": 0}

            def latency_guarded_counted():
                before = agent.cpu_s()
                result = first_reply_us(guarded, client, echo_port, args.connections)
                time.sleep(0.05)    # the agent's last batch of this round
                agent_cpu["s"] += agent.cpu_s() - before
                agent_cpu["flows"] += args.connections + WARMUP_CONNECTIONS
                return result

            with Agent(guarded.path, workdir, args.policy) as agent:
                hooks, sibling_hooks = attached(guarded.path), attached(sibling.path)
                rss_ready = agent.rss_kib()
                bulk_gu = alternate(args.rounds, bulk(guarded), bulk(sibling))
                one_cpu_gu = alternate(args.rounds, bulk_one_cpu(guarded), bulk_one_cpu(sibling))
                lat_gu = alternate(args.rounds, latency_guarded_counted, latency(sibling))
                try:
                    with agent.paused():
                        lat_paused = alternate(args.rounds, latency(guarded), latency(sibling))
                except RuntimeError as exc:
                    # e.g. a policy with failClosed: no heartbeat, no egress
                    print(f"paused-agent rounds failed, left out: {exc}", file=sys.stderr)
                    lat_paused = None
                # the kernel's share measured directly: time in the guarded
                # cgroup's programs during one bulk run and one latency round
                bulk_timed, bulk_costs = timed_programs(
                    guarded.path, lambda: iperf3_gbits(guarded, args.seconds))
                _, latency_costs = timed_programs(
                    guarded.path, lambda: first_reply_us(guarded, client, echo_port,
                                                         args.connections))
                time.sleep(0.5)     # the queued samples are read before memory is taken
                rss_now, rss_peak = agent.rss_kib(), agent.rss_kib("VmHWM")
                time.sleep(0.5)     # let the agent write out the last events before counting
                counts = dict(agent.counts)
                startup = agent.startup_s
                scheduling = agent.ready_event.get("scheduling")
            # noise floor: the same two cgroups once the agent has detached
            # (measured second, so an agent that fails to start fails fast)
            floor_bulk = alternate(args.rounds, bulk(guarded), bulk(sibling))
            floor_one_cpu = alternate(args.rounds, bulk_one_cpu(guarded), bulk_one_cpu(sibling))
            floor_lat = alternate(args.rounds, latency(guarded), latency(sibling))
    finally:
        if echo.poll() is None:
            echo.kill()
        echo.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)

    med = statistics.median
    print(f"\nloopback data path, guarded cgroup vs unguarded sibling ({args.rounds} alternating "
          f"rounds, medians)\n")
    print(f"hooks on the guarded cgroup: {hooks}")
    print(f"hooks on the sibling:        {sibling_hooks}\n")
    bulk_title = f"bulk TCP (iperf3, {args.seconds} s runs)"
    print(f"| {bulk_title:<40} | {'cgroup A Gbit/s':>15} | {'sibling Gbit/s':>14} | "
          f"{'ratio':>6} | {'target':>7} | {'paired ratio':>12} |")
    print(f"|{'-' * 42}|{'-' * 17}|{'-' * 16}|{'-' * 8}|{'-' * 9}|{'-' * 14}|")
    for label, (a, b), target in (("noise floor: no agent, A vs sibling", floor_bulk, "~1.00"),
                                  ("A guarded vs sibling unguarded", bulk_gu, ">= 0.97"),
                                  ("one CPU: no agent, A vs sibling", floor_one_cpu, "~1.00"),
                                  ("one CPU: A guarded vs sibling", one_cpu_gu, ">= 0.97")):
        print(f"| {label:<40} | {med(a):>15.2f} | {med(b):>14.2f} | {med(a) / med(b):>6.3f} | "
              f"{target:>7} | {med(x / y for x, y in zip(a, b)):>12.3f} |")
    for label, (a, b) in (("no agent", floor_bulk), ("A guarded", bulk_gu),
                          ("one CPU, no agent", floor_one_cpu), ("one CPU, A guarded", one_cpu_gu)):
        print(f"  rounds, {label}: A " + " ".join(f"{x:.1f}" for x in a)
              + " | sibling " + " ".join(f"{x:.1f}" for x in b))

    print(f"\n| {'benign flow, ' + str(args.connections) + ' connections/round':<52} | "
          f"{'A median us':>11} | {'sib. median us':>14} | {'ratio':>6} | {'A p99 us':>8} | "
          f"{'sib. p99 us':>11} | {'ratio':>6} |")
    print(f"|{'-' * 54}|{'-' * 13}|{'-' * 16}|{'-' * 8}|{'-' * 10}|{'-' * 13}|{'-' * 8}|")
    settings = [("no agent", floor_lat), ("A guarded, agent paused", lat_paused),
                ("A guarded", lat_gu)]
    for setting, (a, b) in [(name, rows) for name, rows in settings if rows is not None]:
        for label, ma, mb, pa, pb in latency_rows(a, b):
            name = f"{setting}: {label}"
            print(f"| {name:<52} | {ma:>11.1f} | {mb:>14.1f} | {ma / mb:>6.3f} | {pa:>8.1f} | "
                  f"{pb:>11.1f} | {pa / pb:>6.3f} |")

    bulk_ns = sum(ns for ns, _ in bulk_costs.values())
    print("\nkernel time in the guarded cgroup's programs (kernel.bpf_stats_enabled, one more "
          "run of each; timing adds a little):")
    print(f"- bulk TCP, {args.seconds} s at {bulk_timed:.1f} Gbit/s: {bulk_ns / 1e6:.1f} ms, "
          f"{bulk_ns / (args.seconds * 1e9) * 100:.2f}% of one CPU; "
          + ", ".join(f"{name} {runs} runs x {ns / runs:.0f} ns"
                      for name, (ns, runs) in sorted(bulk_costs.items()) if runs))
    flows = args.connections + WARMUP_CONNECTIONS
    latency_ns = sum(ns for ns, _ in latency_costs.values())
    print(f"- benign flows: {latency_ns / flows / 1000:.1f} us per connection; "
          + ", ".join(f"{name} {runs / flows:.1f} x {ns / runs:.0f} ns"
                      for name, (ns, runs) in sorted(latency_costs.items()) if runs))
    if agent_cpu["flows"]:
        print(f"\nagent CPU per benign flow (guarded rounds, user + system): "
              f"{agent_cpu['s'] / agent_cpu['flows'] * 1e6:.0f} us")
    print(f"\nagent: ready after {startup * 1000:.0f} ms; resident memory "
          f"{rss_ready / 1024:.1f} MiB at ready, {rss_now / 1024:.1f} MiB after the runs, "
          f"peak {rss_peak / 1024:.1f} MiB")
    print(f"agent scheduling: {scheduling}")
    print("agent events by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
