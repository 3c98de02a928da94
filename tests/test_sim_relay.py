"""The feeder recloser relay (51/50/79), served over real Modbus TCP with config/maps/sim-relay.toml.

Each bench step is done by hand: ``actuate`` into a recording stub feeder whose one breaker decides
whether the fault current flows, ``observe`` a hand-built Solution, ``server.update`` with ``values(t)``;
a pymodbus client reads and writes. Trip times come from IEEE C37.112-1996 Eq. (1) with the constants
of its Table 1, written out here, never from the relay's code.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers.aio import async_test
from helpers.docmap import doc_mismatches
from helpers.net import free_port
from pymodbus.client import AsyncModbusTcpClient

from protocols.modbus.registermap import RegisterMap, Table, decode_point, encode_point, parse_register_map
from sim_hw.devices.modbus_server import ModbusDeviceServer
from sim_hw.devices.relay import MODEL, FeederRelay, RelayError
from sim_hw.feeder.solution import Solution, Terminal

ROOT = Path(__file__).resolve().parent.parent
MAP_FILE = ROOT / "config" / "maps" / "sim-relay.toml"
DOC_FILE = ROOT / "docs" / "devices" / "sim-relay.md"
with MAP_FILE.open("rb") as _fh:
    MAP: RegisterMap = parse_register_map(tomllib.load(_fh), "sim-relay")
T0 = 1_780_000_000.0
ELEMENT = "Line.650632"

# IEEE C37.112-1996, Table 1: (A [s], B [s], p) of t = TD (A / (M^p - 1) + B), Eq. (1).
C37112 = {
    1: (0.0515, 0.1140, 0.02),  # moderately inverse
    2: (19.61, 0.491, 2.0),  # very inverse
    3: (28.2, 0.1217, 2.0),  # extremely inverse
}


def c37112_s(curve: int, m: float, td: float) -> float:
    a, b, p = C37112[curve]
    return td * (a / (m**p - 1.0) + b)


# Event and state codes as docs/devices/sim-relay.md lists them.
TRIP_51, TRIP_50, RECLOSE, LOCKOUT, REMOTE_TRIP, REMOTE_CLOSE, LOCKOUT_RESET, SEQ_RESET, SETTINGS = range(1, 10)
CLOSED, RECLAIM, RECLOSE_WAIT, OPEN, LOCKED = range(5)


@dataclass
class StubFeeder:
    """The physics in miniature: one breaker; records every set_switch with the bench time it came at."""

    now: float = 0.0
    closed: bool = True
    calls: list[tuple[float, str, bool]] = field(default_factory=list)

    def set_switch(self, element: str, closed: bool) -> None:
        self.calls.append((self.now, element, closed))
        self.closed = closed


def solution(t: float, i: tuple[float, float, float], element: str = ELEMENT) -> Solution:
    """Phase currents [A] at the relay's terminal (2.4 kV, lagging 30 deg)."""
    v = {
        "a": complex(2400, 0),
        "b": 2400 * complex(-0.5, -math.sqrt(3) / 2),
        "c": 2400 * complex(-0.5, math.sqrt(3) / 2),
    }
    lag = complex(math.cos(math.radians(-30)), math.sin(math.radians(-30)))
    ii = {ph: i[k] * v[ph] / 2400 * lag for k, ph in enumerate("abc")}
    return Solution(
        t=t,
        converged=True,
        bus_v={"rg60": v},
        base_kv_ln={"rg60": 2.4},
        terminals={f"{element}/1": Terminal(element, "rg60", v, ii)},
    )


Currents = Callable[[float], tuple[float, float, float]]


