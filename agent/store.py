"""The agent's SQLite store: every reading taken, the events, and the outbox of sealed uplink messages.

One file, one connection, WAL mode. Readings land in ``readings`` (the staging area for batching and the
local history), ``seal()`` turns them into JSON uplink messages in ``outbox``, and an outbox row leaves only
when central acknowledges its ``msg_id`` (``ack()``), so a broker outage, an agent crash or a power cut loses
nothing that was committed.

Durability (why ``synchronous=NORMAL``)
    In WAL mode with ``synchronous=NORMAL`` a commit appends to the WAL without an fsync; the WAL is synced
    at checkpoints. A power cut can therefore lose the last commits, but never corrupts the database (the
    WAL frames carry checksums and a torn tail is ignored on recovery). An agent crash (SIGKILL) loses
    nothing: the data is in the OS page cache. Readings are committed about once a second in batches, and an
    fsync per commit costs milliseconds on the SD cards and eMMC this agent runs on, so NORMAL is the trade.
    Two exceptions are made, because an identifier leaves the box: ``seal()`` commits with
    ``synchronous=FULL`` (a message may be published right after; were its seal rolled back by a power cut,
    the same sequence number would be reused for another message id), and ``durable=True`` makes every
    commit FULL. Lost acks are harmless: the message is sent again and central drops it by id. A ``seal()``
    with nothing due (the idle agent, several times a second) opens no transaction: no write, no fsync.

Values
    ``value`` is stored as-is (the column has no type affinity): REAL, INTEGER, TEXT or NULL. A bool is
    stored as the INTEGER 0/1 and comes back, and goes uplink, as 0/1: SQLite has no boolean type. Floats
    must be finite (JSON has no NaN); integers must fit in 64 bits; strings are at most ``MAX_TEXT`` chars.

Size
    size = (page_count - freelist_count) * page_size + the WAL file's size. Free pages are not counted: a
    delete frees pages that the next insert reuses, and ``enforce_limit`` returns them to the file system
    with ``PRAGMA incremental_vacuum`` (``auto_vacuum=INCREMENTAL`` is set when the file is created) and then
    truncates the WAL. The WAL is kept small by ``wal_autocheckpoint`` and ``journal_size_limit`` scaled to
    ``max_bytes``; a big delete (an ack of many messages) still passes through it, so at >= 80 % the policy
    checkpoints first and decides on what is really held. ``max_bytes`` is a soft limit, enforced before
    every ``add_readings``: it can be passed by what one call and one ``seal()`` add.
    The bound in force (``limit_bytes``) is ``max_bytes``, or less when the file system has less room: size +
    disk free + the file's free pages - a margin of about three WALs (``_limit``). A disk nearly full (by the
    store or by anything else) is met with the same policy as ``max_bytes``, before SQLite meets ENOSPC.
    Reading and event ids are AUTOINCREMENT: never reused, even after the policy has emptied the table,
    because the sealed cursors compare ids.

The full policy (``enforce_limit``, also run by ``add_readings`` when size >= 90 % of ``max_bytes``)
    1. At >= 90 % of the bound raise one ``store_full_alarm`` event (severity warning). It is cleared, with
       one ``store_full_cleared`` event (info), when the size falls below 80 %, so a store that stays full
       alarms once, not once per call; ``stats().full_alarm`` reports this latched state.
    2. At >= 100 %, shrink to the 85 % low-water mark:
       a. prune local history: readings already sealed (id <= their stream's sealed cursor), oldest first.
          Their content is in an outbox payload or already at central, so this loses nothing.
       b. if still over, drop the OLDEST TELEMETRY: telemetry outbox messages oldest first, then unsealed
          telemetry readings oldest first. Never energy, never events. The dropped readings and messages
          are counted (``dropped_readings``, ``dropped_messages``) and one ``telemetry_dropped`` event
          (severity error) carries the counts. Central sees the gap in the telemetry sequence numbers.
    3. If only energy and events remain and the store is still full, ``add_readings`` drops the telemetry
       in the call (counted) and raises ``StoreFullError`` for the energy: energy is never silently dropped,
       the caller keeps it and alarms.

A full disk (SQLITE_FULL, "database or disk is full", ENOSPC): the store never jams
    Every write appends to the WAL, a delete too, so a store that let the disk fill could not even delete
    (measured on a 4 MiB tmpfs before this design: one prune of unbounded size outgrew the margin, then every
    write failed and each ``add_readings`` redid and rolled back a large prune). Hence:
    - Bounded transactions. The policy prunes and drops in chunks (``_PRUNE_CHUNK`` readings, at most
      ``_DROP_MESSAGES_CHUNK`` outbox messages or half a WAL of payload), each its own transaction carrying
      its own counters, so the counts stay true when a later chunk fails; ``ack`` deletes ``_ACK_CHUNK``
      rows a transaction; ``seal`` writes at most half a WAL of payload a transaction (a backlog seals in
      several, each all-or-none, cursor and ``seq`` moving together); ``incremental_vacuum`` moves one WAL
      of pages a step. Between chunks the WAL is checkpointed (TRUNCATE) once it outgrows its budget
      (``journal_size_limit``). ``secure_delete=FAST``: Debian's SQLite zeroes every freed page through
      the WAL otherwise, so freeing room would cost as much disk as it frees.
    - A reserve file, ``<store>.reserve`` (``_RESERVE_WALS`` WALs, preallocated with ``posix_fallocate``,
      zeros where that is not supported), kept beside the store's file (beside the file a symlinked store
      path points to, where SQLite keeps the WAL; the free room is measured there too). Made with
      O_NOFOLLOW, mode 0600; a path it cannot be made at (a directory, a link, a read-only folder) is logged
      once and left alone. When SQLite reports the disk full, the
      store truncates the WAL (a rolled-back transaction leaves its frames on disk), gives the reserve up
      if the disk is still short of the margin (counted: ``reserve_released``; logged; event
      ``store_reserve_released``) and truncates the WAL again (the first checkpoint may have needed the
      reserve's room to grow the file; the retry must not find the rolled-back frames still there), retries
      once, and runs the policy, whose deletes now have room. ``add_event`` gets the same recovery. The
      reserve is made again by ``enforce_limit`` once the disk has room for it and the margin (counted:
      ``reserve_restored``; event ``store_reserve_restored``). The bound in force counts a missing reserve
      as held, so giving it up does not let the store grow into it. A disk filled by another program with
      no reserve left is the one case where only freeing space outside the store helps.
    - A call larger than the disk's room left (its data twice: the WAL, then the file the checkpoint copies
      it into) is not attempted as it is: it could commit and leave a WAL no checkpoint can copy and no
      delete can follow, the store jammed for good. Room is made for it first, the policy's way, and a call
      that still does not fit stores its energy alone (telemetry dropped, counted), as below.
    - What a full disk may refuse: ``add_readings`` that finds the disk full runs the policy, then makes
      room for the call itself the policy's way (oldest telemetry first, about twice the call's data: WAL
      and file; not when the call could not fit even in a store emptied of telemetry) and retries;
      if the call still does not fit, its energy is stored alone and its telemetry dropped (counted in
      ``dropped_readings``, one ``telemetry_dropped`` event a minute, reason ``disk_full``), in ONE
      transaction; if not even that fits, the call is rolled back whole and ``StoreFullError`` is raised
      with ``rejected`` empty (the caller keeps every reading). Committed energy, events and outbox rows are
      never deleted to make room; ``ack`` and the policy's deletes keep working, so the store recovers by
      itself once central acknowledges or the policy drops telemetry.

Threads
    ``Store`` is synchronous and not thread-safe. ``AsyncStore`` runs every call in one dedicated worker
    thread, so the event loop never blocks on SQLite and calls are serialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import logging
import math
import numbers
import os
import shutil
import sqlite3
import stat
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from agent.points import Quality, Reading, Stream
from protocols.telemetry.schema import MAX_PAYLOAD_BYTES, TS_MAX, encode_batch, valid_site

log = logging.getLogger("gridedge.store")

SCHEMA_VERSION = 1  # in PRAGMA user_version
MAX_TEXT = 65536  # longest string value / event text / event data JSON accepted
ALARM_FRACTION = 0.90
REARM_FRACTION = 0.80
LOW_WATER_FRACTION = 0.85
_PRUNE_CHUNK = 256  # rows deleted by one transaction of the policy (one chunk)
_DROP_MESSAGES_CHUNK = 16  # outbox messages dropped by one transaction of the policy, at most
_ACK_CHUNK = 32  # outbox rows deleted by one ack transaction
# Bytes a reading takes in the file besides its point, unit and value (row header, ts, stream, quality, the
# (stream, id) index entry, page slack): measured ~62 bytes for an 8-byte value, rounded up.
_ROW_BYTES = 64
_RESERVE_WALS = 2  # the reserve file holds this many WALs (journal_size_limit)
_SQLITE_FULL = 13
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
APPLICATION_ID = 0x47454447  # "GEDG" in PRAGMA application_id: marks a file as a GridEdge store
_TABLES = ("events", "meta", "outbox", "readings")
_INT64 = 2**63
_READING_STREAMS = (Stream.TELEMETRY.value, Stream.ENERGY.value)
_EVENTS = "events"
_QUALITY = {q.value: q.value for q in Quality}
_STREAM = {s.value: s.value for s in Stream}
_COUNTERS = ("readings_taken", "acked_messages", "acked_readings", "dropped_readings", "dropped_messages")
# Counters added after schema 1 was released: absent from older files until first counted (upserted).
_LATE_COUNTERS = ("reserve_released", "reserve_restored")

T = TypeVar("T")


class StoreError(Exception):
    """The store cannot do what was asked; the message says what and why."""


class StoreFullError(StoreError):
    """No room: the disk is full, or the store is at ``max_bytes`` with nothing left that may be dropped.

    ``rejected`` holds the energy readings of the call that were not stored (the caller must keep them).
    """

    def __init__(self, message: str, rejected: Sequence[Reading] = ()) -> None:
        super().__init__(message)
        self.rejected = tuple(rejected)


class StoreCorruptError(StoreError):
    """The file at the store path is damaged, or is not a GridEdge store; the message says what to do."""


class StoreInputError(StoreError, ValueError):
    """A reading or event that cannot be stored (wrong type, non-finite number, too long)."""


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    msg_id: str
    stream: str
    seq: int
    count: int
    payload: bytes


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


_CORRUPT_ADVICE = (
    "Stop the agent, move the file aside (with its -wal and -shm files; keep them: `sqlite3 FILE .recover` "
    "can save the outbox and the energy readings) and start again: the agent makes a new store"
)


def _is_corrupt(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    text = str(err)
    return "malformed" in text or "not a database" in text


def _bad(i: int, r: Any, what: str) -> StoreInputError:
    point = getattr(r, "point", "?")
    return StoreInputError(f"readings[{i}] point={point!r}: {what}")


def _utf8(text: str) -> bool:
    """True if the text can go on the wire as UTF-8 (no lone surrogates); ASCII, the usual case, is cheap."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reading_row(i: int, r: Reading) -> tuple[str, str, float, Any, str, str]:
    """Validate one reading and turn it into a row; exact-type fast paths first (this is the hot path)."""
    v = r.value
    t = type(v)
    if t is float:
        if not math.isfinite(v):
            raise _bad(i, r, f"value={v!r}: must be finite (use value=None with quality invalid)")
    elif t is int:
        if not -_INT64 <= v < _INT64:
            raise _bad(i, r, f"value={v!r}: integers must fit in 64 bits")
    elif t is str:
        if len(v) > MAX_TEXT:
            raise _bad(i, r, f"string value of {len(v)} chars: at most {MAX_TEXT}")
    elif v is None:
        pass
    elif isinstance(v, bool):
        v = int(v)  # SQLite has no boolean: stored and sent as 0/1
    elif isinstance(v, numbers.Integral):
        v = int(v)
        if not -_INT64 <= v < _INT64:
            raise _bad(i, r, f"value={v!r}: integers must fit in 64 bits")
    elif isinstance(v, numbers.Real):
        v = float(v)
        if not math.isfinite(v):
            raise _bad(i, r, f"value={v!r}: must be finite (use value=None with quality invalid)")
    else:
        raise _bad(i, r, f"value of type {t.__name__}: must be a number, string, bool or None")
    ts = r.ts
    if type(ts) is not float:
        if isinstance(ts, numbers.Real) and not isinstance(ts, bool):
            ts = float(ts)
        else:
            raise _bad(i, r, f"ts={ts!r}: must be seconds since the epoch")
    if not 0.0 <= ts < TS_MAX:  # what central accepts (protocols/telemetry): else it would sit in the outbox forever
        raise _bad(i, r, f"ts={ts!r}: must be seconds since the epoch in [0, 2**33)")
    point = r.point
    if type(point) is not str or not point or len(point) > MAX_TEXT or not _utf8(point):
        raise _bad(i, r, "point must be a non-empty UTF-8 string")
    if not isinstance(r.unit, str) or not _utf8(r.unit):
        raise _bad(i, r, f"unit={r.unit!r}: must be a UTF-8 string")
    if t is str and not _utf8(v):
        raise _bad(i, r, "string value is not valid UTF-8 (a lone surrogate)")
    try:
        quality = _QUALITY[r.quality]
        stream = _STREAM[r.stream]
    except (KeyError, TypeError) as err:
        raise _bad(
            i,
            r,
            f"quality={r.quality!r} / stream={r.stream!r}: quality one of {', '.join(_QUALITY)}, "
            f"stream one of {', '.join(_STREAM)}",
        ) from err
    return (stream, point, ts, v, str(r.unit), quality)


