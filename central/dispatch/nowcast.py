"""The nowcast: the feeder head's measured power corrects the load forecast of the intervals about to come
(docs/dispatch.md, "Nowcast").

A day-ahead load forecast errs in runs of one sign that last hours (the weather, a holiday the calendar missed,
the loads' own slow swings); the head's measured power shows the error while it lasts. Before each round, the
mean of the head's active power over the last ``window_s`` (central's readings of the configured point, within
the interval now running) is compared with what the round that planned this interval predicted at the head. The
difference, plus the correction that round applied, is the load forecast's error now; each interval ``k`` ahead
gets it times ``decay ** (k + 1)`` (an error that fades as a first-order autoregression: 0.9 per 15 minutes keeps
half of it for about 1.6 hours), bounded by ``max_share`` of the forecast load. Everything the head shows is put
on the load: PV that falls short of its forecast looks like more load, which is what the head sees of it.

Nothing is corrected when the readings are missing, too few (under half of the window's span, counted by their
times), not numbers or in a unit that is not active power, or when no round predicted this interval: the forecast
then stands as it is, and the round says why (``dispatch_nowcast`` in the log).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from central.readings import UNIT_FACTORS


@dataclass(frozen=True, slots=True)
class NowcastSpec:
    site: str  # the site whose agent sends the head's readings
    point: str  # the head's active power point in central's readings (import positive), e.g. "sub-meter.p_total"
    window_s: float = 300.0  # the readings averaged, ending now
    decay: float = 0.9  # the share of the error kept per interval ahead
    max_share: float = 0.3  # |correction| at most this share of the interval's forecast load


@dataclass(frozen=True, slots=True)
class Correction:
    """The load correction of one round: ``error_kw`` measured at ``at`` and its value per interval ahead."""

    at: float
    error_kw: float  # the load forecast's error now (measured - forecast, as the head shows it)
    measured_kw: float
    predicted_kw: float
    readings: int
    load_kw: np.ndarray  # added to the forecast load of each interval of the round


@dataclass(slots=True)
class Nowcast:
    """What the nowcast keeps between rounds: each interval's predicted head power and the correction in it."""

    spec: NowcastSpec
    predicted_kw: dict[int, float] = field(default_factory=dict)  # interval start -> head [kW] as planned
    applied_kw: dict[int, float] = field(default_factory=dict)  # interval start -> load correction in that plan

    def head_mean_kw(self, rows: Sequence[tuple[float, Any, str]], since: float, until: float) -> tuple[float, int]:
        """The mean head power [kW] of ``rows`` (ts, value, unit) in [since, until), and how many were numbers in
        an active-power unit. ValueError when they cover under half of the span (by their first and last times)."""
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
            raise ValueError(f"{len(values)} reading(s) of {self.spec.site}/{self.spec.point} in kW, W or MW over "
                             f"the last {until - since:.0f} s: under half of it covered")  # fmt: skip
        return float(np.mean(values)), len(values)

    def correction(self, rows: Sequence[tuple[float, Any, str]], now: float, interval_s: int, starts: np.ndarray,
                   forecast_load_kw: np.ndarray) -> Correction:  # fmt: skip
        """The correction for a round planning ``starts`` (the first: the interval after the one ``now`` is in)
        from the head's readings ``rows``. ValueError (why) when there is none to make."""
        running = math.floor(now / interval_s) * interval_s
        predicted = self.predicted_kw.get(running)
        if predicted is None:
            raise ValueError(f"no round planned the interval now running ({running}): nothing to compare with")
        since = max(float(running), now - self.spec.window_s)
        if now - since < 1.0:
            raise ValueError("the interval now running began under a second ago")
        measured, n = self.head_mean_kw(rows, since, now)
        error = self.applied_kw.get(running, 0.0) + measured - predicted
        first = int(starts[0])
        ahead = np.array([(int(s) - first) // interval_s + 1 for s in starts], dtype=float)
        if first <= running:  # a round whose first interval is the running one: that one is 0 ahead
            ahead -= 1
        raw = error * self.spec.decay ** np.maximum(ahead, 0)
        bound = self.spec.max_share * np.abs(np.asarray(forecast_load_kw, float))
        return Correction(now, error, measured, predicted, n, np.clip(raw, -bound, bound))

    def remember(self, starts: Sequence[int], head_kw: Sequence[float], applied: Mapping[int, float]) -> None:
        """A round's plan: its predicted head power per interval, and the correction each carried."""
        for s, h in zip(starts, head_kw, strict=True):
            self.predicted_kw[int(s)] = float(h)
            self.applied_kw[int(s)] = float(applied.get(int(s), 0.0))
        if len(self.predicted_kw) > 4 * len(starts):  # keep a few horizons' worth
            for s in sorted(self.predicted_kw)[: -2 * len(starts)]:
                self.predicted_kw.pop(s, None)
                self.applied_kw.pop(s, None)


__all__ = ["Correction", "Nowcast", "NowcastSpec"]
