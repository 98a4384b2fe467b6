# SPDX-License-Identifier: Apache-2.0
"""The CLI's commands against their contract (README.md's exit codes,
docs/cli.md), as any user: `run` with the agent replaced by a fake (what
the command does with the agent's outcome), `status` and `uninstall`
against a fake agent on a unix socket in a temporary directory, `doctor`
as whoever runs the tests (it probes, it does not act).
"""
from __future__ import annotations

import os
import socket
import sys
import threading

import orjson
import pytest

from guard.control import client
from click.testing import CliRunner

from guard.agent import core
from guard.cli import commands
from guard.cli.commands import main
from guard.cli.exitcodes import ExitCode
from guard.workloads.runtime import DEFAULT_SOCKETS
from tests.conftest import FIXTURES

EXAMPLE = str(FIXTURES / "example-policy.yaml")


@pytest.fixture
def runner():
    return CliRunner()


def one_error_line(result) -> str:
    """The command's stderr is one line, egress-guard: error: ..., no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("egress-guard: error: ")
    assert "Traceback" not in result.output
    return lines[0]


class FakeAgent:
    """Stands in for guard.agent.core.Agent: records how it was made."""
    made: list["FakeAgent"] = []

    def __init__(self, policies, cgroups, writer, **options):
        self.policies, self.cgroups, self.writer, self.options = policies, cgroups, writer, options
        FakeAgent.made.append(self)


@pytest.fixture
def fake_agent(monkeypatch):
    """run with a fake agent; set outcome to an exception to raise from it."""
    FakeAgent.made = []
    state = {"outcome": None}

    def run_until_signalled(agent):
        if state["outcome"] is not None:
            raise state["outcome"]
    monkeypatch.setattr(core, "Agent", FakeAgent)
    monkeypatch.setattr(core, "start_and_run_until_signalled", run_until_signalled)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return state


# -- run --------------------------------------------------------------------------------


def test_run_hands_the_options_to_the_agent_and_exits_0(runner, fake_agent, tmp_path):
    events = tmp_path / "events.jsonl"
    result = runner.invoke(main, ["run", "--policy", EXAMPLE, "--cgroup", "a", "--cgroup", "/b",
                                  "--events", str(events), "--ring-size", "8192",
                                  "--metrics", "[::1]:9464", "--hold-timeout-ms", "0",
                                  "--scheduling", "normal", "--unselected", "unguarded"])
    assert result.exit_code == ExitCode.OK, result.output
    (agent,) = FakeAgent.made
    assert [p.name for p in agent.policies] == ["example"]
    assert agent.cgroups == ["a", "/b"]
    assert events.exists()   # opened for appending
    options = agent.options
    assert options["ring_size"] == 8192
    assert options["metrics_address"] == ("::1", 9464)
    assert options["runtime_sockets"] == DEFAULT_SOCKETS
    assert options["kube_api"] is None   # not in a cluster, no --kube-api
    assert options["hold_timeout_ms"] == 0 and options["scheduling"] == "normal"
    assert options["unselected"] == "unguarded"
    assert options["pin_dir"] is None and options["policy_path"] == EXAMPLE


def test_run_with_pin_and_kube_api(runner, fake_agent, tmp_path):
    result = runner.invoke(main, ["run", "--pin", "--pin-dir", str(tmp_path / "pins"),
                                  "--kube-api", "https://k8s:6443", "--node-name", "n1",
                                  "--runtime-socket", str(tmp_path / "podman.sock")])
    assert result.exit_code == ExitCode.OK, result.output
    (agent,) = FakeAgent.made
    assert agent.options["pin_dir"] == str(tmp_path / "pins")
    assert agent.options["kube_api"] == ("https://k8s:6443", "n1", None, None)
    assert agent.options["runtime_sockets"] == (str(tmp_path / "podman.sock"),)
    assert [p.name for p in agent.policies] != []   # the embedded default


def test_run_in_a_cluster_uses_the_in_cluster_api(runner, fake_agent, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("NODE_NAME", "node-7")
    result = runner.invoke(main, ["run"])
    assert result.exit_code == ExitCode.OK, result.output
    url, node, _token, ca_file = FakeAgent.made[0].options["kube_api"]
    assert (url, node) == ("https://10.0.0.1:443", "node-7")
    assert ca_file.endswith("ca.crt")


@pytest.mark.parametrize("outcome, code, needle", [
    (core.AgentError("egress-guard run needs root (CAP_BPF)"), ExitCode.PERMISSION, "needs root"),
    (core.AgentError("/sys/fs/cgroup/x: no such cgroup"), ExitCode.RUNTIME, "no such cgroup"),
    (core.AgentCrashed("KeyError: 'x'"), ExitCode.CRASHED, "the agent crashed: KeyError"),
    (RuntimeError("oops"), ExitCode.CRASHED, "the agent crashed: RuntimeError: oops"),
], ids=["needs-root", "cannot-start", "crashed", "bug"])
def test_run_exit_codes_follow_the_agents_outcome(runner, fake_agent, outcome, code, needle):
    fake_agent["outcome"] = outcome
    result = runner.invoke(main, ["run", "--cgroup", "x"])
    assert result.exit_code == code
    assert needle in one_error_line(result)


def test_run_as_non_root_is_one_line_and_exit_4(runner, monkeypatch):
    """The real agent, as a user without root (simulated when root)."""
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    result = runner.invoke(main, ["run", "--cgroup", "x"])
    assert result.exit_code == ExitCode.PERMISSION
    assert "needs root" in one_error_line(result)


@pytest.mark.parametrize("size", ["1000", "0", "6144", "-4096"])
def test_run_refuses_a_ring_size_that_is_not_a_power_of_two_of_4096_or_more(runner, size):
    result = runner.invoke(main, ["run", "--ring-size", size])
    assert result.exit_code == ExitCode.USAGE
    assert f"--ring-size {size}: must be a power of two" in one_error_line(result)


@pytest.mark.parametrize("address", ["9464", "host:", ":9464", "h:0", "h:65536", "h:port"])
def test_run_refuses_a_bad_metrics_address(runner, fake_agent, address):
    result = runner.invoke(main, ["run", "--metrics", address])
    assert result.exit_code == ExitCode.USAGE
    assert f"--metrics {address}: expected HOST:PORT" in one_error_line(result)
    assert FakeAgent.made == []


def test_run_refuses_an_events_file_it_cannot_open(runner, fake_agent, tmp_path):
    result = runner.invoke(main, ["run", "--events", str(tmp_path / "no" / "such" / "f")])
    assert result.exit_code == ExitCode.USAGE
    assert "--events" in one_error_line(result)
    assert FakeAgent.made == []


def test_run_with_an_invalid_policy_exits_1_before_any_agent(runner, fake_agent, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: t\n"
                   "spec:\n  defaultAction: explode\n")
    result = runner.invoke(main, ["run", "--policy", str(bad)])
    assert result.exit_code == ExitCode.FAILURE
    assert f"{bad}:6: spec.defaultAction: invalid action 'explode'" in result.stderr
    assert FakeAgent.made == []


def test_run_supervise_hands_the_rest_of_the_command_line_to_the_supervisor(
        runner, monkeypatch, tmp_path):
    from guard.cli import supervise
    calls = []

    def supervise_agent(args, events_path):
        calls.append((list(args), events_path))
        return 0
    monkeypatch.setattr(supervise, "supervise_agent", supervise_agent)
    events = str(tmp_path / "e")
    argv = ["run", "--supervise", "--cgroup", "x", "--events", events]
    monkeypatch.setattr(sys, "argv", ["egress-guard", *argv])
    result = runner.invoke(main, argv)
    assert result.exit_code == 0, result.output
    assert calls == [(["run", "--cgroup", "x", "--events", events], events)]


# -- policy check -----------------------------------------------------------------------


def test_policy_check_prints_one_summary_line_per_policy(runner):
    result = runner.invoke(main, ["policy", "check", EXAMPLE])
    assert result.exit_code == ExitCode.OK
    assert result.stdout.splitlines() == [line for line in result.stdout.splitlines()
                                          if line.startswith(f"{EXAMPLE}: ok (policy ")]
    assert len(result.stdout.splitlines()) == 1


def test_policy_check_lists_every_problem_with_file_and_line(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: t\n"
                   "spec:\n  defaultAction: explode\n  colour: blue\n")
    result = runner.invoke(main, ["policy", "check", str(bad)])
    assert result.exit_code == ExitCode.FAILURE
    problems = result.stderr.strip().splitlines()
    assert problems[-1] == "egress-guard: error: invalid policy (2 problem(s))"
    assert {p.split(": ")[0] for p in problems[:-1]} == {f"{bad}:6", f"{bad}:7"}
    assert result.stdout == ""


# -- status -----------------------------------------------------------------------------


class FakeAgentSocket:
    """A unix socket answering each connection's request line with answer."""

    def __init__(self, path, answer: dict):
        self.path = str(path)
        self.answer = answer
        self.requests: list[dict] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(4)
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    self.requests.append(orjson.loads(data))
                conn.sendall(orjson.dumps(self.answer) + b"\n")

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


