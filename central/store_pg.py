"""Central's PostgreSQL store: the same interface and guarantees as the SQLite one (central/store.py), for a
utility's own PostgreSQL and for workers on several machines sharing one database.

Guarantees, as on SQLite:
- ``store_batches`` writes a flush in ONE transaction and returns only after its COMMIT: the ingest acks only
  what it returned, so an acknowledged message is in the database.
- Exactly once by msg_id: ``messages.msg_id`` is the primary key and a message row is inserted with
  ``ON CONFLICT DO NOTHING``; its readings are written only when its row was new, in the same transaction. Two
  workers inserting the same msg_id at once: the second waits on the first's uncommitted key, then finds it
  (READ COMMITTED) and stores nothing. Message rows of one flush are inserted in msg_id order, so two workers
  holding copies of the same messages take the key locks in one order and never deadlock.
- Each message under its own SAVEPOINT: a message PostgreSQL refuses (a NUL or a lone surrogate in a string, an
  integer past 64 bits, a timestamp out of range) is rolled back and refused alone; the rest is committed.
- Interval versions, conflicts, gaps, reused sequences and commands behave as on SQLite (same SQL, PostgreSQL's
  dialect).

What PostgreSQL adds:
- Readings go in with binary ``COPY`` (one per message: the savepoint bounds it), the fastest bulk path.
- ``readings`` (by ``ts``) and ``intervals`` (by ``start``) are partitioned by calendar month (UTC, declarative
  range partitioning). A month's partition is created the first time a flush needs it, in its own short
  transaction under an advisory lock (workers creating the same month queue instead of failing); times outside
  1970..2242 (the wire's range) land in a DEFAULT partition, which therefore stays empty for any month created.
  Each partition gets a BRIN index on its time column (a few pages per partition; rows arrive roughly in time
  order, which is what BRIN needs) and old months can be detached or dropped whole.
- Schema migrations: ``schema_version`` holds every version applied; at open, missing migrations are applied in
  ONE transaction under an advisory lock, so workers starting together apply each migration once.
- Reading values: ``value`` (float8) holds floats, ``value_int`` (int8) integers and booleans (as 1/0, as SQLite
  stores them), ``value_text`` strings; ``reading_value`` gives back the one a row holds.

TimescaleDB: where the server offers the extension, the first migration makes ``readings`` and ``intervals``
hypertables instead (30-day chunks TimescaleDB creates itself, the same columns and BRIN indexes), inside a
savepoint: when the extension cannot be created (not in shared_preload_libraries, no right to) it falls back to
declarative partitioning. ``layout`` says which each table has. Debian has no TimescaleDB package, so the tests
here run the declarative path and the fallback (docs/scale.md).

Methods are blocking and serialised by a lock, like the SQLite store's; a lost connection is reopened at the
next call (the failed call raised CentralStoreError, so the ingest retried its flush).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from central.store import (
    _COMMAND_COLUMNS,
    DISPATCH_RUN_COLUMNS,
    EVENT_TABLE_STREAMS,
    FORECAST_COLUMNS,
    INTERVAL_COLUMNS,
    CentralStoreError,
    IntervalVersions,
    MessageRefused,
    VerifiedResult,
)
from protocols.telemetry.schema import Batch, State

_READINGS_TABLE = """CREATE TABLE readings (
    msg_id     text NOT NULL,
    site       text NOT NULL,
    point      text NOT NULL,
    ts         double precision NOT NULL,
    value      double precision,
    value_int  bigint,
    value_text text,
    unit       text NOT NULL,
    quality    text NOT NULL
)"""
_INTERVALS_TABLE = """CREATE TABLE intervals (
    site       text NOT NULL,
    meter      text NOT NULL,
    register   text NOT NULL,
    start      bigint NOT NULL,
    version    bigint NOT NULL,
    end_ts     bigint NOT NULL,
    channel    text NOT NULL,
    value      double precision,
    unit       text NOT NULL,
    quality    text NOT NULL,
    method     bigint,
    flags      text NOT NULL,
    reads      text NOT NULL,
    meter_id   text,
    reg_start  double precision,
    reg_end    double precision,
    read_min   double precision,
    read_max   double precision,
    msg_id     text NOT NULL,
    received   double precision NOT NULL,
    read_scale double precision,
    modulus    double precision,
    PRIMARY KEY (site, meter, register, start, version)
)"""
# Declarative partitioning (any PostgreSQL >= 11): monthly partitions are created on demand (_ensure_months).
_DECLARATIVE = (
    _READINGS_TABLE + " PARTITION BY RANGE (ts)",
    "CREATE TABLE readings_default PARTITION OF readings DEFAULT",
    "CREATE INDEX readings_ts_brin ON readings USING brin (ts)",
    _INTERVALS_TABLE + " PARTITION BY RANGE (start)",
    "CREATE TABLE intervals_default PARTITION OF intervals DEFAULT",
    "CREATE INDEX intervals_start_brin ON intervals USING brin (start)",
)
# TimescaleDB: hypertables with 30-day chunks, which TimescaleDB creates itself. readings.ts is float8 seconds,
# not a type a hypertable's time dimension takes, so a time partitioning function maps it to integer microseconds.
_TIMESCALE = (
    "CREATE EXTENSION IF NOT EXISTS timescaledb",
    _READINGS_TABLE,
    "CREATE FUNCTION gridedge_ts_us(double precision) RETURNS bigint LANGUAGE sql IMMUTABLE STRICT "
    "AS 'SELECT ($1 * 1000000)::bigint'",
    "SELECT create_hypertable('readings', 'ts', chunk_time_interval => 2592000000000::bigint, "
    "time_partitioning_func => 'gridedge_ts_us', create_default_indexes => false)",
    "CREATE INDEX readings_ts_brin ON readings USING brin (ts)",
    _INTERVALS_TABLE,
    "SELECT create_hypertable('intervals', 'start', chunk_time_interval => 2592000::bigint, "
    "create_default_indexes => false)",
    "CREATE INDEX intervals_start_brin ON intervals USING brin (start)",
)


def create_series_tables(conn: psycopg.Connection) -> None:
    """``readings`` and ``intervals``: TimescaleDB hypertables where the server has the extension and it can be
    created (it must be in shared_preload_libraries), else declarative monthly partitions. Either way the same
    columns, so the store's SQL is the same; a failed TimescaleDB attempt is rolled back to its savepoint."""
    if timescale_available(conn):
        try:
            with conn.transaction():
                for statement in _TIMESCALE:
                    conn.execute(statement)
            return
        except psycopg.Error:
            pass  # e.g. not preloaded: the plain path below
    for statement in _DECLARATIVE:
        conn.execute(statement)