class Bench:
    """A relay on a stub feeder served over Modbus TCP: ``await step(t, currents)`` is one bench step."""

    def __init__(self, relay: FeederRelay, server: ModbusDeviceServer, client: AsyncModbusTcpClient) -> None:
        self.relay, self.server, self.client = relay, server, client
        self.feeder = StubFeeder()

    async def step(self, t: float, currents: Currents) -> None:
        self.feeder.now = t
        self.relay.actuate(t, self.feeder)
        # the fault current flows only while the physics' breaker is closed
        i = currents(t) if self.feeder.closed else (0.0, 0.0, 0.0)
        self.relay.observe(t, solution(t, i))
        await self.server.update(1, self.relay.values(t))

    async def read(self) -> dict[str, Any]:
        c = self.client
        blocks = {
            Table.INPUT: (await c.read_input_registers(0, count=116, device_id=1)).registers,
            Table.HOLDING: (await c.read_holding_registers(0, count=38, device_id=1)).registers,
            Table.COIL: (await c.read_coils(0, count=4, device_id=1)).bits,
            Table.DISCRETE: (await c.read_discrete_inputs(0, count=3, device_id=1)).bits,
        }
        return {p.name: decode_point(p, blocks[p.table][p.address : p.end]) for p in MAP.points}

    async def events(self) -> list[dict[str, Any]]:
        """The ring as a client reads it, oldest first (event_count tells where it starts)."""
        got = await self.read()
        n = got["event_count"]
        out = []
        for number in range(max(1, n - 7), n + 1):
            k = (number - 1) % 8
            rec = {f: got[f"ev{k}_{f}"] for f in ("code", "shot", "time_s", "time_ms", "i_a", "i_b", "i_c")}
            rec["t"] = rec["time_s"] + rec["time_ms"] / 1000.0
            out.append(rec)
        return out

    async def write(self, point: str, value: Any) -> int | None:
        """Write one point; None if accepted, else the exception code."""
        p = MAP.point(point)
        if p.table is Table.COIL:
            rr = await self.client.write_coil(p.address, bool(value), device_id=1)
        else:
            rr = await self.client.write_registers(p.address, encode_point(p, value), device_id=1)
        return rr.exception_code if rr.isError() else None


@asynccontextmanager
async def bench(relay: FeederRelay) -> AsyncIterator[Bench]:
    port = free_port()
    server = ModbusDeviceServer.tcp("127.0.0.1", port, {1: MAP})
    await server.start()
    server.on_write(1, relay.on_write)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    try:
        assert await client.connect()
        yield Bench(relay, server, client)
    finally:
        client.close()
        await server.stop()


def load(t: float) -> tuple[float, float, float]:
    return (560.0, 420.0, 590.0)  # about the IEEE 13-node feeder head's load currents


def f32(x: float) -> float:
    p = MAP.point("i_a")
    return float(decode_point(p, encode_point(p, x)))


# --- 51: inverse time -----------------------------------------------------------------------------


@pytest.mark.parametrize("curve", [1, 2, 3])
@pytest.mark.parametrize(("multiple", "td"), [(2.0, 1.0), (5.0, 3.5)])
@async_test
async def test_constant_fault_trips_at_the_c37112_time(curve: int, multiple: float, td: float) -> None:
    relay = FeederRelay("r51", inst_multiple=0, reclose_intervals_s=[])
    async with bench(relay) as b:
        # the settings go in over Modbus, as an engineer would set them
        assert await b.write("pickup_a", 600.0) is None
        assert await b.write("curve", curve) is None
        assert await b.write("time_dial", td) is None
        fault_at = T0 + 5
        fault = (560.0, multiple * 600.0, 590.0)  # phase B faulted; the others carry load

        def currents(t: float) -> tuple[float, float, float]:
            return fault if t >= fault_at else load(t)

        expected = fault_at + c37112_s(curve, multiple, td)
        t, detected = T0, None
        while t < expected + 3:
            await b.step(t, currents)
            got = await b.read()
            if detected is None and not got["breaker_closed"]:
                detected = t
            t += 1.0
        events = await b.events()
    assert detected is not None
    assert 0 <= detected - expected < 1.0  # seen at the first bench step at or after the trip instant
    trip = [e for e in events if e["code"] == TRIP_51]
    assert len(trip) == 1
    assert trip[0]["t"] == pytest.approx(expected, abs=0.0011)  # the instant itself, to the millisecond
    assert (trip[0]["i_a"], trip[0]["i_b"], trip[0]["i_c"]) == (f32(560.0), f32(multiple * 600.0), f32(590.0))
    assert trip[0]["shot"] == 0
    assert got["lockout"] is True and got["relay_state"] == LOCKED  # no shots configured: lockout
    assert [e["code"] for e in events] == [SETTINGS, SETTINGS, SETTINGS, TRIP_51, LOCKOUT]


