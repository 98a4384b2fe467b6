# SPDX-License-Identifier: Apache-2.0
"""The unspecified addresses (issue 17): a connect or send to 0.0.0.0, ::
or ::ffff:0.0.0.0 reaches loopback, so it is judged as loopback, not as the
literal the rules would never name."""
from __future__ import annotations

import socket

import pytest

from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess
from .conftest import Listener, try_connect

PORT = 29811
POLICY = f"""\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: unspecified
spec:
  defaultAction: allow
  egress:
    - name: no-local-service
      action: block
      to:
        - cidr: 127.0.0.1/32
          ports: [{PORT}]
        - cidr: "::1/128"
          ports: [{PORT}]
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    path = tmp_path_factory.mktemp("unspecified") / "policy.yaml"
    path.write_text(POLICY)
    with TempCgroup("eg-unspecified") as cgroup, \
            AgentProcess([cgroup.path], policy=path) as agent:
        yield agent, cgroup


@pytest.mark.parametrize("ip", ["0.0.0.0", "::", "::ffff:0.0.0.0", "127.0.0.1", "::1"])
def test_the_unspecified_address_is_judged_as_loopback(guarded, ip):
    agent, cgroup = guarded
    listener = Listener()
    try:
        listener.listen("::", PORT, family=socket.AF_INET6)   # dual-stack: every loopback
        assert try_connect(cgroup, ip, PORT) == "EPERM"
        assert try_connect(cgroup, ip, PORT, "udp", "sendto") == "EPERM"
        assert try_connect(cgroup, ip, PORT + 1) in ("ECONNREFUSED", "ok")  # other ports: allowed
    finally:
        listener.close()
    refused = agent.wait_for(lambda e: e.get("kind") == "connect" and e["action"] == "block"
                             and e["dst"]["port"] == PORT)
    assert refused["rule"] == "no-local-service"