# Each migration: (version, what it does, statements: SQL text, or a function of the
# connection for a step that depends on the server). Applied in order, all missing ones in one transaction.
MIGRATIONS: tuple[tuple[int, str, tuple[str | Callable[[psycopg.Connection], None], ...]], ...] = (
    (
        1,
        "messages, readings and intervals partitioned by month, events, decisions, states, commands",
        (
            """CREATE TABLE messages (
                msg_id   text PRIMARY KEY,
                site     text NOT NULL,
                stream   text NOT NULL,
                seq      bigint NOT NULL,
                count    integer NOT NULL,
                received double precision NOT NULL
            )""",
            "CREATE INDEX messages_site_stream_seq ON messages (site, stream, seq)",
            """CREATE TABLE events (
                msg_id   text NOT NULL,
                site     text NOT NULL,
                ts       double precision NOT NULL,
                kind     text NOT NULL,
                severity text NOT NULL,
                source   text NOT NULL,
                text     text NOT NULL,
                data     text
            )""",
            "CREATE INDEX events_site_ts ON events (site, ts)",
            """CREATE TABLE decisions (
                msg_id      text NOT NULL,
                site        text NOT NULL,
                ts          double precision NOT NULL,
                decision_id text NOT NULL,
                function    text NOT NULL,
                device      text NOT NULL,
                verdict     text NOT NULL,
                outcome     text NOT NULL,
                data        text NOT NULL
            )""",
            "CREATE INDEX decisions_site_ts ON decisions (site, ts)",
            "CREATE INDEX decisions_site_id ON decisions (site, decision_id)",
            """CREATE TABLE states (
                site   text PRIMARY KEY,
                status text NOT NULL,
                ts     double precision NOT NULL
            )""",
            """CREATE TABLE command_seq (
                key_id text PRIMARY KEY,
                seq    bigint NOT NULL
            )""",
            """CREATE TABLE commands (
                command_id text PRIMARY KEY,
                site       text NOT NULL,
                kind       text NOT NULL,
                target     text NOT NULL,
                key_id     text NOT NULL,
                seq        bigint NOT NULL,
                issued_at  double precision NOT NULL,
                expires_at double precision NOT NULL,
                message    text NOT NULL,
                sent_at    double precision,
                status     text NOT NULL,
                reason     text NOT NULL DEFAULT '',
                result     text,
                result_at  double precision
            )""",
            "CREATE INDEX commands_site_issued ON commands (site, issued_at)",
            create_series_tables,
            """CREATE TABLE interval_conflicts (
                site     text NOT NULL,
                meter    text NOT NULL,
                register text NOT NULL,
                start    bigint NOT NULL,
                version  bigint NOT NULL,
                msg_id   text NOT NULL,
                received double precision NOT NULL,
                item     text NOT NULL
            )""",
        ),
    ),
    (
        2,
        "settlement: runs, their values and imbalance, schedules (central/settlement/db.py)",
        # As on SQLite: times are integer epoch seconds (created, imported: float seconds), the same keys.
        (
            """CREATE TABLE settlement_runs (
                run_id   bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                kind     text NOT NULL,
                version  integer NOT NULL,
                created  double precision NOT NULL,
                t_from   bigint NOT NULL,
                t_to     bigint NOT NULL,
                params   text NOT NULL,
                base_run bigint,
                summary  text NOT NULL
            )""",
            """CREATE TABLE settlement_values (
                run_id   bigint NOT NULL,
                site     text NOT NULL,
                meter    text NOT NULL,
                register text NOT NULL,
                start    bigint NOT NULL,
                value    double precision,
                quality  text NOT NULL,
                method   integer,
                failed   integer NOT NULL,
                version  bigint NOT NULL,
                delta    double precision,
                PRIMARY KEY (run_id, site, meter, register, start)
            )""",
            """CREATE TABLE settlement_imbalance (
                run_id    bigint NOT NULL,
                site      text NOT NULL,
                meter     text NOT NULL,
                register  text NOT NULL,
                start     bigint NOT NULL,
                scheduled double precision NOT NULL,
                metered   double precision,
                imbalance double precision,
                PRIMARY KEY (run_id, site, meter, register, start)
            )""",
            """CREATE TABLE schedules (
                site     text NOT NULL,
                meter    text NOT NULL,
                channel  text NOT NULL,
                start    bigint NOT NULL,
                version  integer NOT NULL,
                end_ts   bigint NOT NULL,
                energy   double precision NOT NULL,
                source   text NOT NULL,
                imported double precision NOT NULL,
                PRIMARY KEY (site, meter, channel, start, version)
            )""",
        ),
    ),
)
# The forecasts table (central/forecast/, docs/forecast.md), its own migration: the same columns as SQLite's.
MIGRATIONS += (
    (
        3,
        "forecasts: P10/P50/P90 per feeder, kind, horizon, issue time and 15-minute interval",
        (
            """CREATE TABLE IF NOT EXISTS forecasts (
                feeder  text NOT NULL,
                kind    text NOT NULL,
                horizon text NOT NULL,
                issued  bigint NOT NULL,
                start   bigint NOT NULL,
                end_ts  bigint NOT NULL,
                p10     double precision,
                p50     double precision,
                p90     double precision,
                unit    text NOT NULL,
                model   text NOT NULL,
                PRIMARY KEY (feeder, kind, horizon, issued, start)
            )""",
        ),
    ),
)
# Dispatch's rounds (central/dispatch/runs.py), their own migration: the same columns and key as SQLite's.
MIGRATIONS += (
    (
        4,
        "dispatch_runs: each dispatch round's planned and no-dispatch cost",
        (
            """CREATE TABLE IF NOT EXISTS dispatch_runs (
                feeder                 text NOT NULL,
                issued                 double precision NOT NULL,
                horizon_start          bigint NOT NULL,
                interval_s             integer NOT NULL,
                intervals              integer NOT NULL,
                cost                   double precision NOT NULL,
                cost_no_dispatch       double precision NOT NULL,
                first_cost             double precision NOT NULL,
                first_cost_no_dispatch double precision NOT NULL,
                PRIMARY KEY (feeder, issued)
            )""",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

# Advisory lock keys (one 64-bit space per database): the migrations, and the creation of monthly partitions.
_MIGRATE_LOCK = zlib.crc32(b"gridedge.central.migrate")
_PARTITION_LOCK = zlib.crc32(b"gridedge.central.partition")
TS_MAX = 2**33  # the wire's time range (protocols/telemetry/schema.py): months past it go to the DEFAULT partition
_PARTITIONED = {"readings": "ts", "intervals": "start"}

_GAPS_SQL = """
SELECT prev + 1, seq - 1 FROM (
    SELECT seq, LAG(seq, 1, 0::bigint) OVER (ORDER BY seq) AS prev
    FROM (SELECT DISTINCT seq FROM messages WHERE site = %s AND stream = %s) AS s
) AS d WHERE seq - prev > 1 ORDER BY seq
"""
_REUSED_SQL = "SELECT seq FROM messages WHERE site = %s AND stream = %s GROUP BY seq HAVING COUNT(*) > 1 ORDER BY seq"

_READING_COLUMNS = ("msg_id", "site", "point", "ts", "value", "value_int", "value_text", "unit", "quality")
_READING_TYPES = ("text", "text", "text", "float8", "float8", "int8", "text", "text", "text")
_COPY_READINGS = f"COPY readings ({', '.join(_READING_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1

# Errors tied to one message's values: Python's conversions (float() of a huge int, a lone surrogate that has no
# UTF-8 form, json.dumps of NaN) and PostgreSQL's refusals of a row (DataError: a NUL in text, a number out of
# range; IntegrityError: a NOT NULL or check). OperationalError (connection lost, lock timeout, disk full) and
# other errors concern the whole transaction and are not in this list.
_MESSAGE_ERRORS = (
    OverflowError,
    ValueError,
    TypeError,
    KeyError,
    RecursionError,
    psycopg.DataError,
    psycopg.IntegrityError,
)


def _readings_stream(stream: str) -> bool:
    """True for a stream whose items are readings (telemetry, energy, ...): not events, decisions or intervals."""
    return stream not in EVENT_TABLE_STREAMS and stream not in ("control", "intervals")


def reading_value(value: float | None, value_int: int | None, value_text: str | None) -> Any:
    """The value a ``readings`` row holds, whichever of its three columns holds it."""
    return value_int if value_int is not None else value if value is not None else value_text


def _split_value(v: Any) -> tuple[float | None, int | None, str | None]:
    if v is None:
        return None, None, None
    if isinstance(v, bool):
        return None, int(v), None
    if isinstance(v, int):
        if not INT8_MIN <= v <= INT8_MAX:
            raise OverflowError(f"value {v!r:.40}: an integer past 64 bits does not fit in bigint")
        return None, v, None
    if isinstance(v, float):
        return v, None, None
    if isinstance(v, str):
        return None, None, v
    raise TypeError(f"value {v!r:.40}: a number, string, boolean or null")


def month_bounds(month: int) -> tuple[int, int]:
    """Epoch seconds of the first instant of ``month`` (months since 1970-01, UTC) and of the next month."""
    y, m = divmod(month, 12)
    start = datetime(1970 + y, m + 1, 1, tzinfo=UTC)
    y2, m2 = divmod(month + 1, 12)
    return int(start.timestamp()), int(datetime(1970 + y2, m2 + 1, 1, tzinfo=UTC).timestamp())


def month_of(ts: float) -> int | None:
    """Months since 1970-01 (UTC) of ``ts``; None outside [0, TS_MAX) (those rows go to the DEFAULT partition)."""
    if not 0 <= ts < TS_MAX:
        return None
    d = datetime.fromtimestamp(ts, UTC)
    return (d.year - 1970) * 12 + d.month - 1


def partition_name(table: str, month: int) -> str:
    y, m = divmod(month, 12)
    return f"{table}_y{1970 + y:04d}m{m + 1:02d}"


def timescale_available(conn: psycopg.Connection) -> bool:
    """True when the server offers the TimescaleDB extension (not in Debian's packages: docs/scale.md)."""
    return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone() is not None


class PgCentralStore(IntervalVersions):
    """Central's store on PostgreSQL; ``url`` is a libpq connection URI (``postgresql://user@host:port/db``)."""

    _PARAM = "%s"

    def __init__(self, url: str, *, lock_timeout_ms: int = 30_000) -> None:
        super().__init__()
        self.url = url
        self.path = _safe_url(url)  # what error texts and logs name (the password, if any, left out)
        self._lock_timeout_ms = int(lock_timeout_ms)
        self._months: dict[str, set[int]] = {t: set() for t in _PARTITIONED}
        try:
            self._conn = self._connect()
        except psycopg.Error as err:
            raise CentralStoreError(f"cannot open central store {self.path}: {err}") from err
        try:
            self._migrate()
            self._load_layout()
            self._load_partitions()
            self.timescale = timescale_available(self._conn)
        except BaseException as err:
            self._conn.close()
            if isinstance(err, psycopg.Error):
                raise CentralStoreError(f"cannot open central store {self.path}: {err}") from err
            raise

    # ---- connection, migrations, partitions ---------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.url, autocommit=True, application_name="gridedge-central")
        # a lock held by another session fails the call after this long instead of hanging the worker
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(self._lock_timeout_ms)))
        return conn

    def _db(self) -> psycopg.Connection:
        """The connection, reopened when the last one was lost (a server restart, a failover)."""
        if self._conn.closed or self._conn.broken:
            self._conn.close()
            self._conn = self._connect()
        return self._conn

    def _migrate(self) -> None:
        conn = self._conn
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, what text NOT NULL, "
                "applied_at double precision NOT NULL)"
            )
            have = {r[0] for r in conn.execute("SELECT version FROM schema_version")}
            if have and max(have) > SCHEMA_VERSION:
                raise CentralStoreError(
                    f"central store {self.path} is at schema version {max(have)}, newer than this central's "
                    f"{SCHEMA_VERSION}: run the newer central"
                )
            for version, what, statements in MIGRATIONS:
                if version in have:
                    continue
                for statement in statements:
                    if callable(statement):
                        statement(conn)
                    else:
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (%s, %s, %s)", (version, what, time.time()))

    def schema_versions(self) -> list[int]:
        with self._lock:
            return [r[0] for r in self._db().execute("SELECT version FROM schema_version ORDER BY version")]

    def _load_layout(self) -> None:
        """Which of ``readings`` and ``intervals`` are declaratively partitioned (relkind 'p'), and which are
        TimescaleDB hypertables: only the former get monthly partitions from this store."""
        self.layout: dict[str, str] = {}
        for table in _PARTITIONED:
            row = self._conn.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()
            self.layout[table] = "declarative" if row is not None and row[0] == "p" else "timescaledb"

    def _load_partitions(self) -> None:
        for table in _PARTITIONED:
            rows = self._conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass",
                (table,),
            )
            for (name,) in rows:
                suffix = name.removeprefix(f"{table}_y")
                if len(suffix) == 7 and suffix[4] == "m":
                    self._months[table].add((int(suffix[:4]) - 1970) * 12 + int(suffix[5:]) - 1)

    def partitions(self, table: str) -> list[str]:
        """The monthly partitions of ``readings`` or ``intervals``, oldest first (the DEFAULT one not listed)."""
        with self._lock:
            self._load_partitions()
            return [partition_name(table, m) for m in sorted(self._months[table])]

    def _ensure_months(self, table: str, months: set[int]) -> None:
        """Create the monthly partitions of ``table`` that ``months`` need, each once whoever else creates it."""
        missing = months - self._months[table]
        if not missing or self.layout[table] != "declarative":  # a hypertable makes its own chunks
            return
        conn = self._db()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            for month in sorted(missing):
                lo, hi = month_bounds(month)
                name = partition_name(table, month)
                conn.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                        sql.Identifier(name), sql.Identifier(table), sql.Literal(lo), sql.Literal(hi)
                    )
                )
        self._months[table] |= missing

    def _months_needed(self, batches: Sequence[Batch]) -> dict[str, set[int]]:
        """The months the readings and intervals of ``batches`` fall in, from each message's earliest and latest
        time within the wire's range (two date conversions per message, as a message spans seconds)."""
        need: dict[str, set[int]] = {t: set() for t in _PARTITIONED}
        for b in batches:
            table, key = ("intervals", "start") if b.stream == "intervals" else ("readings", "ts")
            if b.stream in EVENT_TABLE_STREAMS or b.stream == "control":
                continue
            try:
                times = [t for t in (float(i[key]) for i in b.items) if 0 <= t < TS_MAX]
            except (KeyError, TypeError, ValueError, OverflowError):
                continue  # the message is refused when it is stored
            if times:
                lo, hi = month_of(min(times)), month_of(max(times))
                assert lo is not None and hi is not None
                if hi - lo <= 1:
                    need[table].update(range(lo, hi + 1))
                else:  # times years apart (a clock gone wrong): only the months they are in, not every one between
                    need[table].update(m for m in map(month_of, times) if m is not None)
        return need

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ---- ingest -----------------------------------------------------------------------------------------------

    def store_batches(
        self,
        batches: Sequence[Batch],
        received: float,
        results: Mapping[str, Sequence[VerifiedResult]] | None = None,
    ) -> list[bool | MessageRefused]:
        """As :meth:`central.store.CentralStore.store_batches`: one transaction; per batch True (new), False
        (a duplicate msg_id) or a MessageRefused (that message alone could not be stored).

        Readings messages go first, all together (:meth:`_store_readings_together`); the others, and readings
        messages the set-wise path could not take, one by one under a savepoint each (:meth:`_store_one`). Both
        take message rows in msg_id order, so two workers holding copies of the same messages lock the keys in
        one order.
        """
        with self._lock:
            try:
                for table, months in self._months_needed(batches).items():
                    self._ensure_months(table, months)
                conn = self._db()
                with conn.transaction():
                    by_index: dict[int, bool | MessageRefused] = {}
                    readings = [i for i, b in enumerate(batches) if _readings_stream(b.stream) and b.items]
                    if len(readings) > 1:
                        by_index.update(self._store_readings_together(conn, batches, readings, received))
                    rest = sorted((i for i in range(len(batches)) if i not in by_index),
                                  key=lambda i: (batches[i].msg_id, i))  # fmt: skip
                    for i in rest:
                        b = batches[i]
                        by_index[i] = self._store_one(conn, b, received, (results or {}).get(b.msg_id, ()))
                    out = [by_index[i] for i in range(len(batches))]
            except CentralStoreError:
                raise
            except Exception as err:  # the transaction's failure: psycopg has rolled it back
                raise CentralStoreError(f"cannot store {len(batches)} message(s) in {self.path}: {err!r}") from err
        return out

    def _store_readings_together(
        self, conn: psycopg.Connection, batches: Sequence[Batch], indexes: Sequence[int], received: float
    ) -> dict[int, bool | MessageRefused]:
        """The readings messages ``indexes`` of a flush in three statements: their message rows in one INSERT
        (``ON CONFLICT DO NOTHING RETURNING``), the stored rows of the msg_ids that were there, and one COPY of the
        new messages' readings. Per message the same answers as :meth:`_store_one` gives one by one.

        Under one savepoint: when PostgreSQL refuses any row (a NUL in a string), it is rolled back and the
        messages are left to the one-by-one path, which refuses the bad one alone. A message whose values Python
        cannot convert is left to it too. Returns the answers for the messages it took.
        """
        rows: dict[int, list[tuple[Any, ...]]] = {}
        for i in indexes:
            b = batches[i]
            try:
                rows[i] = [(b.msg_id, b.site, it["point"], float(it["ts"]), *_split_value(it.get("value")), it["unit"],
                            it["quality"]) for it in b.items]  # fmt: skip
            except _MESSAGE_ERRORS:
                continue  # the one-by-one path refuses it, after the insert-then-compare a resend would get
        first: dict[str, int] = {}
        for i in rows:
            first.setdefault(batches[i].msg_id, i)
        ids = sorted(first)
        heads = [batches[first[m]] for m in ids]
        try:
            with conn.transaction():
                cur = conn.execute(
                    "INSERT INTO messages (msg_id, site, stream, seq, count, received) "
                    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::integer[], "
                    "%s::float8[]) AS u (msg_id, site, stream, seq, count, received) ORDER BY msg_id "
                    "ON CONFLICT (msg_id) DO NOTHING RETURNING msg_id",
                    (ids, [b.site for b in heads], [b.stream for b in heads], [b.seq for b in heads],
                     [len(b.items) for b in heads], [received] * len(heads)),
                )  # fmt: skip
                new = {r[0] for r in cur.fetchall()}
                known = [m for m in ids if m not in new]
                stored: dict[str, tuple[Any, ...]] = {}
                if known:
                    for r in conn.execute(
                        "SELECT msg_id, site, stream, seq FROM messages WHERE msg_id = ANY(%s)", (known,)
                    ):
                        stored[r[0]] = tuple(r[1:])
                with conn.cursor() as c, c.copy(_COPY_READINGS) as copy:
                    copy.set_types(_READING_TYPES)
                    for m in ids:
                        if m in new:
                            for row in rows[first[m]]:
                                copy.write_row(row)
        except _MESSAGE_ERRORS:
            return {}  # rolled back to the savepoint: every message goes the one-by-one way
        out: dict[int, bool | MessageRefused] = {}
        for i in rows:
            b = batches[i]
            if first[b.msg_id] == i and b.msg_id in new:
                out[i] = True
                continue
            head = batches[first[b.msg_id]]
            site, stream, seq = (head.site, head.stream, head.seq) if b.msg_id in new else stored[b.msg_id]
            if (site, stream, seq) == (b.site, b.stream, b.seq):
                out[i] = False
            else:
                out[i] = MessageRefused(b, ValueError(
                    f"msg_id already stored for site={site} stream={stream} seq={seq}, "
                    f"not site={b.site} stream={b.stream} seq={b.seq}"))  # fmt: skip
        return out

    def _store_one(
        self, conn: psycopg.Connection, b: Batch, received: float, verified: Sequence[VerifiedResult]
    ) -> bool | MessageRefused:
        conflicts = len(self._conflicts)
        try:
            with conn.transaction():  # SAVEPOINT: an error here rolls back this message only
                cur = conn.execute(
                    "INSERT INTO messages (msg_id, site, stream, seq, count, received) VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (msg_id) DO NOTHING",
                    (b.msg_id, b.site, b.stream, b.seq, len(b.items), received),
                )
                new = cur.rowcount == 1
                if not new:
                    self._check_same_message(conn, b)
                if new and b.stream in EVENT_TABLE_STREAMS:
                    with conn.cursor() as c:
                        c.executemany(
                            "INSERT INTO events (msg_id, site, ts, kind, severity, source, text, data) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                            [(b.msg_id, b.site, float(i["ts"]), i["kind"], i["severity"], i["source"], i["text"],
                              None if i.get("data") is None else json.dumps(i["data"], allow_nan=False))
                             for i in b.items],
                        )  # fmt: skip
                elif new and b.stream == "control":
                    with conn.cursor() as c:
                        c.executemany(
                            "INSERT INTO decisions (msg_id, site, ts, decision_id, function, device, verdict, outcome, "
                            "data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                            [(b.msg_id, b.site, float(i["ts"]), i["data"]["id"], i["data"]["function"],
                              i["data"]["device"], i["data"]["verdict"], i["data"]["outcome"],
                              json.dumps(i["data"], allow_nan=False))
                             for i in b.items],
                        )  # fmt: skip
                elif new and b.stream == "intervals":
                    self._store_intervals(conn, b, received)
                elif new and b.items:
                    rows = [(b.msg_id, b.site, i["point"], float(i["ts"]), *_split_value(i.get("value")), i["unit"],
                             i["quality"]) for i in b.items]  # fmt: skip
                    with conn.cursor() as c, c.copy(_COPY_READINGS) as copy:
                        copy.set_types(_READING_TYPES)
                        for row in rows:
                            copy.write_row(row)
                for v in verified:
                    self._record_result(conn, b.site, v, received)
        except _MESSAGE_ERRORS as err:
            del self._conflicts[conflicts:]
            return MessageRefused(b, err)
        return new

    def _insert_intervals(self, conn: psycopg.Connection, rows: list[tuple[Any, ...]]) -> int:
        cols = ", ".join(INTERVAL_COLUMNS)
        marks = ", ".join(["%s"] * len(INTERVAL_COLUMNS))
        with conn.cursor() as c:
            c.executemany(f"INSERT INTO intervals ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING", rows)
            return c.rowcount

    def _check_same_message(self, conn: psycopg.Connection, b: Batch) -> None:
        row = conn.execute("SELECT site, stream, seq FROM messages WHERE msg_id = %s", (b.msg_id,)).fetchone()
        if row is not None and tuple(row) != (b.site, b.stream, b.seq):
            raise ValueError(
                f"msg_id already stored for site={row[0]} stream={row[1]} seq={row[2]}, "
                f"not site={b.site} stream={b.stream} seq={b.seq}"
            )

    def store_batch(self, batch: Batch, received: float) -> bool | MessageRefused:
        return self.store_batches([batch], received)[0]

    def set_states(self, states: Iterable[State]) -> None:
        """The last state received per site wins (see the SQLite store)."""
        last: dict[str, tuple[str, str, float]] = {}
        for s in states:
            last.pop(s.site, None)
            last[s.site] = (s.site, s.status, s.ts)
        if not last:
            return
        with self._lock:
            try:
                conn = self._db()
                with conn.transaction(), conn.cursor() as c:
                    c.executemany(
                        "INSERT INTO states (site, status, ts) VALUES (%s, %s, %s) ON CONFLICT (site) DO UPDATE SET "
                        "status = excluded.status, ts = excluded.ts",
                        list(last.values()),
                    )
            except psycopg.Error as err:
                raise CentralStoreError(f"cannot store states in {self.path}: {err}") from err

    # ---- commands ---------------------------------------------------------------------------------------------

    def next_command_seq(self, key_id: str) -> int:
        """The next sequence number of ``key_id``: the UPSERT locks the key's row, so allocators queue."""
        with self._lock:
            try:
                conn = self._db()
                with conn.transaction():
                    (seq,) = conn.execute(
                        "INSERT INTO command_seq (key_id, seq) VALUES (%s, 1) "
                        "ON CONFLICT (key_id) DO UPDATE SET seq = command_seq.seq + 1 RETURNING seq",
                        (key_id,),
                    ).fetchone()
            except psycopg.Error as err:
                raise CentralStoreError(f"cannot allocate a sequence for key {key_id} in {self.path}: {err}") from err
        return int(seq)

    def add_command(self, row: Mapping[str, Any]) -> None:
        cols = [c for c in _COMMAND_COLUMNS if c in row]
        self._write(f"INSERT INTO commands ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                    tuple(row[c] for c in cols))  # fmt: skip

    def command_sent(self, command_id: str, sent_at: float) -> None:
        self._write("UPDATE commands SET sent_at = %s WHERE command_id = %s", (sent_at, command_id))

    def record_result(self, site: str, verified: VerifiedResult, received: float) -> bool:
        with self._lock:
            try:
                conn = self._db()
                with conn.transaction():
                    done = self._record_result(conn, site, verified, received)
            except psycopg.Error as err:
                raise CentralStoreError(f"cannot record a result in {self.path}: {err}") from err
        return done

    def _record_result(self, conn: psycopg.Connection, site: str, v: VerifiedResult, received: float) -> bool:
        r = v.result
        if r.site != site:
            return False
        cur = conn.execute(
            "UPDATE commands SET status = %s, reason = %s, result = %s, result_at = %s "
            "WHERE command_id = %s AND site = %s AND key_id = %s AND seq = %s AND result IS NULL",
            (r.status, r.reason, json.dumps(dict(v.data), allow_nan=False), received, r.command_id, site, r.key_id,
             r.seq),
        )  # fmt: skip
        return cur.rowcount == 1

    def command(self, command_id: str) -> dict[str, Any] | None:
        row = self._read_one(f"SELECT {', '.join(_COMMAND_COLUMNS)} FROM commands WHERE command_id = %s", (command_id,))
        return None if row is None else dict(zip(_COMMAND_COLUMNS, row, strict=True))

    def commands(self, site: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        where, args = ("WHERE site = %s", (site,)) if site is not None else ("", ())
        rows = self._read(
            f"SELECT {', '.join(_COMMAND_COLUMNS)} FROM commands {where} ORDER BY issued_at DESC, seq DESC LIMIT %s",
            (*args, limit),
        )
        return [dict(zip(_COMMAND_COLUMNS, r, strict=True)) for r in reversed(rows)]

    def _write(self, statement: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            try:
                conn = self._db()
                with conn.transaction():
                    conn.execute(statement, args)
            except psycopg.Error as err:
                raise CentralStoreError(f"cannot write commands in {self.path}: {err}") from err

    # ---- reads ------------------------------------------------------------------------------------------------

    def _read(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db().execute(statement, args).fetchall()
            except psycopg.Error as err:
                raise CentralStoreError(f"cannot read central store {self.path}: {err}") from err

    def _read_one(self, statement: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        rows = self._read(statement, args)
        return rows[0] if rows else None

    def gaps(self, site: str, stream: str) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for a, b in self._read(_GAPS_SQL, (site, stream))]

    def reused_seqs(self, site: str, stream: str) -> list[tuple[int, int]]:
        ranges: list[tuple[int, int]] = []
        for (seq,) in self._read(_REUSED_SQL, (site, stream)):
            seq = int(seq)
            if ranges and ranges[-1][1] == seq - 1:
                ranges[-1] = (ranges[-1][0], seq)
            else:
                ranges.append((seq, seq))
        return ranges

    def streams(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self._read("SELECT DISTINCT site, stream FROM messages ORDER BY site, stream")]

    def state(self, site: str) -> tuple[str, float] | None:
        row = self._read_one("SELECT status, ts FROM states WHERE site = %s", (site,))
        return None if row is None else (row[0], row[1])

    def count(self, table: str) -> int:
        tables = ("messages", "readings", "events", "decisions", "states", "commands", "intervals",
                  "interval_conflicts")  # fmt: skip
        if table not in tables:
            raise ValueError(f"table {table!r}: one of {', '.join(tables)}")
        row = self._read_one(f"SELECT COUNT(*) FROM {table}")
        assert row is not None
        return int(row[0])

    def msg_ids(self) -> list[str]:
        return [r[0] for r in self._read("SELECT msg_id FROM messages ORDER BY site, stream, seq")]

    def write_forecasts(self, rows: Sequence[Sequence[Any]]) -> None:
        """Store forecast rows (FORECAST_COLUMNS order) in one transaction; a row with the same key replaces."""
        cols = ", ".join(FORECAST_COLUMNS)
        statement = (
            f"INSERT INTO forecasts ({cols}) VALUES ({', '.join(['%s'] * len(FORECAST_COLUMNS))}) "
            "ON CONFLICT (feeder, kind, horizon, issued, start) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in ("end_ts", "p10", "p50", "p90", "unit", "model"))
        )
        with self._lock:
            try:
                conn = self._db()
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(statement, [tuple(r) for r in rows])
            except psycopg.Error as err:
                raise CentralStoreError(f"cannot write forecasts in {self.path}: {err}") from err

    def forecasts(self, feeder: str, kind: str, horizon: str, issued: int | None = None) -> list[dict[str, Any]]:
        """One issue's rows in time order: ``issued``, else the latest issue of (feeder, kind, horizon)."""
        key = (feeder, kind, horizon)
        where = "feeder = %s AND kind = %s AND horizon = %s"
        if issued is None:
            row = self._read_one(f"SELECT MAX(issued) FROM forecasts WHERE {where}", key)
            issued = row[0] if row else None
        rows = self._read(
            f"SELECT {', '.join(FORECAST_COLUMNS)} FROM forecasts WHERE {where} AND issued = %s ORDER BY start",
            (*key, issued),
        )
        return [dict(zip(FORECAST_COLUMNS, r, strict=True)) for r in rows]

    def forecasts_covering(self, feeder: str, t0: int, t1: int, issued_by: int) -> list[dict[str, Any]]:
        """As the SQLite store's: rows issued by ``issued_by`` overlapping [t0, t1), in (issued, kind, horizon,
        start) order (COLLATE "C": SQLite's byte order, whatever the database's collation)."""
        rows = self._read(
            f"SELECT {', '.join(FORECAST_COLUMNS)} FROM forecasts WHERE feeder = %s AND issued <= %s AND end_ts > %s "
            'AND start < %s ORDER BY issued, kind COLLATE "C", horizon COLLATE "C", start',
            (feeder, issued_by, t0, t1),
        )
        return [dict(zip(FORECAST_COLUMNS, r, strict=True)) for r in rows]

    def record_dispatch_run(self, row: Sequence[Any]) -> None:
        """One dispatch round (DISPATCH_RUN_COLUMNS order); a second row of the same (feeder, issued) replaces it."""
        statement = (
            f"INSERT INTO dispatch_runs ({', '.join(DISPATCH_RUN_COLUMNS)}) VALUES "
            f"({', '.join(['%s'] * len(DISPATCH_RUN_COLUMNS))}) ON CONFLICT (feeder, issued) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in DISPATCH_RUN_COLUMNS[2:])
        )
        with self._lock:
            try:
                conn = self._db()
                with conn.transaction():
                    conn.execute(statement, tuple(row))
            except psycopg.Error as err:
                raise CentralStoreError(f"cannot write dispatch_runs in {self.path}: {err}") from err

    def dispatch_runs(self, feeder: str, t0: int, t1: int) -> list[dict[str, Any]]:
        """The rounds of ``feeder`` whose first interval starts in [t0, t1), in the order they were issued."""
        rows = self._read(
            f"SELECT {', '.join(DISPATCH_RUN_COLUMNS)} FROM dispatch_runs WHERE feeder = %s AND horizon_start >= %s "
            "AND horizon_start < %s ORDER BY issued",
            (feeder, t0, t1),
        )
        return [dict(zip(DISPATCH_RUN_COLUMNS, r, strict=True)) for r in rows]

    def point_readings(self, site: str, point: str, since: float, until: float) -> list[tuple[float, Any, str]]:
        """(ts, value, unit) of one point's readings with since <= ts < until, in time order (the forecaster's input)."""
        rows = self._read(
            "SELECT ts, value, value_int, value_text, unit FROM readings WHERE site = %s AND point = %s "
            "AND ts >= %s AND ts < %s ORDER BY ts",
            (site, point, since, until),
        )
        return [(ts, reading_value(v, vi, vt), unit) for ts, v, vi, vt, unit in rows]

    def query(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of any read-only query (``%s`` placeholders): for tests, benchmarks and operators' checks."""
        return self._read(statement, args)


def _safe_url(url: str) -> str:
    """``url`` without its password, for error texts and logs."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable url)"
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{info.get('host', '')}{port}/{info.get('dbname', '')}"
