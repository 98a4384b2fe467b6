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
    file is missing or unreadable. Malformed lines are skipped, as libc does."""
    try:
        with open(path, "rb") as f:
            text = f.read(READ_MAX).decode("utf-8", "replace")
    except OSError:
        return ()
    found: list[IPv4Network | IPv6Network] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                address = ipaddress.ip_address(words[1].split("%")[0])
            except ValueError:
                continue
            found.append(ipaddress.ip_network(address))
    return tuple(dict.fromkeys(found))
