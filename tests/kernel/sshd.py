# SPDX-License-Identifier: Apache-2.0
"""A real OpenSSH server for the SSH tunnel tests, and the client command lines that reach it.

Sshd makes a temporary directory with a fresh ed25519 host key, a client key
authorised for root and its own sshd_config, runs `/usr/sbin/sshd -D -e -f
CONFIG` listening on loopback only, and on exit ends that sshd and the
per-connection processes it forked, by pid, then removes the directory.
"""
from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from .netfixtures import TEST_PORT_RANGE, bind_unused_port, end_tree

SSHD = "/usr/sbin/sshd"
#: What a test needs installed to use Sshd (see netfixtures.require_tools).
TOOLS = (SSHD, "ssh", "ssh-keygen")

_LISTEN = "0A"


def _parse_proc_address(text: str) -> tuple[str, int]:
    """`0100007F:1F90` (/proc/net/tcp, host-order u32 words) -> ("127.0.0.1", 8080)."""
    hex_ip, hex_port = text.split(":")
    raw = b"".join(struct.pack("=I", int(hex_ip[i:i + 8], 16)) for i in range(0, len(hex_ip), 8))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, raw), int(hex_port, 16)


def listening_sockets() -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN in this network namespace."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == _LISTEN:
                found.append(_parse_proc_address(fields[1]))
    return found


def is_listening(port: int, host: str | None = "127.0.0.1") -> bool:
    """Whether a connect to host:port would find a listener: one bound to host
    itself or to the wildcard address (host None: any address)."""
    if host is None:
        return any(p == port for _, p in listening_sockets())
    accepted = {host}
    if ":" in host:
        accepted.add("::")
    else:
        accepted |= {"0.0.0.0", "::", f"::ffff:{host}"}
    return any(p == port and addr in accepted for addr, p in listening_sockets())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on, that host:port can be bound now, and
    that no fixture of this test run has handed out before (the tests find
    their events by this port)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            port = bind_unused_port(probe, host)
        if not is_listening(port, None):
            return port
    raise RuntimeError(f"no free port in {TEST_PORT_RANGE} on {host}")


def wait_listening(port: int, host: str | None = "127.0.0.1", timeout: float = 5.0,
                   present: bool = True) -> bool:
    """Whether is_listening(port, host) became present (False: became absent)
    within timeout, polling."""
    deadline = time.monotonic() + timeout
    while is_listening(port, host) != present:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Sshd:
    """OpenSSH on host:port (port 0: a free one; 443 works too, as root)."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", start_timeout: float = 10.0):
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self._log_fh = None

    # -- paths inside the temporary directory
    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def client_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def log_path(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __enter__(self) -> "Sshd":
        self.dir = Path(tempfile.mkdtemp(prefix="egress-guard-sshd-"))
        try:
            for key in (self.host_key, self.client_key):
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                                "egress-guard-test", "-f", str(key)],
                               check=True, capture_output=True, timeout=30)
            shutil.copy(self.client_key.with_suffix(".pub"), self.dir / "authorized_keys")
            # sshd's privilege separation directory; left in place, it is harmless
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write_config(self) -> None:
        listen = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        self.config.write_text(f"""\
ListenAddress {listen}
HostKey {self.host_key}
PidFile {self.dir / "sshd.pid"}
AuthorizedKeysFile {self.dir / "authorized_keys"}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
GatewayPorts no
UseDNS no
PrintMotd no
LogLevel VERBOSE
""")

    def _start(self) -> None:
        choose = self.port == 0
        for _attempt in range(5 if choose else 1):
            if choose:
                self.port = free_port(self.host)
            self._write_config()
            self._log_fh = open(self.log_path, "ab")
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=self._log_fh,
                                         stderr=self._log_fh)
            if self._wait_ready():
                return
            end_tree(self.proc)
            self._log_fh.close()
            if not choose or "Address already in use" not in self.log():
                break
        raise RuntimeError(f"sshd did not start on {self.host}:{self.port}: {self.log()[-2000:]}")

    def _wait_ready(self) -> bool:
        """True once sshd answers with its banner; False if it exits or times out."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as probe:
                    if probe.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def log(self) -> str:
        """What sshd has written so far (LogLevel VERBOSE, on its stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, TypeError):
            return ""

    def client_argv(self, *extra: str, user: str = "root") -> list[str]:
        """ssh with this server's client key and options that never prompt;
        extra comes after the destination: options (OpenSSH reads options that
        follow the destination) and/or the remote command."""
        return ["ssh", "-F", "/dev/null", "-i", str(self.client_key), "-p", str(self.port),
                "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5", "-o", "ExitOnForwardFailure=yes",
                f"{user}@{self.host}", *extra]

    def autossh_argv(self, *extra: str, user: str = "root") -> list[str]:
        """autossh (no monitor port: -M 0) around client_argv's ssh arguments.
        Run it with AUTOSSH_GATETIME=0 in the environment so a first failure
        is retried rather than fatal."""
        return ["autossh", "-M", "0", *self.client_argv(*extra, user=user)[1:]]

    def close(self) -> None:
        if self.proc is not None:
            end_tree(self.proc)       # the listener and every per-connection sshd
            self.proc = None
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
