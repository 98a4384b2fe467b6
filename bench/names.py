# SPDX-License-Identifier: Apache-2.0
"""Allow-by-name benchmarks (issue 15): ratios against a baseline measured in
the same run, beside an A/A ratio that shows how far two identical
measurements land apart on this machine.

    sudo .venv/bin/python bench/names.py [--rounds N] [--connects N] [--lookups N]

Set-up: the DNS test fixture (tests/kernel/dnsfixtures.py: dnsmasq in a
network namespace of its own, zone `egtest.`), a compiled accept loop on
every address of that namespace, and one policy (defaultAction block, DNS
TTLs clamped to an hour so nothing learned expires during the run):
`host: one.egtest` and `host: "*.learn.egtest"`, and `cidr:` two other
addresses of the namespace, all on one port. Every loop is compiled C,
built here with the system cc, and runs under the fixture's client wrapper
(a private mount namespace whose resolv.conf names the test resolver); its
own clock times only the loop.

Rows (medians over alternating rounds: each round runs every variant of a
row once, the order reversed on every other round, so drift and position
hit each variant alike):
1. connect+close from one guarded cgroup to the address of `one.egtest`
   (allowed by name; the loop resolves the name itself just before it starts,
   so the address is learned by the same process, in the same cgroup) vs an
   address allowed by `cidr:`; A/A: the other `cidr:` address vs the first.
   The close is SO_LINGER 0: it sends a RST and leaves no TIME_WAIT, so the
   ephemeral ports (28,000) never run out however many rounds run; the
   TIME_WAIT sockets counted on both sides around each loop are printed.
   Target: ratio <= 1.03. Beside it, for scale: the CIDR-allowed connect
   against the same loop in an unguarded sibling (the guard's whole cost).
2. DNS answer latency: getaddrinfo(one.egtest, AF_INET), one A query each,
   in the guarded cgroup (every answer is parsed and learned in the kernel
   and is an event the agent writes) vs an unguarded sibling; median per
   lookup; A/A: a second unguarded sibling. Target: no change at the median
   beyond the A/A noise.
3. Memory per 10,000 learned addresses: a fresh agent and cgroup resolve 400
   names under `learn.egtest` with 25 A records each (a 435-byte answer: UDP,
   and all of it within the 512 bytes a DNS event carries, so the agent sees
   every address). Reported: the cgroup's learned table (bpftool
   `bytes_memlock` of its `eg_dns_learned_in` map, before and after, and
   its entry count), the agent's resident memory before and after, and the
   agent's NameBook alone (tracemalloc, in this process).
4. Cost to a process the guard does not guard: the connect loop of row 1 in
   an unguarded sibling, while an agent guards the names policy on another
   cgroup vs with no agent; A/A: no agent vs no agent. The agent is started
   and stopped every round.

Everything it makes (cgroups tagged egbench-names, the resolver's namespace,
servers, agents with private control sockets, the temporary directory) is
removed on exit; processes are ended by pid.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from guard.demo.sandbox import TempCgroup  # noqa: E402
from guard.kernel import abi, libbpf  # noqa: E402
from guard.workloads.cgroups import cgroup2_mount  # noqa: E402
from guard.workloads.names import NameBook  # noqa: E402
from procstat import memory_kib  # noqa: E402
from tests.kernel.agentproc import AgentProcess  # noqa: E402
from tests.kernel.dnsfixtures import TestResolver  # noqa: E402

PORT = 28080                 # the accept loop's port in the resolver's namespace
TAG = "egbench-names"
TTL_S = 3600                 # the policy's TTL bounds: nothing learned expires mid-run
LEARN_ZONE = "learn.egtest"
LEARN_PER_NAME = 25          # A records per learning name: 435 bytes, under 512
LEARN_BASE = (198 << 24) | (19 << 16) | (128 << 8)   # 198.19.128.0: answered, never routed
ENV = dict(os.environ, PYTHONPATH=str(ROOT))

# ---------------------------------------------------------------------------
# The compiled loops

CONNECT_C = r"""
// connect_loop HOST PORT COUNT: resolve HOST once (getaddrinfo, AF_INET: a
// name goes through the system resolver, so a guarded process learns its
// address right here), then COUNT times socket() + connect() + close() with
// SO_LINGER 0 (the close sends a RST: no TIME_WAIT, no port exhaustion).
// Prints "elapsed_ns failures address last_errno".
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res;
	struct linger linger = { .l_onoff = 1, .l_linger = 0 };
	struct timespec start, end;
	char text[INET_ADDRSTRLEN] = "?";
	long count, failures = 0;
	int last_errno = 0;

	if (argc != 4)
		return 2;
	if (getaddrinfo(argv[1], argv[2], &hints, &res)) {
		fprintf(stderr, "cannot resolve %s\n", argv[1]);
		return 3;
	}
	inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, text, sizeof(text));
	count = atol(argv[3]);
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long i = 0; i < count; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (fd < 0) {
			failures++;
			last_errno = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, sizeof(linger));
		if (connect(fd, res->ai_addr, res->ai_addrlen)) {
			failures++;
			last_errno = errno;
		}
		close(fd);
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	printf("%lld %ld %s %d\n",
	       (end.tv_sec - start.tv_sec) * 1000000000LL + (end.tv_nsec - start.tv_nsec),
	       failures, text, last_errno);
	freeaddrinfo(res);
	return 0;
}
"""

RESOLVE_C = r"""
// resolve_loop COUNT NAME...: getaddrinfo(NAME, AF_INET) COUNT times, the
// names in turn, after one untimed lookup (the first loads glibc's NSS
// modules). Prints the failures, then each lookup's ns, one per line.
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res;
	long count, failures = 0;
	int names;
	long long *took;

	if (argc < 3)
		return 2;
	count = atol(argv[1]);
	names = argc - 2;
	took = calloc(count, sizeof(*took));
	if (!took)
		return 1;
	if (getaddrinfo(argv[2], NULL, &hints, &res) == 0)
		freeaddrinfo(res);
	for (long i = 0; i < count; i++) {
		long long t0 = now_ns();
		int err = getaddrinfo(argv[2 + i % names], NULL, &hints, &res);

		took[i] = now_ns() - t0;
		if (err)
			failures++;
		else
			freeaddrinfo(res);
	}
	printf("%ld\n", failures);
	for (long i = 0; i < count; i++)
		printf("%lld\n", took[i]);
	return 0;
}
"""

ACCEPT_C = r"""
// accept_any PORT: listen on every address, accept and close forever;
// prints "listening" once bound. The benchmark ends it by pid.
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = INADDR_ANY };
	int one = 1, fd;

	if (argc != 2)
		return 2;
	addr.sin_port = htons(atoi(argv[1]));
	fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) || listen(fd, 4096))
		return 1;
	printf("listening\n");
	fflush(stdout);
	for (;;) {
		int conn = accept(fd, NULL, NULL);

		if (conn >= 0)
			close(conn);
	}
}
"""


def build(out: Path) -> dict[str, Path]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("bench/names.py needs a C compiler (cc)")
    tools = {}
    for name, source in (("connect_loop", CONNECT_C), ("resolve_loop", RESOLVE_C),
                         ("accept_any", ACCEPT_C)):
        (out / f"{name}.c").write_text(source)
        subprocess.run([cc, "-O2", "-o", str(out / name), str(out / f"{name}.c")], check=True)
        tools[name] = out / name
    return tools


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
        self.argv = ["ip", "netns", "exec", resolver.netns, str(binary), str(port)]
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


class Agent(AgentProcess):
    """AgentProcess (its own control socket and state directory) in a cgroup
    of its own, as systemd and the DaemonSet give it (it then handles
    records in the background: docs/design.md, "The agent's share of the
    CPUs"), writing its events to a file, as a deployment does: a pipe read
    by this process would compete with the measured loops for the two cores."""

    def __init__(self, workdir: Path, cgroups: list[TempCgroup], policy: Path):
        workdir.mkdir()
        self.events_path = workdir / "events.jsonl"
        self.stderr_path = workdir / "agent.stderr"
        self.own = TempCgroup(f"{TAG}-agent")
        super().__init__([str(cg.path) for cg in cgroups], policy=policy,
                         extra=["--events", str(self.events_path)],
                         control_socket=workdir / "agent.sock")

    def __enter__(self) -> "Agent":
        self.own.__enter__()
        try:
            with open(self.stderr_path, "wb") as stderr:
                self.proc = self.own.popen(self.argv, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=stderr,
                                           cwd=ROOT, env=ENV)
            self.ready = self.wait_for(lambda e: e.get("kind") == "agent", timeout=60)
            if self.ready.get("state") != "ready":
                raise RuntimeError(f"agent: {self.ready}")
        except BaseException:
            self.close()
            raise
        return self

    def read_events(self) -> list[dict]:
        try:
            text = self.events_path.read_text()
        except FileNotFoundError:
            return []
        # the last line may be half written
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

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

    def rss_kib(self) -> int:
        return memory_kib(self.proc.pid)

    def close(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)   # detaches everything, exits 0
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            super().close()                             # SIGKILL if still running
        finally:
            self.own.close()


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


def time_wait(pid: int | str = "self") -> int:
    """TIME_WAIT sockets of the network namespace pid is in."""
    for line in Path(f"/proc/{pid}/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("tw") + 1])
    return 0


@dataclass
class ConnectLoop:
    """Runs the compiled connect loop through the resolver's client wrapper
    and keeps the TIME_WAIT growth it saw."""
    resolver: BenchResolver
    server: AcceptServer
    binary: Path
    count: int
    tw_growth: list[int] = field(default_factory=list)

    def __call__(self, cgroup: TempCgroup, target: str, expect: str | None = None) -> float:
        tw = time_wait(), self.server.time_wait()
        result = self.resolver.run([str(self.binary), target, str(PORT), str(self.count)],
                                   cgroup, timeout=600)
        self.tw_growth.append(max(time_wait() - tw[0], self.server.time_wait() - tw[1]))
        if result.returncode != 0:
            raise RuntimeError(f"connect loop to {target}: {result.stderr.strip()}")
        elapsed, failures, address, last_errno = result.stdout.split()
        if int(failures):
            raise RuntimeError(f"connect loop to {target} ({address}): {failures} of "
                               f"{self.count} failed, errno {last_errno}")
        if expect and address != expect:
            raise RuntimeError(f"{target} resolved to {address}, not {expect}")
        return int(elapsed) / self.count / 1000


def lookup_ns(resolver: BenchResolver, binary: Path, cgroup: TempCgroup, count: int,
              names: list[str]) -> list[int]:
    """Per-lookup ns of count getaddrinfo calls (names in turn) in cgroup."""
    result = resolver.run([str(binary), str(count), *names], cgroup, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"resolve loop: {result.stderr.strip()}")
    failures, *took = result.stdout.split()
    if int(failures):
        raise RuntimeError(f"resolve loop: {failures} of {count} lookups of {names[:3]} failed")
    return [int(ns) for ns in took]


def interleave(rounds: int, variants: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each variant once per round, in order on even rounds and reversed on
    odd ones; returns every variant's samples by round."""
    samples: dict[str, list[float]] = {label: [] for label in variants}
    order = list(variants)
    for r in range(rounds):
        for label in (order if r % 2 == 0 else order[::-1]):
            samples[label].append(variants[label]())
    return samples


@dataclass
class Row:
    name: str
    unit: str
    measured: list[float]
    baseline: list[float]
    aa: list[float] | None       # a second baseline: the noise floor
    target: str
    judge: Callable[["Row"], str] | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        return statistics.median(self.measured) / statistics.median(self.baseline)

    @property
    def aa_ratio(self) -> float | None:
        return statistics.median(self.aa) / statistics.median(self.baseline) if self.aa else None

    def paired(self, samples: list[float]) -> list[float]:
        return [m / b for m, b in zip(samples, self.baseline)]


def at_most(limit: float) -> Callable[[Row], str]:
    return lambda row: "met" if row.ratio <= limit else "NOT met"


def within_noise(row: Row) -> str:
    """Met when the ratio lies inside the spread of the per-round A/A ratios."""
    band = row.paired(row.aa)
    if min(band) <= row.ratio <= max(band):
        return "met (inside A/A)"
    return f"NOT met ({(row.ratio - 1) * 100:+.1f}%, A/A band " \
           f"{min(band):.3f}-{max(band):.3f})"


# ---------------------------------------------------------------------------
# The benchmarks


def bench_connect(loop: ConnectLoop, rounds: int, guarded: TempCgroup, sibling: TempCgroup,
                  name_ip: str, cidr_ip: str, cidr2_ip: str) -> list[Row]:
    samples = interleave(rounds, {
        "name": lambda: loop(guarded, "one.egtest", expect=name_ip),
        "cidr": lambda: loop(guarded, cidr_ip),
        "cidr2": lambda: loop(guarded, cidr2_ip),
        "unguarded": lambda: loop(sibling, cidr_ip),
    })
    tw = f"TIME_WAIT growth per loop <= {max(loop.tw_growth)}"
    return [
        Row("1. connect+close, name-allowed vs CIDR-allowed (guarded)", "us/connect",
            samples["name"], samples["cidr"], samples["cidr2"], "<= 1.03", at_most(1.03),
            f"A/A: a 2nd CIDR address; {tw}"),
        Row("   for scale: CIDR-allowed, guarded vs unguarded sibling", "us/connect",
            samples["cidr"], samples["unguarded"], None, "-", None,
            "the guard's whole cost on this path"),
    ]


def bench_dns(resolver: BenchResolver, binary: Path, rounds: int, lookups: int,
              guarded: TempCgroup, plain: TempCgroup, sibling: TempCgroup,
              sibling2: TempCgroup) -> list[Row]:
    p99: dict[str, list[float]] = {"guarded": [], "unguarded": []}

    def median_lookup(cgroup: TempCgroup, label: str | None = None) -> float:
        took = sorted(lookup_ns(resolver, binary, cgroup, lookups, ["one.egtest"]))
        if label:
            p99[label].append(took[int(len(took) * 0.99)] / 1000)
        return statistics.median(took) / 1000
    samples = interleave(rounds, {
        "guarded": lambda: median_lookup(guarded, "guarded"),
        "unguarded": lambda: median_lookup(sibling, "unguarded"),
        "plain": lambda: median_lookup(plain),
        "unguarded2": lambda: median_lookup(sibling2),
    })
    return [
        Row("2. DNS lookup (getaddrinfo, A), guarded vs unguarded", "us/lookup",
            samples["guarded"], samples["unguarded"], samples["unguarded2"],
            "no change", within_noise,
            f"A/A: a 2nd unguarded sibling; p99 {statistics.median(p99['guarded']):.0f} "
            f"vs {statistics.median(p99['unguarded']):.0f} us"),
        Row("   of which: names policy vs a guarded no-names policy", "us/lookup",
            samples["guarded"], samples["plain"], None, "-", None,
            "what reading DNS adds (dns.bpf.c, the learned write, the event)"),
        Row("   of which: guarded no-names policy vs unguarded", "us/lookup",
            samples["plain"], samples["unguarded"], None, "-", None,
            "any guarded UDP socket (create, connect, flow state)"),
    ]


def bench_unguarded(loop: ConnectLoop, rounds: int, workdir: Path, guarded: TempCgroup,
                    sibling: TempCgroup, policy: Path, cidr_ip: str) -> Row:
    starts = iter(range(1_000_000))

    def with_agent() -> float:
        with Agent(workdir / f"agent-{next(starts)}", [guarded], policy):
            time.sleep(0.5)      # let its start-up work settle
            return loop(sibling, cidr_ip)
    samples = interleave(rounds, {
        "agent": with_agent,
        "none": lambda: loop(sibling, cidr_ip),
        "none2": lambda: loop(sibling, cidr_ip),
    })
    return Row("4. connect+close, unguarded process: agent on vs off", "us/connect",
               samples["agent"], samples["none"], samples["none2"], "no change",
               within_noise, "A/A: no agent vs no agent")


def learned_table_id(agent_pid: int, cgroup_id: int) -> int:
    """The id of the learned-address table (eg_dns_learned_in) the agent
    made for cgroup_id: the value at cgroup_id of the agent's own
    eg_dns_learned (found among the maps it holds open; other agents on this
    host have their own)."""
    held = set()
    fdinfo = Path(f"/proc/{agent_pid}/fdinfo")
    for entry in fdinfo.iterdir():
        try:
            for line in entry.read_text().splitlines():
                if line.startswith("map_id:"):
                    held.add(int(line.split()[1]))
        except OSError:
            continue
    maps = json.loads(subprocess.run(["bpftool", "-j", "map", "show"], check=True,
                                     capture_output=True, text=True).stdout)
    [outer] = [m["id"] for m in maps if m["id"] in held and m.get("name") == "eg_dns_learned"]
    fd = libbpf.map_fd_by_id(outer)
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


def bench_memory(resolver: BenchResolver, binary: Path, workdir: Path, learner: TempCgroup,
                 policy: Path) -> dict:
    names = resolver.learn_names
    with Agent(workdir / "agent-memory", [learner], policy) as agent:
        time.sleep(1.0)                              # start-up work done
        table = learned_table_id(agent.proc.pid, learner.id)
        before = map_show(table)
        rss_before = agent.rss_kib()
        lookup_ns(resolver, binary, learner, len(names), names)
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


def print_rows(rows: list[Row], header: str) -> None:
    print(header)
    print(f"| {'benchmark':<56} | {'unit':<10} | {'measured':>8} | {'baseline':>8} | "
          f"{'ratio':>6} | {'A/A':>6} | {'target':>9} | {'verdict':<17} | note")
    print(f"|{'-' * 58}|{'-' * 12}|{'-' * 10}|{'-' * 10}|{'-' * 8}|{'-' * 8}|{'-' * 11}|"
          f"{'-' * 19}|------")
    for row in rows:
        aa = f"{row.aa_ratio:.3f}" if row.aa else "-"
        spread = row.paired(row.measured)
        note = f"per-round ratios {min(spread):.3f}-{max(spread):.3f}"
        if row.aa:
            band = row.paired(row.aa)
            note += f", A/A {min(band):.3f}-{max(band):.3f}"
        note = "; ".join(filter(None, [note, row.note]))
        verdict = row.judge(row) if row.judge else "-"
        print(f"| {row.name:<56} | {row.unit:<10} | {statistics.median(row.measured):>8.1f} | "
              f"{statistics.median(row.baseline):>8.1f} | {row.ratio:>6.3f} | {aa:>6} | "
              f"{row.target:>9} | {verdict:<17} | {note}")


def print_memory(memory: dict, book_default: tuple[int, int], book_all: tuple[int, int]) -> None:
    entries = memory["entries"]
    per = 10_000 / entries if entries else 0
    grown = memory["memlock_after"] - memory["memlock_before"]
    rss = memory["rss_after"] - memory["rss_before"]
    print(f"\n3. memory: {entries} addresses learned in one cgroup "
          f"(its table: {memory['name']} id {memory['table']}, "
          f"max_entries {memory['max_entries']})\n")
    print(f"| {'what':<58} | {'before':>11} | {'after':>11} | {'per 10,000 addresses':>20}")
    print(f"|{'-' * 60}|{'-' * 13}|{'-' * 13}|{'-' * 22}")
    print(f"| {'kernel: learned table, bpftool bytes_memlock':<58} | "
          f"{memory['memlock_before'] / 1024:>8.0f} KiB | {memory['memlock_after'] / 1024:>8.0f} KiB"
          f" | {grown * per / 1024:>16.0f} KiB")
    print(f"| {'agent: VmRSS (its NameBook holds ' + str(memory['book_holds']) + ')':<58}"
          f" | {memory['rss_before'] / 1024:>7.1f} MiB | {memory['rss_after'] / 1024:>7.1f} MiB"
          f" | {rss * per / 1024:>16.1f} MiB")
    for label, (used, held) in (("default bounds", book_default),
                                ("per-workload bound raised", book_all)):
        print(f"| {f'agent: NameBook alone, {label}, holds {held}':<58} | {'-':>11} | "
              f"{used / 1048576:>7.2f} MiB | {used * 10_000 / max(held, 1) / 1048576:>16.2f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--connects", type=int, default=10_000, help="per loop")
    parser.add_argument("--lookups", type=int, default=2_000, help="per loop")
    parser.add_argument("--learn", type=int, default=10_000,
                        help="addresses to learn for the memory row (the table holds 16384)")
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
                AcceptServer(resolver, tools["accept_any"], PORT) as server, \
                TempCgroup(f"{TAG}-guarded") as guarded, \
                TempCgroup(f"{TAG}-plain") as plain, \
                TempCgroup(f"{TAG}-learn") as learner, \
                TempCgroup(f"{TAG}-sibling") as sibling, \
                TempCgroup(f"{TAG}-sibling2") as sibling2:
            name_ip = resolver.addresses("one.egtest")[0]
            cidr_ip, cidr2_ip = (resolver.addresses(n)[0] for n in ("two.egtest", "three.egtest"))
            policy = workdir / "policy.yaml"
            write_policy(policy, resolver, [cidr_ip, cidr2_ip], named=[guarded, learner],
                         plain=[plain])
            loop = ConnectLoop(resolver, server, tools["connect_loop"], args.connects)
            memory = bench_memory(resolver, tools["resolve_loop"], workdir, learner, policy)
            with Agent(workdir / "agent", [guarded, plain], policy):
                rows = bench_connect(loop, args.rounds, guarded, sibling, name_ip, cidr_ip,
                                     cidr2_ip)
                rows += bench_dns(resolver, tools["resolve_loop"], args.rounds, args.lookups,
                                  guarded, plain, sibling, sibling2)
            rows.append(bench_unguarded(loop, args.rounds, workdir, guarded, sibling, policy,
                                        cidr_ip))
    book_default = namebook_bytes(args.learn)
    book_all = namebook_bytes(args.learn, per_workload=max(args.learn, 1))
    load_after = Path("/proc/loadavg").read_text().split()[0]
    print(f"\nallow by name (issue 15): {args.rounds} alternating rounds, medians; "
          f"{args.connects} connects and {args.lookups} lookups per loop; "
          f"{os.cpu_count()} CPUs, Linux {os.uname().release}; {time.monotonic() - started:.0f} s;"
          f" load {load_before} -> {load_after}; other egress-guard agents loaded: {others}\n")
    print_rows(rows, "")
    print_memory(memory, book_default, book_all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
