# SPDX-License-Identifier: Apache-2.0
"""Miner launches (argv, config files), DNS names, and the indicator lists."""
from __future__ import annotations

import base64
import json
import struct

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.detect.classify import Finding
from guard.detect.classify.dns import DnsAnswer, DnsRecord, parse_dns_answer, parse_dns_query
from guard.detect.classify.miner import classify_exec
from guard.detect.classify.miner_indicators import (
    Indicators, classify_dns, load_indicators, parse_indicators,
)

WALLET = ("44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2"
          "VBBEt7f2wfn3RVGQBEP3A")
ETH_WALLET = "0x7d5b5a4e8c0f26a2f9d3a5e6c7b8d9e0f1a2b3c4"


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def level(argv, **kwargs) -> str | None:
    findings = classify_exec(argv, **kwargs)
    return only(findings).confidence if findings else None


class FakeRoot:
    """read_file for a container root held in a dict; remembers what was asked."""

    def __init__(self, files: dict[str, bytes] | None = None):
        self.files = files or {}
        self.asked: list[str] = []

    def __call__(self, path: str) -> bytes | None:
        self.asked.append(path)
        return self.files.get(path)


# --------------------------------------------------------------------------
# Indicator lists


def test_packaged_lists_carry_sources_and_date():
    indicators = load_indicators()
    for name in ("pool_domains", "donation_domains", "miner_binaries", "pool_ports"):
        assert indicators.sources[name], name
        assert indicators.updated[name] == "2026-11-28"
    assert {"donate.ssl.xmrig.com", "donate.v2.xmrig.com"} <= indicators.donation_domains
    assert {"xmrig", "xmr-stak", "minerd", "cpuminer", "t-rex", "srbminer"} <= indicators.miner_binaries
    assert len(indicators.miner_binaries) == 21
    assert {3333, 4444, 8888, 14444} <= indicators.pool_ports
    assert load_indicators() is indicators          # read once


def test_an_updated_file_needs_no_code_change(tmp_path):
    path = tmp_path / "miners.yaml"
    path.write_text("""
pool_domains: {sources: [mine], updated: "2027-01-01", domains: [newpool.example]}
donation_domains: {sources: [mine], updated: "2027-01-01", domains: [fee.newminer.example]}
miner_binaries: {sources: [mine], updated: "2027-01-01", names: [newminer]}
pool_ports: {sources: [mine], updated: 2027-01-01, ports: [3333]}
""")
    custom = load_indicators(path)
    assert custom.updated["pool_ports"] == "2027-01-01"
    assert only(classify_dns("eu.newpool.example", indicators=custom)).evidence["matched"] == \
        "newpool.example"
    assert classify_dns("eu.newpool.example") == []
    assert level(["newminer"], indicators=custom) == "low"


@pytest.mark.parametrize("text,message", [
    ("[]", "expected a mapping"),
    ("pool_domains: {}", "pool_domains.sources: expected a list"),
    ("{", "not valid YAML"),
])
def test_broken_files_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_indicators(text)


def test_lists_without_sources_or_date_are_refused():
    base = {"pool_domains": {"sources": ["s"], "updated": "d", "domains": ["a.example"]},
            "donation_domains": {"sources": ["s"], "updated": "d", "domains": ["b.example"]},
            "miner_binaries": {"sources": ["s"], "updated": "d", "names": ["m"]},
            "pool_ports": {"sources": ["s"], "updated": "d", "ports": [1]}}
    assert isinstance(parse_indicators(json.dumps(base)), Indicators)
    for key in ("sources", "updated"):
        broken = json.loads(json.dumps(base))
        del broken["pool_ports"][key]
        with pytest.raises(ValueError, match="pool_ports"):
            parse_indicators(json.dumps(broken))
    broken = json.loads(json.dumps(base))
    broken["pool_domains"]["domains"] = ["not a domain"]
    with pytest.raises(ValueError, match="not a domain name"):
        parse_indicators(json.dumps(broken))


# --------------------------------------------------------------------------
# DNS names


