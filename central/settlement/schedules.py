"""Scheduled energy per meter and interval, and the imbalance of a settlement run against it (docs/settlement.md,
"Imbalance").

A schedule says how much energy a meter's channel is expected to carry in each clock-aligned interval: what a
dispatch plan, a nomination or a contract position promised. Schedules come in as CSV files
(``gridedge central schedule import``) or from central's own dispatch, each import a new version of the intervals
it names: the latest version of an interval is the one settled against, and nothing is overwritten.

Imbalance = metered - scheduled [kWh or kvarh], per interval where both exist, on the value the run settled (after
VEE): positive when more energy flowed in the channel's direction than scheduled. An interval scheduled but
without a metered value counts as ``unmetered``, not as zero.

Table ``schedules`` (site, meter, channel, start, version, end_ts, energy, source, imported) in central's store
(SQLite or PostgreSQL, through central/settlement/db.py).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from central.settlement.db import SettlementDb
from protocols.telemetry.intervals import CHANNELS, INTERVAL_LENGTHS_S
from protocols.telemetry.schema import valid_site

CSV_COLUMNS = ("site", "meter", "channel", "start", "end", "energy")
MAX_ROWS = 5_000_000  # one import; a month of 15-minute intervals for 1,700 meters


class ScheduleError(ValueError):
    """A schedule that cannot be taken; the text names the row and column. Nothing of that import is stored."""


@dataclass(frozen=True, slots=True)
class ScheduledInterval:
    site: str
    meter: str
    channel: str
    start: int
    end: int
    energy: float  # kWh (kvarh for the kvarh channels)


def parse_csv(text: str, parse_time: Any) -> list[ScheduledInterval]:
    """The rows of a schedule CSV (header ``site,meter,channel,start,end,energy``; times as ``parse_time`` reads
    them: ISO-8601 UTC or epoch seconds); ScheduleError naming every bad row (the first 20)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != list(CSV_COLUMNS):
        raise ScheduleError(f"header = {header!r:.120}: must be {','.join(CSV_COLUMNS)}")
    out: list[ScheduledInterval] = []
    issues: list[str] = []
    seen: set[tuple[str, str, str, int]] = set()
    for n, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(out) >= MAX_ROWS:
            raise ScheduleError(f"more than {MAX_ROWS} rows: split the file")
        try:
            item = _row(row, parse_time)
        except ValueError as err:
            issues.append(f"line {n}: {err}")
            if len(issues) >= 20:
                break
            continue
        key = (item.site, item.meter, item.channel, item.start)
        if key in seen:
            issues.append(f"line {n}: {item.site}/{item.meter}/{item.channel} at {item.start} is given twice")
            continue
        seen.add(key)
        out.append(item)
    if issues:
        raise ScheduleError("; ".join(issues))
    if not out:
        raise ScheduleError("no rows after the header")
    return out


def _row(row: Sequence[str], parse_time: Any) -> ScheduledInterval:
    if len(row) != len(CSV_COLUMNS):
        raise ValueError(f"{len(row)} columns, {len(CSV_COLUMNS)} expected ({','.join(CSV_COLUMNS)})")
    site, meter, channel, start_s, end_s, energy_s = (c.strip() for c in row)
    if not valid_site(site):
        raise ValueError(f"site = {site!r:.40}: 1-64 letters, digits, '_', '.', '-'")
    if not meter:
        raise ValueError("meter is empty")
    if channel not in CHANNELS:
        raise ValueError(f"channel = {channel!r:.30}: one of {', '.join(CHANNELS)}")
    start, end = parse_time(start_s, "start"), parse_time(end_s, "end")
    length = end - start
    if length not in INTERVAL_LENGTHS_S or start % length:
        allowed = ", ".join(map(str, INTERVAL_LENGTHS_S))
        raise ValueError(f"[{start_s}, {end_s}) is not a clock-aligned UTC interval of {allowed} s")
    try:
        energy = float(energy_s)
    except ValueError:
        raise ValueError(f"energy = {energy_s!r:.30}: a number (kWh, kvarh)") from None
    if not math.isfinite(energy):
        raise ValueError(f"energy = {energy_s!r:.30}: a finite number")
    return ScheduledInterval(site, meter, channel, start, end, energy)


