"""Load and PV forecasting models: the baselines, the gradient-boosted model, and the choice between them.

Every model's forecast for a target interval uses only values at least 192 intervals (two days) older than the
target, plus the weather forecast and the calendar, so one prediction per interval serves every origin whose
lead time is at most two days (a day-ahead forecast issued at any local time covers at most 48 h). The intraday
forecast adds what the last observed interval says: the base model's latest error, decayed per horizon step with
coefficients fitted on the calibration window. Models:

- ``seasonal-naive-daily``: the latest observed value at the same time of day (lag 96 k, the smallest k known);
- ``seasonal-naive-weekly``: the value one week earlier (lag 672);
- ``similar-day`` (load): the value of the latest similar day (:func:`similar_day_lag`): last week's, but a
  public holiday takes the latest Sunday's and the day after it the week before's;
- ``csi-persistence`` (PV): the latest clear-sky index times the clear-sky envelope (the envelope is the largest
  value at that time of day over three weeks, ending three days earlier: no site coordinates needed);
- ``gbm``: LightGBM on calendar (local time of day, day of week with holidays as Sundays, a holiday flag), lags
  (2 days, the latest two similar days: :func:`similar_day_lag`, the daily and weekly means 2 days before) and
  weather (temperature, irradiance) features, fixed hyper-parameters;
- ``mstl`` (when asked for, statsforecast installed): statsforecast's MSTL, daily and weekly seasons, with an
  AutoETS trend, fitted per day of targets on the four weeks that end two days before that day
  (:meth:`Forecaster.mstl_block`).

A fit at refit point F trains the GBM on the history up to F minus 14 days and runs every model on those 14 days
(the calibration window): the model with the lowest MAE there is chosen for the series and horizon, and each
model's P10 and P90 are its point forecast plus the 10th and 90th percentile of its calibration errors, per hour
of day (and per horizon step for intraday). Nothing is tuned to the data beyond that inner backtest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

STEP_S = 900
DAY = 96  # intervals per day
WEEK = 7 * DAY
INTRADAY_STEPS = 24  # 6 hours of 15 minutes
DAY_AHEAD_STEPS = 96
MIN_LAG = 2 * DAY  # features never look closer than this to the target
CALIB_DAYS = 14
ENVELOPE_DAYS = 21
ENVELOPE_SHIFT_DAYS = 3  # the envelope ends this many days before the target's day (>= MIN_LAG, day-aligned)
QUANTILES = (0.1, 0.5, 0.9)
# Load's P10/P90 come from the 7th/93rd percentile of the calibration errors: those errors are few (14 days) and
# correlated within a day, and their own 10th/90th percentiles covered 61-76 % out of sample on synthetic years
# (0.67-0.86 with these levels; benchmarks/forecast.py). A fixed constant, never fitted to the series.
LOAD_SPREAD_LEVELS = (0.07, 0.93)
KINDS = ("load", "pv")
HORIZONS = ("intraday", "day-ahead")
BASELINES = {
    "load": ("seasonal-naive-daily", "seasonal-naive-weekly"),
    "pv": ("seasonal-naive-daily", "csi-persistence"),
}
MODELS = ("seasonal-naive-daily", "seasonal-naive-weekly", "similar-day", "csi-persistence", "gbm", "mstl")
# Fixed hyper-parameters: one set for every series, never tuned to the file at hand.
GBM_PARAMS: dict[str, Any] = {
    "objective": "l2",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.9,
    "lambda_l2": 1.0,
    "max_bin": 63,
    "num_threads": 1,
    "seed": 0,
    "deterministic": True,
    "verbose": -1,
}
GBM_ROUNDS = 300
MIN_TRAIN_ROWS = 7 * DAY
TRAIN_ON = "history"  # the measured weather: the intraday forecasts lean on it most (docs/forecast.md)
MSTL_SEASONS = [DAY, WEEK]
MSTL_DAYS = 28  # each MSTL fit reads four weekly cycles
MSTL_MIN_SHARE = 0.75  # of its window known (the gaps interpolated), else the block has no MSTL forecast
# statsmodels' STL (under statsforecast's MSTL) fits its trend and low-pass LOESS at every 10th point and
# interpolates between: R's stl (Cleveland et al. 1990) jumps a tenth of each window by default, statsmodels none.
# 10 is at most that for the daily season's windows (167, 97 points) and far less for the weekly's (1121, 673);
# on a four-week test series the components moved by under 0.1 % of the noise, and the fit took 0.22 s, not 2.3 s.
MSTL_STL_KWARGS = {"trend_jump": 10, "low_pass_jump": 10}


class ForecastError(ValueError):
    """The forecaster cannot run on this input; the message says what is missing and what is needed."""


@dataclass(frozen=True)
class Weather:
    """Weather aligned with the series (same start): "history" (measured, to train on) and one forecast per horizon.

    A horizon without its own array uses the "history" one, so the caller decides what stands in for a forecast.
    """

    temperature: dict[str, np.ndarray | None] = field(default_factory=dict)  # key -> degC
    irradiance: dict[str, np.ndarray | None] = field(default_factory=dict)  # key -> W/m2


@dataclass(frozen=True)
class Calendar:
    slot: np.ndarray  # local 15-minute slot of the day, 0..95
    dow: np.ndarray  # local day of week, 0 = Monday (a public holiday counts as 6, a Sunday)
    hour: np.ndarray  # local hour 0..23
    holiday: np.ndarray | None = None  # 1.0 on a public holiday, else 0.0


def holiday_days(country: str, first: int, last: int) -> set[int]:
    """Public holidays of ``country`` (an ISO 3166 code, optionally with a subdivision: ``US``, ``DE-BY``) as
    days since 1970-01-01, for the years from day ``first`` to day ``last`` (offline: the holidays package)."""
    try:
        import holidays
    except ImportError as err:
        raise ForecastError("holidays need the holidays package: pip install 'gridedge[forecast]'") from err
    code, _, subdiv = country.partition("-")
    years = range(datetime.fromtimestamp(first * 86400, UTC).year, datetime.fromtimestamp(last * 86400, UTC).year + 1)
    try:
        found = holidays.country_holidays(code, subdiv=subdiv or None, years=years)
    except NotImplementedError as err:
        raise ForecastError(
            f"holidays {country!r}: not a country (and subdivision) the holidays package knows: {err}"
        ) from err
    return {(d - datetime(1970, 1, 1).date()).days for d in found}


def local_calendar(start: int, n: int, tz: str, holidays: str | None = None) -> Calendar:
    """Local slot of day, day of week (a public holiday of ``holidays`` counts as a Sunday, as in the BDEW
    profiles) and hour, per interval."""
    zone = ZoneInfo(tz)
    h0 = start - start % 3600
    hours = (start - h0 + n * STEP_S) // 3600 + 2
    offsets = np.array(
        [datetime.fromtimestamp(h0 + 3600 * k, UTC).astimezone(zone).utcoffset().total_seconds() for k in range(hours)],
        dtype=np.int64,
    )
    t = start + STEP_S * np.arange(n, dtype=np.int64)
    local = t + offsets[(t - h0) // 3600]
    slot = (local % 86400) // STEP_S
    day = local // 86400
    dow = (day + 3) % 7
    holiday = np.zeros(n)
    if holidays:
        off = holiday_days(holidays, int(day[0]), int(day[-1]))
        holiday = np.isin(day, list(off)).astype(float)
        dow = np.where(holiday > 0, 6, dow)
    return Calendar(slot, dow, slot // 4, holiday)


def _lag(y: np.ndarray, k: int) -> np.ndarray:
    out = np.full(len(y), np.nan)
    out[k:] = y[:-k]
    return out


def similar_day_lag(y: np.ndarray, day_type: np.ndarray, nth: int = 1, max_days: int = 28) -> np.ndarray:
    """Per interval, the value at the same time of day on the ``nth`` latest earlier day of the same day type
    that is at least MIN_LAG old (the "similar day" of load forecasting): one week back for an ordinary day, the
    latest Sunday for a public holiday (its day type is a Sunday's), two weeks back for a weekday whose
    week-earlier day was a holiday. NaN where none lies within ``max_days``."""
    out = np.full(len(y), np.nan)
    left = np.full(len(y), nth)
    for k in range(MIN_LAG // DAY, max_days + 1):
        lag = k * DAY
        if lag >= len(y):
            break
        same = np.zeros(len(y), dtype=bool)
        same[lag:] = day_type[lag:] == day_type[:-lag]
        left = np.where(same, left - 1, left)
        hit = same & (left == 0)
        out[lag:] = np.where(hit[lag:], y[:-lag], out[lag:])
        left = np.where(hit, -1, left)
    return out


def _trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of x[i - window + 1 .. i], NaNs skipped (NaN where none is known)."""
    ok = np.isfinite(x)
    s = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    c = np.concatenate([[0], np.cumsum(ok)])
    i = np.arange(len(x))
    lo = np.maximum(i - window + 1, 0)
    count = c[i + 1] - c[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (s[i + 1] - s[lo]) / count, np.nan)


def clear_sky_envelope(y: np.ndarray, start: int) -> np.ndarray:
    """Per UTC time of day, the largest value over ENVELOPE_DAYS days ending ENVELOPE_SHIFT_DAYS before the day."""
    pad = (start % 86400) // STEP_S
    days = math.ceil((pad + len(y)) / DAY)
    m = np.full(days * DAY, -np.inf)
    m[pad : pad + len(y)] = np.where(np.isfinite(y), y, -np.inf)
    grid = m.reshape(days, DAY)
    grid = np.maximum(grid, np.maximum(np.roll(grid, 1, axis=1), np.roll(grid, -1, axis=1)))
    env = np.full((days, DAY), -np.inf)
    first = ENVELOPE_DAYS + ENVELOPE_SHIFT_DAYS - 1
    if days > first:
        windows = np.lib.stride_tricks.sliding_window_view(grid, ENVELOPE_DAYS, axis=0).max(axis=-1)
        env[first:] = windows[: days - first]
    env = np.where(np.isfinite(env), np.maximum(env, 0.0), np.nan)
    return env.ravel()[pad : pad + len(y)]


class Series:
    """One series, extended past its history by ``extra`` unknown intervals, with its features built once."""

    def __init__(
        self,
        start: int,
        values: np.ndarray,
        kind: str,
        *,
        tz: str = "UTC",
        holidays: str | None = None,
        weather: Weather | None = None,
        extra: int = 2 * DAY + 8,
    ) -> None:
        if kind not in KINDS:
            raise ForecastError(f"kind {kind!r}: one of {', '.join(KINDS)}")
        self.start, self.kind, self.tz, self.n = start, kind, tz, len(values)
        self.y = np.concatenate([np.asarray(values, dtype=float), np.full(extra, np.nan)])
        total = len(self.y)
        self.cal = local_calendar(start, total, tz, holidays)
        self.env = clear_sky_envelope(self.y, start)
        with np.errstate(invalid="ignore"):
            self.env_floor = 0.02 * float(np.nanmax(self.env)) if np.isfinite(self.env).any() else 0.0
        weather = weather or Weather()
        self.weather = {h: self._weather(weather, h, total) for h in ("history", *HORIZONS)}
        dow = self.cal.dow
        self.similar = similar_day_lag(self.y, dow, 1)
        lags = [
            _lag(self.y, MIN_LAG),
            self.similar,
            similar_day_lag(self.y, dow, 2),
            _lag(_trailing_mean(self.y, DAY), MIN_LAG),
        ]
        common = [
            self.cal.slot.astype(float),
            dow.astype(float),
            self.cal.holiday if self.cal.holiday is not None else np.zeros(total),
            _lag(dow.astype(float), MIN_LAG),  # the day type of the 2-day lag (a holiday's lag is a workday)
            *lags,
            _lag(_trailing_mean(self.y, WEEK), MIN_LAG),  # the level of the latest whole week
        ]
        if kind == "pv":
            common.append(self.env)
        self.features = {h: np.column_stack(common + w) for h, w in self.weather.items()}

    def _weather(self, weather: Weather, horizon: str, total: int) -> list[np.ndarray]:
        cols = []
        for source in (weather.temperature, weather.irradiance):
            a = source.get(horizon)
            if a is None:
                a = source.get("history")  # no forecast of this horizon: the caller's fallback is the history
            if a is None:
                continue
            col = np.full(total, np.nan)
            col[: min(total, len(a))] = a[:total]
            cols.append(col)
            if source is weather.temperature:
                cols.append(_trailing_mean(col, DAY))
        return cols

    @property
    def first_trainable(self) -> int:
        """The first interval the GBM trains on: two weeks of lags (LightGBM takes the PV envelope's early NaNs)."""
        return 2 * WEEK

    def issue_origins(self, lo: int, hi: int, issue_slot: int) -> np.ndarray:
        """Day-ahead origins in [lo, hi): the intervals at the local issue time."""
        idx = np.arange(lo, hi)
        idx = idx[self.cal.slot[idx] == issue_slot]
        return idx

    def day_ahead_targets(self, origins: np.ndarray) -> np.ndarray:
        """For each origin, the 96 intervals from the next local midnight at or after it."""
        slot = self.cal.slot[origins]
        first = origins + (DAY - slot) % DAY  # issued exactly at midnight: that day
        return first[:, None] + np.arange(DAY_AHEAD_STEPS)[None, :]


@dataclass
class Forecast:
    """Forecasts for many origins at once: ``targets[i, k]`` is interval index of step k of origin i."""

    model: np.ndarray | str  # the model's name (per origin when chosen per refit)
    targets: np.ndarray
    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray


@dataclass
class Fit:
    """The state a refit at interval F leaves: the GBM, its base predictions, the choice and the error quantiles."""

    at: int
    models: tuple[str, ...] = ()  # the candidates this fit ran
    booster: Any = None
    base: dict[str, np.ndarray] = field(default_factory=dict)  # the GBM's, per horizon (its weather differs)
    mstl: np.ndarray | None = None  # the MSTL forecast per interval (both horizons)
    # a UTC day's first interval (since the epoch) -> (the end of the window it was fitted on, its 96 forecasts)
    mstl_blocks: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)
    phi: dict[str, np.ndarray] = field(default_factory=dict)  # model -> intraday error correction per step
    choice: dict[str, str] = field(default_factory=dict)
    calib_mae: dict[str, dict[str, float]] = field(default_factory=dict)
    offsets: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (horizon, model) -> (buckets, 2)


