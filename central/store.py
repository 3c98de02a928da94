"""Central's SQLite store: messages (deduplicated by msg_id), readings, events, control decisions, the agents'
states, and the commands central signed with what came of them.

Why one transaction per flush with ``INSERT OR IGNORE`` on ``messages.msg_id``: the message row is the
dedupe key, so a message seen twice (the agent resent it because our ack was lost) stores nothing new, and
its readings are written only when its message row was new — both or neither, because they commit together.
A msg_id seen again must be the same message (site, stream, seq); otherwise it is refused, never acked as a
duplicate (its agent would delete a message central never stored).
The ack goes out only after the commit returns (the caller's rule), so an acknowledged message is on disk.
Each message has its own SAVEPOINT inside the flush's transaction, so a message the store cannot hold is
refused alone and never costs the others their ack.

Several workers (each with its own connection, even in separate processes) share one file: WAL lets readers
run beside the writer and ``busy_timeout`` makes writers queue instead of failing with "database is locked".
Methods are blocking; callers in the event loop run them with ``asyncio.to_thread``.

Schema changes only ADD tables (``CREATE TABLE IF NOT EXISTS`` at every open): a db file written by an older
central opens as it is and gains the new tables, and an older central ignores them.

Commands (central/commands.py): ``command_seq`` holds the last sequence number given out per signing key. The
agent refuses a sequence not strictly above the last it saw from that key, and several central processes and
CLIs may sign with one key, so the number is allocated in one ``BEGIN IMMEDIATE`` transaction (an UPSERT with
``RETURNING``, SQLite >= 3.35): two allocators queue on the write lock and never get the same number. A command's
result is recorded once: the update applies only while the row has no result, so a second copy (the agent resends
until acked; the CLI and the ingest both see it) changes nothing.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from protocols.telemetry.commands import Result
from protocols.telemetry.schema import Batch, State

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    msg_id   TEXT PRIMARY KEY,
    site     TEXT NOT NULL,
    stream   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    count    INTEGER NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_site_stream_seq ON messages (site, stream, seq);
CREATE TABLE IF NOT EXISTS readings (
    msg_id  TEXT NOT NULL,
    site    TEXT NOT NULL,
    point   TEXT NOT NULL,
    ts      REAL NOT NULL,
    value,
    unit    TEXT NOT NULL,
    quality TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_site_point_ts ON readings (site, point, ts);
CREATE TABLE IF NOT EXISTS events (
    msg_id   TEXT NOT NULL,
    site     TEXT NOT NULL,
    ts       REAL NOT NULL,
    kind     TEXT NOT NULL,
    severity TEXT NOT NULL,
    source   TEXT NOT NULL,
    text     TEXT NOT NULL,
    data     TEXT
);
CREATE INDEX IF NOT EXISTS events_site_ts ON events (site, ts);
CREATE TABLE IF NOT EXISTS decisions (
    msg_id      TEXT NOT NULL,
    site        TEXT NOT NULL,
    ts          REAL NOT NULL,
    decision_id TEXT NOT NULL,
    function    TEXT NOT NULL,
    device      TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_site_ts ON decisions (site, ts);
CREATE INDEX IF NOT EXISTS decisions_site_id ON decisions (site, decision_id);
CREATE TABLE IF NOT EXISTS states (
    site   TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    ts     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS command_seq (
    key_id TEXT PRIMARY KEY,
    seq    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    site       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    target     TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    issued_at  REAL NOT NULL,
    expires_at REAL NOT NULL,
    message    TEXT NOT NULL,
    sent_at    REAL,
    status     TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    result     TEXT,
    result_at  REAL
);
CREATE INDEX IF NOT EXISTS commands_site_issued ON commands (site, issued_at);
CREATE TABLE IF NOT EXISTS intervals (
    site      TEXT NOT NULL,
    meter     TEXT NOT NULL,
    register  TEXT NOT NULL,
    start     INTEGER NOT NULL,
    version   INTEGER NOT NULL,
    end_ts    INTEGER NOT NULL,
    channel   TEXT NOT NULL,
    value     REAL,
    unit      TEXT NOT NULL,
    quality   TEXT NOT NULL,
    method    INTEGER,
    flags     TEXT NOT NULL,
    reads     TEXT NOT NULL,
    meter_id  TEXT,
    reg_start REAL,
    reg_end   REAL,
    read_min  REAL,
    read_max  REAL,
    msg_id    TEXT NOT NULL,
    received  REAL NOT NULL,
    read_scale REAL,
    modulus   REAL,
    PRIMARY KEY (site, meter, register, start, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS interval_conflicts (
    site     TEXT NOT NULL,
    meter    TEXT NOT NULL,
    register TEXT NOT NULL,
    start    INTEGER NOT NULL,
    version  INTEGER NOT NULL,
    msg_id   TEXT NOT NULL,
    received REAL NOT NULL,
    item     TEXT NOT NULL
);
"""
COMMAND_STATUSES = ("sent", "applied", "refused", "failed")
# Forecasts (central/forecast/, docs/forecast.md): one row per feeder, kind, horizon, issue time and interval.
# Read by dispatch (``forecasts_covering``) and the report (plain SQL): keep the columns as they are. Times are unix seconds UTC; start/end_ts bound
# the 15-minute interval; kind is load_p | load_q | pv, horizon intraday | day-ahead, unit kW | kvar.
FORECASTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS forecasts (
    feeder  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    horizon TEXT NOT NULL,
    issued  INTEGER NOT NULL,
    start   INTEGER NOT NULL,
    end_ts  INTEGER NOT NULL,
    p10     REAL,
    p50     REAL,
    p90     REAL,
    unit    TEXT NOT NULL,
    model   TEXT NOT NULL,
    PRIMARY KEY (feeder, kind, horizon, issued, start)
);
"""
FORECAST_COLUMNS = ("feeder", "kind", "horizon", "issued", "start", "end_ts", "p10", "p50", "p90", "unit", "model")
# Dispatch's rounds (central/dispatch/runs.py, docs/report.md "Energy cost"): one row per round, the plan's cost and
# the no-dispatch evaluation's, over the horizon and for its first interval (the one sent). issued: unix s UTC.
DISPATCH_RUNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS dispatch_runs (
    feeder                 TEXT NOT NULL,
    issued                 REAL NOT NULL,
    horizon_start          INTEGER NOT NULL,
    interval_s             INTEGER NOT NULL,
    intervals              INTEGER NOT NULL,
    cost                   REAL NOT NULL,
    cost_no_dispatch       REAL NOT NULL,
    first_cost             REAL NOT NULL,
    first_cost_no_dispatch REAL NOT NULL,
    PRIMARY KEY (feeder, issued)
);
"""
DISPATCH_RUN_COLUMNS = ("feeder", "issued", "horizon_start", "interval_s", "intervals", "cost", "cost_no_dispatch",
                        "first_cost", "first_cost_no_dispatch")  # fmt: skip

