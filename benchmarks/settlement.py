"""A settlement run of 1,000 meters x 30 days of 15-minute intervals (2.88 M intervals), side by side with floors.

    .venv/bin/python benchmarks/settlement.py [--meters 1000] [--days 30] [--per-feeder 100] [--dir DIR]

The data: central's ``intervals`` table in a real SQLite file (WAL, as central/store.py opens it), filled with
``executemany`` (not timed): ``--meters`` registers in feeders of ``--per-feeder`` (one head each, whose energy is the
sum of its downstream meters plus 1 % losses), each interval with its register values at start and end (so the sum
check runs on every complete day), a null gap of 3 hours on one day of every tenth meter, a negative interval on
every 50th meter and a frozen run on every 70th.

Timed: ``central.settlement.runs.settle`` of a ``preliminary`` run over the 30 days, VEE (every rule, like-day
estimation with the register-advance scaling) and reconciliation of every feeder, storing the run's 2.88 M rows;
and inside it, ``compute`` alone (read + VEE + reconciliation, nothing stored).

Target: the settle under 60 s. Source: the settlement analyst's need: a month's preliminary run is redone after
each late batch of reads or correction, so it must come back while the analyst waits, on central's one machine.

Floors, same file, same rows:
- ``read``: the same ``SELECT`` (latest version per interval, GROUP BY), streamed, three columns into numpy;
- ``scan``: a plain ``SELECT value, reg_start, reg_end FROM intervals`` into numpy (no version handling);
- ``pandas``: a pandas groupby of the same values by meter and day (the day totals the sum and high/low rules
  need), on a DataFrame already in memory, when pandas is installed.
Ratios are settle / floor. The peak memory printed is the process's through the settle, before the floors run
(they fetch every row at once).
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import emit  # noqa: E402

from central.settlement.config import Feeder, SettlementConfig  # noqa: E402
from central.settlement.data import DAY_S  # noqa: E402
from central.settlement.runs import compute, settle  # noqa: E402
from central.store import INTERVAL_COLUMNS, CentralStore  # noqa: E402

DAY0 = 1_764_547_200  # 2025-12-01 00:00 UTC
QH = 900
SITE = "bench"
REG = "energy_delivered_wh"
TARGET_S = 60.0  # the settle's wall time (the module docstring)


def fill(db_path: Path, meters: int, days: int, per_feeder: int) -> list[Feeder]:
    CentralStore(db_path).close()  # central's schema
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    rng = np.random.default_rng(1)
    n = days * 96
    slot = np.arange(n) % 96
    shape = 0.6 + 0.4 * np.sin((slot - 30) / 96 * 2 * np.pi).clip(-0.5, 1)
    starts = DAY0 + np.arange(n) * QH
    sql = f"INSERT INTO intervals ({', '.join(INTERVAL_COLUMNS)}) VALUES ({', '.join('?' * len(INTERVAL_COLUMNS))})"
    feeders: list[Feeder] = []
    m = 0
    f = 0
    while m < meters:
        down = min(per_feeder - 1, meters - m - 1)
        head_value = np.zeros(n)
        names = [f"f{f}-m{i}" for i in range(down)]
        for name in names:
            v = np.round(shape * rng.uniform(0.5, 3.0) * rng.uniform(0.9, 1.1, n), 4)
            head_value += v
            _insert(db, sql, name, starts, v, m)
            m += 1
        head_value = np.round(head_value * 1.01, 4)
        _insert(db, sql, f"f{f}-head", starts, head_value, -1)
        m += 1
        feeders.append(Feeder(f"f{f}", (SITE, f"f{f}-head", REG), tuple((SITE, x, REG) for x in names), 0.01 / 1.01))
        f += 1
    db.close()
    return feeders


def _insert(db: sqlite3.Connection, sql: str, meter: str, starts: np.ndarray, v: np.ndarray, index: int) -> None:
    quality = np.full(v.size, "A")
    value: list[float | None] = v.tolist()
    reg = np.concatenate(([1e6], 1e6 + np.cumsum(v) * 1000.0))
    reg_start, reg_end = reg[:-1].tolist(), reg[1:].tolist()
    if index >= 0 and index % 10 == 0:  # a 3-hour gap, null from the edge, on day 14
        for i in range(14 * 96 + 40, 14 * 96 + 52):
            value[i], quality[i], reg_start[i], reg_end[i] = None, "N", None, None
    if index >= 0 and index % 50 == 0:
        value[100] = -1.0
    if index >= 0 and index % 70 == 0:
        for i in range(500, 512):
            value[i] = 2.5
    q = quality.tolist()
    s = starts.tolist()
    rows = [
        (SITE, meter, REG, s[i], 1, s[i] + QH, "kwh_delivered", value[i], "kWh", q[i], None, "[]", "[]", "SN",
         reg_start[i], reg_end[i], s[i] - 1.0, s[i] + QH + 1.0, "bench", 0.0, 0.001, 2.0**32)
        for i in range(len(s))
    ]  # fmt: skip
    db.execute("BEGIN")
    db.executemany(sql, rows)
    db.execute("COMMIT")


def _latest_sql(t0: int, t1: int) -> tuple[str, list[int]]:
    """The query central/settlement/data.py streams: the latest version of each interval in [t0, t1)."""
    from central.settlement.data import _SQL

    return _SQL.format(where=""), [t0, t1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--per-feeder", type=int, default=100)
    ap.add_argument("--dir", default=None, help="folder for the db (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "central.db"
        t = time.perf_counter()
        feeders = fill(path, args.meters, args.days, args.per_feeder)
        print(f"filled {args.meters} meters x {args.days} days x 96 = {args.meters * args.days * 96:,} intervals "
              f"in {time.perf_counter() - t:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")  # fmt: skip
        t0, t1 = DAY0, DAY0 + args.days * DAY_S
        cfg = SettlementConfig(feeders=tuple(feeders))
        db = sqlite3.connect(path, isolation_level=None)

        t = time.perf_counter()
        compute(db, cfg, t0, t1)
        t_compute = time.perf_counter() - t
        t = time.perf_counter()
        run = settle(db, cfg, t0, t1, "preliminary", time.time())
        t_settle = time.perf_counter() - t
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the floors fetch every row
        t = time.perf_counter()
        cur = db.execute(*_latest_sql(t0, t1))
        arr = np.array([(r[8], r[12], r[13]) for r in cur], dtype=float)  # streamed, as load_grids reads it
        value = arr[:, 0]
        floor_read = time.perf_counter() - t
        del arr

        t = time.perf_counter()
        scan = db.execute("SELECT value, reg_start, reg_end FROM intervals").fetchall()
        _ = np.asarray(scan, dtype=float)
        floor_scan = time.perf_counter() - t
        del scan

        floor_pandas = None
        try:
            import pandas as pd

            meter_ix = np.repeat(np.arange(args.meters), args.days * 96)
            day_ix = np.tile(np.repeat(np.arange(args.days), 96), args.meters)
            df = pd.DataFrame({"meter": meter_ix, "day": day_ix, "value": value})
            t = time.perf_counter()
            df.groupby(["meter", "day"])["value"].agg(["sum", "count"])
            floor_pandas = time.perf_counter() - t
        except ImportError:
            pass

        db.close()
    s = run.summary
    print(f"run: {s['registers']} registers, {s['intervals']:,} intervals, quality {s['quality']}, "
          f"failed {s['failed_checks']}, reconciliation rate {s['reconciliation_rate']}")  # fmt: skip
    print(f"{'what':<44}{'s':>8}{'ratio':>9}")
    print(f"{'settle (read, VEE, reconcile, store run)':<44}{t_settle:>8.2f}{'':>9}   target < {TARGET_S:g} s")
    print(f"{'compute (read, VEE, reconcile; no store)':<44}{t_compute:>8.2f}{'':>9}")
    print(f"peak memory of the process through settle: {peak_mb:.0f} MB (ru_maxrss)")
    print(f"{'floor read: same SELECT into numpy':<44}{floor_read:>8.2f}{t_settle / floor_read:>8.1f}x")
    print(f"{'floor scan: plain SELECT into numpy':<44}{floor_scan:>8.2f}{t_settle / floor_scan:>8.1f}x")
    if floor_pandas is not None:
        print(f"{'floor pandas: groupby meter+day in memory':<44}{floor_pandas:>8.2f}{t_settle / floor_pandas:>8.1f}x")
    emit(
        f"settle {args.meters} meters x {args.days} days",
        t_settle,
        floor_read,
        t_settle / floor_read,
        "s (peer: the same SELECT into numpy)",
        f"< {TARGET_S:g} s",
        t_settle < TARGET_S,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