@async_test
async def test_below_pickup_never_trips() -> None:
    relay = FeederRelay("r", pickup_a=800.0, curve="extremely_inverse", time_dial=0.5, inst_multiple=0)
    async with bench(relay) as b:
        for k in range(0, 7200, 10):  # two hours at 799 A on phase A
            await b.step(T0 + k, lambda t: (799.0, 0.0, 0.0))
        got = await b.read()
    assert got["breaker_closed"] is True and got["event_count"] == 0
    assert got["picked_up"] is False and got["i_a"] == pytest.approx(799.0)


@async_test
async def test_excursions_shorter_than_the_trip_time_reset_and_never_trip() -> None:
    # very inverse, TD 2, M = 2: 2 x (19.61 / 3 + 0.491) = 14.055 s. 10 s above pickup then 1 s below, for
    # 5 minutes: an accumulator that did not reset would trip in the second excursion.
    relay = FeederRelay("r", pickup_a=500.0, curve="very_inverse", time_dial=2.0, inst_multiple=0)

    def currents(t: float) -> tuple[float, float, float]:
        return (1000.0, 0.0, 0.0) if (t - T0) % 11 < 10 else (400.0, 0.0, 0.0)

    async with bench(relay) as b:
        seen_pickup = False
        for k in range(300):
            await b.step(T0 + k, currents)
            seen_pickup |= bool((await b.read())["picked_up"]) if k < 12 else False
        got = await b.read()
    assert seen_pickup
    assert got["breaker_closed"] is True and got["event_count"] == 0


@async_test
async def test_a_varying_current_integrates_the_curve() -> None:
    # Moderately inverse, TD 1. 2 s at M = 3 uses 2 / t(3) of the curve; the rest is done at M = 6:
    # trip = T0 + 2 + (1 - 2 / t(3)) x t(6) (C37.112-1996 clause 4's integral, by hand).
    relay = FeederRelay("r", pickup_a=400.0, curve="moderately_inverse", time_dial=1.0, inst_multiple=0)
    t3, t6 = c37112_s(1, 3.0, 1.0), c37112_s(1, 6.0, 1.0)
    assert t3 > 2.0  # the first part alone does not trip
    expected = T0 + 2 + (1 - 2 / t3) * t6

    def currents(t: float) -> tuple[float, float, float]:
        return (1200.0, 1200.0, 1200.0) if t < T0 + 2 else (2400.0, 2400.0, 2400.0)

    async with bench(relay) as b:
        for k in range(10):
            await b.step(T0 + k, currents)
        events = await b.events()
    assert events[0]["code"] == TRIP_51
    assert events[0]["t"] == pytest.approx(expected, abs=0.0011)
    assert events[0]["i_a"] == pytest.approx(2400.0)


# --- 50: instantaneous ------------------------------------------------------------------------------


