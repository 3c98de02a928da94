"""The outbox path, side by side with its naive baseline.

    .venv/bin/python benchmarks/outbox.py [--readings 500000] [--per-call 1000] [--naive 20000]

Store half (``bench_store``): readings stored per second through ``Store.add_readings`` (one transaction
and one ``executemany`` per call) against sqlite-utils ``table.insert(row)`` per reading on the same kind
of file (WAL, synchronous=NORMAL, so the ratio measures batching, not durability settings; measured on
fewer rows and given as a rate); and ``seal()``: readings sealed into JSON payloads per second against
encoding the same items with ``encode_batch`` alone (no SQL: the floor the store's overhead sits on).
Target (issue 2): >= 100,000 readings/s stored.

Each ``bench_*`` function returns rows ``(what, ours_label, ours_rate, baseline_label, baseline_rate,
unit)``; ``main`` prints them all in one table with the ratio ours / baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlite_utils  # noqa: E402

from agent.points import Reading, Stream  # noqa: E402
from agent.store import Store  # noqa: E402
from protocols.telemetry.schema import encode_batch  # noqa: E402

Row = tuple[str, str, float, str, float, str]


def make_readings(n: int) -> list[Reading]:
    """A realistic mix: 20 points per device, one energy register in 50 readings."""
    t0 = 1_700_000_000.0
    return [
        Reading(f"meter{i % 7}.kwh", t0 + i * 0.001, 1000.0 + i, "kWh", stream=Stream.ENERGY)
        if i % 50 == 0
        else Reading(f"meter{i % 7}.p{i % 20}", t0 + i * 0.001, 120.0 + (i % 100) / 10, "V")
        for i in range(n)
    ]


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_store(total: int = 500_000, per_call: int = 1000, naive: int = 20_000, batch_size: int = 500) -> list[Row]:
    readings = make_readings(total)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gridedge-bench-") as tmp:
        tmpdir = Path(tmp)

        def add_all(store: Store, items: list[Reading]) -> None:
            for i in range(0, len(items), per_call):
                store.add_readings(items[i : i + per_call])

        store = Store(tmpdir / "ours.db", "bench", 1 << 40, batch_size=batch_size)
        t_add = _timed(lambda: add_all(store, readings))
        sealed = 0

        def seal_all() -> None:
            nonlocal sealed
            sealed = store.seal(force=True)

        t_seal = _timed(seal_all)
        sealed_items = store.stats().outbox_readings
        assert sealed_items == total and sealed > 0
        store.close()

        durable = Store(tmpdir / "durable.db", "bench", 1 << 40, batch_size=batch_size, durable=True)
        n_durable = min(total, 100_000)
        t_durable = _timed(lambda: add_all(durable, readings[:n_durable]))
        durable.close()

        db = sqlite_utils.Database(tmpdir / "naive.db")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        table = db["readings"]
        table.create(
            {"id": int, "stream": str, "point": str, "ts": float, "value": float, "unit": str, "quality": str}, pk="id"
        )
        dict_rows = [
            {"stream": r.stream.value, "point": r.point, "ts": r.ts, "value": r.value, "unit": r.unit,
             "quality": r.quality.value}
            for r in readings[:naive]
        ]  # fmt: skip

        def insert_each() -> None:
            for row in dict_rows:
                table.insert(row)

        t_naive = _timed(insert_each)
        db.close()

        # the floor under seal(): JSON-encoding the same items in batches, no SQL at all
        items = [
            {"point": r.point, "ts": r.ts, "value": r.value, "unit": r.unit, "quality": r.quality.value}
            for r in readings
        ]

        def encode_all() -> None:
            for seq, i in enumerate(range(0, len(items), batch_size), 1):
                encode_batch("bench", "telemetry", seq, f"{seq:032x}", 0.0, items[i : i + batch_size])

        t_encode = _timed(encode_all)

    rows.append(
        (f"store {total:,} readings", f"add_readings x{per_call}", total / t_add,
         "sqlite-utils insert/row", naive / t_naive, "readings/s")
    )  # fmt: skip
    rows.append(
        (f"store {n_durable:,}, durable", f"add_readings x{per_call} FULL", n_durable / t_durable,
         "sqlite-utils insert/row", naive / t_naive, "readings/s")
    )  # fmt: skip
    rows.append(
        (f"seal {total:,} readings", f"seal() into {sealed} msgs", total / t_seal,
         "encode_batch only", total / t_encode, "readings/s")
    )  # fmt: skip
    return rows


def print_table(rows: list[Row]) -> None:
    header = f"{'measure':28}{'ours':>30}{'rate':>14}{'baseline':>26}{'rate':>14}{'ratio':>9}  unit"
    print(header)
    print("-" * len(header))
    for what, ours_label, ours, base_label, base, unit in rows:
        print(f"{what:28}{ours_label:>30}{ours:14,.0f}{base_label:>26}{base:14,.0f}{ours / base:9.2f}  {unit}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=500_000, help="readings stored through the Store")
    ap.add_argument("--per-call", type=int, default=1000, help="readings per add_readings call")
    ap.add_argument("--naive", type=int, default=20_000, help="readings inserted one by one by the baseline")
    args = ap.parse_args()
    rows = bench_store(args.readings, args.per_call, args.naive)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
