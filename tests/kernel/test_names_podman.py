# SPDX-License-Identifier: Apache-2.0
"""Allow by name for a real container (podman + runc): it resolves through
the resolver its runtime wrote into its resolv.conf (`--dns`), the agent
finds it by discovery, and only the allowed name connects."""
from __future__ import annotations

import subprocess

from .agentproc import AgentProcess
from .test_names import names_policy, resolver  # noqa: F401 (fixture)
from .test_podman import IMAGE, PODMAN_RUN, containers, image  # noqa: F401 (fixtures)


def test_a_container_reaches_an_allowed_name_and_nothing_else(tmp_path, image, containers,  # noqa: F811
                                                              resolver):
    server = resolver.serve()
    policy = tmp_path / "names.yaml"
    policy.write_text(names_policy(resolver, server.port, hosts=["one.egtest"]))
    two = resolver.addresses("two.egtest")[0]
    script = (f"nc one.egtest {server.port} </dev/null; echo one=$?; "
              f"nc two.egtest {server.port} </dev/null; echo two=$?; "
              f"nc {two} {server.port} </dev/null; echo literal=$?")
    with AgentProcess([], policy=policy) as agent:
        cidfile = tmp_path / "cid"
        result = subprocess.run([*PODMAN_RUN, "--dns", resolver.ip, "--cidfile", str(cidfile),
                                 IMAGE, "/bin/sh", "-c", script],
                                capture_output=True, text=True, timeout=120)
        cid = cidfile.read_text().strip()
        containers.append(cid)
        out = result.stdout
        assert "one=0" in out and "two=1" in out and "literal=1" in out, (out, result.stderr)
        assert resolver.queries("two.egtest") == []        # refused at the send
        answer = agent.wait_for(lambda e: e["kind"] == "dns" and e["direction"] == "answer"
                                and e.get("container", {}).get("id") == cid
                                and e["dns"]["learned"])
        assert answer["dns"]["name"] == "one.egtest"
        refused = agent.wait_for(lambda e: e["kind"] == "connect" and e["dst"]["ip"] == two
                                 and e.get("container", {}).get("id") == cid)
        assert refused["action"] == "block" and "name" not in refused["dst"]
    one = resolver.addresses("one.egtest")[0]
    assert any(one in accepted["local"] for accepted in server.wait_accepted(1))
