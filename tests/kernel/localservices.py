# SPDX-License-Identifier: Apache-2.0
"""Real services a real workload fetches from, inside a test network
namespace (the TestResolver's, dnsfixtures.py), for the suggest -> test
round trip (issue 18): a Python package index and a git server.

    PackageIndex  `python -m http.server` serving a PEP 503 simple index of
                  one wheel written here (a zip by hand: no build, no network)
    GitServer     `git daemon --export-all` on 9418 serving one bare repository
                  with one commit

Each runs in the namespace through `ip netns exec`, listens on one address
there, and on exit is ended with everything it started (by pid, through
netfixtures.Spawned); its files live in a directory the caller owns. The
clients (`pip_argv`, `git_clone_argv`) run under `clean_env`: no proxies,
no user or system configuration, pip's version check off, so that what
they reach is the local index and server and nothing else.
"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ..conftest import REQUIRE_KERNEL
from .netfixtures import Spawned, require_tools

__all__ = ["PackageIndex", "GitServer", "build_wheel", "clean_env", "pip_argv",
           "git_clone_argv", "require", "GIT_PORT", "TOOLS"]

#: What a test needs installed for these services and their clients.
TOOLS = ("git", "ip")
#: The git protocol's own port (git daemon's default).
GIT_PORT = 9418
#: Every wait here gives up after this long, naming what it waited for.
START_TIMEOUT = 10.0


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def build_wheel(directory: Path, name: str, version: str, value: str) -> Path:
    """A pure-Python wheel (PEP 427) of package `name` whose module
    (`name` with '-' as '_') holds VALUE = value; its path in directory."""
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VALUE = {value!r}\n".encode(),
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                             "Summary: egress-guard round-trip test package\n").encode(),
        f"{info}/WHEEL": (b"Wheel-Version: 1.0\nGenerator: egress-guard-tests\n"
                          b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for member, data in files.items():
            wheel.writestr(member, data)
    return path


def _listening(pid: int, ip: str, port: int) -> bool:
    """Whether a TCP socket listens on ip:port in pid's network namespace
    (its /proc/PID/net/tcp: no connection made, nothing reached by mistake)."""
    want = f"{int.from_bytes(socket.inet_aton(ip), 'little'):08X}:{port:04X}"
    try:
        with open(f"/proc/{pid}/net/tcp") as fh:
            rows = [line.split() for line in fh.readlines()[1:]]
    except OSError:
        return False
    return any(row[1] == want and row[3] == "0A" for row in rows)      # 0A: LISTEN


def _wait_listening(ip: str, port: int, proc: subprocess.Popen, what: str) -> None:
    """Return once proc's namespace has a listener on ip:port."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if _listening(proc.pid, ip, port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {ip}:{port} within {START_TIMEOUT} s")


class _NetnsService:
    """One server process in a network namespace, ended with its children on exit."""

    def __init__(self, netns: str, ip: str, port: int, directory: Path):
        self.netns, self.ip, self.port = netns, ip, port
        self.dir = directory
        self._spawned = Spawned()
        self._log = None

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _start(self, argv: list[str], what: str) -> None:
        self._log = open(self.log_path, "ab")
        proc = self._spawned.popen(["ip", "netns", "exec", self.netns, *argv],
                                   stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                   env=clean_env(self.dir))
        try:
            _wait_listening(self.ip, self.port, proc, what)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {self.log()[-2000:]}") from None

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._spawned.close()
        if self._log is not None:
            self._log.close()
            self._log = None


