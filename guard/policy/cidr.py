# SPDX-License-Identifier: Apache-2.0
"""CIDR text -> ipaddress networks, fast enough for policies of 10,000 rules.

`ipaddress.ip_interface` costs tens of microseconds a call; inet_pton and
integer arithmetic give the same answers (same accepted forms, same
networks, same problem messages) at a small fraction of that, and
`network_v4` builds an IPv4Network from an integer without re-parsing it.
tests/unit/test_cidr.py holds both to ipaddress's own results.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Network

Network = IPv4Network | IPv6Network

# Only a plain address with an optional decimal prefix length: ipaddress would
# also take netmasks ("/255.0.0.0") and IPv6 scope ids, which a rule never means.
CIDR_SYNTAX = re.compile(r"[0-9A-Fa-f:.]+(/[0-9]{1,3})?")

_V4_MAPPED = 0xFFFF << 32           # ::ffff:0:0/96, IPv4-mapped IPv6 addresses
_inet_pton = socket.inet_pton
_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6
_new = object.__new__
_NETMASK_V4 = [IPv4Network._make_netmask(length)[0] for length in range(33)]


def network_v4(value: int, prefixlen: int) -> IPv4Network:
    """IPv4Network((value, prefixlen)) for a value without host bits, built
    the way IPv4Network.__init__ leaves it but without parsing anything again
    (a fifth of the time; the reader builds one per rule)."""
    address = _new(IPv4Address)
    address._ip = value
    network = _new(IPv4Network)
    network.network_address = address
    network.netmask = _NETMASK_V4[prefixlen]
    network._prefixlen = prefixlen
    if prefixlen == 31:
        network.hosts = network.__iter__
    elif prefixlen == 32:
        network.hosts = lambda: [IPv4Address(value)]
    return network


def host_mask(prefixlen: int, width: int) -> int:
    """The bits of an address below prefixlen."""
    return (1 << (width - prefixlen)) - 1


def parse_cidr(text: str) -> Network:
    """A network from "addr/len" or a bare address, refusing host bits.

    ValueError says what is wrong, in the words policy problems use. An
    IPv4-mapped IPv6 network (::ffff:a.b.c.d/n, n >= 96) becomes the IPv4
    network it maps: the kernel judges those destinations as IPv4.
    """
    if not CIDR_SYNTAX.fullmatch(text):
        raise ValueError(f"invalid CIDR {text!r}")
    address, _, length = text.partition("/")
    if ":" in address:
        family, width = _AF_INET6, 128
    else:
        family, width = _AF_INET, 32
    try:
        value = int.from_bytes(_inet_pton(family, address), "big")
    except OSError:
        raise ValueError(f"invalid CIDR {text!r}") from None
    prefixlen = int(length) if length else width
    if prefixlen > width:
        raise ValueError(f"invalid CIDR {text!r}")
    mapped = width == 128 and prefixlen >= 96 and value >> 32 == 0xFFFF
    if mapped:
        value, prefixlen, width = value & 0xFFFFFFFF, prefixlen - 96, 32
    network_value = value & ~host_mask(prefixlen, width)
    if value != network_value:
        if mapped:
            meant = f"::ffff:{IPv4Address(network_value)}/{prefixlen + 96}"
        elif width == 32:
            meant = f"{IPv4Address(network_value)}/{prefixlen}"
        else:
            meant = f"{ipaddress.IPv6Address(network_value)}/{prefixlen}"
        raise ValueError(f"host bits set in CIDR {text!r} (did you mean {meant}?)")
    if width == 32:
        return network_v4(value, prefixlen)
    return IPv6Network((value, prefixlen))
