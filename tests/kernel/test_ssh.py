# SPDX-License-Identifier: Apache-2.0
"""SSH reverse tunnels against a real OpenSSH server (issue 4).

Every ssh, autossh, dbclient or plink exec in a guarded cgroup is stopped by
the kernel before its first instruction while the policy enforces
sshReverseTunnel; the agent reads its argv and the ssh config it would read
(-F, ~/.ssh/config, /etc/ssh/ssh_config, inside the process's own root) and
then lets it go, or refuses its connects (block), or kills it. Under block
the server never sees the client at all, so the forward never listens.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess, guarded_by_key
from .netfixtures import end_tree, require_tools
from .sshd import Sshd, free_port, wait_listening

ALLOWED_HOST = "127.0.0.2"


def policy_text(remote: str, outbound: str = "log") -> str:
    return f"""apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: ssh-{remote}
spec:
  defaultAction: allow
  detections:
    sshReverseTunnel: {remote}
    sshOutbound: {outbound}
  ssh:
    allow:
      - host: "{ALLOWED_HOST}"
        forwards: [local]
"""


@pytest.fixture(scope="module", autouse=True)
def tools():
    require_tools("sshd", "ssh", "autossh", "scp", "git")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    yield from guarded_by_key(tmp_path_factory.mktemp("ssh"), "egress-guard-ssh", policy_text)


@pytest.fixture(scope="module")
def sshd():
    with Sshd() as server:
        yield server


def detection(agent: AgentProcess, kind: str, predicate=lambda e: True,
              timeout: float = 10) -> dict:
    return agent.wait_for(lambda e: e.get("kind") == "detection"
                          and e["detection"]["type"] == kind and predicate(e), timeout=timeout)


def run_tunnel(cg: TempCgroup, argv: list[str], forward_port: int, seconds: float = 3.0,
               env: dict | None = None) -> tuple[bool, int | None]:
    """Start a tunnel in the cgroup; whether the forward listened while it
    ran, and its exit code if it ended by itself."""
    proc = cg.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    env=dict(os.environ, **(env or {})))
    try:
        listened = wait_listening(forward_port, timeout=seconds)
        return listened, proc.poll()
    finally:
        end_tree(proc)


def test_block_the_forward_never_listens(guarded, sshd):
    cg, agent = guarded("block")
    port = free_port()
    listened, code = run_tunnel(cg, sshd.client_argv("-N", "-R", f"{port}:127.0.0.1:9"), port)
    assert not listened and code == 255          # ssh: connect ... Operation not permitted
    event = detection(agent, "ssh_reverse_tunnel",
                      lambda e: e["detection"]["evidence"].get("listen", {}).get("port") == port)
    assert event["action"] == "block"
    assert event["detection"]["evidence"]["forward"] == f"{port}:127.0.0.1:9"
    assert event["detection"]["evidence"]["origin"] == "argv"
    refused = agent.wait_for(lambda e: e.get("kind") == "connect" and e["rule"] == "detection"
                             and e["dst"]["port"] == sshd.port)
    assert refused["action"] == "block"


def test_log_the_forward_listens_and_the_event_shows_it(guarded, sshd):
    cg, agent = guarded("log")
    port = free_port()
    listened, _ = run_tunnel(cg, sshd.client_argv("-N", "-R", f"{port}:127.0.0.1:9"), port)
    assert listened
    event = detection(agent, "ssh_reverse_tunnel",
                      lambda e: e["detection"]["evidence"].get("listen", {}).get("port") == port)
    assert event["action"] == "log"
    assert event["detection"]["evidence"]["forward"] == f"{port}:127.0.0.1:9"


@pytest.mark.parametrize("form", ["-R{port}:127.0.0.1:9", "-NfR{port}:127.0.0.1:9",
                                  "-oRemoteForward={port} 127.0.0.1:9"])
def test_every_argv_form_is_blocked(guarded, sshd, form):
    cg, agent = guarded("block")
    port = free_port()
    argv = sshd.client_argv("-N", form.format(port=port))
    listened, _ = run_tunnel(cg, argv, port, seconds=2)
    assert not listened
    detection(agent, "ssh_reverse_tunnel",
              lambda e: e["detection"]["evidence"].get("listen", {}).get("port") == port)


def test_remote_forward_in_an_F_file_is_blocked(guarded, sshd, tmp_path):
    cg, agent = guarded("block")
    port = free_port()
    config = tmp_path / "tunnel.conf"
    config.write_text(f"Host tunnel-host\n  HostName 127.0.0.1\n"
                      f"  RemoteForward {port} 127.0.0.1:9\n")
    argv = sshd.client_argv("-N")
    argv[argv.index("-F") + 1] = str(config)
    argv[-2] = "root@tunnel-host"
    listened, _ = run_tunnel(cg, argv, port)
    assert not listened
    event = detection(agent, "ssh_reverse_tunnel",
                      lambda e: e["detection"]["evidence"].get("listen", {}).get("port") == port)
    assert event["detection"]["evidence"]["origin"] == f"{config}:3"


def _container_root(root: Path, home_config: str) -> None:
    """A minimal root holding ssh, its libraries and root's ~/.ssh/config:
    what the guard reads through /proc/<pid>/root for a containerised ssh."""
    ssh = Path(shutil.which("ssh"))
    libraries = subprocess.run(["ldd", str(ssh)], capture_output=True, text=True,
                               check=True).stdout
    for path in [str(ssh)] + [word for line in libraries.splitlines()
                              for word in line.split() if word.startswith("/")]:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "dev").mkdir(exist_ok=True)
    os.mknod(root / "dev/null", 0o666 | 0o020000, os.makedev(1, 3))
    (root / "root/.ssh").mkdir(parents=True)
    (root / "root/.ssh/config").write_text(home_config)


def test_remote_forward_in_the_containers_own_ssh_config_is_blocked(guarded, sshd, tmp_path):
    cg, agent = guarded("block")
    port = free_port()
    root = tmp_path / "rootfs"
    _container_root(root, f"Host *\n  RemoteForward {port} 127.0.0.1:9\n")
    shutil.copy2(sshd.client_key, root / "root/.ssh/id_ed25519")
    argv = ["chroot", str(root), "/usr/bin/ssh", "-i", "/root/.ssh/id_ed25519",
            "-p", str(sshd.port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-N", "root@127.0.0.1"]
    listened, _ = run_tunnel(cg, argv, port)
    assert not listened
    event = detection(agent, "ssh_reverse_tunnel",
                      lambda e: e["detection"]["evidence"].get("listen", {}).get("port") == port)
    # the file as the process names it, not the host's path of it
    assert event["detection"]["evidence"]["origin"] == "/root/.ssh/config:2"


def test_sshd_on_443_is_blocked_too(guarded):
    cg, agent = guarded("block")
    port = free_port()
    try:
        server = Sshd(port=443, host="127.0.0.44").__enter__()
    except OSError as exc:
        pytest.fail(f"sshd on 127.0.0.44:443: {exc}")
    try:
        listened, _ = run_tunnel(cg, server.client_argv("-N", "-R", f"{port}:127.0.0.1:9"), port)
        assert not listened
        event = detection(agent, "ssh_reverse_tunnel",
                          lambda e: e["detection"]["evidence"].get("listen", {}).get("port")
                          == port)
        assert event["detection"]["evidence"]["destination"]["port"] == 443
    finally:
        server.close()


def test_autossh_is_blocked(guarded, sshd):
    cg, agent = guarded("block")
    port = free_port()
    listened, _ = run_tunnel(cg, sshd.autossh_argv("-N", "-R", f"{port}:127.0.0.1:9"), port,
                             env={"AUTOSSH_GATETIME": "0", "AUTOSSH_MAXSTART": "2"})
    assert not listened
    event = detection(agent, "ssh_reverse_tunnel",
                      lambda e: os.path.basename(e["process"]["argv"][0]) == "autossh")
    assert event["action"] == "block"


# --------------------------------------------------------------------------
# The allowlist, and what must keep working


@pytest.fixture(scope="module")
def allowed_sshd():
    with Sshd(host=ALLOWED_HOST) as server:
        yield server


def test_local_forward_to_an_allowlisted_host_works_and_is_logged(guarded, allowed_sshd):
    cg, agent = guarded("block")
    port = free_port()
    proc = cg.popen(allowed_sshd.client_argv("-N", "-L", f"127.0.0.1:{port}:127.0.0.1:9"),
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_listening(port, host="127.0.0.1", timeout=5)
    finally:
        end_tree(proc)
    event = detection(agent, "ssh_outbound",
                      lambda e: e["detection"]["evidence"]["destination"]["host"]
                      == ALLOWED_HOST)
    assert event["action"] == "log" and event["detection"]["confidence"] == "low"
    assert event["detection"]["evidence"]["allowlisted"] is True


def test_remote_forward_to_the_same_allowlisted_host_is_still_caught(guarded, allowed_sshd):
    cg, agent = guarded("block")
    port = free_port()
    listened, _ = run_tunnel(cg, allowed_sshd.client_argv("-N", "-R", f"{port}:127.0.0.1:9"),
                             port)
    assert not listened
    event = detection(agent, "ssh_reverse_tunnel",
                      lambda e: e["detection"]["evidence"].get("listen", {}).get("port") == port)
    assert event["action"] == "block"


def test_git_over_ssh_to_an_allowlisted_host_works(guarded, allowed_sshd, tmp_path):
    cg, agent = guarded("block")
    repo = tmp_path / "repo.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    ssh_command = " ".join(allowed_sshd.client_argv()[:-1])
    result = cg.run(["git", "ls-remote", f"root@{ALLOWED_HOST}:{repo}"],
                    env=dict(os.environ, GIT_SSH_COMMAND=ssh_command), timeout=30)
    assert result.returncode == 0, result.stderr
    detection(agent, "ssh_outbound",
              lambda e: "git-upload-pack" in " ".join(e["process"]["argv"]))


def test_scp_and_ssh_V_work(guarded, sshd, tmp_path):
    cg, agent = guarded("block")
    source = tmp_path / "payload.txt"
    source.write_text("egress-guard\n")
    target = tmp_path / "copy.txt"
    options = sshd.client_argv()[1:-1]
    options[options.index("-p")] = "-P"
    # -O: the scp protocol (the test server runs no sftp subsystem)
    result = cg.run(["scp", "-O", "-q", *options, str(source), f"root@127.0.0.1:{target}"],
                    timeout=30)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == "egress-guard\n"
    version = cg.run(["ssh", "-V"], timeout=10)
    assert version.returncode == 0 and b"OpenSSH" in version.stderr


def test_a_renamed_ssh_is_caught_by_its_banner(guarded, sshd, tmp_path):
    cg, agent = guarded("block")
    port = free_port()
    renamed = tmp_path / "backup-tool"
    shutil.copy2(shutil.which("ssh"), renamed)
    argv = [str(renamed)] + sshd.client_argv("-N", "-R", f"{port}:127.0.0.1:9")[1:]
    listened, _ = run_tunnel(cg, argv, port)
    assert not listened
    event = detection(agent, "ssh_reverse_tunnel",
                      lambda e: e["process"]["argv"][0] == str(renamed))
    assert event["dst"]["port"] == sshd.port
    banner = detection(agent, "ssh_outbound",
                       lambda e: e["process"]["argv"][0] == str(renamed))
    assert banner["detection"]["evidence"]