STATUS = {
    "ok": True, "pid": 4242, "version": "9.9.9",
    "policy": {"name": "example", "source": "/etc/egress-guard/policy.yaml", "generation": 3},
    "enforcement": "full",
    "scheduling": {"in_force": "normal", "mode": "background", "refused": "EPERM"},
    "cgroups": [{"path": "/libpod_parent/libpod-abc", "id": 77}],
    "counters": {"connect_blocked": 2, "exec_killed": 0},
    "events": 10, "reloads": 1, "uptime_s": 61.4,
}


@pytest.fixture
def agent_socket(tmp_path):
    made = []

    def make(answer):
        served = FakeAgentSocket(tmp_path / "agent.sock", answer)
        made.append(served)
        return served
    yield make
    for served in made:
        served.close()


def test_status_shows_the_agent(runner, agent_socket):
    served = agent_socket(STATUS)
    result = runner.invoke(main, ["status", "--socket", served.path])
    assert result.exit_code == ExitCode.OK, result.output
    assert served.requests == [{"op": "status"}]
    out = result.stdout
    assert "agent        pid 4242, version 9.9.9, up 61 s" in out
    assert ("policy       example (generation 3, /etc/egress-guard/policy.yaml)") in out
    assert "scheduling   normal (background refused: EPERM)" in out
    assert "cgroups      1 guarded\n  /libpod_parent/libpod-abc (id 77)" in out
    assert "counters     connect_blocked=2, exec_killed=0" in out
    assert "events       10 written, 1 reload(s)" in out


