"""Forecast accuracy of one day (docs/report.md, "Forecast accuracy").

Per configured feeder, kind (load_p, load_q, pv) and horizon (intraday, day-ahead): every forecast row whose
interval starts in the day and that was issued at or before that start is scored against what was measured: the
readings of the feeder's configured point averaged to 15 minutes (``intervals_from_readings``, as the forecaster
reads its history). Metered intervals are not the truth here: they are energy per meter channel, and nothing in the
configuration ties a meter to a forecast kind (a head meter measures load less PV). The error measures are central/forecast/metrics.py's, as the backtest uses them:

- MASE = MAE(p50) / the in-sample MAE of the seasonal-naive forecast y[t-96] over the ``history_days`` of
  measured intervals before the day;
- MAPE [%] of p50 (load kinds only; truths below 5 % of the mean |truth| skipped);
- coverage: the share of measured intervals inside [p10, p90] (a calibrated P10-P90 band holds 80 %).
"""

from __future__ import annotations

import numpy as np

from central.forecast import metrics
from central.forecast.models import ForecastError
from central.forecast.service import UNITS, intervals_from_readings
from central.report.data import DAY_S, STEP_S, Inputs, Section

HORIZONS = ("intraday", "day-ahead")
M = 96  # the seasonal-naive lag: one day of 15-minute intervals


def measured(inputs: Inputs, site: str, point: str, kind: str, start: int, n: int) -> np.ndarray:
    rows = inputs.store.point_readings(site, point, start, start + n * STEP_S)
    return intervals_from_readings(rows, start, n, UNITS[kind], f"{site}/{point}")


def accuracy(inputs: Inputs, day: int, feeder: str | None = None) -> Section:
    sec = Section("accuracy", "Forecast accuracy (p50 against measured, 15-minute means)")
    cfg = inputs.config.forecast
    feeders = [f for f in cfg.feeders if feeder is None or f.name == feeder]
    if not feeders:
        sec.notes.append("no data: no [[forecast.feeders]]" + (f" named {feeder}" if feeder else ""))
        return sec
    hist_n = cfg.history_days * DAY_S // STEP_S
    for f in feeders:
        for kind, point in f.points.items():
            try:
                truth_day = measured(inputs, f.site, point, kind, day, DAY_S // STEP_S)
                history = measured(inputs, f.site, point, kind, day - hist_n * STEP_S, hist_n)
            except ForecastError as err:  # a point in a unit the forecast cannot be compared with
                sec.notes.append(f"no data: {f.name} {kind}: {err}")
                continue
            scale = metrics.seasonal_naive_scale(history, M)
            for horizon in HORIZONS:
                rows = inputs.sql(
                    "SELECT start, p10, p50, p90 FROM forecasts WHERE feeder = ? AND kind = ? AND horizon = ? "
                    "AND start >= ? AND start < ? AND issued <= start ORDER BY issued, start",
                    (f.name, kind, horizon, day, day + DAY_S),
                )
                base = {"feeder": f.name, "site": f.site, "kind": kind, "horizon": horizon, "point": point}
                if not rows:
                    sec.notes.append(f"no data: {f.name} {kind} {horizon}: no forecast for the day")
                    continue
                idx = (np.array([r[0] for r in rows], dtype=np.int64) - day) // STEP_S
                q = np.array([[np.nan if v is None else v for v in r[1:]] for r in rows], dtype=float)
                y = truth_day[idx]
                scored = int(np.sum(np.isfinite(y) & np.isfinite(q[:, 1])))
                if not scored:
                    sec.notes.append(f"no data: {f.name} {kind} {horizon}: no readings of {point} in the day")
                    continue
                sec.rows.append({
                    **base, "pairs": scored, "unit": UNITS[kind],
                    "mae": _r(metrics.mae(y, q[:, 1])),
                    "mase": _r(metrics.mase(y, q[:, 1], scale)), "mase_scale": _r(scale),
                    "mape_pct": _r(metrics.mape_pct(y, q[:, 1])) if kind != "pv" else None,
                    "coverage_p10_p90": _r(metrics.coverage(y, q[:, 0], q[:, 2])),
                })  # fmt: skip
    return sec


def _r(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 4)
