# SPDX-License-Identifier: Apache-2.0
"""`block` means the action does not happen (issue 17, point 3).

Refusing an ssh process's connects stops only what that process (or a
child: the kernel hands the refusal down at fork) would connect itself. A
forward asked for over a ControlMaster socket, a connection made by a
ProxyCommand or a ProxyJump hop, configuration the guard could not read:
each finding says why block cannot stop it (evidence block_bypass), and
decide() kills the process instead, saying so in evidence["enforced_by"].

The precedence and value rules below were checked against OpenSSH 9.2's
`ssh -G`; `ssh -F /dev/stdin` and `-F FIFO` with a RemoteForward, a mux
client's `-O forward -R` and a mux client's own `-R` were run against a real
sshd (the forward listened each time, the mux clients connected only to the
control socket; tests/kernel/test_ssh_hardening.py has them under the guard).
"""
from __future__ import annotations

import signal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.detect.classify import BLOCK_BYPASS, UNREAD, Finding
from guard.detect.classify.ssh import block_bypass, classify_ssh, evaluate_ssh
from guard.detect.classify.ssh_argv import parse_ssh_argv
from guard.detect.detector import Detector, decide, strongest
from guard.kernel.abi import SampleKind
from guard.policy.load import parse_policy
from tests.fakekernel import FakeFiles as RootFiles, fake_agent
from tests.unit.classify_checks import FakeFiles, assert_json, payload_record

SOCK = "/tmp/cm.sock"
REMOTE = ["-R", "9002:localhost:22"]


def policy(**detections: str):
    text = ("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: t\nspec:\n"
            "  detections:\n" + "".join(f"    {k}: {v}\n" for k, v in detections.items()) +
            "  ssh:\n    allow:\n      - host: git.example.org\n        forwards: [local]\n"
            "      - host: relay.example.org\n        forwards: [remote]\n")
    return parse_policy(text)


BLOCK = policy(sshReverseTunnel="block", sshOutbound="log")


def root(files: dict[str, str], dirs: dict[str, list[str]] | None = None):
    """read_file/list_dir over a container root: dirs default to what files imply."""
    data = {path: text.encode() for path, text in files.items()}
    listing: dict[str, set[str]] = {}
    for path in data:
        while path not in ("", "/"):
            directory, _, name = path.rpartition("/")
            listing.setdefault(directory or "/", set()).add(name)
            path = directory
    for directory, names in (dirs or {}).items():
        listing.setdefault(directory, set()).update(names)
    return data.get, lambda path: sorted(listing[path]) if path in listing else None


def ssh(argv: list[str], files: dict[str, str] | None = None,
        dirs: dict[str, list[str]] | None = None, allowlist=()) -> list[Finding]:
    read_file, list_dir = root(files or {}, dirs)
    findings = classify_ssh(argv, read_file, allowlist=allowlist, list_dir=list_dir)
    assert_json(findings)
    return findings


def actions(findings: list[Finding], pol=BLOCK) -> list[tuple[str, str | None, str]]:
    return [(d.finding.type, d.finding.dialect, d.action) for d in decide(findings, pol)]


def killed_because(findings: list[Finding], words: str, pol=BLOCK) -> None:
    decided = decide(findings, pol)
    assert strongest(decided) == "kill", [(d.finding.dialect, d.action) for d in decided]
    reasons = [d.finding.evidence.get("enforced_by", "") for d in decided if d.action == "kill"]
    assert any(r.startswith("kill: ") and words in r for r in reasons), reasons


def reverse(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.type == "ssh_reverse_tunnel"]


# --------------------------------------------------------------------------
# A forward over a control socket: `-O forward` and mux clients


