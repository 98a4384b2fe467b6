# SPDX-License-Identifier: Apache-2.0
"""One noisy sandbox cannot hide another's events (issue 16, point 3): while
the ring is at least half full a workload gets a sixteenth of it per 100 ms
and the rest of its records are shed, counted against it and named in the
`loss` event; a quiet workload's records still get in."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess

RING = 65536

#: waits for a line on stdin (started, and judged at its exec, while the
#: agent still runs), then makes connect events as fast as it can
STORM = """
import socket, sys
sys.stdin.readline()
for i in range(int(sys.argv[2])):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        pass
    s.close()
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_storm_is_shed_and_named_and_a_quiet_workload_still_reports():
    port = closed_port()
    with TempCgroup("egress-guard-noisy") as noisy, TempCgroup("egress-guard-quiet") as quiet:
        # every connect a record (no folding): the storm is of records, as a
        # workload's storm of distinct destinations or execs would be
        with AgentProcess([str(noisy.path), str(quiet.path)],
                          extra=["--ring-size", str(RING), "--fold-window-ms", "0"]) as agent:
            storms = {cg: cg.popen([sys.executable, "-c", STORM, str(port), str(count)],
                                   stdin=subprocess.PIPE)
                      for cg, count in ((noisy, 4000), (quiet, 20))}
            for cg in storms:
                agent.wait_for(lambda e, cg=cg: e["kind"] == "exec" and e["cgroup"]["id"] == cg.id)
            time.sleep(0.5)                            # their exec verdicts are given
            agent.proc.send_signal(signal.SIGSTOP)     # nobody reads: the ring fills
            try:
                for proc in storms.values():           # the storm first, then the quiet one
                    proc.stdin.write(b"go\n")
                    proc.stdin.close()
                    assert proc.wait(timeout=60) == 0
            finally:
                agent.proc.send_signal(signal.SIGCONT)
            loss = agent.wait_for(lambda e: e["kind"] == "loss", timeout=15)
            deadline = time.monotonic() + 15
            while True:
                quiet_connects = [e for e in agent.drain() if e["kind"] == "connect"
                                  and e["cgroup"]["id"] == quiet.id]
                if len(quiet_connects) >= 20 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            time.sleep(1.5)     # the next loss report, if any, is in too
            agent.drain()
        losses = [e for e in agent.events if e["kind"] == "loss"]
        assert len(quiet_connects) == 20, (losses, len([e for e in agent.events if e["kind"] == "connect"]))
        assert loss["shed"] > 0 and loss["shed_total"] >= loss["shed"]
        named = {w["cgroup"]["id"]: w for w in loss["workloads"]}
        assert named[noisy.id]["shed"] > 0
        assert quiet.id not in named               # it lost nothing
        noisy_connects = [e for e in agent.events
                          if e["kind"] == "connect" and e["cgroup"]["id"] == noisy.id]
        # what the storm got in, and what it was told it lost, add up to the storm
        lost = sum(e["shed"] + e["lost"] for e in agent.events if e["kind"] == "loss")
        assert len(noisy_connects) + lost >= 4000
