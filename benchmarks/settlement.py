"""A settlement run of 1,000 meters x 30 days of 15-minute intervals (2.88 M intervals) on central's SQLite store and
on its PostgreSQL store, side by side, with floors.

    .venv/bin/python benchmarks/settlement.py [--meters 1000] [--days 30] [--per-feeder 100]
        [--backends sqlite,postgresql] [--pg-url postgresql://postgres@127.0.0.1:5432/postgres] [--dir DIR]

The data, the same rows on both (not timed): central's ``intervals`` table, in a real SQLite file (WAL, as
central/store.py opens it; filled with ``executemany``) and in a new PostgreSQL database (``gridedge_bench_<random>``
on the ``--pg-url`` server, dropped after; the store's migrations, the monthly partitions the ingest would have made,
filled with ``COPY``, then ``ANALYZE`` as autovacuum would). ``--meters`` registers in feeders of ``--per-feeder``
(one head each, whose energy is the sum of its downstream meters plus 1 % losses), each interval with its register
values at start and end (so the sum check runs on every complete day), a null gap of 3 hours on one day of every
tenth meter, a negative interval on every 50th meter and a frozen run on every 70th.

Timed, per backend, through central/settlement/db.py as ``gridedge central settle`` runs it: ``settle`` of a
``preliminary`` run over the period, VEE (every rule, like-day estimation with the register-advance scaling) and
reconciliation of every feeder, storing the run's rows (``executemany`` on SQLite, binary ``COPY`` on PostgreSQL);
and before it ``compute`` alone (read + VEE + reconciliation, nothing stored). Both runs must give the same summary.

Target: the settle under 60 s on either backend. Source: the settlement analyst's need: a month's preliminary run is
redone after each late batch of reads or correction, so it must come back while the analyst waits, on central's one
machine.

Floors, same store, same rows:
- ``read``: the same latest-version query (SQLite's GROUP BY, PostgreSQL's DISTINCT ON), streamed, three columns
  into numpy;
- ``scan``: a plain ``SELECT value, reg_start, reg_end FROM intervals`` into numpy (no version handling);
- ``pandas``: a pandas groupby of the same values by meter and day (the day totals the sum and high/low rules
  need), on a DataFrame already in memory, when pandas is installed.
Ratios: PostgreSQL / SQLite per row, and settle / floor. Besides wall time, the settle's CPU-seconds in this
process (all of SQLite's work; on PostgreSQL the server's processes do the sorting and writing, outside it: they are
not under this process's ``nice`` either, so on a loaded machine the wall times favour PostgreSQL). The peak memory
printed is the process's through the first backend's settle, before the floors run (they fetch every row at once).
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import emit  # noqa: E402

from central.settlement.config import Feeder, SettlementConfig  # noqa: E402
from central.settlement.data import DAY_S  # noqa: E402
from central.settlement.db import LATEST_COLUMNS, open_settlement_db  # noqa: E402
from central.settlement.runs import compute, settle  # noqa: E402
from central.store import INTERVAL_COLUMNS, POSTGRES_SCHEMES, open_store  # noqa: E402

DAY0 = 1_764_547_200  # 2025-12-01 00:00 UTC
QH = 900
SITE = "bench"
REG = "energy_delivered_wh"
TARGET_S = 60.0  # the settle's wall time (the module docstring)
BACKENDS = ("sqlite", "postgresql")


def fill(target: Path | str, meters: int, days: int, per_feeder: int) -> list[Feeder]:
    """The benchmark's intervals in the store ``target`` (a SQLite file or a PostgreSQL URL); the feeders."""
    open_store(target).close()  # central's schema (PostgreSQL: its migrations)
    pg = isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)
    writer = _PgWriter(target, days) if pg else _SqliteWriter(Path(target))
    rng = np.random.default_rng(1)
    n = days * 96
    slot = np.arange(n) % 96
    shape = 0.6 + 0.4 * np.sin((slot - 30) / 96 * 2 * np.pi).clip(-0.5, 1)
    starts = DAY0 + np.arange(n) * QH
    feeders: list[Feeder] = []
    m = 0
    f = 0
    try:
        while m < meters:
            down = min(per_feeder - 1, meters - m - 1)
            head_value = np.zeros(n)
            names = [f"f{f}-m{i}" for i in range(down)]
            for name in names:
                v = np.round(shape * rng.uniform(0.5, 3.0) * rng.uniform(0.9, 1.1, n), 4)
                head_value += v
                writer.write(_rows(name, starts, v, m))
                m += 1
            head_value = np.round(head_value * 1.01, 4)
            writer.write(_rows(f"f{f}-head", starts, head_value, -1))
            m += 1
            feeders.append(
                Feeder(f"f{f}", (SITE, f"f{f}-head", REG), tuple((SITE, x, REG) for x in names), 0.01 / 1.01)
            )
            f += 1
    finally:
        writer.close()
    return feeders