def store_schedule(db: SettlementDb, rows: Iterable[ScheduledInterval], source: str, now: float) -> int:
    """Store ``rows`` as the next version of each interval they name, in ONE transaction; returns the rows stored."""
    rows = list(rows)
    with db.transaction():  # one writer at a time: the versions read here are still the latest at the commit
        latest = db.schedule_versions()
        db.insert("schedules", [
            (r.site, r.meter, r.channel, r.start, latest.get((r.site, r.meter, r.channel, r.start), 0) + 1, r.end,
             r.energy, source, now)
            for r in rows
        ])  # fmt: skip
    return len(rows)


def scheduled(db: SettlementDb, site: str, meter: str, channel: str, starts: np.ndarray) -> np.ndarray:
    """The latest scheduled energy at each of ``starts`` (NaN where none)."""
    out = np.full(starts.shape, np.nan)
    if not starts.size:
        return out
    rows = db.scheduled(site, meter, channel, int(starts.min()), int(starts.max()))
    if rows:
        at = dict(rows)
        out[:] = [at.get(s, math.nan) for s in starts.tolist()]
    return out


@dataclass(frozen=True, slots=True)
class Imbalance:
    """One register's imbalance over a run's intervals (arrays aligned with the run's starts)."""

    site: str
    meter: str
    register: str
    channel: str
    unit: str
    starts: np.ndarray
    scheduled: np.ndarray  # NaN: not scheduled
    metered: np.ndarray  # NaN: no value after VEE
    imbalance: np.ndarray  # metered - scheduled; NaN unless both exist

    def summary(self) -> dict[str, Any]:
        has = ~np.isnan(self.scheduled)
        both = ~np.isnan(self.imbalance)
        imb = self.imbalance[both]
        return {
            "site": self.site, "meter": self.meter, "register": self.register, "channel": self.channel,
            "unit": self.unit, "scheduled_intervals": int(has.sum()), "settled_intervals": int(both.sum()),
            "unmetered_intervals": int((has & ~both).sum()),
            "scheduled": round(float(self.scheduled[both].sum()), 6), "metered": round(float(self.metered[both].sum()), 6),
            "imbalance": round(float(imb.sum()), 6), "over": round(float(imb[imb > 0].sum()), 6),
            "under": round(float(-imb[imb < 0].sum()), 6),
            "abs_max": round(float(np.abs(imb).max()), 6) if imb.size else None,
        }  # fmt: skip


FLOOR_MIN_KWH = 0.01  # the smallest band: a meter's resolution, not a percentage of nothing


def allowed_imbalance(scheduled_kwh: np.ndarray, tol_pct: float, floor_share: float = 0.0) -> tuple[np.ndarray, float]:
    """The |metered - scheduled| each interval may have and still follow its schedule [kWh or kvarh]: ``tol_pct`` %
    of |scheduled|, never below the floor: ``floor_share`` of the largest |scheduled| among them (NaN ignored), at
    least 0.01. The floor judges near-zero schedules (a curtailed inverter at night, a head crossing between import
    and export) on the meter's scale. Returns (allowed per interval, floor). The one rule of dispatch's status,
    central's report and the closed-loop benchmark (docs/dispatch.md, "Following")."""
    sched = np.abs(np.asarray(scheduled_kwh, dtype=float))
    largest = float(np.nanmax(sched)) if sched.size and not np.isnan(sched).all() else 0.0
    floor = max(floor_share * largest, FLOOR_MIN_KWH)
    return np.maximum(sched * tol_pct / 100.0, floor), floor


def imbalance(db: SettlementDb, registers: Iterable[Any]) -> list[Imbalance]:
    """Every register of a run (central/settlement/runs.py RegisterResult) that has a schedule in its intervals."""
    out = []
    for r in registers:
        sched = scheduled(db, r.site, r.meter, r.channel, r.starts)
        if np.isnan(sched).all():
            continue
        metered = r.value.astype(float)
        out.append(Imbalance(r.site, r.meter, r.register, r.channel, r.unit, r.starts, sched, metered,
                             metered - sched))  # fmt: skip
    return out


__all__ = [
    "CSV_COLUMNS",
    "FLOOR_MIN_KWH",
    "Imbalance",
    "ScheduleError",
    "ScheduledInterval",
    "allowed_imbalance",
    "imbalance",
    "parse_csv",
    "scheduled",
    "store_schedule",
]