@pytest.mark.parametrize("name,dialect,matched", [
    ("donate.ssl.xmrig.com", "donation", "donate.ssl.xmrig.com"),
    ("donate.v2.xmrig.com", "donation", "donate.v2.xmrig.com"),
    ("DONATE.V2.XMRIG.COM.", "donation", "donate.v2.xmrig.com"),
    ("xmr-eu1.nanopool.org", "pool", "nanopool.org"),
    ("pool.supportxmr.com", "pool", "supportxmr.com"),
    ("gulf.moneroocean.stream", "pool", "moneroocean.stream"),
    ("rx.unmineable.com", "pool", "unmineable.com"),
    ("v2.stratum.braiins.com", "pool", "stratum.braiins.com"),
    ("nanopool.org", "pool", "nanopool.org"),
])
def test_pool_and_donation_names(name, dialect, matched):
    finding = only(classify_dns(name))
    assert (finding.type, finding.dialect, finding.confidence) == ("miner_dns", dialect, "high")
    assert finding.evidence == {"name": name.lower().rstrip("."), "matched": matched,
                                "list": f"{'donation' if dialect == 'donation' else 'pool'}_domains"}


@pytest.mark.parametrize("name", [
    "example.org", "github.com", "xmrig.com", "notnanopool.org", "nanopool.org.evil.example",
    "braiins.com", "pypi.org", "", ".", "a..b", "pool supportxmr.com", "pool.supportxmr.com\x00",
    "pool\\.supportxmr\\.com",
])
def test_other_names(name):
    assert classify_dns(name) == []


@pytest.mark.parametrize("junk", [None, 5, b"pool.supportxmr.com", ["nanopool.org"]])
def test_junk_names(junk):
    assert classify_dns(junk) == []


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"


def dns_query(name: str, qtype: int = 1) -> bytes:
    header = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    return header + dns_name(name) + struct.pack(">HH", qtype, 1)


def dns_response(name: str, answers: list[tuple[int, bytes]]) -> bytes:
    """A response whose answers all point back at the question name (c00c)."""
    header = struct.pack(">HHHHHH", 0x1234, 0x8180, 1, len(answers), 0, 0)
    body = dns_name(name) + struct.pack(">HH", 1, 1)
    for kind, rdata in answers:
        body += b"\xc0\x0c" + struct.pack(">HHIH", kind, 1, 60, len(rdata)) + rdata
    return header + body


def test_parse_dns_query():
    assert parse_dns_query(dns_query("donate.v2.xmrig.com")) == ["donate.v2.xmrig.com"]
    assert parse_dns_query(dns_query("Pool.SupportXMR.com", qtype=28)) == ["pool.supportxmr.com"]
    tcp = dns_query("donate.ssl.xmrig.com")
    assert parse_dns_query(len(tcp).to_bytes(2, "big") + tcp, tcp=True) == ["donate.ssl.xmrig.com"]
    names = parse_dns_query(dns_query("xmr-eu1.nanopool.org"))
    assert [f.dialect for n in names for f in classify_dns(n)] == ["pool"]


@pytest.mark.parametrize("payload", [
    b"", b"\x00" * 11, b"GET / HTTP/1.1\r\n\r\n",
    dns_response("example.org", []),                                     # a response
    struct.pack(">HHHHHH", 1, 0x0100, 0, 0, 0, 0),                       # no question
    struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x07example",      # cut name
    struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01",   # self loop
    struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x10\x00\x00" + b"\x00\x01\x00\x01",
    struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x40abc\x00\x00\x01\x00\x01",
    struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",
])
def test_not_a_dns_query(payload):
    assert parse_dns_query(payload) is None


def test_odd_label_bytes_are_escaped_never_matched():
    query = struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x13pool.supportxmr.com\x00\x00\x01\x00\x01"
    names = parse_dns_query(query)
    assert names == ["pool\\.supportxmr\\.com"]
    assert classify_dns(names[0]) == []


