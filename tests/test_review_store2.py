"""Second review of the store (commits 5b7ae1e and 4871880: bounded chunks, the reserve file): where the reserve
and the free-space figure live, what the store does when the reserve path is not a file it can make, events on
a full disk. Real SQLite files; the full disks are a real 4 MiB tmpfs (mounted as root, else in a user+mount
namespace), as in tests/test_store_full_disk.py."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import tinydisk
from helpers.tinydisk import DISK_BYTES, fill

from agent.points import Reading, Stream
from agent.store import Store, StoreFullError
from protocols.telemetry import decode_batch

SITE = "sub-1"


def on_tiny_fs(tmp_path: Path, scenario: Callable[[Path, Path], None]) -> None:
    """Run ``scenario(disk, elsewhere)``: ``disk`` on a 4 MiB tmpfs, ``elsewhere`` a folder on another file system."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    tinydisk.on_tiny_fs(tmp_path, scenario, elsewhere)


def tele(n: int, start: int = 0) -> list[Reading]:
    return [Reading(f"feeder.p{i % 20}", 1.7e9 + start + i, float(start + i), "V") for i in range(n)]


def kinds(store: Store) -> list[str]:
    return [k for (k,) in store.conn.execute("SELECT kind FROM events ORDER BY id")]


# ----------------------------------------------------------------------------------------- a symlinked store