def _rows(meter: str, starts: np.ndarray, v: np.ndarray, index: int) -> list[tuple[Any, ...]]:
    quality = np.full(v.size, "A")
    value: list[float | None] = v.tolist()
    reg = np.concatenate(([1e6], 1e6 + np.cumsum(v) * 1000.0))
    reg_start, reg_end = reg[:-1].tolist(), reg[1:].tolist()
    # each anomaly where the period has room for it (--days 15 or more holds all three)
    if index >= 0 and index % 10 == 0 and v.size >= 15 * 96:  # a 3-hour gap, null from the edge, on day 14
        for i in range(14 * 96 + 40, 14 * 96 + 52):
            value[i], quality[i], reg_start[i], reg_end[i] = None, "N", None, None
    if index >= 0 and index % 50 == 0 and v.size > 100:
        value[100] = -1.0
    if index >= 0 and index % 70 == 0 and v.size >= 512:
        for i in range(500, 512):
            value[i] = 2.5
    q = quality.tolist()
    s = starts.tolist()
    return [
        (SITE, meter, REG, s[i], 1, s[i] + QH, "kwh_delivered", value[i], "kWh", q[i], None, "[]", "[]", "SN",
         reg_start[i], reg_end[i], s[i] - 1.0, s[i] + QH + 1.0, "bench", 0.0, 0.001, 2.0**32)
        for i in range(len(s))
    ]  # fmt: skip


class _SqliteWriter:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        cols = ", ".join(INTERVAL_COLUMNS)
        self.sql = f"INSERT INTO intervals ({cols}) VALUES ({', '.join('?' * len(INTERVAL_COLUMNS))})"

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(self.sql, rows)
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


class _PgWriter:
    """COPY into ``intervals``, after making the monthly partitions the ingest makes for the rows it stores (as
    central/store_pg.py names and bounds them), so the rows land where the ingest's would; one transaction."""

    def __init__(self, url: str, days: int) -> None:
        import psycopg
        from psycopg import sql

        from central.store_pg import month_bounds, month_of, partition_name

        self.conn = psycopg.connect(url)
        first, last = month_of(DAY0), month_of(DAY0 + days * DAY_S - 1)
        assert first is not None and last is not None
        for month in range(first, last + 1):
            lo, hi = month_bounds(month)
            self.conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF intervals FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(partition_name("intervals", month)), sql.Literal(lo), sql.Literal(hi)
                )
            )
        self.copy_sql = f"COPY intervals ({', '.join(INTERVAL_COLUMNS)}) FROM STDIN"

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        with self.conn.cursor() as cur, cur.copy(self.copy_sql) as copy:
            for row in rows:
                copy.write_row(row)

    def close(self) -> None:
        self.conn.execute("ANALYZE intervals")
        self.conn.commit()
        self.conn.close()


@contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    """A new database on the ``admin_url`` server; yields its URL and drops it after."""
    import psycopg

    name = f"gridedge_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def store(backend: str, tmp: Path, pg_url: str) -> Iterator[Path | str]:
    if backend == "sqlite":
        yield tmp / "central.db"
    else:
        with pg_database(pg_url) as url:
            yield url


