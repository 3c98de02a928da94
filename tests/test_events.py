"""The event spool against the agent's real store: a Store on a SQLite file in tmp_path, wrapped in AsyncStore.

A failing store is made for real: another connection holds the database's write lock (as an operator's
``sqlite3`` shell in a transaction would), so the store's write waits for it and, past the connection's busy
timeout, fails with StoreError ("database is locked"). A write is held in progress the same way, released
when the test lets the lock go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers.aio import async_test, until
from helpers.db import query_db

from agent.events import EventSpool, SpoolStats
from agent.store import AsyncStore, Store
from protocols.eventlog import EventLog

SOURCE = "feeder-1"


@dataclass(frozen=True, slots=True)
class Ev:
    ts: float
    kind: str
    severity: str
    source: str
    text: str
    data: dict[str, Any] | None


def ev(i: int, **kw: Any) -> Ev:
    fields: dict[str, Any] = {"ts": 1_767_225_600.0 + i, "kind": "test_event", "severity": "warning",
                              "source": SOURCE, "text": f"e{i}", "data": {"i": i}}  # fmt: skip
    return Ev(**{**fields, **kw})


def stored(db: Path) -> list[str]:
    """The texts of the spool's events in the store, in the order they were stored."""
    return [t for (t,) in query_db(db, "SELECT text FROM events WHERE source = ? ORDER BY id", (SOURCE,))]


@contextlib.asynccontextmanager
async def real_store(tmp_path: Path, busy_timeout_ms: int | None = None) -> AsyncIterator[tuple[AsyncStore, Path]]:
    """A real store; ``busy_timeout_ms`` shortens how long a write waits for a lock another connection holds."""
    db = tmp_path / "agent.db"
    store = AsyncStore(Store(db, "site1", 64 * 1024 * 1024))
    if busy_timeout_ms is not None:
        store.store.conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    try:
        yield store, db
    finally:
        await store.aclose()


@contextlib.contextmanager
def write_locked(db: Path) -> Iterator[None]:
    """Another connection holds the database's write lock for the block."""
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def spool_for(store: AsyncStore, **kw: Any) -> EventSpool:
    return EventSpool(store, name="test", source_key="feeder", logger=EventLog("test"), **kw)


# ---- order, refusal ----------------------------------------------------------------------------------------------


@async_test
async def test_events_are_stored_in_the_order_they_were_put(tmp_path: Path) -> None:
    async with real_store(tmp_path) as (store, db):
        spool = spool_for(store)
        spool.extend(ev(i) for i in range(20))
        assert spool.waiting == 20
        assert await spool.flush() is True
        assert stored(db) == [f"e{i}" for i in range(20)]
        assert spool.status() == {"events_stored": 20, "events_refused": 0, "events_dropped": 0, "events_waiting": 0}


@async_test
async def test_an_event_the_store_refuses_is_logged_and_dropped_and_the_rest_are_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gridedge.test")
    async with real_store(tmp_path) as (store, db):
        spool = spool_for(store)
        spool.put(ev(0))
        spool.put(ev(1, data={"residual_pct": float("nan")}))  # the store takes JSON only: NaN is refused
        spool.put(ev(2))
        assert await spool.flush() is True
        assert stored(db) == ["e0", "e2"]
        assert (spool.stats.events_stored, spool.stats.events_refused, spool.waiting) == (2, 1, 0)
    refused = [r.getMessage() for r in caplog.records if "event=event_refused" in r.getMessage()]
    assert len(refused) == 1 and "feeder=feeder-1" in refused[0] and "kind=test_event" in refused[0], refused
    assert sum(r.getMessage().startswith("event=event_stored ") for r in caplog.records) == 2


# ---- a failing store -----------------------------------------------------------------------------------------


@async_test
async def test_a_failing_store_keeps_every_event_waiting_in_order_until_it_recovers(tmp_path: Path) -> None:
    async with real_store(tmp_path, busy_timeout_ms=100) as (store, db):
        spool = spool_for(store)
        with write_locked(db):
            spool.extend([ev(0), ev(1)])
            assert await spool.flush() is False  # database is locked: nothing stored, nothing lost
            spool.put(ev(2))
            assert await spool.flush() is False
            assert spool.waiting == 3 and spool.stats.events_stored == 0
        assert await spool.flush() is True
        assert stored(db) == ["e0", "e1", "e2"]
        assert spool.stats.events_stored == 3 and spool.stats.events_dropped == 0


@async_test
async def test_the_retry_task_stores_what_a_failing_store_left_once_it_recovers(tmp_path: Path) -> None:
    async with real_store(tmp_path, busy_timeout_ms=100) as (store, db):
        spool = spool_for(store, retry_s=0.05)
        with write_locked(db):
            spool.extend([ev(0), ev(1)])
            assert await spool.flush() is False
        async with spool.retrying():  # no new event comes: only the retry stores them
            await until(lambda: spool.waiting == 0)
        assert stored(db) == ["e0", "e1"]


