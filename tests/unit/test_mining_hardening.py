# SPDX-License-Identifier: Apache-2.0
"""Issue 17, mining, without a kernel: the kernel's first-payload view
mirrored in Python (guard/detect/vocabulary.first_payload) and the
userspace classifiers reading what the kernel now samples (after filler,
inside WebSocket frames, a message gathered from pieces); miners known by
their default config files and by their executable's strings."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from guard.detect.classify import Finding
from guard.detect.classify.framing import websocket_message
from guard.detect.classify.miner import classify_exec
from guard.detect.classify.miner_binary import (
    BinaryVerdict, classify_binary, forget_binaries, judge_strings,
)
from guard.detect.classify.miner_indicators import load_indicators, parse_indicators
from guard.detect.classify.stratum import classify_payload
from guard.detect.files import Executable, ProcessFiles
from guard.detect.vocabulary import first_payload, prefilter_holds
from guard.kernel import abi
from tests.conftest import FIXTURES, ROOT

PAYLOADS = sorted((FIXTURES / "payloads").glob("*.bin"))
WALLET = ("44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2"
          "VBBEt7f2wfn3RVGQBEP3A")
LOGIN = (FIXTURES / "payloads" / "cryptonote-login.xmrig.bin").read_bytes()
SUBSCRIBE = (FIXTURES / "payloads" / "stratum-v1.cpuminer.bin").read_bytes()
BENIGN = [
    b"GET / HTTP/1.1\r\nHost: www.example.org\r\n\r\n",
    b'POST /mcp HTTP/1.1\r\nHost: t\r\nContent-Length: 60\r\n\r\n'
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}',
    b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search"}}\n',
    b'Content-Length: 52\r\n\r\n{"jsonrpc":"2.0","id":1,"method":"initialize"}',
    b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
    b'{"username":"alice","password":"hunter2","login":"now"}\n',
]


def ws_frame(payload: bytes, opcode: int = 1, fin: bool = True, key: bytes = b"\x11\x22\x33\x44"):
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: pool.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


# --------------------------------------------------------------------------
# The kernel's view, mirrored


@pytest.mark.parametrize("filler", [b"\n", b"\r\n", b" " * 600, b"\t\n" * 3000, b" " * 60000])
@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.name for p in PAYLOADS])
def test_filler_before_any_dialect_is_skipped_and_the_message_held(payload, filler):
    data = payload.read_bytes()
    assert first_payload(filler).action == "filler"          # a blank segment alone passes
    view = first_payload(filler + data)
    assert view.action == "judge" and view.hold, payload.name
    assert view.sample == data[:abi.SAMPLE_MAX]
    assert prefilter_holds(filler + data)


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 40, 200])
def test_a_login_cut_short_is_gathered_not_judged(cut):
    assert first_payload(LOGIN[:cut]).action == "gather"
    assert first_payload(b"\n" + LOGIN[:cut]).action == "gather"
    assert first_payload(LOGIN[:cut], holding=False).action == "judge"   # log-only: no gathering


@pytest.mark.parametrize("prefix", [b"P", b"PO", b"POS", b"POST", b"G", b"GET /",
                                    b"POST / HTTP/1.1\r\nHost: p\r\n", b"\x00\x00\x00"])
def test_the_start_of_an_http_head_or_an_sv2_frame_is_gathered(prefix):
    assert first_payload(prefix).action == "gather"


@pytest.mark.parametrize("sample", BENIGN[:-1] + [b'{"cmd":"ping"}', b'[1,2]', b"PING\r\n",
                                             b"POST /logout HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                                             b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"])
def test_whole_benign_messages_are_judged_at_once_and_not_held(sample):
    for filler in (b"", b"\n"):
        view = first_payload(filler + sample)
        assert view.action == "judge" and not view.hold, sample
        assert not prefilter_holds(filler + sample)


def test_a_login_in_pieces_is_held_once_whole_or_once_the_sample_is_full():
    pieces = b""
    for size in (1, 3, 2, 3, 1) * 400:
        if len(pieces) >= len(LOGIN):
            break
        pieces = LOGIN[:len(pieces) + size]
        view = first_payload(pieces)
        if view.action == "judge":
            break
    assert view.action == "judge" and view.hold
    assert len(view.sample) >= min(len(LOGIN), abi.SAMPLE_MAX) - 3
    assert only(classify_payload(view.sample)).dialect == "cryptonote-login"


@pytest.mark.parametrize("frames", [
    [ws_frame(LOGIN)],
    [ws_frame(b"x", opcode=9), ws_frame(LOGIN)],
    [ws_frame(LOGIN[:10], fin=False), ws_frame(LOGIN[10:], opcode=0)],
    [ws_frame(b"\n" + LOGIN, opcode=2)],
], ids=["one", "ping-first", "fragments", "binary-with-newline"])
def test_websocket_frames_are_unmasked_before_judging(frames):
    data = b"".join(frames)
    view = first_payload(data, websocket=True)
    assert view.action == "judge" and view.hold
    message = b"\n" + LOGIN if frames[-1][0] & 0x0F == 2 else LOGIN
    assert view.sample == message[:abi.SAMPLE_MAX].lstrip(b"\n")    # the sample's room, then blanks
    assert only(classify_payload(view.sample)).dialect == "cryptonote-login"
    # the classifier reads the raw frames the same way
    finding = only(classify_payload(data))
    assert finding.dialect == "cryptonote-login" and finding.evidence["framing"] == "websocket"


def test_websocket_control_and_blank_frames_are_filler_and_a_cut_frame_is_gathered():
    assert first_payload(ws_frame(b"", opcode=9), websocket=True).action == "filler"
    assert first_payload(ws_frame(b" \n"), websocket=True).action == "filler"
    assert first_payload(ws_frame(LOGIN)[:30], websocket=True).action == "gather"
    assert first_payload(ws_frame(LOGIN[:20], fin=False), websocket=True).action == "gather"
    chat = first_payload(ws_frame(b'{"say":"hello"}'), websocket=True)
    assert chat.action == "judge" and not chat.hold


def test_an_upgrade_is_marked_and_frames_sent_with_it_are_judged_in_its_place():
    view = first_payload(UPGRADE)
    assert view.action == "judge" and view.upgrade and not view.hold
    pipelined = first_payload(UPGRADE + ws_frame(LOGIN))
    assert pipelined.hold and pipelined.sample == LOGIN[:abi.SAMPLE_MAX]
    assert only(classify_payload(UPGRADE + ws_frame(LOGIN))).evidence["framing"] == "websocket"
    chat = first_payload(UPGRADE + ws_frame(b"hello"))
    assert not chat.hold and not chat.upgrade
    assert first_payload(UPGRADE[:30]).action == "gather"          # an unfinished head
    assert not first_payload(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").upgrade
    through_a_proxy = UPGRADE.replace(b"GET /ws", b"GET http://pool.test/ws")
    assert first_payload(through_a_proxy).upgrade


def test_websocket_message_reads_what_frames_h_reads():
    message, whole = websocket_message(ws_frame(b"abc", fin=False) + ws_frame(b"def", opcode=0))
    assert (message, whole) == (b"abcdef", True)
    assert websocket_message(b"\x81\x05hello") is None              # unmasked: not a client's
    assert websocket_message(ws_frame(b"abcdef")[:8]) == (b"ab", False)


# --------------------------------------------------------------------------
# The classifiers read what the kernel samples


def test_the_classifier_skips_leading_blanks_for_every_dialect():
    for payload in PAYLOADS:
        data = payload.read_bytes()
        plain = classify_payload(data, dst_port=3333)
        dressed = classify_payload(b"\r\n \t\n" + data, dst_port=3333)
        assert [(f.dialect, f.confidence) for f in dressed] == \
            [(f.dialect, f.confidence) for f in plain], payload.name


def test_samples_of_one_flow_read_as_one_stream():
    pieces = [SUBSCRIBE[:5], SUBSCRIBE[5:17], SUBSCRIBE[17:]]
    assert only(classify_payload(pieces)).dialect == "stratum-v1"
    assert classify_payload([]) == []


def test_a_login_cut_before_its_pass_is_medium():
    cut = LOGIN[:LOGIN.index(b'"pass"')]
    finding = only(classify_payload(cut))
    assert (finding.dialect, finding.confidence) == ("cryptonote-login", "medium")
    assert finding.evidence["cut"] is True
    assert classify_payload(b'{"id":1,"method":"login","params":{"login":"alice"}}\n') == []


def test_benign_websocket_and_blank_prefixed_traffic_gives_no_finding():
    for sample in BENIGN:
        assert classify_payload(b"\n\n" + sample, dst_port=8080) == []
        assert classify_payload(ws_frame(sample), dst_port=8080) == []
        assert classify_payload(UPGRADE + ws_frame(sample), dst_port=8080) == []


# --------------------------------------------------------------------------
# Miners by their config files, where they read them by default


class FakeRoot:
    def __init__(self, files: dict[str, bytes] | None = None):
        self.files = files or {}
        self.asked: list[str] = []

    def __call__(self, path: str) -> bytes | None:
        self.asked.append(path)
        return self.files.get(path)


@dataclass
class FakeExecutable:
    identity: tuple
    data: bytes | None
    reads: int = 0

    def strings(self) -> bytes | None:
        self.reads += 1
        return self.data


XMRIG_STRINGS = (b"\x7fELF...donate.v2.xmrig.com\0--donate-level\0huge-pages-jit\0rx/wow\0"
                 b"RandomX\x03\0stratum+tcp://\0cryptonight\0")
XMRIG_CONFIG = json.dumps({"pools": [{"url": "198.18.0.5:443", "user": WALLET, "pass": "x",
                                      "tls": True, "keepalive": True}],
                           "cpu": {"huge-pages": True}}).encode()


@pytest.fixture(autouse=True)
def fresh_cache():
    forget_binaries()
    yield
    forget_binaries()


@pytest.mark.parametrize("where", ["~/.xmrig.json", "~/.config/xmrig.json",
                                   "~/.xmrig-proxy.json", "~/.config/xmrig-proxy.json"])
def test_xmrig_home_configs_are_read_for_a_binary_with_mining_code(where):
    root = FakeRoot({where: XMRIG_CONFIG})
    packed = FakeExecutable((1, 2, 3, 4), b"\x7fELF UPX! packed")   # only a trait
    finding = only(classify_exec(["/tmp/.x/kworker"], "/tmp/.x/kworker", root,
                                 executable=packed))
    assert finding.confidence == "high" and finding.evidence["config"] == where
    assert finding.dialect == "xmrig"


def test_home_configs_are_not_read_for_a_plain_program():
    root = FakeRoot({"~/.xmrig.json": XMRIG_CONFIG})
    plain = FakeExecutable((9, 9, 9, 9), b"\x7fELF plain program")
    assert classify_exec(["/usr/bin/app"], "/usr/bin/app", root, executable=plain) == []
    assert root.asked == ["/usr/bin/config.json"]


def test_a_data_dir_config_is_read_first():
    root = FakeRoot({"/srv/d/config.json": XMRIG_CONFIG})
    finding = only(classify_exec(["/opt/w", "--data-dir", "/srv/d"], "/opt/w", root))
    assert finding.evidence["config"] == "/srv/d/config.json"
    assert root.asked[0] == "/srv/d/config.json"


def test_xmr_stak_pools_txt_in_the_working_directory():
    pools = (b'"pool_list" :\n[\n {"pool_address" : "pool.supportxmr.com:5555", '
             b'"wallet_address" : "' + WALLET.encode() + b'", "rig_id" : "", '
             b'"pool_password" : "x", "use_nicehash" : false, "use_tls" : false, '
             b'"tls_fingerprint" : "", "pool_weight" : 1 },\n],\n"currency" : "monero",\n')
    root = FakeRoot({"pools.txt": pools})
    stak = FakeExecutable((5, 5, 5, 5), b"\x7fELF cryptonight stratum+tcp://")
    finding = only(classify_exec(["/opt/svc"], "/opt/svc", root, executable=stak))
    assert finding.confidence == "high" and finding.evidence["config"] == "pools.txt"
    assert "pool_domains:supportxmr.com" in finding.evidence["indicators"]


def test_a_padded_default_config_that_mentions_mining_fails_closed():
    padded = b'{"pools":[{"url":"pool.supportxmr.com:443"}],' + b" " * (1 << 20) + b"}"
    root = FakeRoot({"~/.xmrig.json": padded})
    trait = FakeExecutable((6, 6, 6, 6), b"RandomX\x03")
    findings = classify_exec(["/opt/svc"], "/opt/svc", root, executable=trait)
    assert any(f.dialect == "unread-config" for f in findings)


# --------------------------------------------------------------------------
# Miners by their executable's strings


def test_xmrig_strings_name_the_binary_whatever_it_is_called():
    for name in ("/opt/backup-agent", "/usr/bin/cat", "/tmp/python3"):
        finding = only(classify_exec([name], name, None,
                                     executable=FakeExecutable((1, 1, 1, hash(name)),
                                                               XMRIG_STRINGS)))
        assert (finding.confidence, finding.dialect) == ("high", "xmrig"), name
        assert "donate.v2.xmrig.com" in finding.evidence["binary_strings"]


def test_two_groups_are_medium_one_is_nothing_and_traits_alone_are_no_finding():
    indicators = load_indicators()
    assert judge_strings(b"donate.v2.xmrig.com --donate-level", indicators).confidence == "medium"
    assert judge_strings(b"donate.v2.xmrig.com", indicators) == \
        BinaryVerdict(None, None, (), ())
    trait = judge_strings(b"RandomX\x03 cryptonight", indicators)
    assert trait.family is None and trait.traits == ("RandomX\\x03", "cryptonight")
    assert classify_exec(["/usr/bin/monerod"], "/usr/bin/monerod", None,
                         executable=FakeExecutable((2, 2, 2, 2), b"RandomX\x03")) == []


def test_the_verdict_is_cached_per_file_identity():
    exe = FakeExecutable((7, 8, 9, 10), XMRIG_STRINGS)
    indicators = load_indicators()
    first = classify_binary(exe, indicators)
    again = classify_binary(FakeExecutable((7, 8, 9, 10), b"changed?"), indicators)
    assert first == again and first.family == "xmrig" and exe.reads == 1
    touched = classify_binary(FakeExecutable((7, 8, 10, 10), b""), indicators)   # new mtime
    assert touched.family is None
    unreadable = FakeExecutable((1, 1, 1, 1), None)
    assert classify_binary(unreadable, indicators).family is None
    assert classify_binary(unreadable, indicators).family is None and unreadable.reads == 2


def test_miners_yaml_binary_strings_are_optional_and_checked():
    text = (ROOT / "guard/data/miners.yaml").read_text()
    start = text.index("binary_strings:")
    end = text.index("# Ports pools commonly listen on.")
    without = parse_indicators(text[:start] + text[end:])
    assert without.binary_families == {} and without.binary_traits == ()
    with pytest.raises(ValueError, match="binary_strings"):
        parse_indicators(text.replace('["donate.v2.xmrig.com", "donate.ssl.xmrig.com"]',
                                      '["ab"]'))
    assert load_indicators().binary_traits[0] == b"RandomX\x03"


# --------------------------------------------------------------------------
# The process's files: $HOME as it has it, its executable


def _started(env: dict[str, str]) -> subprocess.Popen:
    """A child whose exec is complete (its environment in place: Popen
    returns once the exec closed its pipe, before the new stack is built)."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; print(1, flush=True); "
                              "sys.stdin.read()"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=env)
    child.stdout.readline()
    return child


