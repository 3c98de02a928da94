"""The agent's SQLite store: readings, events and the outbox of sealed uplink messages, in one file.

``Store`` is the one way in: it opens the file and composes the parts (``StoreDb`` the connection, ``Disk``
the room, ``FullPolicy``, ``Outbox``), and carries the write path that uses all of them. How it stays
durable, bounded and unjammed by a full disk is in docs/store.md.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.points import Reading, Stream
from agent.store.commandstate import CommandState
from agent.store.controlstate import ControlFlag, ControlOp, ControlState, FlagEvent
from agent.store.db import StoreDb
from agent.store.disk import Disk, store_cap
from agent.store.errors import (
    CORRUPT_ADVICE,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreInputError,
    is_corrupt,
)
from agent.store.outbox import Outbox, OutboxMessage
from agent.store.policy import ALARM_FRACTION, FullPolicy
from agent.store.schema import EVENT_STREAMS, EVENTS, INTERVALS, SCHEMA_VERSION, connect, open_schema
from agent.store.values import Row, reading_row
from protocols.eventlog import EventLog
from protocols.telemetry.intervals import check_interval
from protocols.telemetry.schema import SchemaError, valid_site

log = EventLog("store")


@dataclass(frozen=True, slots=True)
class StoreStats:
    readings_taken: int  # ever committed (counter, survives pruning)
    readings_rows: int  # rows now in `readings`
    unsealed: int  # readings + events not yet in an outbox message
    outbox_messages: int
    outbox_readings: int  # items in outbox messages (backlog depth = unsealed + outbox_readings)
    acked_messages: int
    acked_readings: int
    dropped_readings: int  # telemetry dropped by the full-store policy
    size_bytes: int
    max_bytes: int
    full_alarm: bool  # the latched alarm: raised at >= 90 % of limit_bytes, cleared below 80 %
    dropped_messages: int = 0  # telemetry outbox messages dropped by the full-store policy
    limit_bytes: int = 0  # the bound in force: max_bytes, or less when the file system has less room
    disk_free_bytes: int = 0  # what the file system holding the store has left (-1: unknown)
    reserve_bytes: int = 0  # the reserve file held now beside the store (0 while given up)
    reserve_released: int = 0  # times the reserve was given up because the disk was full (counter)
    reserve_restored: int = 0  # times it was made again once there was room (counter)
    # per stream: items waiting (unsealed, or sealed and not acknowledged by central), and the age of its oldest
    # outbox message [s] (0 when none): how far behind the site is, sent uplink as telemetry (agent/service.py)
    backlog: dict[str, int] = field(default_factory=dict)
    backlog_oldest_s: dict[str, float] = field(default_factory=dict)


class Store:
    """The SQLite store (docs/store.md). Synchronous and not thread-safe: the event loop uses AsyncStore."""

    def __init__(
        self,
        path: Path,
        site: str,
        max_bytes: int,
        batch_size: int = 500,
        clock: Callable[[], float] = time.time,
        durable: bool = False,
        id_factory: Callable[[], str] = lambda: uuid.uuid4().hex,
        max_age_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        disk_usage: Callable[[Path], Any] = shutil.disk_usage,
    ) -> None:
        if not valid_site(site):
            raise StoreError(f"site={site!r}: 1-64 characters of letters, digits, '_', '.', '-'")
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 64 * 1024:
            raise StoreError(f"max_bytes={max_bytes!r}: must be an integer >= 65536")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= 100_000:
            raise StoreError(f"batch_size={batch_size!r}: must be an integer in 1..100000")
        if not isinstance(max_age_s, int | float) or not 0 <= max_age_s < math.inf:
            raise StoreError(f"max_age_s={max_age_s!r}: must be a finite number >= 0")
        self.path = Path(path)
        self.site = site
        self.max_bytes = max_bytes
        self.batch_size = batch_size
        self.durable = durable
        self.max_age_s = float(max_age_s)
        # Two clocks: ``clock`` (wall) only stamps what leaves the box (``sent``, ``created``, event ts);
        # ``monotonic`` measures waits (the age of a partial batch, the drop-event rate limit), because the
        # wall clock of an RTC-less box steps when NTP syncs after boot, and a backward step of an hour
        # would otherwise hold every partial batch for an hour.
        self._clock = clock
        self._monotonic = monotonic
        # SQLite follows a symlinked store file: the WAL, the reserve and the free space are the real file's.
        real = Path(os.path.realpath(self.path))
        conn = connect(self.path)
        self._db = db = StoreDb(self.path, conn, durable=durable, clock=clock, monotonic=monotonic)
        try:
            layout = open_schema(conn, self.path, db.sync, store_cap(max_bytes, disk_usage, real.parent))
            self._disk = Disk(db, real, layout, max_bytes, disk_usage)
            self._policy = FullPolicy(db, self._disk, clock, monotonic)
            self._outbox = Outbox(
                db,
                self._disk,
                site=site,
                batch_size=batch_size,
                max_age_s=self.max_age_s,
                id_factory=id_factory,
                clock=clock,
                monotonic=monotonic,
            )
            self._control = ControlState(db, self._disk)
            self.commands = CommandState(db, self._disk)  # the signed downlink's state and the audit log
            db.mark_left_unsealed()
            log.info("store_open", path=self.path, site=self.site, max_bytes=self.max_bytes, schema=SCHEMA_VERSION,
                     found_schema=layout.version)  # fmt: skip
        except sqlite3.Error as err:
            conn.close()
            if is_corrupt(err):
                raise StoreCorruptError(f"cannot open store {self.path}: {err}. {CORRUPT_ADVICE}") from err
            raise StoreError(f"cannot open store {self.path}: {err}") from err
        except BaseException:
            conn.close()
            raise
        self._disk.ensure_reserve()

    @property
    def conn(self) -> sqlite3.Connection:
        return self._db.conn

    # -- writing ---------------------------------------------------------------------------------

    def add_readings(self, readings: Sequence[Reading]) -> None:
        """Commit readings in ONE transaction (all or none), or, on a full disk, their energy alone.

        Raises StoreInputError for a bad reading (nothing stored), StoreFullError when the store is full of
        energy (telemetry of the call dropped and counted, energy rejected: see ``rejected``) or when the disk
        is full and not even the call's energy fits (rolled back whole, nothing counted: ``rejected`` empty).
        A full disk that takes the call's energy but not its telemetry drops the telemetry (counted) and
        returns normally, as the full-store policy does.
        """
        rows = [reading_row(i, r) for i, r in enumerate(readings)]
        if not rows:
            return
        disk = self._disk
        size = disk.size()
        limit, free = disk.limit(size)
        if size >= limit * ALARM_FRACTION:
            self._enforce_quietly()
            size = disk.size()
            limit, free = disk.limit(size)
            if size >= limit:
                self._policy.refuse(readings, rows, size, limit, free)  # raises StoreFullError if it holds energy
                return
        if disk.too_big(rows, size, free):
            # A call larger than the disk's room left would commit (its WAL fits) and then leave a WAL that no
            # checkpoint can copy into the file (no room for the file to grow) and no delete can follow (no room
            # for their WAL): the store jammed for good. Room is made first the policy's way; a call that still
            # does not fit stores its energy alone (telemetry counted).
            self._policy.make_room(rows)
            size = disk.size()
            _, free = disk.limit(size)
            if disk.too_big(rows, size, free):
                refused = StoreFullError(
                    f"store {self.path}: the disk has no room for this call of {len(rows)} readings "
                    f"(about {disk.need(rows)} bytes with its WAL); nothing was stored, the caller keeps it"
                )
                self._mark_unsealed(self._store_energy_only(rows, refused))
                return
        try:
            disk.write("add_readings", functools.partial(self._insert_readings, rows, 0))
        except StoreFullError as err:
            # The bound said there was room, the disk did not: another program filled it, or this call is
            # larger than the room left. The policy (now with room for its deletes) frees the oldest telemetry,
            # as much as the call needs.
            self._enforce_quietly()
            self._policy.make_room(rows)
            try:
                disk.write("add_readings", functools.partial(self._insert_readings, rows, 0))
            except StoreFullError:
                rows = self._store_energy_only(rows, err)
        self._mark_unsealed(rows)

    def _insert_readings(self, rows: list[Row], dropped: int, conn: sqlite3.Connection) -> None:
        if rows:
            conn.executemany(
                "INSERT INTO readings(stream, point, ts, value, unit, quality) VALUES (?, ?, ?, ?, ?, ?)", rows
            )
            conn.execute("UPDATE meta SET value = value + ? WHERE key='readings_taken'", (len(rows),))
        if dropped:
            self._db.meta_add("dropped_readings", dropped)
            if self._policy.drop_event_due(self._monotonic()):  # one event a minute, not one per call
                self._db.insert_event(
                    conn, self._clock(), "telemetry_dropped", "error", "store",
                    f"disk full: {dropped} new telemetry readings dropped",
                    {"dropped_readings": dropped, "dropped_messages": 0, "reason": "disk_full"},
                )  # fmt: skip

    def _store_energy_only(self, rows: list[Row], err: StoreFullError) -> list[Row]:
        """The disk has no room for the call: keep its energy, drop its telemetry (counted, in one transaction)."""
        energy = [row for row in rows if row[0] == Stream.ENERGY.value]
        dropped = len(rows) - len(energy)
        if not dropped:
            raise err
        disk = self._disk
        size = disk.size()
        if disk.too_big(energy, size, disk.limit(size)[1]):
            # the energy alone could commit and leave a WAL no checkpoint can copy: the caller keeps the call
            raise StoreFullError(
                f"store {self.path}: the disk has no room for the call's {len(energy)} energy readings: "
                "the call was rolled back whole"
            ) from err
        try:
            disk.write("add_readings (energy only)", functools.partial(self._insert_readings, energy, dropped))
        except StoreFullError as again:
            raise StoreFullError(
                f"store {self.path}: the disk is full; not even the call's {len(energy)} energy readings "
                "and the count of its dropped telemetry fit: the call was rolled back whole",
            ) from again
        log.warning("store_telemetry_dropped", readings=dropped, reason="disk_full", energy_stored=len(energy))
        return energy

    def _mark_unsealed(self, rows: list[Row]) -> None:
        now = self._monotonic()
        for stream in {row[0] for row in rows}:
            self._db.mark_unsealed(stream, now)

    def _enforce_quietly(self) -> None:
        """enforce_limit for a writer: a disk too full for the policy is logged; the write decides for itself."""
        try:
            self.enforce_limit()
        except StoreFullError as err:
            log.error("store_policy_failed", path=self.path, error=err)

    def add_event(
        self,
        ts: float,
        kind: str,
        severity: str,
        source: str,
        text: str,
        data: dict[str, Any] | None = None,
        stream: str = EVENTS,
    ) -> None:
        """Store one event on ``stream`` (``events``, or ``control`` for control decisions)."""
        if stream not in EVENT_STREAMS:
            raise StoreInputError(f"event stream={stream!r}: one of {', '.join(EVENT_STREAMS)}")
        now = self._monotonic()
        db = self._db
        # a full disk gets the same one recovery (the reserve given up) as readings and acks
        self._disk.write(
            "add_event", lambda conn: db.insert_event(conn, ts, kind, severity, source, text, data, stream)
        )
        db.mark_unsealed(stream, now)

    # -- interval energy (agent/metering; docs/store.md, "Intervals") ------------------------------------
    def add_intervals(self, items: Sequence[dict[str, Any]], states: dict[str, dict[str, Any]]) -> None:
        """Intervals closed by the metering engines (wire items, protocols/telemetry/intervals.py) and the engines'
        states after closing them, in ONE transaction: a restart resumes from the state that made the last interval
        stored, so no interval is made twice and none is lost. Each item is checked as central will check it."""
        rows = []
        for i, it in enumerate(items):
            try:
                check_interval(i, it)
                text = json.dumps(it, allow_nan=False, separators=(",", ":"))
            except (SchemaError, TypeError, ValueError) as err:
                raise StoreInputError(f"interval {i}: {err}") from err
            rows.append((it["meter"], it["register"], float(it["start"]), int(it["version"]), text))
        state_rows = [(k, json.dumps(v, allow_nan=False, separators=(",", ":"))) for k, v in states.items()]
        if not rows and not state_rows:
            return
        self._disk.write("add_intervals", functools.partial(self._insert_intervals, rows, state_rows))
        if rows:
            self._db.mark_unsealed(INTERVALS, self._monotonic())

    @staticmethod
    def _insert_intervals(
        rows: list[tuple[Any, ...]], state_rows: list[tuple[str, str]], conn: sqlite3.Connection
    ) -> None:
        conn.executemany("INSERT INTO intervals(meter, register, start, version, item) VALUES (?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT OR REPLACE INTO metering_state(key, state) VALUES (?, ?)", state_rows)

    def energy_reads(self, since_ts: float, after_id: int = 0, limit: int = 20_000) -> list[tuple[Any, ...]]:
        """Stored energy readings stamped after ``since_ts`` with ids above ``after_id``, in id order, at most
        ``limit``: ``(id, point, ts, value, quality)`` (metering replays them at start, a chunk at a time)."""
        return self._db.read(
            "SELECT id, point, ts, value, quality FROM readings WHERE stream='energy' AND id>? AND ts>? "
            "ORDER BY id LIMIT ?",
            (after_id, since_ts, limit),
        )

    def metering_states(self) -> dict[str, dict[str, Any]]:
        """Each metering engine's state as last stored with its intervals (empty on a new store)."""
        return {k: json.loads(v) for k, v in self._db.read("SELECT key, state FROM metering_state")}

    # -- the safety envelope's state (agent/store/controlstate.py) ------------------------------------

    def control_record_op(
        self,
        ts: float,
        device: str,
        function: str,
        action: str,
        direction: int,
        costs: dict[str, int],
        decision_id: str,
        keep_s: float,
    ) -> int:
        return self._control.record_op(ts, device, function, action, direction, costs, decision_id, keep_s)

    def control_ops(self, since: float, device: str | None = None) -> list[ControlOp]:
        return self._control.ops(since, device)

    def control_set_flag(self, flag: ControlFlag, event: FlagEvent | None = None) -> None:
        self._control.set_flag(flag, event)
        if event is not None:
            self._db.mark_unsealed(EVENTS, self._monotonic())

    def control_clear_flag(self, kind: str, function: str, device: str, event: FlagEvent | None = None) -> bool:
        cleared = self._control.clear_flag(kind, function, device, event)
        if cleared and event is not None:
            self._db.mark_unsealed(EVENTS, self._monotonic())
        return cleared

    def control_flags(self, kind: str | None = None) -> list[ControlFlag]:
        return self._control.flags(kind)

    # -- the outbox and the policy ---------------------------------------------------------------

    def seal(self, force: bool = False) -> int:
        """Turn unsealed items into outbox messages (``Outbox.seal``); returns how many were created."""
        return self._outbox.seal(force)

    def pending(self, limit: int, exclude: Collection[str] = (), *, billing: bool = False) -> list[OutboxMessage]:
        """Up to ``limit`` outbox messages, skipping the ids in ``exclude`` (in flight): oldest first, or with
        ``billing`` telemetry newest first and the other streams oldest first (Outbox.pending)."""
        return self._outbox.pending(limit, exclude, billing=billing)

    def ack(self, msg_ids: Iterable[str]) -> int:
        """Forget acknowledged messages; unknown or repeated ids are ignored. Returns rows removed."""
        return self._outbox.ack(msg_ids)

    def enforce_limit(self) -> list[dict[str, Any]]:
        """Apply the full policy (docs/store.md); returns the events raised (also stored)."""
        return self._policy.enforce_limit()

    # -- inspection ------------------------------------------------------------------------------

    def stats(self) -> StoreStats:
        db, disk = self._db, self._disk
        try:
            meta = dict(db.conn.execute("SELECT key, value FROM meta").fetchall())
            rows = db.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            per_stream = {s: db.count_unsealed(s) for s in db.unsealed_since}
            unsealed = sum(per_stream.values())
            msgs, items = db.conn.execute("SELECT count(*), coalesce(sum(count), 0) FROM outbox").fetchone()
            now = self._clock()
            oldest: dict[str, float] = {}
            for stream, n, created in db.conn.execute(
                "SELECT stream, coalesce(sum(count), 0), min(created) FROM outbox GROUP BY stream"
            ):
                per_stream[stream] = per_stream.get(stream, 0) + n
                oldest[stream] = round(max(0.0, now - created), 1)
            size = disk.size()
            limit, free = disk.limit(size)
        except sqlite3.Error as err:
            raise db.map_error(err, "stats") from err
        return StoreStats(
            readings_taken=int(meta["readings_taken"]),
            readings_rows=rows,
            unsealed=unsealed,
            outbox_messages=msgs,
            outbox_readings=items,
            acked_messages=int(meta["acked_messages"]),
            acked_readings=int(meta["acked_readings"]),
            dropped_readings=int(meta["dropped_readings"]),
            size_bytes=size,
            max_bytes=self.max_bytes,
            # The latched state enforce_limit keeps (raised at 90 %, cleared below 80 %), not the size of the
            # moment: the policy shrinks a full store to 85 %, which must not read as "alarm over".
            full_alarm=bool(meta["full_alarm"]),
            dropped_messages=int(meta["dropped_messages"]),
            limit_bytes=limit,
            disk_free_bytes=free,
            reserve_bytes=disk.reserve_held(),
            reserve_released=int(meta.get("reserve_released", 0)) + db.unrecorded.get("reserve_released", 0),
            reserve_restored=int(meta.get("reserve_restored", 0)) + db.unrecorded.get("reserve_restored", 0),
            backlog=per_stream,
            backlog_oldest_s={s: oldest.get(s, 0.0) for s in per_stream},
        )

    # -- closing ---------------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