def _lightgbm() -> Any:
    try:
        import lightgbm
    except ImportError as err:
        raise ForecastError("the gbm model needs LightGBM: pip install 'gridedge[forecast]'") from err
    return lightgbm


def _statsforecast() -> tuple[Any, Any]:
    try:
        from statsforecast.models import MSTL, AutoETS
    except ImportError as err:
        raise ForecastError("the mstl model needs statsforecast: pip install 'gridedge[mstl]'") from err
    return MSTL, AutoETS


def candidates(kind: str, with_gbm: bool = True, with_mstl: bool = False) -> tuple[str, ...]:
    # similar-day before weekly: where no holiday is near the two are the same, and the choice takes the first
    names = ("seasonal-naive-daily",) + (("similar-day",) if kind == "load" else ()) + ("seasonal-naive-weekly",)
    names += ("csi-persistence",) if kind == "pv" else ()
    return names + (("gbm",) if with_gbm else ()) + (("mstl",) if with_mstl else ())


def _buckets(series: Series, targets: np.ndarray, horizon: str) -> np.ndarray:
    hour = series.cal.hour[targets]
    if horizon == "intraday":
        return np.arange(targets.shape[1])[None, :] * 24 + hour
    return hour


N_BUCKETS = {"intraday": INTRADAY_STEPS * 24, "day-ahead": 24}


