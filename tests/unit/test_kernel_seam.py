# SPDX-License-Identifier: Apache-2.0
"""The kernel seam (guard/kernel/host.py): Agent.start() on a fake kernel,
its order and its errors, as on the host."""
from __future__ import annotations

import errno

import pytest

from guard.agent import core
from guard.kernel import host
from guard.kernel.libbpf import LibbpfError
from guard.policy.load import default_policy
from tests.fakekernel import DEFAULT_CGROUP, FakeMetadata, FakeRing, IdleWatchdog, fake_agent


def _second_agent(fake, **kw):
    """Another agent on the same fake kernel, not started."""
    metadata = FakeMetadata()
    kw.setdefault("kernel", fake.host)
    agent = core.Agent(default_policy(), [DEFAULT_CGROUP], fake.writer,
                       metadata=lambda _sockets: metadata, **kw)
    agent.hold_watchdog = IdleWatchdog
    return agent, metadata


def test_start_opens_the_kernel_with_the_ring_size_and_pins_then_loads_and_attaches(tmp_path):
    with fake_agent(ring_size=1 << 20, pin_dir=str(tmp_path / "pins")) as fake:
        assert fake.host.opened == (1 << 20, tmp_path / "pins")
        assert isinstance(fake.ring, FakeRing) and fake.agent.maps is fake.maps
        steps = [name for name, _ in fake.timeline]
        assert steps[:3] == ["maps.set_anchors", "maps.heartbeat", "maps.set_hold_timeout"]
        assert steps.index("objects.attach_global") < steps.index("objects.attach_cgroup")
        [ready] = fake.events("agent")
        assert ready["state"] == "ready" and fake.agent._ready


def test_a_load_that_fails_is_an_agent_error_with_the_log_s_last_line():
    with fake_agent() as fake:
        agent, metadata = _second_agent(fake)
        fake.host.fail_load = LibbpfError(errno.EPERM, "load exec", ["a", "invalid mem access"])
        with pytest.raises(core.AgentError) as caught:
            agent.start()
        assert str(caught.value) == ("load exec: Operation not permitted "
                                     "(invalid mem access)")
        assert metadata.closed and agent._ring is None     # stop() ran


def test_an_abi_mismatch_is_an_agent_error_and_nothing_is_loaded():
    with fake_agent() as fake:
        agent, _metadata = _second_agent(fake)
        fake.host.mismatches = ["eg_exec_event: size 8 != 16", "x"]
        fake.host.fail_load = RuntimeError("load() must not run")
        with pytest.raises(core.AgentError, match="does not match the BPF objects: "
                                                  "eg_exec_event: size 8 != 16; x"):
            agent.start()
        assert agent.maps is None


def test_the_host_kernel_loads_nothing_until_asked(monkeypatch):
    monkeypatch.setattr(host.os, "geteuid", lambda: 0)
    kernel = host.open_kernel(1 << 16, None)
    assert kernel.objects is None and kernel.maps is None
    monkeypatch.setattr(host.os, "geteuid", lambda: 1000)
    with pytest.raises(host.KernelError, match="needs root"):
        host.open_kernel(1 << 16, None)


def test_objects_that_loaded_are_freed_when_their_maps_fail(monkeypatch):
    closed = []

    class Objects:
        map_fds = {"eg_events": -1}

        def __init__(self, ring_size, pin_dir):
            pass

        def close(self, keep_pins=False):
            closed.append(keep_pins)

    def no_maps(_fds):
        raise LibbpfError(errno.ENOMEM, "open eg_policies")
    monkeypatch.setattr(host, "GuardObjects", Objects)
    monkeypatch.setattr(host, "Maps", no_maps)
    with fake_agent() as fake:
        class Kernel(host.HostKernel):      # the host's load() on the fake's cgroups
            def cgroup_mount(self):
                return fake.tree.mount

            def cgroup_names(self, mount):
                return fake.names

            def check_abi(self):
                return []
        agent, _metadata = _second_agent(fake, kernel=Kernel)
        with pytest.raises(core.AgentError, match="open eg_policies: Cannot allocate memory$"):
            agent.start()
        assert closed == [False] and agent.objects is None


def test_a_state_directory_that_cannot_be_made_is_a_clear_start_error(tmp_path):
    """--state-dir under a regular file: one AgentError naming the path, not
    a traceback (the fake kernel is closed again by fake_agent)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(core.AgentError, match=str(blocker)):
        fake_agent(pin_dir=str(tmp_path / "pins"), state_dir=str(blocker / "state"))
