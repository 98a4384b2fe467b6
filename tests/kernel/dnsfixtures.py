# SPDX-License-Identifier: Apache-2.0
"""A real DNS resolver serving a test zone, servers at the addresses it
answers, and clients that resolve through it with glibc, for the allow-by-name
tests (issue 15).

TestResolver makes a network namespace `egdns-srv-<pid>-<n>` joined to the
host's by a veth pair, runs dnsmasq there (`--no-resolv --no-hosts`: it
answers the zone and nothing else, and never forwards), and on exit ends
every process it started, by pid, and removes the link, the namespace and
its temporary directory, also when the body failed::

    host netns                          egdns-srv-<pid>-<n>
    egdns<pid>-<n>  198.18.53.1/24  --- eth0  198.18.53.53/24    dnsmasq :53 udp+tcp
                    2001:db8:53::1/64         2001:db8:53::53/64
                                              every address of the zone (servers)

No default route on either side: nothing sent to the zone's addresses can
leave the machine. When 198.18.53.0/24 is taken on the host, 198.19.53.0/24
(and 2001:db8:1953::/64) is used instead; tests read the addresses from the
resolver (`resolver.addresses(name)`), never from constants.

Clients run in the host namespace (so that a guard attached to their cgroup
judges them) and resolve through the test resolver without touching the
host's files: `client_argv` runs a command under `unshare --mount` with a
resolv.conf naming the test resolver, a hosts file without test names and an
nsswitch.conf saying `hosts: files dns` bind-mounted over /etc. `popen`,
`run` and `loop` add the move into a cgroup before exec.

The zone (make_zone, names under `egtest.`; TTL 60 unless told):

    one, two, three  .egtest  one A each (.10, .11, .12)
    shared.egtest             A .10, the address of one.egtest (a shared CDN address)
    multi.egtest              A .13 .14 .15, AAAA ::13 ::14
    v6only.egtest             AAAA ::16
    alias -> mid -> real      CNAME, CNAME; real.egtest: A .20, AAAA ::20
    short.egtest              A .21, TTL 2
    sub.egtest, a.sub.egtest, deep.b.sub.egtest   A .23 .24 .25 (for `*.sub.egtest`)
    LONG_NAME (x * 55 .long.sub.egtest)            A .26: longer than dns.bpf.c's fold key
    FOLD_EDGE (y * 48 .long.sub.egtest)            A .27: as long as the fold key takes
    big.egtest                40 A (.100-.139): a 668-byte answer, more than the
                              512 a query without EDNS may get, so the UDP answer
                              is truncated (TC) and glibc asks again over TCP
    anything else in egtest.  NXDOMAIN; names outside it: REFUSED (no upstream)
"""
from __future__ import annotations

import ipaddress
import itertools
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .netfixtures import TEST_PORT_RANGE, Spawned, end_tree, issued_ports, require_tools

__all__ = [
    "TestResolver", "NetnsServer", "Record", "make_zone", "ZONE_SUFFIX", "DEFAULT_TTL", "SHORT_TTL",
    "BIG_COUNT", "TOOLS",
    "DnsReply", "DnsRecord", "build_query", "parse_reply", "dns_query", "QTYPES", "RCODES",
    "LOOP_CLIENT", "loop_argv", "parse_loop_output", "LoopReport",
]

#: What a test needs installed to use TestResolver (see netfixtures.require_tools).
TOOLS = ("dnsmasq", "ip", "unshare", "mount")
ZONE_SUFFIX = "egtest"
#: 71 characters, below `*.sub.egtest`: more than the 64 of an answer's fold key
LONG_NAME = "x" * 55 + ".long.sub." + ZONE_SUFFIX
#: 64 characters: the longest name an answer's fold key holds
FOLD_EDGE = "y" * 48 + ".long.sub." + ZONE_SUFFIX
DEFAULT_TTL = 60
SHORT_TTL = 2
BIG_COUNT = 40
#: (IPv4 /24 prefix, IPv6 /64 prefix) tried in this order; the first free one is used.
SUBNETS = (("198.18.53", "2001:db8:53"), ("198.19.53", "2001:db8:1953"))
#: Every wait of this module gives up after this long, naming what it waited for.
START_TIMEOUT = 10.0

_counter = itertools.count()


# --------------------------------------------------------------------------
# The zone


