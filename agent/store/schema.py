"""The store's file: opened, checked to be a GridEdge store, set up (WAL and its pragmas) and migrated.

See docs/store.md ("The file"): a file that is not ours is refused before anything is written to it.
"""

from __future__ import annotations

import importlib
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from agent.points import Stream
from agent.store.errors import CORRUPT_ADVICE, StoreCorruptError, StoreError


def _import_sqlite_utils() -> ModuleType:
    """sqlite-utils, imported without numpy and pandas.

    sqlite-utils imports both whenever they are installed, only to map their scalar types to column types; the
    store writes none. numpy is installed for the PQ worker, a process of its own (agent/pq/worker.py), and in the
    agent's process it would be about 12 MB of resident memory for nothing (benchmarks/memory.py). A process that
    has imported them already keeps them as they are.
    """
    hidden = [m for m in ("numpy", "pandas") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        return importlib.import_module("sqlite_utils")
    finally:
        for m in hidden:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]


sqlite_utils = _import_sqlite_utils()

SCHEMA_VERSION = 4  # in PRAGMA user_version
APPLICATION_ID = 0x47454447  # "GEDG" in PRAGMA application_id: marks a file as a GridEdge store
TABLES = ("events", "meta", "outbox", "readings")  # what a file of schema version 1 or later holds
CONTROL_TABLES = ("control_flags", "control_ops")  # added by schema version 2: the safety envelope's state
# added by schema version 3: the signed downlink's state (agent/store/commandstate.py) and the audit log
COMMAND_TABLES = ("audit", "command_keys", "command_log", "command_overrides", "command_seq")
METERING_TABLES = ("intervals", "metering_state")  # added by schema version 4: interval energy (agent/metering)
READING_STREAMS = (Stream.TELEMETRY.value, Stream.ENERGY.value)
EVENTS = "events"
CONTROL = "control"  # control decisions: rows of ``events`` on their own stream (schema version 2)
RESULTS = "results"  # command results, signed by the agent (schema version 3)
AUDIT = "audit"  # the audit log's entries, as they are appended (schema version 3)
EVENT_STREAMS = (EVENTS, CONTROL, RESULTS, AUDIT)  # streams whose items are rows of ``events``
INTERVALS = "intervals"  # interval energy: rows of ``intervals`` (schema version 4), never dropped
STREAMS = (*READING_STREAMS, *EVENT_STREAMS, INTERVALS)  # each has its seq and sealed cursor in meta
COUNTERS = ("readings_taken", "acked_messages", "acked_readings", "dropped_readings", "dropped_messages")
# Counters added after schema 1 was released: absent from older files until first counted (upserted).
LATE_COUNTERS = ("reserve_released", "reserve_restored")


@dataclass(frozen=True, slots=True)
class Layout:
    """What opening the file found and chose."""

    version: int  # the schema version the file had (0: new)
    page_size: int
    wal_pages: int  # wal_autocheckpoint; journal_size_limit is this many pages


