# SPDX-License-Identifier: Apache-2.0
"""A listener for test hosts (guard.demo.sandbox.TestHost.serve).

python -m guard.demo.testserver --tcp|--udp PORT...  binds every PORT on all
addresses, prints "listening", then one line per connection or datagram:
"accept PORT" when a connection is accepted, "tcp PORT BYTES" once it closes
(also by a reset: a guard that destroys a client's socket resets it),
"udp PORT BYTES" per datagram. BYTES is what the server received. It exits
when its parent ends it or after an hour, whichever comes first.
"""
from __future__ import annotations

import selectors
import socket
import sys
import time

LIFETIME_S = 3600


def main(argv: list[str]) -> int:
    udp = argv[0] == "--udp"
    ports = [int(p) for p in argv[1:]]
    sel = selectors.DefaultSelector()
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        if not udp:
            sock.listen(128)
        sel.register(sock, selectors.EVENT_READ, ("listen", port, 0))
    print("listening", flush=True)
    deadline = time.monotonic() + LIFETIME_S
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            role, port, received = key.data
            sock = key.fileobj
            if udp:
                data, _addr = sock.recvfrom(65536)
                print(f"udp {port} {len(data)}", flush=True)
            elif role == "listen":
                conn, _addr = sock.accept()
                sel.register(conn, selectors.EVENT_READ, ("conn", port, 0))
                print(f"accept {port}", flush=True)
            else:
                try:
                    data = sock.recv(65536)
                except OSError:   # ECONNRESET: the client's socket was destroyed
                    data = b""
                if data:
                    sel.modify(sock, selectors.EVENT_READ, ("conn", port, received + len(data)))
                else:
                    print(f"tcp {port} {received}", flush=True)
                    sel.unregister(sock)
                    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
