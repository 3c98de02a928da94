"""The judging of benchmarks/dispatch_day.py: pure functions on plain inputs (tests/test_dispatch_day.py).

- :func:`judge_following`: each interval's metered energy against its scheduled energy, within ``tol_pct`` of
  the schedule or, for an interval whose schedule is near zero, within an absolute floor (docs/dispatch.md,
  "Closed loop on the bench");
- :func:`energy_cost`: energy per interval times the price in force at its start (the price file read as
  central's dispatch reads it);
- :func:`outside_range_a` and :func:`caused`: the bus-phase-minutes outside ANSI C84.1 Range A in a truth log, and
  those of one run that the other run of the same day did not have.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from central.dispatch.inputs import prices_csv
from central.settlement.schedules import allowed_imbalance

# ANSI C84.1-2016 Table 1, Range A, service voltage: 114..126 V on the 120 V base
RANGE_A_PU = (114.0 / 120.0, 126.0 / 120.0)
FOLLOW_TOL_PCT = 5.0  # the closed loop's target: within +-5 % of the schedule
FLOOR_SHARE = 0.01  # near-zero intervals: within 1 % of the meter's largest scheduled |energy| in the run


@dataclass(frozen=True, slots=True)
class IntervalCheck:
    start: int
    metered_kwh: float
    scheduled_kwh: float
    allowed_kwh: float

    @property
    def error_kwh(self) -> float:
        return self.metered_kwh - self.scheduled_kwh

    @property
    def within(self) -> bool:
        return abs(self.error_kwh) <= self.allowed_kwh + 1e-9

    @property
    def error_pct(self) -> float | None:
        """The error in % of the schedule (None when the schedule is zero)."""
        return None if self.scheduled_kwh == 0 else self.error_kwh / abs(self.scheduled_kwh) * 100.0


@dataclass(frozen=True, slots=True)
class Following:
    checks: tuple[IntervalCheck, ...]
    floor_kwh: float
    missing: tuple[int, ...] = field(default_factory=tuple)  # scheduled starts with no metered value

    @property
    def judged(self) -> int:
        return len(self.checks)

    @property
    def within(self) -> int:
        return sum(1 for c in self.checks if c.within)

    @property
    def share_pct(self) -> float | None:
        return None if not self.checks else self.within / len(self.checks) * 100.0

    def share_of(self, starts: Container[int]) -> tuple[int, int]:
        """(within, judged) among the intervals starting at ``starts``."""
        mine = [c for c in self.checks if c.start in starts]
        return sum(1 for c in mine if c.within), len(mine)

    @property
    def floored(self) -> int:
        """Intervals judged by the floor (their 5 % of schedule below it)."""
        return sum(1 for c in self.checks if abs(c.scheduled_kwh) * FOLLOW_TOL_PCT / 100.0 < self.floor_kwh)


def judge_following(metered: Mapping[int, float], scheduled: Mapping[int, float], *, tol_pct: float = FOLLOW_TOL_PCT,
                    floor_share: float = FLOOR_SHARE) -> Following:  # fmt: skip
    """Each scheduled interval (start -> kWh, net: import positive) with a metered value: within
    ``max(tol_pct % of |scheduled|, floor)``, the floor ``floor_share`` of the largest |scheduled| of the run.
    Scheduled intervals with no metered value are listed in ``missing`` (not judged)."""
    if not 0 < tol_pct < 100 or not 0 <= floor_share < 1:
        raise ValueError(f"tol_pct = {tol_pct!r}: in (0, 100); floor_share = {floor_share!r}: in [0, 1)")
    starts = sorted(scheduled)
    allowed, floor = allowed_imbalance(np.array([scheduled[s] for s in starts], dtype=float), tol_pct, floor_share)
    checks, missing = [], []
    for s, band in zip(starts, allowed.tolist(), strict=True):
        m = metered.get(s)
        if m is None or not math.isfinite(m):
            missing.append(s)
            continue
        checks.append(IntervalCheck(s, float(m), float(scheduled[s]), band))
    return Following(tuple(checks), floor, tuple(missing))


def energy_cost(net_kwh: Mapping[int, float], prices: Path) -> float:
    """Sum over intervals of the net import [kWh] (an export negative) times the price in force at the interval's
    start, from the price file (central.dispatch.inputs.prices_csv: InputError when it starts after an interval)."""
    if not net_kwh:
        return 0.0
    starts = np.array(sorted(net_kwh), dtype=np.int64)
    price = prices_csv(prices, starts)
    return float(sum(net_kwh[int(s)] * float(c) for s, c in zip(starts, price, strict=True)))


def outside_range_a(steps: Iterable[Mapping[str, Any]], buses: Container[str],
                    range_pu: tuple[float, float] = RANGE_A_PU) -> dict[tuple[str, str, int], float]:  # fmt: skip
    """Each (bus, phase, UTC minute) with a step outside ``range_pu`` on a judged bus: the furthest voltage [pu]
    from the range in that minute (``step`` records of a truth log: ``ts`` and ``v`` {bus: [a, b, c]})."""
    lo, hi = range_pu
    judged = buses
    out: dict[tuple[str, str, int], float] = {}
    for rec in steps:
        minute = int(float(rec["ts"]) // 60)
        for bus, phases in (rec.get("v") or {}).items():
            if bus not in judged:
                continue
            for phase, v in zip("abc", phases, strict=False):
                if v is None or lo <= v <= hi:
                    continue
                key = (bus, phase, minute)
                worst = out.get(key)
                if worst is None or abs(v - 1.0) > abs(worst - 1.0):
                    out[key] = float(v)
    return out


def caused(run: Mapping[tuple[str, str, int], float],
           baseline: Mapping[tuple[str, str, int], float]) -> dict[tuple[str, str, int], float]:  # fmt: skip
    """The excursions of ``run`` that ``baseline`` (the same day without the schedule) did not have: the same bus
    and phase outside Range A in the same minute, on the same side of it, counts as not caused."""
    out = {}
    for key, v in run.items():
        b = baseline.get(key)
        if b is None or (b > 1.0) != (v > 1.0):
            out[key] = v
    return out


__all__ = ["FLOOR_SHARE", "FOLLOW_TOL_PCT", "Following", "IntervalCheck", "RANGE_A_PU", "caused", "energy_cost",
           "judge_following", "outside_range_a"]  # fmt: skip