def test_parse_dns_answer():
    cname_target = dns_name("lb.supportxmr.com")
    response = dns_response("pool.example.org", [
        (5, cname_target), (1, bytes([203, 0, 113, 9])), (28, bytes(15) + b"\x01"), (16, b"\x03txt")])
    answer = parse_dns_answer(response)
    assert answer == DnsAnswer(("pool.example.org",), (
        DnsRecord("pool.example.org", "CNAME", "lb.supportxmr.com"),
        DnsRecord("pool.example.org", "A", "203.0.113.9"),
        DnsRecord("pool.example.org", "AAAA", "::1")), 0)
    assert answer.names() == ["pool.example.org", "lb.supportxmr.com"]
    flagged = [f.evidence["matched"] for n in answer.names() for f in classify_dns(n)]
    assert flagged == ["supportxmr.com"]
    assert parse_dns_query(response) is None
    assert parse_dns_answer(dns_query("pool.example.org")) is None


def test_cut_dns_answer_keeps_what_was_whole():
    response = dns_response("donate.v2.xmrig.com", [(1, bytes([198, 51, 100, 1])),
                                                    (1, bytes([198, 51, 100, 2]))])
    cut = parse_dns_answer(response[:-2])
    assert [r.value for r in cut.records] == ["198.51.100.1"]
    assert parse_dns_answer(response[:20]) is None


# --------------------------------------------------------------------------
# Miner argv

HIGH_ARGV = [
    ("xmrig with pool and wallet", ["xmrig", "-o", "pool.supportxmr.com:3333", "-u", WALLET, "-p", "x"],
     "xmrig"),
    ("renamed, stratum url", ["./kworker", "-o", "stratum+tcp://203.0.113.5:3333", "-u", "x"], "generic"),
    ("stratum+ssl with --url=", ["/tmp/.x/sys", "--url=stratum+ssl://gulf.moneroocean.stream:20128"],
     "generic"),
    ("stratum+udp", ["/tmp/a", "-o", "stratum+udp://198.51.100.2:4444"], "generic"),
    ("stratum2+tcp (SV2)", ["bosminer", "--pool", "stratum2+tcp://v2.stratum.braiins.com:3336/9awtMD"],
     "generic"),
    ("ethminer stratum1+ssl",
     ["ethminer", "-P", f"stratum1+ssl://{ETH_WALLET}.rig@eu1.ethermine.org:5555"], "ethminer"),
    ("attached -o form", ["/opt/t", "-opool.minexmr.com:4444", "-u", WALLET], "generic"),
    ("donate-level alone", ["/tmp/k", "--donate-level", "1"], "xmrig"),
    ("donate-level=0", ["/tmp/k", "--donate-level=0"], "xmrig"),
    ("algo and cpu-priority", ["/opt/t", "--algo=rx/0", "--cpu-priority=5"], "xmrig"),
    ("-a and nicehash", ["/opt/t", "-a", "rx/0", "--nicehash"], "xmrig"),
    ("coin and wallet", ["/opt/t", "--coin", "monero", "-u", WALLET], "generic"),
    ("pool-like url and wallet", ["/opt/t", "-o", "pool.example.net:7777", "-u", WALLET + ".rig1"],
     "generic"),
    ("binary name and algo", ["cpuminer", "-a", "sha256d"], "cpuminer"),
    ("versioned binary and flags", ["/opt/xmrig-6.21.0/xmrig", "--tls", "--rig-id", "r1"], "xmrig"),
    ("xmr-stak", ["xmr-stak", "--currency", "monero", "-o", "pool.supportxmr.com:5555"], "xmr-stak"),
    ("donation pool as -o", ["/tmp/x", "-o", "donate.v2.xmrig.com:3333"], "xmrig"),
    ("sh -c with nohup and &", ["sh", "-c", "cd /tmp && nohup ./sysupdate -o "
                                "stratum+tcp://pool.example.net:3333 -u w >/dev/null 2>&1 &"], "generic"),
    ("bash -lc with env", ["/bin/bash", "-lc", "env HOME=/tmp nice -n 19 /dev/shm/k --donate-level=1"],
     "xmrig"),
    ("MSR tweak", ["sh", "-c", "/sbin/modprobe msr allow_writes=on"], "xmrig"),
    ("MSR tweak direct", ["modprobe", "msr", "allow_writes=on"], "xmrig"),
    ("launcher chain", ["timeout", "3600", "nohup", "taskset", "-c", "0-3", "./x", "-o",
                        "stratum+tcp://a.example:3333"], "generic"),
    ("base64 in a pipe", ["bash", "-c", "echo " + base64.b64encode(
        b"./x -o stratum+tcp://198.51.100.3:3333 -u w").decode() + " | base64 -d | sh"], "generic"),
    ("base64 of a bare url", ["bash", "-c", "echo " + base64.b64encode(
        b"stratum+tcp://pool.supportxmr.com:3333").decode() + " | base64 -d"], "generic"),
]