@pytest.mark.parametrize("argv", [
    ["ssh", "-S", SOCK, "-O", "forward", *REMOTE, "h"],
    ["ssh", f"-S{SOCK}", "-Oforward", "-R9002:localhost:22", "h"],
    ["ssh", "h", "-S", SOCK, "-O", "forward", *REMOTE],            # options after the destination
    ["ssh", "-o", f"ControlPath={SOCK}", "-O", "forward", *REMOTE, "h"],
    ["ssh", "-o", "ControlPath none", "-S", SOCK, "-O", "forward", *REMOTE, "h"],   # -S wins
    ["ssh", "-O", "forward", "-o", "RemoteForward=9002 localhost:22", "-S", SOCK, "h"],
    ["autossh", "-M", "0", "-S", SOCK, "-O", "forward", *REMOTE, "h"],
])
def test_dash_O_forward_over_a_control_socket_is_killed(argv):
    findings = ssh(argv)
    assert reverse(findings)
    killed_because(findings, "the forward would travel over the control socket")


def test_dash_O_forward_with_the_control_path_from_the_config():
    files = {"/root/.ssh/config": "Host *\n  ControlPath ~/.ssh/cm-%r@%h:%p\n"}
    findings = ssh(["ssh", "-O", "forward", *REMOTE, "h"], files)
    assert findings[0].evidence["control_path"] == "~/.ssh/cm-%r@%h:%p"
    killed_because(findings, "control socket ~/.ssh/cm-%r@%h:%p")


@pytest.mark.parametrize("argv, config", [
    (["ssh", "-S", SOCK, "-N", *REMOTE, "h"], ""),                     # ControlMaster no
    (["ssh", "-o", "ControlMaster=auto", "-S", SOCK, *REMOTE, "h"], ""),
    (["ssh", *REMOTE, "h"], f"Host h\n  ControlMaster autoask\n  ControlPath {SOCK}\n"),
    (["ssh", "h"], f"Host h\n  ControlPath {SOCK}\n  RemoteForward 9002 localhost:22\n"),
])
def test_a_mux_client_with_a_forward_is_killed(argv, config):
    findings = ssh(argv, {"/root/.ssh/config": config} if config else None)
    assert reverse(findings)
    killed_because(findings, "ssh first tries a running master")


def test_a_master_with_a_remote_forward_is_killed():
    findings = ssh(["ssh", "-M", "-S", SOCK, "-fN", *REMOTE, "h"])
    [found] = reverse(findings)
    assert found.evidence["control_master"] == "yes"
    killed_because(findings, "as a control master (ControlMaster yes)")
    findings = ssh(["ssh", "-MM", "-S", SOCK, *REMOTE, "h"])
    killed_because(findings, "ControlMaster ask")


def test_control_path_none_or_absent_leaves_block_to_do_its_work():
    for argv in (["ssh", "-o", "ControlPath=none", *REMOTE, "h"],
                 ["ssh", "-M", *REMOTE, "h"],                           # a master needs a path
                 ["ssh", "-S", "none", "-o", "ControlMaster=auto", *REMOTE, "h"]):
        findings = ssh(argv)
        assert BLOCK_BYPASS not in findings[0].evidence, argv
        assert strongest(decide(findings, BLOCK)) == "block"


def test_dash_O_forward_without_any_control_path_is_still_reported():
    # ssh itself stops ("No ControlPath specified for -O"): nothing to kill for
    findings = ssh(["ssh", "-O", "forward", *REMOTE, "h"])
    assert reverse(findings) and strongest(decide(findings, BLOCK)) == "block"


@pytest.mark.parametrize("command", ["check", "exit", "stop", "cancel"])
def test_control_commands_that_open_nothing_give_nothing(command):
    assert ssh(["ssh", "-S", SOCK, "-O", command, *REMOTE, "h"]) == []


# --------------------------------------------------------------------------
# Standing ways to add a forward later: masters, -O proxy, ~C


