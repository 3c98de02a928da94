"""Polling a Modbus RTU line that misbehaves: the faults a real RS-485 line produces, each met by the transport and
the poller without losing a live unit's data.

The RTU device here is scripted byte by byte on one end of a socat pty pair (our own CRC, our own
framing), so it can do what a pymodbus server never does: answer late, answer for another unit id,
send a wrong byte count, a bad CRC or noise.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from helpers.aio import arun
from helpers.modbus import METER2, rtu_device
from helpers.sinks import Collector

from agent.acquisition import build_pollers
from agent.points import Quality
from protocols.modbus.errors import ModbusTimeout
from protocols.modbus.readplan import split_block
from protocols.modbus.registermap import Table, parse_register_map
from protocols.modbus.serialbus import RtuTransport, SerialBus


def crc16(data: bytes) -> bytes:
    """Modbus CRC-16 (poly 0xA001 reflected, init 0xFFFF), low byte first (Serial Line v1.02, 6.2.2)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes((crc & 0xFF, crc >> 8))


def frame(unit: int, pdu: bytes) -> bytes:
    return bytes((unit,)) + pdu + crc16(bytes((unit,)) + pdu)


def registers_answer(unit: int, fc: int, values: list[int]) -> bytes:
    return frame(unit, bytes((fc, 2 * len(values))) + struct.pack(f">{len(values)}H", *values))


@dataclass
class Request:
    unit: int
    fc: int
    start: int
    count: int
    n: int  # 0-based index of this request on the line


# (request) -> [(delay after the request [s], bytes to send), ...]
Script = Callable[[Request], list[tuple[float, bytes]]]


@dataclass
class ScriptedLine:
    requests: list[Request] = field(default_factory=list)


@asynccontextmanager
async def scripted_rtu(port: str, script: Script) -> AsyncIterator[ScriptedLine]:
    """A hand-made RTU slave side of the line: every read request (8 bytes, CRC checked) is passed to
    ``script``, whose answers are written after their delays, independently of later requests."""
    fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    loop = asyncio.get_running_loop()
    line = ScriptedLine()
    buf = bytearray()
    pending: set[asyncio.Task] = set()

    async def send_later(delay: float, data: bytes) -> None:
        await asyncio.sleep(delay)
        os.write(fd, data)

    def readable() -> None:
        try:
            buf.extend(os.read(fd, 4096))
        except BlockingIOError:
            return
        while len(buf) >= 8:
            adu = bytes(buf[:8])
            if crc16(adu[:6]) != adu[6:]:
                del buf[0]  # hunt for the next frame
                continue
            del buf[:8]
            unit, fc, start, count = struct.unpack(">BBHH", adu[:6])
            req = Request(unit, fc, start, count, len(line.requests))
            line.requests.append(req)
            for delay, data in script(req):
                task = loop.create_task(send_later(delay, data))
                pending.add(task)
                task.add_done_callback(pending.discard)

    loop.add_reader(fd, readable)
    try:
        yield line
    finally:
        loop.remove_reader(fd)
        for task in list(pending):
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        os.close(fd)


def holding(req: Request, base: int = 1000) -> bytes:
    """The correct answer: holding register k holds base + k."""
    return registers_answer(req.unit, req.fc, [base + req.start + k for k in range(req.count)])


# -- late answers --------------------------------------------------------------------------------


def test_a_late_answer_is_never_taken_for_the_next_request(pty_pair) -> None:
    """A unit that answers 0.45 s after each request, polled with a 0.3 s timeout: its late answer to
    one request must not be read as the answer to the next (RTU frames carry no transaction id)."""

    async def go():
        async with scripted_rtu(pty_pair.a, lambda req: [(0.45, holding(req))]) as line:
            bus = SerialBus(pty_pair.b, 19200)
            t = RtuTransport(bus, timeout_s=0.3, retries=0)
            results = []
            for start in (0, 10, 20, 30):
                try:
                    results.append(await t.read(Table.HOLDING, start, 2, 1))
                except ModbusTimeout:
                    results.append("timeout")
            await t.close()
            return results, line

    results, line = arun(go())
    assert len(line.requests) == 4
    # each read gives its own registers or nothing, never the late answer to the read before it
    for start, got in zip((0, 10, 20, 30), results, strict=True):
        assert got in ("timeout", [1000 + start, 1001 + start]), (start, results)