@pytest.mark.parametrize("name", [c[0] for c in HIGH_ARGV])
def test_miner_argv_is_high(name):
    _, argv, dialect = next(c for c in HIGH_ARGV if c[0] == name)
    finding = only(classify_exec(argv))
    assert (finding.type, finding.confidence, finding.dialect) == ("miner_exec", "high", dialect)
    assert finding.evidence["indicators"]
    orjson.dumps(finding.as_dict())


def test_evidence_names_flags_and_url_but_not_the_password():
    finding = only(classify_exec(["xmrig", "-o", "stratum+tcp://pool.supportxmr.com:3333",
                                  "-u", WALLET, "-p", "s3cret", "--donate-level=1"]))
    assert finding.evidence["url"] == "stratum+tcp://pool.supportxmr.com:3333"
    assert "--donate-level=1" in finding.evidence["indicators"]
    assert "-u <wallet>" in finding.evidence["indicators"]
    assert "s3cret" not in json.dumps(finding.as_dict())
    assert finding.evidence["binary"] == "xmrig"
    assert all(len(i) <= 210 for i in finding.evidence["indicators"])


@pytest.mark.parametrize("argv,expected", [
    (["/opt/t", "-a", "rx/0"], "medium"),
    (["/opt/t", "--nicehash"], "medium"),
    (["/opt/t", "--coin=monero"], "medium"),
    (["/opt/t", "-u", WALLET], "medium"),
    (["/opt/t", "-o", "pool.example.net:3333"], "medium"),
    (["/opt/t", "stratum+tcp"], "medium"),              # the scheme without an address
    (["xmrig"], "low"),                                 # a name is a weak signal
    (["/usr/local/bin/xmrig", "--version"], "low"),
    (["cpuminer-opt", "--help"], "low"),
    (["xmrig", "--tls"], "medium"),
    (["python3", "-c", "import os; os.system('./x -o stratum+tcp://198.51.100.3:1')"], "medium"),
    (["node", "-e", "require('child_process').exec('x --donate-level=1')"], "medium"),
])
def test_weaker_argv(argv, expected):
    assert level(argv) == expected


def test_exe_name_counts_when_argv0_is_renamed():
    finding = only(classify_exec(["[kworker/0:1]"], exe="/usr/bin/xmrig"))
    assert (finding.confidence, finding.dialect) == ("low", "xmrig")
    deleted = only(classify_exec(["[kworker/0:1]"], exe="/tmp/xmrig (deleted)"))
    assert deleted.evidence["binary"] == "xmrig"


def test_deleted_binary_still_finds_its_config():
    root = FakeRoot({"/tmp/.x/config.json": XMRIG_CONFIG_BYTES})
    assert level(["kswapd0"], exe="/tmp/.x/kswapd0 (deleted)", read_file=root) == "high"


def test_common_flags_that_other_tools_share_are_not_indicators():
    assert classify_exec(["wget", "--user-agent=Mozilla/5.0", "https://example.org"]) == []
    assert classify_exec(["curl", "--cert", "client.pem", "-k", "https://example.org"]) == []