@pytest.mark.parametrize("argv, files, action", [
    (["ssh", "-M", "-S", SOCK, "-fN", "h"], None, "block"),          # connects itself: block holds
    (["ssh", "-MM", "-S", SOCK, "h"], None, "block"),
    (["ssh", "-o", "ControlMaster=auto", "-o", f"ControlPath={SOCK}", "h"], None, "kill"),
    (["ssh", "h"], {"/root/.ssh/config": "Host *\n ControlMaster auto\n ControlPath ~/.ssh/%C\n"
                                         " ControlPersist 10m\n"}, "kill"),
    (["ssh", "-o", "ControlMaster=yes", "-o", f"ControlPath={SOCK}", "h"], None, "block"),
])
def test_a_plain_master_is_stopped_under_block(argv, files, action):
    findings = ssh(argv, files)
    [master] = reverse(findings)
    assert master.dialect == "control-master" and master.confidence == "medium"
    assert "any process" in master.evidence["note"]
    assert strongest(decide(findings, BLOCK)) == action
    # under log it is only reported
    assert {d.action for d in decide(findings, policy(sshReverseTunnel="log"))} == {"log"}


def test_a_master_to_an_allowlisted_server_is_only_logged():
    findings = ssh(["ssh", "-M", "-S", SOCK, "-fN", "git.example.org"],
                   allowlist=BLOCK.ssh_allow)
    [master] = reverse(findings)
    assert master.confidence == "low" and master.evidence["destination_allowlisted"]
    assert strongest(decide(findings, BLOCK)) == "log"
    # an entry that permits remote forwards asks for nothing more
    findings = ssh(["ssh", "-M", "-S", SOCK, "-fN", "relay.example.org"],
                   allowlist=BLOCK.ssh_allow)
    assert reverse(findings) == []


@pytest.mark.parametrize("argv", [
    ["ssh", "-o", "ControlMaster=no", "-o", f"ControlPath={SOCK}", "h"],
    ["ssh", "-o", "ControlMaster=auto", "h"],                          # no path: no master
    ["ssh", "-M", "h"],
])
def test_no_master_no_master_finding(argv):
    assert reverse(ssh(argv)) == []


def test_dash_O_proxy_is_a_standing_carrier_and_killed():
    findings = ssh(["ssh", "-S", SOCK, "-O", "proxy", "h"])
    [proxy] = findings
    assert proxy.dialect == "mux-proxy" and proxy.confidence == "medium"
    killed_because(findings, "-O proxy hands its standard input to the master")
    assert ssh(["ssh", "-O", "proxy", "h"]) == []                      # ssh: no ControlPath


def test_the_escape_command_line_is_a_way_to_add_a_forward():
    [escape] = reverse(ssh(["ssh", "-o", "EnableEscapeCommandline=yes", "h"]))
    assert escape.dialect == "escape-commandline"
    assert strongest(decide([escape], BLOCK)) == "block"
    assert reverse(ssh(["ssh", "-o", "EnableEscapeCommandline=yes", "-e", "none",
                        "-o", "EscapeChar=none", "h"])) == []
    assert reverse(ssh(["ssh", "-o", "EnableEscapeCommandline=no", "h"])) == []


# --------------------------------------------------------------------------
# Connections made by another program: ProxyCommand, ProxyJump


@pytest.mark.parametrize("argv, config", [
    (["ssh", "-o", "ProxyCommand=socat - UNIX-CONNECT:/tmp/relay", *REMOTE, "h"], ""),
    (["ssh", "-o", "ProxyCommand nc %h %p", *REMOTE, "h"], ""),
    (["ssh", *REMOTE, "h"], "Host h\n  ProxyCommand socat - UNIX-CONNECT:/run/r.sock\n"),
    (["ssh", "h"], "Host h\n  RemoteForward 9002 localhost:22\n"
                   "  ProxyCommand /bin/bash -c 'exec 3<>/dev/tcp/%h/%p; cat <&3 & cat >&3'\n"),
    (["ssh", "-o", "ProxyUseFdpass=yes", "-o", "ProxyCommand=./pass-fd %h", *REMOTE, "h"], ""),
])
def test_a_proxy_command_is_killed(argv, config):
    findings = ssh(argv, {"/root/.ssh/config": config} if config else None)
    assert findings[0].evidence["proxy_command"]
    killed_because(findings, "makes the connection")


