"""The disk under the store: its size and the bound in force, the WAL, the reserve file, and the recovery that
keeps a full disk from jamming the store (docs/store.md, "Size" and "A full disk").
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agent.store.db import StoreDb
from agent.store.errors import StoreFullError
from agent.store.schema import Layout
from agent.store.values import Row
from protocols.eventlog import EventLog

log = EventLog("store")

# Bytes a reading takes in the file besides its point, unit and value (row header, ts, stream, quality, the
# (stream, id) index entry, page slack): about 62 bytes for an 8-byte value, rounded up.
_ROW_BYTES = 64
RESERVE_WALS = 2  # the reserve file holds this many WALs (journal_size_limit)

T = TypeVar("T")


def store_cap(max_bytes: int, disk_usage: Callable[[Path], Any], fs_dir: Path) -> int:
    """The most the store may ever hold: ``max_bytes``, or the size of its file system when smaller."""
    try:
        return min(max_bytes, disk_usage(fs_dir).total)
    except OSError:
        return max_bytes


class Disk:
    """Sizes, the bound in force, WAL truncation, the reserve file and the full-disk recovery of one store.

    ``real_path`` is the store file with symlinks resolved: SQLite follows a symlinked store file and keeps
    the -wal beside the file it points to, so the WAL's size, the reserve and the free space are those of
    that file's folder and file system, not the link's.
    """

    def __init__(
        self, db: StoreDb, real_path: Path, layout: Layout, max_bytes: int, disk_usage: Callable[[Path], Any]
    ) -> None:
        self._db = db
        self.max_bytes = max_bytes
        # The file system's (total, free) bytes, as shutil.disk_usage gives them; injected so a test can
        # stand in a small disk.
        self._disk_usage = disk_usage
        self._disk_warned = False
        self._fs_dir = real_path.parent
        self._wal_path = Path(f"{real_path}-wal")
        self.reserve_path = Path(f"{real_path}.reserve")  # a file of zeros given up when the disk is full
        self._reserve_warned = False  # a reserve that cannot be made is logged once, not every policy run
        self.page_size = layout.page_size
        self.wal_pages = layout.wal_pages
        self.wal_budget = layout.wal_pages * layout.page_size  # past this, the policy checkpoints between chunks
        self.reserve_size = RESERVE_WALS * self.wal_budget
        # Room the store keeps free on its file system: a checkpoint copies up to one WAL into the file
        # before it truncates the WAL, and the deletes that make room need WAL space of their own. A store
        # that filled the disk to the last byte could not even delete (every write, a delete too, appends
        # to the WAL): it would be stuck until something else freed space.
        self.margin = 3 * self.wal_budget + 64 * 1024

    # -- sizes and the bound in force ------------------------------------------------------------

    def wal_bytes(self) -> int:
        try:
            return self._wal_path.stat().st_size
        except FileNotFoundError:
            return 0

    def db_bytes(self) -> int:
        """Pages in use (free pages are not counted: the next inserts reuse them)."""
        conn = self._db.conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self.page_size

    def size(self) -> int:
        return self.db_bytes() + self.wal_bytes()

    def free(self) -> int:
        """Free bytes on the store's file system; -1 when it cannot be asked (then max_bytes alone bounds)."""
        try:
            free = int(self._disk_usage(self._fs_dir).free)
        except OSError as err:
            if not self._disk_warned:
                self._disk_warned = True
                log.warning("store_disk_usage_unknown", path=self._db.path, error=err)
            return -1
        return free

    def free_pages_bytes(self) -> int:
        return self._db.conn.execute("PRAGMA freelist_count").fetchone()[0] * self.page_size

    def limit(self, size: int) -> tuple[int, int]:
        """(the bound in force, disk free): max_bytes, or what the disk can still hold keeping its margin.

        The store can grow by what the disk has free, less the margin a checkpoint and the deletes that make
        room need. Nearing a full disk is then the same explicit policy as nearing max_bytes: alarm, prune,
        drop the oldest telemetry, never energy.
        """
        free = self.free()
        if free < 0:
            return self.max_bytes, free
        return min(self.max_bytes, self.room(size, free)), free

    def room(self, size: int, free: int) -> int:
        """What the disk lets the store hold, keeping its margin (``free`` >= 0: the disk's free bytes)."""
        # The file's free pages are room too: the next inserts reuse them before the file grows.
        # A reserve given up (or not yet made) is owed to the disk: counted as held, so giving it up to a full
        # disk makes room for the policy's deletes without raising the bound they work towards.
        owed = self.reserve_size - self.reserve_held()
        return size + free + self.free_pages_bytes() - self.margin - owed

    @staticmethod
    def need(rows: list[Row]) -> int:
        """Disk a call needs: its data twice, once in the WAL and once more in the file when the checkpoint
        copies it there (the WAL is emptied only after that copy)."""
        data = sum(len(r[1]) + len(r[4]) + (len(r[3]) if type(r[3]) is str else 8) for r in rows)
        return 2 * (data + _ROW_BYTES * len(rows))

    def too_big(self, rows: list[Row], size: int, free: int) -> bool:
        """True if committing the call could leave the disk unable to checkpoint it (docs/store.md)."""
        if free < 0:
            return False
        left = self.room(size, free) - size
        if left >= max(1 << 26, 2048 * len(rows)):  # plenty: skip counting (the hot path on a roomy disk)
            return False
        return self.need(rows) > left

    # -- the WAL ---------------------------------------------------------------------------------

    def truncate_wal(self, what: str) -> None:
        try:
            self._db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as err:
            log.warning("store_checkpoint_failed", what=what, path=self._db.path, error=err)

    def checkpoint(self) -> None:
        """Copy the WAL into the file and truncate it, so freed pages leave the disk and the size."""
        try:
            self._db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as err:
            raise self._db.map_error(err, "checkpoint") from err

    def checkpoint_or_recover(self) -> None:
        try:
            self.checkpoint()
        except StoreFullError:
            self.recover_full("checkpoint")

    def wal_check(self) -> None:
        """Between two chunks: checkpoint and truncate a WAL that has outgrown its budget (full disk: recover)."""
        if self.wal_bytes() <= self.wal_budget:
            return
        self.checkpoint_or_recover()

    # -- writing on a disk that may be full ------------------------------------------------------

    def write(self, what: str, body: Callable[[sqlite3.Connection], T], full_sync: bool = False) -> T:
        """Run ``body`` in one write transaction; a full disk gets one recovery (``recover_full``) and one retry.

        ``body`` must be re-runnable: the first attempt was rolled back whole.
        """
        try:
            with self._db.tx(what, full_sync) as conn:
                return body(conn)
        except StoreFullError:
            if not self.recover_full(what):
                raise
        with self._db.tx(what, full_sync) as conn:
            return body(conn)

    def recover_full(self, what: str) -> bool:
        """SQLite found the disk full: make room for the deletes that free it. True if room was made.

        First truncate the WAL (a rolled-back transaction leaves its frames on disk); if the disk is still
        short of the margin, give up the reserve file and truncate the WAL again. Never raises for a full disk.

        Why twice: the checkpoint copies the committed frames into the file first, which may need the file to
        grow, and it cannot truncate the WAL before. A rolled-back transaction that took the disk's last bytes
        leaves its frames behind, so that checkpoint fails; the reserve is given up for it, and the WAL must be
        emptied then, or the retry re-fills the reserve's room with its frames and nothing can be freed again.
        """
        before = self.wal_bytes()
        self.truncate_wal(what)
        freed = self.wal_bytes() < before
        free = self.free()
        if (free < 0 or free < self.margin) and self.release_reserve(what):
            self.truncate_wal(what)
            freed = True
        return freed

    # -- the reserve file ------------------------------------------------------------------------

    def reserve_file_size(self) -> int:
        """Size of the reserve file; -1 when the path holds no regular file (nothing, a link, a directory).

        ``lstat``: a link at the path is not ours to count, grow or delete."""
        try:
            st = os.lstat(self.reserve_path)
        except OSError:
            return -1
        return st.st_size if stat.S_ISREG(st.st_mode) else -1

    def reserve_held(self) -> int:
        return max(0, min(self.reserve_file_size(), self.reserve_size))

    def release_reserve(self, what: str) -> bool:
        """Delete the reserve so the policy's deletes (and their WAL) have room; counted, logged, an event."""
        held = self.reserve_file_size()
        if held < 0:
            return False
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        except OSError as err:
            log.error("store_reserve_release_failed", path=self.reserve_path, error=err)
            return False
        log.error("store_reserve_released", what=what, bytes=held, path=self.reserve_path)
        self._db.record(
            "reserve_released", "store_reserve_released", "error",
            f"disk full during {what}: gave up the reserve of {held} bytes so the store can free room",
            {"reserve_bytes": held, "during": what},
        )  # fmt: skip
        return True

    def ensure_reserve(self) -> None:
        """Make the reserve file when it is missing and the disk has room for it and the margin. Never raises.

        Best effort: a path the store cannot make a file at (a directory, a link, a read-only or full folder) is
        logged once and left alone; the bound in force counts the missing reserve as held all the same.
        """
        size = self.reserve_file_size()
        if size > self.reserve_size:  # made under a larger bound: give back what is no longer counted
            try:
                os.truncate(self.reserve_path, self.reserve_size)
            except OSError as err:
                self._reserve_failed(err)
            return
        held = max(0, size)
        if held >= self.reserve_size:
            return
        free = self.free()
        if free >= 0 and free - (self.reserve_size - held) < self.margin:
            return  # no room yet: the bound in force counts the missing reserve, so the policy makes room
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as err:  # not a file we may write (a directory, a link, a read-only folder): left alone
            self._reserve_failed(err)
            return
        try:
            try:
                try:
                    os.posix_fallocate(fd, 0, self.reserve_size)
                except OSError as err:
                    if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
                    self._write_zeros(fd)  # no fallocate on this file system (musl): real zeros
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            with contextlib.suppress(OSError):  # a partial reserve is ours: no half-made file stays behind
                self.reserve_path.unlink()
            self._reserve_failed(err)
            return
        self._reserve_warned = False
        try:
            outstanding = self._db.counter("reserve_released") - self._db.counter("reserve_restored")
        except sqlite3.Error:
            outstanding = 0
        if outstanding > 0:
            log.info("store_reserve_restored", bytes=self.reserve_size, path=self.reserve_path)
            self._db.record(
                "reserve_restored", "store_reserve_restored", "info",
                f"room again: the reserve of {self.reserve_size} bytes is back",
                {"reserve_bytes": self.reserve_size},
            )  # fmt: skip
        else:
            log.info("store_reserve_created", bytes=self.reserve_size, path=self.reserve_path)

    def _write_zeros(self, fd: int) -> None:
        """Write the reserve's zeros: pwrite may write less than asked, so loop until all are written."""
        block = bytes(min(self.reserve_size, 1 << 20))
        done = 0
        while done < self.reserve_size:
            n = os.pwrite(fd, block[: self.reserve_size - done], done)
            if n <= 0:
                raise OSError(errno.ENOSPC, "short write making the reserve", str(self.reserve_path))
            done += n

    def _reserve_failed(self, err: OSError) -> None:
        if not self._reserve_warned:
            self._reserve_warned = True
            log.warning("store_reserve_failed", path=self.reserve_path, bytes=self.reserve_size, error=err)
