"""Rolling-origin backtest: the last part of a history is forecast origin by origin, refitting every week on
what came before, and every model is scored side by side (docs/forecast.md, "Backtest").

Window: the last quarter of the history, at least 7 and at most 56 days. Refits every 7 days at the window's
start and each week after (each refit sees only values before it). Origins: every 15 minutes for intraday, every
day at the issue time for day-ahead. "ours" is, per refit, the model the refit chose on its calibration window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from central.forecast import metrics
from central.forecast.history import History, iso
from central.forecast.models import (
    BASELINES,
    DAY,
    HORIZONS,
    MODELS,
    Forecast,
    Forecaster,
    ForecastError,
    Series,
)
from central.forecast.weather import simulated_forecast

WINDOW_SHARE = 0.25
MIN_WINDOW_DAYS, MAX_WINDOW_DAYS = 7, 56
REFIT_DAYS = 7
OURS = "ours"

# The figures the project aims at (docs/forecast.md, "Targets"); printed beside the measured ones.
TARGETS = {
    ("load", "day-ahead"): "MASE < 0.85, >= 15 % below seasonal naive; MAPE < 6 %; P10-P90 coverage 70-90 %",
    ("load", "intraday"): "MASE < 0.7, >= 15 % below seasonal naive; P10-P90 coverage 70-90 %",
    ("pv", "day-ahead"): "skill >= 0.25 over clear-sky-index persistence; P10-P90 coverage 70-90 %",
    ("pv", "intraday"): "P10-P90 coverage 70-90 %",
}


@dataclass
class Scored:
    truth: list[np.ndarray] = field(default_factory=list)
    p10: list[np.ndarray] = field(default_factory=list)
    p50: list[np.ndarray] = field(default_factory=list)
    p90: list[np.ndarray] = field(default_factory=list)

    def add(self, truth: np.ndarray, f: Forecast) -> None:
        self.truth.append(truth.ravel())
        self.p10.append(f.p10.ravel())
        self.p50.append(f.p50.ravel())
        self.p90.append(f.p90.ravel())

    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(np.concatenate(a) for a in (self.truth, self.p10, self.p50, self.p90))


def window(n: int) -> tuple[int, int]:
    days = n // DAY
    w = int(min(MAX_WINDOW_DAYS, max(MIN_WINDOW_DAYS, round(WINDOW_SHARE * days))))
    return n - w * DAY, n


def run(
    history: History,
    kind: str,
    horizon: str,
    *,
    tz: str = "UTC",
    holidays: str | None = None,
    issue_slot: int = 40,
    seed: int = 0,
    use_gbm: bool = True,
    use_mstl: bool = False,
) -> dict[str, Any]:
    """Backtest one history for one horizon; returns the report (``format_table`` prints it)."""
    return run_horizons(history, kind, (horizon,), tz=tz, holidays=holidays, issue_slot=issue_slot, seed=seed,
                        use_gbm=use_gbm, use_mstl=use_mstl)[horizon]  # fmt: skip


def run_horizons(
    history: History,
    kind: str,
    horizons: tuple[str, ...] = HORIZONS,
    *,
    tz: str = "UTC",
    holidays: str | None = None,
    issue_slot: int = 40,
    seed: int = 0,
    use_gbm: bool = True,
    use_mstl: bool = False,
) -> dict[str, dict[str, Any]]:
    """Backtest several horizons on the same refits (one fit per refit serves them all)."""
    for horizon in horizons:
        if horizon not in HORIZONS:
            raise ForecastError(f"horizon {horizon!r}: one of {', '.join(HORIZONS)}")
    weather = simulated_forecast(history, seed)
    series = Series(history.start, history.values, kind, tz=tz, holidays=holidays, weather=weather, extra=0)
    fc = Forecaster(series, issue_slot=issue_slot, use_gbm=use_gbm, use_mstl=use_mstl)
    lo, hi = window(series.n)
    scores: dict[str, dict[str, Scored]] = {h: {} for h in horizons}
    chosen: dict[str, dict[str, int]] = {h: {} for h in horizons}
    refits = 0
    for at in range(lo, hi, REFIT_DAYS * DAY):
        fit = fc.fit(at)
        refits += 1
        block_hi = min(at + REFIT_DAYS * DAY, hi)
        for horizon in horizons:
            last = hi - (24 if horizon == "intraday" else 2 * DAY)
            origins = fc.origins(horizon, at, min(block_hi, last + 1))
            targets = fc.targets(horizon, origins)
            origins = origins[targets[:, -1] < hi]
            if not len(origins):
                continue
            choice = fit.choice[horizon]
            chosen[horizon][choice] = chosen[horizon].get(choice, 0) + len(origins)
            for m in [*fit.models, OURS]:
                f = fc.forecast(fit, choice if m == OURS else m, horizon, origins)
                scores[horizon].setdefault(m, Scored()).add(series.y[f.targets], f)
    before = series.y[:lo]
    scale = metrics.seasonal_naive_scale(before, DAY)
    capacity = float(np.nanmax(before))
    ref = "csi-persistence" if kind == "pv" else "seasonal-naive-daily"
    reports = {}
    for horizon in horizons:
        sc = scores[horizon]
        if not sc:
            raise ForecastError("history too short: no backtest origin has its whole horizon inside the history")
        results = {m: _score(kind, *sc[m].arrays(), scale, capacity) for m in [OURS, *MODELS] if m in sc}
        for r in results.values():
            r["skill"] = metrics.skill(r["mae"], results[ref]["mae"])
        reports[horizon] = {
            "column": history.column,
            "kind": kind,
            "horizon": horizon,
            "timezone": tz,
            "holidays": holidays,
            "window": [iso(history.start + lo * 900), iso(history.start + hi * 900)],
            "origins": sum(len(t) for t in sc[OURS].truth) // (24 if horizon == "intraday" else 96),
            "refits": refits,
            "mase_scale": scale,
            "skill_reference": ref,
            "baselines": list(BASELINES[kind]),
            "chosen": chosen[horizon],
            "models": results,
            "target": TARGETS[(kind, horizon)],
        }
    return reports


def _score(
    kind: str, y: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray, scale: float, capacity: float
) -> dict[str, float]:
    out = {
        "mae": metrics.mae(y, p50),
        "mase": metrics.mase(y, p50, scale),
        "pinball": float(np.mean([metrics.pinball(y, q, tau) for q, tau in ((p10, 0.1), (p50, 0.5), (p90, 0.9))])),
        "coverage": metrics.coverage(y, p10, p90),
    }
    if kind == "load":
        out["mape_pct"] = metrics.mape_pct(y, p50)
    else:
        out["nmae"] = metrics.nmae(y, p50, capacity)
    return out


def _fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_table(report: dict[str, Any]) -> str:
    kind = report["kind"]
    extra = ("mape_pct", "MAPE %") if kind == "load" else ("nmae", "nMAE")
    lines = [
        f"backtest {report['column']} ({kind}, {report['horizon']}): window {report['window'][0]} .. "
        f"{report['window'][1]}, {report['origins']} origins, {report['refits']} refits, timezone {report['timezone']}",
        f"MASE scale (in-sample seasonal-naive MAE, m = 96): {_fmt(report['mase_scale'])}; skill against "
        f"{report['skill_reference']}; ours chose: "
        + ", ".join(f"{m} ({n} origins)" for m, n in report["chosen"].items()),
        "",
        f"{'model':<24}{'MASE':>8}{extra[1]:>9}{'skill':>8}{'pinball':>10}{'P10-P90':>9}{'MAE':>10}",
    ]
    for name, r in report["models"].items():
        lines.append(
            f"{name:<24}{_fmt(r['mase']):>8}{_fmt(r[extra[0]], 2 if kind == 'load' else 3):>9}{_fmt(r['skill']):>8}"
            f"{_fmt(r['pinball'], 2):>10}{_fmt(100 * r['coverage'], 1) + '%':>9}{_fmt(r['mae'], 2):>10}"
        )
    ours, base = report["models"][OURS], report["models"]["seasonal-naive-daily"]
    lines += [
        "",
        f"ours / seasonal-naive-daily MASE: {_fmt(ours['mase'] / base['mase'])}",
        f"target: {report['target']}",
    ]
    return "\n".join(lines)