@pytest.mark.parametrize("argv, config", [
    (["ssh", "-J", "jump", *REMOTE, "h"], ""),
    (["ssh", "-J", "a,b@c:2222", *REMOTE, "h"], ""),
    (["ssh", "-o", "ProxyJump=jump", *REMOTE, "h"], ""),
    (["ssh", *REMOTE, "h"], "Host h\n  ProxyJump bastion\n"),
    (["dbclient", *REMOTE, "hop1,h"], ""),                                # dropbear multihop
])
def test_a_proxy_jump_is_killed(argv, config):
    # ProxyJump runs `$SHELL -c "exec ssh ... -W [h]:p jump"` (seen with strace
    # on OpenSSH 9.2): the hop is whatever `ssh` names in the sandbox's PATH
    findings = ssh(argv, {"/root/.ssh/config": config} if config else None)
    killed_because(findings, "ProxyJump runs the hop's client")


def test_proxy_command_none_and_a_plain_connection_stay_block():
    for argv in (["ssh", "-o", "ProxyCommand=none", *REMOTE, "h"],
                 ["ssh", "-J", "none", *REMOTE, "h"], ["ssh", *REMOTE, "h"]):
        findings = ssh(argv)
        assert block_bypass(evaluate_ssh(parse_ssh_argv(argv)), True) == [], argv
        assert strongest(decide(findings, BLOCK)) == "block"


def test_other_clients_proxies_and_sharing():
    killed_because(ssh(["dbclient", "-J", "nc relay 22", *REMOTE, "h"]), "ProxyCommand")
    killed_because(ssh(["plink", "-proxycmd", "nc relay 22", *REMOTE, "h"]), "ProxyCommand")
    findings = ssh(["plink", "-share", *REMOTE, "h"])
    killed_because(findings, "ssh first tries a running master")


def test_a_proxy_command_behind_an_unevaluated_match_exec_is_killed():
    files = {"/root/.ssh/config": 'Match exec "test -e /tmp/go"\n'
                                  "  ProxyCommand socat - UNIX-CONNECT:/tmp/relay\n"}
    findings = ssh(["ssh", *REMOTE, "h"], files)
    killed_because(findings, "Match exec test -e /tmp/go (not evaluated) may set ProxyCommand")
    files = {"/root/.ssh/config": 'Match exec "true"\n  ControlPath /tmp/s\n'}
    killed_because(ssh(["ssh", *REMOTE, "h"], files), "may set ControlPath")


def test_ssh_outbound_under_block_with_a_proxy_command_is_killed_too():
    pol = policy(sshReverseTunnel="block", sshOutbound="block")
    findings = ssh(["ssh", "-o", "ProxyCommand=socat - UNIX-CONNECT:/tmp/relay", "h"])
    assert [f.type for f in findings] == ["ssh_outbound"]
    killed_because(findings, "ProxyCommand", pol)
    assert strongest(decide(ssh(["ssh", "h"]), pol)) == "block"


@pytest.mark.parametrize("argv, action", [
    (["ssh", "-W", "db:5432", "j"], None),                              # outbound: logged
    (["ssh", "-W", "db:5432", "-o", "ClearAllForwardings=no", *REMOTE, "j"], "block"),
    (["ssh", "-W", "db:5432", "-S", SOCK, "-o", "ClearAllForwardings=no", *REMOTE, "j"], "kill"),
    (["ssh", "-W", "db:5432", "-J", "j2", "-o", "ClearAllForwardings=no", *REMOTE, "j"], "kill"),
])
def test_stdio_forwarding_connects_itself(argv, action):
    # -W makes ssh connect to the server itself: block holds, unless a
    # control socket or a jump carries it
    decided = decide(ssh(argv), BLOCK)
    assert strongest([d for d in decided if d.finding.type == "ssh_reverse_tunnel"]) == action


# --------------------------------------------------------------------------
# Configuration the guard could not read


@pytest.mark.parametrize("path", ["/dev/stdin", "/dev/fd/0", "/proc/self/fd/0", "/proc/42/fd/5",
                                  "/dev/tty", "/proc/self/task/42/fd/3"])
