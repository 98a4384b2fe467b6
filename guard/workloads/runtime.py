# SPDX-License-Identifier: Apache-2.0
"""Container names, images and labels from the runtime's API.

Docker's Engine API, which podman serves as well ("podman system service"),
over its unix socket: GET /containers/ID/json. Lookups run in a background
thread: a container is guarded the moment its cgroup appears, and its events
name it once the runtime has answered. Missing metadata never delays
enforcement, and a runtime that does not answer only costs the names.
"""
from __future__ import annotations

import http.client
import os
import queue
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson

DEFAULT_SOCKETS = ("/run/podman/podman.sock", "/var/run/docker.sock")
TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ContainerInfo:
    name: str | None
    image: str | None
    labels: dict[str, str] = field(default_factory=dict)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def inspect(socket_path: str, container_id: str, timeout: float = TIMEOUT_S) -> ContainerInfo | None:
    """One container from one runtime socket; None when it does not know it."""
    conn = _UnixConnection(socket_path, timeout)
    try:
        conn.request("GET", f"/containers/{container_id}/json")
        reply = conn.getresponse()
        body = reply.read(4 << 20)
        if reply.status != 200:
            return None
        data = orjson.loads(body)
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()
    if not isinstance(data, dict):
        return None
    config = data.get("Config") if isinstance(data.get("Config"), dict) else {}
    labels = config.get("Labels") if isinstance(config.get("Labels"), dict) else {}
    name = data.get("Name")
    return ContainerInfo(
        name=name.lstrip("/") if isinstance(name, str) else None,
        image=config.get("Image") if isinstance(config.get("Image"), str) else None,
        labels={str(k): str(v) for k, v in labels.items()})


class MetadataCache:
    """Looks containers up in the background; get() answers from what arrived."""

    def __init__(self, sockets: list[str] | tuple[str, ...]):
        self._sockets = [s for s in sockets if s]
        self._known: dict[str, ContainerInfo] = {}
        self.version = 0  # grows with every answer, so callers can tell news
        self._asked: set[str] = set()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def request(self, container_id: str) -> None:
        if container_id not in self._asked:
            self._asked.add(container_id)
            self._queue.put(container_id)

    def get(self, container_id: str) -> ContainerInfo | None:
        return self._known.get(container_id)

    def forget(self, container_id: str) -> None:
        self._known.pop(container_id, None)
        self._asked.discard(container_id)

    def _work(self) -> None:
        while (container_id := self._queue.get()) is not None:
            for path in self._sockets:
                if not os.path.exists(path):
                    continue
                info = inspect(path, container_id)
                if info is not None:
                    self._known[container_id] = info
                    self.version += 1
                    break

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=TIMEOUT_S * 2)


def describe_container(ref_dict: dict[str, Any], info: ContainerInfo | None) -> dict[str, Any]:
    """The event's "container" object: id and runtime, then name and image once known."""
    if info is not None:
        ref_dict = {**ref_dict, "name": info.name, "image": info.image}
    return ref_dict