class Forecaster:
    """Fits and runs every model on one :class:`Series`."""

    def __init__(self, series: Series, *, issue_slot: int = 40, use_gbm: bool = True, use_mstl: bool = False) -> None:
        self.s = series
        self.issue_slot = issue_slot
        self.use_gbm = use_gbm
        self.use_mstl = use_mstl
        if use_mstl:
            _statsforecast()  # missing: said before any fit
        self._blocks: dict[int, tuple[int, np.ndarray]] = {}  # this series' MSTL blocks (its values never change)

    # -- point forecasts -------------------------------------------------------------------------------------
    def origins(self, horizon: str, lo: int, hi: int, step: int = 1) -> np.ndarray:
        if horizon == "intraday":
            return np.arange(lo, hi, step)
        return self.s.issue_origins(lo, hi, self.issue_slot)

    def targets(self, horizon: str, origins: np.ndarray) -> np.ndarray:
        if horizon == "intraday":
            return origins[:, None] + np.arange(INTRADAY_STEPS)[None, :]
        return self.s.day_ahead_targets(origins)

    def _csi(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Clear-sky index over [lo, hi) per origin: sum of values / sum of the envelope (daylight only)."""
        y = np.nan_to_num(self.s.y)
        env = np.nan_to_num(self.s.env)
        cy, ce = np.concatenate([[0], np.cumsum(y)]), np.concatenate([[0], np.cumsum(env)])
        num, den = cy[hi] - cy[lo], ce[hi] - ce[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > self.s.env_floor * (hi - lo), num / den, np.nan)

    def point(self, fit: Fit, model: str, horizon: str, origins: np.ndarray, targets: np.ndarray) -> np.ndarray:
        y, o = self.s.y, origins[:, None]
        if model == "seasonal-naive-daily":
            k = np.ceil((targets - o + 1) / DAY).astype(int)
            return y[targets - DAY * k]
        if model == "seasonal-naive-weekly":
            return y[targets - WEEK]
        if model == "csi-persistence":
            day = self._csi(origins - DAY, origins)
            csi = day if horizon == "day-ahead" else np.where(np.isnan(r := self._csi(origins - 4, origins)), day, r)
            return np.nan_to_num(csi, nan=1.0)[:, None] * np.nan_to_num(self.s.env[targets])
        if model in ("gbm", "mstl", "similar-day"):
            b = {"gbm": fit.base.get(horizon), "mstl": fit.mstl, "similar-day": self.s.similar}[model]
            if b is None:
                raise ForecastError(f"model {model!r}: this fit did not run it")
            base = b[targets]
            if horizon == "intraday":
                last = y[origins - 1] - b[origins - 1]
                base = base + fit.phi[model][None, :] * np.nan_to_num(last)[:, None]
            if self.s.kind == "pv":
                base = np.clip(base, 0, None)
            return base
        raise ForecastError(f"model {model!r}: one of {', '.join(MODELS)}")

    # -- fitting ---------------------------------------------------------------------------------------------
    def fit(self, at: int) -> Fit:
        """Fit at interval ``at`` (values before it are known): train, calibrate, choose, measure the spread."""
        s, fit = self.s, Fit(at)
        calib_lo = at - CALIB_DAYS * DAY
        if calib_lo - DAY < s.first_trainable:
            raise ForecastError(
                f"history too short: a fit needs {(s.first_trainable + CALIB_DAYS * DAY + DAY) // DAY} days before "
                f"its origin ({s.kind}), this one has {at // DAY}"
            )
        train = np.arange(s.first_trainable, calib_lo)
        train = train[np.isfinite(s.y[train])]
        if self.use_gbm and len(train) >= MIN_TRAIN_ROWS:
            lgb = _lightgbm()
            x = s.features[TRAIN_ON]
            ds = lgb.Dataset(x[train], s.y[train], params={"verbose": -1})
            fit.booster = lgb.train(GBM_PARAMS, ds, num_boost_round=GBM_ROUNDS)
            lo = calib_lo - DAY  # the base is needed from the calibration window on (origins look one step back)
            for h in HORIZONS:
                fit.base[h] = np.full(len(s.y), np.nan)
                fit.base[h][lo:] = fit.booster.predict(s.features[h][lo:], num_threads=1)
            fit.phi["gbm"] = self._phi(fit.base["intraday"], calib_lo, at)
        if s.kind == "load":
            fit.phi["similar-day"] = self._phi(s.similar, calib_lo, at)
        if self.use_mstl:
            fit.mstl, fit.mstl_blocks = self._mstl_base(calib_lo - DAY, self._blocks)
            self._blocks = fit.mstl_blocks
            fit.phi["mstl"] = self._phi(fit.mstl, calib_lo, at)
        fit.models = models = candidates(s.kind, with_gbm=fit.booster is not None, with_mstl=fit.mstl is not None)
        for h in HORIZONS:
            origins = self.origins(h, calib_lo + 1, at - (INTRADAY_STEPS if h == "intraday" else 2 * DAY))
            targets = self.targets(h, origins)
            truth = s.y[targets]
            buckets = _buckets(s, targets, h)
            fit.calib_mae[h] = {}
            for m in models:
                err = truth - self.point(fit, m, h, origins, targets)
                fit.calib_mae[h][m] = float(np.nanmean(np.abs(err))) if np.isfinite(err).any() else math.inf
                spread = _bucket_percentiles if s.kind == "pv" else _bucket_quantiles
                fit.offsets[(h, m)] = spread(err, buckets, N_BUCKETS[h])
            fit.choice[h] = min(models, key=lambda m: fit.calib_mae[h][m])
        if fit.booster is not None:
            # Calibrated, the GBM learns again on everything before ``at``: its forecasts are then fresher than
            # the calibration's were (0-9 days against 0-14), so the calibrated spread errs on the wide side.
            full = np.arange(s.first_trainable, at)
            full = full[np.isfinite(s.y[full])]
            x = s.features[TRAIN_ON]
            fit.booster = lgb.train(GBM_PARAMS, lgb.Dataset(x[full], s.y[full], params={"verbose": -1}), GBM_ROUNDS)
            for h in HORIZONS:
                fit.base[h][at - DAY :] = fit.booster.predict(s.features[h][at - DAY :], num_threads=1)
        return fit

    def reuse(self, old: Fit, at: int) -> Fit | None:
        """A fit at ``at`` keeping ``old``'s trained GBM, choice, error correction and spread, only the base
        forecasts made again on this series (the service's cheap refresh between full fits); None when the
        features changed shape (weather came or went) and a full fit is needed."""
        fit = Fit(at, models=old.models, booster=old.booster, phi=old.phi, choice=dict(old.choice),
                  calib_mae=old.calib_mae, offsets=old.offsets)  # fmt: skip
        if old.mstl is not None:
            fit.mstl, fit.mstl_blocks = self._mstl_base(at - DAY, old.mstl_blocks)
        if old.booster is not None:
            x = {h: self.s.features[h][at - DAY :] for h in HORIZONS}
            if any(a.shape[1] != old.booster.num_feature() for a in x.values()):
                return None
            for h in HORIZONS:
                fit.base[h] = np.full(len(self.s.y), np.nan)
                fit.base[h][at - DAY :] = old.booster.predict(x[h], num_threads=1)
        return fit

    def mstl_block(self, first: int) -> np.ndarray:
        """The MSTL forecast of the day of intervals from ``first``: statsforecast's MSTL (seasons of a day and a
        week, its default STL windows, :data:`MSTL_STL_KWARGS`) with an AutoETS trend (error, trend and damping
        chosen by AICc, no seasonality: MSTL takes that), fitted on the :data:`MSTL_DAYS` that end two days before
        ``first`` (or at the last known value), gaps interpolated. NaN when too little of the window is known."""
        mstl, ets = _statsforecast()
        end = min(first - MIN_LAG, self.s.n)
        lo = end - MSTL_DAYS * DAY
        out = np.full(DAY, np.nan)
        if lo < 0:
            return out
        window = self.s.y[lo:end]
        ok = np.isfinite(window)
        if ok.mean() < MSTL_MIN_SHARE:
            return out
        idx = np.arange(len(window))
        window = np.interp(idx, idx[ok], window[ok])
        model = mstl(season_length=MSTL_SEASONS, trend_forecaster=ets(model="ZZN"), stl_kwargs=MSTL_STL_KWARGS)
        ahead = np.asarray(model.forecast(y=window, h=first + DAY - end)["mean"], dtype=float)
        return ahead[first - end :]

    def _mstl_base(self, lo: int, known: dict[int, tuple[int, np.ndarray]]
                   ) -> tuple[np.ndarray, dict[int, tuple[int, np.ndarray]]]:  # fmt: skip
        """The MSTL forecast of every interval from ``lo`` to the series' end, a UTC day at a time; a day in ``known``
        (keyed by intervals since the epoch, so a later cycle's series, starting elsewhere, finds it) that was fitted
        on the same window is kept."""
        base = np.full(len(self.s.y), np.nan)
        blocks = {}
        zero = self.s.start // STEP_S  # the series' first interval, counted from the epoch
        for day in range((zero + lo) // DAY * DAY, zero + len(self.s.y), DAY):
            first = day - zero
            end = zero + min(first - MIN_LAG, self.s.n)
            kept = known.get(day)
            if kept is None or kept[0] != end:
                kept = (end, self.mstl_block(first))
            blocks[day] = kept
            part = kept[1][max(0, -first) : len(self.s.y) - first]
            base[max(first, 0) : max(first, 0) + len(part)] = part
        return base, blocks

    def _phi(self, base: np.ndarray, lo: int, hi: int) -> np.ndarray:
        r = self.s.y - base
        phi = np.zeros(INTRADAY_STEPS)
        for k in range(INTRADAY_STEPS):
            a = np.arange(lo + 1, hi - k)
            x, z = r[a - 1], r[a + k]
            ok = np.isfinite(x) & np.isfinite(z)
            den = float(np.sum(x[ok] ** 2))
            phi[k] = min(max(float(np.sum(x[ok] * z[ok])) / den, 0.0), 1.0) if den > 0 else 0.0
        return phi

    def forecast(self, fit: Fit, model: str, horizon: str, origins: np.ndarray) -> Forecast:
        targets = self.targets(horizon, origins)
        p50 = self.point(fit, model, horizon, origins, targets)
        off = fit.offsets[(horizon, model)][_buckets(self.s, targets, horizon)]
        p10, p90 = p50 + off[..., 0], p50 + off[..., 1]
        if self.s.kind == "pv":  # no PV below zero, nor where the envelope says the sun is down
            day = np.nan_to_num(self.s.env[targets], nan=1.0) > 0
            p10, p50, p90 = (np.where(day, np.clip(a, 0, None), 0.0) for a in (p10, p50, p90))
        return Forecast(model, targets, np.minimum(p10, p50), p50, np.maximum(p90, p50))


def _bucket_percentiles(err: np.ndarray, buckets: np.ndarray, n: int) -> np.ndarray:
    """PV's P10 and P90 offsets: the 10th and 90th percentile of the errors per bucket (pooled where too few);
    PV's errors change shape through the day (bounded by zero and the clear sky), so each bucket keeps its own."""
    e, b = err.ravel(), buckets.ravel()
    ok = np.isfinite(e)
    e, b = e[ok], b[ok]
    pooled = np.quantile(e, [QUANTILES[0], QUANTILES[2]]) if len(e) else np.zeros(2)
    out = np.tile(pooled, (n, 1))
    order = np.argsort(b, kind="stable")
    e, b = e[order], b[order]
    bounds = np.searchsorted(b, np.arange(n + 1))
    for i in range(n):
        chunk = e[bounds[i] : bounds[i + 1]]
        if len(chunk) >= 20:
            out[i] = np.quantile(chunk, [QUANTILES[0], QUANTILES[2]])
    return out


def _bucket_quantiles(err: np.ndarray, buckets: np.ndarray, n: int) -> np.ndarray:
    """Load's P10 and P90 offsets per bucket: the pooled 10th and 90th percentile of the errors scaled by their bucket's
    mean absolute error, times that bucket's mean absolute error.

    The shape comes from every calibration error and only the scale from the bucket's: a bucket holds few
    independent errors (those of one day are correlated), and its own percentiles came out too narrow.
    """
    e, b = err.ravel(), buckets.ravel()
    ok = np.isfinite(e)
    e, b = e[ok], b[ok]
    if not len(e):
        return np.zeros((n, 2))
    pooled = float(np.mean(np.abs(e)))
    order = np.argsort(b, kind="stable")
    e, b = e[order], b[order]
    bounds = np.searchsorted(b, np.arange(n + 1))
    scale = np.full(n, pooled)
    for i in range(n):
        chunk = e[bounds[i] : bounds[i + 1]]
        if len(chunk) >= 20:
            scale[i] = float(np.mean(np.abs(chunk)))
    per = scale[b]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(per > 0, e / per, 0.0)
    shape = np.quantile(z, LOAD_SPREAD_LEVELS)
    return scale[:, None] * shape[None, :]
