# SPDX-License-Identifier: Apache-2.0
"""guard/detect/classify/tls.py: the one ClientHello reader the stratum and tunnel
classifiers share (the field-by-field cases are in test_classify_stratum)."""
from __future__ import annotations

from hypothesis import given, strategies as st

from guard.detect.classify import tls, tunnels
from tests.unit.test_classify_stratum import client_hello


def split_in_two_records(hello: bytes, cut: int = 40) -> bytes:
    """The hello's handshake message over two TLS records, cut inside its
    random (before the extensions), as a client with small records sends it."""
    handshake = hello[5:]
    return b"".join(b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
                    for part in (handshake[:cut], handshake[cut:]))


def test_the_tunnel_classifier_reads_the_same_server_name():
    for name in ("connect.ngrok-agent.com", "Example.ORG", None):
        hello = client_hello(name)
        expected = name.lower() if name else None
        assert tls.parse_tls_client_hello(hello).server_name == expected
        assert tunnels._tls_client_hello_sni(hello) == expected
        # a hello over two records, which the tunnel check used to miss
        assert tunnels._tls_client_hello_sni(split_in_two_records(hello)) == expected


def test_a_tunnel_name_in_a_split_hello_is_found():
    findings = tunnels.classify_tunnel_payload(split_in_two_records(
        client_hello("connect.ngrok-agent.com")), 443)
    assert any(f.type == "tunnel_tool" and f.dialect == "ngrok" for f in findings), findings


def test_a_cut_server_name_list_names_nothing():
    # list length 0x20 announced, 8 bytes present: a host name in it is not certain
    assert tls._server_name(b"\x00\x20\x00\x00\x05abcde") is None
    assert tls._server_name(b"\x00\x08\x00\x00\x05abcde") == "abcde"
    assert tls._server_name(b"\x00\x08\x01\x00\x05abcde") is None     # not host_name


def test_the_second_reader_of_a_payload_gets_the_first_ones_answer():
    hello = client_hello("example.org")
    first = tls.parse_tls_client_hello(hello)
    assert tls.parse_tls_client_hello(memoryview(hello)) is first


@given(st.binary(max_size=600))
def test_never_raises_on_arbitrary_records(body):
    for data in (b"\x16\x03\x01" + body, b"\x16\x03\x01" + len(body).to_bytes(2, "big") + body):
        hello = tls.parse_tls_client_hello(data)
        assert hello is None or isinstance(hello, tls.ClientHello)
        assert tunnels._tls_client_hello_sni(data) == (hello.server_name if hello else None)