_COMMAND_COLUMNS = ("command_id", "site", "kind", "target", "key_id", "seq", "issued_at", "expires_at", "message",
                    "sent_at", "status", "reason", "result", "result_at")  # fmt: skip
EVENT_TABLE_STREAMS = ("events", "results", "audit")  # streams whose items go to the events table

_GAPS_SQL = """
SELECT prev + 1, seq - 1 FROM (
    SELECT seq, LAG(seq, 1, 0) OVER (ORDER BY seq) AS prev
    FROM (SELECT DISTINCT seq FROM messages WHERE site = ? AND stream = ?)
) WHERE seq - prev > 1 ORDER BY seq
"""

_REUSED_SQL = """
SELECT seq FROM messages WHERE site = ? AND stream = ? GROUP BY seq HAVING COUNT(*) > 1 ORDER BY seq
"""

CACHE_KIB = 65536  # page cache per connection

# The columns of an intervals row, in INSERT order; the key is (site, meter, register, start, version).
INTERVAL_COLUMNS = ("site", "meter", "register", "start", "version", "end_ts", "channel", "value", "unit", "quality",
                    "method", "flags", "reads", "meter_id", "reg_start", "reg_end", "read_min", "read_max", "msg_id",
                    "received", "read_scale", "modulus")  # fmt: skip
