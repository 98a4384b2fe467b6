# SPDX-License-Identifier: Apache-2.0
"""SSH clients: argv forms, ssh_config evaluation, findings and wire banners.

Config files come from a dict-backed fake of the /proc/PID/root reader; the
expected results for argv and config forms were checked against `ssh -G`
of OpenSSH 9.2 where it can print them.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.detect.classify import Finding
from guard.detect.classify.ssh import (
    classify_ssh, classify_ssh_banner, effective_forwards, evaluate_ssh,
)
from guard.detect.classify.ssh_argv import parse_ssh_argv
from guard.detect.classify.ssh_config import read_ssh_config, split_config_line
from guard.detect.classify.ssh_forward import Address, parse_forward
from tests.unit.classify_checks import assert_json


def fake_root(files: dict[str, str]):
    """read_file/list_dir over a dict of path -> text, like a container root."""
    data = {path: text.encode() for path, text in files.items()}

    def read_file(path: str) -> bytes | None:
        return data.get(path)

    def list_dir(path: str) -> list[str] | None:
        prefix = path.rstrip("/") + "/"
        names = {p[len(prefix):].split("/", 1)[0] for p in data if p.startswith(prefix)}
        return sorted(names) or None

    return read_file, list_dir


def shape(forward):
    """(kind, listen, target) of a Forward as plain data."""
    return (forward.kind, forward.listen.as_dict() if forward.listen else None,
            forward.target.as_dict() if forward.target else None)


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


# --------------------------------------------------------------------------
# -R in every form, attached, bundled and after the destination

LOCALHOST_80 = {"host": "localhost", "port": 80}

REMOTE_FORMS = [
    ("port:host:hostport", ["ssh", "-R", "8080:localhost:80", "h"], {"port": 8080}, LOCALHOST_80),
    ("bind:port:host:hostport", ["ssh", "-R", "0.0.0.0:8080:localhost:80", "h"],
     {"host": "0.0.0.0", "port": 8080}, LOCALHOST_80),
    ("all interfaces *", ["ssh", "-R", "*:8080:localhost:80", "h"], {"host": "*", "port": 8080},
     LOCALHOST_80),
    ("empty bind address", ["ssh", "-R", ":8080:localhost:80", "h"], {"host": "", "port": 8080},
     LOCALHOST_80),
    ("bracketed IPv6 bind", ["ssh", "-R", "[::1]:8080:localhost:80", "h"],
     {"host": "::1", "port": 8080}, LOCALHOST_80),
    ("bracketed IPv6 target", ["ssh", "-R", "8080:[::1]:80", "h"], {"port": 8080},
     {"host": "::1", "port": 80}),
    ("server-allocated port 0", ["ssh", "-R", "0:localhost:8000", "h"], {"port": 0},
     {"host": "localhost", "port": 8000}),
    ("attached value", ["ssh", "-R0:localhost:8000", "h"], {"port": 0},
     {"host": "localhost", "port": 8000}),
    ("bundled -NfR", ["ssh", "-NfR", "8080:localhost:80", "h"], {"port": 8080}, LOCALHOST_80),
    ("bundled with attached value", ["ssh", "-NTfR8080:localhost:80", "h"], {"port": 8080},
     LOCALHOST_80),
    ("port:local_socket", ["ssh", "-R", "8080:/run/app.sock", "h"], {"port": 8080},
     {"path": "/run/app.sock"}),
    ("bind:port:local_socket", ["ssh", "-R", "lo:8080:/run/app.sock", "h"],
     {"host": "lo", "port": 8080}, {"path": "/run/app.sock"}),
    ("remote_socket:local_socket", ["ssh", "-R", "/tmp/r.sock:/tmp/l.sock", "h"],
     {"path": "/tmp/r.sock"}, {"path": "/tmp/l.sock"}),
    ("remote_socket:host:port", ["ssh", "-R", "/tmp/r.sock:localhost:80", "h"],
     {"path": "/tmp/r.sock"}, LOCALHOST_80),
    ("reverse SOCKS: port alone", ["ssh", "-R", "1080", "h"], {"port": 1080}, None),
    ("reverse SOCKS: bind:port", ["ssh", "-R", "localhost:1080", "h"],
     {"host": "localhost", "port": 1080}, None),
    ("reverse SOCKS on port 0", ["ssh", "-R", "0", "h"], {"port": 0}, None),
    ("service name port", ["ssh", "-R", "http:localhost:80", "h"], {"port": 80}, LOCALHOST_80),
    ("after the destination", ["ssh", "h", "-R", "8080:localhost:80"], {"port": 8080},
     LOCALHOST_80),
    ("-o RemoteForward=listen target", ["ssh", "-o", "RemoteForward=8080 localhost:80", "h"],
     {"port": 8080}, LOCALHOST_80),
    ("-o 'RemoteForward listen target'", ["ssh", "-o", "RemoteForward 8080 localhost:80", "h"],
     {"port": 8080}, LOCALHOST_80),
    ("-o key = value, odd case", ["ssh", "-o", "remoteFORWARD = 8080 localhost:80", "h"],
     {"port": 8080}, LOCALHOST_80),
    ("-oRemoteForward attached", ["ssh", "-oRemoteForward=8080 localhost:80", "h"],
     {"port": 8080}, LOCALHOST_80),
    ("-o RemoteForward SOCKS", ["ssh", "-o", "RemoteForward 9000", "h"], {"port": 9000}, None),
    ("-O forward -R", ["ssh", "-O", "forward", "-R", "9000:localhost:22", "h"], {"port": 9000},
     {"host": "localhost", "port": 22}),
    ("autossh -M 0", ["autossh", "-M", "0", "-f", "-N", "-R", "8080:localhost:80", "h"],
     {"port": 8080}, LOCALHOST_80),
    ("autossh attached -M0 and bundled -fNR", ["autossh", "-M0", "-fNR", "8080:localhost:80", "h"],
     {"port": 8080}, LOCALHOST_80),
    ("dbclient -R", ["dbclient", "-N", "-f", "-y", "-R", "8080:localhost:80", "u@h"],
     {"port": 8080}, LOCALHOST_80),
    ("dbclient listen address", ["dbclient", "-R", "0.0.0.0:8080:localhost:80", "h"],
     {"host": "0.0.0.0", "port": 8080}, LOCALHOST_80),
    ("dbclient bundled -NfR", ["dbclient", "-NfR", "8080:localhost:80", "h"], {"port": 8080},
     LOCALHOST_80),
    ("dbclient -R after the host", ["dbclient", "h", "-R", "8080:localhost:80"], {"port": 8080},
     LOCALHOST_80),
    ("dropbearmulti dbclient", ["dropbearmulti", "dbclient", "-R", "8080:localhost:80", "h"],
     {"port": 8080}, LOCALHOST_80),
    ("plink -R", ["plink", "-batch", "-R", "8080:localhost:80", "u@h"], {"port": 8080},
     LOCALHOST_80),
    ("plink -R after the host", ["plink", "h", "-N", "-R", "8080:localhost:80"], {"port": 8080},
     LOCALHOST_80),
]


@pytest.mark.parametrize("argv, listen, target", [case[1:] for case in REMOTE_FORMS],
                         ids=[case[0] for case in REMOTE_FORMS])
def test_every_remote_forward_form(argv, listen, target):
    invocation = parse_ssh_argv(argv)
    remote = [f for f in invocation.forwards if f.kind == "remote" and not f.option.startswith("autossh")]
    assert [shape(f) for f in remote] == [("remote", listen, target)]
    assert remote[0].valid
    finding = only(classify_ssh(argv))
    assert finding.type == "ssh_reverse_tunnel" and finding.confidence == "high"
    assert finding.evidence["origin"] == "argv"
    assert finding.evidence["forward"] == remote[0].spec
    assert finding.evidence.get("socks", False) is (target is None)


OTHER_FORWARDS = [
    ("-L port:host:port", ["ssh", "-L", "5432:db:5432", "h"], "local", {"port": 5432},
     {"host": "db", "port": 5432}),
    ("-L bind:port:socket", ["ssh", "-L", "lo:5432:/run/pg.sock", "h"], "local",
     {"host": "lo", "port": 5432}, {"path": "/run/pg.sock"}),
    ("-L socket:socket", ["ssh", "-L", "/tmp/a:/tmp/b", "h"], "local", {"path": "/tmp/a"},
     {"path": "/tmp/b"}),
    ("-D port", ["ssh", "-D", "1080", "h"], "dynamic", {"port": 1080}, None),
    ("-D bind:port", ["ssh", "-D", "[::1]:1080", "h"], "dynamic", {"host": "::1", "port": 1080}, None),
    ("-D attached", ["ssh", "-D1080", "h"], "dynamic", {"port": 1080}, None),
    ("-w local:remote", ["ssh", "-w", "0:1", "h"], "tunnel", {"device": "0"}, {"device": "1"}),
    ("-w any", ["ssh", "-w", "any", "h"], "tunnel", {"device": "any"}, {"device": "any"}),
    ("-o LocalForward", ["ssh", "-o", "LocalForward=1 a:2", "h"], "local", {"port": 1},
     {"host": "a", "port": 2}),
    ("-o DynamicForward", ["ssh", "-o", "DynamicForward 1080", "h"], "dynamic", {"port": 1080}, None),
    ("plink -D", ["plink", "-D", "1080", "h"], "dynamic", {"port": 1080}, None),
    ("plink -L", ["plink", "-L", "8080:internal:80", "h"], "local", {"port": 8080},
     {"host": "internal", "port": 80}),
    ("dbclient -L", ["dbclient", "-L", "8080:internal:80", "h"], "local", {"port": 8080},
     {"host": "internal", "port": 80}),
]


@pytest.mark.parametrize("argv, kind, listen, target", [case[1:] for case in OTHER_FORWARDS],
                         ids=[case[0] for case in OTHER_FORWARDS])
def test_local_dynamic_and_tunnel_forwards_are_outbound(argv, kind, listen, target):
    invocation = parse_ssh_argv(argv)
    assert [shape(f) for f in invocation.forwards] == [(kind, listen, target)]
    finding = only(classify_ssh(argv))
    assert finding.type == "ssh_outbound"
    assert finding.evidence["forwards"][0]["kind"] == kind
    # SOCKS and tun devices carry traffic past the egress policy, so they rank high
    assert finding.confidence == ("high" if kind in ("dynamic", "tunnel") else "medium")


@pytest.mark.parametrize("spec, reason", [
    ("8080", "-L needs a target"),
    ("0:localhost:80", "only the server can pick port 0"),
    ("a:b:c:d:e", "too many fields"),
    ("[::1:8080:localhost:80", "unclosed bracket"),
    ("8080:localhost:", "no target port"),
])
def test_local_forwards_ssh_refuses_are_marked_invalid(spec, reason):
    assert not parse_forward("local", spec).valid, reason


def test_a_remote_forward_ssh_would_refuse_is_still_reported_at_medium():
    # ssh rejects `-o RemoteForward=8080:localhost:80` (one argument means SOCKS),
    # but the intent is plain: report it, lower.
    argv = ["ssh", "-oRemoteForward=8080:localhost:80", "h"]
    forward = only(parse_ssh_argv(argv).forwards)
    assert not forward.valid
    assert shape(forward) == ("remote", {"port": 8080}, LOCALHOST_80)
    finding = only(classify_ssh(argv))
    assert finding.type == "ssh_reverse_tunnel" and finding.confidence == "medium"
    assert finding.evidence["valid"] is False


def test_forward_spec_escapes_and_paths():
    forward = parse_forward("remote", r"8080:local\:host:80")
    assert forward.target == Address(host="local:host", port=80)
    assert parse_forward("remote", "[/tmp/a b]:localhost:80").listen == Address(path="/tmp/a b")


# --------------------------------------------------------------------------
# Destinations, getopt details, programs

@pytest.mark.parametrize("argv, host, user, port", [
    (["ssh", "h"], "h", None, None),
    (["ssh", "bob@h"], "h", "bob", None),
    (["ssh", "a@b@h"], "h", "a@b", None),
    (["ssh", "-l", "bob", "alice@h"], "h", "bob", None),      # -l came first: it wins
    (["ssh", "alice@h", "-l", "bob"], "h", "alice", None),
    (["ssh", "ssh://bob@h.example:2200"], "h.example", "bob", 2200),
    (["ssh", "ssh://bob;fp=SHA256:x@[2001:db8::1]:2200"], "2001:db8::1", "bob", 2200),
    (["ssh", "SSH://h.example/"], "h.example", None, None),
    (["ssh", "-p", "1", "ssh://h:2200"], "h", None, 1),       # first value obtained wins
    (["ssh", "ssh://h:2200", "-p", "1"], "h", None, 2200),
    (["ssh", "-p", "2222", "-o", "Port=22", "h"], "h", None, 2222),
    (["ssh", "-o", "Port=22", "-p", "2222", "h"], "h", None, 22),
    (["ssh", "-p443", "h"], "h", None, 443),
    (["ssh", "-p", "1", "-p", "2", "h"], "h", None, 1),
    (["ssh", "-o", "User=x", "-l", "y", "h"], "h", "x", None),
    (["autossh", "-M", "0", "-p", "443", "u@h"], "h", "u", 443),
    (["dbclient", "u@h/2222"], "h", "u", 2222),
    (["dbclient", "-p", "1", "u@h^2222"], "h", "u", 2222),
    (["dbclient", "-p", "1", "-o", "Port=3", "h"], "h", None, 3),
    (["plink", "-P", "443", "-l", "bob", "h"], "h", "bob", 443),
    (["plink", "bob@h:22"], "h", "bob", None),
])
def test_destination(argv, host, user, port):
    destination = parse_ssh_argv(argv).destination
    assert (destination.host, destination.user, destination.port) == (host, user, port)


def test_options_after_the_destination_but_not_after_the_command():
    invocation = parse_ssh_argv(["ssh", "h", "-p", "2", "ls", "-R", "1:a:2"])
    assert invocation.destination.port == 2
    assert invocation.command == ("ls", "-R", "1:a:2")
    assert invocation.forwards == ()


def test_double_dash_ends_options_for_good():
    invocation = parse_ssh_argv(["ssh", "--", "h", "-R", "1:a:2"])
    assert invocation.destination.host == "h"
    assert invocation.forwards == () and invocation.command == ("-R", "1:a:2")


def test_options_dict_config_files_and_jumps():
    invocation = parse_ssh_argv([
        "ssh", "-F", "/a", "-F", "cfg", "-o", "StrictHostKeyChecking=no", "-o",
        "ExitOnForwardFailure yes", "-o", "ServerAliveInterval=30", "-J", "j1,bob@j2:2222",
        "-o", "ProxyCommand=nc %h %p", "-W", "t:22", "dest"])
    assert invocation.config_files == ("/a", "cfg")
    assert invocation.options["stricthostkeychecking"] == ("no",)
    assert invocation.options["exitonforwardfailure"] == ("yes",)
    assert invocation.options["proxycommand"] == ("nc %h %p",)
    assert [(j.host, j.user, j.port) for j in invocation.jump_hosts] == [
        ("j1", None, None), ("j2", "bob", 2222)]
    assert invocation.proxy_command is None            # -J came first
    assert invocation.stdio_forward == "t:22"


@pytest.mark.parametrize("argv", [
    ["ssh", "-V"], ["ssh", "-G", "h"], ["ssh", "-Q", "cipher"], ["ssh", "-vV", "h"], ["ssh"],
    ["ssh", "-R", "1:a:2"], ["ssh", "h", "-p"], ["autossh", "-V"], ["dbclient", "-V", "h"],
    ["dbclient", "-D", "1080", "h"], ["plink", "-V"], ["plink", "-pgpfp"],
])
def test_no_connection_no_finding(argv):
    invocation = parse_ssh_argv(argv)
    assert invocation is not None and invocation.no_connection
    assert classify_ssh(argv) == []


@pytest.mark.parametrize("command", ["check", "exit", "stop", "cancel", "proxy"])
def test_control_commands_other_than_forward_open_nothing(command):
    argv = ["ssh", "-O", command, "-R", "9:a:1", "h"]
    assert parse_ssh_argv(argv).control_command == command
    assert classify_ssh(argv) == []


@pytest.mark.parametrize("argv", [
    ["scp", "-P", "22", "f", "h:"], ["sftp", "h"], ["sshd", "-D"], ["ssh-keygen", "-t", "ed25519"],
    ["ssh-agent", "-s"], ["ssh-add", "-l"], ["ssh-copy-id", "h"], ["ssh-keyscan", "h"],
    ["sshpass", "-p", "x"], ["/usr/lib/openssh/sftp-server"], ["sshfs", "h:/", "/mnt"],
    ["sshuttle", "-r", "h", "0/0"], ["rsync", "-e", "ssh", "a", "h:b"], ["git", "push"], [],
    [""], ["ssh.sh", "-R", "1:a:2", "h"],
])
def test_other_programs_are_not_ssh(argv):
    # sshfs, rsync and git start ssh as a child: that exec is classified on its own argv
    assert parse_ssh_argv(argv) is None
    assert classify_ssh(argv) == []


def test_program_overrides_a_forged_argv0():
    argv = ["innocent", "-R", "8080:localhost:80", "h"]
    assert classify_ssh(argv) == []
    assert only(classify_ssh(argv, program="ssh")).type == "ssh_reverse_tunnel"
    assert classify_ssh(["ssh", "-R", "1:a:2", "h"], program="scp") == []


def test_plink_other_protocols_are_not_ssh():
    assert classify_ssh(["plink", "-raw", "-P", "80", "h"]) == []
    assert classify_ssh(["plink", "-telnet", "h"]) == []


def test_unknown_option_letters_are_noted_not_fatal():
    invocation = parse_ssh_argv(["ssh", "-Z", "-R", "1:a:2", "h"])
    assert invocation.forwards and any("-Z" in note for note in invocation.notes)


def test_dash_p_tag_makes_the_argv_ambiguous():
    # OpenSSH >= 9.4 reads `-P serveo.net` as a tag; older clients connect to it.
    argv = ["ssh", "-P", "serveo.net", "-R", "80:localhost:3000", "git.example.org"]
    invocation = parse_ssh_argv(argv)
    assert invocation.ambiguous and invocation.destination.host == "git.example.org"
    allow = [{"host": "git.example.org", "forwards": ["remote"]}]
    finding = only(classify_ssh(argv, allowlist=allow))
    assert finding.type == "ssh_reverse_tunnel"        # the allowlist cannot vouch for it


# --------------------------------------------------------------------------
# autossh, dbclient, plink specifics

def test_autossh_drops_its_own_options_and_adds_its_monitor_forwards():
    invocation = parse_ssh_argv(["autossh", "-M", "20000", "-fN", "h"])
    assert "f" not in invocation.flags and "N" in invocation.flags
    assert [shape(f) for f in invocation.forwards] == [
        ("local", {"port": 20000}, {"host": "127.0.0.1", "port": 20000}),
        ("remote", {"port": 20000}, {"host": "127.0.0.1", "port": 20001})]
    finding = only(classify_ssh(["autossh", "-M", "20000", "-fN", "h"]))
    assert finding.type == "ssh_reverse_tunnel" and finding.confidence == "medium"
    assert finding.evidence["purpose"] == "autossh connection monitor"


def test_autossh_echo_port_means_no_remote_monitor_forward():
    invocation = parse_ssh_argv(["autossh", "-M", "20000:7", "h"])
    assert [f.kind for f in invocation.forwards] == ["local"]
    assert only(classify_ssh(["autossh", "-M", "20000:7", "h"])).type == "ssh_outbound"


def test_autossh_first_double_dash_is_its_own():
    invocation = parse_ssh_argv(["autossh", "-M", "0", "--", "-M", "h"])
    # after autossh's `--`, -M goes to ssh (master mode), not autossh
    assert "M" in invocation.flags and invocation.destination.host == "h"
    assert not any("no -M" in note for note in invocation.notes)


def test_dbclient_multihop_and_netcat_mode():
    invocation = parse_ssh_argv(["dbclient", "-B", "inner:22", "a,bob@b/2022,c^443"])
    assert invocation.destination == parse_ssh_argv(["dbclient", "c^443"]).destination
    assert [(j.host, j.user, j.port) for j in invocation.jump_hosts] == [
        ("a", None, None), ("b", "bob", 2022)]
    assert invocation.stdio_forward == "inner:22"


def test_dbclient_rejects_forms_it_does_not_know():
    forward = only(parse_ssh_argv(["dbclient", "-R", "8080", "h"]).forwards)
    assert not forward.valid           # no reverse SOCKS in dropbear
    assert only(classify_ssh(["dbclient", "-R", "8080", "h"])).confidence == "medium"


def test_dbclient_and_plink_do_not_read_openssh_config():
    read_file, _ = fake_root({"/root/.ssh/config": "RemoteForward 1 a:2\n"})
    assert only(classify_ssh(["dbclient", "h"], read_file=read_file)).type == "ssh_outbound"
    assert only(classify_ssh(["plink", "h"], read_file=read_file)).type == "ssh_outbound"
    assert only(classify_ssh(["ssh", "h"], read_file=read_file)).type == "ssh_reverse_tunnel"


def test_plink_saved_session_is_noted():
    invocation = parse_ssh_argv(["plink", "-load", "work", "h"])
    assert any("saved session" in note for note in invocation.notes)


# --------------------------------------------------------------------------
# ssh_config files

USER_CONFIG = """\
# forwarding boxes
Host tunnel-box
    HostName 203.0.113.7
    Port 2201
    RemoteForward 9000 localhost:22
    RemoteForward 9001 localhost:23
