"""Review of the store (issue 2, part 4): foreign and damaged files, the latched alarm and its clearing, freed
pages given back to the file system, acks of dropped messages. Real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.points import Reading
from agent.store import APPLICATION_ID, Store, StoreCorruptError, StoreError

SITE = "sub-1"
SMALL = 1 << 20


def telemetry_batch(k: int, n: int = 400) -> list[Reading]:
    return [Reading(f"feeder.p{i % 20}", 1_700_000_000.0 + k * n + i, float(k * n + i), "V") for i in range(n)]


def kinds(store: Store) -> list[str]:
    return [k for (k,) in store.conn.execute("SELECT kind FROM events ORDER BY id")]


# ----------------------------------------------------------------------------------------- foreign and damaged files


def test_a_foreign_sqlite_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """Before: the store added its tables to someone else's database and switched it to WAL."""
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


def test_a_store_marks_itself_and_a_store_made_before_the_mark_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    Store(path, SITE, SMALL).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID == 0x47454447
    conn.execute("PRAGMA application_id=0")  # as the stores made before this change
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


# ----------------------------------------------------------------------------------------- the full policy


def fill_until_dropped(store: Store) -> int:
    k = 0
    while store.stats().dropped_readings == 0:
        store.add_readings(telemetry_batch(k))
        store.seal()
        k += 1
        assert k < 1000, "the policy never dropped anything"
    return k


def overfull(path: Path) -> Store:
    """A store past its 1 MiB bound: filled with a larger bound, reopened with 1 MiB, the policy not yet run."""
    big = Store(path, SITE, 64 << 20, batch_size=100)
    k = 0
    while big.conn.execute("PRAGMA page_count").fetchone()[0] * 4096 < 1.1 * SMALL:  # the file, not the WAL
        big.add_readings(telemetry_batch(k))
        big.seal()
        k += 1
    big.close()
    return Store(path, SITE, SMALL, batch_size=100)


def test_the_reported_alarm_stays_raised_after_the_policy_shrinks_the_store_to_85_percent(tmp_path: Path) -> None:
    """Before: stats().full_alarm was 'size >= 90 % now', so it read False right after the policy dropped
    telemetry to 85 % while the store was still full; the latched alarm (cleared below 80 %) is reported."""
    store = overfull(tmp_path / "agent.db")
    raised = [e["kind"] for e in store.enforce_limit()]
    assert raised[0] == "store_full_alarm"
    stats = store.stats()
    assert 0.8 * SMALL <= stats.size_bytes < 0.9 * SMALL  # shrunk below the alarm level, above the clear level
    assert stats.full_alarm  # so the alarm holds
    assert store.enforce_limit() == []  # and is neither raised again nor cleared
    assert kinds(store).count("store_full_alarm") == 1 and "store_full_cleared" not in kinds(store)
    store.close()


def test_the_policy_gives_the_freed_pages_back_to_the_file_system(tmp_path: Path) -> None:
    """Before: ``execute('PRAGMA incremental_vacuum')`` steps once and freed ONE page per call."""
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


def test_a_closed_store_is_not_a_corrupt_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db", SITE, SMALL)
    store.close()
    with pytest.raises(StoreError, match="closed") as info:
        store.stats()
    assert not isinstance(info.value, StoreCorruptError)
