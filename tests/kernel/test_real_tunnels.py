# SPDX-License-Identifier: Apache-2.0
"""Issue 17, tunnels: the real clients, renamed, against self-hosted servers.

- localtunnel 2.0.2 (its npm package): its `lt` script copied to
  `bin/helper.js` of a directory with an innocent name, run as
  `node .../helper.js --host http://<test host>:<port>` in a guarded cgroup
  with a web service (python http.server) beside it. The server is a
  minimal localtunnel server on a test host (a network namespace, 198.18/15):
  it answers the setup request `GET /?new` with the JSON of lib/Tunnel.js
  (id, port, max_conn_count, url), then sends an HTTP request first on the
  client's data connection, as localtunnel servers do, and records what comes
  back: the sandbox service's answer.
- httptunnel (Debian's httptunnel): `hts` on a test host forwarding to an
  echo service there, a copy of `htc` under an innocent name in the guarded
  cgroup (`-F LOCALPORT host:port`); the test writes into the tunnel.

Renamed, neither is known at exec; both are known on the wire (localtunnel
by its setup request, its server's request first on the data connection and
the sandbox's response first; htc by `POST /index.html?crap=`). Under its own
name each is stopped at exec. Under `tunnelTool: log` the tunnel works and
the events name it; under `block` the renamed client is killed (localtunnel)
or its flows reset (htc), and nothing crosses after the verdict.

Before the verdict nothing crosses either: under an enforcing tunnelTool the
kernel holds a tunnel's open (localtunnel's `GET /?new`, httptunnel's
`/index.html?crap=`) and the sandbox's first payload on a flow whose server
spoke first until the agent has judged it (the tests at the end stop the
agent to show it: the real clients cross in 3-10 ms otherwise).
"""
from __future__ import annotations

import contextlib
import json
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from guard.demo.sandbox import TestHost

from .agentproc import guarded_by_key
from .netfixtures import Spawned, require_tools
from .realclients import npm_install
from .sshd import free_port, is_listening

LOCALTUNNEL = "localtunnel@2.0.2"
#: What the sandbox's web service holds: it must never reach the tunnel
#: server under block.
SECRET = "EG-SANDBOX-SECRET-4711"
#: Programs under test run with this environment only: localtunnel's yargs
#: reads every environment variable as an option (`.env(true)`), and axios
#: honours *_proxy variables; neither may point it anywhere but the test host.
CLIENT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
SETUP_PORT = 8080       # on the test host: its own port space
DATA_PORT = 40123
HTS_PORT = 8888
ECHO_PORT = 7007
TUNNEL_HOST = "quiet-fox.own-server.test"


def policy_text(action: str) -> str:
    return f"""apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: real-tunnels-{action}
spec:
  defaultAction: allow
  detections:
    tunnelTool: {action}
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    yield from guarded_by_key(tmp_path_factory.mktemp("real-tunnels"), "egress-guard-rtun",
                              policy_text)


@pytest.fixture
def spawned():
    with Spawned() as procs:
        yield procs


@pytest.fixture
def test_host():
    with TestHost() as host:
        yield host


# --------------------------------------------------------------------------
# The far end: a program run inside the test host's namespace

#: `lt DATA_PORT SETUP_PORT`: a minimal localtunnel server. `echo PORT`: an
#: echo service. Prints one JSON line per thing it saw.
FAR_END = r"""
import json, socket, sys, threading, time

def say(**event):
    event["t"] = time.monotonic()       # CLOCK_MONOTONIC: the test's clock too
    print(json.dumps(event), flush=True)