@dataclass(frozen=True)
class Record:
    kind: str       # "A", "AAAA" or "CNAME"
    value: str      # an address, or the target name of a CNAME
    ttl: int = DEFAULT_TTL


def make_zone(v4: str, v6: str) -> dict[str, list[Record]]:
    """The test zone, name -> records, with addresses in v4.0/24 and v6::/64."""
    def a(*hosts: int, ttl: int = DEFAULT_TTL) -> list[Record]:
        return [Record("A", f"{v4}.{host}", ttl) for host in hosts]

    def aaaa(*hosts: int) -> list[Record]:
        return [Record("AAAA", f"{v6}::{host}") for host in hosts]

    def name(label: str) -> str:
        return f"{label}.{ZONE_SUFFIX}"

    return {
        name("one"): a(10),
        name("two"): a(11),
        name("three"): a(12),
        name("shared"): a(10),
        name("multi"): a(13, 14, 15) + aaaa(13, 14),
        name("v6only"): aaaa(16),
        name("alias"): [Record("CNAME", name("mid"))],
        name("mid"): [Record("CNAME", name("real"))],
        name("real"): a(20) + aaaa(20),
        name("short"): a(21, ttl=SHORT_TTL),
        name("sub"): a(23),
        name("a.sub"): a(24),
        name("deep.b.sub"): a(25),
        LONG_NAME: a(26),
        FOLD_EDGE: a(27),
        name("big"): a(*range(100, 100 + BIG_COUNT)),
    }


def _dnsmasq_records(zone: dict[str, list[Record]]) -> list[str]:
    """dnsmasq options serving zone. host-record and cname both take a TTL of
    their own (host-record's since 2.80), so each record keeps its TTL."""
    options = []
    for name, records in zone.items():
        for record in records:
            if record.kind == "CNAME":
                options.append(f"--cname={name},{record.value},{record.ttl}")
            else:
                options.append(f"--host-record={name},{record.value},{record.ttl}")
    return options


# --------------------------------------------------------------------------
# DNS messages: just enough to ask and to read an answer (RFC 1035 4.1)

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28, "OPT": 41,
          "ANY": 255}