@async_test
async def test_instantaneous_trips_on_the_first_sample_above_its_setting() -> None:
    relay = FeederRelay("r", pickup_a=800.0, inst_multiple=8.0, reclose_intervals_s=[2.0])  # 50 at 6400 A
    async with bench(relay) as b:
        for k in range(3):
            await b.step(T0 + k, lambda t: (6300.0, 6300.0, 6300.0) if t >= T0 + 2 else load(t))
        assert (await b.read())["breaker_closed"] is True  # 6300 A: below the 50, the 51 is timing
        assert (await b.read())["picked_up"] is True
        await b.step(T0 + 3, lambda t: (6300.0, 6500.0, 6300.0))
        got = await b.read()
        events = await b.events()
    assert got["breaker_closed"] is False and got["relay_state"] == RECLOSE_WAIT
    assert events[-1]["code"] == TRIP_50 and events[-1]["t"] == T0 + 3
    assert events[-1]["i_b"] == pytest.approx(6500.0)
    # the 51 (very inverse, TD 2 at M = 7.875) timing from T0+2 needed t(7.875) = 1.625 s: more than the 1 s
    assert c37112_s(2, 6300 / 800, 2.0) > 1.0


# --- 79: reclosing -----------------------------------------------------------------------------------


@async_test
async def test_a_permanent_fault_recloses_on_schedule_then_locks_out() -> None:
    # very inverse, TD 1, M = 4: t = 19.61 / 15 + 0.491 = 1.7983 s; reclose intervals 2, 15, 15 s; 1 s steps.
    relay = FeederRelay("r79", pickup_a=700.0, curve="very_inverse", time_dial=1.0, inst_multiple=0,
                        reclose_intervals_s=[2.0, 15.0, 15.0])  # fmt: skip
    t_op = c37112_s(2, 4.0, 1.0)

    def currents(t: float) -> tuple[float, float, float]:
        return (2800.0, 2800.0, 2800.0) if t >= T0 + 10 else load(t)

    async with bench(relay) as b:
        for k in range(60):
            await b.step(T0 + k, currents)
        got = await b.read()
        events = await b.events()
        switch = b.feeder.calls
    # By hand: a trip is seen at the first step at or after its instant and opens the breaker at the next
    # step; a reclose comes at the first step at or after trip + interval (the breaker has been open a step).
    trips, recloses, opened, closed = [], [], [], [T0]
    fault_flowing_from = T0 + 10
    for interval in (2.0, 15.0, 15.0, None):
        trip = fault_flowing_from + t_op
        trips.append(trip)
        opened.append(math.ceil(trip - T0) + T0 + 1)
        if interval is None:
            break
        reclose = max(math.ceil(trip + interval - T0) + T0, opened[-1] + 1)
        recloses.append(reclose)
        closed.append(reclose)
        fault_flowing_from = reclose
    assert recloses == [T0 + 14, T0 + 31, T0 + 48]  # the hand timeline, spelled out
    assert [e["code"] for e in events] == [TRIP_51, RECLOSE, TRIP_51, RECLOSE, TRIP_51, RECLOSE, TRIP_51, LOCKOUT]
    assert [e["t"] for e in events if e["code"] == TRIP_51] == pytest.approx(trips, abs=0.0011)
    assert [e["t"] for e in events if e["code"] == RECLOSE] == recloses
    assert [e["shot"] for e in events] == [0, 1, 1, 2, 2, 3, 3, 3]
    assert events[-1]["t"] == pytest.approx(trips[-1], abs=0.0011)  # lockout with the last trip
    assert all(e["i_c"] == pytest.approx(2800.0) for e in events if e["code"] == TRIP_51)
    expected_calls = sorted([(t, ELEMENT, True) for t in closed] + [(t, ELEMENT, False) for t in opened])
    assert switch == expected_calls
    assert got["lockout"] is True and got["relay_state"] == LOCKED and got["shot"] == 3
    assert got["breaker_closed"] is False and got["last_event_code"] == LOCKOUT and got["event_count"] == 8


