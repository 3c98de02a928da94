"""One row per dispatch round in ``dispatch_runs``: the plan's cost and the no-dispatch plan's cost, so that
``gridedge central report`` can set the day's dispatch against its no-dispatch baseline (docs/report.md, "Energy
cost").

The no-dispatch baseline is dispatch's own evaluation (central/dispatch/optimise.py ``evaluate`` with nothing
moved: inverters uncurtailed at zero vars, banks where they start, no CVR) of the same forecast and prices the
round solved with. ``first_cost`` and ``first_cost_no_dispatch`` are those of the round's first interval: the one
whose commands the round sends. Costs in the price's currency: energy at the head, losses and wear, as
``Solution.cost`` counts them.

The table is central's store's, on SQLite or PostgreSQL alike: created with the store's other tables
(central/store.py ``DISPATCH_RUNS_SCHEMA``; PostgreSQL's migration 4 in central/store_pg.py), written with
``Store.record_dispatch_run`` and read with ``Store.dispatch_runs``.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from pathlib import Path

from central.store import DISPATCH_RUN_COLUMNS, open_store


@dataclass(frozen=True, slots=True)
class DispatchRun:
    """Fields in ``DISPATCH_RUN_COLUMNS`` order."""

    feeder: str
    issued: float  # unix s UTC
    horizon_start: int  # the first interval's start
    interval_s: int
    intervals: int
    cost: float  # the plan over the whole horizon
    cost_no_dispatch: float
    first_cost: float  # the plan's first interval (the one sent)
    first_cost_no_dispatch: float


assert tuple(DispatchRun.__dataclass_fields__) == DISPATCH_RUN_COLUMNS  # the row is the dataclass in order


def record_run(target: str | Path, run: DispatchRun) -> None:
    """Store one round's costs in the store ``target`` names (``open_store``'s argument), on a connection of its
    own: called from a worker thread. Raises CentralStoreError naming the store."""
    store = open_store(target)
    try:
        store.record_dispatch_run(astuple(run))
    finally:
        store.close()


__all__ = ["DispatchRun", "record_run"]
