"""Feeder forecasting: fit and predict for 100 feeders x one year of 15-minute history, side by side with seasonal
naive, and the rolling-origin backtest of one synthetic year against the project's accuracy targets.

    nice -n 15 .venv/bin/python benchmarks/forecast.py [--feeders 100] [--days 365] [--no-backtest] [--mstl]

Data: tests/helpers/forecastdata.py, seeded (feeder i: seed i, peak 500-1500 kW, PV 100-500 kW): a residential and
commercial load with temperature and AR(1) noise, and PV as a clear-sky bell times a cloud process; the weather
forecast is the history's weather with the documented error model (central/forecast/weather.py).

Timed per feeder (load P), after building its series: ours = one fit at 10:00 two days before the end (train the
GBM, run every model on the 14-day calibration window, choose, measure the spread) plus the day-ahead forecast
of the last day and the intraday forecasts of every origin from then on; the peer = the same with seasonal naive
alone (its calibrated spread, no GBM). Accuracy on those forecasts is averaged over the feeders (MAE ratio; one
day per feeder, so it is printed, not judged: the backtest below judges accuracy). ``--mstl``: ours also runs
statsforecast's MSTL as a candidate (``[forecast] mstl = true``), in the fleet and in the backtest.

Targets: the 100 feeders under 300 s (central refits every feeder at least daily on one machine); from the
backtest (the last 8 weeks of the year, weekly refits): day-ahead load MASE < 0.85 and intraday < 0.7 (in-sample
seasonal-naive scale, m = 96), each at least 15 % below seasonal naive's own; load MAPE < 6 %; PV day-ahead skill
>= 0.25 over clear-sky-index persistence; P10-P90 coverage 70-90 %.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic history the tests use: tests/helpers/forecastdata.py

from _report import emit  # noqa: E402
from helpers import forecastdata  # noqa: E402

from central.forecast import backtest, metrics  # noqa: E402
from central.forecast.history import History  # noqa: E402
from central.forecast.models import DAY, Forecaster, Series  # noqa: E402
from central.forecast.weather import simulated_forecast  # noqa: E402

BUDGET_S = 300.0


def _one(history: History, use_gbm: bool, use_mstl: bool = False
         ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Fit and forecast one feeder; returns (seconds, day-ahead truth, forecast, intraday truth, forecast)."""
    series = Series(history.start, history.values, "load", weather=simulated_forecast(history), extra=0)
    t0 = time.perf_counter()
    fc = Forecaster(series, use_gbm=use_gbm, use_mstl=use_mstl)
    origin = series.n - 2 * DAY + 40  # 10:00 UTC two days before the end: the day-ahead covers the last day
    fit = fc.fit(origin)
    model = "seasonal-naive-daily" if not use_gbm else fit.choice["day-ahead"]
    da = fc.forecast(fit, model, "day-ahead", np.array([origin]))
    model = "seasonal-naive-daily" if not use_gbm else fit.choice["intraday"]
    intra = fc.forecast(fit, model, "intraday", np.arange(origin, series.n - 24))
    took = time.perf_counter() - t0
    return took, series.y[da.targets], da.p50, series.y[intra.targets], intra.p50