@async_test
async def test_close_in_lockout_is_refused_until_a_reset() -> None:
    relay = FeederRelay("r", pickup_a=700.0, inst_multiple=2.0, reclose_intervals_s=[1.0])
    fault = [True]

    def currents(t: float) -> tuple[float, float, float]:
        return (1500.0, 1500.0, 1500.0) if fault[0] else load(t)

    async with bench(relay) as b:
        for k in range(6):  # 50 trip at T0, reclose at T0+2, 50 trip again: lockout
            await b.step(T0 + k, currents)
        got = await b.read()
        assert got["lockout"] is True and got["event_count"] == 4
        assert await b.write("close", True) == 3  # documented: exception 3 in lockout
        await b.step(T0 + 6, currents)
        assert (await b.read())["breaker_closed"] is False
        assert b.feeder.closed is False
        fault[0] = False  # the crew clears the fault
        assert await b.write("reset", True) is None
        await b.step(T0 + 7, currents)
        got = await b.read()
        assert got["lockout"] is False and got["relay_state"] == OPEN and got["breaker_closed"] is False
        assert await b.write("close", True) is None
        await b.step(T0 + 8, currents)
        got = await b.read()
        events = await b.events()
    assert got["breaker_closed"] is True and got["relay_state"] == CLOSED and b.feeder.closed is True
    assert [e["code"] for e in events[-2:]] == [LOCKOUT_RESET, REMOTE_CLOSE]
    assert [e["t"] for e in events[-2:]] == [T0 + 7, T0 + 8]
    assert got["event_count"] == 6
    # the ring wrapped past nothing yet; event 6 is in record 5
    assert got["ev5_code"] == REMOTE_CLOSE and got["ev6_code"] == 0


@async_test
async def test_reset_and_close_in_one_request_leave_lockout() -> None:
    relay = FeederRelay("r", pickup_a=700.0, inst_multiple=2.0, reclose_intervals_s=[])
    async with bench(relay) as b:
        await b.step(T0, lambda t: (1500.0, 0.0, 0.0))
        assert (await b.read())["lockout"] is True
        rr = await b.client.write_coils(0, [False, True, True], device_id=1)  # trip 0, close 1, reset 1
        assert not rr.isError()
        rr = await b.client.write_coils(0, [True, True], device_id=1)  # trip and close together
        assert rr.isError() and rr.exception_code == 3
        await b.step(T0 + 1, load)
        got = await b.read()
        events = await b.events()
    assert got["breaker_closed"] is True and got["lockout"] is False
    assert [e["code"] for e in events] == [TRIP_50, LOCKOUT, LOCKOUT_RESET, REMOTE_CLOSE]


@async_test
async def test_a_temporary_fault_recloses_and_the_sequence_resets_after_the_reset_time() -> None:
    relay = FeederRelay("r", pickup_a=700.0, inst_multiple=2.0, reclose_intervals_s=[2.0, 15.0], reset_time_s=30.0)

    def currents(t: float) -> tuple[float, float, float]:
        return (1500.0, 1500.0, 1500.0) if T0 + 5 <= t < T0 + 6 else load(t)  # a branch touching the line

    async with bench(relay) as b:
        for k in range(45):
            await b.step(T0 + k, currents)
            if k == 20:
                mid = await b.read()
        got = await b.read()
        events = await b.events()
    assert mid["relay_state"] == RECLAIM and mid["shot"] == 1 and mid["breaker_closed"] is True
    assert [(e["code"], e["t"], e["shot"]) for e in events] == [
        (TRIP_50, T0 + 5, 0),
        (RECLOSE, T0 + 7, 1),  # trip at T0+5, open at T0+6, due T0+7
        (SEQ_RESET, T0 + 37, 1),  # 30 s of reclaim without a trip
    ]
    assert got["relay_state"] == CLOSED and got["shot"] == 0


