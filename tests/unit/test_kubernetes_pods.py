# SPDX-License-Identifier: Apache-2.0
"""The pod watch against a local server replaying recorded Kubernetes
list and watch responses (shapes as the API server sends them)."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import orjson
import pytest

from guard.workloads.kubernetes import PodWatcher

UID_A = "1b2c3d4e-1111-2222-3333-444455556666"
UID_B = "9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff"
CONTAINER_A = "c0ffee" + "0" * 54 + "a11a"  # 64 hex digits, as runtimes name them


def pod(uid, name, labels, namespace="agents"):
    statuses = [{"name": "agent", "image": "registry.example/agents/rl:1.4",
                 "containerID": f"containerd://{CONTAINER_A}", "ready": True}] \
        if uid == UID_A else []
    return {"metadata": {"name": name, "namespace": namespace, "uid": uid,
                         "resourceVersion": "100", "labels": labels,
                         "annotations": {"sandbox.example/episode": "ep-42"}},
            "spec": {"nodeName": "node-1"},
            "status": {"phase": "Running", "containerStatuses": statuses}}


LIST = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "100"},
        "items": [pod(UID_A, "agent-a", {"app": "agent", "team": "rl"})]}
WATCH = [
    {"type": "ADDED", "object": pod(UID_B, "agent-b", {"app": "agent"})},
    {"type": "MODIFIED", "object": pod(UID_A, "agent-a", {"app": "agent", "team": "eval"})},
    {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "104"}}},
    {"type": "DELETED", "object": pod(UID_B, "agent-b", {"app": "agent"})},
]


class ReplayServer:
    """Answers the list, then streams the watch events and holds the stream open."""

    def __init__(self):
        self.requests: list[dict] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                query = parse_qs(urlparse(self.path).query)
                outer.requests.append({"path": urlparse(self.path).path, **query})
                if "watch" not in query:
                    body = orjson.dumps(LIST)
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for event in WATCH:
                    line = orjson.dumps(event) + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                    time.sleep(0.05)
                outer.release.wait(10)
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    replay = ReplayServer()
    yield replay
    replay.close()


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_list_then_watch(server):
    watcher = PodWatcher(server.url, "node-1")
    try:
        assert watcher.synced.wait(5)
        assert watcher.get(UID_A).as_dict() == {"namespace": "agents", "pod": "agent-a",
                                                "labels": {"app": "agent", "team": "rl"}}
        wait_until(lambda: watcher.get(UID_A).labels.get("team") == "eval")
        assert watcher.get(UID_A).annotations == {"sandbox.example/episode": "ep-42"}
        known = watcher.container(CONTAINER_A)
        assert (known.name, known.image, known.pod_uid) == (
            "agent", "registry.example/agents/rl:1.4", UID_A)
        wait_until(lambda: len(server.requests) >= 2 and watcher.get(UID_B) is None)
        first, watch = server.requests[:2]
        assert first["fieldSelector"] == ["spec.nodeName=node-1"]
        assert watch["watch"] == ["1"] and watch["resourceVersion"] == ["100"]
    finally:
        watcher.close()


def test_unreachable_api_is_not_fatal():
    watcher = PodWatcher("http://127.0.0.1:9", "node-1")  # nothing listens on discard
    try:
        assert not watcher.synced.wait(0.5)
        assert watcher.get(UID_A) is None
    finally:
        watcher.close()