def test_late_answers_of_a_slow_unit_reach_neither_it_nor_the_live_unit(pty_pair) -> None:
    """Unit 3 answers late; unit 1 answers at once: unit 1's reads right after unit 3's timeouts are
    its own values (the late frame carries unit id 3 and is dropped)."""

    def script(req: Request) -> list[tuple[float, bytes]]:
        return [(0.35, holding(req, 3000))] if req.unit == 3 else [(0.0, holding(req))]

    async def go():
        async with scripted_rtu(pty_pair.a, script):
            bus = SerialBus(pty_pair.b, 19200)
            slow = RtuTransport(bus, timeout_s=0.2, retries=0)
            live = RtuTransport(bus, timeout_s=0.5, retries=0)
            out = []
            for _ in range(3):
                with pytest.raises(ModbusTimeout):
                    await slow.read(Table.HOLDING, 0, 2, 3)
                out.append(await live.read(Table.HOLDING, 0, 2, 1))
            await slow.close()
            await live.close()
            return out

    assert arun(go()) == [[1000, 1001]] * 3


# -- garbage on the line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault,stale",
    [
        # the right answer with one bit of the data flipped: the CRC no longer matches
        ("bad_crc", True),
        # line noise and nothing else
        ("noise", True),
        # a well-formed answer from unit 9 (e.g. an address conflict on the bus): not ours, ignored
        ("wrong_unit", True),
        # a well-formed frame claiming 1 register where 2 were asked for
        ("wrong_count", False),
        # a well-formed frame for another function code
        ("wrong_function", False),
        # noise right before a good answer: the framer must resync on the good frame (or time out)
        ("noise_then_good", None),
    ],
)
def test_a_garbled_answer_is_reported_and_the_poller_carries_on(pty_pair, fault: str, stale: bool | None) -> None:
    """The first three requests get the fault, every later one the right answer: the faulty cycles
    are marked (STALE for no usable answer, INVALID for a wrong one) and counted, never fatal, and
    the poller is GOOD again with the right values."""

    def script(req: Request) -> list[tuple[float, bytes]]:
        good = holding(req)
        if req.n >= 3:
            return [(0.0, good)]
        if fault == "bad_crc":
            bad = bytearray(good)
            bad[4] ^= 0x01
            return [(0.0, bytes(bad))]
        if fault == "noise":
            return [(0.0, bytes(random.Random(req.n).randrange(256) for _ in range(13)))]
        if fault == "wrong_unit":
            return [(0.0, registers_answer(9, req.fc, [1, 2]))]
        if fault == "wrong_count":
            return [(0.0, registers_answer(req.unit, req.fc, [1000]))]
        if fault == "wrong_function":
            return [(0.0, registers_answer(req.unit, 4, [1, 2]))]
        return [(0.0, b"\xff\x00\x13" + good)]

    sink = Collector()

    async def go():
        async with scripted_rtu(pty_pair.a, script) as line:
            dev = rtu_device("m", 1, pty_pair.b, register_map=METER2, poll_interval_s=0.05, timeout_s=0.15, retries=0)
            (poller,) = build_pollers([dev], sink, rng=random.Random(2))
            task = asyncio.create_task(poller.run())
            # wait for the answers, not only the requests: the sixth request is on the line a
            # moment before the poller has read and counted its answer
            for _ in range(100):
                await asyncio.sleep(0.05)
                if len(line.requests) >= 6 and poller.stats.polls_ok >= 3:
                    break
            assert not task.done()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return poller

    poller = arun(go())
    s = poller.stats
    assert s.polls >= 6 and s.polls_ok >= 3
    bad = [r for r in sink.readings if r.quality is not Quality.GOOD]
    assert all(r.value is None for r in bad)
    if stale is True:
        assert s.timeouts == 3 and s.frame_errors == 0 and len(bad) == 6
        assert {r.quality for r in bad} == {Quality.STALE}
    elif stale is False:
        assert s.frame_errors == 3 and s.timeouts == 0 and len(bad) == 6
        assert {r.quality for r in bad} == {Quality.INVALID}
    else:
        assert s.frame_errors + s.timeouts <= 3
    assert sink.snapshot.get("m.v").quality is Quality.GOOD and sink.snapshot.get("m.v").value == 1000
    assert sink.snapshot.get("m.w").value == 1001


# -- exception answers ---------------------------------------------------------------------------