@async_test
async def test_with_79_disabled_a_trip_locks_out() -> None:
    relay = FeederRelay("r", pickup_a=700.0, inst_multiple=2.0)
    async with bench(relay) as b:
        await b.step(T0, load)
        assert (await b.read())["reclose_enabled"] is True
        assert await b.write("reclose_enabled", False) is None
        await b.step(T0 + 1, load)
        assert (await b.read())["reclose_enabled"] is False
        for k in range(2, 10):
            await b.step(T0 + k, lambda t: (0.0, 1500.0, 0.0) if t >= T0 + 3 else load(t))
        got = await b.read()
        events = await b.events()
    assert [e["code"] for e in events] == [SETTINGS, TRIP_50, LOCKOUT]
    assert got["lockout"] is True and b.feeder.closed is False


@async_test
async def test_remote_trip_is_always_accepted_and_remote_close_follows() -> None:
    relay = FeederRelay("r", pickup_a=700.0, inst_multiple=2.0, reclose_intervals_s=[5.0])
    async with bench(relay) as b:
        await b.step(T0, load)
        assert await b.write("trip", True) is None
        assert (await b.read())["trip"] is True  # stored until the next step ...
        await b.step(T0 + 1, load)
        got = await b.read()
        assert got["trip"] is False  # ... then a pulse reads 0
        assert got["breaker_closed"] is False and got["relay_state"] == OPEN and b.feeder.closed is False
        await b.step(T0 + 20, load)  # no reclose after a remote trip
        assert (await b.read())["breaker_closed"] is False
        assert await b.write("trip", True) is None  # already open: accepted, nothing happens
        assert await b.write("close", True) is None
        await b.step(T0 + 21, load)
        got = await b.read()
        events = await b.events()
    assert got["breaker_closed"] is True and b.feeder.closed is True
    assert [(e["code"], e["t"]) for e in events] == [(REMOTE_TRIP, T0 + 1), (REMOTE_CLOSE, T0 + 21)]
    assert events[0]["i_a"] == pytest.approx(560.0)  # the load it interrupted


@async_test
async def test_the_ring_keeps_the_last_eight_events() -> None:
    relay = FeederRelay("r", pickup_a=700.0, inst_multiple=2.0)
    async with bench(relay) as b:
        for k in range(10):  # remote trip, remote close, ... : 10 events
            await b.write("trip" if k % 2 == 0 else "close", True)
            await b.step(T0 + k + 0.25, load)
        got = await b.read()
        events = await b.events()
    assert got["event_count"] == 10
    assert [e["t"] for e in events] == [T0 + k + 0.25 for k in range(2, 10)]
    assert got["ev0_time_ms"] == 250 and got["ev0_time_s"] == int(T0 + 8)  # event 9 overwrote record 0
    assert got["ev1_code"] == REMOTE_CLOSE and got["ev2_code"] == REMOTE_TRIP


# --- settings over Modbus ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "value"),
    [
        ("pickup_a", 0.0),
        ("pickup_a", -5.0),
        ("pickup_a", 25_000.0),
        ("curve", 0),
        ("curve", 4),
        ("time_dial", 0.4),
        ("time_dial", 15.5),
        ("inst_multiple", 0.5),
        ("inst_multiple", 41.0),
        ("shots", 5),
        ("reclose_1_s", 0.05),
        ("reclose_4_s", 601.0),
        ("reset_time_s", 0.0),
    ],
)
@async_test
async def test_a_setting_out_of_range_is_refused_with_exception_3(point: str, value: Any) -> None:
    relay = FeederRelay("r")
    async with bench(relay) as b:
        await b.step(T0, load)
        before = await b.read()
        assert await b.write(point, value) == 3
        await b.step(T0 + 1, load)
        after = await b.read()
    assert after[point] == before[point]
    assert after["event_count"] == 0


