# SPDX-License-Identifier: Apache-2.0
"""A TCP flow between its SYN and its first payload (bpf/flow.bpf.c,
eg_flow_opening; issue 16, point 2). It allocates nothing: it holds the
slot its socket cookie names, with who opened it, and gives it back at its
first payload, its server's first bytes or its close. When its slot is
taken by another socket the flow gets its socket storage at the SYN and is
watched all the same: a taken slot is never taken from its socket, and no
flow goes unwatched."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import pytest

from guard.kernel import libbpf

from .agentproc import ROOT, GuardedCgroup, held_map
from .netfixtures import RecordingServer

NETCLIENT = [sys.executable, str(ROOT / "tests/kernel/netclient.py")]
STRATUM = ROOT / "tests/fixtures/payloads/stratum-v1.cpuminer.bin"
#: no socket cookie reaches these: the kernel counts its cookies from 1
FOREIGN = 1 << 62

POLICY = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: opening
spec:
  defaultAction: allow
  detections:
    stratum: block
"""

#: makes argv[2] silent connections to port argv[1] (SO_LINGER 0), then one
#: more that stays silent; prints its pid, closes it at a line on stdin
SILENT = """
import os, socket, struct, sys
port = int(sys.argv[1])
for _ in range(int(sys.argv[2])):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
s = socket.create_connection(("127.0.0.1", port))
print(os.getpid(), flush=True)
sys.stdin.readline()
s.close()
print("closed", flush=True)
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    policy = tmp_path_factory.mktemp("opening") / "policy.yaml"
    policy.write_text(POLICY)
    guard = GuardedCgroup(policy, "egress-guard-opening")
    yield guard
    guard.close()


def taken_slots(map_id: int) -> list[dict]:
    """The slots some socket holds, as bpftool formats them from BTF."""
    dump = json.loads(subprocess.run(["bpftool", "-j", "map", "dump", "id", str(map_id)],
                                     capture_output=True, text=True, check=True).stdout)
    return [e["formatted"]["value"] for e in dump if e["formatted"]["value"]["cookie"]]


def slots_of(map_id: int, pid: int) -> list[dict]:
    return [s for s in taken_slots(map_id) if s["state"]["tgid"] == pid]


def wait_given_back(map_id: int, pid: int, what: str) -> None:
    deadline = time.monotonic() + 5
    while slots_of(map_id, pid):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@contextlib.contextmanager
def silent_client(guarded, port: int, before: int = 0):
    """SILENT in the guarded cgroup: yields its pid while its connection is
    open and silent; closes it on leaving."""
    client = guarded.cg.popen([sys.executable, "-c", SILENT, str(port), str(before)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield int(client.stdout.readline())
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "closed"
        assert client.wait(timeout=10) == 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


def test_a_silent_connection_holds_its_slot_with_its_opener_and_gives_it_back(guarded):
    map_id = held_map(guarded.agent.proc.pid, "eg_flow_opening")["id"]
    with RecordingServer() as server:
        with silent_client(guarded, server.port, before=200) as pid:
            mine = slots_of(map_id, pid)
            # the 200 connections before it gave their slots back at their close
            assert len(mine) == 1, mine
            state = mine[0]["state"]
            assert state["cgroup_id"] == state["guarded_id"] == guarded.cg.id
            assert state["ppid"] == os.getpid()
            assert state["start_ns"] > 0
            assert state["comm"].startswith("python"), state
    wait_given_back(map_id, pid, "the closed socket kept its slot")


def test_a_server_that_speaks_first_takes_the_slot_back(guarded):
    """The server's first bytes give a silent flow its storage (they are
    sampled as a server-first flow) and its slot back, before its close."""
    map_id = held_map(guarded.agent.proc.pid, "eg_flow_opening")["id"]
    with RecordingServer(greeting=b"SSH-2.0-OpenSSH_9.2\r\n") as server:
        with silent_client(guarded, server.port) as pid:
            wait_given_back(map_id, pid, "the greeting left the slot taken")


def test_a_flow_whose_slot_is_taken_is_watched_all_the_same(guarded):
    """Every free slot taken by a socket that is not there: each new flow
    gets its socket storage at its SYN, a miner's first payload is held and
    refused as always, and no taken slot is given to another socket."""
    info = held_map(guarded.agent.proc.pid, "eg_flow_opening")
    fd = libbpf.map_fd_by_id(info["id"])
    value_size = info["bytes_value"]
    held = {s["cookie"] % info["max_entries"] for s in taken_slots(info["id"])}
    filled = []
    try:
        for index in range(info["max_entries"]):
            if index in held:
                continue   # a real socket's
            value = (FOREIGN + index).to_bytes(8, "little") + bytes(value_size - 8)
            libbpf.map_update_packed(fd, index.to_bytes(4, "little"), value)
            filled.append(index)
        assert len(filled) > info["max_entries"] - 64
        with RecordingServer(reply=b'{"id":1,"result":true}\n') as pool:
            result = guarded.cg.run(NETCLIENT + ["--connect", f"127.0.0.1:{pool.port}",
                                                 "--send-file", str(STRATUM), "--hold", "1.0"])
            assert result.returncode == 0, result.stderr
            outcome = json.loads(result.stdout)
            event = guarded.agent.wait_for(
                lambda e: e.get("kind") == "detection"
                and (e.get("dst") or {}).get("port") == pool.port, timeout=10)
            time.sleep(0.2)
            assert pool.received() == b""
        assert outcome["connected"] is True and outcome["received"] == 0, outcome
        assert event["action"] == "block"
        foreign = {s["cookie"] for s in taken_slots(info["id"]) if s["cookie"] >= FOREIGN}
        assert foreign == {FOREIGN + index for index in filled}
    finally:
        zero = bytes(value_size)
        for index in filled:
            libbpf.map_update_packed(fd, index.to_bytes(4, "little"), zero)
        os.close(fd)
