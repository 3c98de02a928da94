"""statsforecast's MSTL (daily and weekly seasons, AutoETS trend) as a forecasting candidate: what each day's fit
reads, the choice by the calibration backtest, the service's reuse of the days already fitted, and the errors
when statsforecast is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from central.forecast.models import DAY, MSTL_DAYS, Forecaster, ForecastError, Series

START = 1767225600  # 2026-01-01T00:00Z, a Thursday
SATURDAY = 9 * DAY  # 2026-01-10 is a Saturday: its index from START, plus whole weeks


def weekly_series(days: int, seed: int = 0) -> np.ndarray:
    """A load with a daily shape, 30 % less at weekends, a slow rise and white noise (sd 30 kW)."""
    t = np.arange(days * DAY)
    hour = (t % DAY) / 4.0
    dow = (t // DAY + 3) % 7  # START is a Thursday: 0 = Monday
    shape = 1000 + 300 * np.exp(-((hour - 19) ** 2) / 8) + 200 * np.exp(-((hour - 8) ** 2) / 4)
    y = shape * np.where(dow >= 5, 0.7, 1.0) + 2.0 * t / DAY
    return y + np.random.default_rng(seed).normal(0, 30, len(t))


def test_mstl_forecasts_a_weekend_from_data_two_days_old() -> None:
    """A Saturday forecast from data that ends on Thursday: the weekly season carries the weekend's drop, which
    the value two days earlier (seasonal naive at that lead) cannot know."""
    y = weekly_series(63)
    first = SATURDAY + 7 * 7 * DAY
    truth = y[first : first + DAY]
    fc = Forecaster(Series(START, y, "load", extra=0), use_gbm=False, use_mstl=True)
    got = fc.mstl_block(first)
    naive = y[first - 2 * DAY : first - DAY]
    assert np.mean(np.abs(got - truth)) < 60  # the noise's own MAE is 24 kW
    assert np.mean(np.abs(got - truth)) < 0.25 * np.mean(np.abs(naive - truth))


def test_mstl_reads_only_its_window_ending_two_days_before_its_day() -> None:
    y = weekly_series(63)
    first = SATURDAY + 7 * 7 * DAY
    base = Forecaster(Series(START, y, "load", extra=0), use_gbm=False, use_mstl=True).mstl_block(first)
    later = y.copy()
    later[first - 2 * DAY :] += 5000.0  # the two days before and the day itself: not read
    earlier = y.copy()
    earlier[first - 2 * DAY - 1] += 5000.0  # the window's last value
    before = y.copy()
    before[: first - 2 * DAY - MSTL_DAYS * DAY] += 5000.0  # older than the window: not read
    same = Forecaster(Series(START, later, "load", extra=0), use_mstl=True, use_gbm=False).mstl_block(first)
    moved = Forecaster(Series(START, earlier, "load", extra=0), use_mstl=True, use_gbm=False).mstl_block(first)
    old = Forecaster(Series(START, before, "load", extra=0), use_mstl=True, use_gbm=False).mstl_block(first)
    assert np.array_equal(same, base) and np.array_equal(old, base)
    assert not np.allclose(moved, base)


def test_a_window_mostly_unknown_gives_no_mstl_forecast_and_a_gap_is_interpolated() -> None:
    y = weekly_series(63)
    first = SATURDAY + 7 * 7 * DAY
    gappy = y.copy()
    gappy[first - 2 * DAY - 10 * DAY : first - 2 * DAY] = np.nan  # 10 of the window's 28 days
    holed = y.copy()
    holed[first - 2 * DAY - DAY : first - 2 * DAY - DAY + 8] = np.nan  # two hours
    none = Forecaster(Series(START, gappy, "load", extra=0), use_gbm=False, use_mstl=True).mstl_block(first)
    filled = Forecaster(Series(START, holed, "load", extra=0), use_gbm=False, use_mstl=True).mstl_block(first)
    assert np.isnan(none).all()
    assert np.isfinite(filled).all() and np.mean(np.abs(filled - y[first : first + DAY])) < 60


@pytest.fixture(scope="module")
def fitted() -> tuple[Forecaster, object, np.ndarray]:
    y = weekly_series(50)
    fc = Forecaster(Series(START, y, "load"), use_gbm=False, use_mstl=True)
    return fc, fc.fit(len(y)), y


def test_the_calibration_backtest_chooses_mstl_where_it_is_best(fitted) -> None:
    """On a series of daily and weekly seasons with white noise, MSTL's smoothed seasons beat last week's noisy
    value and the value of two days earlier on the calibration window, so the fit chooses it."""
    _, fit, _ = fitted
    assert "mstl" in fit.models
    for h in ("day-ahead", "intraday"):
        mae = fit.calib_mae[h]
        assert fit.choice[h] == "mstl"
        assert mae["mstl"] < mae["seasonal-naive-weekly"] < mae["seasonal-naive-daily"]


def test_a_later_cycle_keeps_the_days_fitted_though_its_series_starts_elsewhere(fitted, mocker) -> None:
    """The service's next cycle reads a window one day later, with a day more of readings: every day already fitted
    on the same window is kept where it belongs in time; only the day that enters at the end is fitted."""
    fc, fit, y = fitted
    series = Series(START + DAY * 900, weekly_series(51)[DAY:], "load")  # the same values where both have them
    spy = mocker.spy(Forecaster, "mstl_block")
    kept = Forecaster(series, use_gbm=False, use_mstl=True).reuse(fit, series.n)
    # from the day before the last known value (absolute days 50-52, fitted before on the same windows) to the
    # series' end: day 53, whose window ends at the new last value, is the only one fitted
    assert spy.call_count == 1
    base, _ = Forecaster(series, use_gbm=False, use_mstl=True)._mstl_base(series.n - DAY, {})
    assert spy.call_count == 1 + 4
    span = slice(series.n - DAY, len(series.y))
    assert np.allclose(kept.mstl[span], base[span]) and np.isfinite(base[span]).all()


def test_mstl_without_statsforecast_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from central.config import CentralConfigError, parse_central_config

    monkeypatch.setitem(sys.modules, "statsforecast", None)
    monkeypatch.setitem(sys.modules, "statsforecast.models", None)
    with pytest.raises(ForecastError, match=r"pip install 'gridedge\[mstl\]'"):
        Forecaster(Series(START, weekly_series(30), "load"), use_mstl=True)
    raw = {"broker": {"url": "mqtt://127.0.0.1:1883"}, "store": {"db": "c.db"},
           "forecast": {"mstl": True, "feeders": [{"name": "f1", "site": "s1", "load_p": "p"}]}}  # fmt: skip
    with pytest.raises(CentralConfigError, match=r"forecast.mstl = 'true': needs statsforecast"):
        parse_central_config(raw, tmp_path / "central.toml")


def test_mstl_key_takes_a_boolean(tmp_path) -> None:
    from central.config import CentralConfigError, parse_central_config

    raw = {"broker": {"url": "mqtt://127.0.0.1:1883"}, "store": {"db": "c.db"},
           "forecast": {"mstl": "yes", "feeders": [{"name": "f1", "site": "s1", "load_p": "p"}]}}  # fmt: skip
    with pytest.raises(CentralConfigError, match=r"forecast.mstl"):
        parse_central_config(raw, tmp_path / "central.toml")
    raw["forecast"]["mstl"] = True
    assert parse_central_config(raw, tmp_path / "central.toml").forecast.mstl is True
    del raw["forecast"]["mstl"]
    assert parse_central_config(raw, tmp_path / "central.toml").forecast.mstl is False