# Columns added to a table after its first release: (table, column, type), added to older files at open.
_ADDED_COLUMNS = (("intervals", "read_scale", "REAL"), ("intervals", "modulus", "REAL"))
# What must be equal for a second copy of (site, meter, register, start, version) to be the same interval.
_INTERVAL_CONTENT = ("end_ts", "channel", "value", "unit", "quality", "method", "flags", "reads", "meter_id")


def add_missing_columns(db: sqlite3.Connection) -> None:
    """Give a file made before a column existed that column (NULL in the rows it holds)."""
    for table, column, kind in _ADDED_COLUMNS:
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def register_at(reads: Sequence[Sequence[float]], t: float) -> float | None:
    """The register at ``t``, linear between the two reads around it (one read at ``t`` exactly is that read);
    None when the reads do not bracket ``t`` (the read before start and the read after end are on the wire for
    this: protocols/telemetry/intervals.py)."""
    before = after = None
    for ts, raw in reads:
        if ts <= t and (before is None or ts >= before[0]):
            before = (ts, raw)
        if ts >= t and (after is None or ts < after[0]):
            after = (ts, raw)
    if before is None or after is None:
        return None
    if after[0] == before[0]:
        return float(before[1])
    return float(before[1] + (after[1] - before[1]) * (t - before[0]) / (after[0] - before[0]))


