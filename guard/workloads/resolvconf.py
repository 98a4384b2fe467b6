# SPDX-License-Identifier: Apache-2.0
"""The host's resolvers: the `nameserver` lines of /etc/resolv.conf, which a
policy that allows by name trusts when it lists no spec.dns.resolvers."""
from __future__ import annotations

import ipaddress
from ipaddress import IPv4Network, IPv6Network

RESOLV_CONF = "/etc/resolv.conf"
READ_MAX = 64 * 1024   # a resolv.conf is a few lines; more is not read


def nameservers(path: str = RESOLV_CONF) -> tuple[IPv4Network | IPv6Network, ...]:
    """Each nameserver address as a host network, in file order; () when the
    file is missing or unreadable. Malformed lines are skipped, as libc does.
    An IPv4-mapped address is its IPv4 address: its answers arrive as IPv4."""
    try:
        with open(path, "rb") as f:
            data = f.read(READ_MAX + 1)
    except OSError:
        return ()
    if len(data) > READ_MAX:
        # the file goes on past what is read: its last line read may be cut,
        # and a cut address is another one ("10.0.0.12" of "10.0.0.123")
        data = data[:READ_MAX]
        data = data[:data.rfind(b"\n") + 1]
    found: list[IPv4Network | IPv6Network] = []
    # lines end at "\n" only, as libc reads them
    for line in data.decode("utf-8", "replace").split("\n"):
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                address = ipaddress.ip_address(words[1].split("%")[0])
            except ValueError:
                continue
            if address.version == 6 and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            found.append(ipaddress.ip_network(address))
    return tuple(dict.fromkeys(found))
