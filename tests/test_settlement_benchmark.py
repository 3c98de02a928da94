"""The settlement benchmark's data (benchmarks/settlement.py ``fill``), small: every anomaly it plants is found by
VEE exactly where it was planted, so the benchmark times a run that does all its work; on both stores, as the
benchmark fills and settles both."""

from __future__ import annotations

from pathlib import Path

from helpers.benchmod import load_benchmark
from helpers.stores import target_fixture  # noqa: F401 (the target fixture)

from central.settlement.config import SettlementConfig
from central.settlement.db import open_settlement_db
from central.settlement.runs import settle

ROOT = Path(__file__).resolve().parent.parent


def _benchmark():
    return load_benchmark("settlement.py")


def test_the_benchmark_plants_gaps_negatives_and_frozen_runs_that_vee_finds(target: Path | str) -> None:
    bench = _benchmark()
    feeders = bench.fill(target, 20, 16, 10)  # 2 feeders of a head and 9 meters, 16 days
    assert [len(f.downstream) for f in feeders] == [9, 9]
    db = open_settlement_db(target)
    run = settle(db, SettlementConfig(feeders=tuple(feeders)), bench.DAY0, bench.DAY0 + 16 * 86_400, "final", 1.0)
    db.close()
    s = run.summary
    # meters 0 and 10 have a 12-interval gap on day 14, filled from like days (days 7 and 0): 24 S15
    # meter 0 has a negative interval (day 1) and 12 frozen ones (day 5): replaced, but no like day that early: 13 N
    assert s["quality"] == {"A": 20 * 16 * 96 - 24 - 13, "S": 24, "N": 13}
    assert s["failed_checks"]["negative"] == 1 and s["failed_checks"]["frozen"] == 12
    assert s["failed_checks"]["sum"] == 2 * 96  # the two days whose values no longer match the register
    # feeder f1 is complete: its gap's estimate was scaled to the register advance, so no energy goes missing
    f1 = s["feeders"][1]
    assert f1["complete"] == f1["intervals"] == 16 * 96 and abs(f1["unaccounted_kwh"]) < 0.01