def connect(path: Path) -> sqlite3.Connection:
    """Make the store's folder and open the connection; any failure is a StoreError naming the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) in StoreDb.tx.
        # check_same_thread=False: AsyncStore opens here and serialises every call on its one worker.
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    except (OSError, sqlite3.Error) as err:
        raise StoreError(f"cannot open store {path}: {err}") from err


def open_schema(conn: sqlite3.Connection, path: Path, sync: str, cap_bytes: int) -> Layout:
    """Check the file is ours, set WAL mode and the pragmas, migrate to SCHEMA_VERSION.

    ``cap_bytes`` is the most the store may hold (``max_bytes``, or the file system's size when smaller):
    the WAL is kept small relative to it. SQLite errors are left to the caller, which closes the connection.
    """
    # Before anything is written: a file that is not ours (another program's database, central's store,
    # a copy of something else) is refused, not quietly given our tables and switched to WAL.
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    check_ours(conn, path, version)
    # auto_vacuum must be chosen before the first table exists; on an existing file this is a no-op.
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"store {path}: the file system refused WAL mode (journal_mode={mode})")
    conn.execute(f"PRAGMA synchronous={sync}")
    # Debian builds SQLite with SECURE_DELETE: every page a delete frees would be zeroed and written through
    # the WAL, so freeing room would cost as much disk as the data freed. FAST zeroes deleted content only
    # where that costs no extra I/O (inside b-tree pages); freed pages are not rewritten.
    conn.execute("PRAGMA secure_delete=FAST")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    # Keep the WAL small relative to what the store may hold: it counts in the measured size, and the room
    # kept free on the disk (Disk.margin) is a few WALs.
    wal_pages = max(16, min(1000, cap_bytes // page_size // 32))
    conn.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
    conn.execute(f"PRAGMA journal_size_limit={wal_pages * page_size}")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store {path} has schema version {version}; this agent knows up to {SCHEMA_VERSION} "
            "(it was written by a newer agent)"
        )
    if version < SCHEMA_VERSION:
        migrate(conn, version)
    return Layout(version=version, page_size=page_size, wal_pages=wal_pages)


def check_ours(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Refuse a file that is not a GridEdge store (StoreCorruptError saying what it is and what to do)."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    where = f"store {path}"
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
    missing = [t for t in TABLES if t not in tables] + [t for t in CONTROL_TABLES if version >= 2 and t not in tables]
    missing += [t for t in COMMAND_TABLES if version >= 3 and t not in tables]
    missing += [t for t in METERING_TABLES if version >= 4 and t not in tables]
    if version >= 1 and missing:
        raise StoreCorruptError(
            f"{where} says schema version {version} but lacks the tables {', '.join(missing)}: "
            f"it is not a GridEdge store, or was damaged. {CORRUPT_ADVICE}"
        )
    if version >= 1 and app_id == 0:
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")  # a store made before the id was set


def migrate(conn: sqlite3.Connection, version: int) -> None:
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
            rows = [{"key": k, "value": 0} for k in COUNTERS]
            for s in (*READING_STREAMS, EVENTS):
                rows += [{"key": f"seq:{s}", "value": 1}, {"key": f"sealed:{s}", "value": 0}]
            rows.append({"key": "full_alarm", "value": 0})
            db["meta"].insert_all(rows, ignore=True)
        if version < 2:
            # The control stream: decisions are event rows of their own stream, sealed and numbered apart. Rows
            # of a version-1 file are all of the events stream. AUTOINCREMENT ids stay shared by both streams, so
            # each stream's sealed cursor still compares ids of its own rows correctly.
            conn.execute("ALTER TABLE events ADD COLUMN stream TEXT NOT NULL DEFAULT 'events'")
            db["events"].create_index(["stream", "id"], index_name="events_stream_id")
            db["meta"].insert_all(
                [{"key": f"seq:{CONTROL}", "value": 1}, {"key": f"sealed:{CONTROL}", "value": 0}], ignore=True
            )
            # The safety envelope's state (agent/store/controlstate.py): each operation it carried out (wear
            # budgets, dwell, hunting are judged from them), and its flags (suspensions, devices it holds).
            conn.execute(
                "CREATE TABLE control_ops (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, "
                "device TEXT NOT NULL, function TEXT NOT NULL, action TEXT NOT NULL, direction INTEGER NOT NULL, "
                "costs TEXT NOT NULL, decision_id TEXT NOT NULL)"
            )
            db["control_ops"].create_index(["device", "ts"], index_name="control_ops_device_ts")
            conn.execute(
                "CREATE TABLE control_flags (kind TEXT NOT NULL, function TEXT NOT NULL, device TEXT NOT NULL, "
                "since REAL NOT NULL, reason TEXT NOT NULL, data TEXT, PRIMARY KEY (kind, function, device))"
            )
        if version < 3:
            _migrate_commands(conn, db)
        if version < 4:
            _migrate_metering(conn, db)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")


def _migrate_commands(conn: sqlite3.Connection, db: sqlite_utils.Database) -> None:
    """Schema version 3: the signed downlink (docs/store.md, "Command state"; agent/store/commandstate.py)."""
    db["meta"].insert_all(
        [{"key": f"{k}:{s}", "value": v} for s in (RESULTS, AUDIT) for k, v in (("seq", 1), ("sealed", 0))],
        ignore=True,
    )
    # keys a signed keys.update added or revoked (the site file's keys are the start; these rows change them)
    conn.execute(
        "CREATE TABLE command_keys (key_id TEXT PRIMARY KEY, role TEXT NOT NULL, public_key TEXT NOT NULL, "
        "state TEXT NOT NULL, ts REAL NOT NULL, command_id TEXT NOT NULL)"
    )
    # the highest sequence taken from each key: a command must come above it
    conn.execute(
        "CREATE TABLE command_seq (key_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, command_id TEXT NOT NULL, "
        "ts REAL NOT NULL)"
    )
    # every command taken for execution, by id: executed once, whatever the broker redelivers
    conn.execute(
        "CREATE TABLE command_log (command_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, seq INTEGER NOT NULL, "
        "kind TEXT NOT NULL, target TEXT NOT NULL, received REAL NOT NULL, expires_at REAL NOT NULL, "
        "status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', payload TEXT NOT NULL, result TEXT)"
    )
    # what central's commands hold in force (set points, switches, band centres, curves, schedules, modes)
    conn.execute(
        "CREATE TABLE command_overrides (slot TEXT PRIMARY KEY, command_id TEXT NOT NULL, kind TEXT NOT NULL, "
        "target TEXT NOT NULL, body TEXT NOT NULL, since REAL NOT NULL, until REAL)"
    )
    # the audit log: commands, their decisions and configuration changes. Append-only: SQLite itself refuses
    # an UPDATE or a DELETE of a row (the triggers), so no code path can rewrite what happened.
    conn.execute(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, what TEXT NOT NULL, "
        "command_id TEXT NOT NULL DEFAULT '', key_id TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL DEFAULT '', "
        "outcome TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', data TEXT)"
    )
    conn.execute(
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END"
    )
    conn.execute(
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END"
    )


def _migrate_metering(conn: sqlite3.Connection, db: sqlite_utils.Database) -> None:
    """Schema version 4: interval energy (docs/store.md, "Intervals"; agent/metering)."""
    db["meta"].insert_all([{"key": f"seq:{INTERVALS}", "value": 1}, {"key": f"sealed:{INTERVALS}", "value": 0}],
                          ignore=True)  # fmt: skip
    # one row per interval item as it goes on the wire (protocols/telemetry/intervals.py), in the order made; a
    # correction is a new row with a higher version. AUTOINCREMENT: the sealed cursor compares ids.
    conn.execute(
        "CREATE TABLE intervals (id INTEGER PRIMARY KEY AUTOINCREMENT, meter TEXT NOT NULL, register TEXT NOT NULL, "
        "start REAL NOT NULL, version INTEGER NOT NULL, item TEXT NOT NULL)"
    )
    db["intervals"].create_index(["meter", "register", "start"], index_name="intervals_meter_start")
    # each register's interval engine state, written in the same transaction as the intervals it closed
    conn.execute("CREATE TABLE metering_state (key TEXT PRIMARY KEY, state TEXT NOT NULL)")
