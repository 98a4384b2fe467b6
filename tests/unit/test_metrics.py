# SPDX-License-Identifier: Apache-2.0
"""The metrics endpoint: exposition format, health and readiness."""
from __future__ import annotations

import urllib.error
import urllib.request

from guard.report.metrics import MetricsServer, render


def test_render_is_prometheus_text():
    text = render({"egress_guard_events_total": [({"kind": "connect", "action": "block"}, 3)],
                   "egress_guard_policy_generation": 2})
    assert "# TYPE egress_guard_events_total counter" in text
    assert 'egress_guard_events_total{action="block",kind="connect"} 3' in text
    assert "egress_guard_policy_generation 2" in text


def fetch(address, path):
    try:
        with urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_endpoints():
    state = {"ready": False}
    server = MetricsServer("127.0.0.1", 0, snapshot=lambda: {"egress_guard_guarded_cgroups": 4},
                           ready=lambda: state["ready"])
    try:
        assert fetch(server.address, "/metrics") == (
            200, "# HELP egress_guard_guarded_cgroups cgroups guarded now.\n"
                 "# TYPE egress_guard_guarded_cgroups gauge\negress_guard_guarded_cgroups 4\n")
        assert fetch(server.address, "/healthz")[0] == 200
        assert fetch(server.address, "/readyz")[0] == 503
        state["ready"] = True
        assert fetch(server.address, "/readyz")[0] == 200
        server.last_loop -= 60  # a loop that stopped turning is not alive
        assert fetch(server.address, "/healthz")[0] == 503
        assert fetch(server.address, "/nope")[0] == 404
    finally:
        server.close()