def test_status_of_an_older_agent_without_scheduling(runner, agent_socket):
    served = agent_socket({k: v for k, v in STATUS.items() if k != "scheduling"})
    result = runner.invoke(main, ["status", "--socket", served.path])
    assert result.exit_code == ExitCode.OK
    assert "scheduling" not in result.stdout


def test_status_json_is_the_agents_answer_without_ok(runner, agent_socket):
    served = agent_socket(STATUS)
    result = runner.invoke(main, ["status", "--json", "--socket", served.path])
    assert result.exit_code == ExitCode.OK
    assert orjson.loads(result.stdout) == {k: v for k, v in STATUS.items() if k != "ok"}


def test_status_refused_by_the_agent_exits_4(runner, agent_socket):
    served = agent_socket({"ok": False,
                           "error": "permission denied: only root may control the agent"})
    result = runner.invoke(main, ["status", "--socket", served.path])
    assert result.exit_code == ExitCode.PERMISSION
    assert "permission denied" in one_error_line(result)


def test_status_without_an_agent_exits_3(runner, tmp_path):
    result = runner.invoke(main, ["status", "--socket", str(tmp_path / "absent.sock")])
    assert result.exit_code == ExitCode.RUNTIME
    assert "no agent is listening" in one_error_line(result)
    assert result.stdout == ""


def test_status_on_a_socket_the_caller_may_not_use_exits_4(runner, tmp_path, monkeypatch):
    path = tmp_path / "agent.sock"
    served = FakeAgentSocket(path, STATUS)
    try:
        os.chmod(path, 0)
        if os.geteuid() == 0:   # root may connect to any socket: the kernel's answer to others
            class Refused(client.socket):
                def connect(self, _address):
                    raise PermissionError(13, "Permission denied")
            monkeypatch.setattr(client, "socket", Refused)
        result = runner.invoke(main, ["status", "--socket", str(path)])
        assert result.exit_code == ExitCode.PERMISSION
        assert "permission denied" in one_error_line(result)
    finally:
        served.close()


# -- uninstall --------------------------------------------------------------------------


