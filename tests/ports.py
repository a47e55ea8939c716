"""Ports for servers the tests start on loopback, chosen outside the kernel's ephemeral range.

A port the kernel hands out for ``bind(0)`` comes from the same range it uses for the source port of every outgoing
connection, so a server started seconds later on it can find the port taken by a client socket (CI saw a C-MOVE
listener fail with "Address already in use" that way). Ports below that range are never handed to clients.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_GIVEN: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    for host in ("127.0.0.1", ""):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port no server of this run was given, free now on every interface, that no outgoing connection will take."""
    high = _ephemeral_low() - 1
    low = max(1024, high - 12000)
    rng = random.Random()
    for _ in range(500):
        port = rng.randint(low, high)
        if port not in _GIVEN and _bindable(port):
            _GIVEN.add(port)
            return port
    raise RuntimeError(f"no free port in {low}-{high}")