Host *.corp !secret.corp
    User corp
    LocalForward 5432 db.internal:5432
Host secret.corp
    RemoteForward=9002 localhost:2
Match originalhost alias
    Hostname real.example
Match host real.example
    RemoteForward "9003" "localhost:3"   # quoted, with a comment
Match user bob
    RemoteForward 9004
Match localuser agent host *.lab
    DynamicForward 1081
Host *
    Port 22
    User fallback
"""


@pytest.fixture
def user_root():
    return fake_root({"/home/agent/.ssh/config": USER_CONFIG})


def remote_specs(argv, read_file, list_dir=None, home="/home/agent", user="agent"):
    invocation = parse_ssh_argv(argv)
    return [(f.spec, f.origin) for f in effective_forwards(invocation, read_file, home, user,
                                                           list_dir=list_dir) if f.kind == "remote"]


def test_host_block_forwards_with_file_and_line(user_root):
    read_file, _ = user_root
    assert remote_specs(["ssh", "tunnel-box"], read_file) == [
        ("9000 localhost:22", "/home/agent/.ssh/config:5"),
        ("9001 localhost:23", "/home/agent/.ssh/config:6")]
    effective = evaluate_ssh(parse_ssh_argv(["ssh", "tunnel-box"]), read_file, "/home/agent", "agent")
    assert (effective.host, effective.port, effective.user) == ("203.0.113.7", 2201, "fallback")


def test_argv_forwards_come_first_then_config(user_root):
    read_file, _ = user_root
    assert remote_specs(["ssh", "-R", "1:a:2", "tunnel-box"], read_file)[0] == ("1:a:2", "argv")


def test_host_patterns_wildcards_and_negation(user_root):
    read_file, _ = user_root
    effective = evaluate_ssh(parse_ssh_argv(["ssh", "x.corp"]), read_file, "/home/agent", "agent")
    assert effective.user == "corp"
    assert [f.spec for f in effective.forwards] == ["5432 db.internal:5432"]
    secret = evaluate_ssh(parse_ssh_argv(["ssh", "secret.corp"]), read_file, "/home/agent", "agent")
    assert secret.user == "fallback"                   # the negated pattern vetoed the block
    assert [f.spec for f in secret.forwards] == ["9002 localhost:2"]


def test_host_matching_is_case_sensitive_like_ssh(user_root):
    read_file, _ = user_root
    assert remote_specs(["ssh", "TUNNEL-BOX"], read_file) == []


def test_match_originalhost_then_host_after_hostname(user_root):
    read_file, _ = user_root
    effective = evaluate_ssh(parse_ssh_argv(["ssh", "ALIAS"]), read_file, "/home/agent", "agent")
    assert effective.host == "real.example"            # Match host/originalhost fold case
    assert [(f.spec, f.origin) for f in effective.forwards] == [
        ("9003 localhost:3", "/home/agent/.ssh/config:15")]


def test_match_user_uses_the_remote_user_and_reverse_socks(user_root):
    read_file, _ = user_root
    forwards = effective_forwards(parse_ssh_argv(["ssh", "bob@anything"]), read_file,
                                  "/home/agent", "agent")
    assert [shape(f) for f in forwards] == [("remote", {"port": 9004}, None)]
    assert remote_specs(["ssh", "anything"], read_file) == []


def test_match_localuser_and_host_must_both_hold(user_root):
    read_file, _ = user_root
    kinds = lambda user: [f.kind for f in effective_forwards(  # noqa: E731
        parse_ssh_argv(["ssh", "m.lab"]), read_file, "/home/agent", user)]
    assert kinds("agent") == ["dynamic"]
    assert kinds("root") == []


def test_first_obtained_value_wins_but_argv_first(user_root):
    read_file, _ = user_root
    effective = evaluate_ssh(parse_ssh_argv(["ssh", "-p", "443", "-o", "User=me", "tunnel-box"]),
                             read_file, "/home/agent", "agent")
    assert (effective.port, effective.user) == (443, "me")


def test_hostname_from_argv_steers_match_host(user_root):
    read_file, _ = user_root
    specs = remote_specs(["ssh", "-o", "Hostname=real.example", "zzz"], read_file)
    assert specs == [("9003 localhost:3", "/home/agent/.ssh/config:15")]


def test_system_config_is_read_after_the_user_config():
    read_file, _ = fake_root({
        "/root/.ssh/config": "Host h\n  Port 2222\n",
        "/etc/ssh/ssh_config": "Host *\n  Port 1\n  RemoteForward 7000 localhost:22\n"})
    effective = evaluate_ssh(parse_ssh_argv(["ssh", "h"]), read_file)
    assert effective.port == 2222
    assert [(f.spec, f.origin) for f in effective.forwards] == [
        ("7000 localhost:22", "/etc/ssh/ssh_config:3")]
    assert effective.files_read == ("/root/.ssh/config", "/etc/ssh/ssh_config")


def test_dash_F_replaces_both_files_and_none_reads_nothing():
    read_file, _ = fake_root({
        "/root/.ssh/config": "RemoteForward 1 a:1\n",
        "/etc/ssh/ssh_config": "RemoteForward 2 a:2\n",
        "/work/tunnel.conf": "Host *\n  RemoteForward 3 a:3\n"})
    specs = lambda argv, **kw: [f.spec for f in effective_forwards(  # noqa: E731
        parse_ssh_argv(argv), read_file, "/root", "root", **kw)]
    assert specs(["ssh", "-F", "/work/tunnel.conf", "h"]) == ["3 a:3"]
    assert specs(["ssh", "-F", "tunnel.conf", "h"], cwd="/work") == ["3 a:3"]
    assert specs(["ssh", "-F", "none", "h"]) == []
    assert specs(["ssh", "-F", "/a", "-F", "/work/tunnel.conf", "h"]) == ["3 a:3"]   # last -F


def test_unreadable_dash_F_is_noted():
    read_file, _ = fake_root({})
    effective = evaluate_ssh(parse_ssh_argv(["ssh", "-F", "/nope", "h"]), read_file)
    assert any("/nope" in note for note in effective.notes)


def test_include_relative_glob_nested_and_conditional():
    read_file, list_dir = fake_root({
        "/root/.ssh/config": "Include conf.d/*.conf ~/.ssh/extra\nHost other\n  Include never\n",
        "/root/.ssh/conf.d/10-a.conf": "RemoteForward 7100 localhost:1\n",
        "/root/.ssh/conf.d/20-b.conf": "Host h\n  Include /root/.ssh/deep\n",
        "/root/.ssh/conf.d/.hidden.conf": "RemoteForward 7999 localhost:9\n",
        "/root/.ssh/conf.d/notes.txt": "RemoteForward 7998 localhost:9\n",
        "/root/.ssh/deep": "RemoteForward 7101 localhost:2\n",
        "/root/.ssh/extra": "Host h\n  RemoteForward 7102 localhost:3\n",
        "/root/.ssh/never": "RemoteForward 7997 localhost:9\n",
        "/etc/ssh/ssh_config": "Include ssh_config.d/*.conf\n",
        "/etc/ssh/ssh_config.d/sys.conf": "RemoteForward 7103 localhost:4\n"})
    forwards = effective_forwards(parse_ssh_argv(["ssh", "h"]), read_file, "/root", "root",
                                  list_dir=list_dir)
    assert [(f.spec, f.origin) for f in forwards] == [
        ("7100 localhost:1", "/root/.ssh/conf.d/10-a.conf:1"),
        ("7101 localhost:2", "/root/.ssh/deep:1"),
        ("7102 localhost:3", "/root/.ssh/extra:2"),
        ("7103 localhost:4", "/etc/ssh/ssh_config.d/sys.conf:1")]


def test_include_glob_without_a_directory_listing_is_reported():
    read_file, _ = fake_root({"/root/.ssh/config": "Include conf.d/*\n",
                              "/root/.ssh/conf.d/a": "RemoteForward 1 a:1\n"})
    effective = evaluate_ssh(parse_ssh_argv(["ssh", "h"]), read_file)
    assert effective.forwards == ()
    assert any("not expanded" in note for note in effective.notes)


def test_include_loops_are_bounded():
    read_file, list_dir = fake_root({"/root/.ssh/config": "Include config\nRemoteForward 1 a:1\n"})
    effective = evaluate_ssh(parse_ssh_argv(["ssh", "h"]), read_file, list_dir=list_dir)
    assert len(effective.forwards) == 17               # the file at each of 17 levels
    assert any("too deeply" in note for note in effective.unread)   # ssh itself gives up there
    finding = classify_ssh(["ssh", "h"], read_file=read_file)[-1]
    assert (finding.type, finding.dialect, finding.confidence) == (
        "ssh_reverse_tunnel", "unread-config", "high")


def test_match_exec_is_not_run_but_its_forwards_are_reported():
    read_file, _ = fake_root({"/root/.ssh/config": (
        'Match exec "test -f /tmp/go" host h\n  RemoteForward 9100 localhost:22\n  Port 2222\n'
        "Match exec true host other\n  RemoteForward 9101 localhost:22\n")})
    effective = evaluate_ssh(parse_ssh_argv(["ssh", "h"]), read_file)
    assert effective.port == 22                      # options in the block do not apply
    forward = only(list(effective.forwards))
    assert forward.spec == "9100 localhost:22"
    assert forward.condition.endswith("Match exec test -f /tmp/go")
    finding = only(classify_ssh(["ssh", "h"], read_file=read_file))
    assert finding.type == "ssh_reverse_tunnel" and finding.confidence == "medium"
    assert "condition" in finding.evidence


def test_match_final_and_canonical_are_taken_as_matching():
    read_file, _ = fake_root({"/root/.ssh/config": (
        "Match final host h\n  RemoteForward 1 a:1\nMatch canonical all\n  RemoteForward 2 a:2\n"
        "Match all\n  RemoteForward 3 a:3\nMatch !host h\n  RemoteForward 4 a:4\n")})
    specs = [f.spec for f in effective_forwards(parse_ssh_argv(["ssh", "h"]), read_file, "/root",
                                                "root")]
    assert specs == ["1 a:1", "2 a:2", "3 a:3"]


def test_match_tagged_uses_the_dash_P_tag():
    read_file, _ = fake_root({"/root/.ssh/config": "Match tagged tun\n  RemoteForward 5 a:5\n"})
    assert [f.spec for f in effective_forwards(parse_ssh_argv(["ssh", "-P", "tun", "h"]),
                                               read_file, "/root", "root")] == ["5 a:5"]
    assert effective_forwards(parse_ssh_argv(["ssh", "h"]), read_file, "/root", "root") == []


def test_unknown_match_criteria_and_bad_lines_do_not_apply():
    read_file, _ = fake_root({"/root/.ssh/config": (
        "Match nonsense x\n  RemoteForward 1 a:1\nMatch host\n  RemoteForward 2 a:2\n"
        "Match\n  RemoteForward 3 a:3\n")})
    assert effective_forwards(parse_ssh_argv(["ssh", "h"]), read_file, "/root", "root") == []


def test_config_tunnel_and_proxying():
    read_file, _ = fake_root({"/root/.ssh/config": (
        "Host t\n  Tunnel ethernet\n  TunnelDevice 3:4\n"
        "Host j\n  ProxyJump a,b:2022\n  ProxyCommand nc %h %p\n"
        "Host p\n  ProxyCommand nc %h %p\n  ProxyJump x\n")})
    tunnel = evaluate_ssh(parse_ssh_argv(["ssh", "t"]), read_file)
    assert [shape(f) for f in tunnel.forwards] == [("tunnel", {"device": "3"}, {"device": "4"})]
    assert tunnel.forwards[0].origin == "/root/.ssh/config:2"
    jumped = evaluate_ssh(parse_ssh_argv(["ssh", "j"]), read_file)
    assert [h.host for h in jumped.jump_hosts] == ["a", "b"] and jumped.proxy_command is None
    proxied = evaluate_ssh(parse_ssh_argv(["ssh", "p"]), read_file)
    assert proxied.proxy_command == "nc %h %p" and proxied.jump_hosts == ()


def test_clear_all_forwardings_and_stdio_forward():
    read_file, _ = fake_root({"/root/.ssh/config": "Host c\n  ClearAllForwardings yes\n"})
    assert evaluate_ssh(parse_ssh_argv(["ssh", "-R", "1:a:2", "c"]), read_file).forwards_cleared
    assert evaluate_ssh(parse_ssh_argv(["ssh", "-W", "h:22", "j"])).forwards_cleared
    assert not evaluate_ssh(parse_ssh_argv(
        ["ssh", "-W", "h:22", "-o", "ClearAllForwardings=no", "j"])).forwards_cleared
    finding = only(classify_ssh(["ssh", "-R", "1:a:2", "c"], read_file=read_file))
    assert finding.confidence == "medium" and finding.evidence["cleared_by"] == "ClearAllForwardings"


def test_read_ssh_config_returns_the_effective_options(user_root):
    read_file, _ = user_root
    options = read_ssh_config("/home/agent/.ssh/config", "tunnel-box", None, None, read_file,
                              "/home/agent", local_user="agent")
    assert options["hostname"] == ["203.0.113.7"]
    assert options["port"] == ["2201"]                 # first obtained, not the later `Port 22`
    assert options["remoteforward"] == ["9000 localhost:22", "9001 localhost:23"]
    fixed = read_ssh_config("/home/agent/.ssh/config", "tunnel-box", "me", 443, read_file,
                            "/home/agent")
    assert "port" not in fixed and "user" not in fixed   # the command line already set them


def test_read_ssh_config_system_includes_are_relative_to_etc_ssh():
    read_file, list_dir = fake_root({"/etc/ssh/ssh_config": "Include ssh_config.d/*.conf\n",
                                     "/etc/ssh/ssh_config.d/x.conf": "Port 2222\n"})
    assert read_ssh_config("/etc/ssh/ssh_config", "h", None, None, read_file, "/root",
                           list_dir=list_dir, system=True) == {"port": ["2222"]}


def test_read_file_errors_are_treated_as_missing_files():
    def read_file(path):
        raise PermissionError(path)
    assert only(classify_ssh(["ssh", "h"], read_file=read_file)).type == "ssh_outbound"


@pytest.mark.parametrize("line, keyword, args", [
    ("RemoteForward 8080 localhost:80", "remoteforward", ["8080", "localhost:80"]),
    ("  remoteforward=8080 localhost:80", "remoteforward", ["8080", "localhost:80"]),
    ("RemoteForward = 8080 localhost:80", "remoteforward", ["8080", "localhost:80"]),
    ('ProxyCommand "ssh -W %h:%p j"', "proxycommand", ["ssh -W %h:%p j"]),
    ("Host a b # comment", "host", ["a", "b"]),
    ("Host a#b", "host", ["a#b"]),
    (r"IdentityFile /a\ b", "identityfile", ["/a b"]),
    ("# Host x", "", []),
    ("   ", "", []),
])
def test_config_line_syntax(line, keyword, args):
    assert split_config_line(line) == (keyword, args)


# --------------------------------------------------------------------------
# Findings: outbound ranking, services, allowlist

def test_plain_ssh_is_outbound_medium_and_git_over_ssh_too():
    finding = only(classify_ssh(["ssh", "-o", "SendEnv=GIT_PROTOCOL", "git@github.com",
                                 "git-upload-pack 'org/repo.git'"]))
    assert (finding.type, finding.confidence) == ("ssh_outbound", "medium")
    assert finding.evidence["destination"] == {"host": "github.com", "port": 22, "user": "git"}
    assert finding.evidence["allowlisted"] is False


@pytest.mark.parametrize("argv, reason", [
    (["ssh", "-p", "443", "h"], "port 443"),
    (["ssh", "ssh://h:80"], "port 80"),
    (["ssh", "serveo.net"], "tunnelling service serveo"),
    (["ssh", "nokey@localhost.run"], "tunnelling service localhost.run"),
    (["ssh", "free.pinggy.io"], "tunnelling service pinggy"),
    (["ssh", "x.eu.pinggy.io"], "tunnelling service pinggy"),
    (["ssh", "pktriot.net"], "tunnelling service packetriot"),
])
def test_outbound_ranks_high_for_web_ports_and_tunnel_services(argv, reason):
    finding = only(classify_ssh(argv))
    assert (finding.type, finding.confidence) == ("ssh_outbound", "high")
    assert reason in finding.evidence["reasons"]


@pytest.mark.parametrize("argv, service, port", [
    (["ssh", "-R", "80:localhost:3000", "serveo.net"], "serveo", 22),
    (["ssh", "-R", "80:localhost:8080", "nokey@localhost.run"], "localhost.run", 22),
    (["ssh", "-p", "443", "-R0:localhost:8000", "a.pinggy.io"], "pinggy", 443),
])
def test_tunnel_services_by_reverse_forward(argv, service, port):
    finding = only(classify_ssh(argv))
    assert (finding.type, finding.confidence) == ("ssh_reverse_tunnel", "high")
    assert finding.evidence["service"] == service
    assert finding.evidence["destination"]["port"] == port


def test_one_reverse_finding_per_remote_forward_and_no_outbound_then():
    findings = classify_ssh(["ssh", "-R", "1:a:1", "-L", "2:b:2", "-R", "3", "h"])
    assert [(f.type, f.evidence["forward"]) for f in findings] == [
        ("ssh_reverse_tunnel", "1:a:1"), ("ssh_reverse_tunnel", "3")]


def test_dash_O_forward_reports_the_control_command():
    finding = only(classify_ssh(["ssh", "-O", "forward", "-R", "9000:localhost:22", "h"]))
    assert finding.evidence["control_command"] == "forward"
    assert only(classify_ssh(["ssh", "-O", "forward", "-L", "1:a:2", "h"])).type == "ssh_outbound"


def test_config_forward_origin_in_evidence():
    read_file, _ = fake_root({"/root/.ssh/config": "Host box\n  HostName 198.51.100.9\n"
                                                   "  RemoteForward 2222 localhost:22\n"})
    finding = only(classify_ssh(["ssh", "box"], read_file=read_file))
    assert finding.evidence["origin"] == "/root/.ssh/config:3"
    assert finding.evidence["destination"] == {"host": "198.51.100.9", "port": 22, "user": "root",
                                               "alias": "box"}


ALLOW_GIT = [{"host": "git.example.org", "ports": [22], "forwards": ["local"]}]


def test_allowlisted_destination_is_low_outbound():
    finding = only(classify_ssh(["ssh", "-L", "5432:db:5432", "git.example.org"], allowlist=ALLOW_GIT))
    assert (finding.type, finding.confidence) == ("ssh_outbound", "low")
    assert finding.evidence["allowlisted"] is True


def test_allowlisted_destination_still_gives_reverse_tunnel_without_remote():
    finding = only(classify_ssh(["ssh", "-R", "9:a:1", "git.example.org"], allowlist=ALLOW_GIT))
    assert finding.type == "ssh_reverse_tunnel"
    assert finding.evidence["destination_allowlisted"] is True


def test_allowlist_remote_forwards_permitted():
    allow = [{"host": "*.example.org", "forwards": ["local", "remote"]}]
    finding = only(classify_ssh(["ssh", "-R", "9:a:1", "git.example.org"], allowlist=allow))
    assert (finding.type, finding.confidence) == ("ssh_outbound", "low")
    assert finding.evidence["forwards"][0]["kind"] == "remote"


@pytest.mark.parametrize("argv, allowlist, why", [
    (["ssh", "-p", "443", "git.example.org"], ALLOW_GIT, None),            # port not listed
    (["ssh", "-D", "1080", "git.example.org"], ALLOW_GIT, "forwards_not_allowlisted"),
    (["ssh", "-o", "ProxyCommand=nc evil 22", "git.example.org"], ALLOW_GIT,
     "not_allowlisted_because"),
    (["ssh", "-J", "evil.example.net", "git.example.org"], ALLOW_GIT, "not_allowlisted_because"),
    (["ssh", "other.example.org"], ALLOW_GIT, None),
])
def test_allowlist_does_not_cover(argv, allowlist, why):
    finding = only(classify_ssh(argv, allowlist=allowlist))
    assert finding.type == "ssh_outbound" and finding.evidence["allowlisted"] is False
    assert finding.confidence in ("medium", "high")
    if why:
        assert why in finding.evidence


def test_allowlist_by_cidr_matches_address_literals_only():
    allow = [{"cidr": "198.18.0.0/15"}]
    assert only(classify_ssh(["ssh", "198.19.1.2"], allowlist=allow)).evidence["allowlisted"]
    assert not only(classify_ssh(["ssh", "198.20.0.1"], allowlist=allow)).evidence["allowlisted"]
    assert not only(classify_ssh(["ssh", "gw.example"], allowlist=allow)).evidence["allowlisted"]
    assert only(classify_ssh(["ssh", "ssh://[2001:db8::5]"],
                             allowlist=[{"cidr": "2001:db8::/32"}])).evidence["allowlisted"]


def test_allowlist_follows_config_hostname():
    read_file, _ = fake_root({"/root/.ssh/config": "Host gh\n  HostName git.example.org\n"})
    finding = only(classify_ssh(["ssh", "gh"], read_file=read_file, allowlist=ALLOW_GIT))
    assert finding.evidence["allowlisted"] is True


def test_allowlisted_jump_hosts_keep_the_allowance():
    allow = ALLOW_GIT + [{"host": "bastion.example.org"}]
    finding = only(classify_ssh(["ssh", "-J", "bastion.example.org", "git.example.org"],
                                allowlist=allow))
    assert finding.evidence["allowlisted"] is True


@pytest.mark.parametrize("allowlist", [None, "git.example.org", [None, 3, "x", {"host": 5},
                                                                  {"ports": "abc"}], {"host": ""}])
def test_malformed_allowlists_are_ignored(allowlist):
    assert only(classify_ssh(["ssh", "git.example.org"], allowlist=allowlist)).evidence[
        "allowlisted"] is False


# --------------------------------------------------------------------------
# Banners on the wire

@pytest.mark.parametrize("payload, software, family", [
    (b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6\r\n", "OpenSSH_9.2p1", "openssh"),
    (b"SSH-2.0-OpenSSH_10.5\r\n\x00\x00\x05\xdc\x07\x14kexinit...", "OpenSSH_10.5", "openssh"),
    (b"SSH-2.0-dropbear_2022.83\r\n", "dropbear_2022.83", "dropbear"),
    (b"SSH-2.0-PuTTY_Release_0.78\r\n", "PuTTY_Release_0.78", "putty"),
    (b"SSH-2.0-Go\r\n", "Go", "go"),
    (b"SSH-2.0-libssh_0.10.4\r\n", "libssh_0.10.4", "libssh"),
    (b"SSH-2.0-libssh2_1.10.0\r\n", "libssh2_1.10.0", "libssh2"),
    (b"SSH-2.0-paramiko_3.4.0\r\n", "paramiko_3.4.0", "paramiko"),
    (b"SSH-2.0-AsyncSSH_2.14.0\r\n", "AsyncSSH_2.14.0", "asyncssh"),
    (b"SSH-2.0-JSCH-0.1.54\r\n", "JSCH-0.1.54", "jsch"),
    (b"SSH-1.99-OpenSSH_3.9p1\r\n", "OpenSSH_3.9p1", "openssh"),
    (b"SSH-2.0-Something_1\n", "Something_1", "other"),
    (b"SSH-2.0-OpenSSH_9.6", "OpenSSH_9.6", "openssh"),             # cut before CR LF
])
def test_client_banners(payload, software, family):
    finding = only(classify_ssh_banner(payload, 22))
    assert (finding.type, finding.dialect, finding.confidence) == ("ssh_outbound", family, "medium")
    assert finding.evidence["software"] == software
    assert finding.evidence["banner"].startswith("SSH-")


@pytest.mark.parametrize("port, confidence", [(22, "medium"), (None, "medium"), (443, "high"),
                                              (80, "high"), (2222, "high")])
def test_banner_ranks_by_port(port, confidence):
    assert only(classify_ssh_banner(b"SSH-2.0-OpenSSH_9.2\r\n", port)).confidence == confidence


def test_chisel_banner_is_a_tunnel_tool():
    finding = only(classify_ssh_banner(b"SSH-chisel-v3-client\r\n", 443))
    assert (finding.type, finding.dialect, finding.confidence) == ("tunnel_tool", "chisel", "high")


@pytest.mark.parametrize("payload", [
    b"", b"GET / HTTP/1.1\r\n", b"SSH-", b"SSH-2.0-\r\n", b"SSH-two-OpenSSH\r\n",
    b"xSSH-2.0-OpenSSH_9.2\r\n", b"SSH-2.0-" + b"A" * 300 + b"\r\n", b"SSH-2.0-Open\xffSSH\r\n",
    "SSH-2.0-OpenSSH".encode("utf-16"),
])
def test_not_banners(payload):
    assert classify_ssh_banner(payload, 22) == []


# --------------------------------------------------------------------------
# Hostile input never raises, and evidence is always JSON

ARGV_WORDS = st.sampled_from([
    "ssh", "autossh", "dbclient", "plink", "dropbearmulti", "slogin", "-R", "-L", "-D", "-w", "-W",
    "-o", "-O", "-F", "-J", "-M", "-P", "-p", "-l", "-f", "-N", "-V", "-G", "-Q", "--", "-",
    "-NfR", "-R0:localhost:8000", "8080:localhost:80", "[::1]:8080:a:1", "/tmp/s:/tmp/t",
    "RemoteForward=1 a:2", "RemoteForward", "forward", "check", "a,b,c", "u@h", "ssh://u@h:1",
    "ssh://", "h^22", "h/22", "-load", "-nc", "none", "0", "65536", "-B", "-pw"])
ARGV = st.lists(st.one_of(ARGV_WORDS, st.text(max_size=24)), max_size=14)

CONFIG_LINES = st.sampled_from([
    "Host *", "Host h", "Host !h *", "Match all", "Match host h,!x", "Match exec true",
    "Match final", "Match canonical all", "Match user", "Match !localuser root", "Match tagged x",
    "Include *", "Include ~/x", "Include ~bob/x", "Include /etc/ssh/ssh_config", "Include config",
    "RemoteForward 1 a:2", "RemoteForward 3", "RemoteForward", "LocalForward 1", "DynamicForward x",
    "Hostname %h.x", "Port 443", "Port x", "User u", "ProxyJump a,b", "ProxyCommand none",
    "Tunnel yes", "TunnelDevice 1:2", "ClearAllForwardings yes", '"', "=", "#", "Host \"a b",
])
CONFIG_TEXT = st.lists(st.one_of(CONFIG_LINES, st.text(max_size=40)), max_size=20).map("\n".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ARGV)
def test_argv_parsing_never_raises(argv):
    parse_ssh_argv(argv)
    assert_json(classify_ssh(argv, allowlist=[{"host": "*", "forwards": ["remote"]},
                                              {"cidr": "10.0.0.0/8", "ports": [22]}]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ARGV, CONFIG_TEXT, CONFIG_TEXT)
def test_config_evaluation_never_raises(argv, user_config, system_config):
    read_file, list_dir = fake_root({"/root/.ssh/config": user_config,
                                     "/etc/ssh/ssh_config": system_config,
                                     "/root/.ssh/x": user_config})
    assert_json(classify_ssh(["ssh"] + argv, read_file=read_file, list_dir=list_dir))
    read_ssh_config("/root/.ssh/config", "h", None, None, read_file, "/root", list_dir=list_dir)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.one_of(st.none(), st.integers(-5, 70000)))
def test_banner_never_raises(payload, port):
    assert_json(classify_ssh_banner(payload, port))
    assert_json(classify_ssh_banner(b"SSH-2.0-" + payload, port))


@pytest.mark.parametrize("junk", [None, 5, "ssh -R 1:a:2 h", b"ssh", {"argv": 1}, ["ssh", None, 3]])
def test_junk_arguments(junk):
    parse_ssh_argv(junk)
    classify_ssh(junk)
    assert classify_ssh_banner(junk, 22) == []