def fleet(feeders: int, days: int, mstl: bool = False) -> None:
    ours_s = peer_s = 0.0
    mae = {"ours-da": 0.0, "peer-da": 0.0, "ours-id": 0.0, "peer-id": 0.0}
    t_data = time.perf_counter()
    gen_s = 0.0
    for i in range(feeders):
        g0 = time.perf_counter()
        s = forecastdata.make(days, seed=i, peak_kw=500 + 1000 * (i % 11) / 10, pv_kw=100 + 40 * (i % 11))
        h = History(s.start, s.load_p_kw, "load_p_kw", s.temperature, s.irradiance)
        gen_s += time.perf_counter() - g0
        took, y_da, f_da, y_id, f_id = _one(h, True, mstl)
        ours_s += took
        mae["ours-da"] += metrics.mae(y_da, f_da) / feeders
        mae["ours-id"] += metrics.mae(y_id, f_id) / feeders
        took, y_da, f_da, y_id, f_id = _one(h, False)
        peer_s += took
        mae["peer-da"] += metrics.mae(y_da, f_da) / feeders
        mae["peer-id"] += metrics.mae(y_id, f_id) / feeders
        if (i + 1) % 10 == 0:
            print(f"  {i + 1} feeders: ours {ours_s:.1f} s, seasonal naive {peer_s:.2f} s", flush=True)
    wall = time.perf_counter() - t_data
    print(
        f"\n{feeders} feeders x {days} days (load P, 15 min): data made in {gen_s:.1f} s (not timed), wall {wall:.1f} s"
    )
    print(f"{'':<34}{'ours':>12}{'seasonal naive':>16}{'ratio':>8}")
    print(f"{'fit + predict, all feeders [s]':<34}{ours_s:>12.1f}{peer_s:>16.2f}{ours_s / peer_s:>8.1f}")
    print(f"{'per feeder [s]':<34}{ours_s / feeders:>12.2f}{peer_s / feeders:>16.3f}")
    for key, label in (("da", "day-ahead MAE, mean [kW]"), ("id", "intraday MAE, mean [kW]")):
        o, p = mae[f"ours-{key}"], mae[f"peer-{key}"]
        print(f"{label:<34}{o:>12.2f}{p:>16.2f}{o / p:>8.3f}")
    emit("forecast_fit_predict_feeders_s" + ("_mstl" if mstl else ""), ours_s, peer_s, ours_s / peer_s, "s",
         f"{feeders} feeders x {days} days < {BUDGET_S:.0f} s", ours_s < BUDGET_S)  # fmt: skip


def backtests(days: int, mstl: bool = False) -> None:
    s = forecastdata.make(days, seed=1000)
    load = backtest.run_horizons(History(s.start, s.load_p_kw, "load_p_kw", s.temperature, s.irradiance), "load",
                                 use_mstl=mstl)  # fmt: skip
    pv = backtest.run_horizons(History(s.start, s.pv_kw, "pv_kw", s.temperature, s.irradiance), "pv", ("day-ahead",),
                               use_mstl=mstl)  # fmt: skip
    for report in (load["day-ahead"], load["intraday"], pv["day-ahead"]):
        print()
        print(backtest.format_table(report))
    for horizon, limit in (("day-ahead", 0.85), ("intraday", 0.7)):
        ours, naive = load[horizon]["models"]["ours"], load[horizon]["models"]["seasonal-naive-daily"]
        ratio = ours["mase"] / naive["mase"]
        emit(f"forecast_load_{horizon.replace('-', '_')}_mase", ours["mase"], naive["mase"], ratio, "MASE",
             f"< {limit} and <= 0.85 x seasonal naive", ours["mase"] < limit and ratio <= 0.85)  # fmt: skip
        cov = ours["coverage"]
        emit(f"forecast_load_{horizon.replace('-', '_')}_coverage", cov, None, None, "share", "0.70-0.90",
             0.7 <= cov <= 0.9)  # fmt: skip
    ours = load["day-ahead"]["models"]["ours"]
    emit("forecast_load_day_ahead_mape_pct", ours["mape_pct"], load["day-ahead"]["models"]["seasonal-naive-daily"]
         ["mape_pct"], None, "%", "< 6 %", ours["mape_pct"] < 6)  # fmt: skip
    pv_ours, pv_ref = pv["day-ahead"]["models"]["ours"], pv["day-ahead"]["models"]["csi-persistence"]
    emit("forecast_pv_day_ahead_skill", pv_ours["skill"], None, pv_ours["mae"] / pv_ref["mae"], "skill",
         ">= 0.25 over clear-sky-index persistence", pv_ours["skill"] >= 0.25)  # fmt: skip
    emit("forecast_pv_day_ahead_coverage", pv_ours["coverage"], None, None, "share", "0.70-0.90",
         0.7 <= pv_ours["coverage"] <= 0.9)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--feeders", type=int, default=100)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--no-backtest", action="store_true", help="only the fleet's fit-and-predict timing")
    ap.add_argument("--mstl", action="store_true", help="statsforecast's MSTL among ours' candidates")
    args = ap.parse_args()
    fleet(args.feeders, args.days, args.mstl)
    if not args.no_backtest:
        backtests(args.days, args.mstl)


if __name__ == "__main__":
    main()