BENIGN_ARGV = [
    ["python", "-c", "print(1)"],
    ["python3", "-m", "http.server", "8888"],
    ["git", "status"],
    ["git", "clone", "https://github.com/xmrig/xmrig"],
    ["curl", "https://example.org"],
    ["curl", "-o", "pool.tar.gz", "https://example.org/pool.tar.gz"],
    ["curl", "-u", "user:pass", "-k", "https://api.example.org"],
    ["wget", "https://github.com/xmrig/xmrig/releases/download/v6.21.0/"
             "xmrig-6.21.0-linux-static-x64.tar.gz"],
    ["node", "server.js", "--port", "3333"],
    ["jupyter", "notebook", "--port", "8888", "--ip", "0.0.0.0", "--no-browser"],
    ["java", "-jar", "selenium-server.jar", "standalone", "--port", "4444"],
    ["pip", "install", "xmrig-docs"],
    ["pip", "install", "stratum"],
    ["npm", "run", "mine"],
    ["gcc", "-o", "pool.o", "-c", "pool.c"],
    ["ls", "-al"],
    ["shasum", "-a", "256", "xmrig.tar.gz"],
    ["hashcat", "-a", "0", "-m", "1400", "hashes.txt"],
    ["ssh", "-o", "ServerAliveInterval=30", "-p", "2222", "git@example.org"],
    ["docker", "run", "-p", "3333:3333", "-p", "4444:4444", "app"],
    ["mysql", "-u", "root", "-p", "-h", "db"],
    ["psql", "-c", "select 1", "-U", "postgres"],
    ["tar", "-xzf", "xmrig-6.21.0-linux-static-x64.tar.gz"],
    ["/tmp/kworker"],                                   # a renamed miner without flags
    ["./systemd-helper", "--daemon"],
    ["sh", "-c", "python manage.py runserver 0.0.0.0:8000"],
    ["bash", "-c", "echo hello | base64"],
    ["bash", "-c", "echo aGVsbG8gd29ybGQgdGhpcyBpcyBmaW5lIGFuZCBiZW5pZ24= | base64 -d"],
    ["redis-server", "--port", "6379"],
    ["uvicorn", "app:api", "--host", "0.0.0.0", "--port", "8080"],
    [],
]


@pytest.mark.parametrize("argv", BENIGN_ARGV, ids=lambda a: " ".join(a)[:50] or "empty")
def test_benign_argv_is_not_a_miner(argv):
    assert classify_exec(argv) == []


@pytest.mark.parametrize("argv", [
    ["grep", "stratum+tcp", "notes.txt"],
    ["grep", "-r", "stratum+tcp://pool.supportxmr.com:3333", "."],
    ["rg", "--donate-level", "docs/"],
    ["git", "commit", "-m", "document stratum+tcp://pool.example:3333 and --donate-level"],
    ["echo", "xmrig -o stratum+tcp://pool.supportxmr.com:3333"],
    ["sh", "-c", "grep -c stratum+tcp /etc/hosts; echo done"],
    ["cat", "xmrig-config-notes.md"],
])
def test_text_tools_mentioning_mining_are_at_most_low(argv):
    assert level(argv) in (None, "low")


def test_grep_is_low_and_says_so():
    finding = only(classify_exec(["grep", "stratum+tcp", "notes.txt"]))
    assert finding.confidence == "low"
    assert finding.evidence["text_tool"] == "grep"


def test_a_real_miner_in_a_script_outranks_a_grep():
    argv = ["sh", "-c", "grep -q x /etc/os-release; ./x -o stratum+tcp://198.51.100.9:3333"]
    assert level(argv) == "high"


# --------------------------------------------------------------------------
# Config files

XMRIG_CONFIG = {
    "api": {"id": None, "worker-id": None},
    "http": {"enabled": False, "host": "127.0.0.1", "port": 0, "access-token": None},
    "autosave": True, "background": False, "colors": True,
    "randomx": {"init": -1, "mode": "auto", "1gb-pages": False, "rdmsr": True, "wrmsr": True},
    "cpu": {"enabled": True, "huge-pages": True, "hw-aes": None, "priority": None, "asm": True},
    "donate-level": 1, "donate-over-proxy": 1,
    "pools": [{"algo": None, "coin": None, "url": "donate.v2.xmrig.com:3333",
               "user": "YOUR_WALLET_ADDRESS", "pass": "x", "rig-id": None, "nicehash": False,
               "keepalive": False, "enabled": True, "tls": False, "tls-fingerprint": None,
               "daemon": False, "socks5": None, "self-select": None}],
    "print-time": 60, "retries": 5, "retry-pause": 5,
}
XMRIG_CONFIG_BYTES = json.dumps(XMRIG_CONFIG, indent=4).encode()


