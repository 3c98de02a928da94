"""Device pollers against real servers: a pty RS-485 line with a dead unit, TCP faults, bad values."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import pytest
from helpers.aio import arun, until
from helpers.modbus import METER2, modbus_server, raw_server, rtu_device, rtu_server, tcp_device
from helpers.net import free_port
from helpers.sinks import Collector

from agent.acquisition import BACKOFF_CAP_S, DevicePoller, Snapshot, build_pollers
from agent.points import Quality, Reading, Stream
from protocols.modbus.client import TcpTransport
from protocols.modbus.errors import ModbusConnectionError
from protocols.modbus.registermap import Table, parse_register_map
from protocols.modbus.serialbus import RtuTransport


def test_dead_rtu_unit_does_not_slow_the_live_ones(pty_pair) -> None:
    """THE PROOF: three meters on one line, unit 3 dead; the live two keep their rate."""
    interval, duration = 0.2, 3.0
    sink = Collector()

    async def go():
        async with rtu_server(pty_pair.a, {1: 2300, 2: 2400}):
            devices = [
                rtu_device("m1", 1, pty_pair.b, poll_interval_s=interval, timeout_s=0.2, retries=0),
                rtu_device("m2", 2, pty_pair.b, poll_interval_s=interval, timeout_s=0.2, retries=0),
                rtu_device("m3", 3, pty_pair.b, poll_interval_s=interval, timeout_s=0.2, retries=0),
            ]
            pollers = build_pollers(devices, sink, rng=random.Random(7))
            assert all(isinstance(p.transport, RtuTransport) for p in pollers)
            bus = pollers[0].transport.bus
            assert all(p.transport.bus is bus for p in pollers)  # one arbiter for the line
            tasks = [asyncio.create_task(p.run()) for p in pollers]
            await asyncio.sleep(duration)
            assert not any(t.done() for t in tasks)  # nobody crashed
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert bus._client is None  # the port was closed when the last poller stopped
            return pollers

    m1, m2, m3 = arun(go())
    expected = duration / interval
    for p, base in ((m1, 2300), (m2, 2400)):
        assert p.stats.polls_ok >= 0.8 * expected, p.stats
        assert p.stats.timeouts == 0 and p.stats.consecutive_failures == 0
        last = sink.snapshot.get(f"{p.device.name}.v")
        assert last is not None and last.quality is Quality.GOOD and last.value == pytest.approx(base * 0.1)
        assert sink.snapshot.get(f"{p.device.name}.i").value == base + 1
        kwh = sink.snapshot.get(f"{p.device.name}.kwh")
        assert kwh.value == ((base + 2) << 16) + base + 3 and kwh.stream is Stream.ENERGY and kwh.unit == "kWh"
    dead = sink.of("m3")
    assert dead and all(r.quality is Quality.STALE and r.value is None for r in dead)
    assert m3.stats.polls_ok == 0 and m3.stats.timeouts == m3.stats.polls
    # backed off: without backoff it would have tried ~15 times in 3 s
    assert 3 <= m3.stats.polls <= 6, m3.stats
    assert m3.stats.consecutive_failures == m3.stats.polls and m3.stats.backoff_s > interval


def test_refused_block_is_split_and_the_split_plan_is_kept() -> None:
    rmap = parse_register_map(
        {
            "name": "m",
            "points": [
                {"name": "a", "address": 0, "type": "uint16"},
                {"name": "b", "address": 48, "type": "uint32"},  # holding ends at 49
                {"name": "c", "address": 52, "type": "uint16"},  # not implemented by the device
            ],
        }
    )
    sink = Collector()

    async def go():
        port = free_port()
        async with modbus_server(port):
            dev = tcp_device("t", port, rmap, max_gap=60)
            (poller,) = build_pollers([dev], sink)
            assert isinstance(poller.transport, TcpTransport)
            assert [(b.start, b.count) for b in poller.plan] == [(0, 53)]
            assert await poller.poll_once() is True
            first = poller.stats.splits, poller.stats.exceptions
            assert [(b.start, b.count) for b in poller.plan] == [(0, 1), (48, 2), (52, 1)]
            assert await poller.poll_once() is True
            await poller.transport.close()
            return poller, first

    poller, first = arun(go())
    assert first == (2, 1)  # [a b c] -> [a] + [b c] -> [b] + [c]; c refused on its own
    assert (poller.stats.splits, poller.stats.exceptions) == (2, 2)  # no new splits in cycle 2
    assert sink.snapshot.get("t.a").quality is Quality.GOOD and sink.snapshot.get("t.a").value == 100
    assert sink.snapshot.get("t.b").quality is Quality.GOOD and sink.snapshot.get("t.b").value == (148 << 16) + 149
    assert sink.snapshot.get("t.c").quality is Quality.INVALID and sink.snapshot.get("t.c").value is None
    assert poller.stats.last_error == (
        "Modbus exception reading holding 52+1: exception=2 (illegal data address) function=3"
    )


def test_nan_float_is_invalid_and_the_other_points_good() -> None:
    rmap = parse_register_map(
        {
            "name": "m",
            "points": [
                {"name": "f", "address": 0, "type": "float32"},
                {"name": "g", "address": 2, "type": "float32"},
                {"name": "n", "address": 4, "type": "uint16"},
            ],
        }
    )
    sink = Collector()

    async def go():
        port = free_port()
        async with modbus_server(port) as server:
            await server.async_setValues(1, 3, 0, [0x7FC0, 0x0000, 0x4366, 0x8000])
            (poller,) = build_pollers([tcp_device("t", port, rmap)], sink, clock=lambda: 1_700_000_000.5)
            assert await poller.poll_once() is True
            await poller.transport.close()
            return poller

    poller = arun(go())
    assert poller.stats.decode_errors == 1
    assert poller.stats.last_error.startswith("cannot decode f at 0: ")
    assert poller.stats.last_error_ts == 1_700_000_000.5
    by = {r.point: r for r in sink.readings}
    assert by["t.f"].quality is Quality.INVALID and by["t.f"].value is None
    assert by["t.g"] == Reading("t.g", 1_700_000_000.5, 230.5, "", Quality.GOOD, Stream.TELEMETRY)
    assert by["t.n"].value == 104 and by["t.n"].quality is Quality.GOOD


@pytest.mark.parametrize(
    "kind,quality,counter,error",
    [
        ("silent", Quality.STALE, "timeouts", "timeout reading holding 0+4: no answer within 0.1 s"),
        ("junk", Quality.INVALID, None, " reading holding 0+4: "),
        ("refused", Quality.STALE, "connection_errors", "link down: cannot connect (refused or no route)"),
    ],
)
def test_poller_survives_every_fault_and_marks_quality(
    kind: str, quality: Quality, counter: str | None, error: str
) -> None:
    """Each fault is counted, marks the points' quality, and is kept as the device's last error with its time."""
    sink = Collector()

    async def go():
        port = free_port()
        dev = tcp_device("t", port, poll_interval_s=0.05, timeout_s=0.1, retries=0)
        poller = DevicePoller(
            dev, TcpTransport("127.0.0.1", port, timeout_s=0.1, retries=0), sink, rng=random.Random(1)
        )
        reply = {"silent": lambda req: None, "junk": lambda req: b"\x01\x02\x03\x04\x05\x06\x07\x08\x09" * 3}.get(kind)

        def failed_twice() -> bool:  # two polls over, their readings handed to the sink
            return poller.stats.consecutive_failures >= 2

        if reply is None:  # refused: nothing listens
            task = asyncio.create_task(poller.run())
            await until(failed_twice)
        else:
            async with raw_server(port, reply):
                task = asyncio.create_task(poller.run())
                await until(failed_twice)
        assert not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return poller

    before = time.time()
    poller = arun(go())
    assert poller.stats.polls >= 2 and poller.stats.polls_ok == 0
    assert sink.readings and all(r.value is None for r in sink.readings)
    assert error in poller.stats.last_error and "device=" not in poller.stats.last_error
    assert poller.stats.last_error_ts is not None and before - 1 <= poller.stats.last_error_ts <= time.time()
    if counter:
        assert all(r.quality is quality for r in sink.readings)
    if counter:
        assert getattr(poller.stats, counter) == poller.stats.polls
    else:  # junk is a frame error, or a timeout if pymodbus keeps waiting for the rest of a frame
        assert poller.stats.frame_errors + poller.stats.timeouts == poller.stats.polls
        assert sum(r.quality is Quality.INVALID for r in sink.readings) == 3 * poller.stats.frame_errors
        assert sum(r.quality is Quality.STALE for r in sink.readings) == 3 * poller.stats.timeouts


def test_dead_tcp_device_recovers_to_its_normal_rate() -> None:
    sink = Collector()

    async def go():
        port = free_port()
        dev = tcp_device("t", port, poll_interval_s=0.05, timeout_s=0.2, retries=0)
        (poller,) = build_pollers([dev], sink, rng=random.Random(3))
        task = asyncio.create_task(poller.run())
        await until(lambda: poller.stats.consecutive_failures >= 3)  # refused for a while: backing off
        failing = poller.stats.consecutive_failures
        backoff = poller.stats.backoff_s
        async with modbus_server(port):
            await until(lambda: poller.stats.polls_ok >= 5)
            assert not task.done()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return poller, failing, backoff

    poller, failing, backoff = arun(go())
    assert failing >= 2 and backoff > 0.05
    assert poller.stats.consecutive_failures == 0 and poller.stats.backoff_s == 0.0
    assert poller.stats.polls_ok >= 5  # back to a 50 ms rate once answering
    assert sink.readings[-1].quality is Quality.GOOD


def test_backoff_doubles_with_jitter_and_caps_at_a_minute() -> None:
    dev = tcp_device("t", 1, poll_interval_s=1.0)
    poller = DevicePoller(dev, TcpTransport("127.0.0.1", 1), lambda r: None, rng=random.Random(5))
    delays = []
    for n in range(1, 12):
        poller.stats.consecutive_failures = n
        delays.append(poller._backoff_s())
    assert delays[0] >= 1.0  # never faster than the poll interval
    for n, d in enumerate(delays[1:6], start=2):  # 2, 4, ... 32 s
        assert 0.8 * 2 ** (n - 1) <= d <= 2 ** (n - 1)
    assert all(d <= BACKOFF_CAP_S for d in delays) and delays[-1] >= 0.8 * BACKOFF_CAP_S
    assert len(set(delays[7:])) > 1  # jittered, so a fleet of dead meters does not retry in step


def test_on_a_clock_at_speed_the_backoff_and_its_cap_are_in_that_clocks_seconds() -> None:
    dev = tcp_device("t", 1, poll_interval_s=10.0)
    poller = DevicePoller(dev, TcpTransport("127.0.0.1", 1), lambda r: None, rng=random.Random(5), speed=120.0)
    delays = []
    for n in range(1, 12):
        poller.stats.consecutive_failures = n
        delays.append(poller._backoff_s())
    assert delays[0] >= 10.0 / 120  # the interval, in wall seconds
    assert all(d <= BACKOFF_CAP_S / 120 for d in delays) and delays[-1] >= 0.8 * BACKOFF_CAP_S / 120


def test_snapshot_keeps_the_latest_reading_per_point() -> None:
    s = Snapshot()
    s.update([Reading("d.a", 1.0, 1, "V"), Reading("d.b", 1.0, 2, "A")])
    s.update([Reading("d.a", 2.0, None, "V", Quality.STALE)])
    assert s.get("d.a").ts == 2.0 and s.get("d.a").quality is Quality.STALE
    assert s.get("d.b").value == 2 and s.get("d.x") is None
    assert sorted(k for k, _ in s.items()) == ["d.a", "d.b"]


def test_build_pollers_shares_one_bus_per_port(tmp_path) -> None:
    devs = [
        rtu_device("a", 1, str(tmp_path / "ttyA")),
        rtu_device("b", 2, str(tmp_path / "ttyA")),
        rtu_device("c", 1, str(tmp_path / "ttyB")),
        tcp_device("d", 1502),
    ]
    pa, pb, pc, pd = build_pollers(devs, lambda r: None)
    assert pa.transport.bus is pb.transport.bus is not pc.transport.bus
    assert isinstance(pd.transport, TcpTransport) and pd.transport.port == 1502


def test_poller_stops_even_when_the_transport_swallows_the_cancel() -> None:
    """Python 3.11's asyncio.wait_for (used inside pymodbus) can lose a cancel that arrives as the
    reply does; the poller must still stop, or the agent's shutdown hangs. That race cannot be made
    to happen on demand, so a transport that always swallows the cancel stands in for it."""

    class SwallowingTransport:
        def __init__(self) -> None:
            self.reads = 0

        async def read(self, table, start, count, unit_id):  # noqa: ANN001, ANN202
            self.reads += 1
            with contextlib.suppress(asyncio.CancelledError):  # the lost cancel
                await asyncio.sleep(0.01)
            return [0] * count

        async def close(self) -> None:
            pass

    async def go() -> bool:
        transport = SwallowingTransport()
        poller = DevicePoller(tcp_device("t", 1, poll_interval_s=0.001), transport, Collector())
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.05)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        return task in done and task.cancelled()

    assert arun(go())


# ---- TCP peers that go away ------------------------------------------------------------------------------------


def test_tcp_peer_that_accepts_then_closes_is_a_link_error_and_not_fatal() -> None:
    """A peer that accepts and closes at once (a gateway out of connection slots does this)."""
    sink = Collector()

    async def go():
        port = free_port()

        async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(slam, "127.0.0.1", port)
        try:
            t = TcpTransport("127.0.0.1", port, timeout_s=0.3, retries=1)
            with pytest.raises(ModbusConnectionError):
                await t.read(Table.HOLDING, 0, 2, 1)
            dev = tcp_device("t", port, poll_interval_s=0.05, timeout_s=0.3, retries=0)
            poller = DevicePoller(dev, t, sink, rng=random.Random(1))
            task = asyncio.create_task(poller.run())
            await until(lambda: poller.stats.timeouts + poller.stats.connection_errors >= 3, timeout=10)
            assert not task.done()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return poller
        finally:
            server.close()
            await server.wait_closed()

    poller = arun(go())
    s = poller.stats
    # a link error, told at once: pymodbus alone leaves the request waiting for its timeout
    assert s.polls_ok == 0 and s.connection_errors >= 3 and s.timeouts == 0
    assert sink.readings and all(r.quality is Quality.STALE and r.value is None for r in sink.readings)


def test_poller_reads_again_after_the_tcp_server_restarts() -> None:
    """An established connection whose server goes away and comes back on the same port: STALE
    while it is gone, GOOD again after, without restarting the poller."""
    sink = Collector()

    async def go():
        port = free_port()
        dev = tcp_device(
            "t", port, rmap=METER2, poll_interval_s=0.05, timeout_s=0.2, retries=0
        )  # holding 0, 1 = 100, 101 on modbus_server
        (poller,) = build_pollers([dev], sink, rng=random.Random(3))
        task = asyncio.create_task(poller.run())
        async with modbus_server(port):
            await until(lambda: poller.stats.polls_ok >= 2, timeout=10)
        await until(lambda: poller.stats.consecutive_failures >= 1, timeout=10)
        down = len(sink.readings)
        async with modbus_server(port):
            await until(lambda: poller.stats.consecutive_failures == 0 and len(sink.readings) > down + 2, timeout=10)
            assert not task.done()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return down

    down = arun(go())
    gone = [r for r in sink.readings[:down] if r.quality is not Quality.GOOD]
    assert gone and all(r.quality is Quality.STALE for r in gone)
    assert sink.snapshot.get("t.v").quality is Quality.GOOD and sink.snapshot.get("t.v").value == 100
    assert sink.snapshot.get("t.w").value == 101


class _LineWaitTransport:
    """A link whose request waits ``wait`` seconds (for its turn on a line) before it goes out, then ``trip`` seconds
    until the answer; the time is the test's own (``now``), the poller's clock and the monotonic clock both."""

    def __init__(self, now: list[float], wait: float, trip: float, *, says_when_sent: bool) -> None:
        self.now, self.wait, self.trip, self.says = now, wait, trip, says_when_sent
        self.sent_at: float | None = None

    async def read(self, table, start, count, unit_id):  # noqa: ANN001, ANN202
        self.now[0] += self.wait
        if self.says:
            self.sent_at = float(self.now[0])
        self.now[0] += self.trip
        return list(range(count))

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(("says_when_sent", "expected"), [(True, 1_000.0 + 2.0 + 0.5), (False, 1_000.0 + 1.5)])
def test_values_are_stamped_halfway_between_the_request_going_out_and_the_answer(
    mocker, says_when_sent: bool, expected: float
) -> None:
    """The device samples its registers between request and answer: stamped halfway, not at the answer's arrival.
    A transport that says when its request went out (an RTU request waits for the line) is taken at its word."""
    now = [0.0]
    mocker.patch("agent.acquisition.poller.time.monotonic", lambda: now[0])
    sink = Collector()
    transport = _LineWaitTransport(now, wait=2.0, trip=1.0, says_when_sent=says_when_sent)
    poller = DevicePoller(tcp_device("t", 1), transport, sink, clock=lambda: 1_000.0 + now[0])
    assert arun(poller.poll_once()) is True
    assert sink.readings and all(r.ts == pytest.approx(expected) for r in sink.readings)
