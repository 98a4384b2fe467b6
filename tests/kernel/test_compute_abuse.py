# SPDX-License-Identifier: Apache-2.0
"""Mining by behaviour (issue 17, point 1): a workload that keeps a core busy
while a long-lived flow of its own carries small periodic uploads is a
`stratum` finding (dialect compute-correlation), whatever its bytes are: here
they look like TLS application data, which no content signature can read."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess
from .netfixtures import RecordingServer
from .tunnelstandins import client_hello

#: a core kept busy for as long as it runs
BURNER = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\n" \
         "while time.monotonic() < end:\n    pass\n"

#: opaque "shares": 5-byte TLS record headers and 200 bytes, every 0.4 s;
#: exits 3 when its flow is taken away
UPLOADER = r"""
import os, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
if len(sys.argv) > 3:
    s.sendall(bytes.fromhex(sys.argv[3]))      # a first payload of its own
end = time.monotonic() + float(sys.argv[2])
try:
    while time.monotonic() < end:
        s.sendall(b"\x17\x03\x03\x00\xc8" + os.urandom(200))
        time.sleep(0.4)
except OSError:
    sys.exit(3)
"""

POLICY = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: compute-{action}
spec:
  defaultAction: allow
  detections:
    stratum: {action}
"""


def busy_with_a_flow(tmp_path: Path, action: str, first: bytes | None = None,
                     seconds: int = 20) -> tuple[dict, int, int, int]:
    """A guarded cgroup with a core kept busy and the uploader's flow to a
    local server: (the compute-correlation detection, the uploader's exit
    code, its pid, the server's port)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(action=action))
    extra = [first.hex()] if first is not None else []
    with TempCgroup("egress-guard-compute") as cg, RecordingServer(reply=b"ok") as pool:
        with AgentProcess([str(cg.path)], policy=policy,
                          extra=["--compute-sample-s", "1"]) as agent:
            burner = cg.popen([sys.executable, "-c", BURNER, "20"])
            uploader = cg.popen([sys.executable, "-c", UPLOADER, str(pool.port), str(seconds),
                                 *extra], stderr=subprocess.DEVNULL)
            try:
                event = agent.wait_for(lambda e: e["kind"] == "detection"
                                       and e["detection"]["dialect"] == "compute-correlation",
                                       timeout=20)
                code = uploader.wait(timeout=25)
            finally:
                for proc in (burner, uploader):
                    if proc.poll() is None:
                        proc.kill()
                    proc.wait(timeout=10)
    return event, code, uploader.pid, pool.port


@pytest.mark.parametrize("action", ["block", "log"])
def test_a_busy_workload_with_a_share_like_flow_is_mining(tmp_path: Path, action):
    event, code, pid, port = busy_with_a_flow(tmp_path, action)
    evidence = event["detection"]["evidence"]
    assert event["detection"]["type"] == "stratum"
    assert evidence["remote"] == f"127.0.0.1:{port}"
    assert min(evidence["cpu_cores"]) >= 0.5
    assert all(0 <= n <= 16 * 1024 for n in evidence["uploads_bytes"])
    assert event["dst"]["port"] == port
    assert event["process"]["pid"] == pid
    if action == "block":
        assert event["action"] == "block" and code == 3    # its flow was reset
    else:
        assert event["action"] == "log" and code == 0


def test_a_flow_that_names_its_host_is_only_a_hint(tmp_path: Path):
    """A busy job reporting metrics to a named service over TLS has the same
    shape: its ClientHello names the host, so the finding is low and only
    logged (a miner's TLS to a pool address names none)."""
    event, code, _pid, _port = busy_with_a_flow(tmp_path, "block",
                                                first=client_hello("metrics.example"),
                                                seconds=12)
    assert event["detection"]["confidence"] == "low"
    assert event["detection"]["evidence"]["first_payload_host"] == "metrics.example"
    assert event["action"] == "log" and code == 0          # not reset: a hint only