class PackageIndex(_NetnsService):
    """A PEP 503 simple index of one wheel, `python -m http.server` on ip:port
    in netns. `url` is the index URL for a host name; `requests()` the
    request lines the server logged."""

    def __init__(self, netns: str, ip: str, port: int, directory: Path, package: str,
                 value: str, version: str = "1.0"):
        super().__init__(netns, ip, port, directory)
        self.package, self.value, self.version = package, value, version

    def __enter__(self) -> "PackageIndex":
        try:
            (self.dir / "packages").mkdir(parents=True)
            wheel = build_wheel(self.dir / "packages", self.package, self.version, self.value)
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            project = self.dir / "simple" / self.package
            project.mkdir(parents=True)
            (self.dir / "simple" / "index.html").write_text(
                f'<!DOCTYPE html>\n<html><body><a href="{self.package}/">{self.package}</a>'
                "</body></html>\n")
            (project / "index.html").write_text(
                f'<!DOCTYPE html>\n<html><body><a href="../../packages/{wheel.name}'
                f'#sha256={digest}">{wheel.name}</a></body></html>\n')
            self._start([sys.executable, "-m", "http.server", str(self.port), "--bind", self.ip,
                         "--directory", str(self.dir)], "the package index")
        except BaseException:
            self.close()
            raise
        return self

    def url(self, host: str) -> str:
        return f"http://{host}:{self.port}/simple/"

    def requests(self) -> list[str]:
        """`GET /path` of each request served, in order."""
        return [line.split('"')[1].rsplit(" ", 1)[0] for line in self.log().splitlines()
                if line.count('"') >= 2 and '"GET ' in line]


class GitServer(_NetnsService):
    """`git daemon` on ip:9418 in netns serving `repo.git`: one commit adding
    README holding `content`."""

    def __init__(self, netns: str, ip: str, directory: Path, content: str):
        super().__init__(netns, ip, GIT_PORT, directory)
        self.content = content

    def __enter__(self) -> "GitServer":
        try:
            work = self.dir / "work"
            work.mkdir(parents=True)
            (work / "README").write_text(self.content)
            env = clean_env(self.dir)
            for argv in (["git", "init", "-q", "-b", "main", str(work)],
                         ["git", "-C", str(work), "add", "README"],
                         ["git", "-C", str(work), "-c", "user.name=egtest",
                          "-c", "user.email=egtest@egtest", "commit", "-q", "-m", "round trip"],
                         ["git", "clone", "-q", "--bare", str(work),
                          str(self.dir / "served" / "repo.git")]):
                subprocess.run(argv, env=env, check=True, capture_output=True, timeout=30)
            self._start(["git", "daemon", "--export-all", "--reuseaddr", "--informative-errors",
                         f"--base-path={self.dir / 'served'}", f"--listen={self.ip}",
                         f"--port={self.port}", str(self.dir / "served")], "git daemon")
        except BaseException:
            self.close()
            raise
        return self

    def url(self, host: str) -> str:
        return f"git://{host}/repo.git"


def clean_env(home: Path) -> dict[str, str]:
    """An environment with nothing from the caller's but PATH: no proxies, no
    pip or git configuration of the user or the system, pip's self version
    check (a request to pypi.org) off."""
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(home), "LANG": "C.UTF-8",
            "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1", "PYTHONNOUSERSITE": "1",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0"}


def _env_argv(home: Path, argv: list[str]) -> list[str]:
    """argv under clean_env, for runners that take no environment."""
    return [shutil.which("env"), "-i", *(f"{k}={v}" for k, v in clean_env(home).items()),
            *argv]


def pip_argv(home: Path, index_url: str, target: Path, package: str) -> list[str]:
    """pip installing package into target from index_url alone: no other
    index, no dependencies, wheels only, no cache; the index's host trusted
    over plain HTTP."""
    host = urlsplit(index_url).hostname
    return _env_argv(home, [sys.executable, "-m", "pip", "install", "--index-url", index_url,
                            "--trusted-host", host,
                            "--no-cache-dir", "--no-deps", "--only-binary", ":all:",
                            "--disable-pip-version-check", "--no-input", "--timeout", "10",
                            "--retries", "0", "--target", str(target), package])


def git_clone_argv(home: Path, url: str, dest: Path) -> list[str]:
    return _env_argv(home, [shutil.which("git"), "clone", "-q", url, str(dest)])


def require() -> None:
    """Skip (fail under GUARD_REQUIRE_KERNEL=1) without git, git daemon, env,
    or pip in this Python (the venv scripts/setup.sh makes has it)."""
    require_tools(*TOOLS, "env")
    exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    require_tools(str(Path(exec_path) / "git-daemon"))
    pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True,
                         text=True, env=clean_env(Path(tempfile.gettempdir())), timeout=30)
    if pip.returncode != 0:
        message = f"no pip in {sys.executable}: {pip.stderr.strip()[-300:]}"
        if REQUIRE_KERNEL:
            pytest.fail(f"GUARD_REQUIRE_KERNEL=1 but {message}", pytrace=False)
        pytest.skip(message)
