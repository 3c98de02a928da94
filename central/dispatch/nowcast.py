"""The nowcast: what the site measures now corrects the load and PV forecasts of the intervals about to come
(docs/dispatch.md, "Nowcast").

A day-ahead forecast errs in runs of one sign that last hours (the weather, a holiday the calendar missed, the
loads' own slow swings); the site's meters show the error while it lasts. Before each round, over the last
``window_s`` (central's readings, within the interval now running), against what the round that planned this
interval predicted:

- **PV**: each dispatched inverter's measured output (``pv_point``, one per inverter). Where an inverter's limit
  did not bind, its output is what the sun gives: measured over predicted is the PV forecast's factor now.
- **Load**: the head's measured power (``point``, import positive) plus the inverters' measured output is what
  the feeder's loads drew (with its losses); against the predicted head plus the predicted output it is the load
  forecast's error now.

With ``clear_sky`` (the PV's site and orientation), the PV ahead is the sun's shape rather than the day-ahead
forecast's: the free inverters' output over what a clear sky gives them now (pvlib's simplified Solis clear sky
on their plane, :func:`clear_sky_kw_per_kw`) is the clear-sky index now, and interval ``k`` ahead gets that index
times its own clear sky, blended into the day-ahead forecast by ``decay ** (k - 1)`` (clear-sky-index persistence,
the standard short-term PV forecast: docs/forecast.md). A day-ahead forecast whose shape is off (its weather's
error moves within the hour) then no longer moves the next intervals. Under ``CLEAR_SKY_MIN_SHARE`` of the
inverters' rating in clear sky (dawn, dusk) or with no free inverter, the index of the last round that measured
one is kept; with none yet, the PV factor below.

Each error, plus the correction the planning round had applied (the estimate carries on, an overshoot is taken
back), goes to each interval ``k`` ahead times ``decay ** k`` (an error that fades as a first-order
autoregression: 0.9 per 15 minutes keeps half of it for about 1.6 hours), the load's bounded by ``max_share`` of
the forecast load, the PV factor within 1 +- ``max_share``. Without inverter readings (``pv_point = ""``, or
missing) everything the head shows is put on the load.

Nothing is corrected when the head's readings are missing, too few (under half of the window's span, counted by
their times), not numbers or in a unit that is not active power, or when no round predicted this interval: the
forecast then stands as it is, and the round says why (``dispatch_nowcast`` in the log).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from central.readings import UNIT_FACTORS

Rows = Sequence[tuple[float, Any, str]]
PV_POINT = "{device}.DERMeasureAC.W"  # an inverter's output: SunSpec model 701 W, as the agent names its points


CLEAR_SKY_MIN_SHARE = 0.02  # the free inverters' clear-sky output under this share of their rating: no index
CLEAR_SKY_INDEX_MAX = 1.5  # an index above this is a reading's error (cloud-edge enhancement stays below it)


@dataclass(frozen=True, slots=True)
class ClearSky:
    """Where the PV is and how it faces, for its clear-sky output (one plane for the feeder's inverters)."""

    latitude: float
    longitude: float
    tilt_deg: float
    azimuth_deg: float = 180.0


def clear_sky_kw_per_kw(cs: ClearSky, times: Sequence[float]) -> np.ndarray:
    """Clear-sky irradiance on the PV's plane at ``times`` (epoch s) in kW/m2, i.e. kW per kW of rating at
    standard test conditions before losses: pvlib's simplified Solis clear sky (no turbidity table needed) and
    its isotropic sky on the plane."""
    import pandas as pd
    import pvlib

    idx = pd.DatetimeIndex(pd.to_datetime(np.asarray(times, float), unit="s", utc=True))
    loc = pvlib.location.Location(cs.latitude, cs.longitude)
    sky = loc.get_clearsky(idx, model="simplified_solis")
    sun = loc.get_solarposition(idx)
    poa = pvlib.irradiance.get_total_irradiance(cs.tilt_deg, cs.azimuth_deg, sun["apparent_zenith"], sun["azimuth"],
                                                sky["dni"], sky["ghi"], sky["dhi"])  # fmt: skip
    return np.nan_to_num(np.maximum(poa["poa_global"].to_numpy(float), 0.0)) / 1000.0


@dataclass(frozen=True, slots=True)
class NowcastSpec:
    site: str  # the site whose agent sends the head's readings
    point: str  # the head's active power point in central's readings (import positive), e.g. "sub-meter.p_total"
    window_s: float = 300.0  # the readings averaged, ending now
    decay: float = 0.9  # the share of the error kept per interval ahead
    max_share: float = 0.3  # |load correction| at most this share of the forecast load; PV factor 1 +- this
    pv_point: str = PV_POINT  # each inverter's output point, {device} its name; "": the head alone
    clear_sky: ClearSky | None = None  # the PV ahead by clear-sky-index persistence (module docstring)
    smooth_intervals: int = 1  # the load forecast's centred moving average over this many intervals (odd; 1: none)


@dataclass(frozen=True, slots=True)
class Planned:
    """What a round predicted for one interval."""

    head_kw: float
    out_kw: Mapping[str, float]  # inverter -> scheduled output
    avail_kw: Mapping[str, float]  # inverter -> the forecast's available PV
    limited: Mapping[str, bool]  # inverter -> its limit binds (output below what the sun gives)
    load_corr_kw: float = 0.0  # the load correction the round applied to it
    pv_factor: float = 1.0  # the PV factor the round applied to it


@dataclass(frozen=True, slots=True)
class Correction:
    """The corrections of one round: the errors measured at ``at`` and their value per interval ahead."""

    at: float
    error_kw: float  # the load forecast's error now (measured - forecast)
    measured_kw: float  # the head
    predicted_kw: float
    readings: int
    load_kw: np.ndarray  # added to the forecast load of each interval of the round
    pv_factor_now: float = 1.0  # the PV forecast's factor now (1: unknown or right)
    pv_factor: np.ndarray = field(default_factory=lambda: np.ones(0))  # multiplies each interval's PV forecast
    pv_measured_kw: float | None = None  # the inverters' output (None: not read)
    clear_sky_index: float | None = None  # the free inverters' output over their clear-sky output (None: not used)
    pv_kw: np.ndarray | None = None  # the PV of each interval of the round, by the clear-sky index (None: factor)


def smoothed(values: np.ndarray, width: int) -> np.ndarray:
    """The centred moving average of ``values`` over ``width`` (odd) entries, the ends padded with the first and
    last value (a level forecast neither sags nor lifts at the horizon's edges)."""
    v = np.asarray(values, float)
    if width <= 1 or v.size == 0:
        return v.copy()
    pad = width // 2
    return np.convolve(np.concatenate([np.full(pad, v[0]), v, np.full(pad, v[-1])]), np.ones(width) / width, "valid")


def mean_kw(rows: Rows, since: float, until: float, what: str) -> tuple[float, int]:
    """The mean [kW] of ``rows`` (ts, value, unit) in [since, until), and how many were numbers in an active-power
    unit. ValueError when they cover under half of the span (by their first and last times)."""
    factors = UNIT_FACTORS["kW"]
    times, values = [], []
    for ts, value, unit in rows:
        if unit not in factors or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value) or not since <= ts < until:
            continue
        times.append(ts)
        values.append(value * factors[unit])
    if len(values) < 2 or times[-1] - times[0] < (until - since) / 2:
        raise ValueError(f"{len(values)} reading(s) of {what} in kW, W or MW over the last {until - since:.0f} s: "
                         "under half of it covered")  # fmt: skip
    return float(np.mean(values)), len(values)


