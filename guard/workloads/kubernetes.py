# SPDX-License-Identifier: Apache-2.0
"""Pods of this node from the Kubernetes API, for events.

The agent lists, then watches, the pods scheduled on its node
(fieldSelector=spec.nodeName=NODE) and keeps namespace, name, labels and
annotations by pod UID; a container's cgroup path names its pod's UID. It
runs in a background thread and reconnects with back-off: enforcement never
waits for the API server, events only gain their `k8s` object once it answered.

In a cluster the address, token and CA come from the service account
(KUBERNETES_SERVICE_HOST/PORT, /var/run/secrets/kubernetes.io/serviceaccount).
"""
from __future__ import annotations

import os
import ssl
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
BACKOFF_S = (1, 2, 5, 10, 30)
TIMEOUT_S = 10


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "pod": self.name, "labels": dict(self.labels)}


def in_cluster_api() -> tuple[str | None, str | None, str | None]:
    """(base URL, token, CA file) from the pod's environment, or Nones."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get(
        "KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return None, None, None
    try:
        with open(f"{SERVICE_ACCOUNT}/token", encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError:
        token = None
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}:{port}", token, f"{SERVICE_ACCOUNT}/ca.crt"


@dataclass(frozen=True)
class PodContainer:
    """A container of a pod, as the kubelet reports it (status.containerStatuses):
    how CRI runtimes' containers (containerd, CRI-O) get their names and images."""
    name: str
    image: str
    pod_uid: str


def _container_statuses(uid: str, item: Any) -> dict[str, PodContainer]:
    status = item.get("status") if isinstance(item, dict) else None
    found = {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for entry in (status or {}).get(key) or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("containerID"), str):
                continue
            # "containerd://ID", "cri-o://ID", "docker://ID"
            container_id = entry["containerID"].rpartition("://")[2]
            found[container_id] = PodContainer(name=str(entry.get("name", "")),
                                               image=str(entry.get("image", "")), pod_uid=uid)
    return found


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _pod(item: Any) -> tuple[str, PodInfo] | None:
    meta = item.get("metadata") if isinstance(item, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("uid"), str):
        return None
    return meta["uid"], PodInfo(namespace=str(meta.get("namespace", "")),
                                name=str(meta.get("name", "")),
                                labels=_strings(meta.get("labels")),
                                annotations=_strings(meta.get("annotations")))


class PodWatcher:
    """Keeps the pods of one node by UID, from a list then a watch."""

    def __init__(self, api: str, node: str, token: str | None = None,
                 ca_file: str | None = None):
        self._api = api.rstrip("/")
        self._node = node
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._context = None
        if self._api.startswith("https://"):
            self._context = ssl.create_default_context(
                cafile=ca_file if ca_file and os.path.exists(ca_file) else None)
        self._pods: dict[str, PodInfo] = {}
        self._containers: dict[str, PodContainer] = {}
        self.version = 0  # grows with every list and watch event, so callers can tell news
        self._stop = threading.Event()
        self.synced = threading.Event()  # the first list has arrived
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def get(self, uid: str | None) -> PodInfo | None:
        return self._pods.get(uid) if uid else None

    def container(self, container_id: str) -> PodContainer | None:
        return self._containers.get(container_id)

    def close(self) -> None:
        """Stop watching. The thread may still sit in a read of the watch
        stream; it is a daemon and ends at its next event or with the agent."""
        self._stop.set()
        self._thread.join(timeout=1)

    def _url(self, **params: str) -> str:
        query = {"fieldSelector": f"spec.nodeName={self._node}", **params}
        return f"{self._api}/api/v1/pods?{urllib.parse.urlencode(query)}"

    def _open(self, url: str):
        request = urllib.request.Request(url, headers=self._headers)
        return urllib.request.urlopen(request, timeout=TIMEOUT_S, context=self._context)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                version = self._list()
                attempt = 0
                self._watch(version)
            except (OSError, ValueError):
                pass  # the API server went away or answered nonsense: list again
            delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            attempt += 1
            self._stop.wait(delay)

    def _list(self) -> str:
        with self._open(self._url()) as reply:
            body = orjson.loads(reply.read())
        pods, containers = {}, {}
        for item in body.get("items") or []:
            entry = _pod(item)
            if entry is not None:
                pods[entry[0]] = entry[1]
                containers.update(_container_statuses(entry[0], item))
        self._pods, self._containers = pods, containers
        self.version += 1
        self.synced.set()
        return str((body.get("metadata") or {}).get("resourceVersion", ""))

    def _watch(self, version: str) -> None:
        url = self._url(watch="1", resourceVersion=version, allowWatchBookmarks="true")
        with self._open(url) as stream:
            for line in stream:
                if self._stop.is_set():
                    return
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object")
                if kind == "ERROR":
                    return  # e.g. 410 Gone: the version is too old, list again
                entry = _pod(obj)
                if entry is None:
                    continue
                uid, info = entry
                if kind == "DELETED":
                    self._pods.pop(uid, None)
                    for container_id in _container_statuses(uid, obj):
                        self._containers.pop(container_id, None)
                elif kind in ("ADDED", "MODIFIED"):
                    self._pods[uid] = info
                    self._containers.update(_container_statuses(uid, obj))
                self.version += 1
