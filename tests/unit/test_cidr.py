# SPDX-License-Identifier: Apache-2.0
"""guard.cidr answers exactly as ipaddress.ip_interface did, only faster."""
from __future__ import annotations

import ipaddress
from itertools import islice

import pytest
from hypothesis import given, settings, strategies as st

from guard.policy.cidr import CIDR_SYNTAX, network_v4, parse_cidr


def by_ipaddress(text: str):
    """The reader's former CIDR parser, kept as the oracle."""
    if not CIDR_SYNTAX.fullmatch(text):
        raise ValueError(f"invalid CIDR {text!r}")
    try:
        interface = ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(f"invalid CIDR {text!r}") from None
    mapped = (isinstance(interface, ipaddress.IPv6Interface)
              and interface.network.prefixlen >= 96 and interface.ip.ipv4_mapped is not None)
    if mapped:
        interface = ipaddress.IPv4Interface((interface.ip.ipv4_mapped,
                                             interface.network.prefixlen - 96))
    network = interface.network
    if interface.ip != network.network_address:
        meant = (f"::ffff:{network.network_address}/{network.prefixlen + 96}"
                 if mapped else str(network))
        raise ValueError(f"host bits set in CIDR {text!r} (did you mean {meant}?)")
    return network


def outcome(parse, text: str):
    try:
        network = parse(text)
    except ValueError as exc:
        return "error", str(exc)
    hosts = list(islice(network.hosts(), 3))
    return type(network), network, hash(network), str(network), hosts


def same(text: str) -> None:
    assert outcome(parse_cidr, text) == outcome(by_ipaddress, text), text


@pytest.mark.parametrize("text", [
    "1.2.3.4", "::1", "10.0.0.0/8", "2001:db8::/32", "::ffff:10.0.0.0/104",
    "::ffff:127.0.0.1", "::ffff:0:0/96", "64:ff9b::/96", "10.0.0.1/8", "2001:db8::1/32",
    "::ffff:10.0.0.1/104", "01.2.3.4", "1.2.3.4/032", "1.2.3.4/33", "::/0", "0.0.0.0/0",
    "1:2:3:4:5:6:7::", "1::2:3:4:5:6:7:8", ":1::", "1:2:3:4:5:6:1.2.3.4", "::1.2.3.04",
    "::ffff:1.2.3.4/95", "::ffff:1.2.3.4/96", "1.2.3.4/31", "1.2.3.4/32", "1.2.3.4/0",
    "::ffff:255.255.255.255/128", "ffff::/1", "1.2.3.256", "1.2.3", "00001::", "0001::",
    "1::/129", "::ffff:0.0.0.1/96", "a::b::c", "1.2.3.4/", "", "1.2.3.4/255.0.0.0",
])
def test_known_forms(text):
    same(text)


@settings(max_examples=1000)
@given(st.text(alphabet="0123456789abcdefABCDEF:./", max_size=24))
def test_arbitrary_text(text):
    same(text)


@settings(max_examples=1000)
@given(st.integers(0, 2**32 - 1), st.integers(0, 32), st.booleans(), st.booleans())
def test_ipv4_and_mapped(value, prefixlen, masked, mapped):
    if masked:
        value &= ~((1 << (32 - prefixlen)) - 1)
    address = ipaddress.IPv4Address(value)
    same(f"::ffff:{address}/{prefixlen + 96}" if mapped else f"{address}/{prefixlen}")


@settings(max_examples=1000)
@given(st.integers(0, 2**128 - 1), st.integers(0, 128), st.integers(0, 128), st.booleans())
def test_ipv6(value, shift, prefixlen, exploded):
    address = ipaddress.IPv6Address(value >> shift)
    same(f"{address.exploded if exploded else address}/{prefixlen}")


@pytest.mark.parametrize("prefixlen", range(33))
def test_network_v4_is_what_the_constructor_makes(prefixlen):
    value = 0xC0A80000 & ~((1 << (32 - prefixlen)) - 1)
    built, public = network_v4(value, prefixlen), ipaddress.IPv4Network((value, prefixlen))
    assert built == public and hash(built) == hash(public) and str(built) == str(public)
    assert set(vars(built)) == set(vars(public))
    assert list(islice(built.hosts(), 3)) == list(islice(public.hosts(), 3))
    assert built.supernet() == public.supernet() if prefixlen else True
