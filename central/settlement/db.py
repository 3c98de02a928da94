"""Where settlement reads and writes: central's store, SQLite (this module) or PostgreSQL (central/settlement/db_pg.py),
behind one small seam, so the rules, runs and schedules are written once.

``open_settlement_db(target)`` takes what ``central.store.open_store`` takes: a ``postgresql://`` URL or a SQLite
file. What the two sides share is plain SQL with ``?`` placeholders (PostgreSQL's side writes them ``%s``); what
differs is each side's own:

- the latest version of each interval, streamed in (site, meter, register, start) order: SQLite's ``MAX()`` with
  bare columns (the other columns come from the row holding the maximum: documented SQLite behaviour for a single
  ``MAX`` aggregate), PostgreSQL's ``DISTINCT ON`` through a server-side cursor;
- a write transaction that excludes other writers of settlement: SQLite's ``BEGIN IMMEDIATE`` (the write lock up
  front), on PostgreSQL a transaction holding an advisory lock (two runs of one period never get one version);
- bulk rows: ``executemany`` on SQLite, binary ``COPY`` on PostgreSQL.

The tables: on SQLite ``CREATE TABLE IF NOT EXISTS`` at every open (below; a file of an older central gains them),
on PostgreSQL the store's schema migrations (central/store_pg.py). Same columns and keys on both. A failure of the
database is raised as ``CentralStoreError`` naming the store and what was being done.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from central.store import POSTGRES_SCHEMES, SCHEMA, CentralStoreError, add_missing_columns

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS settlement_runs (
    run_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT NOT NULL,
    version  INTEGER NOT NULL,
    created  REAL NOT NULL,
    t_from   INTEGER NOT NULL,
    t_to     INTEGER NOT NULL,
    params   TEXT NOT NULL,
    base_run INTEGER,
    summary  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settlement_values (
    run_id   INTEGER NOT NULL,
    site     TEXT NOT NULL,
    meter    TEXT NOT NULL,
    register TEXT NOT NULL,
    start    INTEGER NOT NULL,
    value    REAL,
    quality  TEXT NOT NULL,
    method   INTEGER,
    failed   INTEGER NOT NULL,
    version  INTEGER NOT NULL,
    delta    REAL,
    PRIMARY KEY (run_id, site, meter, register, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settlement_imbalance (
    run_id    INTEGER NOT NULL,
    site      TEXT NOT NULL,
    meter     TEXT NOT NULL,
    register  TEXT NOT NULL,
    start     INTEGER NOT NULL,
    scheduled REAL NOT NULL,
    metered   REAL,
    imbalance REAL,
    PRIMARY KEY (run_id, site, meter, register, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedules (
    site     TEXT NOT NULL,
    meter    TEXT NOT NULL,
    channel  TEXT NOT NULL,
    start    INTEGER NOT NULL,
    version  INTEGER NOT NULL,
    end_ts   INTEGER NOT NULL,
    energy   REAL NOT NULL,
    source   TEXT NOT NULL,
    imported REAL NOT NULL,
    PRIMARY KEY (site, meter, channel, start, version)
) WITHOUT ROWID;
"""
# The tables written in bulk and their columns, in the order of the rows given to ``insert``.
BULK_COLUMNS = {
    "settlement_values": ("run_id", "site", "meter", "register", "start", "value", "quality", "method", "failed",
                          "version", "delta"),
    "settlement_imbalance": ("run_id", "site", "meter", "register", "start", "scheduled", "metered", "imbalance"),
    "schedules": ("site", "meter", "channel", "start", "version", "end_ts", "energy", "source", "imported"),
}  # fmt: skip
# The columns of an interval as ``latest_intervals`` gives them.
LATEST_COLUMNS = ("site", "meter", "register", "start", "version", "end_ts", "channel", "unit", "value", "quality",
                  "method", "flags", "reg_start", "reg_end", "read_min", "read_max", "meter_id", "read_scale")  # fmt: skip


class SettlementDb(Protocol):
    """What settlement needs of central's store (the module docstring); SqliteSettlementDb and PgSettlementDb."""

    name: str  # the file, or the URL without its password: what error texts name

    def latest_intervals(
        self, t0: int, t1: int, site: str | None = None, meter: str | None = None
    ) -> Iterator[tuple[Any, ...]]: ...
    def transaction(self) -> AbstractContextManager[None]: ...
    def insert(self, table: str, rows: Iterable[tuple[Any, ...]]) -> None: ...
    def run_count(self, kind: str, t_from: int, t_to: int) -> int: ...
    def insert_run(self, row: tuple[Any, ...]) -> int: ...
    def set_run_summary(self, run_id: int, summary: str) -> None: ...
    def last_final_run(self, t_from: int, t_to: int) -> int | None: ...
    def run_values(self, run_id: int, key: tuple[str, str, str], t_from: int, t_to: int) -> list[tuple[Any, ...]]: ...
    def schedule_versions(self) -> dict[tuple[str, str, str, int], int]: ...
    def scheduled(self, site: str, meter: str, channel: str, t0: int, t1: int) -> list[tuple[int, float]]: ...
    def close(self) -> None: ...


def open_settlement_db(target: str | Path) -> SettlementDb:
    """Settlement's access to the store ``target`` names: a ``postgresql://`` URL, else a SQLite file."""
    if isinstance(target, str) and target.startswith(POSTGRES_SCHEMES):
        from central.settlement.db_pg import PgSettlementDb  # psycopg only for a central that uses it

        return PgSettlementDb(target)
    return SqliteSettlementDb(Path(target))


