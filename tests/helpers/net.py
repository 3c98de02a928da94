"""Loopback ports: a free one for a server the test starts, and waiting until something listens on one."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

_LOWEST = 10_000  # below: the well-known and registered ports of services a machine may run


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives outgoing connections (net.ipv4.ip_local_port_range)."""
    try:
        lo, hi = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return lo, hi


def free_port() -> int:
    """A loopback port nothing is bound to, below the ephemeral range.

    A port from the ephemeral range (what binding port 0 gives) can be handed to any outgoing connection once the
    test's server is down: a broker the test kills and starts again on its port then finds it taken, or a client
    retrying the dead port connects to itself (TCP self-connect: it reads its own CONNECT back, "Unrecognised
    command 16") and holds the port. Below the range only a server binding it explicitly can take it."""
    lo, _hi = ephemeral_range()
    if lo - _LOWEST < 1000:  # a machine whose ephemeral range starts low: the kernel's choice
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(_LOWEST, lo)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))  # no SO_REUSEADDR: a port still in TIME_WAIT is not free either
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {_LOWEST}..{lo - 1}")


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
