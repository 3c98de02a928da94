"""The tests' free loopback ports (tests/helpers/net.py): below the kernel's ephemeral range, and free."""

from __future__ import annotations

import socket

from helpers.net import ephemeral_range, free_port


def test_free_ports_lie_below_the_ephemeral_range_and_can_be_bound() -> None:
    lo, hi = ephemeral_range()
    assert 1024 <= lo < hi <= 65535
    ports = {free_port() for _ in range(20)}
    assert len(ports) > 1  # drawn at random, not one fixed port
    for port in ports:
        assert port < lo  # no outgoing connection is ever given it: a server restarted on it finds it free
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))


def test_a_port_something_listens_on_is_never_given() -> None:
    lo, _hi = ephemeral_range()
    held = []
    try:
        for port in range(10_000, 10_200):  # hold the low end of the pool, then draw often from it
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            s.listen()
            held.append(s)
        taken = {s.getsockname()[1] for s in held}
        assert not taken & {free_port() for _ in range(200)}
    finally:
        for s in held:
            s.close()
