# SPDX-License-Identifier: Apache-2.0
"""payload_host (allow by name's check of a first payload): what a TLS
ClientHello or an HTTP request names, and hostile bytes never raise."""
from __future__ import annotations

import time

from hypothesis import given, settings, strategies as st

from guard.detect.classify.payload_host import payload_host


def test_http_host_is_named_without_port_case_or_trailing_dot():
    assert payload_host(b"GET / HTTP/1.1\r\nHost: PyPI.org.:443\r\n\r\n") == ("http-host", "pypi.org")
    assert payload_host(b"CONNECT a.example:443 HTTP/1.1\r\n\r\n") == ("http-host", "a.example")
    assert payload_host(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n") == ("http-host", None)


def test_other_payloads_name_nothing():
    assert payload_host(b"SSH-2.0-OpenSSH_9.2\r\n") is None
    assert payload_host(b"") is None
    assert payload_host(b"\x16\x03\x01\x00") is None   # a ClientHello cut before its body


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048),
       st.sampled_from([b"", b"\x16\x03\x01", b"GET / HTTP/1.1\r\nHost: ", b"CONNECT "]))
def test_hostile_bytes_never_raise_and_stay_bounded(data, prefix):
    started = time.perf_counter()
    found = payload_host(prefix + data)
    assert found is None or (found[0] in ("tls-sni", "http-host")
                             and (found[1] is None or isinstance(found[1], str)))
    assert time.perf_counter() - started < 0.5