@async_test
async def test_settings_writes_are_applied_and_read_back() -> None:
    relay = FeederRelay("r")
    async with bench(relay) as b:
        await b.step(T0, load)
        got = await b.read()
        assert (got["pickup_a"], got["curve"], got["time_dial"], got["inst_multiple"], got["shots"]) == (
            800.0, 2, 2.0, 8.0, 3)  # fmt: skip
        assert (got["reclose_1_s"], got["reclose_2_s"], got["reclose_3_s"], got["reclose_4_s"]) == (2, 15, 15, 15)
        # several settings in one request: pickup 650 A, curve 3, shots 1
        words = encode_point(MAP.point("pickup_a"), 650.0) + [3, 1]
        assert not (await b.client.write_registers(20, words, device_id=1)).isError()
        # one bad value refuses the whole request
        words = encode_point(MAP.point("pickup_a"), 700.0) + [9]
        rr = await b.client.write_registers(20, words, device_id=1)
        assert rr.isError() and rr.exception_code == 3
        assert await b.write("reset_time_s", 60.0) is None
        await b.step(T0 + 1, load)
        got = await b.read()
    assert (got["pickup_a"], got["curve"], got["shots"], got["reset_time_s"]) == (650.0, 3, 1, 60.0)
    assert got["event_count"] == 2 and got["last_event_code"] == SETTINGS
    assert relay.settings.pickup_a == 650.0


@async_test
async def test_read_only_and_reserved_registers_refuse_writes_with_exception_2() -> None:
    relay = FeederRelay("r")
    async with bench(relay) as b:
        await b.step(T0, load)
        rr = await b.client.write_registers(8, [0, 1], device_id=1)  # serial number
        assert rr.isError() and rr.exception_code == 2
        rr = await b.client.write_registers(0, [0x4141] * 8, device_id=1)  # model
        assert rr.isError() and rr.exception_code == 2
        rr = await b.client.write_register(12, 1, device_id=1)  # reserved
        assert rr.isError() and rr.exception_code == 2
        rr = await b.client.write_registers(18, [0, 0, *encode_point(MAP.point("pickup_a"), 700.0)], device_id=1)
        assert rr.isError() and rr.exception_code == 2  # reserved 18..19 with a valid pickup
        got = await b.read()
    assert got["model"] == MODEL and got["serial_number"] == relay.serial_number and got["pickup_a"] == 800.0


# --- the model's edges ------------------------------------------------------------------------------


def test_model_produces_exactly_the_maps_points_and_they_encode() -> None:
    relay = FeederRelay("r")
    relay.observe(T0, solution(T0, (9000.0, 9000.0, 9000.0)))  # a trip, so the ring holds something
    values = relay.values(T0)
    assert set(values) == {p.name for p in MAP.points}
    for p in MAP.points:
        encode_point(p, values[p.name])


def test_time_running_backwards_is_refused() -> None:
    relay = FeederRelay("r")
    relay.observe(T0, solution(T0, load(T0)))
    with pytest.raises(RelayError, match="backwards"):
        relay.observe(T0 - 1, solution(T0 - 1, load(T0)))
    with pytest.raises(RelayError, match="backwards"):
        relay.actuate(T0 - 1, StubFeeder())


def test_an_element_missing_from_the_solution_is_named() -> None:
    relay = FeederRelay("r", element="Line.632671")
    with pytest.raises(RelayError, match="Line.632671/1"):
        relay.observe(T0, solution(T0, load(T0)))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"element": "650632"}, "element"),
        ({"terminal": 0}, "terminal"),
        ({"pickup_a": 0}, "pickup_a"),
        ({"pickup_a": "800"}, "pickup_a"),
        ({"curve": "inverse"}, "curve"),
        ({"curve": 7}, "curve"),
        ({"time_dial": 20}, "time_dial"),
        ({"inst_multiple": 0.5}, "inst_multiple"),
        ({"reclose_intervals_s": [2, 15, 15, 15, 15]}, "reclose_intervals_s"),
        ({"reclose_intervals_s": "2,15"}, "reclose_intervals_s"),
        ({"reclose_intervals_s": [2, 0]}, r"reclose_intervals_s\[1\]"),
        ({"reset_time_s": 0}, "reset_time_s"),
        ({"reclose_enabled": 1}, "reclose_enabled"),
        ({"zone": 2}, "zone"),
    ],
)
def test_bad_options_name_the_key_and_value(options: dict[str, Any], key: str) -> None:
    with pytest.raises(RelayError, match=rf"{key} = "):
        FeederRelay.from_options("r", options)