def interval_row(site: str, item: Mapping[str, Any], msg_id: str, received: float) -> tuple[Any, ...]:
    """One item of the ``intervals`` stream as an ``intervals`` row (INTERVAL_COLUMNS).

    Times become integers (they are clock-aligned), the value a float (so 2 and 2.0 are the same content), flags
    and reads compact JSON. The register at the interval's start and end (interpolated from its reads) and the
    span of its reads' timestamps are kept as columns: the sum, clock and gap rules of central/settlement/vee.py
    read them without parsing JSON.
    """
    reads = [(float(ts), float(raw)) for ts, raw in item["reads"]]
    start, end = int(item["start"]), int(item["end"])
    value = item.get("value")
    return (
        site, item["meter"], item["register"], start, int(item["version"]), end, item["channel"],
        None if value is None else float(value), item["unit"], item["quality"], item.get("method"),
        json.dumps(list(item["flags"]), separators=(",", ":")), json.dumps(reads, separators=(",", ":")),
        item.get("meter_id"), register_at(reads, start), register_at(reads, end),
        min((r[0] for r in reads), default=None), max((r[0] for r in reads), default=None), msg_id, received,
        item.get("read_scale"), item.get("modulus"),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class IntervalConflict:
    """A second copy of an interval version whose content differs from the one stored: refused, recorded in
    ``interval_conflicts`` and logged; the stored version stays."""

    site: str
    meter: str
    register: str
    start: int
    version: int
    msg_id: str
    differs: tuple[str, ...]


class CentralStoreError(Exception):
    """The store could not be opened or written; the cause is kept."""


class MessageRefused(CentralStoreError):
    """One message that could not be stored (its values, not the database, were the problem).

    Returned by ``store_batches`` in that message's place, never raised: the rest of its flush is stored.
    """

    def __init__(self, batch: Batch, cause: BaseException) -> None:
        super().__init__(f"message {batch.msg_id!r:.140} of site {batch.site} refused by the store: {cause!r:.300}")
        self.msg_id = batch.msg_id
        self.site = batch.site
        self.__cause__ = cause


# Errors tied to one message's values: Python's conversions (float() of a huge int, a value SQLite cannot bind,
# json.dumps of odd data) and SQLite's complaints about a row. OperationalError (locked, disk full, I/O) and
# other DatabaseErrors concern the whole transaction and are not in this list.
_MESSAGE_ERRORS = (
    OverflowError,
    ValueError,
    TypeError,
    KeyError,
    RecursionError,
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
)


@dataclass(frozen=True, slots=True)
class VerifiedResult:
    """A command result whose signature checked with its site's agent key, with the signed data as received."""

    result: Result
    data: Mapping[str, Any]


class IntervalVersions:
    """What both stores (this one and central/store_pg.py) do alike with interval versions: a version already
    stored with the same content is a replay and stores nothing; with other content it is refused alone (the first
    copy stays, versions are never overwritten), recorded in ``interval_conflicts`` and reported by
    :meth:`take_conflicts`: the rest of the message is stored and acked, because refusing the whole message would
    leave it in its agent's outbox for ever. A correction is a new version.

    A store gives ``_insert_intervals`` (insert the rows whose key is new, return how many it inserted) and its
    driver's placeholder; both drivers' connections have ``execute(sql, args)`` returning a cursor.
    """

    _PARAM = "?"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conflicts: list[IntervalConflict] = []

    def _insert_intervals(self, db: Any, rows: list[tuple[Any, ...]]) -> int:
        raise NotImplementedError

    def _store_intervals(self, db: Any, b: Batch, received: float) -> None:
        """The items of an ``intervals`` message, keyed by (site, meter, register, start, version)."""
        rows = [interval_row(b.site, i, b.msg_id, received) for i in b.items]
        if self._insert_intervals(db, rows) == len(rows):
            return
        # Some keys were there already (or twice in this message): compare each with what is stored.
        p = self._PARAM
        content = [INTERVAL_COLUMNS.index(c) for c in _INTERVAL_CONTENT]
        seen: set[tuple[Any, ...]] = set()
        for row, item in zip(rows, b.items, strict=True):
            key = row[:5]
            stored = db.execute(
                f"SELECT {', '.join(_INTERVAL_CONTENT)}, msg_id FROM intervals "
                f"WHERE site = {p} AND meter = {p} AND register = {p} AND start = {p} AND version = {p}",
                key,
            ).fetchone()
            if stored is None or (stored[-1] == b.msg_id and key not in seen):
                seen.add(key)
                continue
            differs = tuple(c for c, i, v in zip(_INTERVAL_CONTENT, content, stored, strict=False) if row[i] != v)
            seen.add(key)
            if not differs:
                continue
            db.execute(
                "INSERT INTO interval_conflicts (site, meter, register, start, version, msg_id, received, item) "
                f"VALUES ({', '.join([p] * 8)})",
                (*key, b.msg_id, received, json.dumps(item, allow_nan=False)),
            )
            self._conflicts.append(IntervalConflict(*key, b.msg_id, differs))

    def take_conflicts(self) -> list[IntervalConflict]:
        """The interval conflicts found since the last call (the ingest logs them after its commit)."""
        with self._lock:
            found, self._conflicts = self._conflicts, []
        return found


class CentralStore(IntervalVersions):
    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 30_000) -> None:
        super().__init__()
        self.path = Path(path)
        # Two workers opening a new file at once: switching it to WAL needs the file to itself, and SQLite answers
        # "database is locked" at once there rather than waiting on busy_timeout (10 % of concurrent first opens
        # failed, and one worker failing stopped central). So the setup is retried until busy_timeout has passed.
        deadline = time.monotonic() + busy_timeout_ms / 1000
        while True:
            try:
                self._db = self._open(busy_timeout_ms)
                break
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err) or time.monotonic() >= deadline:
                    raise CentralStoreError(f"cannot open central store {self.path}: {err}") from err
                time.sleep(random.uniform(0.01, 0.05))
            except sqlite3.Error as err:
                raise CentralStoreError(f"cannot open central store {self.path}: {err}") from err
            except OSError as err:
                raise CentralStoreError(f"cannot open central store {self.path}: {err}") from err

    def _open(self, busy_timeout_ms: int) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: transactions are explicit (BEGIN IMMEDIATE takes the write lock up front, so
        # two writers queue on busy_timeout instead of deadlocking on a read->write upgrade)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # an acked message must survive a power cut
            # The (site, point, ts) index takes inserts all over the tree (every scan touches every point):
            # with SQLite's default 2 MB page cache each flush re-reads index pages; 64 MB keeps them hot
            # (benchmarks/outbox.py drain: the store is central's largest cost).
            db.execute(f"PRAGMA cache_size = {-CACHE_KIB}")
            db.executescript(SCHEMA)
            db.executescript(FORECASTS_SCHEMA)
            db.executescript(DISPATCH_RUNS_SCHEMA)
            add_missing_columns(db)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def store_batches(
        self,
        batches: Sequence[Batch],
        received: float,
        results: Mapping[str, Sequence[VerifiedResult]] | None = None,
    ) -> list[bool | MessageRefused]:
        """Store every batch in ONE transaction; per batch: True if new, False if a duplicate msg_id, or a
        MessageRefused (returned, not raised) when that message alone could not be stored.

        Each message is written under its own SAVEPOINT: a message whose values SQLite cannot hold (an integer
        beyond 64 bits, a lone surrogate in a string, ...) is rolled back alone and the rest of the flush is
        committed, so one bad publisher cannot hold back everyone else's acks. Raises CentralStoreError, with
        everything rolled back, when the transaction itself fails (disk full, database locked, I/O error).

        ``results`` maps the msg_id of a ``results`` message to the results in it that verified: each is recorded
        on its command in the same savepoint as its message (once: see :meth:`record_result`).
        """
        out: list[bool | MessageRefused] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for b in batches:
                    out.append(self._store_one(b, received, (results or {}).get(b.msg_id, ())))
                self._db.execute("COMMIT")
            except Exception as err:  # any failure here is the transaction's: nothing of it may stay half done
                rollback = self._rollback()
                raise CentralStoreError(
                    f"cannot store {len(batches)} message(s) in {self.path}: {err!r}{rollback}"
                ) from err
        return out

    def _store_one(self, b: Batch, received: float, verified: Sequence[VerifiedResult] = ()) -> bool | MessageRefused:
        """One message under a savepoint; errors of the connection or the file propagate to the caller."""
        self._db.execute("SAVEPOINT msg")
        conflicts = len(self._conflicts)
        try:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO messages (msg_id, site, stream, seq, count, received) VALUES (?, ?, ?, ?, ?, ?)",
                (b.msg_id, b.site, b.stream, b.seq, len(b.items), received),
            )
            new = cur.rowcount == 1
            if not new:
                self._check_same_message(b)
            if new and b.stream in EVENT_TABLE_STREAMS:
                self._db.executemany(
                    "INSERT INTO events (msg_id, site, ts, kind, severity, source, text, data) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(b.msg_id, b.site, float(i["ts"]), i["kind"], i["severity"], i["source"], i["text"],
                      None if i.get("data") is None else json.dumps(i["data"], allow_nan=False))
                     for i in b.items],
                )  # fmt: skip
            elif new and b.stream == "control":
                # A decision is stored whole (data) and by the fields an operator filters on. A decision sent
                # again in another message (the agent resealed it) is a second row with the same decision_id.
                self._db.executemany(
                    "INSERT INTO decisions (msg_id, site, ts, decision_id, function, device, verdict, outcome, data) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(b.msg_id, b.site, float(i["ts"]), i["data"]["id"], i["data"]["function"], i["data"]["device"],
                      i["data"]["verdict"], i["data"]["outcome"], json.dumps(i["data"], allow_nan=False))
                     for i in b.items],
                )  # fmt: skip
            elif new and b.stream == "intervals":
                self._store_intervals(self._db, b, received)
            elif new:
                self._db.executemany(
                    "INSERT INTO readings (msg_id, site, point, ts, value, unit, quality) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(b.msg_id, b.site, i["point"], float(i["ts"]), i.get("value"), i["unit"], i["quality"])
                     for i in b.items],
                )  # fmt: skip
            for v in verified:
                self._record_result(b.site, v, received)
        except _MESSAGE_ERRORS as err:
            # this message's values, not the database: undo its rows only and go on with the others
            self._db.execute("ROLLBACK TO msg")
            self._db.execute("RELEASE msg")
            del self._conflicts[conflicts:]
            return MessageRefused(b, err)
        self._db.execute("RELEASE msg")
        return new

    def _insert_intervals(self, db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
        cols = ", ".join(INTERVAL_COLUMNS)
        cur = db.executemany(
            f"INSERT OR IGNORE INTO intervals ({cols}) VALUES ({', '.join('?' * len(INTERVAL_COLUMNS))})", rows
        )
        return cur.rowcount

    def _check_same_message(self, b: Batch) -> None:
        """A msg_id already stored must be the same message (site, stream, seq) to count as a duplicate.

        Acking it otherwise would make its agent delete a message central never stored: a msg_id reused by
        another site (a cloned SD card, a hostile or buggy agent) or for another seq is refused instead (not
        acked, the agent keeps it and an operator sees the log).
        """
        row = self._db.execute("SELECT site, stream, seq FROM messages WHERE msg_id = ?", (b.msg_id,)).fetchone()
        if row is not None and tuple(row) != (b.site, b.stream, b.seq):
            raise ValueError(
                f"msg_id already stored for site={row[0]} stream={row[1]} seq={row[2]}, "
                f"not site={b.site} stream={b.stream} seq={b.seq}"
            )

    def _rollback(self) -> str:
        """Roll back an open transaction; returns "" or the reason the rollback failed, for the error text."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error as err:  # the connection is gone: SQLite has rolled back or will on reopen
            return f" (rollback failed too: {err!r})"
        return ""

    # ---- commands ----------------------------------------------------------------------------------------------

    def next_command_seq(self, key_id: str) -> int:
        """The next sequence number of ``key_id``: 1 first, then strictly growing, whoever else allocates."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                (seq,) = self._db.execute(
                    "INSERT INTO command_seq (key_id, seq) VALUES (?, 1) "
                    "ON CONFLICT (key_id) DO UPDATE SET seq = seq + 1 RETURNING seq",
                    (key_id,),
                ).fetchone()
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                rollback = self._rollback()
                raise CentralStoreError(
                    f"cannot allocate a sequence for key {key_id} in {self.path}: {err}{rollback}"
                ) from err
        return int(seq)

    def add_command(self, row: Mapping[str, Any]) -> None:
        """Record a signed command before it is published (status ``sent``, ``sent_at`` set once the broker has it)."""
        cols = [c for c in _COMMAND_COLUMNS if c in row]
        self._write(f"INSERT INTO commands ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    tuple(row[c] for c in cols))  # fmt: skip

    def command_sent(self, command_id: str, sent_at: float) -> None:
        self._write("UPDATE commands SET sent_at = ? WHERE command_id = ?", (sent_at, command_id))

    def record_result(self, site: str, verified: VerifiedResult, received: float) -> bool:
        """Record a verified result on its command; True when this call recorded it, False when the command is
        unknown here, belongs to another site or key, or already has its result."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                done = self._record_result(site, verified, received)
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                rollback = self._rollback()
                raise CentralStoreError(f"cannot record a result in {self.path}: {err}{rollback}") from err
        return done

    def _record_result(self, site: str, v: VerifiedResult, received: float) -> bool:
        r = v.result
        if r.site != site:  # a site answers for its own commands only
            return False
        cur = self._db.execute(
            "UPDATE commands SET status = ?, reason = ?, result = ?, result_at = ? "
            "WHERE command_id = ? AND site = ? AND key_id = ? AND seq = ? AND result IS NULL",
            (r.status, r.reason, json.dumps(dict(v.data), allow_nan=False), received, r.command_id, site, r.key_id,
             r.seq),
        )  # fmt: skip
        return cur.rowcount == 1

    def command(self, command_id: str) -> dict[str, Any] | None:
        with self._lock:
            cur = self._db.execute(f"SELECT {', '.join(_COMMAND_COLUMNS)} FROM commands WHERE command_id = ?",
                                   (command_id,))  # fmt: skip
            row = cur.fetchone()
        return None if row is None else dict(zip(_COMMAND_COLUMNS, row, strict=True))

    def commands(self, site: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The latest ``limit`` commands (of ``site``), oldest first."""
        where, args = ("WHERE site = ?", (site,)) if site is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COMMAND_COLUMNS)} FROM commands {where} ORDER BY issued_at DESC, seq DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [dict(zip(_COMMAND_COLUMNS, r, strict=True)) for r in reversed(rows)]

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                rollback = self._rollback()
                raise CentralStoreError(f"cannot write commands in {self.path}: {err}{rollback}") from err

    def store_batch(self, batch: Batch, received: float) -> bool:
        return self.store_batches([batch], received)[0]

    def write_forecasts(self, rows: Sequence[Sequence[Any]]) -> None:
        """Store forecast rows (FORECAST_COLUMNS order) in one transaction; a row with the same key replaces."""
        sql = f"INSERT OR REPLACE INTO forecasts ({', '.join(FORECAST_COLUMNS)}) VALUES ({', '.join('?' * 11)})"
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                rollback = self._rollback()
                raise CentralStoreError(f"cannot write forecasts in {self.path}: {err}{rollback}") from err

    def forecasts(self, feeder: str, kind: str, horizon: str, issued: int | None = None) -> list[dict[str, Any]]:
        """One issue's rows in time order: ``issued``, else the latest issue of (feeder, kind, horizon)."""
        key = (feeder, kind, horizon)
        where = "feeder = ? AND kind = ? AND horizon = ?"
        with self._lock:
            if issued is None:
                row = self._db.execute(f"SELECT MAX(issued) FROM forecasts WHERE {where}", key).fetchone()
                issued = row[0] if row else None
            rows = self._db.execute(
                f"SELECT {', '.join(FORECAST_COLUMNS)} FROM forecasts WHERE {where} AND issued = ? ORDER BY start",
                (*key, issued),
            ).fetchall()
        return [dict(zip(FORECAST_COLUMNS, r, strict=True)) for r in rows]

    def forecasts_covering(self, feeder: str, t0: int, t1: int, issued_by: int) -> list[dict[str, Any]]:
        """Every forecast row of ``feeder`` issued at or before ``issued_by`` whose [start, end_ts) overlaps
        [t0, t1), every kind and horizon, ordered by (issued, kind, horizon, start): dispatch picks from these."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(FORECAST_COLUMNS)} FROM forecasts WHERE feeder = ? AND issued <= ? AND end_ts > ? "
                "AND start < ? ORDER BY issued, kind, horizon, start",
                (feeder, issued_by, t0, t1),
            ).fetchall()
        return [dict(zip(FORECAST_COLUMNS, r, strict=True)) for r in rows]

    def record_dispatch_run(self, row: Sequence[Any]) -> None:
        """One dispatch round (DISPATCH_RUN_COLUMNS order); a second row of the same (feeder, issued) replaces it."""
        sql = f"INSERT OR REPLACE INTO dispatch_runs ({', '.join(DISPATCH_RUN_COLUMNS)}) VALUES " \
              f"({', '.join('?' * len(DISPATCH_RUN_COLUMNS))})"  # fmt: skip
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(sql, tuple(row))
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                rollback = self._rollback()
                raise CentralStoreError(f"cannot write dispatch_runs in {self.path}: {err}{rollback}") from err

    def dispatch_runs(self, feeder: str, t0: int, t1: int) -> list[dict[str, Any]]:
        """The rounds of ``feeder`` whose first interval starts in [t0, t1), in the order they were issued."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(DISPATCH_RUN_COLUMNS)} FROM dispatch_runs WHERE feeder = ? AND horizon_start >= ? "
                "AND horizon_start < ? ORDER BY issued",
                (feeder, t0, t1),
            ).fetchall()
        return [dict(zip(DISPATCH_RUN_COLUMNS, r, strict=True)) for r in rows]

    def point_readings(self, site: str, point: str, since: float, until: float) -> list[tuple[float, Any, str]]:
        """(ts, value, unit) of one point's readings with since <= ts < until, in time order (the forecaster's input)."""
        with self._lock:
            return self._db.execute(
                "SELECT ts, value, unit FROM readings WHERE site = ? AND point = ? AND ts >= ? AND ts < ? ORDER BY ts",
                (site, point, since, until),
            ).fetchall()

    def set_states(self, states: Iterable[State]) -> None:
        """The last state received per site wins.

        Not the highest ``ts``: the "offline" last will is built when the agent's session is configured, so
        its ts is older than the "online" it follows. The broker keeps only the latest retained state, so a
        replay on reconnect is the current one anyway.
        """
        rows = [(s.site, s.status, s.ts) for s in states]
        if not rows:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO states (site, status, ts) VALUES (?, ?, ?) ON CONFLICT (site) DO UPDATE SET "
                    "status = excluded.status, ts = excluded.ts",
                    rows,
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise CentralStoreError(f"cannot store states in {self.path}: {err}") from err

    def gaps(self, site: str, stream: str) -> list[tuple[int, int]]:
        """Missing sequence ranges (first, last), inclusive, between 1 and the highest seq stored."""
        with self._lock:
            return [(int(a), int(b)) for a, b in self._db.execute(_GAPS_SQL, (site, stream))]

    def reused_seqs(self, site: str, stream: str) -> list[tuple[int, int]]:
        """Ranges (first, last), inclusive, of sequence numbers stored under more than one msg_id.

        An agent whose store was replaced or erased starts its sequence again at 1 with new message ids: central
        stores those messages (they are new data), but ``gaps`` cannot see a hole below the highest seq of the
        earlier run. This shows where that happened.
        """
        with self._lock:
            seqs = [int(r[0]) for r in self._db.execute(_REUSED_SQL, (site, stream))]
        ranges: list[tuple[int, int]] = []
        for seq in seqs:
            if ranges and ranges[-1][1] == seq - 1:
                ranges[-1] = (ranges[-1][0], seq)
            else:
                ranges.append((seq, seq))
        return ranges

    def streams(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._db.execute("SELECT DISTINCT site, stream FROM messages ORDER BY site, stream"))

    def state(self, site: str) -> tuple[str, float] | None:
        with self._lock:
            row = self._db.execute("SELECT status, ts FROM states WHERE site = ?", (site,)).fetchone()
        return None if row is None else (row[0], row[1])

    def count(self, table: str) -> int:
        tables = ("messages", "readings", "events", "decisions", "states", "commands", "intervals",
                  "interval_conflicts")  # fmt: skip
        if table not in tables:
            raise ValueError(f"table {table!r}: one of {', '.join(tables)}")
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def msg_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT msg_id FROM messages ORDER BY site, stream, seq")]