_QTYPE_NAMES = {number: name for name, number in QTYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass
class DnsRecord:
    name: str
    kind: str       # "A", "AAAA", "CNAME", ... or "TYPE<n>"
    ttl: int
    data: str | bytes   # address or target name; raw rdata for other types


@dataclass
class DnsReply:
    id: int
    flags: int
    question: tuple[str, str] | None
    answers: list[DnsRecord]
    size: int

    @property
    def rcode(self) -> str:
        return RCODES.get(self.flags & 0xF, str(self.flags & 0xF))

    @property
    def truncated(self) -> bool:
        return bool(self.flags & 0x0200)

    @property
    def authoritative(self) -> bool:
        return bool(self.flags & 0x0400)

    def addresses(self) -> list[str]:
        return [r.data for r in self.answers if r.kind in ("A", "AAAA")]


def build_query(name: str, qtype: str | int = "A", ident: int | None = None,
                edns_size: int | None = None, recursion: bool = True) -> bytes:
    """One question; edns_size: add an OPT record offering that UDP payload size."""
    ident = random.randrange(1 << 16) if ident is None else ident
    code = QTYPES[qtype] if isinstance(qtype, str) else qtype
    header = struct.pack(">HHHHHH", ident, 0x0100 if recursion else 0, 1, 0, 0,
                         1 if edns_size else 0)
    labels = [label.encode("idna") for label in name.rstrip(".").split(".") if label]
    qname = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    opt = b"\0" + struct.pack(">HHIH", QTYPES["OPT"], edns_size, 0, 0) if edns_size else b""
    return header + qname + struct.pack(">HH", code, 1) + opt


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at offset (following compression pointers) and the offset after it."""
    labels: list[str] = []
    end = None
    for _ in range(128):            # bounds pointer loops and absurd names
        if offset >= len(data):
            raise ValueError("name runs past the end of the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise ValueError("compression pointer cut off")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise ValueError(f"label type {length >> 6} at {offset}")
        offset += 1
        if length == 0:
            return ".".join(labels), end if end is not None else offset
        labels.append(data[offset:offset + length].decode("ascii", "replace"))
        offset += length
    raise ValueError("name too long or a compression loop")


def parse_reply(data: bytes) -> DnsReply:
    """Header, question and answer section of a DNS message; ValueError when malformed."""
    if len(data) < 12:
        raise ValueError(f"{len(data)} bytes: shorter than a DNS header")
    ident, flags, qdcount, ancount, _ns, _ar = struct.unpack_from(">HHHHHH", data)
    offset = 12
    question = None
    for _ in range(qdcount):
        qname, offset = _read_name(data, offset)
        if offset + 4 > len(data):
            raise ValueError("question cut off")
        qtype = struct.unpack_from(">H", data, offset)[0]
        offset += 4
        question = question or (qname, _QTYPE_NAMES.get(qtype, f"TYPE{qtype}"))
    answers = []
    for _ in range(ancount):
        name, offset = _read_name(data, offset)
        if offset + 10 > len(data):
            raise ValueError("answer record cut off")
        rtype, _rclass, ttl, rdlength = struct.unpack_from(">HHIH", data, offset)
        offset += 10
        rdata = data[offset:offset + rdlength]
        if len(rdata) != rdlength:
            raise ValueError("answer data cut off")
        kind = _QTYPE_NAMES.get(rtype, f"TYPE{rtype}")
        value: str | bytes = rdata
        if kind == "A" and rdlength == 4:
            value = socket.inet_ntop(socket.AF_INET, rdata)
        elif kind == "AAAA" and rdlength == 16:
            value = socket.inet_ntop(socket.AF_INET6, rdata)
        elif kind == "CNAME":
            value = _read_name(data, offset)[0]
        answers.append(DnsRecord(name, kind, ttl, value))
        offset += rdlength
    return DnsReply(ident, flags, question, answers, len(data))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def dns_query(server: str, name: str, qtype: str | int = "A", tcp: bool = False, port: int = 53,
              timeout: float = 2.0, edns_size: int | None = None) -> DnsReply:
    """Ask server one question over UDP (or TCP) and parse its reply.
    Raises TimeoutError when no reply with the query's id arrives in time."""
    query = build_query(name, qtype, edns_size=edns_size)
    ident = struct.unpack_from(">H", query)[0]
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        if tcp:
            sock.connect((server, port))
            sock.sendall(struct.pack(">H", len(query)) + query)
            return parse_reply(_recv_exact(sock, struct.unpack(">H", _recv_exact(sock, 2))[0]))
        sock.connect((server, port))
        sock.send(query)
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data = sock.recv(65535)
            except ConnectionRefusedError:     # nothing listening yet: wait as for a loss
                time.sleep(0.02)
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{server}:{port} refused the query for {name}")
                sock.send(query)
                continue
            if len(data) >= 2 and struct.unpack_from(">H", data)[0] == ident:
                return parse_reply(data)


# --------------------------------------------------------------------------
# The client loop: resolve through glibc, then connect, many times in one process

LOOP_CLIENT = r"""
import argparse, errno, json, socket, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--names", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--count", type=int, default=1)
parser.add_argument("--family", choices=("any", "4", "6"), default="any")
parser.add_argument("--each", action="store_true")
parser.add_argument("--greeting", action="store_true")
parser.add_argument("--timeout", type=float, default=5.0)
args = parser.parse_args()
family = {"any": socket.AF_UNSPEC, "4": socket.AF_INET, "6": socket.AF_INET6}[args.family]
eai = {getattr(socket, n): n for n in dir(socket) if n.startswith("EAI_")}
names = args.names.split(",")
results = {}
out = []
started = time.monotonic()
for i in range(args.count):
    name = names[i % len(names)]
    t0 = time.monotonic()
    try:
        infos = socket.getaddrinfo(name, args.port, family, socket.SOCK_STREAM)
        error = None
    except socket.gaierror as exc:
        infos, error = [], eai.get(exc.errno, "EAI_%s" % exc.errno)
    resolve_ms = round((time.monotonic() - t0) * 1000, 3)
    if error:
        results[error] = results.get(error, 0) + 1
        out.append(json.dumps({"i": i, "name": name, "result": error, "resolve_ms": resolve_ms}))
        continue
    for info in (infos if args.each else infos[:1]):
        record = {"i": i, "name": name, "ip": info[4][0], "port": args.port,
                  "resolve_ms": resolve_ms}
        t1 = time.monotonic()
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.settimeout(args.timeout)
        try:
            sock.connect(info[4])
            if args.greeting:
                line = b""
                while not line.endswith(b"\n"):
                    chunk = sock.recv(64)
                    if not chunk:
                        break
                    line += chunk
                record["served_by"] = line.decode("ascii", "replace").strip()
            record["result"] = "ok"
        except socket.timeout:
            record["result"] = "timeout"
        except OSError as exc:
            record["result"] = errno.errorcode.get(exc.errno, str(exc.errno))
        finally:
            sock.close()
        record["connect_ms"] = round((time.monotonic() - t1) * 1000, 3)
        results[record["result"]] = results.get(record["result"], 0) + 1
        out.append(json.dumps(record))
seconds = time.monotonic() - started
out.append(json.dumps({"summary": True, "count": args.count, "results": results,
                       "seconds": round(seconds, 3)}))
sys.stdout.write("\n".join(out) + "\n")
"""


def loop_argv(names: str | list[str], port: int, count: int = 1, family: str = "any",
              each: bool = False, greeting: bool = False, timeout: float = 5.0) -> list[str]:
    """The loop client's command line (to run through TestResolver.client_argv).

    count times: getaddrinfo(name, port) with the system resolver (names used
    in turn), then a TCP connect to the first address (each: to every address
    of the answer); one JSON line per connect, or per failed resolve, with
    `result` "ok", an errno name ("ECONNREFUSED", "EPERM", ...), "timeout" or
    an EAI_ name; then a summary line. greeting: read the line a NetnsServer
    sends (its local address) into `served_by`."""
    names = [names] if isinstance(names, str) else list(names)
    argv = [sys.executable, "-c", LOOP_CLIENT, "--names", ",".join(names), "--port", str(port),
            "--count", str(count), "--family", family, "--timeout", str(timeout)]
    return argv + (["--each"] if each else []) + (["--greeting"] if greeting else [])


@dataclass
class LoopReport:
    attempts: list[dict]
    summary: dict
    stderr: str = ""

    @property
    def failures(self) -> list[dict]:
        return [attempt for attempt in self.attempts if attempt["result"] != "ok"]

    @property
    def ok(self) -> int:
        return len(self.attempts) - len(self.failures)

    @property
    def seconds(self) -> float:
        return self.summary["seconds"]


def parse_loop_output(stdout: str, stderr: str = "") -> LoopReport:
    """The loop client's output; ValueError (quoting stderr) when it has no summary."""
    attempts, summary = [], None
    for line in stdout.splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("summary"):
                summary = record
            else:
                attempts.append(record)
    if summary is None:
        raise ValueError(f"the loop client ended without a summary; stderr: {stderr[-2000:]!r}")
    return LoopReport(attempts, summary, stderr)


# --------------------------------------------------------------------------
# Servers inside the resolver's namespace

_SERVER = r"""
import json, selectors, socket, sys
port, hosts = int(sys.argv[1]), sys.argv[2:] or ["::"]
selector = selectors.DefaultSelector()
for host in hosts:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if host == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    selector.register(sock, selectors.EVENT_READ)
print("listening", flush=True)
def plain(address):
    return address[7:] if address.startswith("::ffff:") else address
while True:
    for key, _ in selector.select():
        try:
            conn, peer = key.fileobj.accept()
        except BlockingIOError:
            continue
        local = plain(conn.getsockname()[0])
        try:
            conn.sendall(local.encode() + b"\n")
        except OSError:
            pass
        conn.close()
        print(json.dumps({"local": local, "peer": plain(peer[0])}), flush=True)
"""


def _unused_port() -> int:
    """A port of TEST_PORT_RANGE no fixture of this run has used (tests match
    events by destination port). Any port is free in the resolver's namespace."""
    low, high = TEST_PORT_RANGE
    port = random.choice([port for port in range(low, high) if port not in issued_ports])
    issued_ports.add(port)
    return port


class NetnsServer:
    """A TCP listener in the resolver's namespace on one port, on every
    address there (or on `addresses`): it sends each connection its local
    address and a newline, then closes it. `accepted` lists {"local", "peer"}
    per connection, in order."""

    def __init__(self, netns: str, port: int = 0, addresses: list[str] | None = None):
        self.netns = netns
        self.port = port or _unused_port()
        self.addresses = list(addresses or [])
        self.proc: subprocess.Popen | None = None
        self._accepted: list[dict] = []
        self._cond = threading.Condition()
        self._ready = False
        self._reader: threading.Thread | None = None

    def __enter__(self) -> "NetnsServer":
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", _SERVER, str(self.port),
             *self.addresses],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True,
                                         name=f"NetnsServer-{self.port}")
        self._reader.start()
        try:
            with self._cond:
                self._cond.wait_for(lambda: self._ready or self.proc.poll() is not None,
                                            timeout=START_TIMEOUT)
            if not self._ready:
                if self.proc.poll() is not None:
                    why = f"exited with {self.proc.returncode}: {self.proc.stderr.read()[-2000:]}"
                else:
                    why = f"not listening within {START_TIMEOUT} s"
                raise RuntimeError(f"server on port {self.port} in {self.netns} {why}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                if line.startswith("listening"):
                    self._ready = True
                elif line.strip():
                    self._accepted.append(json.loads(line))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def accepted(self) -> list[dict]:
        with self._cond:
            return list(self._accepted)

    def wait_accepted(self, n: int, timeout: float = 5.0) -> list[dict]:
        """accepted once it holds at least n connections; AssertionError after timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._accepted) >= n, timeout=timeout):
                raise AssertionError(f"server on port {self.port} accepted "
                                     f"{len(self._accepted)} connections, wanted {n}")
            return list(self._accepted)

    def close(self) -> None:
        if self.proc is not None:
            end_tree(self.proc)
            if self._reader is not None:
                self._reader.join(timeout=5)
            for stream in (self.proc.stdout, self.proc.stderr):
                stream.close()
            self.proc = None


# --------------------------------------------------------------------------
# The resolver

# Runs in the client's private mount namespace: $1 resolv.conf, $2 hosts,
# $3 nsswitch.conf, then the command. A running nscd would answer host
# lookups from its cache and skip resolv.conf, so its socket is hidden.
_MOUNTS = ('mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts'
           ' && mount --bind "$3" /etc/nsswitch.conf'
           ' && { [ ! -d /run/nscd ] || mount -t tmpfs egdns-no-nscd /run/nscd; }'
           ' && shift 3 && exec "$@"')

_QUERY_LOG = re.compile(r"query\[(\w+)\] (\S+) from (\S+)")


def _ip(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True,
                            timeout=START_TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _holder(network: str) -> str | None:
    """What on the host already uses network (an address or a route in it), or None."""
    net = ipaddress.ip_network(network)
    for link in json.loads(_ip("-j", "addr", "show") or "[]"):
        for info in link.get("addr_info", []):
            if "local" in info and ipaddress.ip_address(info["local"].split("%")[0]) in net:
                return f"{info['local']} on {link['ifname']}"
    family = "-6" if net.version == 6 else "-4"
    for route in json.loads(_ip("-j", family, "route", "show", "root", network) or "[]"):
        return f"route {route.get('dst')} dev {route.get('dev')}"
    return None


class TestResolver:
    """dnsmasq serving make_zone in namespace `egdns-srv-<pid>-<n>`; see the module docstring.

    resolver.ip / ip6:            where dnsmasq listens (UDP and TCP port 53)
    resolver.zone:                name -> [Record]; addresses(name) follows CNAMEs
    resolver.serve(port):         a NetnsServer on every address of the namespace
    resolver.client_argv(argv):   argv resolving through this resolver (host netns)
    resolver.popen/run/loop(..., cgroup=): the same, started inside a cgroup
    resolver.queries():           what dnsmasq was asked, from its log
    resolver.tcp_accepts():       TCP connections accepted in the namespace so far
    """
    __test__ = False  # a helper, not a pytest test class

    def __init__(self, subnets=SUBNETS, log_queries: bool = True, more_names=None):
        """more_names: (v4, v6) -> {name: [Record]}, names served beside
        make_zone's (addresses in the same prefixes, made once the free
        subnet is known), for tests whose workloads need names of their own."""
        self._subnets = subnets
        self.log_queries = log_queries
        self._more_names = more_names
        n = next(_counter)
        self.netns = f"egdns-srv-{os.getpid()}-{n}"
        self.host_if = f"egdns{os.getpid()}-{n % 100}"[:15]
        self.dir: Path | None = None
        self.dnsmasq: subprocess.Popen | None = None
        self.zone: dict[str, list[Record]] = {}
        self._spawned = Spawned()
        self._servers: list[NetnsServer] = []
        self._netns_made = False
        self._link_made = False
        self._log_fh = None

    # -- addresses and names

    def _choose_subnet(self) -> None:
        taken = []
        for v4, v6 in self._subnets:
            holders = [h for h in (_holder(f"{v4}.0/24"), _holder(f"{v6}::/64")) if h]
            if not holders:
                self.v4, self.v6 = v4, v6
                return
            taken.append(f"{v4}.0/24 ({'; '.join(holders)})")
        raise RuntimeError("no free test subnet on the host: " + ", ".join(taken))

    @property
    def ip(self) -> str:
        return f"{self.v4}.53"

    @property
    def ip6(self) -> str:
        return f"{self.v6}::53"

    @property
    def host_ip(self) -> str:
        return f"{self.v4}.1"

    @property
    def host_ip6(self) -> str:
        return f"{self.v6}::1"

    def names(self) -> list[str]:
        return list(self.zone)

    def records(self, name: str) -> list[Record]:
        return list(self.zone[name.lower().rstrip(".")])

    def chain(self, name: str) -> list[str]:
        """name and the targets of its CNAME chain, in order."""
        chain = [name.lower().rstrip(".")]
        while True:
            cnames = [r for r in self.zone[chain[-1]] if r.kind == "CNAME"]
            if not cnames:
                return chain
            chain.append(cnames[0].value)

    def addresses(self, name: str, family: int | None = None) -> list[str]:
        """The A then AAAA addresses name resolves to (through CNAMEs);
        family: 4 or 6 for one kind only."""
        records = self.zone[self.chain(name)[-1]]
        kinds = {4: ("A",), 6: ("AAAA",), None: ("A", "AAAA")}[family]
        return [r.value for kind in kinds for r in records if r.kind == kind]

    def ttl(self, name: str) -> int:
        """The TTL of name's own records (CNAME or addresses)."""
        return min(r.ttl for r in self.records(name))

    def all_addresses(self) -> list[str]:
        seen = {}
        for records in self.zone.values():
            for record in records:
                if record.kind != "CNAME":
                    seen[record.value] = None
        return list(seen)

    # -- start and stop

    def __enter__(self) -> "TestResolver":
        require_tools(*TOOLS)
        try:
            self._choose_subnet()
            self.zone = make_zone(self.v4, self.v6)
            if self._more_names is not None:
                self.zone.update(self._more_names(self.v4, self.v6))
            self.dir = Path(tempfile.mkdtemp(prefix="egdns-"))
            self._write_client_files()
            self._make_network()
            self._start_dnsmasq()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _make_network(self) -> None:
        _ip("netns", "add", self.netns)
        self._netns_made = True
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", "eth0",
            "netns", self.netns)
        self._link_made = True
        # nodad: an address still in duplicate address detection cannot be
        # bound or used as a source for about a second
        _ip("-batch", "-", stdin="\n".join([
            f"address add {self.host_ip}/24 dev {self.host_if}",
            f"address add {self.host_ip6}/64 dev {self.host_if} nodad",
            f"link set {self.host_if} up", ""]))
        lines = ["link set lo up", f"address add {self.ip}/24 dev eth0",
                 f"address add {self.ip6}/64 dev eth0 nodad"]
        for address in self.all_addresses():
            if ":" in address:
                lines.append(f"address add {address}/64 dev eth0 nodad")
            else:
                lines.append(f"address add {address}/24 dev eth0")
        lines.append("link set eth0 up")
        _ip("-n", self.netns, "-batch", "-", stdin="\n".join(lines) + "\n")

    def _dnsmasq_argv(self) -> list[str]:
        argv = ["ip", "netns", "exec", self.netns, shutil.which("dnsmasq"),
                "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-daemon",
                "--pid-file=", "--bind-dynamic", f"--listen-address={self.ip}",
                f"--listen-address={self.ip6}", "--port=53",
                # names under the zone are answered here or NXDOMAIN, never forwarded
                f"--local=/{ZONE_SUFFIX}/", f"--local-ttl={DEFAULT_TTL}"]
        if self.log_queries:
            argv.append("--log-queries=extra")
        return argv + _dnsmasq_records(self.zone)

    def _start_dnsmasq(self) -> None:
        """Start dnsmasq (--no-daemon: one process that also serves TCP, logging
        to stderr) and return once it answers over UDP and TCP."""
        self._log_fh = open(self.log_path, "ab")
        self.dnsmasq = subprocess.Popen(self._dnsmasq_argv(), stdin=subprocess.DEVNULL,
                                        stdout=self._log_fh, stderr=self._log_fh)
        name = next(iter(self.zone))
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.dnsmasq.poll() is not None:
                raise RuntimeError(f"dnsmasq in {self.netns} exited with {self.dnsmasq.returncode}:"
                                   f" {self.log()[-2000:]}")
            try:
                for tcp in (False, True):
                    reply = dns_query(self.ip, name, tcp=tcp, timeout=0.3)
                    if reply.addresses() != self.addresses(name):
                        raise RuntimeError(f"dnsmasq answered {reply} for {name}")
                return
            except (OSError, ValueError) as exc:
                last = exc
                time.sleep(0.05)
        raise RuntimeError(f"dnsmasq in {self.netns} did not answer {name} at {self.ip}:53 "
                           f"within {START_TIMEOUT} s ({last}): {self.log()[-2000:]}")

    def close(self) -> None:
        """End what this resolver started (servers, clients, dnsmasq), by pid,
        then remove the link, the namespace and the directory. Every step runs
        even when an earlier one failed; failures are raised together."""
        errors: list[str] = []

        def step(what: str, action) -> None:
            try:
                action()
            except Exception as exc:        # keep cleaning; report at the end
                errors.append(f"{what}: {exc}")

        for server in self._servers:
            step(f"server {server.port}", server.close)
        self._servers.clear()
        step("clients", self._spawned.close)
        if self.dnsmasq is not None:
            step("dnsmasq", lambda: end_tree(self.dnsmasq))
            self.dnsmasq = None
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        if self._link_made:
            # deleting either end of a veth deletes both
            step(f"link {self.host_if}", lambda: _ip("link", "del", self.host_if))
            self._link_made = False
        if self._netns_made:
            step(f"netns {self.netns}", lambda: _ip("netns", "del", self.netns))
            self._netns_made = False
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if errors:
            raise RuntimeError("TestResolver cleanup: " + "; ".join(errors))

    # -- the resolver's own state

    @property
    def log_path(self) -> Path:
        return self.dir / "dnsmasq.log"

    def log(self) -> str:
        """What dnsmasq has written so far (its queries, with log_queries)."""
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, TypeError):
            return ""

    def queries(self, name: str | None = None) -> list[tuple[str, str, str]]:
        """(type, name, client address) of each query dnsmasq logged, in order;
        name: only that name's. dnsmasq logs the same way over UDP and TCP."""
        found = [m.groups() for m in _QUERY_LOG.finditer(self.log())]
        if name is not None:
            found = [q for q in found if q[1].lower() == name.lower().rstrip(".")]
        return found

    def wait_for_queries(self, name: str, n: int = 1, timeout: float = 5.0) -> list[tuple]:
        """queries(name) once it holds at least n; AssertionError after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.queries(name)
            if len(found) >= n or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        assert len(found) >= n, f"dnsmasq logged {len(found)} queries for {name}, wanted {n}"
        return found

    def tcp_accepts(self) -> int:
        """TCP connections accepted in the resolver's namespace so far
        (PassiveOpens of its TCP MIB, read through dnsmasq's /proc/PID/net):
        DNS over TCP plus connections to NetnsServers. Take the difference
        around a lookup made while no server is being connected to."""
        with open(f"/proc/{self.dnsmasq.pid}/net/snmp") as fh:
            rows = [line.split() for line in fh if line.startswith("Tcp:")]
        return int(rows[1][rows[0].index("PassiveOpens")])

    # -- servers

    def serve(self, port: int = 0, addresses: list[str] | None = None) -> NetnsServer:
        """A started NetnsServer on port (0: an unused test port) on every
        address of the namespace, or only on addresses; closed with the resolver."""
        server = NetnsServer(self.netns, port, addresses)
        server.__enter__()
        self._servers.append(server)
        return server

    # -- clients

    def _write_client_files(self) -> None:
        for nameserver in (self.ip, self.ip6):
            (self.dir / f"resolv.conf.{nameserver}").write_text(
                f"# egress-guard test resolver\nnameserver {nameserver}\n"
                "options timeout:2 attempts:2\n")
        try:
            hosts = Path("/etc/hosts").read_text().splitlines()
        except OSError:
            hosts = ["127.0.0.1 localhost", "::1 localhost"]
        suffix = re.compile(rf"\S\.{ZONE_SUFFIX}\.?(\s|$)", re.IGNORECASE)
        (self.dir / "hosts").write_text(
            "\n".join(line for line in hosts if not suffix.search(line)) + "\n")
        try:
            nsswitch = Path("/etc/nsswitch.conf").read_text().splitlines()
        except OSError:
            nsswitch = ["passwd: files", "group: files", "shadow: files"]
        nsswitch = [line for line in nsswitch if not line.startswith("hosts:")]
        (self.dir / "nsswitch.conf").write_text("\n".join(nsswitch + ["hosts: files dns"]) + "\n")

    def client_argv(self, argv: list[str], nameserver: str | None = None) -> list[str]:
        """argv run in a private mount namespace whose /etc/resolv.conf names
        this resolver (nameserver: ip, the default, or ip6), /etc/hosts holds
        no test name and nsswitch.conf says `hosts: files dns`. The network
        namespace stays the caller's."""
        nameserver = nameserver or self.ip
        resolv = self.dir / f"resolv.conf.{nameserver}"
        if not resolv.exists():
            raise ValueError(f"{nameserver} is not this resolver ({self.ip}, {self.ip6})")
        return [shutil.which("unshare"), "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", _MOUNTS, "egdns-client", str(resolv), str(self.dir / "hosts"),
                str(self.dir / "nsswitch.conf"), *argv]

    def popen(self, argv: list[str], cgroup=None, nameserver: str | None = None,
              **kwargs) -> subprocess.Popen:
        """Start client_argv(argv); cgroup (a directory, or anything with a
        .path such as TempCgroup): the child joins it before it execs, so
        everything it runs is in it. Ended with the resolver if still running."""
        procs = None if cgroup is None else \
            str(Path(getattr(cgroup, "path", cgroup)) / "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as fh:
                fh.write("0")
        return self._spawned.popen(self.client_argv(argv, nameserver),
                                   preexec_fn=join if procs else None, **kwargs)

    def run(self, argv: list[str], cgroup=None, timeout: float = 30,
            nameserver: str | None = None) -> subprocess.CompletedProcess:
        """popen, then wait (text output captured); the process is ended after timeout."""
        proc = self.popen(argv, cgroup, nameserver, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            end_tree(proc)
            out, err = proc.communicate()
            raise AssertionError(f"{argv[:3]} did not end within {timeout} s: {err[-2000:]}")
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def resolve(self, name: str, family: str = "any", cgroup=None,
                nameserver: str | None = None) -> list[str]:
        """The addresses glibc's getaddrinfo gives a client for name, in its
        order, duplicates removed; LookupError naming the EAI_ code when
        the lookup fails."""
        code = ("import json, socket, sys\n"
                "family = {'any': 0, '4': socket.AF_INET, '6': socket.AF_INET6}[sys.argv[2]]\n"
                "try:\n"
                "    infos = socket.getaddrinfo(sys.argv[1], 80, family, socket.SOCK_STREAM)\n"
                "except socket.gaierror as exc:\n"
                "    eai = {getattr(socket, n): n for n in dir(socket) if n.startswith('EAI_')}\n"
                "    print(json.dumps(eai.get(exc.errno, str(exc.errno)))); sys.exit(0)\n"
                "print(json.dumps(list(dict.fromkeys(i[4][0] for i in infos))))\n")
        result = self.run([sys.executable, "-c", code, name, family], cgroup,
                          nameserver=nameserver)
        if result.returncode != 0:
            raise AssertionError(f"resolving {name} failed: {result.stderr[-2000:]}")
        answer = json.loads(result.stdout)
        if isinstance(answer, str):
            raise LookupError(f"{name}: {answer}")
        return answer

    def loop(self, names: str | list[str], port: int, count: int = 1, cgroup=None,
             timeout: float = 60, **options) -> LoopReport:
        """Run the loop client (see loop_argv for options) through this resolver."""
        result = self.run(loop_argv(names, port, count, **options), cgroup, timeout)
        return parse_loop_output(result.stdout, result.stderr)
