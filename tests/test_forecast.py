"""Forecasting: the history reader, the error measures, the baselines, the models and the rolling backtest."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import forecastdata

from central.forecast import backtest, metrics, models
from central.forecast.history import HistoryError, read_history
from central.forecast.models import DAY, Fit, Forecaster, Series, Weather
from central.forecast.weather import simulated_forecast


@pytest.fixture(scope="module")
def synthetic() -> forecastdata.Synthetic:
    return forecastdata.make(70, seed=1)


def _csv(path: Path, lines: list[str], header: str = "timestamp,load_kw") -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


# ---- the history reader -----------------------------------------------------------------------------------------


def test_reader_names_each_gap_with_its_times(tmp_path: Path) -> None:
    lines = [f"2025-01-01T00:{m:02d}:00Z,{m}" for m in (0, 15)] + ["2025-01-01T01:15:00Z,1", "2025-01-01T01:30:00Z,2"]
    with pytest.raises(
        HistoryError, match=r"1 gaps.*missing 2025-01-01T00:30:00Z\.\.2025-01-01T01:00:00Z \(3 intervals\)"
    ):
        read_history(_csv(tmp_path / "h.csv", lines))


def test_reader_refuses_a_timestamp_that_is_not_utc(tmp_path: Path) -> None:
    lines = ["2025-01-01T00:00:00+01:00,1", "2025-01-01T00:15:00+01:00,2"]
    with pytest.raises(HistoryError, match=r"line 2: timestamp '2025-01-01T00:00:00\+01:00' is not UTC"):
        read_history(_csv(tmp_path / "h.csv", lines))


def test_reader_refuses_steps_out_of_order(tmp_path: Path) -> None:
    lines = ["2025-01-01T00:15:00Z,1", "2025-01-01T00:00:00Z,2"]
    with pytest.raises(HistoryError, match="15 minutes apart in time order: line 2"):
        read_history(_csv(tmp_path / "h.csv", lines))


def test_reader_names_a_bad_value_by_line_and_column(tmp_path: Path) -> None:
    lines = ["2025-01-01T00:00:00Z,1,5", "2025-01-01T00:15:00Z,oops,5"]
    with pytest.raises(HistoryError, match="line 3: load_kw = 'oops' is not a number"):
        read_history(_csv(tmp_path / "h.csv", lines, "timestamp,load_kw,temperature"))


def test_reader_asks_for_a_column_when_there_are_several(tmp_path: Path) -> None:
    path = _csv(
        tmp_path / "h.csv", ["2025-01-01T00:00:00Z,1,2,3", "2025-01-01T00:15:00Z,1,2,3"], "timestamp,p,q,irradiance"
    )
    with pytest.raises(HistoryError, match="choose the value column with --column: one of p, q"):
        read_history(path)
    with pytest.raises(HistoryError, match="--column 'x' is not a value column: one of p, q"):
        read_history(path, "x")
    h = read_history(path, "q")
    assert h.column == "q" and list(h.values) == [2, 2] and list(h.irradiance) == [3, 3] and h.temperature is None


def test_reader_without_a_timestamp_column_says_which_columns_it_saw(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="no 'timestamp' column \\(columns: time, load_kw\\)"):
        read_history(_csv(tmp_path / "h.csv", ["2025-01-01T00:00:00Z,1"], "time,load_kw"))


def test_reader_reads_the_synthetic_file_back(tmp_path: Path, synthetic: forecastdata.Synthetic) -> None:
    h = read_history(forecastdata.write_csv(tmp_path / "h.csv", synthetic), "pv_kw")
    assert h.start == synthetic.start and len(h) == 70 * DAY
    assert np.allclose(h.values, synthetic.pv_kw, atol=1e-3)
    assert np.allclose(h.temperature, synthetic.temperature, atol=1e-3)


# ---- the error measures, by hand ----------------------------------------------------------------------------------


def test_measures_against_hand_computed_values() -> None:
    # in-sample seasonal naive with m = 2 on 1..6: every |y[t] - y[t-2]| is 2, so the scale is 2
    scale = metrics.seasonal_naive_scale(np.arange(1.0, 7.0), m=2)
    assert scale == 2.0
    assert metrics.mase(np.array([10.0, 20.0]), np.array([11.0, 17.0]), scale) == pytest.approx((1 + 3) / 2 / 2)
    assert metrics.mape_pct(np.array([100.0, 200.0]), np.array([110.0, 190.0])) == pytest.approx((10 + 5) / 2)
    # tau 0.9: y - q = -2 -> 0.1 * 2 = 0.2; y - q = 5 -> 0.9 * 5 = 4.5; mean 2.35
    assert metrics.pinball(np.array([10.0, 20.0]), np.array([12.0, 15.0]), 0.9) == pytest.approx(2.35)
    assert metrics.coverage(np.array([1.0, 5.0, 9.0]), np.array([0.0, 6.0, 0.0]), np.array([2.0, 7.0, 10.0])) == 2 / 3
    assert metrics.skill(3.0, 4.0) == pytest.approx(0.25)
    assert metrics.nmae(np.array([0.0, 10.0]), np.array([1.0, 7.0]), 20.0) == pytest.approx(0.1)
    assert math.isnan(metrics.mae(np.array([np.nan]), np.array([1.0])))


# ---- baselines and models -----------------------------------------------------------------------------------------


def test_day_ahead_seasonal_naive_takes_the_latest_value_known_at_issue() -> None:
    y = np.arange(30 * DAY, dtype=float)  # the value is its own index
    fc = Forecaster(Series(0, y, "load", extra=0), issue_slot=40)
    origin = np.array([20 * DAY + 40])  # issued at 10:00; known: every index before it
    targets = fc.targets("day-ahead", origin)
    assert targets[0, 0] == 21 * DAY and targets.shape == (1, 96)
    got = fc.point(Fit(0), "seasonal-naive-daily", "day-ahead", origin, targets)[0]
    # before 10:00 the day before is known (lag 96); from 10:00 on, only two days before (lag 192)
    expected = [t - 96 if t - 96 < origin[0] else t - 192 for t in targets[0]]
    assert list(got) == expected
    weekly = fc.point(Fit(0), "seasonal-naive-weekly", "day-ahead", origin, targets)[0]
    assert list(weekly) == list(targets[0] - 7 * DAY)


def test_similar_day_forecasts_a_holiday_like_the_latest_sunday_and_the_day_after_from_two_weeks() -> None:
    """2026-01-19 is Martin Luther King Day (US), a Monday: its similar day is the latest Sunday at least two days
    earlier (01-11; 01-18 is one day before), and the next Monday's is 01-12, the week-earlier Monday being the
    holiday. Seasonal naive (weekly) takes the week-earlier day in both."""
    from datetime import UTC, datetime

    start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    y = np.repeat(np.arange(40, dtype=float), DAY) * 1000 + np.tile(np.arange(DAY), 40)  # day of January - 1, slot
    fc = Forecaster(Series(start, y, "load", tz="UTC", holidays="US", extra=0), issue_slot=40, use_gbm=False)
    for issued, similar, weekly in ((17, 10, 11), (24, 11, 18)):  # issued the day before: 01-18 and 01-25
        origin = np.array([issued * DAY + 40])
        targets = fc.targets("day-ahead", origin)
        got = fc.point(Fit(0), "similar-day", "day-ahead", origin, targets)[0]
        last_week = fc.point(Fit(0), "seasonal-naive-weekly", "day-ahead", origin, targets)[0]
        assert list(got) == [similar * 1000 + k for k in range(DAY)]
        assert list(last_week) == [weekly * 1000 + k for k in range(DAY)]


def test_the_choice_takes_similar_day_where_it_ties_with_last_week_and_intraday_it_carries_its_error() -> None:
    """With no holiday near, the similar day is last week's day: the two score the same day-ahead on the
    calibration window, and the choice is the similar day, which will not hand a coming holiday a workday's load.
    Intraday it carries its latest error, like the GBM: a load level that wanders (an AR(1) offset) is followed."""
    rng = np.random.default_rng(0)
    t = np.arange(50 * DAY)
    weekday = ((t // DAY + 2) % 7) < 5  # 2025-01-01 was a Wednesday: 0 = Monday
    offset = np.zeros(len(t))
    for i in range(1, len(t)):
        offset[i] = 0.99 * offset[i - 1] + rng.normal(0, 10)
    y = 500 + 200 * weekday + 100 * np.sin(2 * np.pi * t / DAY) + offset
    fit = Forecaster(Series(forecastdata.START, y, "load", extra=0), use_gbm=False).fit(len(t))
    day_ahead, intraday = fit.calib_mae["day-ahead"], fit.calib_mae["intraday"]
    assert day_ahead["similar-day"] == day_ahead["seasonal-naive-weekly"] < day_ahead["seasonal-naive-daily"]
    assert fit.choice["day-ahead"] == "similar-day"
    assert intraday["similar-day"] < 0.5 * intraday["seasonal-naive-weekly"]
    assert fit.choice["intraday"] == "similar-day"


@pytest.fixture
def quick_gbm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer boosting rounds for the tests of structure (what a forecast may read, its bounds): they hold for any
    number of rounds, and the accuracy tests keep the product's."""
    monkeypatch.setattr(models, "GBM_ROUNDS", 60)


