"""The outbox: unsealed readings and events sealed into uplink messages, handed to the uplink oldest first,
and deleted only on central's ack (docs/store.md, "Durability" and "The outbox").
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import sqlite3
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from agent.store.db import StoreDb
from agent.store.disk import Disk
from agent.store.schema import EVENT_STREAMS, INTERVALS, RESULTS
from protocols.eventlog import EventLog
from protocols.telemetry.schema import MAX_PAYLOAD_BYTES, encode_batch

log = EventLog("store")

_ACK_CHUNK = 32  # outbox rows deleted by one ack transaction


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    msg_id: str
    stream: str
    seq: int
    count: int
    payload: bytes


class Outbox:
    """Sealing, the pending messages, and acks of one store."""

    def __init__(
        self,
        db: StoreDb,
        disk: Disk,
        *,
        site: str,
        batch_size: int,
        max_age_s: float,
        id_factory: Callable[[], str],
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self._db = db
        self._disk = disk
        self.site = site
        self.batch_size = batch_size
        self.max_age_s = max_age_s
        self._id_factory = id_factory
        self._clock = clock
        self._monotonic = monotonic

    # -- sealing ---------------------------------------------------------------------------------

    def seal(self, force: bool = False) -> int:
        """Turn unsealed items into outbox messages; returns how many messages were created.

        Per stream, in id order, batches of ``batch_size``; a partial batch only with ``force`` or when its
        stream has waited ``max_age_s`` of monotonic time. Committed with synchronous=FULL (docs/store.md)
        — but only when some stream has something to seal: the uplink calls this several times a second, and
        an idle agent must not write (and fsync) its SD card for nothing. The check reads the database (at
        most ``batch_size`` index entries a stream), not a flag, so data written by another connection is
        found too.
        """
        db = self._db
        mono = self._monotonic()
        due: dict[str, bool] = {}  # stream -> seal a partial batch as well
        try:
            for stream, since in list(db.unsealed_since.items()):
                waiting = db.count_unsealed(stream, limit=self.batch_size)
                if not waiting:
                    db.unsealed_since[stream] = None
                    continue
                if since is None:
                    since = db.unsealed_since[stream] = -math.inf  # data we did not know of (another writer)
                # a command's result is sealed at once: central's operator waits for it
                partial = force or stream == RESULTS or mono - since >= self.max_age_s
                if partial or waiting >= self.batch_size:
                    due[stream] = partial
        except sqlite3.Error as err:
            raise db.map_error(err, "seal") from err
        if not due:
            return 0
        now = self._clock()
        created = 0
        left: dict[str, bool] = {}
        while due:
            # Each transaction writes at most about half a WAL of payload (a backlog seals in several), so a
            # seal never needs more disk than the margin keeps; each is all-or-none for what it seals.
            n, remains, spent = self._disk.write("seal", functools.partial(self._seal_due, due, now), full_sync=True)
            created += n
            left.update(remains)
            if not spent:
                break
            due = {stream: due[stream] for stream, more in remains.items() if more}
            self._disk.wal_check()
        for stream, remains in left.items():  # after the commit: a rolled-back seal leaves the ages alone
            if not remains:
                db.unsealed_since[stream] = None
        if created:
            log.debug("store_sealed", messages=created)
        return created

    def _seal_due(
        self, due: dict[str, bool], now: float, conn: sqlite3.Connection
    ) -> tuple[int, dict[str, bool], bool]:
        """One seal transaction: (messages created, stream -> items left, the payload budget was spent)."""
        budget = [self._disk.wal_budget // 2]
        made, remains = 0, {}
        for stream, partial in due.items():
            n, remains[stream] = self._seal_stream(stream, partial, now, budget)
            made += n
        return made, remains, budget[0] <= 0

    def _fetch(self, stream: str, cursor: int, limit: int) -> tuple[list[int], list[dict[str, Any]]]:
        conn = self._db.conn
        if stream == INTERVALS:
            rows = self._db.conn.execute(
                "SELECT id, item FROM intervals WHERE id>? ORDER BY id LIMIT ?", (cursor, limit)
            ).fetchall()
            return [r[0] for r in rows], [json.loads(r[1]) for r in rows]
        if stream in EVENT_STREAMS:
            rows = conn.execute(
                "SELECT id, ts, kind, severity, source, text, data FROM events WHERE stream=? AND id>? "
                "ORDER BY id LIMIT ?",
                (stream, cursor, limit),
            ).fetchall()
            items = [
                {
                    "ts": ts,
                    "kind": k,
                    "severity": sv,
                    "source": src,
                    "text": tx,
                    "data": None if d is None else json.loads(d),
                }
                for _, ts, k, sv, src, tx, d in rows
            ]
        else:
            rows = conn.execute(
                "SELECT id, point, ts, value, unit, quality FROM readings WHERE stream=? AND id>? ORDER BY id LIMIT ?",
                (stream, cursor, limit),
            ).fetchall()
            items = [{"point": p, "ts": ts, "value": v, "unit": u, "quality": q} for _, p, ts, v, u, q in rows]
        return [r[0] for r in rows], items

    def _seal_stream(self, stream: str, partial: bool, now: float, budget: list[int]) -> tuple[int, bool]:
        """Seal one stream inside the caller's transaction; returns (messages created, items left unsealed).

        Stops once ``budget[0]`` (payload bytes this transaction may still write) is spent; the items left
        are then reported as left, for the caller's next transaction.
        """
        db = self._db
        conn = db.conn
        cursor = db.meta(f"sealed:{stream}")
        seq = db.meta(f"seq:{stream}")
        created = 0
        left = False
        while True:
            if budget[0] <= 0:
                left = True
                break
            ids, items = self._fetch(stream, cursor, self.batch_size)
            if not ids:
                break
            if len(ids) < self.batch_size and not partial:
                left = True
                break
            start = 0
            while start < len(items):  # one message, or several if the payload would be too large
                msg_id = self._id_factory()
                n = len(items) - start
                payload = encode_batch(self.site, stream, seq, msg_id, now, items[start : start + n])
                while len(payload) > MAX_PAYLOAD_BYTES and n > 1:
                    n = max(1, n // 2)  # central refuses larger payloads: split
                    payload = encode_batch(self.site, stream, seq, msg_id, now, items[start : start + n])
                conn.execute(
                    "INSERT INTO outbox(msg_id, stream, seq, count, first_id, last_id, created, payload) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (msg_id, stream, seq, n, ids[start], ids[start + n - 1], now, payload),
                )
                budget[0] -= len(payload)
                start += n
                seq += 1
                created += 1
            cursor = ids[-1]
        if created:  # the cursor and the seq move together, and only when a message was made
            db.meta_set(f"sealed:{stream}", cursor)
            db.meta_set(f"seq:{stream}", seq)
        return created, left

    # -- the uplink's side -----------------------------------------------------------------------

    def pending(self, limit: int, exclude: Collection[str] = (), *, billing: bool = False) -> list[OutboxMessage]:
        """Up to ``limit`` outbox messages not in ``exclude`` (in flight), oldest first; with ``billing`` (what the
        uplink asks; docs/store.md, "The outbox"), telemetry newest first (operators see now) and every other stream
        oldest first (settlement needs order), the two taken in turn so both drain while a backlog lasts."""
        if limit <= 0:
            return []
        ex = json.dumps(list(exclude))
        if not billing:
            rows = self._db.read(
                "SELECT msg_id, stream, seq, count, payload FROM outbox "
                "WHERE msg_id NOT IN (SELECT value FROM json_each(?)) ORDER BY rowid LIMIT ?",
                (ex, limit),
            )
            return [OutboxMessage(m, s, q, c, bytes(p)) for m, s, q, c, p in rows]
        sql = ("SELECT msg_id, stream, seq, count, payload FROM outbox WHERE msg_id NOT IN (SELECT value FROM "
               "json_each(?)) AND stream {} 'telemetry' ORDER BY rowid {} LIMIT ?")  # fmt: skip
        ordered = self._db.read(sql.format("!=", "ASC"), (ex, limit))
        newest = self._db.read(sql.format("=", "DESC"), (ex, limit))
        both: list[tuple[Any, ...]] = []
        for pair in itertools.zip_longest(ordered, newest):
            both.extend(r for r in pair if r is not None)
        return [OutboxMessage(m, s, q, c, bytes(p)) for m, s, q, c, p in both[:limit]]

    def ack(self, msg_ids: Iterable[str]) -> int:
        """Forget acknowledged messages; unknown or repeated ids are ignored. Returns rows removed."""
        ids = list(dict.fromkeys(msg_ids))
        if not ids:
            return 0
        removed = 0
        for start in range(0, len(ids), _ACK_CHUNK):
            # Chunks, each its own transaction with its own counters: an ack of thousands needs no more WAL
            # (disk) than a chunk, and a full disk stops it between chunks with the counts true.
            removed += self._disk.write("ack", functools.partial(self._ack_chunk, ids[start : start + _ACK_CHUNK]))
            self._disk.wal_check()
        return removed

    def _ack_chunk(self, ids: list[str], conn: sqlite3.Connection) -> int:
        removed = readings = 0
        for msg_id in ids:
            row = conn.execute("DELETE FROM outbox WHERE msg_id=? RETURNING count", (msg_id,)).fetchone()
            if row is not None:
                removed += 1
                readings += row[0]
        if removed:
            self._db.meta_add("acked_messages", removed)
            self._db.meta_add("acked_readings", readings)
        return removed