def test_dash_F_from_a_stream_is_unread_and_killed(path):
    findings = ssh(["ssh", "-F", path, "-N", "h"])
    [unread] = [f for f in findings if f.dialect == UNREAD]
    assert unread.confidence == "high" and path in unread.evidence["note"]
    killed_because(findings, "could not read")


def test_dash_F_that_is_a_fifo_or_missing_is_unread():
    # present in its directory, unreadable as a regular file: a FIFO ssh reads fine
    findings = ssh(["ssh", "-F", "/tmp/pipe", "h"], dirs={"/tmp": ["pipe"]})
    assert any(f.dialect == UNREAD and "present but not a regular file" in f.evidence["note"]
               for f in findings)
    # missing: ssh stops, unless it appears while ssh is held; either way unread
    findings = ssh(["ssh", "-F", "/tmp/later.conf", "h"])
    assert any(f.dialect == UNREAD and "missing when the guard looked" in f.evidence["note"]
               for f in findings)
    assert strongest(decide(findings, BLOCK)) == "kill"


def test_user_and_system_configs_that_are_not_regular_files_are_unread():
    findings = ssh(["ssh", "h"], dirs={"/root/.ssh": ["config"]})
    assert any(f.dialect == UNREAD and "/root/.ssh/config" in f.evidence["note"]
               for f in findings)
    findings = ssh(["ssh", "h"], dirs={"/etc/ssh": ["ssh_config"]})
    assert any(f.dialect == UNREAD for f in findings)
    files = {"/root/.ssh/config": "Include /dev/stdin\n"}
    assert any(f.dialect == UNREAD and "/dev/stdin" in f.evidence["note"]
               for f in ssh(["ssh", "h"], files))


def test_missing_and_empty_configs_are_no_finding():
    for argv, files in ((["ssh", "h"], None), (["ssh", "-F", "/dev/null", "h"], None),
                        (["ssh", "-F", "none", "h"], None),
                        (["ssh", "h"],
                         {"/root/.ssh/config": "Host *\n  ServerAliveInterval 30\n"})):
        findings = ssh(argv, files)
        assert [f.type for f in findings] == ["ssh_outbound"], argv
        assert BLOCK_BYPASS not in findings[0].evidence


# --------------------------------------------------------------------------
# decide(): block -> kill only when the finding says block cannot stop it


def finding(confidence: str = "high", bypass: list[str] | None = None) -> Finding:
    evidence = {BLOCK_BYPASS: bypass} if bypass else {}
    return Finding("ssh_reverse_tunnel", confidence, "ssh", evidence)


@pytest.mark.parametrize("action, confidence, bypass, expected", [
    ("block", "high", ["over the control socket"], "kill"),
    ("block", "medium", ["over the control socket"], "kill"),
    ("block", "low", ["over the control socket"], "log"),               # a hint never enforces
    ("block", "high", None, "block"),
    ("block", "high", [], "block"),
    ("log", "high", ["over the control socket"], "log"),
    ("kill", "high", ["over the control socket"], "kill"),
])
def test_decide_kills_what_block_cannot_stop(action, confidence, bypass, expected):
    [detection] = decide([finding(confidence, bypass)], policy(sshReverseTunnel=action))
    assert detection.action == expected
    enforced = detection.finding.evidence.get("enforced_by")
    if action == "block" and expected == "kill":
        assert enforced == "kill: over the control socket"
    else:
        assert enforced is None


# --------------------------------------------------------------------------
# A client found by its banner gets its configs read like one found by name


def banner_findings(argv: list[str], files: dict[str, str], sample: bytes, *,
                    pol=BLOCK) -> list[Finding]:
    fake = FakeFiles({path: text.encode() for path, text in files.items()}, home="/home/u",
                     user="u", cwd="/work")
    asked: list[int] = []

    def files_of(pid: int) -> FakeFiles:
        asked.append(pid)
        return fake
    findings = Detector().payload_findings(pol, payload_record(sample, SampleKind.FIRST, 22),
                                           argv=argv, files_of=files_of)
    assert_json(findings)
    return findings