def test_a_public_holiday_counts_as_a_sunday_in_local_time() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    # Thanksgiving 2026 is Thursday 26 November (US); New York is UTC-5 then, so its local day starts 05:00 UTC
    start = int(datetime(2026, 11, 25, tzinfo=ZoneInfo("America/New_York")).timestamp())
    plain = models.local_calendar(start, 3 * DAY, "America/New_York")
    us = models.local_calendar(start, 3 * DAY, "America/New_York", "US")
    assert list(plain.dow[::DAY]) == [2, 3, 4] and list(us.dow[::DAY]) == [2, 6, 4]
    assert plain.slot[0] == 0 and np.array_equal(plain.slot, us.slot)
    with pytest.raises(models.ForecastError, match="holidays 'XX'"):
        models.local_calendar(start, DAY, "UTC", "XX")


def test_similar_day_lag_takes_a_holiday_back_to_the_latest_sunday_and_never_closer_than_two_days() -> None:
    from datetime import UTC, datetime

    start = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())  # a Sunday; Thanksgiving is Thursday 26 November
    n = 40 * DAY
    y = np.arange(n, dtype=float)  # the value is its own index
    cal = models.local_calendar(start, n, "UTC", "US")
    first, second = models.similar_day_lag(y, cal.dow, 1), models.similar_day_lag(y, cal.dow, 2)
    thanksgiving, after = 25 * DAY + 40, 32 * DAY + 40  # 10:00 on 26 November and on Thursday 3 December
    assert first[thanksgiving] == thanksgiving - 4 * DAY  # Sunday 22 November
    assert second[thanksgiving] == thanksgiving - 11 * DAY  # Sunday 15 November
    assert first[after] == after - 14 * DAY  # the Thursday before was the holiday: 19 November
    assert first[after + DAY] == after - 6 * DAY  # Friday 4 December: an ordinary week back
    known = np.isfinite(first)
    lag = np.arange(n)[known] - first[known]
    assert known.sum() > 30 * DAY and (lag >= 2 * DAY).all() and (lag % DAY == 0).all()