@dataclass(slots=True)
class Nowcast:
    """What the nowcast keeps between rounds: each interval's plan and the corrections in it."""

    spec: NowcastSpec
    rated_kw: Mapping[str, float] = field(default_factory=dict)  # inverter -> rated kW (the clear-sky index's)
    planned: dict[int, Planned] = field(default_factory=dict)  # interval start -> what its round predicted
    index: float | None = None  # the last clear-sky index measured

    def pv_points(self, devices: Sequence[str]) -> dict[str, str]:
        """Each inverter's output point in central's readings (none when ``pv_point`` is empty)."""
        if not self.spec.pv_point:
            return {}
        return {d: self.spec.pv_point.format(device=d) for d in devices}

    def correction(self, head_rows: Rows, pv_rows: Mapping[str, Rows], now: float, interval_s: int,
                   starts: np.ndarray, forecast_load_kw: np.ndarray,
                   forecast_pv_kw: np.ndarray | None = None) -> Correction:  # fmt: skip
        """The corrections for a round planning ``starts`` (the first: the interval after the one ``now`` is in)
        from the head's readings and each inverter's (``pv_rows``: device -> rows; empty: the head alone).
        ValueError (why) when there is none to make."""
        running = math.floor(now / interval_s) * interval_s
        plan = self.planned.get(running)
        if plan is None:
            raise ValueError(f"no round planned the interval now running ({running}): nothing to compare with")
        since = max(float(running), now - self.spec.window_s)
        if now - since < 1.0:
            raise ValueError("the interval now running began under a second ago")
        measured, n = mean_kw(head_rows, since, now, f"{self.spec.site}/{self.spec.point}")
        pv_now: dict[str, float] = {}
        if pv_rows and set(pv_rows) >= set(plan.out_kw):
            try:
                pv_now = {d: mean_kw(pv_rows[d], since, now, f"{self.spec.site}/{d}")[0] for d in plan.out_kw}
            except ValueError:
                pv_now = {}  # an inverter unread: the head alone
        share = self.spec.max_share
        if pv_now:
            load_err = measured + sum(pv_now.values()) - plan.head_kw - sum(plan.out_kw.values())
            free = [d for d in plan.out_kw if not plan.limited[d]]
            seen, expected = sum(pv_now[d] for d in free), sum(plan.avail_kw[d] for d in free)
            # the sun's factor where the limits left the output free and there was PV to expect
            factor = seen / expected if free and expected > 0.01 * sum(plan.avail_kw.values()) + 1.0 else 1.0
            pv_total = factor * plan.pv_factor
            pv_total = min(max(pv_total, 1.0 - share), 1.0 + share)
        else:
            load_err, pv_total = measured - plan.head_kw, 1.0
        error = plan.load_corr_kw + load_err
        first = int(starts[0])
        ahead = np.array([(int(s) - first) // interval_s + 1 for s in starts], dtype=float)
        if first <= running:  # a round whose first interval is the running one: that one is 0 ahead
            ahead -= 1
        fade = self.spec.decay ** np.maximum(ahead, 0)
        bound = share * np.abs(np.asarray(forecast_load_kw, float))
        pv_factor = 1.0 + (pv_total - 1.0) * fade
        index, pv_kw = None, None
        if self.spec.clear_sky is not None and forecast_pv_kw is not None:
            free = [d for d in plan.out_kw if not plan.limited[d]] if pv_now else []
            index, pv_kw = self._clear_sky(pv_now, free, since, now, starts, interval_s, ahead, forecast_pv_kw)
            if pv_kw is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    f = np.asarray(forecast_pv_kw, float)
                    pv_factor = np.where(f > 0, pv_kw / f, 1.0)
        return Correction(now, error, measured, plan.head_kw, n, np.clip(error * fade, -bound, bound), pv_total,
                          pv_factor, sum(pv_now.values()) if pv_now else None, index, pv_kw)  # fmt: skip

    def _clear_sky(self, pv_now: Mapping[str, float], free: Sequence[str], since: float, now: float,
                   starts: np.ndarray, interval_s: int, ahead: np.ndarray,
                   forecast_pv_kw: np.ndarray) -> tuple[float | None, np.ndarray | None]:  # fmt: skip
        """The clear-sky index now (measured, or the last one) and each interval's PV from it (module docstring)."""
        cs = self.spec.clear_sky
        assert cs is not None
        mids = np.asarray(starts, float) + interval_s / 2.0
        per_kw = clear_sky_kw_per_kw(cs, [(since + now) / 2.0, *mids.tolist()])
        rated_free = sum(self.rated_kw.get(d, 0.0) for d in free)
        if free and per_kw[0] * rated_free > CLEAR_SKY_MIN_SHARE * rated_free:
            self.index = min(max(sum(pv_now[d] for d in free) / (per_kw[0] * rated_free), 0.0), CLEAR_SKY_INDEX_MAX)
        if self.index is None or not self.rated_kw:
            return None, None
        weight = self.spec.decay ** np.maximum(ahead - 1, 0)
        sun = self.index * per_kw[1:] * sum(self.rated_kw.values())
        return self.index, weight * sun + (1.0 - weight) * np.asarray(forecast_pv_kw, float)

    def remember(self, starts: Sequence[int], plans: Sequence[Planned]) -> None:
        """A round's plan per interval (its predictions and the corrections it carried)."""
        for s, p in zip(starts, plans, strict=True):
            self.planned[int(s)] = p
        if len(self.planned) > 4 * len(starts):  # keep a few horizons' worth
            for s in sorted(self.planned)[: -2 * len(starts)]:
                self.planned.pop(s, None)


__all__ = [
    "PV_POINT",
    "ClearSky",
    "Correction",
    "clear_sky_kw_per_kw",
    "smoothed",
    "Nowcast",
    "NowcastSpec",
    "Planned",
    "mean_kw",
]
