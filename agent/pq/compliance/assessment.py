"""Assessment of measured power quality against the limits of :mod:`.limits`: one :class:`CriterionResult` per
criterion, channel and harmonic order, gathered in a :class:`ComplianceReport`.

The criteria read a :class:`Series` of arrays: 10-min values (IEC 61000-4-30 5.5.3), 150/180-cycle values
(5.5.2), 10-s frequencies (5.1) and the Plt of each channel, built from an analyze document
(:func:`~agent.pq.compliance.document.series_of_document`) or from the rolling week the agent keeps
(:meth:`~agent.pq.compliance.rolling.RollingStatistics.series`).

Statistics (our reading, docs/pq-report.md):

- "X % of the values within the limit" and "the X-th percentile is within the limit" are the same test
  when the percentile is the nearest-rank one (:func:`percentile_nearest_rank`): the smallest value
  that at least X % of the values do not exceed. The measured value reported is that percentile (or,
  for a two-sided band, the share of values inside it).
- EN 50160 asks its percentages "during each period of one week" (frequency: of a year) and IEEE 519
  "daily" and "weekly": the values are split into consecutive periods of that length from the file
  start, each period is assessed, the worst is reported. A record shorter than the period is assessed
  on what it holds and marked ``period_complete: false``.
- Flagged values (IEC 61000-4-30 4.7: a dip, swell or interruption overlapped them) are left out, and
  only 10-min values whose interval lies wholly in the record are used.
- Comparison: EN 50160 says "less than or equal to" (and "within the range"), so a value equal to the
  limit passes; IEEE 519-2014 5.1 says "should be less than", so a value equal to the limit fails.
- A criterion with no value to assess has ``passed`` None and a ``note`` saying why (no value of its kind
  in the record, every value flagged, a rate too low for the order, too few channels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from agent.pq.compliance.limits import (
    DAY_S,
    EN50160_HARMONIC_LIMITS_PCT,
    EN50160_LIMITS,
    IEEE519_DAILY_FACTOR,
    IEEE519_DAILY_PERCENTILE,
    IEEE519_MAX_ORDER,
    IEEE519_WEEKLY_PERCENTILE,
    STANDARDS,
    WEEK_S,
    YEAR_S,
    ComplianceError,
    ieee519_row,
)

# ---------------------------------------------------------------------------------------------------- statistics


def percentile_nearest_rank(values: Sequence[float] | np.ndarray, percent: float) -> float:
    """The smallest value that ``percent`` % of ``values`` do not exceed (nearest rank: sorted[ceil(p n) - 1])."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        raise ComplianceError("values: empty: allowed at least one value")
    if not 0 < percent <= 100:
        raise ComplianceError(f"percent={percent!r}: allowed 0 < percent <= 100")
    rank = math.ceil(round(percent / 100.0 * v.size, 9))
    return float(v[max(rank, 1) - 1])


def percentile_nearest_rank_top(top_values: Sequence[float] | np.ndarray, count: int, percent: float) -> float:
    """:func:`percentile_nearest_rank` of ``count`` values of which ``top_values`` are the largest (any order).

    The nearest-rank percentile is the value at rank ``ceil(p n)`` of the sorted values, so a high percentile
    needs only the ``n - ceil(p n) + 1`` largest: a streaming caller keeps those instead of every value.
    Raises :class:`ComplianceError` when the rank falls below what was kept.
    """
    if count <= 0:
        raise ComplianceError("count: 0: allowed at least one value")
    if not 0 < percent <= 100:
        raise ComplianceError(f"percent={percent!r}: allowed 0 < percent <= 100")
    top = np.sort(np.asarray(top_values, dtype=np.float64))[::-1]
    rank = max(math.ceil(round(percent / 100.0 * count, 9)), 1)
    above = count - rank  # values larger than (or tied with, after) the percentile
    if above >= min(top.size, count):
        raise ComplianceError(f"top_values: {top.size} kept of {count}: the {percent:g}th percentile needs the "
                              f"{above + 1} largest")  # fmt: skip
    return float(top[above])


