# SPDX-License-Identifier: Apache-2.0
"""A reload's old generation: in force until the switch, gone from every map
a grace period after it (the switch does not wait for the removal)."""
from __future__ import annotations

import os
import time
from collections import Counter

from guard.kernel import abi
from guard.kernel import libbpf
from guard.kernel.objects import PinLayout
from guard.control.server import request
from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess
from .test_pinned import pin_dir  # noqa: F401  (fixture: a private bpffs)
from .test_reload import egress_guard

RULES = 2000


def big_policy(path, name: str):
    lines = ["apiVersion: egress-guard/v1", "kind: EgressPolicy", "metadata:",
             f"  name: {name}", "spec:", "  defaultAction: allow", "  egress:"]
    for i in range(RULES):
        lines += [f"    - name: r{i}", "      action: block", "      to:",
                  f"        - cidr: 10.9.{i // 256}.{i % 256}/32", "          ports: [443]"]
    path.write_text("\n".join(lines) + "\n")
    return path


def generations_in_maps(pins: PinLayout) -> Counter:
    """policy id >> 8 (the generation) -> entries, over the prefix and exec maps."""
    seen: Counter = Counter()
    for name, key_type in (("eg_cidr4", abi.Lpm4Key), ("eg_cidr6", abi.Lpm6Key),
                           ("eg_host4", abi.Host4Key), ("eg_exec_rules", abi.ExecKey)):
        fd = libbpf.lib().bpf_obj_get(str(pins.maps / name).encode())
        assert fd >= 0
        try:
            seen.update(key.policy_id >> 8 for key in libbpf.map_keys(fd, key_type))
        finally:
            os.close(fd)
    return seen


def test_the_old_generation_is_removed_after_the_switch(tmp_path, pin_dir):  # noqa: F811
    first = big_policy(tmp_path / "first.yaml", "first")
    second = big_policy(tmp_path / "second.yaml", "second")
    pins = PinLayout(pin_dir)
    with TempCgroup("egress-guard-test") as cg:
        with AgentProcess([str(cg.path)], policy=first,
                          extra=["--pin", "--pin-dir", str(pin_dir),
                                 "--state-dir", str(tmp_path / "state")]) as agent:
            assert generations_in_maps(pins) == {1: RULES}
            result = egress_guard("policy", "reload", str(second), "--socket",
                                  agent.control_socket)
            assert result.returncode == 0, result.stderr
            # answered at the switch: the old generation is still there, in reserve
            assert generations_in_maps(pins)[2] == RULES
            deadline = time.monotonic() + 10
            while generations_in_maps(pins) != {2: RULES}:
                assert time.monotonic() < deadline, generations_in_maps(pins)
                time.sleep(0.2)
            status = request(agent.control_socket, {"op": "status"})
            assert status["policy"]["generation"] == 2 and status["reloads"] == 1


def test_prefixes_written_ahead_of_a_rejected_policy_are_removed(tmp_path, pin_dir):  # noqa: F811
    """The agent starts writing a large list's networks while it still reads
    the file; a policy that then turns out invalid leaves none of them."""
    first = big_policy(tmp_path / "first.yaml", "first")
    duplicate = big_policy(tmp_path / "duplicate.yaml", "duplicate")
    text = duplicate.read_text()
    duplicate.write_text(text.replace("name: r1999\n", "name: r0\n"))   # a duplicate rule name
    other = big_policy(tmp_path / "other.yaml", "other")
    other.write_text(other.read_text().replace("10.9.", "10.8.").replace(
        "action: block", "action: log", 1))   # the first rule's shape differs: read by template
    pins = PinLayout(pin_dir)
    with TempCgroup("egress-guard-test") as cg:
        with AgentProcess([str(cg.path)], policy=first,
                          extra=["--pin", "--pin-dir", str(pin_dir),
                                 "--state-dir", str(tmp_path / "state")]) as agent:
            result = egress_guard("policy", "reload", str(duplicate), "--socket",
                                  agent.control_socket)
            assert result.returncode == 1
            assert f"{duplicate}:" in result.stderr and "r0" in result.stderr
            assert generations_in_maps(pins) == {1: RULES}   # nothing of it left
            result = egress_guard("policy", "reload", str(other), "--socket",
                                  agent.control_socket)
            assert result.returncode == 0, result.stderr
            assert generations_in_maps(pins)[2] == RULES
