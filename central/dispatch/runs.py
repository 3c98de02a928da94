"""One row per dispatch round in ``dispatch_runs``: the plan's cost and the no-dispatch plan's cost, so that
``gridedge central report`` can set the day's dispatch against its no-dispatch baseline (docs/report.md, "Energy
cost").

The no-dispatch baseline is dispatch's own evaluation (central/dispatch/optimise.py ``evaluate`` with nothing
moved: inverters uncurtailed at zero vars, banks where they start, no CVR) of the same forecast and prices the
round solved with. ``first_cost`` and ``first_cost_no_dispatch`` are those of the round's first interval: the one
whose commands the round sends. Costs in the price's currency: energy at the head, losses and wear, as
``Solution.cost`` counts them. Table in central's SQLite store (dispatch runs on SQLite only).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

RUNS_SCHEMA = """
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
RUN_COLUMNS = ("feeder", "issued", "horizon_start", "interval_s", "intervals", "cost", "cost_no_dispatch",
               "first_cost", "first_cost_no_dispatch")  # fmt: skip


@dataclass(frozen=True, slots=True)
class DispatchRun:
    feeder: str
    issued: float  # unix s UTC
    horizon_start: int  # the first interval's start
    interval_s: int
    intervals: int
    cost: float  # the plan over the whole horizon
    cost_no_dispatch: float
    first_cost: float  # the plan's first interval (the one sent)
    first_cost_no_dispatch: float


def record_run(db_path: Path, run: DispatchRun) -> None:
    """Store one round's costs (its own connection: called from a worker thread)."""
    db = sqlite3.connect(db_path, timeout=30)
    try:
        with db:
            db.executescript(RUNS_SCHEMA)
            db.execute(f"INSERT OR REPLACE INTO dispatch_runs ({', '.join(RUN_COLUMNS)}) VALUES "
                       f"({', '.join('?' * len(RUN_COLUMNS))})",
                       tuple(getattr(run, c) for c in RUN_COLUMNS))  # fmt: skip
    finally:
        db.close()


__all__ = ["RUNS_SCHEMA", "RUN_COLUMNS", "DispatchRun", "record_run"]