OPENSSH = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n"


@pytest.mark.parametrize("argv, files, origin", [
    (["/tmp/backup-tool", "-F", "/work/t.conf", "-N", "h"],
     {"/work/t.conf": "Host h\n  RemoteForward 9002 localhost:22\n"}, "/work/t.conf:2"),
    (["/tmp/backup-tool", "-F", "t.conf", "-N", "h"],                   # relative to its cwd
     {"/work/t.conf": "RemoteForward 9002 localhost:22\n"}, "/work/t.conf:1"),
    (["./x", "-N", "h"], {"/home/u/.ssh/config": "Host *\n  RemoteForward 9002 localhost:22\n"},
     "/home/u/.ssh/config:2"),
    (["./x", "-N", "h"], {"/etc/ssh/ssh_config": "RemoteForward 9002 localhost:22\n"},
     "/etc/ssh/ssh_config:1"),
])
def test_a_renamed_ssh_found_by_its_banner_has_its_configs_read(argv, files, origin):
    findings = banner_findings(argv, files, OPENSSH)
    [found] = reverse(findings)
    assert found.evidence["origin"] == origin
    assert strongest(decide(findings, BLOCK)) == "block"       # its own flow: dropped


def test_a_renamed_ssh_with_a_control_path_or_stdin_config_is_killed():
    findings = banner_findings(["./x", "-N", "h"], {"/home/u/.ssh/config": (
        "Host *\n  RemoteForward 9002 localhost:22\n  ControlPath /tmp/s\n")}, OPENSSH)
    killed_because(findings, "control socket")
    findings = banner_findings(["./x", "-F", "/dev/stdin", "h"], {}, OPENSSH)
    assert any(f.dialect == UNREAD for f in findings)
    killed_because(findings, "could not read")


def test_a_renamed_dropbear_is_read_as_dbclient():
    findings = banner_findings(["./y", "-R", "9002:localhost:22", "-y", "h"], {},
                               b"SSH-2.0-dropbear_2022.83\r\n")
    [found] = reverse(findings)
    assert found.dialect == "dbclient"


def test_the_banner_path_reads_nothing_for_a_client_judged_at_exec():
    findings = Detector().payload_findings(
        BLOCK, payload_record(OPENSSH, SampleKind.FIRST, 22), ssh_judged=True,
        argv=["ssh", "-F", "/dev/stdin", "h"], files_of=lambda pid: pytest.fail("read"))
    assert findings == []


# --------------------------------------------------------------------------
# What must not change: benign ssh gives no reverse finding and no bypass


@pytest.mark.parametrize("argv", [
    ["ssh", "git@github.com", "git-upload-pack", "'org/repo.git'"],
    ["ssh", "-o", "BatchMode=yes", "-p", "2222", "deploy@10.0.0.5", "uptime"],
    ["ssh", "-L", "5432:db:5432", "-N", "bastion"],
    ["ssh", "-i", "~/.ssh/id_ed25519", "-o", "StrictHostKeyChecking=accept-new", "h"],
    ["ssh", "-F", "/dev/null", "-T", "h"],
    ["ssh", "-o", "ControlMaster=no", "h"],
    ["ssh", "-o", "ServerAliveInterval=30", "-o", "ExitOnForwardFailure=yes", "h"],
    ["ssh", "-G", "h"], ["ssh", "-V"],
    ["ssh", "-S", SOCK, "-O", "check", "h"], ["ssh", "-S", SOCK, "-O", "exit", "h"],
])
def test_benign_ssh_has_no_reverse_finding_and_no_bypass(argv):
    files = {"/root/.ssh/config": "Host *\n  ServerAliveInterval 60\n  IdentitiesOnly yes\n"}
    for found in ssh(argv, files):
        assert found.type == "ssh_outbound" and BLOCK_BYPASS not in found.evidence, argv
    assert all(d.action == "log" for d in decide(ssh(argv, files), BLOCK))


# --------------------------------------------------------------------------
# Hostile input never raises