def test_options_from_the_bench_toml() -> None:
    relay = FeederRelay.from_options("r", {"curve": "Extremely_Inverse", "reclose_intervals_s": [1, 5]})
    assert relay.settings.curve == 3 and relay.settings.shots == 2
    assert relay.settings.reclose_s == (1.0, 5.0, 5.0, 5.0)  # unused intervals hold the last one
    assert FeederRelay("a").serial_number != FeederRelay("b").serial_number


# --- map and doc --------------------------------------------------------------------------------------


def test_doc_register_table_matches_the_map() -> None:
    assert doc_mismatches(DOC_FILE.read_text(), MAP) == []


def test_doc_check_catches_a_drifted_address() -> None:
    text = DOC_FILE.read_text()
    drifted = text.replace("| time_dial | holding | 24 |", "| time_dial | holding | 25 |")
    assert drifted != text
    assert doc_mismatches(drifted, MAP) == ["time_dial.address: doc '25', map '24'"]


def test_doc_lists_the_c37112_constants_the_tests_use() -> None:
    text = DOC_FILE.read_text()
    for a, b, p in C37112.values():
        assert f"| {a:g} | " in text and f"{b:g}" in text and f"{p:g}" in text
    assert "Table 1" in text and "C37.112-1996" in text


def test_the_ring_fits_one_read_with_the_measurements() -> None:
    inputs = [p for p in MAP.points if p.table is Table.INPUT]
    assert max(p.end for p in inputs) <= 125  # Modbus Application Protocol 6.4: 125 registers per read


def test_the_relays_write_coverage_table_matches_the_map() -> None:
    # the relay tells a write to whole points from one that also covers reserved registers with this table
    from sim_hw.devices.relay import _WORDS

    writable = {p.name: p.words for p in MAP.points if p.table in (Table.HOLDING, Table.COIL)}
    assert writable == _WORDS


# --- with the real feeder physics --------------------------------------------------------------------


def test_a_fault_at_671_trips_the_feeder_head_relay_on_the_ieee13_feeder() -> None:
    from sim_hw.feeder.model import Feeder

    feeder = Feeder.from_file(ROOT / "config" / "ieee13" / "IEEE13.dss")
    relay = FeederRelay("head")  # defaults: 800 A, very inverse, TD 2, 50 at 6400 A, 2 s / 15 s / 15 s
    fault_at = T0 + 5
    first_fault_i = 0.0
    for k in range(12):
        t = T0 + k
        if t == fault_at:
            feeder.set_fault("671", "abc")
        relay.actuate(t, feeder)
        sol = feeder.solve(t)
        relay.observe(t, sol)
        head = max(abs(i) for i in sol.terminal(ELEMENT, 1).i.values())
        if t < fault_at:
            assert head < 800.0 and relay.values(t)["picked_up"] is False  # the published load is below pickup
        if t == fault_at:
            first_fault_i = head
        if t == fault_at + 3:  # the trip (at ~1.7 s) is seen at +2 and opens the breaker at +3, before the reclose
            assert feeder.switch_closed(ELEMENT) is False
            assert head < 1.0
    assert 800.0 * 1.5 < first_fault_i < 6400.0  # a 51 fault, below the 50 setting
    trip = relay.events[0]
    assert trip.code == TRIP_51
    assert trip.t == pytest.approx(fault_at + c37112_s(2, first_fault_i / 800.0, 2.0), abs=1e-6)
    # the reclose: the first step at or after trip + 2 s, with the breaker open for at least one solve
    assert (relay.events[1].code, relay.events[1].t) == (RECLOSE, math.ceil(trip.t + 2.0 - T0) + T0)
    assert relay.events[1].t == fault_at + 4