def test_a_holiday_is_forecast_like_a_sunday_when_the_holidays_are_known(quick_gbm: None) -> None:
    from datetime import UTC, datetime

    # 66 days before Thanksgiving 2025 (Thursday 27 November, UTC day); Columbus Day and Veterans Day fall inside
    start = int(datetime(2025, 9, 22, tzinfo=UTC).timestamp())
    s = forecastdata.make(68, seed=3, start=start)
    y = s.load_p_kw.copy()
    days = (start // 86400) + np.arange(68)
    holiday = sorted(d for d in models.holiday_days("US", int(days[0]), int(days[-1])) if days[0] <= d <= days[-1])
    assert len(holiday) == 3
    for d in holiday:  # a holiday's load is its week's Sunday's (the synthetic weekend shape)
        i = d - days[0]
        sunday = i - (int(days[i]) + 3) % 7 - 1
        y[i * DAY : (i + 1) * DAY] = y[sunday * DAY : (sunday + 1) * DAY]
    weather = simulated_forecast(_history(s, "load_p_kw"))
    target = (holiday[-1] - days[0]) * DAY
    origin = np.array([target - DAY + 40])  # issued 10:00 the day before
    truth = y[target : target + DAY]
    errors = []
    for hol in (None, "US"):
        fc = Forecaster(Series(start, y, "load", holidays=hol, weather=weather, extra=0), issue_slot=40)
        fit = fc.fit(int(origin[0]))
        f = fc.forecast(fit, "gbm", "day-ahead", origin)
        assert f.targets[0, 0] == target
        errors.append(metrics.mae(truth, f.p50[0]))
    plain, known = errors
    assert known < 0.25 * plain, errors  # the weekly lag alone left it at half (a workday's level)


def test_no_forecast_reads_a_value_at_or_after_its_origin(synthetic: forecastdata.Synthetic, quick_gbm: None) -> None:
    n = len(synthetic.load_p_kw)
    origin = n - 3 * DAY + 40
    weather = simulated_forecast(_history(synthetic, "load_p_kw"))
    spoiled = synthetic.load_p_kw.copy()
    spoiled[origin:] = 1e6  # the future, made absurd: nothing issued at origin may change
    outs = []
    for values in (synthetic.load_p_kw, spoiled):
        fc = Forecaster(Series(synthetic.start, values, "load", weather=weather, extra=0), issue_slot=40)
        fit = fc.fit(origin)
        assert fit.booster is not None
        outs.append([fc.forecast(fit, m, h, np.array([origin])).p50 for h in ("intraday", "day-ahead") for m in
                     ("gbm", "seasonal-naive-daily", "seasonal-naive-weekly", "similar-day")])  # fmt: skip
    for a, b in zip(*outs, strict=True):
        assert np.array_equal(a, b)


def _history(s: forecastdata.Synthetic, column: str):
    from central.forecast.history import History

    return History(s.start, getattr(s, column), column, s.temperature, s.irradiance)


def test_backtest_load_beats_seasonal_naive_with_calibrated_quantiles(synthetic: forecastdata.Synthetic) -> None:
    reports = backtest.run_horizons(_history(synthetic, "load_p_kw"), "load")
    for horizon, r in reports.items():
        ours, naive = r["models"]["ours"], r["models"]["seasonal-naive-daily"]
        assert ours["mase"] < 0.85 * naive["mase"], (horizon, ours, naive)
        assert 0.6 <= ours["coverage"] <= 0.95, (horizon, ours)
        assert ours["pinball"] < naive["pinball"]
        assert r["refits"] >= 2 and sum(r["chosen"].values()) > 0
        text = backtest.format_table(r)
        assert "seasonal-naive-weekly" in text and f"{ours['mase']:.3f}" in text


def test_backtest_pv_has_skill_over_clear_sky_persistence(synthetic: forecastdata.Synthetic) -> None:
    r = backtest.run(_history(synthetic, "pv_kw"), "pv", "day-ahead")
    assert r["skill_reference"] == "csi-persistence"
    assert r["models"]["ours"]["skill"] > 0.1, r["models"]
    assert r["models"]["csi-persistence"]["skill"] == 0.0
    assert (r["models"]["ours"]["nmae"]) < r["models"]["seasonal-naive-daily"]["nmae"]


def test_pv_forecasts_are_never_negative_and_quantiles_are_ordered(
    synthetic: forecastdata.Synthetic, quick_gbm: None
) -> None:
    n = len(synthetic.pv_kw)
    fc = Forecaster(
        Series(synthetic.start, synthetic.pv_kw, "pv", weather=simulated_forecast(_history(synthetic, "pv_kw")))
    )
    fit = fc.fit(n)
    f = fc.forecast(fit, fit.choice["day-ahead"], "day-ahead", np.array([n]))
    assert (f.p10 >= 0).all() and (f.p10 <= f.p50).all() and (f.p50 <= f.p90).all()
    night = fc.s.env[f.targets[0]] == 0
    assert night.any() and np.all(f.p90[0][night] == 0)


def test_weather_forecast_is_not_the_measured_weather(synthetic: forecastdata.Synthetic) -> None:
    w = simulated_forecast(_history(synthetic, "load_p_kw"), seed=0)
    for h, sd in (("day-ahead", 1.5), ("intraday", 0.7)):
        err = w.temperature[h] - synthetic.temperature
        assert 0.6 * sd < np.std(err) < 1.4 * sd  # the documented error model's spread (AR(1) sample: loose)
    assert isinstance(w, Weather) and w.temperature["history"] is synthetic.temperature
