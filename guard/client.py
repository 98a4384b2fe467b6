# SPDX-License-Identifier: Apache-2.0
"""The control socket's client side: one JSON request line out, one JSON
response line back (the agent's side is control.py).

Light on imports on purpose: `egress-guard policy reload` runs this in a
fresh interpreter, and every module it loads is start-up time the operator
waits for. The standard json module is enough for one request (the agent
reads it with orjson), and the socket is _socket's: the socket module around
it spends longer building its enums at import (about 14 ms) than the whole
request takes to send.
"""
from __future__ import annotations

import json
import os
from _socket import AF_UNIX, SOCK_STREAM, socket

DEFAULT_SOCKET = "/run/egress-guard/agent.sock"
REQUEST_LIMIT = 16 << 20      # a policy with 10,000 rules is well below 1 MiB


class ControlError(Exception):
    """The agent could not be reached or refused the request."""


def read_line(conn: socket) -> bytes:
    """Bytes up to and including the first newline (or the peer's end)."""
    chunks, size = [], 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            break
        if size > REQUEST_LIMIT:
            raise ValueError("request too large")
    return b"".join(chunks)


def request(path: str | os.PathLike[str], message: dict[str, object],
            timeout: float = 60.0) -> dict:
    """Send one request to the agent and return its response."""
    sock = socket(AF_UNIX, SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(os.fspath(path))
        except FileNotFoundError:
            raise ControlError(f"no agent is listening on {path} (is egress-guard run active?)") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: only root may control the agent") from None
        except OSError as exc:
            raise ControlError(f"cannot reach the agent on {path}: {exc.strerror}") from None
        try:
            sock.sendall(json.dumps(message, ensure_ascii=False).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent answered without reading it all (a refusal): read that
        reply = read_line(sock)
    except OSError as exc:  # timeouts included
        raise ControlError(f"the agent on {path} did not answer: {exc}") from None
    finally:
        sock.close()
    if not reply:
        raise ControlError(f"the agent on {path} did not answer")
    try:
        response = json.loads(reply)
    except ValueError:
        raise ControlError(f"the agent on {path} sent an unreadable answer") from None
    if not isinstance(response, dict):
        raise ControlError(f"the agent on {path} sent an unreadable answer")
    return response