@async_test
async def test_close_stores_what_waits_and_logs_what_a_failing_store_did_not_take(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with real_store(tmp_path, busy_timeout_ms=100) as (store, db):
        spool = spool_for(store)
        with write_locked(db):
            spool.extend([ev(0), ev(1)])
            await spool.close()
        assert stored(db) == [] and spool.waiting == 2
        lost = [r.getMessage() for r in caplog.records if "events_lost_at_stop" in r.getMessage()]
        assert lost == ["event=events_lost_at_stop count=2 reason=store_failing"]
        await spool.close()  # the store is back: the final flush stores them
        assert stored(db) == ["e0", "e1"]


# ---- cancellation and concurrent writers -------------------------------------------------------------------


@async_test
async def test_a_flush_cancelled_mid_write_never_stores_the_event_twice(tmp_path: Path) -> None:
    # AsyncStore finishes a write whose caller was cancelled: the final flush must not write that event again.
    async with real_store(tmp_path) as (store, db):
        spool = spool_for(store)
        with write_locked(db):
            spool.extend([ev(0), ev(1)])
            flush = asyncio.create_task(spool.flush())
            await until(lambda: spool.writing is not None)  # e0 handed to the store's thread, waiting for the lock
            flush.cancel()
            with pytest.raises(asyncio.CancelledError):
                await flush
            assert spool.waiting == 2  # e0 still in flight, e1 queued
            final = asyncio.create_task(spool.close())
            await asyncio.sleep(0)
        await final
        assert stored(db) == ["e0", "e1"]
        assert spool.stats.events_stored == 2 and spool.waiting == 0


@async_test
async def test_a_flush_cancelled_mid_write_that_then_fails_keeps_the_event_first_in_line(tmp_path: Path) -> None:
    async with real_store(tmp_path, busy_timeout_ms=300) as (store, db):
        spool = spool_for(store)
        with write_locked(db):
            spool.extend([ev(0), ev(1)])
            flush = asyncio.create_task(spool.flush())
            await until(lambda: spool.writing is not None)
            flush.cancel()
            with pytest.raises(asyncio.CancelledError):
                await flush
            await until(lambda: spool.writing is None)  # the write went on without its caller, and failed
            assert spool.waiting == 2 and spool.stats.events_stored == 0
        assert await spool.flush() is True
        assert stored(db) == ["e0", "e1"]


@async_test
async def test_the_retry_task_never_writes_an_event_a_flush_is_writing(tmp_path: Path) -> None:
    async with real_store(tmp_path) as (store, db):
        spool = spool_for(store, retry_s=0.01)
        async with spool.retrying():
            with write_locked(db):
                spool.put(ev(0))
                flush = asyncio.create_task(spool.flush())
                await until(lambda: spool.writing is not None)
                await asyncio.sleep(0.1)  # the retry task wakes many times while e0 is in flight
            assert await flush is True
            await until(lambda: spool.waiting == 0)
        assert stored(db) == ["e0"] and spool.stats.events_stored == 1


# ---- the bound ------------------------------------------------------------------------------------------------


@async_test
async def test_past_the_bound_the_oldest_waiting_event_is_dropped_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with real_store(tmp_path, busy_timeout_ms=100) as (store, db):
        spool = spool_for(store, max_waiting=3)
        with write_locked(db):
            spool.extend(ev(i) for i in range(6))
            assert await spool.flush() is False
        assert spool.waiting == 3 and spool.stats.events_dropped == 3
        assert await spool.flush() is True
        assert stored(db) == ["e3", "e4", "e5"]
    dropped = [r.getMessage() for r in caplog.records if "event=event_dropped" in r.getMessage()]
    assert len(dropped) == 3 and all("reason=store_failing max_waiting=3" in m for m in dropped), dropped
    for i, m in enumerate(dropped):  # the oldest first, each named
        assert f"kind=test_event feeder={SOURCE} ts={ev(i).ts:.3f}" in m, m


@async_test
async def test_the_bound_never_drops_the_event_being_written(tmp_path: Path) -> None:
    # e0 is in the store's thread when e1..e4 come; with room for two, e1 and e2 go, e0 is stored once.
    async with real_store(tmp_path) as (store, db):
        spool = spool_for(store, max_waiting=2)
        with write_locked(db):
            spool.put(ev(0))
            flush = asyncio.create_task(spool.flush())
            await until(lambda: spool.writing is not None)
            spool.extend(ev(i) for i in range(1, 5))
            assert spool.waiting == 3 and spool.stats.events_dropped == 2
        assert await flush is True
        assert stored(db) == ["e0", "e3", "e4"]
        assert spool.stats.events_stored == 3 and spool.stats.events_dropped == 2


# ---- counters and arguments ------------------------------------------------------------------------------------


@dataclass(slots=True)
class ProducerStats(SpoolStats):
    events: int = 0


@async_test
async def test_a_producers_own_stats_carry_the_spools_counters(tmp_path: Path) -> None:
    async with real_store(tmp_path) as (store, _db):
        stats = ProducerStats()
        spool = spool_for(store, stats=stats)
        spool.extend([ev(0), ev(1, text="x" * 70_000)])  # over the store's 65536 characters: refused
        await spool.flush()
        assert (stats.events_stored, stats.events_refused, stats.events_dropped) == (1, 1, 0)


@pytest.mark.parametrize(("kw", "match"), [({"max_waiting": 0}, "max_waiting = 0"), ({"retry_s": 0}, "retry_s = 0")])
def test_a_spool_refuses_a_bound_or_retry_it_cannot_keep(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EventSpool(object(), name="test", **kw)  # type: ignore[arg-type]