@pytest.mark.parametrize("argv,path", [
    (["/opt/x/xmrig", "-c", "/etc/miner/cfg.json"], "/etc/miner/cfg.json"),
    (["/opt/x/k", "--config", "/etc/miner/cfg.json"], "/etc/miner/cfg.json"),
    (["/opt/x/k", "--config=/etc/miner/cfg.json"], "/etc/miner/cfg.json"),
    (["sh", "-c", "cd /opt/x && ./k -c ./cfg.json"], "./cfg.json"),
])
def test_config_named_on_the_command_line(argv, path):
    root = FakeRoot({path: XMRIG_CONFIG_BYTES})
    finding = only(classify_exec(argv, read_file=root))
    assert (finding.confidence, finding.dialect) in {("high", "xmrig")}
    assert finding.evidence["config"] == path
    assert {"donate-level", "randomx", "pools"} <= set(finding.evidence["config_keys"])
    assert path in root.asked


def test_renamed_miner_is_caught_by_config_beside_the_binary():
    root = FakeRoot({"/tmp/.cache/config.json": XMRIG_CONFIG_BYTES})
    assert classify_exec(["/tmp/.cache/kworker"]) == []            # no callback: nothing to go on
    finding = only(classify_exec(["kworker"], exe="/tmp/.cache/kworker", read_file=root))
    assert (finding.confidence, finding.dialect) == ("high", "xmrig")
    assert finding.evidence["config"] == "/tmp/.cache/config.json"
    assert finding.evidence["program"] == "kworker"


def test_config_with_comments_and_trailing_commas():
    text = b"""{
    // written by hand
    "pools": [
        {"url": "203.0.113.7:3333", "user": "%s", "pass": "x", "keepalive": true, },
    ], /* no donation */
    "donate-level": 0,
}""" % WALLET.encode()
    root = FakeRoot({"/srv/c.json": text})
    assert level(["/srv/app", "--config=/srv/c.json"], read_file=root) == "high"


def test_minimal_attacker_config():
    config = {"pools": [{"url": "pool.example.net:7777", "user": WALLET}]}
    root = FakeRoot({"/tmp/a/config.json": json.dumps(config).encode()})
    assert level(["/tmp/a/run"], read_file=root) == "high"


def test_cpuminer_config():
    config = {"url": "stratum+tcp://litecoinpool.org:3333", "user": "u.1", "pass": "x",
              "algo": "scrypt", "threads": 2}
    root = FakeRoot({"/home/a/cpuminer.json": json.dumps(config).encode()})
    finding = only(classify_exec(["minerd", "-c", "/home/a/cpuminer.json"], read_file=root))
    assert (finding.confidence, finding.dialect) == ("high", "cpuminer")


@pytest.mark.parametrize("content", [
    b'{"name": "app", "version": "1.0.0", "port": 3333}',
    b'{"pools": [{"url": "postgres://db:5432/app", "size": 5}]}',
    b'{"pools": [{"url": "redis://cache:6379", "user": "app", "pass": "pw"}]}',
    b'{"url": "https://api.example.org", "user": "bot"}',
    b"server { listen 80; }",
    b"\x00\xff\xfe garbage",
    b"{" * 5000,
    b"",
])
def test_benign_configs_beside_a_binary(content):
    root = FakeRoot({"/usr/local/bin/config.json": content})
    assert classify_exec(["/usr/local/bin/app"], read_file=root) == []