def test_exception_04_for_a_while_does_not_split_the_plan_for_ever(pty_pair) -> None:
    """A meter that answers 'device failure' (04) to everything while it boots: each point is
    INVALID and counted meanwhile, and once it answers again the poller is back to one request per
    cycle, not one per point."""
    rmap = parse_register_map(
        {"name": "m", "points": [{"name": f"p{k}", "address": k, "type": "uint16"} for k in range(8)]}
    )
    booting = {"on": True}

    def script(req: Request) -> list[tuple[float, bytes]]:
        if booting["on"]:
            return [(0.0, frame(req.unit, bytes((req.fc | 0x80, 4))))]
        return [(0.0, holding(req))]

    sink = Collector()

    async def go():
        async with scripted_rtu(pty_pair.a, script) as line:
            dev = rtu_device("m", 1, pty_pair.b, register_map=rmap, poll_interval_s=0.05, timeout_s=0.3, retries=0)
            (poller,) = build_pollers([dev], sink, rng=random.Random(2))
            await poller.poll_once()
            booting["on"] = False
            seen = len(line.requests)
            await poller.poll_once()
            await poller.poll_once()
            await poller.transport.close()
            return poller, line.requests[seen:]

    poller, after = arun(go())
    first = sink.readings[:8]
    assert [r.quality for r in first] == [Quality.INVALID] * 8
    assert poller.stats.exceptions == 8  # one per point: it was split down to single points
    assert [(r.start, r.count) for r in after] == [(0, 8), (0, 8)]
    assert [r.value for r in sink.readings[-8:]] == [1000 + k for k in range(8)]


def test_a_block_with_one_missing_address_stays_split(pty_pair) -> None:
    """The split plan is kept when it did isolate the refused address (the other points answer)."""
    rmap = parse_register_map(
        {"name": "m", "points": [{"name": f"p{k}", "address": k, "type": "uint16"} for k in range(4)]}
    )

    def script(req: Request) -> list[tuple[float, bytes]]:
        if req.start <= 3 < req.start + req.count:  # register 3 is not implemented
            return [(0.0, frame(req.unit, bytes((req.fc | 0x80, 2))))]
        return [(0.0, holding(req))]

    sink = Collector()

    async def go():
        async with scripted_rtu(pty_pair.a, script) as line:
            dev = rtu_device("m", 1, pty_pair.b, register_map=rmap, timeout_s=0.3, retries=0)
            (poller,) = build_pollers([dev], sink, rng=random.Random(2))
            await poller.poll_once()
            seen = len(line.requests)
            await poller.poll_once()
            await poller.transport.close()
            return line.requests[seen:]

    second = arun(go())
    assert [(r.start, r.count) for r in second] == [(0, 2), (2, 1), (3, 1)]
    assert [r.value for r in sink.readings[-4:]] == [1000, 1001, 1002, None]
    assert sink.readings[-1].quality is Quality.INVALID


# -- timeouts inside a plan ----------------------------------------------------------------------

SILENT_AT_12 = parse_register_map(
    {
        "name": "m",
        "points": [
            {"name": "a0", "address": 0, "type": "uint16"},
            {"name": "a1", "address": 1, "type": "uint16"},
            *({"name": f"b{k}", "address": k, "type": "uint16"} for k in (10, 11, 12, 13)),
        ],
    }
)


def test_a_block_the_device_ignores_is_bisected_and_the_other_points_are_read(pty_pair) -> None:
    """A meter that stays silent (no exception) when a read touches register 12, which it lacks:
    the block 10..13 times out while block 0..1 answered in the same cycle, so it is bisected, a
    step per cycle, until only register 12 is missing; then every cycle reads all the rest GOOD."""

    def script(req: Request) -> list[tuple[float, bytes]]:
        return [] if req.start <= 12 < req.start + req.count else [(0.0, holding(req))]

    sink = Collector()

    async def go():
        async with scripted_rtu(pty_pair.a, script) as line:
            dev = rtu_device("m", 1, pty_pair.b, register_map=SILENT_AT_12, timeout_s=0.1, retries=0, max_gap=0)
            (poller,) = build_pollers([dev], sink, rng=random.Random(2))
            for _ in range(4):
                await poller.poll_once()
            seen = len(line.requests)
            mark = len(sink.readings)
            await poller.poll_once()
            await poller.transport.close()
            return poller, line.requests[seen:], sink.readings[mark:]

    poller, last_requests, last = arun(go())
    assert [(r.start, r.count) for r in last_requests] == [(0, 2), (10, 2), (12, 1), (13, 1)]
    by = {r.point: r for r in last}
    assert {k: (by[f"m.{k}"].value, by[f"m.{k}"].quality) for k in ("a0", "a1", "b10", "b11", "b13")} == {
        "a0": (1000, Quality.GOOD),
        "a1": (1001, Quality.GOOD),
        "b10": (1010, Quality.GOOD),
        "b11": (1011, Quality.GOOD),
        "b13": (1013, Quality.GOOD),
    }
    assert by["m.b12"].quality is Quality.STALE and by["m.b12"].value is None
    assert poller.stats.consecutive_failures == 0


