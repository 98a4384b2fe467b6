# SPDX-License-Identifier: Apache-2.0
"""Prometheus metrics and health endpoints of a running agent.

GET /metrics   text exposition format 0.0.4
GET /healthz   200 while the agent's loop turns (liveness), else 503
GET /readyz    200 once every hook is attached (readiness), else 503

Served from a daemon thread; it only reads a snapshot the agent hands it, so
a slow scraper never touches the event loop.
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

LOOP_STALE_S = 5.0  # a loop that has not turned this long is not alive

_HELP = {
    "egress_guard_events_total": ("counter", "Events written, by kind and action."),
    "egress_guard_kernel_verdicts_total": ("counter", "Verdicts the kernel gave, by action."),
    "egress_guard_ring_events_lost_total": ("counter",
                                            "Events the kernel dropped because the ring was full."),
    "egress_guard_detections_total": ("counter", "Detections, by type and action taken."),
    "egress_guard_flows_sampled_total": ("counter",
                                         "First payloads the kernel sent to the classifiers."),
    "egress_guard_flows_held_total": ("counter",
                                      "First payloads held back until the agent's verdict."),
    "egress_guard_hold_timeouts_total": ("counter",
                                         "Held flows let go because no verdict came in time."),
    "egress_guard_flow_drops_total": ("counter", "Packets dropped of held or blocked flows."),
    "egress_guard_guarded_cgroups": ("gauge", "cgroups guarded now."),
    "egress_guard_guarded_containers": ("gauge", "Containers guarded now."),
    "egress_guard_policy_generation": ("gauge", "Generation of the policy in force."),
    "egress_guard_reloads_total": ("counter", "Policy reloads that switched generation."),
    "egress_guard_uptime_seconds": ("gauge", "Seconds since the agent started."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(snapshot: dict[str, Any]) -> str:
    """The exposition text for a snapshot {metric: value | [(labels, value)]}."""
    lines = []
    for name, (kind, help_text) in _HELP.items():
        if name not in snapshot:
            continue
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        value = snapshot[name]
        samples = value if isinstance(value, list) else [({}, value)]
        for labels, number in samples:
            label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{label_text}}} {number}" if label_text else f"{name} {number}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, host: str, port: int, snapshot: Callable[[], dict[str, Any]],
                 ready: Callable[[], bool]):
        self._snapshot = snapshot
        self._ready = ready
        self.last_loop = time.monotonic()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                if self.path == "/metrics":
                    server._reply(self, 200, render(server._snapshot()),
                                  "text/plain; version=0.0.4")
                elif self.path == "/healthz":
                    alive = time.monotonic() - server.last_loop < LOOP_STALE_S
                    server._reply(self, 200 if alive else 503, "ok\n" if alive else "stalled\n")
                elif self.path == "/readyz":
                    ready = server._ready()
                    server._reply(self, 200 if ready else 503, "ready\n" if ready else "starting\n")
                else:
                    server._reply(self, 404, "not found\n")

            def log_message(self, *_args):  # keep stdout for events only
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.address = self._httpd.server_address
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @staticmethod
    def _reply(handler, status: int, body: str, content_type: str = "text/plain") -> None:
        data = body.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def loop_turned(self) -> None:
        self.last_loop = time.monotonic()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
