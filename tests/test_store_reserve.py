"""The store's reserve file (``<store>.reserve``, given up on a full disk so SQLite has room to recover): it lies
beside the real database file, a path that is not a regular file is never used, and its size follows the bound.
Real SQLite files; the symlinked store's small disk is a real 4 MiB tmpfs (helpers/tinydisk.py)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import tinydisk
from helpers.tinydisk import DISK_BYTES

from agent.points import Reading
from agent.store import Store

SITE = "sub-1"


def on_tiny_fs(tmp_path: Path, scenario: Callable[[Path, Path], None]) -> None:
    """Run ``scenario(disk, elsewhere)``: ``disk`` on a 4 MiB tmpfs, ``elsewhere`` a folder on another file system."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    tinydisk.on_tiny_fs(tmp_path, scenario, elsewhere)


def tele(n: int, start: int = 0) -> list[Reading]:
    return [Reading(f"feeder.p{i % 20}", 1.7e9 + start + i, float(start + i), "V") for i in range(n)]


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


@pytest.mark.integration
def test_a_symlinked_store_keeps_its_reserve_and_measures_the_disk_where_its_file_is(tmp_path: Path) -> None:
    """The reserve, the WAL size and the free space are taken where SQLite writes (the link's target), not beside
    the link on another file system: the bound sees the small disk fill, the WAL is counted, and giving up the
    reserve frees room where SQLite needs it."""
    on_tiny_fs(tmp_path, scenario_symlinked_store)


# ----------------------------------------------------------------------------------------- the reserve path


def test_a_reserve_path_that_is_not_a_file_is_logged_once_and_never_breaks_a_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder at the reserve path: Store() opens, and add_readings near the bound (which runs enforce_limit and
    tries the reserve) stores every reading; agent/service.py requeues a batch on StoreError only, so any other
    exception here would lose that batch."""
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
    """posix_fallocate through a link would grow the file it points at to the reserve's size."""
    victim = tmp_path / "operator-notes.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "agent.db.reserve").symlink_to(victim)
    store = Store(tmp_path / "agent.db", SITE, 1 << 20)
    assert victim.read_bytes() == b"precious"
    assert store.stats().reserve_bytes == 0
    store.close()


def test_a_reserve_left_larger_by_an_earlier_bound_is_trimmed_to_what_is_counted(tmp_path: Path) -> None:
    """A reserve made under a larger max_bytes is cut to the size the smaller bound counts: otherwise the
    difference would be taken from the disk and never counted or given back."""
    path = tmp_path / "agent.db"
    Store(path, SITE, 1 << 30).close()
    big = (tmp_path / "agent.db.reserve").stat().st_size
    store = Store(path, SITE, 1 << 20)
    small = store.stats().reserve_bytes
    # 1 MiB: a WAL of max(16, 1 MiB / 4096 / 32) = 16 pages; the reserve holds 2 WALs
    assert small == 2 * 16 * 4096 < big
    assert (tmp_path / "agent.db.reserve").stat().st_size == small
    store.close()
