"""Metering in the agent on a real store: reads in, intervals stored with the engines' states in one transaction,
sealed on the intervals stream; a restart resumes from the stored state and the stored reads and makes no
interval twice and loses none."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.aio import async_test

from agent.metering.config import MeterConfig, MeteringConfig, RegisterConfig
from agent.metering.service import MeteringService
from agent.points import Quality, Reading, Stream
from agent.store import AsyncStore
from protocols.telemetry import decode_batch

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 900
POINT = "m1.energy_delivered_wh"
CFG = MeteringConfig(interval_s=900, meters=(MeterConfig(
    "m1", 5000.0, (RegisterConfig("energy_delivered_wh", "kwh_delivered", 2**32, 0.001, 1.0),),
    ("serial_number",)),))  # fmt: skip
RATE_WH_S = 100.0  # 360 kW: 90 kWh a 15-minute interval


def reads(t0: float, t1: float) -> list[Reading]:
    """The register every second from t0 to t1 (exclusive), a linear counter from 0 at T0."""
    out = []
    t = t0
    while t < t1:
        out.append(Reading(POINT, t, int((t - T0) * RATE_WH_S), "Wh", Quality.GOOD, Stream.ENERGY))
        out.append(Reading("m1.serial_number", t, 4711, "", Quality.GOOD))
        t += 1.0
    return out


async def feed(svc: MeteringService, store: AsyncStore, batch: list[Reading]) -> None:
    await store.add_readings(batch)  # the writer commits what the pollers take
    svc.take(batch)


def stored(store: AsyncStore) -> list[dict]:
    return [json.loads(r[0]) for r in store.store.conn.execute("SELECT item FROM intervals ORDER BY id")]


@async_test
async def test_intervals_are_stored_and_sealed_and_a_restart_makes_none_twice(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with await AsyncStore.open(path, "sub-1", 64 << 20, max_age_s=0.0) as store:
        svc = MeteringService(CFG, store, clock=lambda: T0 + 2000)
        await svc.start()
        await feed(svc, store, reads(T0 - 10, T0 + 1900))  # closes [T0, T0+900) and [T0+900, T0+1800)
        assert await svc.store_closed() == 2
        await feed(svc, store, reads(T0 + 1900, T0 + 2000))  # stored, and fed, but not flushed: a crash now
    async with await AsyncStore.open(path, "sub-1", 64 << 20, max_age_s=0.0) as store:
        svc = MeteringService(CFG, store, clock=lambda: T0 + 2000)
        await svc.start()  # resumes at T0+1800 and replays the stored reads after it
        await feed(svc, store, reads(T0 + 2000, T0 + 2800))
        await svc.store_closed()
        items = stored(store)
        assert [(i["start"], i["quality"]) for i in items] == [(T0, "A"), (T0 + 900, "A"), (T0 + 1800, "A")]
        # 100 Wh/s x 900 s = 90 kWh each, computed by hand
        assert [round(i["value"], 6) for i in items] == [90.0, 90.0, 90.0]
        assert {i["meter_id"] for i in items} == {"4711"}
        await store.seal(force=True)
        msgs = [m for m in await store.pending(50) if m.stream == "intervals"]
        assert sum(len(decode_batch(m.payload).items) for m in msgs) == 3


@async_test
async def test_intervals_closed_but_not_stored_when_the_agent_died_are_made_again_once(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with await AsyncStore.open(path, "sub-1", 64 << 20, max_age_s=0.0) as store:
        svc = MeteringService(CFG, store, clock=lambda: T0 + 1000)
        await svc.start()
        await feed(svc, store, reads(T0 - 10, T0 + 950))  # [T0, T0+900) closed in memory...
        assert len(svc.closed) == 1  # ... and the agent dies before the flush stores it
    async with await AsyncStore.open(path, "sub-1", 64 << 20, max_age_s=0.0) as store:
        svc = MeteringService(CFG, store, clock=lambda: T0 + 1000)
        await svc.start()  # no state stored: the stored reads of the last day are fed again
        assert svc.reads >= 959
        await feed(svc, store, reads(T0 + 950, T0 + 1850))
        await svc.store_closed()
        items = stored(store)
        assert [(i["start"], i["quality"], round(i["value"], 6)) for i in items] == [(T0, "A", 90.0),
                                                                                   (T0 + 900, "A", 90.0)]  # fmt: skip