CARRIER_LINES = st.sampled_from([
    "ControlPath /tmp/s", "ControlPath none", "ControlMaster auto", "ControlMaster yes",
    "ControlMaster bogus", "ProxyCommand nc %h %p", "ProxyCommand none", "ProxyJump a,b",
    "ProxyJump none", "EnableEscapeCommandline yes", "EscapeChar none",
    "RemoteForward 1 a:2", 'Match exec "x"', "Host *", "Include /dev/stdin", "Include /tmp/*",
])
ARGS = st.sampled_from(["-M", "-MM", "-S", SOCK, "-O", "forward", "proxy", "-J", "j", "-W",
                        "h:1", "-F", "/dev/stdin", "-R", "1:a:2", "-o", "ControlMaster=auto",
                        "h", "-N", "-f"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ARGS, max_size=10), st.lists(CARRIER_LINES, max_size=12))
def test_carrier_evaluation_never_raises(args, lines):
    findings = ssh(["ssh", *args], {"/root/.ssh/config": "\n".join(lines)},
                   dirs={"/tmp": ["x", "s"]})
    for found in findings:
        assert all(isinstance(reason, str) for reason in found.evidence.get(BLOCK_BYPASS, []))
    assert_json([d.finding for d in decide(findings, BLOCK)])


# --------------------------------------------------------------------------
# The agent: a held ssh that block cannot stop is killed, not resumed


AGENT_POLICY = ("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: hard\n"
                "spec:\n  detections:\n    sshReverseTunnel: block\n    sshOutbound: log\n")


def held_exec(argv: list[str], files: dict[str, bytes] | None = None):
    """(signals sent to the held program, detection events, process blocks)."""
    with fake_agent(AGENT_POLICY) as fake:
        fake.maps.held[fake.pid] = 1
        fake.files[fake.pid] = RootFiles(files or {})
        events = fake.exec(argv, held=True)
        detections = [e for e in events if e["kind"] == "detection"]
        return fake.signals.signals_to(fake.pid), detections, fake.maps.called("block_process")


def test_the_agent_kills_a_held_mux_client_and_says_why():
    sent, detections, blocked = held_exec(["ssh", "-S", SOCK, "-O", "forward", *REMOTE, "h"])
    assert sent == [signal.SIGKILL] and blocked == []
    [event] = detections
    assert event["action"] == "kill"
    assert event["detection"]["evidence"]["enforced_by"].startswith(
        "kill: the forward would travel over the control socket /tmp/cm.sock")


def test_the_agent_kills_ssh_reading_its_config_from_stdin():
    sent, detections, _ = held_exec(["ssh", "-F", "/dev/stdin", "-N", "h"])
    assert sent == [signal.SIGKILL]
    assert {(e["detection"]["dialect"], e["action"]) for e in detections} >= {(UNREAD, "kill")}


def test_the_agent_still_blocks_a_plain_remote_forward():
    sent, detections, blocked = held_exec(["ssh", *REMOTE, "h"])
    assert sent == [signal.SIGCONT] and len(blocked) == 1
    assert [e["action"] for e in detections] == ["block"]
    assert "enforced_by" not in detections[0]["detection"]["evidence"]


def test_a_library_client_found_by_its_banner_has_no_config_read():
    asked: list[int] = []
    findings = Detector().payload_findings(
        BLOCK, payload_record(b"SSH-2.0-paramiko_3.4.0\r\n", SampleKind.FIRST, 22),
        argv=["python3", "tool.py"], files_of=lambda pid: asked.append(pid))
    assert asked == [] and reverse(findings) == []


def test_a_directory_among_included_files_is_read_as_ssh_reads_it():
    # ssh's glob(3) hands a directory to fopen, which reads nothing from it
    files = {"/root/.ssh/config": "Include config.d/*\n",
             "/root/.ssh/config.d/work": "Host w\n  User deploy\n",
             "/root/.ssh/config.d/old/stale": "RemoteForward 1 a:2\n"}
    findings = ssh(["ssh", "h"], files)
    assert [f.type for f in findings] == ["ssh_outbound"]
