"""The monitoring task against the agent's real store (a Store on a SQLite file in tmp_path): its events reach the
events table through the one event spool, in order, with bus, phase and source point; its status section and
``gridedge status``'s text show per bus and phase the value used, its age and range, and name what is stale."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from helpers.aio import async_test, until
from helpers.db import query_db

from agent.acquisition import Snapshot
from agent.monitoring.config import MonitoringConfig, VoltagePoint
from agent.monitoring.service import VoltageMonitoring
from agent.points import Quality, Reading
from agent.statustext import AgentState, status_text
from agent.store import AsyncStore, Store

NOMINAL = 2401.8
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

CONFIG = MonitoringConfig(
    pickup_s=2.0, hold_off_s=3.0, stale_after_s=10.0,
    voltages=(
        VoltagePoint("sub-meter.v_a", "rg60", "a", nominal_v=NOMINAL),
        VoltagePoint("pmu-671.VA.mag", "671", "a", nominal_v=NOMINAL),
        VoltagePoint("fdr-671-meter.v_a", "671", "a", nominal_v=NOMINAL),
        VoltagePoint("cap675-ctl.v_a", "675", "a", pt_ratio=20.0, end_of_line=True),
        VoltagePoint("cap675-ctl.v_b", "675", "b", pt_ratio=20.0, end_of_line=True),
    ),
)  # fmt: skip


@asynccontextmanager
async def real_store(tmp_path: Path) -> AsyncIterator[tuple[AsyncStore, Path]]:
    db = tmp_path / "agent.db"
    store = AsyncStore(Store(db, "site1", 64 * 1024 * 1024))
    try:
        yield store, db
    finally:
        await store.aclose()


def events(db: Path) -> list[tuple]:
    rows = query_db(db, "SELECT ts, kind, severity, source, text, data FROM events ORDER BY id")
    return [(ts, kind, severity, source, text, json.loads(data)) for ts, kind, severity, source, text, data in rows]


def readings(t: float, rg60_pu: float, *, cap_b: bool = True) -> list[Reading]:
    out = [Reading("sub-meter.v_a", t, rg60_pu * NOMINAL, "V"),
           Reading("pmu-671.VA.mag", t + 0.2, 0.99 * NOMINAL, "V"),
           Reading("fdr-671-meter.v_a", t, 0.98 * NOMINAL, "V"),
           Reading("cap675-ctl.v_a", t, 117.1, "V")]  # fmt: skip
    if cap_b:
        out.append(Reading("cap675-ctl.v_b", t, 125.9, "V"))
    return out


@async_test
async def test_the_task_stores_range_events_with_bus_phase_and_source_point(tmp_path: Path) -> None:
    now = [T0]
    snapshot = Snapshot()
    async with real_store(tmp_path) as (store, db):
        mon = VoltageMonitoring(CONFIG, snapshot, store, clock=lambda: now[0])
        for k, pu in enumerate([1.0, 1.0, 1.06, 1.06, 1.06, 1.0, 1.0, 1.0, 1.0]):  # 127.2 V: above A and B
            now[0] = T0 + k
            snapshot.update(readings(now[0], pu))
            mon.evaluate()
        assert await mon.spool.flush()
        await mon.spool.close()
        got = events(db)
    assert [(ts - T0, kind, severity, source) for ts, kind, severity, source, _, _ in got] == [
        (2.0, "voltage_range_a", "warning", "rg60/a"),
        (2.0, "voltage_range_b", "error", "rg60/a"),
        (5.0, "voltage_range_a", "info", "rg60/a"),
        (5.0, "voltage_range_b", "info", "rg60/a"),
    ]
    data = got[0][5]
    assert (data["bus"], data["phase"], data["side"], data["source_point"]) == ("rg60", "a", "high", "sub-meter.v_a")
    assert data["limit_v"] == 126.0 and abs(data["value_v"] - 127.2) < 1e-6 and data["pickup_s"] == 2.0
    assert "bus rg60 phase a: 127.20 V (1.0600 pu) above Range A's maximum 126 V" in got[0][4]
    assert got[1][5]["limit_v"] == 127.0 and got[2][5]["cleared"] is True and got[2][5]["duration_s"] == 3.0
    assert (
        got[2][4] == "bus rg60 phase a: back inside Range A (120.00 V on the 120 V base) after 3.0 s above it, "
        "extreme 127.20 V"
    )
    assert mon.spool.status()["events_stored"] == 4


@async_test
async def test_run_evaluates_every_interval_and_stores_what_it_raises(tmp_path: Path) -> None:
    now = [T0]
    async with real_store(tmp_path) as (store, db):
        mon = VoltageMonitoring(CONFIG, Snapshot(), store, clock=lambda: now[0], interval_s=0.01)
        task = asyncio.create_task(mon.run())
        await until(lambda: mon.evaluations >= 3)
        assert events(db) == []
        now[0] = T0 + 10.5  # nothing ever read, 10.5 s after the task started: every point is stale
        await until(lambda: len(events(db)) == 5)
        task.cancel()
        (ended,) = await asyncio.gather(task, return_exceptions=True)
        assert isinstance(ended, asyncio.CancelledError) and mon.spool.waiting == 0
    got = events(db)
    assert {source for _, kind, _, source, _, _ in got if kind == "voltage_data_stale"} == {
        v.point for v in CONFIG.voltages
    }
    assert all(data["state"] == "missing" and data["last_usable_ts"] is None for *_, data in got)


def test_status_shows_each_bus_phase_its_age_range_and_what_is_stale() -> None:
    now = [T0]
    snapshot = Snapshot()
    mon = VoltageMonitoring(CONFIG, snapshot, store=None, clock=lambda: now[0])  # type: ignore[arg-type]
    for k, pu in enumerate([1.06, 1.06, 1.06, 1.06]):
        now[0] = T0 + k
        snapshot.update(readings(now[0], pu, cap_b=k == 0))  # cap675-ctl.v_b read once, at T0
        mon.evaluate()
    now[0] = T0 + 12.5
    snapshot.update(readings(now[0] - 0.5, 1.06, cap_b=False))
    mon.evaluate()
    snapshot.update([Reading("fdr-671-meter.v_a", now[0], None, "V", Quality.INVALID)])
    now[0] += 0.5
    mon.evaluate()
    status = json.loads(json.dumps(mon.status()))  # what the status file holds
    bps = status["bus_phases"]
    assert list(bps) == ["rg60/a", "671/a", "675/a", "675/b"]
    assert bps["671/a"]["source"] == "pmu-671.VA.mag" and bps["671/a"]["sources"] == ["pmu-671.VA.mag",
                                                                                      "fdr-671-meter.v_a"]  # fmt: skip
    assert (bps["rg60/a"]["range_class"], bps["rg60/a"]["value_pu"], bps["rg60/a"]["age_s"]) == ("outside_b", 1.06, 1.0)
    assert bps["675/a"]["value_v"] == 117.1 and bps["675/a"]["range_class"] == "A"
    assert bps["675/b"]["stale"] and bps["675/b"]["value_v"] is None
    assert status["lowest_end_of_line"] == {"bus": "675", "phase": "a", "value_pu": round(117.1 / 120, 5),
                                            "value_v": 117.1, "source": "cap675-ctl.v_a"}  # fmt: skip
    assert status["highest"]["bus"] == "rg60"
    assert status["stale"] == {"cap675-ctl.v_b": {"bus": "675", "phase": "b", "state": "stale", "age_s": 13.0},
                               "fdr-671-meter.v_a": {"bus": "671", "phase": "a", "state": "invalid", "age_s": 0.5}}  # fmt: skip
    assert status["stale_events"] == ["cap675-ctl.v_b"]
    assert bps["rg60/a"]["alarms"] == ["A high", "B high"]

    text = status_text({"site": "s", "monitoring": status}, AgentState(True, "running"), now[0])
    lines = text.splitlines()
    head = lines.index("voltages (ANSI C84.1, Range A alarms; 4 bus-phases, 1 STALE):")
    assert lines[head + 1] == ("  rg60/a     1.0600 pu 127.2 V  1.0 s old  OUTSIDE B  ALARM A high, B high  from "
                               "sub-meter.v_a")  # fmt: skip
    assert lines[head + 2] == "  671/a      0.9900 pu 118.8 V  0.8 s old  in A  from pmu-671.VA.mag"
    assert lines[head + 3] == "  675/a      0.9758 pu 117.1 V  1.0 s old  in A  from cap675-ctl.v_a (end of line)"
    assert lines[head + 4] == "  675/b      STALE    no usable source: cap675-ctl.v_b stale (end of line)"
    assert lines[head + 5] == "  lowest 675/a 0.9758 pu; highest rg60/a 1.0600 pu; lowest end of line 675/a 0.9758 pu"
    assert lines[head + 6] == "  stale: fdr-671-meter.v_a (invalid, 0.5 s old), cap675-ctl.v_b (stale, 13 s old)"


def test_status_before_the_first_picture_and_without_monitoring() -> None:
    mon = VoltageMonitoring(CONFIG, Snapshot(), store=None)  # type: ignore[arg-type]
    assert mon.status()["evaluated_ts"] is None and "bus_phases" not in mon.status()
    for section in (None, mon.status()):
        text = status_text({"site": "s", "monitoring": section}, AgentState(True, "running"), T0)
        assert "voltages" not in text