# ---- one interface, two backends ---------------------------------------------------------------------------------


class Store(Protocol):
    """What central's ingest, its commands and its CLI need of a store; CentralStore (SQLite, this module) and
    PgCentralStore (PostgreSQL, central/store_pg.py) implement it with the same guarantees."""

    path: Any  # what error texts and logs name: the file, or the URL without its password

    def store_batches(
        self,
        batches: Sequence[Batch],
        received: float,
        results: Mapping[str, Sequence[VerifiedResult]] | None = None,
    ) -> list[bool | MessageRefused]: ...
    def store_batch(self, batch: Batch, received: float) -> bool | MessageRefused: ...
    def take_conflicts(self) -> list[IntervalConflict]: ...
    def set_states(self, states: Iterable[State]) -> None: ...
    def next_command_seq(self, key_id: str) -> int: ...
    def add_command(self, row: Mapping[str, Any]) -> None: ...
    def command_sent(self, command_id: str, sent_at: float) -> None: ...
    def record_result(self, site: str, verified: VerifiedResult, received: float) -> bool: ...
    def command(self, command_id: str) -> dict[str, Any] | None: ...
    def commands(self, site: str | None = None, limit: int = 1000) -> list[dict[str, Any]]: ...
    def gaps(self, site: str, stream: str) -> list[tuple[int, int]]: ...
    def reused_seqs(self, site: str, stream: str) -> list[tuple[int, int]]: ...
    def streams(self) -> list[tuple[str, str]]: ...
    def state(self, site: str) -> tuple[str, float] | None: ...
    def count(self, table: str) -> int: ...
    def msg_ids(self) -> list[str]: ...
    def write_forecasts(self, rows: Sequence[Sequence[Any]]) -> None: ...
    def forecasts(self, feeder: str, kind: str, horizon: str, issued: int | None = None) -> list[dict[str, Any]]: ...
    def forecasts_covering(self, feeder: str, t0: int, t1: int, issued_by: int) -> list[dict[str, Any]]: ...
    def record_dispatch_run(self, row: Sequence[Any]) -> None: ...
    def dispatch_runs(self, feeder: str, t0: int, t1: int) -> list[dict[str, Any]]: ...
    def point_readings(self, site: str, point: str, since: float, until: float) -> list[tuple[float, Any, str]]: ...
    def close(self) -> None: ...


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(target: str | Path) -> Store:
    """The store ``target`` names: a ``postgresql://`` URL opens PostgreSQL, anything else is a SQLite file."""
    if isinstance(target, str) and target.startswith(POSTGRES_SCHEMES):
        from central.store_pg import PgCentralStore  # psycopg is loaded only by a central that uses it

        return PgCentralStore(target)
    return CentralStore(target)
