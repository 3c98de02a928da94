"""Settlement on central's PostgreSQL store: the PostgreSQL side of central/settlement/db.py.

Opening it opens the store once (``PgCentralStore``), which applies any missing schema migration: the settlement
tables are migration 2 of central/store_pg.py. Then settlement has a connection of its own (autocommit; explicit
transactions).

- The latest version of each interval: ``DISTINCT ON (site, meter, register, start) ... ORDER BY ..., version DESC``,
  streamed in binary chunks of FETCH_ROWS rows (libpq >= 17; one row at a time before), so memory holds the grids,
  not every row.
- Writes of a run or a schedule: one transaction holding an advisory lock, so two runs of one period (or two
  imports of one schedule) queue and take successive versions, as SQLite's ``BEGIN IMMEDIATE`` makes them.
- Bulk rows (a run's values and imbalance, a schedule): binary ``COPY``, with the column types read from the
  server once per table, so the rows need no other conversion than SQLite's.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from central.settlement.db import BULK_COLUMNS, LATEST_COLUMNS, SharedSql, _where
from central.store_pg import PgCentralStore, _safe_url

_WRITE_LOCK = zlib.crc32(b"gridedge.central.settlement")  # advisory lock key: one writer of settlement at a time
FETCH_ROWS = 20_000  # rows per chunk of the streamed read


class PgSettlementDb(SharedSql):
    _errors = (psycopg.Error,)
    _PARAM = "%s"

    def __init__(self, url: str) -> None:
        self.name = _safe_url(url)
        PgCentralStore(url).close()  # the schema, migrated (raises CentralStoreError naming the store)
        self._types: dict[str, list[str]] = {}
        with self._guard("open"):
            self._conn = psycopg.connect(url, autocommit=True, application_name="gridedge-settlement")

    def latest_intervals(
        self, t0: int, t1: int, site: str | None = None, meter: str | None = None
    ) -> Iterator[tuple[Any, ...]]:
        """As the SQLite side's: the latest version of every interval starting in [t0, t1), in order, streamed."""
        where, args = _where(site, meter)
        # COLLATE "C": names in SQLite's order (bytes), whatever the database's collation, so the registers, the
        # CSV and the NEM12 file come out in the same order on both stores
        key = 'site COLLATE "C", meter COLLATE "C", register COLLATE "C", start'
        statement = self._sql(
            f"SELECT DISTINCT ON ({key}) {', '.join(LATEST_COLUMNS)} FROM intervals "
            f"WHERE start >= ? AND start < ? {where} ORDER BY {key}, version DESC"
        )
        size = FETCH_ROWS if psycopg.pq.version() >= 170000 else 1  # chunked results came with libpq 17
        with self._guard("read"), self._conn.cursor(binary=True) as cur:
            yield from cur.stream(statement, [t0, t1, *args], size=size)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._guard("write"), self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            yield

    def insert(self, table: str, rows: Iterable[tuple[Any, ...]]) -> None:
        cols = BULK_COLUMNS[table]
        with self._guard("write"):
            types = self._column_types(table, cols)
            with (
                self._conn.cursor() as cur,
                cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)

    def _column_types(self, table: str, cols: tuple[str, ...]) -> list[str]:
        if table not in self._types:
            found = dict(
                self._conn.execute(
                    "SELECT attname, atttypid::regtype::text FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 0 AND NOT attisdropped",
                    (table,),
                ).fetchall()
            )
            self._types[table] = [found[c] for c in cols]
        return self._types[table]

    def close(self) -> None:
        self._conn.close()
