"""The full policy: the alarm latch, pruning sealed history, dropping the oldest telemetry, giving free pages
back, and refusing energy only when nothing else is left to drop (docs/store.md, "The full policy").

Every delete runs in bounded chunks, each its own transaction carrying its own counters, with the WAL
checkpointed between chunks once it outgrows its budget: the policy never needs more free disk than a chunk,
and a disk that fills mid-way stops it with what was done committed and counted.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from agent.points import Reading, Stream
from agent.store.db import StoreDb
from agent.store.disk import Disk
from agent.store.errors import StoreFullError
from agent.store.values import Row
from protocols.eventlog import EventLog

log = EventLog("store")

ALARM_FRACTION = 0.90
REARM_FRACTION = 0.80
LOW_WATER_FRACTION = 0.85
STEADY_FRACTION = 0.75  # from here on, every check prunes sealed history, a bounded time at a time...
STEADY_TARGET_FRACTION = 0.70  # ...down to here, so history alone never brings the store to its alarm
_STEADY_BUDGET_S = 0.25  # the store thread's time one check may spend on it (writers wait meanwhile)
_PRUNE_CHUNK = 256  # rows deleted by one transaction of the policy (one chunk)
_DROP_MESSAGES_CHUNK = 16  # outbox messages dropped by one transaction of the policy, at most
_DROP_EVENT_EVERY_S = 60.0  # one telemetry_dropped event a minute for refused calls, not one per call


class FullPolicy:
    """What the store does as it nears its bound (``max_bytes``, or the disk's room when smaller)."""

    def __init__(self, db: StoreDb, disk: Disk, clock: Callable[[], float], monotonic: Callable[[], float]) -> None:
        self._db = db
        self._disk = disk
        self._clock = clock
        self._monotonic = monotonic
        self._last_drop_event = -math.inf

    def drop_event_due(self, mono: float) -> bool:
        """True (and the minute starts again) if a telemetry_dropped event may be stored at ``mono``."""
        if mono - self._last_drop_event >= _DROP_EVENT_EVERY_S:
            self._last_drop_event = mono
            return True
        return False

    def enforce_limit(self) -> list[dict[str, Any]]:
        """Apply the full policy (docs/store.md); returns the events raised (also stored)."""
        disk = self._disk
        raised: list[dict[str, Any]] = []
        size = disk.size()
        limit, free = disk.limit(size)
        if size >= limit * REARM_FRACTION:
            # The WAL can hold a large delete (an ack of many messages) that a checkpoint turns into free
            # pages: measure what is really held before deciding to alarm, prune or drop.
            disk.checkpoint_or_recover()
            size = disk.size()
            limit, free = disk.limit(size)
        if limit * STEADY_FRACTION <= size < limit:
            pruned = self._prune_steady(int(limit * STEADY_TARGET_FRACTION))
            if pruned:
                size = disk.size()
                limit, free = disk.limit(size)
                log.info("store_pruned", history_rows=pruned, size=size, limit=limit, max=disk.max_bytes)
        now = self._clock()
        alarmed = bool(self._db.meta("full_alarm"))
        max_bytes = disk.max_bytes
        figures = {"size_bytes": size, "limit_bytes": limit, "max_bytes": max_bytes, "disk_free_bytes": free}
        bound = f"its bound of {limit} bytes (max_bytes {max_bytes}, disk free {free})"
        if size >= limit * ALARM_FRACTION and not alarmed:
            pct = 100 * size / limit if limit > 0 else math.inf
            event = self._latch(1, now, "store_full_alarm", "warning", f"store at {pct:.0f} % of {bound}", figures)
            if event is not None:
                raised.append(event)
                log.warning("store_full_alarm", size=size, limit=limit, max=max_bytes, disk_free=free,
                            path=self._db.path)  # fmt: skip
        elif size < limit * REARM_FRACTION and alarmed:
            # Cleared once, with hysteresis: raised at 90 %, cleared below 80 %. An event, so the operator
            # who saw the alarm also sees it end.
            event = self._latch(
                0, now, "store_full_cleared", "info", f"store back to {100 * size / limit:.0f} % of {bound}", figures
            )
            if event is not None:
                raised.append(event)
                log.info("store_full_cleared", size=size, limit=limit, path=self._db.path)
        if size < limit:
            disk.ensure_reserve()
            return raised
        target = int(limit * LOW_WATER_FRACTION)
        pruned, events = self._shrink_to(target, limit, now, figures, bound, lambda: disk.size() >= limit)
        raised += events
        disk.ensure_reserve()
        log.info("store_pruned", history_rows=pruned, size=disk.size(), limit=limit, max=max_bytes)
        return raised

    def make_room(self, rows: list[Row]) -> None:
        """The disk refused a call the bound let through (it is larger than the room left): free room for it
        the policy's way, oldest telemetry first, instead of dropping the call's own (newer) telemetry.

        The call needs about its data size twice: once in the WAL, once more when the checkpoint copies it into
        the file. If it could not fit even in a store emptied of telemetry, nothing old is dropped for it.
        """
        disk = self._disk
        need = disk.need(rows)
        try:
            disk.checkpoint_or_recover()
            size = disk.size()
            limit, free = disk.limit(size)
            target = limit - need
            if target <= 0:
                return
            figures = {"size_bytes": size, "limit_bytes": limit, "max_bytes": disk.max_bytes, "disk_free_bytes": free}
            figures["room_for_readings"] = len(rows)
            bound = f"its bound of {limit} bytes (disk free {free}) with room for {len(rows)} new readings"
            self._shrink_to(target, limit, self._clock(), figures, bound, lambda: disk.db_bytes() >= target)
        except StoreFullError as err:
            log.error("store_policy_failed", path=self._db.path, error=err)

    def refuse(self, readings: Sequence[Reading], rows: list[Row], size: int, limit: int, free: int) -> None:
        """The store is full of what may not be dropped: drop this call's telemetry (counted), refuse its energy
        (StoreFullError naming it in ``rejected``)."""
        telemetry = sum(1 for row in rows if row[0] == Stream.TELEMETRY.value)
        energy = [r for r, row in zip(readings, rows, strict=True) if row[0] == Stream.ENERGY.value]
        if telemetry:
            now = self._clock()
            mono = self._monotonic()

            def count(conn: sqlite3.Connection) -> None:
                self._db.meta_add("dropped_readings", telemetry)
                if self.drop_event_due(mono):
                    self._db.insert_event(
                        conn, now, "telemetry_dropped", "error", "store",
                        f"store full of energy and events: {telemetry} new telemetry readings dropped",
                        {"dropped_readings": telemetry, "dropped_messages": 0, "reason": "full_of_energy"},
                    )  # fmt: skip

            self._disk.write("drop telemetry", count)
            log.warning("store_telemetry_dropped", readings=telemetry, reason="full_of_energy")
        if energy:
            raise StoreFullError(
                f"store {self._db.path} is full ({size} bytes; bound {limit}: max_bytes {self._disk.max_bytes}, "
                f"disk free {free}) and holds only energy and events, "
                f"which are never dropped: {len(energy)} energy readings NOT stored, "
                f"{telemetry} telemetry readings dropped",
                rejected=energy,
            )

    # -- shrinking -------------------------------------------------------------------------------

    def _shrink_to(
        self,
        target: int,
        limit: int,
        now: float,
        figures: dict[str, Any],
        bound: str,
        still_over: Callable[[], bool],
    ) -> tuple[int, list[dict[str, Any]]]:
        """Steps 2a and 2b of the policy towards ``target`` bytes of data: prune history; then, if
        ``still_over()``, drop the oldest telemetry (counted, one event). Returns (history rows pruned, events)."""
        db, disk = self._db, self._disk
        raised: list[dict[str, Any]] = []
        pruned = self._shrink(target, "prune history", self._prune_chunk)
        self._vacuum()
        disk.checkpoint_or_recover()
        if still_over():
            before = db.meta("dropped_messages"), db.meta("dropped_readings")

            def drop(conn: sqlite3.Connection) -> int:
                m, r = self._drop_chunk(target)
                if m or r:  # the counters move with the rows, in the chunk's own transaction
                    db.meta_add("dropped_messages", m)
                    db.meta_add("dropped_readings", r)
                return m + r

            self._shrink(target, "drop telemetry", drop)
            messages = db.meta("dropped_messages") - before[0]  # what the committed chunks counted
            dropped = db.meta("dropped_readings") - before[1]
            if messages or dropped:
                self._last_drop_event = self._monotonic()
                data = {"dropped_messages": messages, "dropped_readings": dropped} | figures
                text = (
                    f"store full: dropped the oldest telemetry, {messages} outbox messages and "
                    f"{dropped} readings in all, to stay within {bound}"
                )
                try:
                    raised.append(
                        disk.write(
                            "telemetry_dropped",
                            lambda conn: db.insert_event(conn, now, "telemetry_dropped", "error", "store", text, data),
                        )
                    )
                except StoreFullError as err:  # the counts are committed; the log line below carries the event
                    log.error("store_event_not_stored", kind="telemetry_dropped", error=err)
                self._vacuum()
                disk.checkpoint_or_recover()
                log.warning("store_telemetry_dropped", messages=messages, readings=dropped, size=disk.size(),
                            limit=limit)  # fmt: skip
        return pruned, raised

    def _latch(
        self, value: int, ts: float, kind: str, severity: str, text: str, figures: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Set the full alarm latch with its event, in one transaction; None if the disk had no room for it
        (the latch is unchanged, so the next call tries again)."""

        def body(conn: sqlite3.Connection) -> dict[str, Any]:
            self._db.meta_set("full_alarm", value)
            return self._db.insert_event(conn, ts, kind, severity, "store", text, figures)

        try:
            return self._disk.write(kind, body)
        except StoreFullError as err:
            log.error("store_event_not_stored", kind=kind, error=err)
            return None

    def _vacuum(self) -> None:
        """Give the file's free pages back to the file system, one WAL's worth of pages per transaction.

        ``incremental_vacuum`` frees ONE page per step, and ``execute()`` steps a statement that returns no
        row only once, so it would free a single page per call. ``executescript`` steps it to the end; it
        commits a pending transaction first, so this runs outside ``tx``, as its own transaction. Moving pages
        writes them to the WAL, so a step is bounded and the WAL checkpointed between steps. Best effort: a
        disk too full for it leaves free pages in the file, which the next inserts reuse.
        """
        db, disk = self._db, self._disk
        retried = False
        while True:
            try:
                if not db.conn.execute("PRAGMA freelist_count").fetchone()[0]:
                    return
                db.conn.executescript(f"PRAGMA incremental_vacuum({disk.wal_pages});")
            except sqlite3.Error as err:
                mapped = db.map_error(err, "vacuum")
                if not isinstance(mapped, StoreFullError):
                    raise mapped from err
                if retried or not disk.recover_full("vacuum"):
                    return
                retried = True
                continue
            disk.wal_check()

    def _shrink(
        self, target: int, what: str, step: Callable[[sqlite3.Connection], int], *, until: float = math.inf
    ) -> int:
        """Run ``step`` (deletes one chunk, returns rows deleted), each in its own transaction, until the data
        fits ``target``, nothing is left or the monotonic clock reaches ``until``. A full disk the recovery
        cannot help stops it (logged): the chunks done are committed.

        Measured without the WAL: it is truncated by the checkpoints between chunks.
        """
        total = 0
        while self._disk.db_bytes() >= target and self._monotonic() < until:
            try:
                n = self._disk.write(what, step)
            except StoreFullError as err:
                log.error("store_policy_stopped", what=what, done=total, error=err)
                break
            if not n:
                break
            total += n
            self._disk.wal_check()
        return total

    def _prune_steady(self, target: int) -> int:
        """Prune sealed history, oldest first, towards ``target`` bytes of data for at most ``_STEADY_BUDGET_S``;
        returns the rows pruned. The freed pages stay in the file for the next inserts (no vacuum): a store
        that keeps pruning as it takes in keeps its size, and no check holds the store thread for long."""
        return self._shrink(target, "prune history", self._prune_chunk, until=self._monotonic() + _STEADY_BUDGET_S)

    def _prune_chunk(self, conn: sqlite3.Connection) -> int:
        """Step 2a, one chunk: the oldest readings already sealed (their content is in the outbox or at central).

        Each stream's oldest sealed ids come from its own range of the (stream, id) index: a single query with
        both streams' conditions ORed makes SQLite gather every sealed id of both and sort them, for each
        chunk, which on a store of a million readings costs more than the deletes themselves.
        """
        ids: list[int] = []
        for stream in (Stream.TELEMETRY.value, Stream.ENERGY.value):
            ids += [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM readings WHERE stream=? AND id<=? ORDER BY id LIMIT ?",
                    (stream, self._db.meta(f"sealed:{stream}"), _PRUNE_CHUNK),
                )
            ]
        ids = sorted(ids)[:_PRUNE_CHUNK]
        if not ids:
            return 0
        return conn.execute(f"DELETE FROM readings WHERE id IN ({','.join('?' * len(ids))})", ids).rowcount

    def _drop_chunk(self, target: int) -> tuple[int, int]:
        """Step 2b, one chunk of the oldest telemetry: outbox messages first (they are older), then unsealed
        readings. Returns (messages, readings) dropped; the caller's transaction."""
        conn = self._db.conn
        messages = dropped = 0
        payload = 0
        while (
            messages < _DROP_MESSAGES_CHUNK and payload < self._disk.wal_budget // 2 and self._disk.db_bytes() >= target
        ):
            row = conn.execute(
                "DELETE FROM outbox WHERE rowid = (SELECT rowid FROM outbox WHERE stream='telemetry' "
                "ORDER BY rowid LIMIT 1) RETURNING count, length(payload)"
            ).fetchone()
            if row is None:
                break
            messages += 1
            dropped += row[0]
            payload += row[1]
        if messages:
            return messages, dropped
        cursor = self._db.meta("sealed:telemetry")
        n = conn.execute(
            "DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE stream='telemetry' AND id>? "
            "ORDER BY id LIMIT ?)",
            (cursor, _PRUNE_CHUNK),
        ).rowcount
        return 0, n