class Store:
    """The SQLite store. See the module docstring for durability, size and the full policy."""

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
        # The file system's (total, free) bytes, as shutil.disk_usage gives them; injected so a test can
        # stand in a small disk. The bound in force is max_bytes or less when the disk has less room.
        self._disk_usage = disk_usage
        self._disk_warned = False
        self._id_factory = id_factory
        self._sync = "FULL" if durable else "NORMAL"
        # SQLite follows a symlinked store file and keeps the -wal beside the file it points to: the WAL's size,
        # the reserve and the free space are those of that file's folder and file system, not the link's.
        real = Path(os.path.realpath(self.path))
        self._fs_dir = real.parent
        self._wal_path = Path(f"{real}-wal")
        # A file of zeros kept beside the store, given up when SQLite finds the disk full (module docstring).
        self._reserve_path = Path(f"{real}.reserve")
        self._reserve_warned = False  # a reserve that cannot be made is logged once, not every policy run
        self._unrecorded: dict[str, int] = {}  # counter increments not yet committed (the disk was full)
        # When each stream got its oldest unsealed item (monotonic time); None = nothing unsealed.
        self._unsealed_since: dict[str, float | None] = {s: None for s in (*_READING_STREAMS, _EVENTS)}
        self._last_drop_event = -math.inf
        self._conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) in _tx.
            # check_same_thread=False: AsyncStore opens here and serialises every call on its one worker.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"cannot open store {self.path}: {err}") from err
        self._conn = conn
        try:
            self._open(conn)
        except sqlite3.Error as err:
            conn.close()
            self._conn = None
            if _is_corrupt(err):
                raise StoreCorruptError(f"cannot open store {self.path}: {err}. {_CORRUPT_ADVICE}") from err
            raise StoreError(f"cannot open store {self.path}: {err}") from err
        except BaseException:
            conn.close()
            self._conn = None
            raise
        self._ensure_reserve()

    # ----------------------------------------------------------------- opening and schema

    def _open(self, conn: sqlite3.Connection) -> None:
        # Before anything is written: a file that is not ours (another program's database, central's store,
        # a copy of something else) is refused, not quietly given our tables and switched to WAL.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        self._check_ours(conn, version)
        # auto_vacuum must be chosen before the first table exists; on an existing file this is a no-op.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"store {self.path}: the file system refused WAL mode (journal_mode={mode})")
        conn.execute(f"PRAGMA synchronous={self._sync}")
        # Debian builds SQLite with SECURE_DELETE: every page a delete frees is zeroed and written through the
        # WAL, so freeing room cost as much disk as the data freed (the full-disk jam). FAST zeroes deleted
        # content only where that costs no extra I/O (inside b-tree pages); freed pages are not rewritten.
        conn.execute("PRAGMA secure_delete=FAST")
        self._page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        # Keep the WAL small relative to what the store may hold (max_bytes, or the disk when it is smaller):
        # it counts in the measured size, and the room kept free on the disk (_disk_margin) is a few WALs.
        try:
            cap = min(self.max_bytes, self._disk_usage(self._fs_dir).total)
        except OSError:
            cap = self.max_bytes
        ckpt_pages = max(16, min(1000, cap // self._page_size // 32))
        conn.execute(f"PRAGMA wal_autocheckpoint={ckpt_pages}")
        conn.execute(f"PRAGMA journal_size_limit={ckpt_pages * self._page_size}")
        self._wal_pages = ckpt_pages
        self._wal_budget = ckpt_pages * self._page_size  # past this, the policy checkpoints between chunks
        self._reserve_size = _RESERVE_WALS * self._wal_budget
        # Room the store keeps free on its file system: a checkpoint copies up to one WAL into the file
        # before it truncates the WAL, and the deletes that make room need WAL space of their own. A store
        # that filled the disk to the last byte could not even delete (every write, a delete too, appends
        # to the WAL): it would be stuck until something else freed space. Measured on a 1 MiB tmpfs.
        self._disk_margin = 3 * ckpt_pages * self._page_size + 64 * 1024
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}; this agent knows up to {SCHEMA_VERSION} "
                "(it was written by a newer agent)"
            )
        if version < SCHEMA_VERSION:
            self._migrate(conn, version)
        for stream in self._unsealed_since:
            if self._count_unsealed(stream):
                # Left from before a restart: we do not know how long it waited, so seal it soon.
                self._unsealed_since[stream] = -math.inf
        log.info(
            "store_open path=%s site=%s max_bytes=%d schema=%d found_schema=%d",
            self.path, self.site, self.max_bytes, SCHEMA_VERSION, version,
        )  # fmt: skip

    def _check_ours(self, conn: sqlite3.Connection, version: int) -> None:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        where = f"store {self.path}"
        if app_id not in (0, APPLICATION_ID):
            raise StoreCorruptError(
                f"{where} belongs to another program (application_id={app_id:#x}, a GridEdge store has "
                f"{APPLICATION_ID:#x}): point store.path at a new file"
            )
        if version == 0 and tables:
            raise StoreCorruptError(
                f"{where} is an SQLite database but not a GridEdge store (it holds the tables "
                f"{', '.join(sorted(tables))} and no schema version): point store.path at a new file"
            )
        missing = [t for t in _TABLES if t not in tables]
        if version >= 1 and missing:
            raise StoreCorruptError(
                f"{where} says schema version {version} but lacks the tables {', '.join(missing)}: "
                f"it is not a GridEdge store, or was damaged. {_CORRUPT_ADVICE}"
            )
        if version >= 1 and app_id == 0:
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")  # a store made before the id was set

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        """Bring the schema to SCHEMA_VERSION in one transaction: a crash mid-way leaves the old version."""
        db = sqlite_utils.Database(conn)
        with db.atomic():
            if version < 1:
                # AUTOINCREMENT (raw DDL: sqlite-utils has no public switch for it): ids must never be
                # reused, the sealed cursors compare ids. A plain INTEGER PRIMARY KEY restarts at max(id)+1,
                # i.e. at 1 once the policy has pruned every row, and new rows would count as sealed.
                conn.execute(
                    "CREATE TABLE readings (id INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT, point TEXT, "
                    "ts REAL, value BLOB, unit TEXT, quality TEXT)"
                )
                db["readings"].create_index(["stream", "id"], index_name="readings_stream_id")
                conn.execute(
                    "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL, kind TEXT, "
                    "severity TEXT, source TEXT, text TEXT, data TEXT)"
                )
                db["outbox"].create(
                    {
                        "msg_id": str,
                        "stream": str,
                        "seq": int,
                        "count": int,
                        "first_id": int,
                        "last_id": int,
                        "created": float,
                        "payload": bytes,
                    },
                    pk="msg_id",
                )
                # "BLOB" declared type = no affinity: values are stored exactly as given (as in readings).
                db["meta"].create({"key": str, "value": "BLOB"}, pk="key")
                rows = [{"key": k, "value": 0} for k in _COUNTERS]
                for s in (*_READING_STREAMS, _EVENTS):
                    rows += [{"key": f"seq:{s}", "value": 1}, {"key": f"sealed:{s}", "value": 0}]
                rows.append({"key": "full_alarm", "value": 0})
                db["meta"].insert_all(rows, ignore=True)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")

    # ----------------------------------------------------------------- plumbing

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is closed")
        return self._conn

    @contextmanager
    def _tx(self, what: str, full_sync: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite errors become StoreError, a full disk StoreFullError."""
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
                        log.warning("store_rollback_failed what=%s error=%s", what, rb_err)
                raise
        except sqlite3.Error as err:
            raise self._map_error(err, what) from err
        finally:
            if upgrade and self._conn is not None:
                self._conn.execute(f"PRAGMA synchronous={self._sync}")

    def _map_error(self, err: sqlite3.Error, what: str) -> StoreError:
        code = getattr(err, "sqlite_errorcode", None)
        if _is_corrupt(err):
            log.error("store_corrupt what=%s path=%s error=%s", what, self.path, err)
            return StoreCorruptError(f"{what}: store file {self.path} is damaged ({err}). {_CORRUPT_ADVICE}")
        if code == _SQLITE_FULL or "disk is full" in str(err) or "No space left" in str(err):
            log.error("store_disk_full what=%s path=%s error=%s", what, self.path, err)
            return StoreFullError(
                f"{what}: the disk is full ({err}); this {what} was rolled back, "
                "everything committed before it is intact"
            )
        return StoreError(f"{what}: {err}")

    def _write(self, what: str, body: Callable[[sqlite3.Connection], T], full_sync: bool = False) -> T:
        """Run ``body`` in one write transaction; a full disk gets one recovery (``_recover_full``) and one retry.

        ``body`` must be re-runnable: the first attempt was rolled back whole.
        """
        try:
            with self._tx(what, full_sync) as conn:
                return body(conn)
        except StoreFullError:
            if not self._recover_full(what):
                raise
        with self._tx(what, full_sync) as conn:
            return body(conn)

    def _recover_full(self, what: str) -> bool:
        """SQLite found the disk full: make room for the deletes that free it. True if room was made.

        First truncate the WAL (a rolled-back transaction leaves its frames on disk); if the disk is still
        short of the margin, give up the reserve file and truncate the WAL again. Never raises for a full disk.

        Why twice: the checkpoint copies the committed frames into the file first, which may need the file to
        grow, and it cannot truncate the WAL before. A rolled-back transaction that took the disk's last bytes
        leaves its frames behind, so that checkpoint fails; the reserve is given up for it, and the WAL must be
        emptied then, or the retry re-fills the reserve's room with its frames and nothing can be freed again
        (measured on a 4 MiB tmpfs: one call larger than the room left jammed the store for good).
        """
        before = self._wal_bytes()
        self._truncate_wal(what)
        freed = self._wal_bytes() < before
        free = self._disk_free()
        if (free < 0 or free < self._disk_margin) and self._release_reserve(what):
            self._truncate_wal(what)
            freed = True
        return freed

    def _truncate_wal(self, what: str) -> None:
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as err:
            log.warning("store_checkpoint_failed what=%s path=%s error=%s", what, self.path, err)

    def _wal_bytes(self) -> int:
        try:
            return self._wal_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _wal_check(self) -> None:
        """Between two chunks: checkpoint and truncate a WAL that has outgrown its budget (full disk: recover)."""
        if self._wal_bytes() <= self._wal_budget:
            return
        try:
            self._checkpoint()
        except StoreFullError:
            self._recover_full("checkpoint")

    # ----------------------------------------------------------------- the reserve file

    def _reserve_file_size(self) -> int:
        """Size of the reserve file; -1 when the path holds no regular file (nothing, a link, a directory).

        ``lstat``: a link at the path is not ours to count, grow or delete."""
        try:
            st = os.lstat(self._reserve_path)
        except OSError:
            return -1
        return st.st_size if stat.S_ISREG(st.st_mode) else -1

    def _reserve_held(self) -> int:
        return max(0, min(self._reserve_file_size(), self._reserve_size))

    def _release_reserve(self, what: str) -> bool:
        """Delete the reserve so the policy's deletes (and their WAL) have room; counted, logged, an event."""
        held = self._reserve_file_size()
        if held < 0:
            return False
        try:
            self._reserve_path.unlink()
        except FileNotFoundError:
            return False
        except OSError as err:
            log.error("store_reserve_release_failed path=%s error=%s", self._reserve_path, err)
            return False
        log.error("store_reserve_released what=%s bytes=%d path=%s", what, held, self._reserve_path)
        self._record(
            "reserve_released", "store_reserve_released", "error",
            f"disk full during {what}: gave up the reserve of {held} bytes so the store can free room",
            {"reserve_bytes": held, "during": what},
        )  # fmt: skip
        return True

    def _ensure_reserve(self) -> None:
        """Make the reserve file when it is missing and the disk has room for it and the margin. Never raises.

        Best effort: a path the store cannot make a file at (a directory, a link, a read-only or full folder) is
        logged once and left alone; the bound in force counts the missing reserve as held all the same.
        """
        size = self._reserve_file_size()
        if size > self._reserve_size:  # made under a larger bound: give back what is no longer counted
            try:
                os.truncate(self._reserve_path, self._reserve_size)
            except OSError as err:
                self._reserve_failed(err)
            return
        held = max(0, size)
        if held >= self._reserve_size:
            return
        free = self._disk_free()
        if free >= 0 and free - (self._reserve_size - held) < self._disk_margin:
            return  # no room yet: the bound in force counts the missing reserve, so the policy makes room
        try:
            fd = os.open(self._reserve_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as err:  # not a file we may write (a directory, a link, a read-only folder): left alone
            self._reserve_failed(err)
            return
        try:
            try:
                try:
                    os.posix_fallocate(fd, 0, self._reserve_size)
                except OSError as err:
                    if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
                    self._write_zeros(fd)  # no fallocate on this file system (musl): real zeros
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            with contextlib.suppress(OSError):  # a partial reserve is ours: no half-made file stays behind
                self._reserve_path.unlink()
            self._reserve_failed(err)
            return
        self._reserve_warned = False
        try:
            outstanding = self._counter("reserve_released") - self._counter("reserve_restored")
        except sqlite3.Error:
            outstanding = 0
        if outstanding > 0:
            log.info("store_reserve_restored bytes=%d path=%s", self._reserve_size, self._reserve_path)
            self._record(
                "reserve_restored", "store_reserve_restored", "info",
                f"room again: the reserve of {self._reserve_size} bytes is back",
                {"reserve_bytes": self._reserve_size},
            )  # fmt: skip
        else:
            log.info("store_reserve_created bytes=%d path=%s", self._reserve_size, self._reserve_path)

    def _write_zeros(self, fd: int) -> None:
        """Write the reserve's zeros: pwrite may write less than asked, so loop until all are written."""
        block = bytes(min(self._reserve_size, 1 << 20))
        done = 0
        while done < self._reserve_size:
            n = os.pwrite(fd, block[: self._reserve_size - done], done)
            if n <= 0:
                raise OSError(errno.ENOSPC, "short write making the reserve", str(self._reserve_path))
            done += n

    def _reserve_failed(self, err: OSError) -> None:
        if not self._reserve_warned:
            self._reserve_warned = True
            log.warning("store_reserve_failed path=%s bytes=%d error=%s", self._reserve_path, self._reserve_size, err)

    def _counter(self, key: str) -> int:
        """A counter: committed value plus what is waiting to be committed."""
        return self._meta(key) + self._unrecorded.get(key, 0)

    def _record(self, key: str, kind: str, severity: str, text: str, data: dict[str, Any]) -> None:
        """Count ``key`` and store the event, in one transaction; a disk still full keeps the count for later."""
        self._unrecorded[key] = self._unrecorded.get(key, 0) + 1
        try:
            with self._tx(kind) as conn:
                for k, n in self._unrecorded.items():
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                        (k, n),
                    )
                self._insert_event(conn, self._clock(), kind, severity, "store", text, data)
        except StoreError as err:
            log.error("store_event_not_stored kind=%s error=%s", kind, err)
            return
        self._unrecorded.clear()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise self._map_error(err, "read") from err

    def _meta(self, key: str) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _meta_set(self, key: str, value: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _meta_add(self, key: str, n: int) -> None:
        self.conn.execute("UPDATE meta SET value = value + ? WHERE key=?", (n, key))

    def _count_unsealed(self, stream: str, limit: int = -1) -> int:
        """Items of ``stream`` not yet sealed, counting at most ``limit`` (-1: all) so a check stays cheap."""
        cursor = self._meta(f"sealed:{stream}")
        if stream == _EVENTS:
            sql = "SELECT count(*) FROM (SELECT 1 FROM events WHERE id>? LIMIT ?)"
            return self.conn.execute(sql, (cursor, limit)).fetchone()[0]
        sql = "SELECT count(*) FROM (SELECT 1 FROM readings WHERE stream=? AND id>? LIMIT ?)"
        return self.conn.execute(sql, (stream, cursor, limit)).fetchone()[0]

    def _db_bytes(self) -> int:
        conn = self.conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self._page_size

    def _size(self) -> int:
        return self._db_bytes() + self._wal_bytes()

    def _disk_free(self) -> int:
        """Free bytes on the store's file system; -1 when it cannot be asked (then max_bytes alone bounds)."""
        try:
            free = int(self._disk_usage(self._fs_dir).free)
        except OSError as err:
            if not self._disk_warned:
                self._disk_warned = True
                log.warning("store_disk_usage_unknown path=%s error=%s", self.path, err)
            return -1
        return free

    def _free_pages_bytes(self) -> int:
        return self.conn.execute("PRAGMA freelist_count").fetchone()[0] * self._page_size

    def _limit(self, size: int) -> tuple[int, int]:
        """(the bound in force, disk free): max_bytes, or what the disk can still hold keeping its margin.

        The store can grow by what the disk has free, less the margin a checkpoint and the deletes that make
        room need. Nearing a full disk is then the same explicit policy as nearing max_bytes: alarm, prune,
        drop the oldest telemetry, never energy. Free pages inside the file are not counted in ``size`` but
        are reusable, so they are not lost room either.
        """
        free = self._disk_free()
        if free < 0:
            return self.max_bytes, free
        # The file's free pages are room too: the next inserts reuse them before the file grows.
        # A reserve given up (or not yet made) is owed to the disk: counted as held, so giving it up to a full
        # disk makes room for the policy's deletes without raising the bound they work towards.
        return min(self.max_bytes, self._disk_room(size, free)), free

    def _disk_room(self, size: int, free: int) -> int:
        """What the disk lets the store hold, keeping its margin (``free`` >= 0: the disk's free bytes)."""
        # The file's free pages are room too: the next inserts reuse them before the file grows.
        # A reserve given up (or not yet made) is owed to the disk: counted as held, so giving it up to a full
        # disk makes room for the policy's deletes without raising the bound they work towards.
        owed = self._reserve_size - self._reserve_held()
        return size + free + self._free_pages_bytes() - self._disk_margin - owed

    @staticmethod
    def _need(rows: list[tuple[Any, ...]]) -> int:
        """Disk a call needs: its data twice, once in the WAL and once more in the file when the checkpoint
        copies it there (the WAL is emptied only after that copy)."""
        data = sum(len(r[1]) + len(r[4]) + (len(r[3]) if type(r[3]) is str else 8) for r in rows)
        return 2 * (data + _ROW_BYTES * len(rows))

    def _too_big(self, rows: list[tuple[Any, ...]], size: int, free: int) -> bool:
        """True if committing the call could leave the disk unable to checkpoint it (see ``add_readings``)."""
        if free < 0:
            return False
        left = self._disk_room(size, free) - size
        if left >= max(1 << 26, 2048 * len(rows)):  # plenty: skip counting (the hot path on a roomy disk)
            return False
        return self._need(rows) > left

    # ----------------------------------------------------------------- writing

    def add_readings(self, readings: Sequence[Reading]) -> None:
        """Commit readings in ONE transaction (all or none), or, on a full disk, their energy alone.

        Raises StoreInputError for a bad reading (nothing stored), StoreFullError when the store is full of
        energy (telemetry of the call dropped and counted, energy rejected: see ``rejected``) or when the disk
        is full and not even the call's energy fits (rolled back whole, nothing counted: ``rejected`` empty).
        A full disk that takes the call's energy but not its telemetry drops the telemetry (counted) and
        returns normally, as the full-store policy does.
        """
        rows = [_reading_row(i, r) for i, r in enumerate(readings)]
        if not rows:
            return
        size = self._size()
        limit, free = self._limit(size)
        if size >= limit * ALARM_FRACTION:
            self._enforce_quietly()
            size = self._size()
            limit, free = self._limit(size)
            if size >= limit:
                self._refuse(readings, rows, size, limit, free)  # raises StoreFullError if the call holds energy
                return
        if self._too_big(rows, size, free):
            # A call larger than the disk's room left would commit (its WAL fits) and then leave a WAL that no
            # checkpoint can copy into the file (no room for the file to grow) and no delete can follow (no room
            # for their WAL): the store jammed for good (measured: 12,000 readings on a 4 MiB disk). Room is made
            # first the policy's way; a call that still does not fit stores its energy alone (telemetry counted).
            self._make_room(rows)
            size = self._size()
            _, free = self._limit(size)
            if self._too_big(rows, size, free):
                refused = StoreFullError(
                    f"store {self.path}: the disk has no room for this call of {len(rows)} readings "
                    f"(about {self._need(rows)} bytes with its WAL); nothing was stored, the caller keeps it"
                )
                self._mark_unsealed(self._store_energy_only(rows, refused))
                return
        try:
            self._write("add_readings", functools.partial(self._insert_readings, rows, 0))
        except StoreFullError as err:
            # The bound said there was room, the disk did not: another program filled it, or this call is
            # larger than the room left. The policy (now with room for its deletes) frees the oldest telemetry,
            # as much as the call needs.
            self._enforce_quietly()
            self._make_room(rows)
            try:
                self._write("add_readings", functools.partial(self._insert_readings, rows, 0))
            except StoreFullError:
                rows = self._store_energy_only(rows, err)
        self._mark_unsealed(rows)

    def _insert_readings(self, rows: list[tuple[Any, ...]], dropped: int, conn: sqlite3.Connection) -> None:
        if rows:
            conn.executemany(
                "INSERT INTO readings(stream, point, ts, value, unit, quality) VALUES (?, ?, ?, ?, ?, ?)", rows
            )
            conn.execute("UPDATE meta SET value = value + ? WHERE key='readings_taken'", (len(rows),))
        if dropped:
            self._meta_add("dropped_readings", dropped)
            mono = self._monotonic()
            if mono - self._last_drop_event >= 60.0:  # one event a minute, not one per call
                self._last_drop_event = mono
                self._insert_event(
                    conn, self._clock(), "telemetry_dropped", "error", "store",
                    f"disk full: {dropped} new telemetry readings dropped",
                    {"dropped_readings": dropped, "dropped_messages": 0, "reason": "disk_full"},
                )  # fmt: skip

    def _store_energy_only(self, rows: list[tuple[Any, ...]], err: StoreFullError) -> list[tuple[Any, ...]]:
        """The disk has no room for the call: keep its energy, drop its telemetry (counted, in one transaction)."""
        energy = [row for row in rows if row[0] == Stream.ENERGY.value]
        dropped = len(rows) - len(energy)
        if not dropped:
            raise err
        size = self._size()
        if self._too_big(energy, size, self._limit(size)[1]):
            # the energy alone could commit and leave a WAL no checkpoint can copy: the caller keeps the call
            raise StoreFullError(
                f"store {self.path}: the disk has no room for the call's {len(energy)} energy readings: "
                "the call was rolled back whole"
            ) from err
        try:
            self._write("add_readings (energy only)", functools.partial(self._insert_readings, energy, dropped))
        except StoreFullError as again:
            raise StoreFullError(
                f"store {self.path}: the disk is full; not even the call's {len(energy)} energy readings "
                "and the count of its dropped telemetry fit: the call was rolled back whole",
            ) from again
        log.warning("store_telemetry_dropped readings=%d reason=disk_full energy_stored=%d", dropped, len(energy))
        return energy

    def _mark_unsealed(self, rows: list[tuple[Any, ...]]) -> None:
        now = self._monotonic()
        for stream in {row[0] for row in rows}:
            if self._unsealed_since[stream] is None:
                self._unsealed_since[stream] = now

    def _enforce_quietly(self) -> None:
        """enforce_limit for a writer: a disk too full for the policy is logged; the write decides for itself."""
        try:
            self.enforce_limit()
        except StoreFullError as err:
            log.error("store_policy_failed path=%s error=%s", self.path, err)

    def _refuse(
        self, readings: Sequence[Reading], rows: list[tuple[Any, ...]], size: int, limit: int, free: int
    ) -> None:
        """The store is full of what may not be dropped: drop this call's telemetry, refuse its energy."""
        telemetry = sum(1 for row in rows if row[0] == Stream.TELEMETRY.value)
        energy = [r for r, row in zip(readings, rows, strict=True) if row[0] == Stream.ENERGY.value]
        if telemetry:
            now = self._clock()
            mono = self._monotonic()

            def count(conn: sqlite3.Connection) -> None:
                self._meta_add("dropped_readings", telemetry)
                if mono - self._last_drop_event >= 60.0:  # one event a minute, not one per call
                    self._last_drop_event = mono
                    self._insert_event(
                        conn, now, "telemetry_dropped", "error", "store",
                        f"store full of energy and events: {telemetry} new telemetry readings dropped",
                        {"dropped_readings": telemetry, "dropped_messages": 0, "reason": "full_of_energy"},
                    )  # fmt: skip

            self._write("drop telemetry", count)
            log.warning("store_telemetry_dropped readings=%d reason=full_of_energy", telemetry)
        if energy:
            raise StoreFullError(
                f"store {self.path} is full ({size} bytes; bound {limit}: max_bytes {self.max_bytes}, "
                f"disk free {free}) and holds only energy and events, "
                f"which are never dropped: {len(energy)} energy readings NOT stored, "
                f"{telemetry} telemetry readings dropped",
                rejected=energy,
            )

    def add_event(
        self, ts: float, kind: str, severity: str, source: str, text: str, data: dict[str, Any] | None = None
    ) -> None:
        now = self._monotonic()
        # _write: a full disk gets the same one recovery (the reserve given up) as readings and acks
        self._write("add_event", lambda conn: self._insert_event(conn, ts, kind, severity, source, text, data))
        if self._unsealed_since[_EVENTS] is None:
            self._unsealed_since[_EVENTS] = now

    def _insert_event(
        self,
        conn: sqlite3.Connection,
        ts: float,
        kind: str,
        severity: str,
        source: str,
        text: str,
        data: dict[str, Any] | None,
    ) -> dict[str, Any]:
        if not isinstance(ts, int | float) or isinstance(ts, bool) or not 0 <= ts < TS_MAX:
            raise StoreInputError(f"event ts={ts!r}: must be seconds since the epoch in [0, 2**33)")
        for name, value in (("kind", kind), ("severity", severity), ("source", source), ("text", text)):
            if not isinstance(value, str) or len(value) > MAX_TEXT or not _utf8(value):
                raise StoreInputError(f"event {name}={value!r:.80}: must be a string of at most {MAX_TEXT} chars")
        if data is not None and not isinstance(data, dict):
            raise StoreInputError(f"event data of type {type(data).__name__}: must be a dict or None")
        try:
            data_json = None if data is None else json.dumps(data, separators=(",", ":"), allow_nan=False)
            if data_json is not None and "\\u" in data_json:  # escaped non-ASCII: reject lone surrogates
                json.dumps(data, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError is a ValueError
        except (TypeError, ValueError) as err:
            raise StoreInputError(f"event kind={kind!r}: data is not JSON-serialisable: {err}") from err
        if data_json is not None and len(data_json) > MAX_TEXT:
            raise StoreInputError(f"event kind={kind!r}: data JSON of {len(data_json)} chars, at most {MAX_TEXT}")
        conn.execute(
            "INSERT INTO events(ts, kind, severity, source, text, data) VALUES (?, ?, ?, ?, ?, ?)",
            (float(ts), kind, severity, source, text, data_json),
        )
        if self._unsealed_since[_EVENTS] is None:
            self._unsealed_since[_EVENTS] = self._monotonic()
        return {"ts": float(ts), "kind": kind, "severity": severity, "source": source, "text": text, "data": data}

    # ----------------------------------------------------------------- sealing

    def seal(self, force: bool = False) -> int:
        """Turn unsealed items into outbox messages; returns how many messages were created.

        Per stream, in id order, batches of ``batch_size``; a partial batch only with ``force`` or when its
        stream has waited ``max_age_s`` of monotonic time. ONE transaction, committed with synchronous=FULL
        (module docstring) — but only when some stream has something to seal: the uplink calls this several
        times a second, and an idle agent must not write (and fsync) its SD card for nothing. The check reads
        the database (at most ``batch_size`` index entries a stream), not a flag, so data written by another
        connection is found too.
        """
        mono = self._monotonic()
        due: dict[str, bool] = {}  # stream -> seal a partial batch as well
        try:
            for stream, since in list(self._unsealed_since.items()):
                waiting = self._count_unsealed(stream, limit=self.batch_size)
                if not waiting:
                    self._unsealed_since[stream] = None
                    continue
                if since is None:
                    since = self._unsealed_since[stream] = -math.inf  # data we did not know of (another writer)
                partial = force or mono - since >= self.max_age_s
                if partial or waiting >= self.batch_size:
                    due[stream] = partial
        except sqlite3.Error as err:
            raise self._map_error(err, "seal") from err
        if not due:
            return 0
        now = self._clock()
        created = 0
        left: dict[str, bool] = {}
        while due:
            # Each transaction writes at most about half a WAL of payload (a backlog seals in several), so a
            # seal never needs more disk than the margin keeps; each is all-or-none for what it seals.
            n, remains, spent = self._write("seal", functools.partial(self._seal_due, due, now), full_sync=True)
            created += n
            left.update(remains)
            if not spent:
                break
            due = {stream: due[stream] for stream, more in remains.items() if more}
            self._wal_check()
        for stream, remains in left.items():  # after the commit: a rolled-back seal leaves the ages alone
            if not remains:
                self._unsealed_since[stream] = None
        if created:
            log.debug("store_sealed messages=%d", created)
        return created

    def _seal_due(
        self, due: dict[str, bool], now: float, conn: sqlite3.Connection
    ) -> tuple[int, dict[str, bool], bool]:
        """One seal transaction: (messages created, stream -> items left, the payload budget was spent)."""
        budget = [self._wal_budget // 2]
        made, remains = 0, {}
        for stream, partial in due.items():
            n, remains[stream] = self._seal_stream(stream, partial, now, budget)
            made += n
        return made, remains, budget[0] <= 0

    def _fetch(self, stream: str, cursor: int, limit: int) -> tuple[list[int], list[dict[str, Any]]]:
        conn = self.conn
        if stream == _EVENTS:
            rows = conn.execute(
                "SELECT id, ts, kind, severity, source, text, data FROM events WHERE id>? ORDER BY id LIMIT ?",
                (cursor, limit),
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
        conn = self.conn
        cursor = self._meta(f"sealed:{stream}")
        seq = self._meta(f"seq:{stream}")
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
            self._meta_set(f"sealed:{stream}", cursor)
            self._meta_set(f"seq:{stream}", seq)
        return created, left

    # ----------------------------------------------------------------- outbox

    def pending(self, limit: int, exclude: Collection[str] = ()) -> list[OutboxMessage]:
        """Up to ``limit`` outbox messages, oldest first, skipping the ids in ``exclude`` (in flight)."""
        if limit <= 0:
            return []
        rows = self._read(
            "SELECT msg_id, stream, seq, count, payload FROM outbox "
            "WHERE msg_id NOT IN (SELECT value FROM json_each(?)) ORDER BY rowid LIMIT ?",
            (json.dumps(list(exclude)), limit),
        )
        return [OutboxMessage(m, s, q, c, bytes(p)) for m, s, q, c, p in rows]

    def ack(self, msg_ids: Iterable[str]) -> int:
        """Forget acknowledged messages; unknown or repeated ids are ignored. Returns rows removed."""
        ids = list(dict.fromkeys(msg_ids))
        if not ids:
            return 0
        removed = 0
        for start in range(0, len(ids), _ACK_CHUNK):
            # Chunks, each its own transaction with its own counters: an ack of thousands needs no more WAL
            # (disk) than a chunk, and a full disk stops it between chunks with the counts true.
            removed += self._write("ack", functools.partial(self._ack_chunk, ids[start : start + _ACK_CHUNK]))
            self._wal_check()
        return removed

    def _ack_chunk(self, ids: list[str], conn: sqlite3.Connection) -> int:
        removed = readings = 0
        for msg_id in ids:
            row = conn.execute("DELETE FROM outbox WHERE msg_id=? RETURNING count", (msg_id,)).fetchone()
            if row is not None:
                removed += 1
                readings += row[0]
        if removed:
            self._meta_add("acked_messages", removed)
            self._meta_add("acked_readings", readings)
        return removed

    # ----------------------------------------------------------------- inspection

    def stats(self) -> StoreStats:
        try:
            meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
            rows = self.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            unsealed = sum(self._count_unsealed(s) for s in self._unsealed_since)
            msgs, items = self.conn.execute("SELECT count(*), coalesce(sum(count), 0) FROM outbox").fetchone()
            size = self._size()
            limit, free = self._limit(size)
        except sqlite3.Error as err:
            raise self._map_error(err, "stats") from err
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
            reserve_bytes=self._reserve_held(),
            reserve_released=int(meta.get("reserve_released", 0)) + self._unrecorded.get("reserve_released", 0),
            reserve_restored=int(meta.get("reserve_restored", 0)) + self._unrecorded.get("reserve_restored", 0),
        )

    # ----------------------------------------------------------------- the full policy

    def enforce_limit(self) -> list[dict[str, Any]]:
        """Apply the full policy (module docstring); returns the events raised (also stored).

        Every delete runs in bounded chunks, each its own transaction carrying its own counters, with the WAL
        checkpointed between chunks once it outgrows its budget: the policy never needs more free disk than
        a chunk, and a disk that fills mid-way stops it with what was done committed and counted.
        """
        raised: list[dict[str, Any]] = []
        size = self._size()
        limit, free = self._limit(size)
        if size >= limit * REARM_FRACTION:
            # The WAL can hold a large delete (an ack of many messages) that a checkpoint turns into free
            # pages: measure what is really held before deciding to alarm, prune or drop.
            self._checkpoint_or_recover()
            size = self._size()
            limit, free = self._limit(size)
        now = self._clock()
        alarmed = bool(self._meta("full_alarm"))
        figures = {"size_bytes": size, "limit_bytes": limit, "max_bytes": self.max_bytes, "disk_free_bytes": free}
        bound = f"its bound of {limit} bytes (max_bytes {self.max_bytes}, disk free {free})"
        if size >= limit * ALARM_FRACTION and not alarmed:
            pct = 100 * size / limit if limit > 0 else math.inf
            event = self._latch(1, now, "store_full_alarm", "warning", f"store at {pct:.0f} % of {bound}", figures)
            if event is not None:
                raised.append(event)
                log.warning("store_full_alarm size=%d limit=%d max=%d disk_free=%d path=%s", size, limit,
                            self.max_bytes, free, self.path)  # fmt: skip
        elif size < limit * REARM_FRACTION and alarmed:
            # Cleared once, with hysteresis: raised at 90 %, cleared below 80 %. An event, so the operator
            # who saw the alarm also sees it end.
            event = self._latch(
                0, now, "store_full_cleared", "info", f"store back to {100 * size / limit:.0f} % of {bound}", figures
            )
            if event is not None:
                raised.append(event)
                log.info("store_full_cleared size=%d limit=%d path=%s", size, limit, self.path)
        if size < limit:
            self._ensure_reserve()
            return raised
        target = int(limit * LOW_WATER_FRACTION)
        pruned, events = self._shrink_to(target, limit, now, figures, bound, lambda: self._size() >= limit)
        raised += events
        self._ensure_reserve()
        log.info("store_pruned history_rows=%d size=%d limit=%d max=%d", pruned, self._size(), limit, self.max_bytes)
        return raised

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
        raised: list[dict[str, Any]] = []
        pruned = self._shrink(target, "prune history", self._prune_chunk)
        self._vacuum()
        self._checkpoint_or_recover()
        if still_over():
            before = self._meta("dropped_messages"), self._meta("dropped_readings")

            def drop(conn: sqlite3.Connection) -> int:
                m, r = self._drop_chunk(target)
                if m or r:  # the counters move with the rows, in the chunk's own transaction
                    self._meta_add("dropped_messages", m)
                    self._meta_add("dropped_readings", r)
                return m + r

            self._shrink(target, "drop telemetry", drop)
            messages = self._meta("dropped_messages") - before[0]  # what the committed chunks counted
            dropped = self._meta("dropped_readings") - before[1]
            if messages or dropped:
                self._last_drop_event = self._monotonic()
                data = {"dropped_messages": messages, "dropped_readings": dropped} | figures
                text = (
                    f"store full: dropped the oldest telemetry, {messages} outbox messages and "
                    f"{dropped} readings in all, to stay within {bound}"
                )
                try:
                    raised.append(
                        self._write(
                            "telemetry_dropped",
                            lambda conn: self._insert_event(
                                conn, now, "telemetry_dropped", "error", "store", text, data
                            ),
                        )
                    )
                except StoreFullError as err:  # the counts are committed; the log line below carries the event
                    log.error("store_event_not_stored kind=telemetry_dropped error=%s", err)
                self._vacuum()
                self._checkpoint_or_recover()
                log.warning("store_telemetry_dropped messages=%d readings=%d size=%d limit=%d", messages, dropped,
                            self._size(), limit)  # fmt: skip
        return pruned, raised

    def _make_room(self, rows: list[tuple[Any, ...]]) -> None:
        """The disk refused a call the bound let through (it is larger than the room left): free room for it
        the policy's way, oldest telemetry first, instead of dropping the call's own (newer) telemetry.

        The call needs about its data size twice: once in the WAL, once more when the checkpoint copies it into
        the file. If it could not fit even in a store emptied of telemetry, nothing old is dropped for it.
        """
        need = self._need(rows)
        try:
            self._checkpoint_or_recover()
            size = self._size()
            limit, free = self._limit(size)
            target = limit - need
            if target <= 0:
                return
            figures = {"size_bytes": size, "limit_bytes": limit, "max_bytes": self.max_bytes, "disk_free_bytes": free}
            figures["room_for_readings"] = len(rows)
            bound = f"its bound of {limit} bytes (disk free {free}) with room for {len(rows)} new readings"
            self._shrink_to(target, limit, self._clock(), figures, bound, lambda: self._db_bytes() >= target)
        except StoreFullError as err:
            log.error("store_policy_failed path=%s error=%s", self.path, err)

    def _latch(
        self, value: int, ts: float, kind: str, severity: str, text: str, figures: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Set the full alarm latch with its event, in one transaction; None if the disk had no room for it
        (the latch is unchanged, so the next call tries again)."""

        def body(conn: sqlite3.Connection) -> dict[str, Any]:
            self._meta_set("full_alarm", value)
            return self._insert_event(conn, ts, kind, severity, "store", text, figures)

        try:
            return self._write(kind, body)
        except StoreFullError as err:
            log.error("store_event_not_stored kind=%s error=%s", kind, err)
            return None

    def _vacuum(self) -> None:
        """Give the file's free pages back to the file system, one WAL's worth of pages per transaction.

        ``incremental_vacuum`` frees ONE page per step, and ``execute()`` steps a statement that returns no
        row only once: it freed a single page per call (measured). ``executescript`` steps it to the end; it
        commits a pending transaction first, so this runs outside ``_tx``, as its own transaction. Moving pages
        writes them to the WAL, so a step is bounded and the WAL checkpointed between steps. Best effort: a
        disk too full for it leaves free pages in the file, which the next inserts reuse.
        """
        retried = False
        while True:
            try:
                if not self.conn.execute("PRAGMA freelist_count").fetchone()[0]:
                    return
                self.conn.executescript(f"PRAGMA incremental_vacuum({self._wal_pages});")
            except sqlite3.Error as err:
                mapped = self._map_error(err, "vacuum")
                if not isinstance(mapped, StoreFullError):
                    raise mapped from err
                if retried or not self._recover_full("vacuum"):
                    return
                retried = True
                continue
            self._wal_check()

    def _checkpoint(self) -> None:
        """Copy the WAL into the file and truncate it, so freed pages leave the disk and the size."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as err:
            raise self._map_error(err, "checkpoint") from err

    def _checkpoint_or_recover(self) -> None:
        try:
            self._checkpoint()
        except StoreFullError:
            self._recover_full("checkpoint")

    def _shrink(self, target: int, what: str, step: Callable[[sqlite3.Connection], int]) -> int:
        """Run ``step`` (deletes one chunk, returns rows deleted), each in its own transaction, until the data
        fits ``target`` or nothing is left. A full disk the recovery cannot help stops it (logged): the chunks
        done are committed.

        Measured without the WAL: it is truncated by the checkpoints between chunks.
        """
        total = 0
        while self._db_bytes() >= target:
            try:
                n = self._write(what, step)
            except StoreFullError as err:
                log.error("store_policy_stopped what=%s done=%d error=%s", what, total, err)
                break
            if not n:
                break
            total += n
            self._wal_check()
        return total

    def _prune_chunk(self, conn: sqlite3.Connection) -> int:
        t_cursor = self._meta("sealed:telemetry")
        e_cursor = self._meta("sealed:energy")
        return conn.execute(
            "DELETE FROM readings WHERE id IN (SELECT id FROM readings "
            "WHERE (stream='telemetry' AND id<=?) OR (stream='energy' AND id<=?) ORDER BY id LIMIT ?)",
            (t_cursor, e_cursor, _PRUNE_CHUNK),
        ).rowcount

    def _drop_chunk(self, target: int) -> tuple[int, int]:
        """Drop one chunk of the oldest telemetry: outbox messages first (they are older), then unsealed
        readings. Returns (messages, readings) dropped; the caller's transaction."""
        conn = self.conn
        messages = dropped = 0
        payload = 0
        while messages < _DROP_MESSAGES_CHUNK and payload < self._wal_budget // 2 and self._db_bytes() >= target:
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
        cursor = self._meta("sealed:telemetry")
        n = conn.execute(
            "DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE stream='telemetry' AND id>? "
            "ORDER BY id LIMIT ?)",
            (cursor, _PRUNE_CHUNK),
        ).rowcount
        return 0, n

    # ----------------------------------------------------------------- closing

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute("PRAGMA optimize")
        except sqlite3.Error as err:
            log.warning("store_optimize_failed path=%s error=%s", self.path, err)
        finally:
            conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStore:
    """The Store for the event loop: every call runs in ONE dedicated worker thread.

    One thread serialises the calls (the connection is used by nothing else), and the loop never waits
    on SQLite. Cancelling an awaiting coroutine stops neither a call running in the thread nor one queued
    for it: each completes (or rolls back) on its own, so the store is never left half-written and a write
    a cancelled caller had handed over still lands.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    @classmethod
    async def open(cls, *args: Any, **kwargs: Any) -> AsyncStore:
        """Open a Store (same arguments) in the worker thread: opening may migrate and must not block the loop."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        try:
            store = await asyncio.get_running_loop().run_in_executor(
                executor, functools.partial(Store, *args, **kwargs)
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self = cls.__new__(cls)
        self.store = store
        self._executor = executor
        return self

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError(f"store {self.store.path} is closed")
        # Shielded: cancelling the caller must not cancel a call still queued for the thread, or a writer
        # stopped on shutdown would lose the batch it had already taken off its queue. Queued calls run in
        # order, so such a write still lands before the final flush and before close.
        call = self._executor.submit(functools.partial(fn, *args))
        return await asyncio.shield(asyncio.wrap_future(call))

    async def add_readings(self, readings: Sequence[Reading]) -> None:
        await self._run(self.store.add_readings, list(readings))

    async def add_event(
        self, ts: float, kind: str, severity: str, source: str, text: str, data: dict[str, Any] | None = None
    ) -> None:
        await self._run(self.store.add_event, ts, kind, severity, source, text, data)

    async def seal(self, force: bool = False) -> int:
        return await self._run(self.store.seal, force)

    async def pending(self, limit: int, exclude: Collection[str] = ()) -> list[OutboxMessage]:
        return await self._run(self.store.pending, limit, tuple(exclude))

    async def ack(self, msg_ids: Iterable[str]) -> int:
        return await self._run(self.store.ack, list(msg_ids))

    async def stats(self) -> StoreStats:
        return await self._run(self.store.stats)

    async def enforce_limit(self) -> list[dict[str, Any]]:
        return await self._run(self.store.enforce_limit)

    async def aclose(self) -> None:
        """Close the store in its thread (after every call already queued), then stop the thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self.store.close)
        finally:
            executor.shutdown(wait=False)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
