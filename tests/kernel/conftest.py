# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import socket
import textwrap

import pytest

from guard.demo.sandbox import TempCgroup

from . import images


@pytest.fixture(scope="session")
def agent_image():
    """The agent image built from deploy/Containerfile (minutes), once per
    session for test_image.py and test_manifest.py; removed at the end."""
    with images.agent_image() as image:
        yield image


@pytest.fixture(scope="session")
def busybox_image(tmp_path_factory):
    """A busybox workload image (static binary, a few applets); removed at the end."""
    with images.busybox_image(tmp_path_factory.mktemp("busybox")) as image:
        yield image


@pytest.fixture
def guarded_cgroup():
    with TempCgroup("egress-guard-test") as cg:
        yield cg


@pytest.fixture
def sibling_cgroup():
    with TempCgroup("egress-guard-sibling") as cg:
        yield cg


@pytest.fixture
def write_policy(tmp_path):
    def write(body: str, name: str = "policy.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(body))
        return path
    return write


# Test ports stay below the ephemeral range (32768-60999 by default): a port
# there may be held by a client socket in TIME_WAIT from an earlier test.
class Listener:
    """Listening sockets on loopback; the kernel completes connects to them."""

    def __init__(self):
        self._socks: list[socket.socket] = []

    def listen(self, host: str, port: int, family=socket.AF_INET, udp: bool = False):
        sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if not udp:
            sock.listen(64)
        self._socks.append(sock)
        return sock

    def close(self):
        for sock in self._socks:
            sock.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


# cgroup hooks per guarded cgroup: connect4/6, sendmsg4/6, bind4/6, sock_create
# always; flow.bpf.c's cgroup_skb egress and ingress and sock_release when the
# policy samples payloads (the default detections do); dns.bpf.c's two when it
# allows by name (objects.cgroup_objects_for)
CGROUP_HOOKS_BASE = 7
CGROUP_HOOKS = CGROUP_HOOKS_BASE + 3            # a policy with the default detections
CGROUP_HOOKS_NAMES = CGROUP_HOOKS + 2           # and allow by name


def port_block_policy(name: str, port: int, extra_spec: str = "", action: str = "block") -> str:
    """A policy whose rule "blocked" gives action (block unless told) to TCP and
    UDP for one loopback port and allows the rest (extra_spec: more lines
    under spec, indented two spaces). Its action is on line 9."""
    return f"""\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: {name}
spec:
  defaultAction: allow
{extra_spec}  egress:
    - name: blocked
      action: {action}
      to:
        - cidr: 127.0.0.0/8
          ports: [{port}]
"""


# A client run inside a cgroup: prints "ok" or the errno name of the failure.
CONNECT_CLIENT = """
import errno, socket, sys
family = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
kind = socket.SOCK_DGRAM if sys.argv[3] == 'udp' else socket.SOCK_STREAM
s = socket.socket(family, kind)
s.settimeout(5)
try:
    if sys.argv[4] == 'sendto':
        s.sendto(b'x', (sys.argv[1], int(sys.argv[2])))
    else:
        s.connect((sys.argv[1], int(sys.argv[2])))
    print('ok')
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"""


def try_connect(cg: TempCgroup, ip: str, port: int, proto: str = "tcp",
                how: str = "connect") -> str:
    result = cg.python(CONNECT_CLIENT, ip, str(port), proto, how)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
