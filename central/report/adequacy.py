"""Resource adequacy of one day, per 15-minute interval (docs/report.md, "Resource adequacy").

margin [kW] = import_limit_kw + PV p10 - load p90, from the day-ahead forecasts of dispatch's feeder (per
interval the latest day-ahead issue made at or before the interval's start).

PV counts at its p10 — the output exceeded in 9 of 10 cases — because adequacy asks what can be relied on; the
p50 would count on PV that is missing half the time. Load counts at its p90 for the same reason. The import limit
is ``[dispatch] import_limit_kw``, the head's import capacity (transformer or contract): without it no margin is
computed.
"""

from __future__ import annotations

import numpy as np

from central.report.data import DAY_S, STEP_S, Inputs, Section, iso

N = DAY_S // STEP_S


def _latest(inputs: Inputs, feeder: str, kind: str, column: str, day: int) -> np.ndarray:
    out = np.full(N, np.nan)
    rows = inputs.sql(
        f"SELECT start, {column} FROM forecasts WHERE feeder = ? AND kind = ? AND horizon = 'day-ahead' "
        "AND start >= ? AND start < ? AND issued <= start ORDER BY issued, start",
        (feeder, kind, day, day + DAY_S),
    )
    for start, v in rows:  # a later issue overwrites an earlier one
        if v is not None:
            out[(int(start) - day) // STEP_S] = float(v)
    return out


def adequacy(inputs: Inputs, day: int, feeder: str | None = None) -> Section:
    sec = Section("adequacy", "Resource adequacy (import limit + PV p10 - load p90, day-ahead)")
    d = inputs.config.dispatch
    if d is None:
        sec.notes.append("no data: no [dispatch] section (its feeder and import_limit_kw)")
        return sec
    if feeder is not None and feeder != d.feeder:
        sec.notes.append(f"no data: --feeder {feeder} is not dispatch's feeder {d.feeder}")
        return sec
    if d.import_limit_kw is None:
        sec.notes.append("no data: [dispatch] import_limit_kw is not set (the head's import capacity [kW])")
        return sec
    load = _latest(inputs, d.feeder, "load_p", "p90", day)
    pv = _latest(inputs, d.feeder, "pv", "p10", day)
    if np.isnan(load).all():
        sec.notes.append(f"no data: no day-ahead load_p forecast of {d.feeder} for the day")
        return sec
    pv_firm = np.where(np.isnan(pv), 0.0, pv)  # no PV forecast: no PV counted on
    margin = d.import_limit_kw + pv_firm - load
    ok = ~np.isnan(margin)
    worst = int(np.nanargmin(margin))
    sec.rows.append({
        "feeder": d.feeder, "intervals": int(ok.sum()), "import_limit_kw": d.import_limit_kw,
        "pv_counted": "p10" if not np.isnan(pv).all() else "none (no pv forecast)",
        "margin_min_kw": round(float(margin[worst]), 3), "worst_interval": iso(day + worst * STEP_S),
        "margin_mean_kw": round(float(np.nanmean(margin)), 3), "short_intervals": int((margin[ok] < 0).sum()),
    })  # fmt: skip
    for i in np.flatnonzero(ok):
        sec.detail.append({"feeder": d.feeder, "start": iso(day + int(i) * STEP_S), "load_p90_kw": float(load[i]),
                           "pv_p10_kw": float(pv_firm[i]), "import_limit_kw": d.import_limit_kw,
                           "margin_kw": round(float(margin[i]), 3)})  # fmt: skip
    return sec