def test_uninstall_needs_root(runner, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    result = runner.invoke(main, ["uninstall", "--pin-dir", str(tmp_path),
                                  "--socket", str(tmp_path / "absent.sock")])
    assert result.exit_code == ExitCode.PERMISSION
    assert "uninstall needs root" in one_error_line(result)


def pinned_tree(root):
    for sub, names in (("maps", ["events", "policy_v4"]), ("links", ["exec"]),
                       ("cgroups", ["77/sock_addr"])):
        for name in names:
            path = root / sub / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")


def test_uninstall_removes_what_was_pinned(runner, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)   # a plain directory stands in for bpffs
    pins = tmp_path / "pins"
    pinned_tree(pins)
    result = runner.invoke(main, ["uninstall", "--pin-dir", str(pins),
                                  "--socket", str(tmp_path / "absent.sock")])
    assert result.exit_code == ExitCode.OK, result.output
    assert result.stdout == f"removed 4 pinned object(s) from {pins}\n"
    assert not pins.exists()
    again = runner.invoke(main, ["uninstall", "--pin-dir", str(pins),
                                 "--socket", str(tmp_path / "absent.sock")])
    assert again.exit_code == ExitCode.OK
    assert again.stdout == f"nothing pinned under {pins}\n"


def test_uninstall_refuses_while_an_agent_answers(runner, monkeypatch, tmp_path, agent_socket):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    pins = tmp_path / "pins"
    pinned_tree(pins)
    served = agent_socket(STATUS)
    result = runner.invoke(main, ["uninstall", "--pin-dir", str(pins), "--socket", served.path])
    assert result.exit_code == ExitCode.RUNTIME
    assert "an agent is running" in one_error_line(result)
    assert (pins / "maps" / "events").exists()


def test_uninstall_reports_a_pin_dir_it_cannot_clear(runner, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    pins = tmp_path / "pins"
    pinned_tree(pins)
    (pins / "stray").write_text("")   # not ours: the root cannot be removed

    result = runner.invoke(main, ["uninstall", "--pin-dir", str(pins),
                                  "--socket", str(tmp_path / "absent.sock")])
    assert result.exit_code == ExitCode.RUNTIME
    assert str(pins) in one_error_line(result)


# -- doctor -----------------------------------------------------------------------------


def test_doctor_json_is_one_object_and_its_exit_code_says_ready(runner):
    result = runner.invoke(main, ["doctor", "--json"])
    report = orjson.loads(result.stdout)
    assert result.exit_code == (ExitCode.OK if report["ok"] else ExitCode.FAILURE)
    assert report["ok"] == (report["missing"] == [])
    assert report["root"] == (os.geteuid() == 0)
    assert {"cgroup_sock_addr", "raw_tracepoint", "ring_buffer"} <= set(report["mechanisms"])


def test_doctor_text_lists_every_mechanism_and_says_ready(runner):
    from guard.cli import doctor as features
    result = runner.invoke(main, ["doctor"])
    out = result.stdout.splitlines()
    for name in features.PROBES:
        assert any(line[6:].startswith(name) for line in out if line.startswith("  ")), name
    ready = "ready: yes" in out
    assert result.exit_code == (ExitCode.OK if ready else ExitCode.FAILURE)
    assert ready or result.stderr.startswith("missing: ")
    assert f"root           {'yes' if os.geteuid() == 0 else 'no'}" in out


def test_doctor_says_what_is_missing_on_a_host_without_the_mechanisms(runner, monkeypatch):
    from guard.cli import doctor as features
    report = features.Report(kernel="6.1.0", arch="x86_64", libbpf=None, btf=False,
                             cgroup2=None, root=False,
                             mechanisms={"ring_buffer": features.Mechanism(False, "EPERM")},
                             missing=["ring_buffer: events to userspace"],
                             enforcement={}, scheduling={"background": False, "detail": "no"})
    monkeypatch.setattr(features, "probe", lambda: report)
    result = runner.invoke(main, ["doctor"])
    assert result.exit_code == ExitCode.FAILURE
    assert "libbpf         not found" in result.stdout
    assert "cgroup2 mount  not found" in result.stdout
    assert "  no  ring_buffer" in result.stdout and "(required)" in result.stdout
    assert "scheduling     normal: no" in result.stdout
    assert result.stdout.endswith("ready: no\n")
    assert result.stderr == "missing: ring_buffer: events to userspace\n"


# -- demo and the entry point ---------------------------------------------------------


def test_demo_reports_a_failed_verdict_with_exit_1(runner, monkeypatch):
    from guard.demo import run as demo_run
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(demo_run, "run_demo", lambda echo, **_: echo("verdict: not as expected")
                        and False)
    result = runner.invoke(main, ["demo"])
    assert result.exit_code == ExitCode.FAILURE
    assert "verdict: not as expected" in result.stdout


def test_entry_runs_main_as_egress_guard(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["whatever", "--version"])
    with pytest.raises(SystemExit) as exited:
        commands.entry()
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("egress-guard, version ")


def test_policy_reload_without_an_agent_exits_3(runner, tmp_path):
    result = runner.invoke(main, ["policy", "reload", EXAMPLE,
                                  "--socket", str(tmp_path / "absent.sock")])
    assert result.exit_code == ExitCode.RUNTIME
    assert "no agent is listening" in one_error_line(result)


# -- policy reload, in process (guard/cli/reload.py; test_cli_reload.py runs it as a command)


@pytest.fixture
def stub_agent(tmp_path):
    from tests.unit.test_cli_reload import StubAgent
    made = []

    def make(response=None, respond=None):
        served = StubAgent(str(tmp_path / "agent.sock"), response, respond)
        served.path = str(tmp_path / "agent.sock")
        made.append(served)
        return served
    yield make
    for served in made:
        served.close()


def test_reload_passes_the_file_open_and_prints_the_switch(stub_agent, capsys):
    from guard.cli import reload as quick
    from tests.unit.test_cli_reload import RELOADED
    served = stub_agent(RELOADED)
    assert quick.main(["policy", "reload", EXAMPLE, "--socket", served.path]) == ExitCode.OK
    assert served.requests == [{"op": "reload", "policy": {"fd": 0, "source": EXAMPLE}}]
    assert served.files == [[open(EXAMPLE, "rb").read()]]
    assert capsys.readouterr().out == ("reloaded: policy 'example' is generation 3 (was 2); "
                                       "switched in 12.5 ms\n")


def test_reload_without_a_file_asks_the_agent_to_reread_its_own(stub_agent, capsys):
    from guard.cli import reload as quick
    from tests.unit.test_cli_reload import RELOADED
    served = stub_agent(RELOADED)
    assert quick.main(["policy", "reload", f"--socket={served.path}"]) == ExitCode.OK
    assert served.requests == [{"op": "reload"}]


def test_reload_refused_prints_every_problem_then_exits_1(stub_agent, capsys):
    from guard.cli import reload as quick
    from tests.unit.test_cli_reload import REFUSED
    served = stub_agent(REFUSED)
    assert quick.reload(EXAMPLE, served.path) == ExitCode.FAILURE
    err = capsys.readouterr().err.splitlines()
    assert err == [*REFUSED["problems"], f"egress-guard: error: {REFUSED['error']}"]


def test_reload_refused_for_permission_exits_4_and_is_not_retried(stub_agent, capsys):
    from guard.cli import reload as quick
    served = stub_agent({"ok": False, "error": "permission denied: only root may control "
                                               "the agent"})
    assert quick.reload(EXAMPLE, served.path) == ExitCode.PERMISSION
    assert len(served.requests) == 1


def test_an_older_agent_gets_the_text_and_bad_text_is_not_sent(stub_agent, tmp_path, capsys):
    from guard.cli import reload as quick
    from tests.unit.test_cli_reload import RELOADED
    old = {k: v for k, v in RELOADED.items() if k != "read_fd"}
    served = stub_agent(old)
    assert quick.reload(EXAMPLE, served.path) == ExitCode.OK
    assert [r["policy"].keys() for r in served.requests] == [{"fd", "source"}, {"text", "source"}]
    assert served.requests[1]["policy"]["text"] == open(EXAMPLE).read()
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    served.requests.clear()
    assert quick.reload(str(latin), served.path) == ExitCode.FAILURE
    assert "cannot read the policy file" in capsys.readouterr().err
    assert len(served.requests) == 1   # the text that is not UTF-8 never went


def test_reload_without_an_agent_or_a_file(tmp_path, capsys):
    from guard.cli import reload as quick
    assert quick.reload(EXAMPLE, str(tmp_path / "absent.sock")) == ExitCode.RUNTIME
    assert quick.reload(None, str(tmp_path / "absent.sock")) == ExitCode.RUNTIME
    assert quick.reload(str(tmp_path / "absent.yaml"), str(tmp_path / "absent.sock")) \
        == ExitCode.FAILURE
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in err] == ["error"] * 3
    assert "no agent is listening" in err[0] and "cannot read the policy file" in err[2]


def test_a_directory_is_left_to_click(tmp_path):
    from guard.cli import reload as quick
    assert quick.main(["policy", "reload", str(tmp_path)]) is None