def listen(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    return s

def serve(sock, handler):
    def loop():
        while True:
            conn, peer = sock.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()

def read_all(conn, limit=65536, timeout=8.0):
    conn.settimeout(timeout)
    data, error = b"", None
    try:
        while len(data) < limit:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        error = "timeout"
    except OSError as exc:
        error = type(exc).__name__
    return data, error

def lt(data_port, setup_port, tunnel_host, path):
    def setup(conn):
        conn.settimeout(10)
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
        except OSError as exc:
            say(ev="setup", request=head.decode("latin-1")[:300], error=type(exc).__name__)
            return
        say(ev="setup", request=head.decode("latin-1")[:300])
        if not head.startswith(b"GET /?new "):
            conn.close()
            return
        body = json.dumps({"id": "quiet-fox", "port": data_port, "max_conn_count": 1,
                           "url": "http://" + tunnel_host}).encode()
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            time.sleep(0.5)
        except OSError as exc:
            say(ev="setup_reply", error=type(exc).__name__)
        conn.close()

    served = []

    def data(conn):
        say(ev="data_conn")
        if served:          # the client keeps a connection ready: hold it idle, as
            time.sleep(600) # a server with one request to send does (no reconnect storm)
            return
        served.append(conn)
        request = ("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: curl/8.0\r\n"
                   "Connection: close\r\n\r\n" % (path, tunnel_host)).encode()
        try:
            conn.sendall(request)
        except OSError as exc:
            say(ev="response", data="", error=type(exc).__name__)
            return
        got, error = read_all(conn)
        say(ev="response", data=got.decode("latin-1")[:2000], error=error)
        conn.close()
    serve(listen(setup_port), setup)
    serve(listen(data_port), data)

def echo(port):
    def handle(conn):
        conn.settimeout(30)
        total = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                total += chunk
                conn.sendall(b"ECHO:" + chunk)
                say(ev="echo", data=total.decode("latin-1")[:2000])
        except OSError as exc:
            say(ev="echo_error", error=type(exc).__name__)
        conn.close()
    serve(listen(port), handle)

if sys.argv[1] == "lt":
    lt(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
else:
    echo(int(sys.argv[2]))
say(ev="listening")
time.sleep(600)
"""


class FarEnd:
    """A program running in the test host's namespace, and the JSON lines it prints."""

    def __init__(self, host: TestHost, spawned: Spawned, argv: list[str]):
        name = host.name

        def enter() -> None:
            from pyroute2 import netns
            netns.setns(name)
        self.proc = spawned.popen(argv, preexec_fn=enter, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        self.events: list[dict] = []
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self._lines.put(json.loads(line))
            except ValueError:
                self._lines.put({"ev": "<unparsed>", "line": line[:200]})

    def _drain(self) -> None:
        while True:
            try:
                self.events.append(self._lines.get_nowait())
            except queue.Empty:
                return

    def wait_for(self, predicate, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            for event in self.events:
                if predicate(event):
                    return event
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def seen(self, ev: str) -> list[dict]:
        self._drain()
        return [e for e in self.events if e["ev"] == ev]


def far_end(host: TestHost, spawned: Spawned, tmp: Path, *args: str) -> FarEnd:
    script = tmp / "far_end.py"
    script.write_text(FAR_END)
    end = FarEnd(host, spawned, ["/usr/bin/python3", str(script), *args])
    assert end.wait_for(lambda e: e["ev"] == "listening", timeout=10), end.events
    return end


def detections(agent, kind: str = "tunnel_tool", pids: set[int] | None = None) -> list[dict]:
    return [e for e in agent.drain() if e.get("kind") == "detection"
            and e["detection"]["type"] == kind
            and (pids is None or e["process"]["pid"] in pids)]


def trail(agent, pids: set[int]) -> list[tuple]:
    """What the guard saw of these processes, short: for assertion messages."""
    return [(e["kind"], e.get("action"), (e.get("detection") or {}).get("dialect"),
             ((e.get("detection") or {}).get("evidence") or {}).get("signal"),
             (e.get("dst") or {}).get("port"))
            for e in agent.drain() if e.get("kind") in ("detection", "connect", "exec")
            and e.get("process", {}).get("pid") in pids]


def wait_detection(agent, pids: set[int], predicate, timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in detections(agent, pids=pids):
            if predicate(event):
                return event
        time.sleep(0.05)
    return None


def exited(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


# --------------------------------------------------------------------------
# localtunnel


@pytest.fixture(scope="module")
def localtunnel_scripts(tmp_path_factory) -> dict[str, Path]:
    """localtunnel 2.0.2 from npm (cached). "renamed": laid out under
    innocent names, APP/bin/helper.js is its bin/lt.js unchanged and
    APP/node_modules holds its dependencies, so nothing in the argv says
    localtunnel; "named": its own bin/lt.js in the cache."""
    require_tools("node")
    modules = npm_install(LOCALTUNNEL, "localtunnel")
    # the default server is localtunnel.me: every run here passes --host
    assert "https://localtunnel.me" in (modules / "localtunnel/lib/Tunnel.js").read_text()
    app = tmp_path_factory.mktemp("webapp") / "dev-helper"
    shutil.copytree(modules / "localtunnel", app)
    shutil.copytree(modules, app / "node_modules",
                    ignore=shutil.ignore_patterns("localtunnel", ".package-lock.json"))
    (app / "bin" / "lt.js").rename(app / "bin" / "helper.js")
    return {"renamed": app / "bin" / "helper.js",
            "named": modules / "localtunnel" / "bin" / "lt.js"}


def start_web_service(cg, spawned: Spawned, root: Path) -> int:
    (root / "secret.txt").write_text(SECRET + "\n")
    port = free_port()
    proc = spawned.adopt(cg.popen(["/usr/bin/python3", "-m", "http.server", str(port),
                                   "--bind", "127.0.0.1", "--directory", str(root)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=CLIENT_ENV))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port
        except OSError:
            assert proc.poll() is None, "the sandbox web service did not start"
            time.sleep(0.05)
    raise AssertionError("the sandbox web service never listened")


def run_localtunnel(guarded, action: str, helper: Path, test_host: TestHost, spawned: Spawned,
                    tmp: Path):
    cg, agent = guarded(action)
    web_root = tmp / "site"
    web_root.mkdir()
    web_port = start_web_service(cg, spawned, web_root)
    server = far_end(test_host, spawned, tmp, "lt", str(DATA_PORT), str(SETUP_PORT),
                     TUNNEL_HOST, "/secret.txt")
    client = spawned.adopt(cg.popen(
        ["/usr/bin/node", str(helper), "--host", f"http://{test_host.ip}:{SETUP_PORT}",
         "--port", str(web_port), "--local-host", "127.0.0.1"],
        cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(CLIENT_ENV, HOME=str(tmp))))
    return cg, agent, server, client


@pytest.mark.parametrize("form", ["renamed", "named"])
def test_localtunnel_block_the_tunnel_is_refused(guarded, localtunnel_scripts, form, test_host,
                                                 spawned, tmp_path):
    """renamed: nothing at exec; its setup request `GET /?new` is the
    finding, and block kills it (the tunnel would come over new flows): no
    data connection after the verdict. Whether the service's answer crossed
    before it: held until the verdict (the tests at the end).
    named (`node .../lt.js`): stopped at exec, its connects refused: the
    server hears nothing at all, whatever the agent's speed."""
    cg, agent, server, client = run_localtunnel(guarded, "block", localtunnel_scripts[form],
                                                test_host, spawned, tmp_path)
    pids = {client.pid}
    event = wait_detection(agent, pids, lambda e: True, timeout=10)
    assert event is not None, (
        f"tunnelTool=block: no tunnel_tool detection for localtunnel ({form}); "
        f"the guard saw {trail(agent, pids)}; the server saw {server.events}")
    assert event["detection"]["dialect"] == "localtunnel", event["detection"]
    code = exited(client, timeout=3)
    if form == "renamed":
        assert event["detection"]["evidence"]["signal"] == "setup_request", event["detection"]
        # block is carried out as kill (BLOCK_BYPASS), and the event says why
        assert event["action"] == "kill", event
        assert event["detection"]["evidence"]["enforced_by"].startswith("kill: "), event
        assert event["dst"] == {"ip": test_host.ip, "port": SETUP_PORT, "proto": "tcp"}
        assert code == -signal.SIGKILL, code
        killed_at = time.monotonic()
        time.sleep(1.0)             # localtunnel would reconnect within this
        assert [e for e in server.seen("data_conn") if e["t"] > killed_at] == [], server.events
        # the setup request was held in the kernel and dropped: never heard
        assert server.seen("setup") == [], server.events
    else:
        assert event["dst"] is None, event          # judged at exec, before any connect
        assert event["action"] in ("block", "kill"), event
        assert event["process"]["argv"][1].endswith("/bin/lt.js"), event["process"]
        time.sleep(2.0)             # axios retries its setup request every second
        assert server.seen("setup") == [] and server.seen("data_conn") == [], server.events


def test_localtunnel_renamed_log_the_tunnel_works_and_is_reported(guarded, localtunnel_scripts,
                                                                  test_host, spawned,
                                                                  tmp_path):
    cg, agent, server, client = run_localtunnel(guarded, "log", localtunnel_scripts["renamed"],
                                                test_host, spawned, tmp_path)
    pids = {client.pid}
    answered = server.wait_for(lambda e: e["ev"] == "response" and SECRET in e["data"],
                               timeout=15)
    assert answered is not None, (client.poll(), server.events, trail(agent, pids))
    assert answered["data"].startswith("HTTP/1."), answered
    setup = server.seen("setup")[0]["request"]
    assert setup.startswith("GET /?new HTTP/1.1"), setup
    # both halves are findings: the setup request (sampled from the client) and
    # the server's request first on the data connection (SERVER_FIRST)
    want = {("localtunnel", "setup_request"), ("reverse-http", "request_from_server")}
    deadline = time.monotonic() + 5
    seen: set = set()
    while time.monotonic() < deadline and not want <= seen:
        seen = {(e["detection"]["dialect"], e["detection"]["evidence"].get("signal"))
                for e in detections(agent, pids=pids)}
        time.sleep(0.05)
    assert want <= seen, (seen, trail(agent, pids))
    found = detections(agent, pids=pids)
    assert all(e["action"] == "log" for e in found), [e["action"] for e in found]
    data_event = next(e for e in found if e["detection"]["dialect"] == "reverse-http")
    assert data_event["detection"]["evidence"]["host"] == TUNNEL_HOST
    assert data_event["dst"]["ip"] == test_host.ip and data_event["dst"]["port"] == DATA_PORT
    assert client.poll() is None, "under log the client keeps running"


# --------------------------------------------------------------------------
# httptunnel

#: The name htc runs under in the sandbox.
HTC_INNOCENT = "sync-agent"
PROBE = b"EG-THROUGH-THE-TUNNEL-0042\n"
LATER_PROBE = b"EG-AFTER-THE-VERDICT-0043\n"


@pytest.fixture(scope="module")
def htc_programs(tmp_path_factory) -> dict[str, Path]:
    """"renamed": a copy of Debian's htc under an innocent name; "named": htc."""
    tools = require_tools("htc", "hts")
    path = tmp_path_factory.mktemp("bin") / HTC_INNOCENT
    shutil.copy2(tools["htc"], path)
    return {"renamed": path, "named": Path(tools["htc"])}


def run_httptunnel(guarded, action: str, htc: Path, test_host: TestHost, spawned: Spawned,
                   tmp: Path):
    """hts on the test host forwarding to its echo service; the renamed htc
    in the guarded cgroup; returns once htc listens on its local port."""
    cg, agent = guarded(action)
    echo = far_end(test_host, spawned, tmp, "echo", str(ECHO_PORT))
    name = test_host.name

    def enter() -> None:
        from pyroute2 import netns
        netns.setns(name)
    hts = spawned.popen([shutil.which("hts"), "-w", "-F", f"127.0.0.1:{ECHO_PORT}",
                         f"0.0.0.0:{HTS_PORT}"], preexec_fn=enter,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    local = free_port()
    client = spawned.adopt(cg.popen([str(htc), "-w", "-F", str(local),
                                     f"{test_host.ip}:{HTS_PORT}"], cwd=tmp,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env=dict(CLIENT_ENV, HOME=str(tmp))))
    deadline = time.monotonic() + 10
    while not is_listening(local, None):        # a probe connect would open a tunnel
        if client.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"htc never listened: {client.poll()} "
                                 f"{client.stderr.read()[-300:] if client.poll() else ''}")
        time.sleep(0.05)
    return cg, agent, echo, hts, client, local


def use_tunnel(local: int, wait: float, probe: bytes = PROBE) -> tuple[bytes, str | None]:
    """Write probe into the tunnel's local end; what came back within wait."""
    got, error = b"", None
    try:
        with socket.create_connection(("127.0.0.1", local), timeout=3) as conn:
            conn.sendall(probe)
            conn.settimeout(wait)
            deadline = time.monotonic() + wait
            while probe not in got and time.monotonic() < deadline:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                got += chunk
    except TimeoutError:
        error = "timeout"
    except OSError as exc:
        error = type(exc).__name__
    return got, error


@pytest.mark.parametrize("form", ["renamed", "named"])
def test_httptunnel_block_the_tunnel_carries_nothing_after_the_verdict(
        guarded, htc_programs, form, test_host, spawned, tmp_path):
    """renamed: nothing at exec; its request `POST /index.html?crap=` is the
    finding, its flows are dropped and reset: nothing written into the tunnel
    after the verdict reaches the service behind hts (nor before it: the
    request is held until the verdict, the test at the end).
    named: stopped at exec, its connects refused: nothing ever crosses."""
    cg, agent, echo, hts, client, local = run_httptunnel(guarded, "block", htc_programs[form],
                                                         test_host, spawned, tmp_path)
    pids = {client.pid}
    first, _ = use_tunnel(local, wait=1, probe=PROBE)
    event = wait_detection(agent, pids, lambda e: e["detection"]["dialect"] == "httptunnel",
                           timeout=5)
    assert event is not None, (
        f"tunnelTool=block: no httptunnel detection for htc ({form}); the guard "
        f"saw {trail(agent, pids)}")
    assert event["action"] == "block", event
    assert event["process"]["argv"][0] == str(htc_programs[form]), event["process"]
    later, error = use_tunnel(local, wait=2, probe=LATER_PROBE)
    crossed = [e for e in echo.seen("echo") if LATER_PROBE.decode().strip() in e["data"]]
    assert crossed == [] and LATER_PROBE not in later, (
        f"tunnelTool=block, yet after the verdict htc ({form}) carried data to the echo "
        f"service behind hts: {crossed!r}, back: {later!r}; the guard saw (kind, action, "
        f"dialect, signal, port): {trail(agent, pids)}")
    if form == "renamed":
        evidence = event["detection"]["evidence"]
        assert evidence["signal"] == "request", evidence
        assert evidence["request_line"].startswith(
            ("POST /index.html?crap=", "GET /index.html?crap=", "PUT /index.html?crap=")), evidence
        assert event["dst"] == {"ip": test_host.ip, "port": HTS_PORT, "proto": "tcp"}
    else:
        assert event["dst"] is None, event          # judged at exec
        assert event["detection"]["evidence"].get("server") == f"{test_host.ip}:{HTS_PORT}", event
        assert PROBE not in first and echo.seen("echo") == [], (first, echo.events)


def test_httptunnel_renamed_htc_log_the_tunnel_works_and_is_reported(guarded, htc_programs,
                                                                     test_host, spawned,
                                                                     tmp_path):
    cg, agent, echo, hts, client, local = run_httptunnel(guarded, "log",
                                                         htc_programs["renamed"], test_host,
                                                         spawned, tmp_path)
    pids = {client.pid}
    got, error = use_tunnel(local, wait=8)
    assert b"ECHO:" + PROBE in got, (got, error, echo.events, trail(agent, pids))
    event = wait_detection(agent, pids, lambda e: e["detection"]["dialect"] == "httptunnel",
                           timeout=5)
    assert event is not None, trail(agent, pids)
    assert event["action"] == "log"
    assert event["detection"]["confidence"] == "high"
    assert event["dst"]["ip"] == test_host.ip and event["dst"]["port"] == HTS_PORT
    channels = {e["detection"]["evidence"].get("channel")
                for e in detections(agent, pids=pids)
                if e["detection"]["dialect"] == "httptunnel"}
    assert "out" in channels, channels      # htc's POST: the sandbox-to-server direction


# --------------------------------------------------------------------------
# An agent that is slower than the tunnel

#: How long the agent is stopped: an agent behind by this much (a burst of
#: events, a loaded host) is what these tests stand for.
SLOW_AGENT_S = 1.0
@contextlib.contextmanager
def agent_stopped(agent):
    """The agent frozen (SIGSTOP, by its pid) for the block's duration: only what
    the kernel holds on its own still stops the tunnel."""
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        agent.proc.send_signal(signal.SIGCONT)


def test_localtunnel_renamed_block_holds_while_the_agent_is_behind(guarded, localtunnel_scripts,
                                                                  test_host, spawned, tmp_path):
    cg, agent = guarded("block")
    with agent_stopped(agent):
        cg, agent, server, client = run_localtunnel(guarded, "block",
                                                    localtunnel_scripts["renamed"], test_host,
                                                    spawned, tmp_path)
        server.wait_for(lambda e: e["ev"] == "response" and SECRET in e["data"],
                        timeout=SLOW_AGENT_S)
    pids = {client.pid}
    event = wait_detection(agent, pids, lambda e: True, timeout=10)
    assert event is not None and event["action"] == "kill", trail(agent, pids)
    assert exited(client, timeout=5) == -signal.SIGKILL     # the verdict lands, late
    leaked = [e for e in server.seen("response") if SECRET in e["data"]]
    setup = server.seen("setup")
    assert leaked == [], (
        f"tunnelTool=block: with the agent {SLOW_AGENT_S} s behind, the sandbox service's "
        f"answer reached the tunnel server {len(leaked)} time(s), the first "
        f"{leaked[0]['t'] - setup[0]['t']:.3f} s after the setup request; the guard saw "
        f"{trail(agent, pids)[:4]}")


def test_httptunnel_renamed_block_holds_while_the_agent_is_behind(guarded, htc_programs,
                                                                 test_host, spawned, tmp_path):
    cg, agent = guarded("block")
    with agent_stopped(agent):
        cg, agent, echo, hts, client, local = run_httptunnel(guarded, "block",
                                                             htc_programs["renamed"],
                                                             test_host, spawned, tmp_path)
        sent = time.monotonic()
        got, error = use_tunnel(local, wait=SLOW_AGENT_S)
    pids = {client.pid}
    event = wait_detection(agent, pids, lambda e: e["detection"]["dialect"] == "httptunnel",
                           timeout=10)
    assert event is not None and event["action"] == "block", trail(agent, pids)
    crossed = [e for e in echo.seen("echo") if PROBE.decode().strip() in e["data"]]
    assert crossed == [] and PROBE not in got, (
        f"tunnelTool=block: with the agent {SLOW_AGENT_S} s behind, the renamed htc carried "
        f"data to the echo service behind hts {crossed[0]['t'] - sent:.3f} s after the "
        f"first write (back: {got!r}); the guard saw {trail(agent, pids)[:4]}")