def test_reads_only_through_the_callback_and_only_for_candidates():
    root = FakeRoot()
    classify_exec(["ping", "-c", "3", "example.org"], read_file=root)
    classify_exec(["gcc", "-c", "x.c"], read_file=root)
    classify_exec(["grep", "-c", "stratum", "/etc/miner.json"], read_file=root)
    classify_exec(["python3", "-c", "print(1)"], read_file=root)
    assert root.asked == []
    classify_exec(["/opt/app/run", "--config", "settings.yaml"], read_file=root)
    assert root.asked == ["settings.yaml", "/opt/app/config.json"]


def test_a_failing_callback_is_no_finding():
    def broken(path):
        raise PermissionError(path)
    assert classify_exec(["/tmp/kworker", "-c", "/tmp/c.json"], read_file=broken) == []
    assert level(["xmrig", "-c", "/tmp/c.json"], read_file=broken) == "low"
    assert classify_exec(["/tmp/k"], read_file=lambda path: "not bytes") == []


# --------------------------------------------------------------------------
# Hostile input never raises

WORDS = st.sampled_from([
    "xmrig", "sh", "bash", "-c", "-lc", "-o", "-u", "-a", "--algo", "--url=", "-p", "--config",
    "--config=", "--donate-level", "--donate-level=1", "--coin", "monero", "rx/0", "nicehash",
    "stratum+tcp://", "stratum+tcp://pool.supportxmr.com:3333", "pool.", ":3333", "[::1]:1", "@",
    "nohup", "env", "timeout", "python3", "node", "-e", "modprobe", "msr", "allow_writes=on",
    "echo", "base64", "c3RyYXR1bSt0Y3A6Ly9hOjE=", "'", '"', "\\", "|", ";", "&&", "$(", "`", "\n",
    WALLET, ETH_WALLET, "/tmp/config.json", "config.json", "grep", "busybox"])
ARGV = st.lists(st.one_of(WORDS, st.text(max_size=40)), max_size=14)
CONFIG = st.one_of(st.binary(max_size=300), st.sampled_from([
    XMRIG_CONFIG_BYTES, b'{"pools": 5}', b'{"pools": [1, "x", null, {"url": 5}]}',
    b'{"url": ["a"], "user": {}}', b'{"cpu": [], "randomx": 1}', b"[1, 2]", b"// only a comment"]))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ARGV, st.one_of(st.none(), st.text(max_size=30), st.just("/tmp/x/xmrig")), CONFIG)
def test_classify_exec_never_raises(argv, exe, config):
    for finding in classify_exec(argv, exe=exe, read_file=lambda path: config):
        assert isinstance(finding, Finding)
        orjson.dumps(finding.as_dict())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(WORDS, max_size=30).map(" ".join))
def test_shell_strings_never_raise(script):
    classify_exec(["sh", "-c", script])
    classify_exec(["python3", "-c", script])


DNS_PREFIXES = st.sampled_from([b"", dns_query("pool.supportxmr.com"), dns_response("a.example", [
    (5, b"\xc0\x0c"), (1, b"\x01\x02\x03\x04")]), struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0)])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DNS_PREFIXES, st.binary(max_size=300), st.integers(0, 400), st.booleans())
def test_dns_parsers_never_raise(prefix, tail, cut, tcp):
    data = (prefix + tail)[:cut] if cut < len(prefix) else prefix + tail
    names = parse_dns_query(data, tcp=tcp)
    assert names is None or all(isinstance(n, str) for n in names)
    answer = parse_dns_answer(data, tcp=tcp)
    for name in (answer.names() if answer else []) + (names or []):
        classify_dns(name)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_classify_dns_never_raises(name):
    for finding in classify_dns(name):
        orjson.dumps(finding.as_dict())


@pytest.mark.parametrize("junk", [None, 5, "xmrig -o stratum+tcp://a:1", b"xmrig", {"a": 1},
                                  ["xmrig", None, 3, b"-o"], ("xmrig", "--donate-level=1")])
def test_junk_arguments(junk):
    for finding in classify_exec(junk, exe=junk, read_file=junk):
        orjson.dumps(finding.as_dict())
    assert parse_dns_query(junk) is None
    assert parse_dns_answer(junk) is None
