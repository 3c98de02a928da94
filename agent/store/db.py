"""The store's one SQLite connection: write transactions, errors mapped to the store's, the meta table (counters
and cursors), event rows, and when each stream got its oldest unsealed item (docs/store.md, "Durability").
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.store.errors import (
    CORRUPT_ADVICE,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreInputError,
    is_corrupt,
)
from agent.store.schema import EVENT_STREAMS, EVENTS, INTERVALS, STREAMS
from agent.store.values import event_row
from protocols.eventlog import EventLog

log = EventLog("store")

_SQLITE_FULL = 13


class StoreDb:
    """The connection and what every part of the store does through it. Not thread-safe (docs/store.md)."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        *,
        durable: bool,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self.durable = durable
        self.sync = "FULL" if durable else "NORMAL"
        # ``clock`` (wall) stamps what leaves the box; ``monotonic`` measures waits (Store says why).
        self._clock = clock
        self._monotonic = monotonic
        # When each stream got its oldest unsealed item (monotonic time); None = nothing unsealed.
        self.unsealed_since: dict[str, float | None] = {s: None for s in STREAMS}
        self.unrecorded: dict[str, int] = {}  # counter increments not yet committed (the disk was full)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is closed")
        return self._conn

    @contextmanager
    def tx(self, what: str, full_sync: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite errors become StoreError, a full disk StoreFullError.

        ``full_sync`` commits this one transaction with synchronous=FULL (docs/store.md, "Durability")."""
        conn = self.conn
        upgrade = full_sync and not self.durable
        try:
            if upgrade:
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error as rb_err:  # the original error is the one to report
                        log.warning("store_rollback_failed", what=what, error=rb_err)
                raise
        except sqlite3.Error as err:
            raise self.map_error(err, what) from err
        finally:
            if upgrade and self._conn is not None:
                self._conn.execute(f"PRAGMA synchronous={self.sync}")

    def map_error(self, err: sqlite3.Error, what: str) -> StoreError:
        code = getattr(err, "sqlite_errorcode", None)
        if is_corrupt(err):
            log.error("store_corrupt", what=what, path=self.path, error=err)
            return StoreCorruptError(f"{what}: store file {self.path} is damaged ({err}). {CORRUPT_ADVICE}")
        if code == _SQLITE_FULL or "disk is full" in str(err) or "No space left" in str(err):
            log.error("store_disk_full", what=what, path=self.path, error=err)
            return StoreFullError(
                f"{what}: the disk is full ({err}); this {what} was rolled back, "
                "everything committed before it is intact"
            )
        return StoreError(f"{what}: {err}")

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise self.map_error(err, "read") from err

    # -- the meta table: counters, cursors, the alarm latch -----------------------------------------

    def meta(self, key: str) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def meta_set(self, key: str, value: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def meta_add(self, key: str, n: int) -> None:
        self.conn.execute("UPDATE meta SET value = value + ? WHERE key=?", (n, key))

    def counter(self, key: str) -> int:
        """A counter: committed value plus what is waiting to be committed."""
        return self.meta(key) + self.unrecorded.get(key, 0)

    def record(self, key: str, kind: str, severity: str, text: str, data: dict[str, Any]) -> None:
        """Count ``key`` and store the event, in one transaction; a disk still full keeps the count for later."""
        self.unrecorded[key] = self.unrecorded.get(key, 0) + 1
        try:
            with self.tx(kind) as conn:
                for k, n in self.unrecorded.items():
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                        (k, n),
                    )
                self.insert_event(conn, self._clock(), kind, severity, "store", text, data)
        except StoreError as err:
            log.error("store_event_not_stored", kind=kind, error=err)
            return
        self.unrecorded.clear()

    # -- rows ------------------------------------------------------------------------------------

    def insert_event(
        self,
        conn: sqlite3.Connection,
        ts: float,
        kind: str,
        severity: str,
        source: str,
        text: str,
        data: dict[str, Any] | None,
        stream: str = EVENTS,
    ) -> dict[str, Any]:
        """Insert one event in the caller's transaction; returns it as a dict (what ``enforce_limit`` reports).

        ``stream`` is ``events`` or ``control`` (the control decisions' own stream)."""
        row = event_row(ts, kind, severity, source, text, data)
        if stream not in EVENT_STREAMS:
            raise StoreInputError(f"event stream={stream!r}: one of {', '.join(EVENT_STREAMS)}")
        conn.execute(
            "INSERT INTO events(ts, kind, severity, source, text, data, stream) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*row, stream),
        )
        if self.unsealed_since[stream] is None:
            self.unsealed_since[stream] = self._monotonic()
        return {"ts": float(ts), "kind": kind, "severity": severity, "source": source, "text": text, "data": data}

    def count_unsealed(self, stream: str, limit: int = -1) -> int:
        """Items of ``stream`` not yet sealed, counting at most ``limit`` (-1: all) so a check stays cheap."""
        cursor = self.meta(f"sealed:{stream}")
        if stream == INTERVALS:
            sql = "SELECT count(*) FROM (SELECT 1 FROM intervals WHERE id>? LIMIT ?)"
            return self.conn.execute(sql, (cursor, limit)).fetchone()[0]
        if stream in EVENT_STREAMS:
            sql = "SELECT count(*) FROM (SELECT 1 FROM events WHERE stream=? AND id>? LIMIT ?)"
            return self.conn.execute(sql, (stream, cursor, limit)).fetchone()[0]
        sql = "SELECT count(*) FROM (SELECT 1 FROM readings WHERE stream=? AND id>? LIMIT ?)"
        return self.conn.execute(sql, (stream, cursor, limit)).fetchone()[0]

    def mark_unsealed(self, stream: str, since: float) -> None:
        """``stream`` has unsealed items from ``since`` on, unless it already had older ones."""
        if self.unsealed_since[stream] is None:
            self.unsealed_since[stream] = since

    def mark_left_unsealed(self) -> None:
        """At open: items left unsealed by a previous run waited we do not know how long, so seal them soon."""
        for stream in self.unsealed_since:
            if self.count_unsealed(stream):
                self.unsealed_since[stream] = -math.inf

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute("PRAGMA optimize")
        except sqlite3.Error as err:
            log.warning("store_optimize_failed", path=self.path, error=err)
        finally:
            conn.close()