def test_a_dead_device_costs_one_timeout_per_cycle_and_its_plan_stays_whole(pty_pair) -> None:
    """Silent from the first request: the first block times out and nothing more is sent that cycle
    (no bisecting without evidence the device is alive)."""
    sink = Collector()

    async def go():
        async with scripted_rtu(pty_pair.a, lambda req: []) as line:
            dev = rtu_device("m", 1, pty_pair.b, register_map=SILENT_AT_12, timeout_s=0.1, retries=0, max_gap=0)
            (poller,) = build_pollers([dev], sink, rng=random.Random(2))
            for _ in range(3):
                await poller.poll_once()
            await poller.transport.close()
            return poller, line.requests

    poller, requests = arun(go())
    assert [(r.start, r.count) for r in requests] == [(0, 2)] * 3
    assert [(b.start, b.count) for b in poller.plan] == [(0, 2), (10, 4)]
    assert poller.stats.timeouts == 3 and len(sink.readings) == 3 * 6
    assert all(r.quality is Quality.STALE for r in sink.readings)


def test_parts_of_a_split_block_after_a_timeout_stay_in_the_plan(pty_pair) -> None:
    """Block 10..13 refused (02), its first half then times out: the second half's points are
    STALE in that cycle, not missing, and read in the next cycle once the meter answers."""
    rmap = parse_register_map(
        {"name": "m", "points": [{"name": f"b{k}", "address": k, "type": "uint16"} for k in (10, 11, 12, 13)]}
    )
    state = {"n": 0}

    def script(req: Request) -> list[tuple[float, bytes]]:
        if state["n"] == 0:
            if req.count == 4:
                return [(0.0, frame(req.unit, bytes((req.fc | 0x80, 2))))]
            return []  # silent on the half
        return [(0.0, holding(req))]

    sink = Collector()

    async def go():
        async with scripted_rtu(pty_pair.a, script):
            dev = rtu_device("m", 1, pty_pair.b, register_map=rmap, timeout_s=0.1, retries=0)
            (poller,) = build_pollers([dev], sink, rng=random.Random(2))
            await poller.poll_once()
            first = list(sink.readings)
            state["n"] = 1
            await poller.poll_once()
            await poller.transport.close()
            return first, sink.readings[len(first) :]

    first, second = arun(go())
    assert sorted(r.point for r in first) == ["m.b10", "m.b11", "m.b12", "m.b13"]
    assert all(r.quality is Quality.STALE for r in first)
    assert sorted((r.point, r.value) for r in second) == [
        ("m.b10", 1010), ("m.b11", 1011), ("m.b12", 1012), ("m.b13", 1013),
    ]  # fmt: skip


def test_stray_bytes_left_unread_are_flushed_before_the_next_request(pty_pair) -> None:
    """Line noise (a stray header promising a 16-byte answer) comes in while the event loop is busy:
    the arbiter discards it before sending, so the next answer is read alone and on time."""

    async def go():
        async with scripted_rtu(pty_pair.a, lambda req: [(0.0, holding(req))]):
            bus = SerialBus(pty_pair.b, 19200)
            t = RtuTransport(bus, timeout_s=0.3, retries=0)
            assert await t.read(Table.HOLDING, 0, 2, 1) == [1000, 1001]
            fd = os.open(pty_pair.a, os.O_WRONLY | os.O_NOCTTY)
            os.write(fd, b"\x01\x03\x10")
            os.close(fd)
            time.sleep(0.1)  # a busy loop: the noise reaches the port's buffer, nobody reads it
            got = await t.read(Table.HOLDING, 4, 2, 1)
            await t.close()
            return got, bus.flushed_bytes

    assert arun(go()) == ([1004, 1005], 3)


def test_every_reading_has_a_utc_epoch_timestamp_and_a_quality(pty_pair) -> None:
    """Readings of a good block and of a refused one: ts is time.time() (seconds since the epoch,
    UTC) taken during the poll, quality says GOOD or INVALID, units come from the map."""

    def script(req: Request) -> list[tuple[float, bytes]]:
        if req.start == 1:
            return [(0.0, frame(req.unit, bytes((req.fc | 0x80, 1))))]  # illegal function: no split
        return [(0.0, holding(req))]

    sink = Collector()

    async def go():
        async with scripted_rtu(pty_pair.a, script):
            dev = rtu_device("m", 1, pty_pair.b, register_map=METER2, timeout_s=0.3, retries=0, max_gap=0)
            (poller,) = build_pollers([dev], sink, rng=random.Random(2))
            poller.plan = [b for p in poller.plan for b in split_block(p)]  # one read per point
            before = time.time()
            await poller.poll_once()
            after = time.time()
            await poller.transport.close()
            return before, after

    before, after = arun(go())
    assert [(r.point, r.value, r.unit, r.quality) for r in sink.readings] == [
        ("m.v", 1000, "V", Quality.GOOD),
        ("m.w", None, "W", Quality.INVALID),
    ]
    assert all(before <= r.ts <= after for r in sink.readings)
