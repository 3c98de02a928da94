"""What the report reads, and how: central's store through its two existing seams, so the report runs on SQLite
and PostgreSQL alike (docs/report.md, "Sources").

- ``central.store.open_store``: readings of a point (``point_readings``), the commands table (``commands``),
  dispatch's rounds (``dispatch_runs``);
- ``central.settlement.db.open_settlement_db``: metered intervals (``latest_intervals``), schedules
  (``scheduled``), and plain SQL that both stores answer the same way (the forecasts table, the PMU points of a
  site).

A day is the UTC day [00:00, 24:00) of ``--day``: the intervals, schedules, forecasts and commands are all keyed
in UTC, and one UTC day is 96 intervals every day of the year (a local day has 92 or 100 on DST changes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from central.config import CentralConfig
from central.settlement.db import SettlementDb, open_settlement_db
from central.store import Store, open_store

DAY_S = 86_400
STEP_S = 900  # the report's interval: 15 minutes, as forecasts, schedules and settlement
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ReportError(ValueError):
    """Bad input for the report (the text names the flag or key and what is allowed)."""


def parse_day(text: str) -> int:
    """``YYYY-MM-DD`` -> the UTC day's start [unix s]; ReportError naming --day."""
    if not _DAY_RE.match(text or ""):
        raise ReportError(f"--day = {text!r}: a date YYYY-MM-DD (the UTC day), e.g. 2026-12-07")
    try:
        d = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as err:
        raise ReportError(f"--day = {text!r}: not a calendar date ({err})") from None
    return int(d.timestamp())


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Section:
    """One metric: ``rows`` are printed and written (``<name>.csv``); ``detail`` (per interval) only written
    (``<name>_intervals.csv``); ``notes`` say what had no data and why."""

    name: str
    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    detail: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "rows": self.rows, "intervals": self.detail, "notes": self.notes}


class Inputs:
    """The store opened twice (its two seams); ``close`` closes both."""

    def __init__(self, config: CentralConfig) -> None:
        self.config = config
        self.store: Store = open_store(config.store_target)
        try:
            self.db: SettlementDb = open_settlement_db(config.store_target)
        except BaseException:
            self.store.close()
            raise

    def sql(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of plain SQL with ``?`` placeholders that both stores answer alike (the settlement seam's reader)."""
        return self.db._rows(statement, args)  # noqa: SLF001 - the seam's one shared reader

    def close(self) -> None:
        self.store.close()
        self.db.close()


def sites_of(config: CentralConfig) -> list[str]:
    """Every site the configuration names: dispatch's sites, then the forecast feeders' sites."""
    out: list[str] = []
    if config.dispatch is not None:
        out += [s.site for s in config.dispatch.sites]
    out += [f.site for f in config.forecast.feeders]
    return list(dict.fromkeys(out))
