"""The SQLite store on real files: round trips, sealing, acks, bad input, foreign and damaged files, AsyncStore, the
full policy, a full disk."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.points import Quality, Reading, Stream
from agent.store import (
    APPLICATION_ID,
    MAX_TEXT,
    SCHEMA_VERSION,
    AsyncStore,
    Store,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreInputError,
)
from protocols.telemetry import decode_batch
from protocols.telemetry.schema import MAX_PAYLOAD_BYTES

SITE = "sub-1"
SMALL = 1 << 20  # 1 MiB


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def prefixed_ids(prefix: str):
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


def make(tmp_path: Path, clock: FakeClock | None = None, **kw) -> Store:
    counter = itertools.count(1)
    kw.setdefault("max_bytes", 64 * 1024 * 1024)
    kw.setdefault("id_factory", lambda: f"m{next(counter)}")
    return Store(tmp_path / "agent.db", SITE, clock=clock or FakeClock(), **kw)


def tele(n: int, start: int = 0, point: str = "meter1.v_an") -> list[Reading]:
    return [Reading(point, 1_700_000_000.0 + i, 120.0 + i / 10, "V") for i in range(start, start + n)]


def energy(n: int, start: int = 0) -> list[Reading]:
    return [
        Reading("meter1.kwh_del", 1_700_000_000.0 + 900 * i, 1000 + i, "kWh", stream=Stream.ENERGY)
        for i in range(start, start + n)
    ]


def decoded(store: Store, stream: str | None = None):
    msgs = [m for m in store.pending(10_000) if stream is None or m.stream == stream]
    return [(m, decode_batch(m.payload)) for m in msgs]


# ----------------------------------------------------------------------------------------- basics


def test_file_is_wal_with_incremental_vacuum_and_schema_version(tmp_path: Path) -> None:
    store = make(tmp_path)
    conn = sqlite3.connect(tmp_path / "agent.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()
    durable = make(tmp_path, durable=True)
    assert durable.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    durable.close()


def test_readings_round_trip_through_a_sealed_payload(tmp_path: Path) -> None:
    clock = FakeClock()
    store = make(tmp_path, clock)
    readings = [
        Reading("meter1.v_an", 1_700_000_000.25, 120.5, "V"),
        Reading("meter1.count", 1_700_000_001.0, 42, ""),
        Reading("relay.state", 1_700_000_002.0, "closed", ""),
        Reading("relay.trip", 1_700_000_003.0, True, ""),
        Reading("meter1.i_a", 1_700_000_004.0, None, "A", Quality.STALE),
        Reading("meter1.kwh", 1_700_000_005.0, 1234.5, "kWh", Quality.ESTIMATED, Stream.ENERGY),
    ]
    store.add_readings(readings)
    assert store.stats().readings_taken == 6
    assert store.stats().unsealed == 6
    clock.t += 5
    assert store.seal(force=True) == 2
    (m_t, b_t), (m_e, b_e) = decoded(store)
    assert (b_t.site, b_t.stream, b_t.seq, b_t.msg_id, b_t.sent) == (SITE, "telemetry", 1, m_t.msg_id, clock.t)
    assert b_t.items == (
        {"point": "meter1.v_an", "ts": 1_700_000_000.25, "value": 120.5, "unit": "V", "quality": "good"},
        {"point": "meter1.count", "ts": 1_700_000_001.0, "value": 42, "unit": "", "quality": "good"},
        {"point": "relay.state", "ts": 1_700_000_002.0, "value": "closed", "unit": "", "quality": "good"},
        # SQLite has no boolean: True is stored and sent as 1
        {"point": "relay.trip", "ts": 1_700_000_003.0, "value": 1, "unit": "", "quality": "good"},
        {"point": "meter1.i_a", "ts": 1_700_000_004.0, "value": None, "unit": "A", "quality": "stale"},
    )
    assert m_t.count == 5 and m_e.count == 1
    assert b_e.items == (
        {"point": "meter1.kwh", "ts": 1_700_000_005.0, "value": 1234.5, "unit": "kWh", "quality": "estimated"},
    )
    # values are stored as given: an int stays an INTEGER, a float a REAL, a string TEXT
    types = store.conn.execute("SELECT typeof(value) FROM readings ORDER BY id").fetchall()
    assert [t for (t,) in types] == ["real", "integer", "text", "integer", "null", "real"]


def test_seal_makes_full_batches_with_consecutive_seqs_per_stream(tmp_path: Path) -> None:
    store = make(tmp_path, batch_size=100)
    store.add_readings(tele(250) + energy(120))
    assert store.seal() == 3  # telemetry 100+100, energy 100; the partial batches wait
    stats = store.stats()
    assert stats.outbox_messages == 3 and stats.outbox_readings == 300 and stats.unsealed == 70
    assert store.seal(force=True) == 2
    tel = decoded(store, "telemetry")
    en = decoded(store, "energy")
    assert [b.seq for _, b in tel] == [1, 2, 3]
    assert [len(b.items) for _, b in tel] == [100, 100, 50]
    assert [b.seq for _, b in en] == [1, 2]
    assert [len(b.items) for _, b in en] == [100, 20]
    # in id order, nothing lost or repeated
    values = [item["value"] for _, b in tel for item in b.items]
    assert values == [r.value for r in tele(250)]
    assert [item["value"] for _, b in en for item in b.items] == list(range(1000, 1120))
    assert len({m.msg_id for m, _ in tel + en}) == 5
    assert store.seal(force=True) == 0
    assert store.stats().unsealed == 0


def test_seqs_continue_after_close_and_reopen(tmp_path: Path) -> None:
    store = make(tmp_path, batch_size=10, id_factory=prefixed_ids("a"))
    store.add_readings(tele(25) + energy(3))
    store.seal(force=True)
    store.close()
    store = make(tmp_path, batch_size=10, id_factory=prefixed_ids("b"))
    store.add_readings(tele(10, start=25) + energy(1, start=3))
    assert store.seal() == 1  # a full telemetry batch; the energy partial waits
    store.close()
    store = make(tmp_path, batch_size=10, id_factory=prefixed_ids("c"))
    store.seal(force=True)
    assert [b.seq for _, b in decoded(store, "telemetry")] == [1, 2, 3, 4]
    assert [b.seq for _, b in decoded(store, "energy")] == [1, 2]
    assert [i["value"] for _, b in decoded(store, "energy") for i in b.items] == [1000, 1001, 1002, 1003]


def test_partial_batch_is_sealed_once_it_is_older_than_max_age(tmp_path: Path) -> None:
    mono = FakeClock(100.0)
    store = make(tmp_path, batch_size=100, max_age_s=2.0, monotonic=mono)
    store.add_readings(tele(5))
    assert store.seal() == 0
    mono.t += 1.9
    store.add_readings(tele(5, start=5))
    assert store.seal() == 0
    mono.t += 0.1  # the oldest has now waited 2 s
    assert store.seal() == 1
    assert len(decoded(store)[0][1].items) == 10
    store.add_readings(tele(1, start=10))
    assert store.seal() == 0  # the clock restarts for the next partial batch


def test_a_backward_step_of_the_wall_clock_does_not_hold_a_partial_batch(tmp_path: Path) -> None:
    """NTP steps the wall clock of an RTC-less box back after boot: the age of a batch is monotonic time."""
    wall, mono = FakeClock(1_800_000_000.0), FakeClock(50.0)
    store = make(tmp_path, wall, batch_size=100, max_age_s=2.0, monotonic=mono)
    store.add_readings(energy(1))
    store.add_event(1_800_000_000.0, "restart", "info", "runtime", "agent started")
    wall.t -= 3600.0
    mono.t += 1.0
    assert store.seal() == 0
    wall.t += 1.0
    mono.t += 1.0  # 2 s of monotonic time: due, though the wall clock is an hour behind
    assert store.seal() == 2
    assert store.stats().unsealed == 0
    # the wall clock still stamps what leaves the box
    assert {b.sent for _, b in decoded(store)} == {1_800_000_000.0 - 3600.0 + 1.0}
    created = store.conn.execute("SELECT DISTINCT created FROM outbox").fetchall()
    assert created == [(1_800_000_000.0 - 3600.0 + 1.0,)]


def test_a_wall_clock_step_forward_does_not_seal_a_young_partial_batch(tmp_path: Path) -> None:
    wall, mono = FakeClock(), FakeClock(50.0)
    store = make(tmp_path, wall, batch_size=100, max_age_s=2.0, monotonic=mono)
    store.add_readings(tele(3))
    wall.t += 86_400.0
    assert store.seal() == 0
    mono.t += 2.0
    assert store.seal() == 1


def wal_bytes(store: Store) -> int:
    return Path(f"{store.path}-wal").stat().st_size


def test_idle_seals_write_nothing(tmp_path: Path) -> None:
    """The uplink seals every 0.2 s: with nothing to seal there must be no transaction, no write, no fsync."""
    store = make(tmp_path, batch_size=10)
    store.add_readings(tele(25))
    store.add_event(1.0, "restart", "info", "runtime", "agent started")
    assert store.seal(force=True) == 4
    changes, wal = store.conn.total_changes, wal_bytes(store)
    watcher = sqlite3.connect(store.path)  # data_version changes when ANOTHER connection commits
    version = watcher.execute("PRAGMA data_version").fetchone()[0]
    for _ in range(100):
        assert store.seal() == 0
    assert store.seal(force=True) == 0
    assert store.conn.total_changes == changes
    assert wal_bytes(store) == wal
    assert watcher.execute("PRAGMA data_version").fetchone()[0] == version
    # and sealing works right after new data
    store.add_readings(tele(10, start=25))
    assert store.seal() == 1
    assert watcher.execute("PRAGMA data_version").fetchone()[0] != version
    tel = decoded(store, "telemetry")
    assert [b.seq for _, b in tel] == [1, 2, 3, 4]
    assert [i["value"] for i in tel[-1][1].items] == [r.value for r in tele(10, start=25)]
    watcher.close()


def test_a_waiting_partial_batch_is_not_rewritten_at_every_seal(tmp_path: Path) -> None:
    mono = FakeClock(10.0)
    store = make(tmp_path, batch_size=100, max_age_s=5.0, monotonic=mono)
    store.add_readings(tele(30))
    changes = store.conn.total_changes
    for _ in range(20):
        mono.t += 0.2
        assert store.seal() == 0  # waiting for max_age_s: nothing to write yet
    assert store.conn.total_changes == changes
    mono.t += 1.5
    assert store.seal() == 1
    # one outbox row and one row each for the telemetry cursor and seq; the other streams' rows untouched
    assert store.conn.total_changes == changes + 3
    assert store._db.meta("sealed:energy") == 0 and store._db.meta("seq:energy") == 1
    assert store._db.meta("sealed:events") == 0 and store._db.meta("seq:events") == 1


def test_unsealed_data_left_by_a_previous_run_is_sealed_at_once(tmp_path: Path) -> None:
    store = make(tmp_path, batch_size=100, max_age_s=3600)
    store.add_readings(tele(3))
    store.close()
    store = make(tmp_path, batch_size=100, max_age_s=3600)
    assert store.seal() == 1  # its age is unknown: do not let it wait another max_age_s


def test_events_are_sealed_on_their_own_stream(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.add_event(1_700_000_000.5, "limit", "warning", "monitoring", "V_an high", {"v": 127.1, "limit": 126})
    store.add_event(1_700_000_001.0, "restart", "info", "runtime", "agent started")
    assert store.seal(force=True) == 1
    ((msg, batch),) = decoded(store)
    assert batch.stream == "events" and batch.seq == 1 and msg.count == 2
    assert batch.items == (
        {"ts": 1_700_000_000.5, "kind": "limit", "severity": "warning", "source": "monitoring",
         "text": "V_an high", "data": {"v": 127.1, "limit": 126}},
        {"ts": 1_700_000_001.0, "kind": "restart", "severity": "info", "source": "runtime",
         "text": "agent started", "data": None},
    )  # fmt: skip


def test_oversized_batches_are_split_below_the_payload_limit(tmp_path: Path) -> None:
    store = make(tmp_path, batch_size=100)
    big = "x" * MAX_TEXT
    store.add_readings([Reading("dev.log", 1.0 + i, big, "") for i in range(100)])
    created = store.seal()
    msgs = decoded(store)
    assert created == len(msgs) >= 2
    assert all(len(m.payload) <= MAX_PAYLOAD_BYTES for m, _ in msgs)
    assert [b.seq for _, b in msgs] == list(range(1, created + 1))
    assert sum(len(b.items) for _, b in msgs) == 100


# ----------------------------------------------------------------------------------------- outbox


def test_pending_is_oldest_first_and_skips_excluded(tmp_path: Path) -> None:
    store = make(tmp_path, batch_size=10)
    store.add_readings(tele(50))
    store.seal()
    store.add_readings(energy(10))
    store.seal()
    all_ids = [m.msg_id for m in store.pending(100)]
    assert all_ids == ["m1", "m2", "m3", "m4", "m5", "m6"]
    assert [m.msg_id for m in store.pending(2)] == ["m1", "m2"]
    assert [m.msg_id for m in store.pending(3, exclude={"m1", "m3", "nope"})] == ["m2", "m4", "m5"]
    assert store.pending(0) == []
    last = store.pending(1, exclude=all_ids[:5])[0]
    assert (last.stream, last.seq, last.count) == ("energy", 1, 10)


def test_ack_removes_only_the_acked_and_ignores_unknown_and_duplicate_ids(tmp_path: Path) -> None:
    store = make(tmp_path, batch_size=10)
    store.add_readings(tele(40))
    store.seal()
    assert store.ack(["m2", "m4", "m2", "unknown"]) == 2
    assert [m.msg_id for m in store.pending(10)] == ["m1", "m3"]
    assert store.ack(["m2", "m4"]) == 0  # acks arrive twice: harmless
    assert store.ack([]) == 0
    stats = store.stats()
    assert (stats.acked_messages, stats.acked_readings, stats.outbox_messages, stats.outbox_readings) == (2, 20, 2, 20)


# ----------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("reading", "message"),
    [
        (Reading("m.v", 1.0, math.nan, "V"), "must be finite"),
        (Reading("m.v", 1.0, math.inf, "V"), "must be finite"),
        (Reading("m.v", 1.0, 2**64, "V"), "64 bits"),
        (Reading("m.v", 1.0, [1, 2], "V"), "type list"),  # type: ignore[arg-type]
        (Reading("m.v", 1.0, b"\x00", "V"), "type bytes"),  # type: ignore[arg-type]
        (Reading("m.v", 1.0, "x" * (MAX_TEXT + 1), "V"), "at most"),
        (Reading("m.v", math.nan, 1.0, "V"), "ts=nan"),
        (Reading("m.v", "yesterday", 1.0, "V"), "ts='yesterday'"),  # type: ignore[arg-type]
        (Reading("", 1.0, 1.0, "V"), "point must be"),
        (Reading("m.v", 1.0, 1.0, None), "unit=None"),  # type: ignore[arg-type]
        (Reading("m.v", 1.0, 1.0, "V", "excellent"), "quality='excellent'"),  # type: ignore[arg-type]
        (Reading("m.v", 1.0, 1.0, "V", Quality.GOOD, "gossip"), "stream='gossip'"),  # type: ignore[arg-type]
    ],
)
def test_bad_readings_are_refused_and_the_whole_call_is_not_stored(tmp_path: Path, reading, message) -> None:
    store = make(tmp_path)
    with pytest.raises(StoreInputError, match=message) as info:
        store.add_readings([*tele(3), reading])
    assert "readings[3]" in str(info.value)
    assert store.stats().readings_taken == 0 and store.stats().readings_rows == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((math.inf, "k", "info", "s", "t", None), "ts=inf"),
        ((1.0, 3, "info", "s", "t", None), "kind=3"),
        ((1.0, "k", "info", "s", "t", {"x": object()}), "not JSON-serialisable"),
        ((1.0, "k", "info", "s", "t", {"x": math.nan}), "not JSON-serialisable"),
        ((1.0, "k", "info", "s", "t", [1]), "must be a dict"),
        ((1.0, "k", "info", "s", "t", {"x": "y" * MAX_TEXT}), "data JSON"),
    ],
)
def test_bad_events_are_refused(tmp_path: Path, args, message) -> None:
    store = make(tmp_path)
    with pytest.raises(StoreInputError, match=message):
        store.add_event(*args)
    assert store.seal(force=True) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"site": "bad site!"}, "site="),
        ({"max_bytes": 1000}, "max_bytes=1000"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"max_age_s": -1}, "max_age_s=-1"),
    ],
)
def test_bad_constructor_arguments(tmp_path: Path, kwargs, message) -> None:
    args = {"path": tmp_path / "a.db", "site": SITE, "max_bytes": 1 << 20} | kwargs
    with pytest.raises(StoreError, match=message):
        Store(**args)


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "agent.db").write_bytes(b"this is not sqlite" * 1000)
    with pytest.raises(StoreError, match="cannot open store"):
        make(tmp_path)


def test_a_store_written_by_a_newer_agent_is_refused(tmp_path: Path) -> None:
    make(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "agent.db")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        make(tmp_path)


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        store.add_readings(tele(1))
    with pytest.raises(StoreError, match="closed"):
        store.stats()


# ----------------------------------------------------------------------------------------- foreign and damaged files


def test_a_foreign_sqlite_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """The store adds no table to someone else's database and leaves its journal mode as it was."""
    path = tmp_path / "agent.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    conn.execute("INSERT INTO customers VALUES (1, 'x')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreCorruptError, match=r"not a GridEdge store \(it holds the tables customers"):
        Store(path, SITE, SMALL)
    assert path.read_bytes() == before
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_database_of_another_application_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id=1234")
    conn.execute("PRAGMA user_version=1")
    conn.execute("CREATE TABLE readings (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorruptError, match="belongs to another program"):
        Store(path, SITE, SMALL)


def test_a_store_marks_itself_and_an_unmarked_store_of_ours_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    Store(path, SITE, SMALL).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID == 0x47454447
    conn.execute("PRAGMA application_id=0")  # unmarked, as stores of schema version 1 may be
    conn.commit()
    conn.close()
    store = Store(path, SITE, SMALL)
    store.add_readings(telemetry_batch(0, n=3))
    assert store.stats().readings_taken == 3
    assert store.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    store.close()


def test_a_version_1_file_without_our_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=1")
    conn.execute("CREATE TABLE readings (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorruptError, match="lacks the tables events, meta, outbox"):
        Store(path, SITE, SMALL)


def test_a_damaged_page_is_a_corrupt_error_saying_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    store = Store(path, SITE, 64 << 20)
    store.add_readings([Reading("a.v", 1.0 + i, float(i), "V") for i in range(20_000)])
    store.close()
    data = bytearray(path.read_bytes())
    data[3 * 4096 : 4 * 4096] = b"\xa5" * 4096  # page 4: inside the readings table
    path.write_bytes(bytes(data))
    store = Store(path, SITE, 64 << 20)
    with pytest.raises(
        StoreCorruptError, match=r"is damaged \(database disk image is malformed\).*move the file aside"
    ):
        store.add_readings([Reading("a.v", 1.0, 1.0, "V")])
    store.close()


def test_garbage_at_the_store_path_is_a_corrupt_error(tmp_path: Path) -> None:
    (tmp_path / "agent.db").write_bytes(b"this is not sqlite" * 1000)
    with pytest.raises(StoreCorruptError, match="cannot open store .*not a database.*move the file aside"):
        Store(tmp_path / "agent.db", SITE, SMALL)


def test_a_closed_store_is_not_a_corrupt_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db", SITE, SMALL)
    store.close()
    with pytest.raises(StoreError, match="closed") as info:
        store.stats()
    assert not isinstance(info.value, StoreCorruptError)


# ----------------------------------------------------------------------------------------- AsyncStore


def test_async_store_runs_every_call_in_one_worker_thread(tmp_path: Path) -> None:
    threads: set[str] = set()
    counter = itertools.count(1)

    def id_factory() -> str:
        threads.add(threading.current_thread().name)
        return f"a{next(counter)}"

    async def main() -> None:
        loop_thread = threading.current_thread().name
        store = await AsyncStore.open(tmp_path / "agent.db", SITE, 1 << 24, batch_size=10, id_factory=id_factory)
        async with store:
            await asyncio.gather(*(store.add_readings(tele(10, start=10 * i)) for i in range(5)))
            await store.add_event(1.0, "k", "info", "test", "hello")
            assert await store.seal(force=True) == 6
            pending = await store.pending(10, exclude=["a1"])
            assert [m.msg_id for m in pending] == ["a2", "a3", "a4", "a5", "a6"]
            assert await store.ack(["a1", "a2"]) == 2
            stats = await store.stats()
            assert stats.readings_taken == 50 and stats.outbox_messages == 4
            assert await store.enforce_limit() == []
        assert loop_thread not in threads and len(threads) == 1
        with pytest.raises(StoreError, match="closed"):
            await store.stats()

    asyncio.run(main())


def test_async_store_wraps_an_open_store(tmp_path: Path) -> None:
    async def main() -> int:
        store = AsyncStore(make(tmp_path))
        await store.add_readings(energy(3))
        n = (await store.stats()).unsealed
        await store.aclose()
        await store.aclose()
        return n

    assert asyncio.run(main()) == 3


# ----------------------------------------------------------------------------------------- the full policy


def kinds(store: Store) -> list[str]:
    return [k for (k,) in store.conn.execute("SELECT kind FROM events ORDER BY id")]


def telemetry_batch(k: int, n: int = 400) -> list[Reading]:
    return [Reading(f"feeder.p{i % 20}", 1_700_000_000.0 + k * n + i, float(k * n + i), "V") for i in range(n)]


def energy_batch(k: int, n: int = 10) -> list[Reading]:
    return [
        Reading("meter1.kwh", 1_700_000_000.0 + k * n + i, k * n + i, "kWh", stream=Stream.ENERGY) for i in range(n)
    ]


def test_alarm_at_90_percent_once_then_rearmed_below_80(tmp_path: Path) -> None:
    store = make(tmp_path, max_bytes=SMALL, batch_size=100)
    sizes = []
    step = 0
    while "store_full_alarm" not in kinds(store):
        sizes.append(store.stats().size_bytes)
        store.add_readings(telemetry_batch(step))
        store.seal()
        step += 1
    # add_readings measures before inserting (after a checkpoint, so the WAL's transient pages do not count):
    # the alarm came with a call that found >= 90 %, and no call alarmed while the store was below that
    assert sizes[-1] >= 0.9 * SMALL and max(sizes[:-1]) < SMALL
    (data,) = [json.loads(d) for (d,) in store.conn.execute("SELECT data FROM events WHERE kind='store_full_alarm'")]
    assert data["max_bytes"] == SMALL and data["size_bytes"] >= 0.9 * SMALL
    for k in range(step, step + 30):  # staying full alarms once, not per call
        store.add_readings(telemetry_batch(k))
        store.seal()
    assert kinds(store).count("store_full_alarm") == 1
    assert store.stats().full_alarm
    store.ack(m.msg_id for m in store.pending(10_000))
    cleared = store.enforce_limit()  # below 80 %: cleared, once, and said so
    assert [e["kind"] for e in cleared] == ["store_full_cleared"]
    assert store.stats().size_bytes < 0.8 * SMALL and not store.stats().full_alarm
    assert store.enforce_limit() == []
    assert kinds(store).count("store_full_cleared") == 1
    k = step + 30
    while kinds(store).count("store_full_alarm") < 2:
        store.add_readings(telemetry_batch(k))
        store.seal()
        k += 1
    assert kinds(store).count("store_full_alarm") == 2


def fill_acked_history(store: Store, fraction: float) -> int:
    """Telemetry and energy taken, sealed and acknowledged until the store holds ``fraction`` of SMALL; the
    enforce_limit that add_readings calls at 90 % is never reached. Returns the batches added."""
    k = 0
    while store.stats().size_bytes < fraction * SMALL:
        store.add_readings(telemetry_batch(k) + energy_batch(k))
        store.seal()
        store.ack(m.msg_id for m in store.pending(10_000))
        k += 1
    return k


def test_acknowledged_history_is_pruned_steadily_from_75_percent_without_an_alarm(tmp_path: Path) -> None:
    from agent.store.policy import STEADY_FRACTION, STEADY_TARGET_FRACTION

    store = make(tmp_path, max_bytes=SMALL, batch_size=100)
    k = fill_acked_history(store, 0.8)
    assert store.stats().size_bytes < 0.9 * SMALL
    newest = store.conn.execute("SELECT max(id) FROM readings").fetchone()[0]
    oldest = store.conn.execute("SELECT min(id) FROM readings").fetchone()[0]
    assert store.enforce_limit() == []  # no alarm, nothing dropped: history is room, not a fault
    assert store._disk.db_bytes() < STEADY_TARGET_FRACTION * SMALL <= STEADY_FRACTION * SMALL
    left = store.conn.execute("SELECT min(id), max(id), count(*) FROM readings").fetchone()
    assert left[0] > oldest and left[1] == newest and left[2] > 0  # the oldest went, the newest stay
    assert store.stats().dropped_readings == 0 and kinds(store) == []
    # taking in as much again with a check after each batch: the store keeps its size, never alarms
    for j in range(k, 2 * k):
        store.add_readings(telemetry_batch(j) + energy_batch(j))
        store.seal()
        store.ack(m.msg_id for m in store.pending(10_000))
        assert store.enforce_limit() == []
        assert store.stats().size_bytes < 0.85 * SMALL
    assert kinds(store) == [] and store.stats().dropped_readings == 0


def test_steady_pruning_stops_at_its_time_budget_and_leaves_unsent_readings(tmp_path: Path) -> None:
    ticks = itertools.count()
    store = make(tmp_path, max_bytes=SMALL, batch_size=100, monotonic=lambda: 0.2 * next(ticks))
    fill_acked_history(store, 0.8)
    store.add_readings(telemetry_batch(10_000, n=50))  # taken, not sealed: not history, never pruned
    before = store.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    store.enforce_limit()  # each look at the clock is 0.2 s later: one chunk, then the 0.25-s budget is spent
    after = store.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    assert before - after == 256
    for _ in range(1000):  # check after check until the checks prune no more
        store.enforce_limit()
        count = store.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        if count == after:
            break
        after = count
    assert store.stats().size_bytes < 0.75 * SMALL
    unsealed = store.conn.execute(
        "SELECT count(*) FROM readings WHERE stream='telemetry' AND id > ?", (store._db.meta("sealed:telemetry"),)
    ).fetchone()[0]
    assert unsealed == 50


def test_full_store_drops_oldest_telemetry_and_keeps_every_energy_reading(tmp_path: Path) -> None:
    store = make(tmp_path, max_bytes=SMALL, batch_size=100)
    db = tmp_path / "agent.db"
    telemetry_added = energy_added = 0
    k = 0
    while store.stats().dropped_readings < 20_000:
        store.add_readings(telemetry_batch(k) + energy_batch(k))
        telemetry_added += 400
        energy_added += 10
        store.seal()
        k += 1
        assert k < 1000, "the policy never dropped anything"
    stats = store.stats()
    assert stats.size_bytes < 1.25 * SMALL  # a soft limit: enforced at every add_readings
    store.enforce_limit()
    assert db.stat().st_size + Path(f"{db}-wal").stat().st_size <= 1.1 * SMALL  # the file really shrank
    store.seal(force=True)

    # every energy reading is still there, sealed, in order, with consecutive seqs
    en = decoded(store, "energy")
    assert [b.seq for _, b in en] == list(range(1, len(en) + 1))
    assert [i["value"] for _, b in en for i in b.items] == list(range(energy_added))

    # telemetry went oldest first: what is left is the newest, contiguous, seqs a contiguous suffix
    tel = decoded(store, "telemetry")
    seqs = [b.seq for _, b in tel]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[0] > 1
    values = [i["value"] for _, b in tel for i in b.items]
    assert values == [float(v) for v in range(telemetry_added - len(values), telemetry_added)]

    # counted: everything taken is either in the outbox or dropped
    stats = store.stats()
    assert stats.unsealed == 0
    assert stats.dropped_readings == telemetry_added - len(values)
    assert stats.readings_taken == telemetry_added + energy_added
    dropped_events = store.conn.execute("SELECT data FROM events WHERE kind='telemetry_dropped'").fetchall()
    assert dropped_events
    counted = [json.loads(d) for (d,) in dropped_events]
    assert sum(c["dropped_readings"] for c in counted) == stats.dropped_readings
    assert sum(c["dropped_messages"] for c in counted) == store._db.meta("dropped_messages") == seqs[0] - 1
    # events are never dropped either
    assert [b.seq for _, b in decoded(store, "events")] == list(range(1, len(decoded(store, "events")) + 1))


def test_store_full_of_energy_refuses_energy_and_drops_telemetry(tmp_path: Path) -> None:
    store = make(tmp_path, max_bytes=SMALL, batch_size=100)
    k = 0
    store.add_readings(telemetry_batch(0))
    while True:
        try:
            store.add_readings(energy_batch(k, n=200))
        except StoreFullError as err:
            refused = err
            break
        store.seal()
        k += 1
        assert k < 1000, "never full"
    assert "NOT stored" in str(refused) and "never dropped" in str(refused)
    assert refused.rejected == tuple(energy_batch(k, n=200))
    store.seal(force=True)
    stats = store.stats()
    assert stats.size_bytes >= SMALL
    assert stats.readings_taken == 400 + 200 * k  # the refused call committed nothing
    assert decoded(store, "telemetry") == []  # all telemetry went first
    assert [i["value"] for _, b in decoded(store, "energy") for i in b.items] == list(range(200 * k))
    dropped_before = stats.dropped_readings
    assert dropped_before == 400
    store.add_readings(telemetry_batch(1))  # telemetry alone: dropped and counted, no error
    assert store.stats().dropped_readings == dropped_before + 400
    assert store.stats().readings_taken == 400 + 200 * k
    # once central has acknowledged, there is room again
    store.ack(m.msg_id for m in store.pending(10_000))
    store.add_readings(energy_batch(k, n=200))
    assert store.stats().readings_taken == 400 + 200 * (k + 1)


def fill_until_dropped(store: Store) -> int:
    k = 0
    while store.stats().dropped_readings == 0:
        store.add_readings(telemetry_batch(k))
        store.seal()
        k += 1
        assert k < 1000, "the policy never dropped anything"
    return k


def overfull(path: Path, *, history: bool = True) -> Store:
    """A store past its 1 MiB bound: filled with a larger bound, reopened with 1 MiB, the policy not yet run.
    Without ``history`` the sealed readings are gone as they are sealed: only outbox messages fill it."""
    big = Store(path, SITE, 64 << 20, batch_size=100)
    k = 0
    while big._disk.db_bytes() < 1.1 * SMALL:
        big.add_readings(telemetry_batch(k))
        big.seal()
        if not history:
            big.conn.execute("DELETE FROM readings WHERE id <= ?", (big._db.meta("sealed:telemetry"),))
        k += 1
    big.close()
    return Store(path, SITE, SMALL, batch_size=100)


def test_the_reported_alarm_stays_raised_after_the_policy_shrinks_the_store_to_85_percent(tmp_path: Path) -> None:
    """stats().full_alarm reports the latched alarm (raised at 90 %, cleared below 80 %), not "size >= 90 % now":
    right after the policy dropped telemetry down to 85 % the store is still full."""
    store = overfull(tmp_path / "agent.db", history=False)
    raised = [e["kind"] for e in store.enforce_limit()]
    assert raised[0] == "store_full_alarm"
    stats = store.stats()
    assert 0.8 * SMALL <= stats.size_bytes < 0.9 * SMALL  # shrunk below the alarm level, above the clear level
    assert stats.full_alarm  # so the alarm holds
    assert store.enforce_limit() == []  # and is neither raised again nor cleared
    assert kinds(store).count("store_full_alarm") == 1 and "store_full_cleared" not in kinds(store)
    store.close()


def test_the_policy_gives_the_freed_pages_back_to_the_file_system(tmp_path: Path) -> None:
    """Every free page goes back, not one per call (``execute('PRAGMA incremental_vacuum')`` steps only once)."""
    path = tmp_path / "agent.db"
    store = overfull(path)
    assert path.stat().st_size >= SMALL
    store.enforce_limit()
    page_count = store.conn.execute("PRAGMA page_count").fetchone()[0]
    assert store.conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert path.stat().st_size == page_count * 4096 < 0.9 * SMALL
    assert Path(f"{path}-wal").stat().st_size == 0  # checkpointed and truncated
    store.close()


def test_an_ack_for_a_message_the_policy_dropped_is_ignored_and_counts_stay_true(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db", SITE, SMALL, batch_size=100)
    store.add_readings(telemetry_batch(0, n=100))
    store.seal()
    (first,) = store.pending(1)  # in flight at central when the store fills up
    fill_until_dropped(store)
    assert first.msg_id not in {m.msg_id for m in store.pending(100_000)}  # the oldest telemetry went first
    before = store.stats()
    assert store.ack([first.msg_id, first.msg_id, "never-sent"]) == 0
    after = store.stats()
    assert (after.acked_messages, after.acked_readings) == (0, 0)
    assert (after.dropped_readings, after.dropped_messages) == (before.dropped_readings, before.dropped_messages)
    assert after.dropped_messages >= 1
    store.close()


def test_a_full_disk_drops_new_telemetry_counted_refuses_energy_and_loses_nothing_committed(tmp_path: Path) -> None:
    store = make(tmp_path, batch_size=100)
    store.add_readings(tele(500) + energy(50))
    store.seal()
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    # SQLite answers SQLITE_FULL ("database or disk is full") at max_page_count, as it does on ENOSPC
    store.conn.execute(f"PRAGMA max_page_count={pages + 8}")
    committed = 550
    k = 0
    while store.stats().dropped_readings == 0:  # a full disk refuses new telemetry: dropped and counted
        store.add_readings(tele(50, start=500 + 50 * k))
        k += 1
        committed += 50
    committed -= 50  # the last call's telemetry was dropped, not stored
    assert store.stats().dropped_readings == 50
    assert k > 1
    with pytest.raises(StoreFullError, match="disk is full") as info:
        store.add_readings(energy(200, start=50))  # energy is never dropped: refused, rolled back whole
    assert not info.value.rejected  # nothing was counted or kept: the caller keeps the whole call
    assert "rolled back" in str(info.value)
    stats = store.stats()
    assert stats.readings_taken == stats.readings_rows == committed
    assert committed > 550
    store.conn.execute("PRAGMA incremental_vacuum")  # no free pages left to reuse
    store.conn.execute(f"PRAGMA max_page_count={store.conn.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(StoreFullError):
        store.seal(force=True)  # sealing needs room too; it rolls back whole
    # unsealed: the readings after the first seal and the telemetry_dropped event of the refused call
    assert store.stats().outbox_messages == 5 and store.stats().unsealed == committed - 500 + 1
    store.conn.execute("PRAGMA max_page_count=1073741823")
    store.seal(force=True)
    tel = decoded(store, "telemetry")
    assert [b.seq for _, b in tel] == list(range(1, len(tel) + 1))
    assert [i["value"] for _, b in tel for i in b.items] == [r.value for r in tele(committed - 50)]
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_enospc_from_the_os_is_store_full_error(tmp_path: Path) -> None:
    """A real ENOSPC is in tests/test_store_full_disk.py (a tmpfs); here sqlite3's message without an error
    code: the call is retried once, then its telemetry dropped (counted) and its energy refused."""

    class FullDisk:
        def __init__(self, real: sqlite3.Connection) -> None:
            self.real = real

        def __getattr__(self, name: str):
            return getattr(self.real, name)

        def executemany(self, sql: str, rows) -> None:
            raise sqlite3.OperationalError("database or disk is full")  # no sqlite_errorcode: matched by text

    store = make(tmp_path)
    store.add_readings(tele(10))
    real = store._db._conn
    store._db._conn = FullDisk(real)  # type: ignore[assignment]
    with pytest.raises(StoreFullError, match="disk is full"):
        store.add_readings(energy(2) + tele(10, start=10))
    assert not real.in_transaction  # rolled back
    store.add_readings(tele(10, start=10))  # telemetry alone: dropped, counted, no error
    store._db._conn = real
    stats = store.stats()
    assert stats.readings_taken == stats.readings_rows == 10
    assert stats.dropped_readings == 10
    store.add_readings(tele(10, start=20))
    assert store.stats().readings_taken == 20


@pytest.mark.parametrize(
    "reading",
    [
        Reading("m.v", -1.0, 1.0, "V"),
        Reading("m.v", 2.0**33, 1.0, "V"),
        Reading("m.\ud800", 1.0, 1.0, "V"),
        Reading("m.v", 1.0, 1.0, "\udfff"),
        Reading("m.v", 1.0, "text \ud800", ""),
    ],
)
def test_readings_central_would_refuse_are_refused_at_the_edge(tmp_path: Path, reading: Reading) -> None:
    """Central refuses (and never acks) a message with such an item, so it would sit in the outbox forever."""
    store = Store(tmp_path / "agent.db", "s1", 64 * 1024 * 1024)
    with pytest.raises(StoreInputError):
        store.add_readings([reading])
    assert store.stats().readings_taken == 0
    store.close()


@pytest.mark.parametrize(
    ("ts", "text", "data"),
    [(-5.0, "t", None), (2.0**33, "t", None), (1.0, "lone \ud800", None), (1.0, "t", {"a": ["\udc00"]})],
)
def test_events_central_would_refuse_are_refused_at_the_edge(tmp_path: Path, ts: float, text: str, data) -> None:  # noqa: ANN001
    store = Store(tmp_path / "agent.db", "s1", 64 * 1024 * 1024)
    with pytest.raises(StoreInputError):
        store.add_event(ts, "kind", "info", "test", text, data)
    store.close()


@pytest.mark.integration
def test_the_agent_with_its_store_open_imports_neither_numpy_nor_pandas(tmp_path: Path) -> None:
    """sqlite-utils imports numpy and pandas whenever they are installed, to map their scalar types; the store
    writes none, and numpy alone is about 12 MB of the agent's resident memory (benchmarks/memory.py). numpy is
    installed for the PQ worker, a process of its own (agent/pq/worker.py)."""
    code = ("import sys; import agent.service; from agent.store import Store; "
            "Store(__import__('pathlib').Path(sys.argv[1]), 's1', 1 << 20).close(); "
            "print(sorted(m for m in ('numpy', 'pandas', 'scipy') if m in sys.modules))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "agent.db")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