def measure(target: Path | str, args: argparse.Namespace) -> dict[str, Any]:
    """Fill ``target``, then time compute, settle and the floors on it."""
    t = time.perf_counter()
    feeders = fill(target, args.meters, args.days, args.per_feeder)
    out: dict[str, Any] = {"fill": time.perf_counter() - t}
    t0, t1 = DAY0, DAY0 + args.days * DAY_S
    cfg = SettlementConfig(feeders=tuple(feeders))
    db = open_settlement_db(target)
    try:
        t = time.perf_counter()
        compute(db, cfg, t0, t1)
        out["compute"] = time.perf_counter() - t
        t, cpu = time.perf_counter(), time.process_time()
        run = settle(db, cfg, t0, t1, "preliminary", time.time())
        out["settle"] = time.perf_counter() - t
        out["settle_cpu"] = time.process_time() - cpu
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["summary"] = run.summary
        value, start, end = (
            LATEST_COLUMNS.index("value"),
            LATEST_COLUMNS.index("reg_start"),
            LATEST_COLUMNS.index("reg_end"),
        )
        t = time.perf_counter()
        arr = np.array([(r[value], r[start], r[end]) for r in db.latest_intervals(t0, t1)], dtype=float)
        out["read"] = time.perf_counter() - t
        out["values"] = arr[:, 0]
        del arr
        t = time.perf_counter()
        scan = db._rows("SELECT value, reg_start, reg_end FROM intervals")  # the seam's plain query, same driver
        _ = np.asarray(scan, dtype=float)
        out["scan"] = time.perf_counter() - t
        del scan
    finally:
        db.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--per-feeder", type=int, default=100)
    ap.add_argument("--backends", default=",".join(BACKENDS), help="sqlite, postgresql or both (comma-separated)")
    ap.add_argument(
        "--pg-url", default=os.environ.get("GRIDEDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server where a database can be created and dropped",
    )  # fmt: skip
    ap.add_argument("--dir", default=None, help="folder for the SQLite file (default: a temporary one)")
    args = ap.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in BACKENDS:
            ap.error(f"--backends: {b!r} is not one of {', '.join(BACKENDS)}")
    if "postgresql" in backends:
        import psycopg

        try:
            psycopg.connect(args.pg_url, autocommit=True, connect_timeout=5).close()
        except psycopg.OperationalError as err:
            print(f"--pg-url = {args.pg_url}: not reachable ({str(err).strip()}); start PostgreSQL (trust auth for "
                  "postgres on 127.0.0.1) or run --backends sqlite", file=sys.stderr)  # fmt: skip
            return 2
    n = args.meters * args.days * 96
    res: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for b in backends:
            with store(b, Path(tmp), args.pg_url) as target:
                res[b] = measure(target, args)
            print(f"{b}: filled {args.meters} meters x {args.days} days x 96 = {n:,} intervals in "
                  f"{res[b]['fill']:.1f} s; settled in {res[b]['settle']:.1f} s", flush=True)  # fmt: skip

    first = res[backends[0]]
    s = first["summary"]
    print(f"run: {s['registers']} registers, {s['intervals']:,} intervals, quality {s['quality']}, "
          f"failed {s['failed_checks']}, reconciliation rate {s['reconciliation_rate']}")  # fmt: skip
    if len(res) == 2:
        same = {k: v for k, v in res["sqlite"]["summary"].items() if k != "run_id"} == {
            k: v for k, v in res["postgresql"]["summary"].items() if k != "run_id"
        }
        print(f"same summary on both backends: {same}")

    floor_pandas = None
    try:
        import pandas as pd

        meter_ix = np.repeat(np.arange(args.meters), args.days * 96)
        day_ix = np.tile(np.repeat(np.arange(args.days), 96), args.meters)
        df = pd.DataFrame({"meter": meter_ix, "day": day_ix, "value": first["values"]})
        t = time.perf_counter()
        df.groupby(["meter", "day"])["value"].agg(["sum", "count"])
        floor_pandas = time.perf_counter() - t
    except ImportError:
        pass

    rows = [("settle (read, VEE, reconcile, store run)", "settle"), ("  its CPU in this process (central's)", "settle_cpu"),
            ("compute (read, VEE, reconcile; no store)", "compute"),
            ("floor read: same latest-version query, numpy", "read"), ("floor scan: plain SELECT into numpy", "scan")]  # fmt: skip
    head = "".join(f"{b + ' s':>13}" for b in backends)
    print(f"{'what':<46}{head}" + (f"{'pg / sqlite':>13}" if len(res) == 2 else ""))
    for label, key in rows:
        cells = "".join(f"{res[b][key]:>13.2f}" for b in backends)
        ratio = f"{res['postgresql'][key] / res['sqlite'][key]:>12.2f}x" if len(res) == 2 else ""
        print(f"{label:<46}{cells}{ratio}")
    for b in backends:
        r = res[b]
        print(f"{b}: settle / floor read {r['settle'] / r['read']:.1f}x, settle / floor scan "
              f"{r['settle'] / r['scan']:.1f}x" + (f", settle / pandas {r['settle'] / floor_pandas:.0f}x"
                                                     if floor_pandas else ""))  # fmt: skip
    print(f"peak memory of the process through the first settle ({backends[0]}): {first['peak_mb']:.0f} MB (ru_maxrss)")
    if floor_pandas is not None:
        print(f"floor pandas: groupby meter+day in memory {floor_pandas:.2f} s")
    size = f"{args.meters} meters x {args.days} days"
    if "sqlite" in res:
        r = res["sqlite"]
        emit(f"settle {size} on SQLite", r["settle"], r["read"], r["settle"] / r["read"],
             "s (peer: the same SELECT into numpy)", f"< {TARGET_S:g} s", r["settle"] < TARGET_S)  # fmt: skip
    if "postgresql" in res:
        r = res["postgresql"]
        peer = res["sqlite"]["settle"] if "sqlite" in res else None
        emit(f"settle {size} on PostgreSQL", r["settle"], peer, r["settle"] / peer if peer else None,
             "s (peer: the same settle on SQLite)", f"< {TARGET_S:g} s", r["settle"] < TARGET_S)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