class SharedSql:
    """The statements both sides run as they are (``?`` placeholders; ``_sql`` turns them into the driver's).

    A side sets ``name``, ``_conn`` (its connection: both drivers' have ``execute(sql, args)`` returning a cursor)
    and ``_errors`` (its driver's exception classes).
    """

    name: str
    _conn: Any
    _errors: tuple[type[Exception], ...] = ()
    _PARAM = "?"

    def _sql(self, statement: str) -> str:
        return statement if self._PARAM == "?" else statement.replace("?", self._PARAM)

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        try:
            yield
        except self._errors as err:
            raise CentralStoreError(f"cannot {doing} central store {self.name}: {err}") from err

    def _rows(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query (``?`` placeholders), each a tuple."""
        with self._guard("read"):
            return [tuple(r) for r in self._conn.execute(self._sql(statement), args).fetchall()]

    def _one(self, statement: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        found = self._rows(statement, args)
        return found[0] if found else None

    def run_count(self, kind: str, t_from: int, t_to: int) -> int:
        """How many runs of ``kind`` over exactly [t_from, t_to) are stored."""
        row = self._one("SELECT COUNT(*) FROM settlement_runs WHERE kind = ? AND t_from = ? AND t_to = ?",
                        (kind, t_from, t_to))  # fmt: skip
        return int(row[0]) if row else 0

    def insert_run(self, row: tuple[Any, ...]) -> int:
        """A ``settlement_runs`` row (kind, version, created, t_from, t_to, params, base_run, summary); its run id."""
        with self._guard("write"):
            (run_id,) = self._conn.execute(
                self._sql(
                    "INSERT INTO settlement_runs (kind, version, created, t_from, t_to, params, base_run, summary) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING run_id"
                ),
                row,
            ).fetchone()
        return int(run_id)

    def set_run_summary(self, run_id: int, summary: str) -> None:
        with self._guard("write"):
            self._conn.execute(self._sql("UPDATE settlement_runs SET summary = ? WHERE run_id = ?"), (summary, run_id))

    def last_final_run(self, t_from: int, t_to: int) -> int | None:
        """The latest final run whose period covers [t_from, t_to)."""
        row = self._one(
            "SELECT run_id FROM settlement_runs WHERE kind = 'final' AND t_from <= ? AND t_to >= ? "
            "ORDER BY run_id DESC LIMIT 1",
            (t_from, t_to),
        )
        return None if row is None else int(row[0])

    def run_values(self, run_id: int, key: tuple[str, str, str], t_from: int, t_to: int) -> list[tuple[Any, ...]]:
        """(start, value, quality, method) of one register in a run, starts in [t_from, t_to)."""
        return self._rows(
            "SELECT start, value, quality, method FROM settlement_values WHERE run_id = ? AND site = ? AND meter = ? "
            "AND register = ? AND start >= ? AND start < ?",
            (run_id, *key, t_from, t_to),
        )

    def schedule_versions(self) -> dict[tuple[str, str, str, int], int]:
        """The latest version of every scheduled interval, by (site, meter, channel, start)."""
        found = self._rows("SELECT site, meter, channel, start, MAX(version) FROM schedules "
                          "GROUP BY site, meter, channel, start")  # fmt: skip
        return {(s, m, c, int(t)): int(v) for s, m, c, t, v in found}

    def scheduled(self, site: str, meter: str, channel: str, t0: int, t1: int) -> list[tuple[int, float]]:
        """(start, energy) of the latest version of each scheduled interval of a channel, starts in [t0, t1]."""
        found = self._rows(
            "SELECT start, energy FROM schedules s WHERE site = ? AND meter = ? AND channel = ? AND start BETWEEN ? "
            "AND ? AND version = (SELECT MAX(version) FROM schedules WHERE site = s.site AND meter = s.meter AND "
            "channel = s.channel AND start = s.start)",
            (site, meter, channel, t0, t1),
        )
        return [(int(s), float(e)) for s, e in found]


def _where(site: str | None, meter: str | None) -> tuple[str, list[Any]]:
    where, args = "", []
    if site is not None:
        where += " AND site = ?"
        args.append(site)
    if meter is not None:
        where += " AND meter = ?"
        args.append(meter)
    return where, args


class SqliteSettlementDb(SharedSql):
    """Settlement on central's SQLite file (WAL, a busy timeout: the ingest's workers write beside it)."""

    _errors = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        with self._guard("open"):
            self._conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.executescript(SCHEMA + SQLITE_SCHEMA)
                add_missing_columns(self._conn)
            except BaseException:
                self._conn.close()
                raise

    def latest_intervals(
        self, t0: int, t1: int, site: str | None = None, meter: str | None = None
    ) -> Iterator[tuple[Any, ...]]:
        """The latest version of every interval starting in [t0, t1), ordered by site, meter, register, start;
        streamed (LATEST_COLUMNS)."""
        where, args = _where(site, meter)
        with self._guard("read"):
            yield from self._conn.execute(
                f"SELECT site, meter, register, start, MAX(version), {', '.join(LATEST_COLUMNS[5:])} FROM intervals "
                f"WHERE start >= ? AND start < ? {where} GROUP BY site, meter, register, start "
                "ORDER BY site, meter, register, start",
                [t0, t1, *args],
            )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._guard("write"):
            self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        with self._guard("write"):
            self._conn.execute("COMMIT")

    def insert(self, table: str, rows: Iterable[tuple[Any, ...]]) -> None:
        cols = BULK_COLUMNS[table]
        with self._guard("write"):
            self._conn.executemany(
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows
            )

    def close(self) -> None:
        self._conn.close()