def share_within_pct(values: Sequence[float] | np.ndarray, low: float, high: float) -> float:
    """Percentage of ``values`` inside ``[low, high]`` (bounds included)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ComplianceError("values: empty: allowed at least one value")
    return float(np.count_nonzero((v >= low) & (v <= high)) / v.size * 100.0)


@dataclass(slots=True)
class CriterionResult:
    """One pass/fail line. ``passed`` is None when the record holds no value to assess."""

    standard: str
    criterion: str
    clause: str
    channel: str | None
    statistic: str
    limit: float
    measured: float | None
    unit: str
    passed: bool | None
    values: int
    excluded: int = 0
    periods: int = 0
    period_complete: bool = False
    order: int | None = None
    note: str = ""


def _periods(times_s: np.ndarray, period_s: float) -> np.ndarray:
    """Index of the consecutive period (from the first value) each time falls in."""
    return np.floor((times_s - times_s.min()) / period_s).astype(np.int64) if times_s.size else np.zeros(0, int)


def _assess(values: np.ndarray, times_s: np.ndarray, period_s: float, record_s: float,
            statistic: Callable[[np.ndarray], float], ok: Callable[[float], bool],
            worst: Callable[[Sequence[float]], float]) -> tuple[float | None, bool | None, int, bool]:  # fmt: skip
    """Split into periods, assess each; return (worst measured, all passed, periods, period_complete)."""
    if values.size == 0:
        return None, None, 0, record_s >= period_s
    idx = _periods(times_s, period_s)
    return _worst([statistic(values[idx == k]) for k in np.unique(idx)], ok, worst, record_s >= period_s)


def _worst(measured: list[float], ok: Callable[[float], bool], worst: Callable[[Sequence[float]], float],
           complete: bool) -> tuple[float | None, bool | None, int, bool]:  # fmt: skip
    """(worst measured, all passed, periods, complete) of one statistic per period."""
    if not measured:
        return None, None, 0, complete
    return float(worst(measured)), all(ok(m) for m in measured), len(measured), complete


@dataclass(frozen=True, slots=True)
class DailyPercentiles:
    """IEEE 519 5.1 a) already reduced: per UTC day, the daily percentile of each 3-s quantity of one channel.

    For a caller that cannot keep a day of 3-s values (the agent's PQ service keeps the largest of them,
    :class:`RollingStatistics`). Columns: THD (orders 2..H) first, then harmonic orders 2..H; NaN where the day
    holds no value of the quantity.
    """

    day_start_s: np.ndarray  # [days]
    measured: np.ndarray  # [days, 1 + orders]: the percentile of the day's values
    values: np.ndarray  # [days, 1 + orders]: how many values each percentile was taken over
    excluded: int  # flagged 3-s values left out, all days


@dataclass(slots=True)
class Series:
    """The values the criteria read, flagged and incomplete ones already left out.

    Built from an analyze document by :func:`series_of_document`, or by a streaming caller from what it kept
    (:meth:`RollingStatistics.series`). Times are seconds on any one clock; ``duration_s`` is how long the
    record (or the kept history) is, which tells whether each criterion's period is complete.
    """

    channels: list[str]
    udin_v: float
    nominal_hz: float
    duration_s: float
    max_order: int
    ten_t: np.ndarray  # start of each used 10-min value [s from the file start]
    ten_rms: dict[str, np.ndarray]
    ten_h: dict[str, np.ndarray]  # [values, orders 2..H]
    ten_u2: np.ndarray
    ten_excluded: int
    short_t: np.ndarray
    short_h: dict[str, np.ndarray]
    short_excluded: int
    freq_t: np.ndarray
    freq_hz: np.ndarray
    plt: dict[str, np.ndarray] = field(default_factory=dict)
    short_daily: dict[str, DailyPercentiles] | None = None  # when set, the 3-s criteria read it, not short_h
    plt_excluded: int = 0  # flagged Plt values left out (per channel: the flags are by time)
    freq_excluded: int = 0  # flagged 10-s frequencies left out


#: How long one value of each kind spans [s]: IEC 61000-4-30 5.5.3 (10 min), 5.1 (10 s), 5.5.2 (150/180 cycles,
#: 3 s at nominal frequency); IEC 61000-4-15 Plt (12 Pst of 10 min). A record shorter than that holds none.
VALUE_SPAN_S = {"10-min": 600.0, "10-s": 10.0, "3-s": 3.0, "Plt": 7200.0}


def no_value_reason(kind: str, record_s: float, excluded: int) -> str:
    """Why a criterion over values of ``kind`` (a key of :data:`VALUE_SPAN_S`) has none to assess.

    Every value flagged (IEC 61000-4-30 4.7), a record shorter than one value, or simply none in the record.
    """
    if excluded:
        return f"all {excluded} {kind} values flagged (a dip, swell or interruption in them, IEC 61000-4-30 4.7)"
    span = VALUE_SPAN_S[kind]
    if record_s < span:
        return f"no {kind} value: the record is {_duration(record_s)} long, a {kind} value needs {_span(span)}"
    return f"no {kind} value in the record"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _span(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 60 else f"{seconds / 60:g} min" if seconds < 3600 else f"{seconds / 3600:g} h"


def thd_from_harmonics_pct(h: np.ndarray, max_order: int) -> np.ndarray:
    """THD [%] of each row of harmonic percentages (orders 2..) up to ``max_order``."""
    return np.sqrt(np.nansum(h[:, : max_order - 1] ** 2, axis=1)) if h.size else np.zeros(0)


# ---------------------------------------------------------------------------------------------------- EN 50160


def en50160_criteria(s: Series, standard: str = "en50160-lv") -> list[CriterionResult]:
    """EN 50160:2010 criteria over a :class:`Series`; one line per criterion, channel and harmonic order."""
    if standard not in EN50160_LIMITS:
        raise ComplianceError(f"standard={standard!r}: allowed {', '.join(EN50160_LIMITS)}")
    lim = EN50160_LIMITS[standard]
    out: list[CriterionResult] = []
    week, share = WEEK_S, lim.share_pct

    def add(criterion: str, clause: str, channel: str | None, statistic: str, limit: float, unit: str,
            values: np.ndarray, times: np.ndarray, excluded: int, *, period_s: float = week, kind: str = "upper",
            band: tuple[float, float] = (0.0, 0.0), percent: float = share, order: int | None = None,
            note: str = "", value: str = "10-min") -> None:  # fmt: skip
        ok_vals = ~np.isnan(values)
        values, times = values[ok_vals], times[ok_vals]
        if kind == "upper":  # the nearest-rank percentile <= limit
            measured, passed, periods, complete = _assess(
                values, times, period_s, s.duration_s,
                lambda v: percentile_nearest_rank(v, percent), lambda m: m <= limit, max,
            )  # fmt: skip
        else:  # the share of values inside the band >= limit
            measured, passed, periods, complete = _assess(
                values, times, period_s, s.duration_s,
                lambda v: share_within_pct(v, *band), lambda m: m >= limit, min,
            )  # fmt: skip
        if measured is None:
            note = "; ".join(filter(None, (no_value_reason(value, s.duration_s, excluded), note)))
        out.append(CriterionResult(standard, criterion, clause, channel, statistic, limit, measured, unit, passed,
                                   int(values.size), excluded, periods, complete, order, note))  # fmt: skip

    lo, hi = -lim.voltage_band_pct, lim.voltage_band_pct
    a_lo, a_hi = lim.voltage_all_band_pct
    for ch in s.channels:
        # rounded to 1e-9 %: 253 V over 230 V is 10.000000000000009 % in floating point, and it is on the band
        dev = np.round((s.ten_rms[ch] / s.udin_v - 1.0) * 100.0, 9)
        add("supply voltage variation", lim.sub("2.2"), ch,
            f"share of 10-min values within Udin {lo:+g}/{hi:+g} % in each week", lim.voltage_share_pct, "%",
            dev, s.ten_t, s.ten_excluded, kind="band", band=(lo, hi))  # fmt: skip
        add("supply voltage variation (all values)", lim.sub("2.2"), ch,
            f"share of 10-min values within Udin {a_lo:+g}/{a_hi:+g} % in each week", 100.0, "%",
            dev, s.ten_t, s.ten_excluded, kind="band", band=(a_lo, a_hi))  # fmt: skip
    f_dev = np.round((s.freq_hz / s.nominal_hz - 1.0) * 100.0, 9)
    fb = lim.frequency_band_pct
    add("power frequency", lim.sub("2.1"), None,
        f"share of 10-s values within {s.nominal_hz:g} Hz +-{fb:g} % in each year", lim.frequency_share_pct, "%",
        f_dev, s.freq_t, s.freq_excluded, period_s=YEAR_S, kind="band", band=(-fb, fb),
        note="interconnected system", value="10-s")  # fmt: skip
    f_lo, f_hi = lim.frequency_all_band_pct
    add("power frequency (all values)", lim.sub("2.1"), None,
        f"share of 10-s values within {s.nominal_hz:g} Hz {f_hi:+g}/{f_lo:+g} %", 100.0, "%",
        f_dev, s.freq_t, s.freq_excluded, period_s=YEAR_S, kind="band", band=(f_lo, f_hi), note="interconnected system",
        value="10-s")  # fmt: skip
    for ch in s.channels:
        values = s.plt[ch]
        times = np.arange(values.size) * 7200.0
        add("flicker severity Plt", lim.sub("2.3.2"), ch, f"{share:g}th percentile of the 2-h Plt values in each week",
            lim.plt_limit, "", values, times, s.plt_excluded, value="Plt")  # fmt: skip
    if len(s.channels) == 3:
        add("supply voltage unbalance u2", lim.sub("2.5"), None,
            f"{share:g}th percentile of the 10-min u2 values in each week", lim.unbalance_limit_pct, "%",
            s.ten_u2, s.ten_t, s.ten_excluded)  # fmt: skip
    else:
        out.append(CriterionResult(standard, "supply voltage unbalance u2", lim.sub("2.5"), None, "",
                                   lim.unbalance_limit_pct, None, "%", None, 0, note="needs va, vb and vc"))  # fmt: skip
    thd_order = min(lim.thd_max_order, s.max_order)
    for ch in s.channels:
        h = s.ten_h[ch]
        add("THD", lim.sub("2.6"), ch, f"{share:g}th percentile of the 10-min THD (orders 2..{thd_order}) in each week",
            lim.thd_limit_pct, "%", thd_from_harmonics_pct(h, thd_order), s.ten_t, s.ten_excluded,
            note="" if thd_order == lim.thd_max_order else f"the record's rate gives orders up to {s.max_order}")  # fmt: skip
        for order, limit in EN50160_HARMONIC_LIMITS_PCT.items():
            if order > s.max_order:
                out.append(CriterionResult(standard, f"harmonic {order}", lim.sub("2.6") + " Table 1", ch, "", limit,
                                           None, "%", None, 0, order=order,
                                           note=f"not measured: the record's rate gives orders up to {s.max_order}"))  # fmt: skip
                continue
            col = h[:, order - 2] if h.size else np.zeros(0)
            add(f"harmonic {order}", lim.sub("2.6") + " Table 1", ch,
                f"{share:g}th percentile of the 10-min values in each week", limit, "%", col, s.ten_t,
                s.ten_excluded, order=order)  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------- IEEE 519


def ieee519_criteria(s: Series, bus_kv: float | None = None) -> list[CriterionResult]:
    """IEEE 519-2014 clause 5.1 criteria over a :class:`Series` (``bus_kv`` default: Udin x sqrt 3)."""
    row = ieee519_row(s.udin_v * math.sqrt(3.0) / 1000.0 if bus_kv is None else bus_kv)
    std = "ieee519"
    out: list[CriterionResult] = []
    order_top = min(IEEE519_MAX_ORDER, s.max_order)
    note = "" if order_top == IEEE519_MAX_ORDER else f"the record's rate gives orders up to {s.max_order}"
    checks = (
        # 5.1 a): daily 99th percentile of the very short time (3 s) values < 1.5 x Table 1
        ("3 s", s.short_h, s.short_t, s.short_excluded, DAY_S, IEEE519_DAILY_PERCENTILE, IEEE519_DAILY_FACTOR, "day"),
        # 5.1 b): weekly 95th percentile of the short time (10 min) values < Table 1
        ("10 min", s.ten_h, s.ten_t, s.ten_excluded, WEEK_S, IEEE519_WEEKLY_PERCENTILE, 1.0, "week"),
    )
    for label, hs, times, flagged, period, pct, factor, per in checks:
        daily = s.short_daily if label == "3 s" else None
        for ch in s.channels:
            h = hs[ch]
            items: list[tuple[str, np.ndarray, float, int | None]] = [
                ("THD", thd_from_harmonics_pct(h, order_top), row.thd_pct * factor, None)
            ]
            items += [
                (f"harmonic {k}", h[:, k - 2] if h.size else np.zeros(0), row.individual_pct * factor, k)
                for k in range(2, order_top + 1)
            ]
            for col, (name, values, limit, order) in enumerate(items):
                if daily is not None:  # already one percentile per day
                    d = daily[ch]
                    have = d.values[:, col] > 0 if d.values.size else np.zeros(0, bool)
                    measured, passed, periods, complete = _worst(
                        list(d.measured[have, col]), lambda m, lim=limit: m < lim, max, s.duration_s >= period
                    )  # fmt: skip
                    used, excluded = int(d.values[:, col].sum()) if d.values.size else 0, d.excluded
                else:
                    excluded = flagged
                    keep = ~np.isnan(values)
                    measured, passed, periods, complete = _assess(
                        values[keep], times[keep], period, s.duration_s,
                        lambda v, p=pct: percentile_nearest_rank(v, p), lambda m, lim=limit: m < lim, max,
                    )  # fmt: skip
                    used = int(np.count_nonzero(keep))
                why = note
                if measured is None:
                    why = "; ".join(
                        filter(None, (no_value_reason(label.replace(" ", "-"), s.duration_s, excluded), note))
                    )
                out.append(CriterionResult(
                    std, f"{name} ({label})", "IEEE 519-2014 5.1, Table 1", ch,
                    f"{pct:g}th percentile of the {label} values in each {per}"
                    + (f" < {factor:g} x Table 1" if factor != 1 else " < Table 1"),
                    limit, measured, "%", passed, used, excluded, periods, complete, order,
                    why,
                ))  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------- the report


@dataclass(slots=True)
class ComplianceReport:
    standard: str
    criteria: list[CriterionResult]
    duration_s: float
    period_s: float
    bus_kv: float | None = None
    ieee519_row: str | None = None

    @property
    def verdict(self) -> str:
        """ "fail" if a criterion failed, "pass" if every one passed, else "incomplete" (some had no data)."""
        if any(c.passed is False for c in self.criteria):
            return "fail"
        return "pass" if all(c.passed for c in self.criteria) else "incomplete"

    def to_json(self) -> dict[str, Any]:
        return {
            "standard": self.standard,
            "verdict": self.verdict,
            "period": {
                "duration_s": self.duration_s,
                "required_s": self.period_s,
                "complete": self.duration_s >= self.period_s,
            },
            "bus_kv": self.bus_kv,
            "ieee519_row": self.ieee519_row,
            "criteria": [asdict(c) for c in self.criteria],
        }


def evaluate_series(s: Series, standard: str, bus_kv: float | None = None) -> ComplianceReport:
    """Assess a :class:`Series` against ``standard``; ``bus_kv`` (ieee519 only) defaults to Udin x sqrt 3."""
    if standard not in STANDARDS:
        raise ComplianceError(f"standard={standard!r}: allowed {', '.join(STANDARDS)}")
    if standard == "ieee519":
        kv = s.udin_v * math.sqrt(3.0) / 1000.0 if bus_kv is None else bus_kv
        row = ieee519_row(kv)
        return ComplianceReport(standard, ieee519_criteria(s, kv), s.duration_s, WEEK_S, kv, row.label)
    if bus_kv is not None:
        raise ComplianceError(f"bus_kv={bus_kv!r}: only for ieee519 (EN 50160 uses Udin)")
    return ComplianceReport(standard, en50160_criteria(s, standard), s.duration_s, WEEK_S)
