"""protocols/metrics.py's server on a loopback port: the figures gathered in the event loop, a scrape that cannot
have them answered 503 (never served stale, never holding up the loop), the server gone once its task is
cancelled."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from helpers.aio import async_test, until
from helpers.metrics import scrape
from helpers.net import free_port

from protocols.metrics import Families, LoopCollector, MetricsConfig, MetricsServer, Spec

SPECS = {"t_ticks_total": Spec("counter", "Ticks"), "t_loop_thread": Spec("gauge", "1 when read in the loop's thread")}


def _get(port: int, host: str = "127.0.0.1") -> tuple[int, str]:
    """(status, body) of GET /metrics, from another thread than the loop's (as Prometheus's would be)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class Program:
    """A program whose figures only its event loop changes."""

    def __init__(self, *, timeout_s: float = 5.0, fail: bool = False) -> None:
        self.ticks = 0
        self.loop_thread: int | None = None
        self.timeout_s = timeout_s
        self.fail = fail

    def gather(self) -> Families:
        if self.fail:
            raise RuntimeError("a bug in gather")
        f = Families(SPECS)
        f.add("t_ticks_total", self.ticks)
        f.add("t_loop_thread", threading.get_ident() == self.loop_thread)
        return f

    def collectors(self, loop: asyncio.AbstractEventLoop) -> list:
        self.loop_thread = threading.get_ident()
        return [LoopCollector(self.gather, loop, timeout_s=self.timeout_s)]


async def _serving(server: MetricsServer, program: Program) -> asyncio.Task[None]:
    task = asyncio.create_task(server.run(program.collectors))
    await until(lambda: server.port is not None, timeout=10)
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@async_test
async def test_the_figures_are_read_in_the_event_loop_and_served() -> None:
    program, port = Program(), free_port()
    program.ticks = 41
    task = await _serving(MetricsServer(MetricsConfig("127.0.0.1", port), "test"), program)
    try:
        program.ticks += 1
        m = await asyncio.to_thread(scrape, port)
        assert m.value("t_ticks_total") == 42
        assert m.value("t_loop_thread") == 1, "gather ran in the loop's thread, not the HTTP server's"
        assert m.has("process_cpu_seconds_total")
    finally:
        await _stop(task)
    with pytest.raises(OSError):
        await asyncio.to_thread(scrape, port, "/metrics", 2.0)  # cancelled: nothing listens any more


@async_test
async def test_a_loop_that_does_not_answer_in_time_fails_the_scrape_with_503(caplog) -> None:
    program, port = Program(timeout_s=0.3), free_port()
    task = await _serving(MetricsServer(MetricsConfig("127.0.0.1", port), "test"), program)
    try:
        result: list[tuple[int, str]] = []
        client = threading.Thread(target=lambda: result.append(_get(port)))
        with caplog.at_level(logging.WARNING, logger="gridedge.metrics"):
            client.start()
            time.sleep(1.0)  # the loop stuck (deliberately blocking it) while the scrape waits for its figures
            await asyncio.to_thread(client.join, 10)
        ((status, body),) = result
        assert status == 503 and "did not answer within 0.3 s" in body, body
        assert "event=metrics_scrape_failed" in caplog.text and "program=test" in caplog.text
        assert (await asyncio.to_thread(_get, port))[0] == 200, "the next scrape, the loop free again, is served"
    finally:
        await _stop(task)


@async_test
async def test_a_gather_that_raises_fails_that_scrape_only() -> None:
    program, port = Program(fail=True), free_port()
    task = await _serving(MetricsServer(MetricsConfig("127.0.0.1", port), "test"), program)
    try:
        status, body = await asyncio.to_thread(_get, port)
        assert status == 503 and "RuntimeError: a bug in gather" in body
        program.fail = False
        assert (await asyncio.to_thread(_get, port))[0] == 200
    finally:
        await _stop(task)


@async_test
async def test_a_port_in_use_is_an_os_error_naming_the_address() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot serve the metrics at 127.0.0.1:{port}"):
            await MetricsServer(MetricsConfig("127.0.0.1", port), "test").run(Program().collectors)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
@async_test
async def test_an_ipv6_address_is_served() -> None:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    task = await _serving(MetricsServer(MetricsConfig("::1", port), "test"), Program())
    try:
        status, body = await asyncio.to_thread(_get, port, "[::1]")
        assert status == 200 and "t_ticks_total 0.0" in body
    finally:
        await _stop(task)