def scenario_symlinked_store(disk: Path, elsewhere: Path) -> None:
    link = elsewhere / "agent.db"
    link.symlink_to(disk / "agent.db")  # e.g. /var/lib/gridedge/agent.db -> the data partition
    store = Store(link, SITE, 1 << 30, batch_size=100)
    reserve = store.stats().reserve_bytes
    # SQLite follows the link: the file and its WAL are on the small disk, so the reserve must be there too
    assert reserve > 0 and (disk / "agent.db.reserve").stat().st_size == reserve
    assert not (elsewhere / "agent.db.reserve").exists()
    store.add_readings(tele(2000))
    wal = (disk / "agent.db-wal").stat().st_size
    assert wal > 0
    pages, free_pages = (store.conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count"))
    stats = store.stats()
    assert stats.size_bytes == (pages - free_pages) * 4096 + wal  # the real WAL is counted
    # the bound in force is the small disk's, not the one the link sits on
    assert stats.disk_free_bytes == shutil.disk_usage(disk).free
    assert stats.limit_bytes < DISK_BYTES
    store.close()


def test_a_symlinked_store_keeps_its_reserve_and_measures_the_disk_where_its_file_is(tmp_path: Path) -> None:
    """Before: the reserve, the WAL size and the free space were taken beside the link, on another file system:
    the bound never saw the small disk fill, the WAL was not counted, and giving up the reserve freed nothing
    where SQLite needed room."""
    on_tiny_fs(tmp_path, scenario_symlinked_store)


# ----------------------------------------------------------------------------------------- the reserve path


def test_a_reserve_path_that_is_not_a_file_is_logged_once_and_never_breaks_a_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: Store() raised IsADirectoryError (not a StoreError), and add_readings near the bound raised it
    too, out of enforce_limit: agent/service.py requeues a batch on StoreError only, so that batch was lost."""
    path = tmp_path / "agent.db"
    (tmp_path / "agent.db.reserve").mkdir()  # something the store cannot turn into its reserve
    store = Store(path, SITE, 1 << 20, batch_size=100)  # opens
    assert store.stats().reserve_bytes == 0  # a directory is no reserve
    caplog.set_level(logging.WARNING, logger="gridedge.store")
    k = 0
    while store.stats().size_bytes < 0.9 * store.stats().limit_bytes:  # up to the band where writes run the policy
        store.add_readings(tele(400, start=400 * k))
        store.seal()
        k += 1
        assert k < 1000
    for j in range(5):
        store.add_readings(tele(10, start=10**6 + 10 * j))  # runs enforce_limit, which tries the reserve
        store.enforce_limit()
    assert store.stats().readings_taken == 400 * k + 50
    assert (tmp_path / "agent.db.reserve").is_dir()  # left alone
    failed = [r for r in caplog.records if "store_reserve_failed" in r.getMessage()]
    assert len(failed) == 1  # once, not every 5 s for ever
    store.close()


def test_a_link_at_the_reserve_path_is_not_followed(tmp_path: Path) -> None:
    """Before: posix_fallocate through the link grew the file it pointed at to the reserve's size."""
    victim = tmp_path / "operator-notes.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "agent.db.reserve").symlink_to(victim)
    store = Store(tmp_path / "agent.db", SITE, 1 << 20)
    assert victim.read_bytes() == b"precious"
    assert store.stats().reserve_bytes == 0
    store.close()


def test_a_reserve_left_larger_by_an_earlier_bound_is_trimmed_to_what_is_counted(tmp_path: Path) -> None:
    """Before: a reserve made under a larger max_bytes kept its size, while the bound counted only the smaller
    reserve: the difference was taken from the disk and never counted or given back."""
    path = tmp_path / "agent.db"
    Store(path, SITE, 1 << 30).close()
    big = (tmp_path / "agent.db.reserve").stat().st_size
    store = Store(path, SITE, 1 << 20)
    small = store.stats().reserve_bytes
    # 1 MiB: a WAL of max(16, 1 MiB / 4096 / 32) = 16 pages; the reserve holds 2 WALs
    assert small == 2 * 16 * 4096 < big
    assert (tmp_path / "agent.db.reserve").stat().st_size == small
    store.close()


# ----------------------------------------------------------------------------------------- events on a full disk


def scenario_event_on_a_full_disk(disk: Path, _elsewhere: Path) -> None:
    store = Store(disk / "agent.db", SITE, 1 << 30, batch_size=100)
    store.add_readings(tele(500) + [Reading("m.kwh", 1.7e9, 1, "kWh", stream=Stream.ENERGY)])
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # an empty WAL, as the policy leaves it
    fill(disk / "another-program.log")
    assert shutil.disk_usage(disk).free == 0
    # a PMU or PQ event: the store gives up its reserve for it, as it does for readings and acks
    store.add_event(1.7e9, "pq_dip", "warning", "pq.bus1", "dip to 0.62 pu", {"depth_pu": 0.62})
    assert kinds(store)[-2:] == ["store_reserve_released", "pq_dip"]
    assert store.stats().reserve_released == 1
    store.close()


def test_an_event_on_a_disk_filled_to_the_last_byte_is_stored(tmp_path: Path) -> None:
    """Before: add_event had no full-disk recovery (StoreFullError until some other write gave the reserve up)."""
    on_tiny_fs(tmp_path, scenario_event_on_a_full_disk)


# ----------------------------------------------------------------------------------------- one call larger than the room


def store_near_its_disk_bound(disk: Path, fraction: float = 0.85) -> Store:
    """A store bound by its 4 MiB disk, at ``fraction`` of that bound with sealed telemetry (messages of 100)."""
    store = Store(disk / "agent.db", SITE, 1 << 30, batch_size=100)
    k = 0
    while store.stats().size_bytes < fraction * store.stats().limit_bytes:
        store.add_readings(tele(100, start=100 * k))
        store.seal()
        k += 1
    return store


BIG_CALL = 20_000  # ~1.5 MB of rows: more than the disk has left at 85 % of the bound, far less than the bound


def scenario_one_large_call_does_not_jam(disk: Path, _elsewhere: Path) -> None:
    one_large_call_then_ordinary_life(store_near_its_disk_bound(disk), BIG_CALL)


def scenario_a_call_that_commits_but_cannot_be_checkpointed_does_not_jam(disk: Path, _elsewhere: Path) -> None:
    # below the alarm level: the policy does not run; 12,000 readings (~0.9 MB) fit the WAL and commit, but the
    # file must then grow by as much again for the checkpoint
    one_large_call_then_ordinary_life(store_near_its_disk_bound(disk, 0.7), 12_000)


def one_large_call_then_ordinary_life(store: Store, n: int) -> None:
    meter = Reading("m.kwh", 1.8e9, 7, "kWh", stream=Stream.ENERGY)
    store.add_readings([*tele(n, start=10**7), meter])
    # then the agent's ordinary life: writes, seals and central's acks must all go through again
    for j in range(30):
        store.add_readings(
            [*tele(100, start=2 * 10**7 + 100 * j), Reading("m.kwh", 1.9e9 + j, 8 + j, "kWh", stream=Stream.ENERGY)]
        )
        store.seal()
        for m in store.pending(5):
            assert store.ack([m.msg_id]) == 1
        store.enforce_limit()
    store.seal(force=True)
    energy = [
        item["value"]
        for m in store.pending(1_000_000)
        if m.stream == "energy"
        for item in decode_batch(m.payload).items
    ]
    assert 7 in energy and all(8 + j in energy for j in range(30))
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


def test_one_call_larger_than_the_room_left_does_not_jam_the_store(tmp_path: Path) -> None:
    """Before: the call's first attempt filled the disk with WAL frames it rolled back; the checkpoint that could
    clear them needed room to grow the file, so the reserve was given up, and the retry of the same call took
    that room again: every later write, ack and checkpoint failed with SQLITE_FULL (30 of 30 cycles)."""
    on_tiny_fs(tmp_path, scenario_one_large_call_does_not_jam)


def scenario_large_call_drops_the_oldest_telemetry(disk: Path, _elsewhere: Path) -> None:
    store = store_near_its_disk_bound(disk)
    before = store.stats()
    store.add_readings([*tele(BIG_CALL, start=10**7), Reading("m.kwh", 1.8e9, 7, "kWh", stream=Stream.ENERGY)])
    after = store.stats()
    assert after.readings_taken == before.readings_taken + BIG_CALL + 1  # the new call is stored whole
    assert after.dropped_messages > 0  # room was made the policy's way: the oldest outbox messages went
    assert after.dropped_readings == 100 * after.dropped_messages  # and only they (100 readings each)
    newest = store.conn.execute("SELECT count(*) FROM readings WHERE value >= ?", (10**7,)).fetchone()[0]
    assert newest == BIG_CALL
    store.close()


def test_a_call_larger_than_the_room_left_drops_the_oldest_telemetry_not_its_own(tmp_path: Path) -> None:
    """Before: the call's 20,000 readings were dropped (reason disk_full) while the store kept older telemetry
    in its outbox: the full policy drops the oldest telemetry first."""
    on_tiny_fs(tmp_path, scenario_large_call_drops_the_oldest_telemetry)


def test_a_call_that_fits_the_wal_but_not_the_checkpoint_does_not_jam_the_store(tmp_path: Path) -> None:
    """Before: the call committed; the checkpoint then needed the file to grow by the call's size, which the
    disk no longer had; the WAL could not be emptied, no delete could be written, and every later write, ack
    and checkpoint failed (881 of 881 store calls in the probe), the reserve given up for nothing."""
    on_tiny_fs(tmp_path, scenario_a_call_that_commits_but_cannot_be_checkpointed_does_not_jam)


def scenario_a_large_energy_call_waits_instead_of_jamming(disk: Path, _elsewhere: Path) -> None:
    store = store_near_its_disk_bound(disk, 0.7)
    before = store.stats()
    energy = [Reading("m.kwh", 1.8e9 + i, i, "kWh", stream=Stream.ENERGY) for i in range(12_000)]
    try:
        store.add_readings([*tele(12_000, start=10**7), *energy])
    except StoreFullError as err:
        assert not err.rejected  # nothing stored, nothing counted: the caller keeps the whole call
        assert store.stats().readings_taken == before.readings_taken
    else:  # stored: then it must not have jammed the store either
        assert store.stats().readings_taken > before.readings_taken
    for j in range(30):
        store.add_readings(
            [*tele(100, start=2 * 10**7 + 100 * j), Reading("m.kwh", 1.9e9 + j, j, "kWh", stream=Stream.ENERGY)]
        )
        store.seal()
        for m in store.pending(5):
            assert store.ack([m.msg_id]) == 1
        store.enforce_limit()
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


def test_a_large_energy_call_that_cannot_fit_waits_with_the_caller_instead_of_jamming(tmp_path: Path) -> None:
    """Energy is never dropped, so a call whose energy alone is larger than the disk's room must not be committed
    (the same uncheckpointable WAL): refused whole, the caller keeps it."""
    on_tiny_fs(tmp_path, scenario_a_large_energy_call_waits_instead_of_jamming)