def test_env_home_and_tilde_paths_follow_the_process_environment(tmp_path):
    home = tmp_path / "h"
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "xmrig.json").write_bytes(b"{}")
    child = _started({"HOME": str(home)})
    try:
        files = ProcessFiles(child.pid)
        assert files.env_home == str(home)
        assert files.read_file("~/.config/xmrig.json") == b"{}"
        assert files.read_file("~/.xmrig.json") is None
    finally:
        child.communicate(b"", timeout=10)


def test_without_home_in_the_environment_the_passwd_home_stands():
    child = _started({})
    try:
        files = ProcessFiles(child.pid)
        assert files.env_home == files.home
    finally:
        child.communicate(b"", timeout=10)


def test_the_executable_is_read_by_its_rodata_and_named_by_its_identity(tmp_path):
    exe = ProcessFiles(os.getpid()).executable()
    st = os.stat(f"/proc/{os.getpid()}/exe")
    assert exe.identity == (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    data = exe.strings()
    assert data[:4] == b"\x7fELF" and 4096 < len(data) <= 4096 + (4 << 20)
    script = tmp_path / "run.sh"
    script.write_bytes(b"#!/bin/sh\n# donate.v2.xmrig.com\n")
    assert b"donate.v2.xmrig.com" in Executable((0, 0, 0, 0), str(script)).strings()
    assert Executable((0, 0, 0, 0), str(tmp_path / "gone")).strings() is None
    assert ProcessFiles(2 ** 22 + 7).executable() is None
