"""Compliance of measured power quality with EN 50160 (LV, MV) and IEEE 519-2014 (voltage distortion).

Every limit lives in this module's tables, each value with the clause or table it comes from. The criteria
read a :class:`Series` of arrays: 10-min values (IEC 61000-4-30 5.5.3), 150/180-cycle values (5.5.2), 10-s
frequencies (5.1) and the Plt of each channel. ``gridedge pq report`` builds it from the JSON document of
``gridedge pq analyze`` (:func:`series_of_document`; :mod:`agent.pq.analyze`, schema in docs/pq-report.md);
the agent's PQ service from the rolling week it keeps per stream (:class:`RollingStatistics`, in bounded
memory; docs/pq-service.md). :func:`evaluate` and :func:`evaluate_series` give the report.

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

References
----------
[1] EN 50160:2010, Voltage characteristics of electricity supplied by public electricity networks.
    Clause 4 (low voltage), clause 5 (medium voltage).
[2] IEEE Std 519-2014, IEEE Recommended Practice and Requirements for Harmonic Control in Electric Power
    Systems. Clause 5.1, Table 1 (voltage distortion limits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

STANDARDS = ("en50160-lv", "en50160-mv", "ieee519")

WEEK_S = 7 * 86400.0
DAY_S = 86400.0
YEAR_S = 365 * 86400.0

# ---------------------------------------------------------------------------------------------------- EN 50160

#: Individual harmonic voltages in % of the fundamental, orders 2..25, assessed on 95 % of the 10-min mean
#: values of each week. LV: EN 50160:2010 4.2.6, Table 1; MV: 5.2.6, the MV table, whose values are the same
#: (its note: the 3rd may be substantially lower depending on the network design). Above order 25 the
#: standard gives no values ("usually small, but largely unpredictable due to resonance effects").
EN50160_HARMONIC_LIMITS_PCT: dict[int, float] = {
    2: 2.0,  # even
    3: 5.0,  # odd, multiple of 3
    4: 1.0,  # even
    5: 6.0,  # odd, not multiple of 3
    6: 0.5,  # even 6..24
    7: 5.0,  # odd, not multiple of 3
    8: 0.5,
    9: 1.5,  # odd, multiple of 3
    10: 0.5,
    11: 3.5,  # odd, not multiple of 3
    12: 0.5,
    13: 3.0,  # odd, not multiple of 3
    14: 0.5,
    15: 0.5,  # odd, multiple of 3
    16: 0.5,
    17: 2.0,  # odd, not multiple of 3
    18: 0.5,
    19: 1.5,  # odd, not multiple of 3
    20: 0.5,
    21: 0.5,  # odd, multiple of 3
    22: 0.5,
    23: 1.5,  # odd, not multiple of 3
    24: 0.5,
    25: 1.5,  # odd, not multiple of 3
}


@dataclass(frozen=True, slots=True)
class En50160Limits:
    """The EN 50160:2010 limits this module assesses, for one voltage level; ``clause`` is 4 (LV) or 5 (MV)."""

    level: str
    clause: int
    share_pct: float = 95.0  # 4.2.2.2 / 5.2.2, 4.2.3.2, 4.2.5, 4.2.6: "95 % of the 10 min mean values ... of each week"
    voltage_band_pct: float = 10.0  # 4.2.2.2 / 5.2.2: within Un (Uc) +- 10 % for 95 % (LV) / 99 % (MV) of 10-min means
    voltage_share_pct: float = 95.0  # 4.2.2.2 LV: 95 %; 5.2.2 MV: 99 % of the 10-min means of each week
    voltage_all_band_pct: tuple[float, float] = (-15.0, 10.0)  # 4.2.2.2 / 5.2.2: all 10-min means within +10/-15 %
    frequency_band_pct: float = 1.0  # 4.2.1 / 5.2.1, interconnected: 50 Hz +- 1 % during 99.5 % of a year
    frequency_share_pct: float = 99.5  # 4.2.1 / 5.2.1
    frequency_all_band_pct: tuple[float, float] = (-6.0, 4.0)  # 4.2.1 / 5.2.1: 50 Hz +4 % / -6 % during 100 %
    plt_limit: float = 1.0  # 4.2.3.2 / 5.2.3.2: Plt <= 1 for 95 % of the time
    unbalance_limit_pct: float = 2.0  # 4.2.5 / 5.2.5: u2 0..2 % for 95 % of the 10-min means of each week
    thd_limit_pct: float = 8.0  # 4.2.6 / 5.2.6: THD, including harmonics up to order 40, <= 8 %
    thd_max_order: int = 40  # 4.2.6 / 5.2.6

    def sub(self, item: str) -> str:
        """The clause number of an item for this level: ``sub("2.6")`` is "4.2.6" for LV."""
        return f"EN 50160:2010 {self.clause}.{item}"


EN50160_LIMITS: dict[str, En50160Limits] = {
    "en50160-lv": En50160Limits("LV", 4),
    "en50160-mv": En50160Limits("MV", 5, voltage_share_pct=99.0),  # 5.2.2: 99 % within Uc +- 10 % (docs/pq-report.md)
}

# ---------------------------------------------------------------------------------------------------- IEEE 519


@dataclass(frozen=True, slots=True)
class Ieee519Row:
    """One row of IEEE 519-2014 Table 1: bus voltage V at the PCC in ``(above_kv, up_to_kv]``."""

    label: str
    above_kv: float
    up_to_kv: float
    individual_pct: float
    thd_pct: float


#: IEEE 519-2014 Table 1, voltage distortion limits (bus voltage line to line at the PCC).
IEEE519_VOLTAGE_LIMITS: tuple[Ieee519Row, ...] = (
    Ieee519Row("V <= 1.0 kV", 0.0, 1.0, 5.0, 8.0),  # Table 1 row 1
    Ieee519Row("1 kV < V <= 69 kV", 1.0, 69.0, 3.0, 5.0),  # Table 1 row 2
    Ieee519Row("69 kV < V <= 161 kV", 69.0, 161.0, 1.5, 2.5),  # Table 1 row 3
    Ieee519Row("161 kV < V", 161.0, math.inf, 1.0, 1.5),  # Table 1 row 4 (footnote: up to 2.0 % THD near HVDC)
)
IEEE519_MAX_ORDER = 50  # 5.1 / Table 1: harmonics up to order 50
IEEE519_WEEKLY_PERCENTILE = 95.0  # 5.1 b): weekly 95th percentile short time (10 min) values < Table 1
IEEE519_DAILY_PERCENTILE = 99.0  # 5.1 a): daily 99th percentile very short time (3 s) values < 1.5 x Table 1
IEEE519_DAILY_FACTOR = 1.5  # 5.1 a)


class ComplianceError(ValueError):
    """Bad input to the compliance report: names the key, the value and what is allowed."""


def en50160_harmonic_limit_pct(order: int) -> float:
    """EN 50160:2010 Table 1 limit of harmonic ``order`` [% of the fundamental] (orders 2..25)."""
    if order not in EN50160_HARMONIC_LIMITS_PCT:
        raise ComplianceError(f"order={order!r}: EN 50160 Table 1 gives orders 2..25 (none above 25: see its note)")
    return EN50160_HARMONIC_LIMITS_PCT[order]


def ieee519_row(bus_kv: float) -> Ieee519Row:
    """The IEEE 519-2014 Table 1 row of a bus voltage [kV line to line]; the upper bound of a row is in it."""
    if isinstance(bus_kv, bool) or not isinstance(bus_kv, int | float) or not (math.isfinite(bus_kv) and bus_kv > 0):
        raise ComplianceError(f"bus_kv={bus_kv!r}: allowed a finite voltage > 0 kV (line to line at the PCC)")
    for row in IEEE519_VOLTAGE_LIMITS:
        if row.above_kv < bus_kv <= row.up_to_kv:
            return row
    raise AssertionError("IEEE519_VOLTAGE_LIMITS covers (0, inf)")  # pragma: no cover


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


# ---------------------------------------------------------------------------------------------------- the input


def _need(data: dict[str, Any], key: str, where: str = "input") -> Any:
    if not isinstance(data, dict) or key not in data:
        raise ComplianceError(f"{where}.{key}: missing: the JSON of `gridedge pq analyze --json` has it")
    return data[key]


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


def series_of_document(data: dict[str, Any]) -> Series:
    """The :class:`Series` of an analyze document (docs/pq-report.md); bad input raises :class:`ComplianceError`."""
    try:
        return _series_of(data)
    except ComplianceError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ComplianceError(
            f"input: not the JSON of `gridedge pq analyze --json` ({type(err).__name__}: {err})"
        ) from err


def _series_of(data: dict[str, Any]) -> Series:
    channels = list(_need(data, "channels"))
    if not channels:
        raise ComplianceError("input.channels: empty: allowed at least one voltage channel")
    udin = float(_need(data, "udin_v"))
    nominal = float(_need(data, "nominal_hz"))
    duration = float(_need(_need(data, "file"), "duration_s", "input.file"))
    order = int(_need(data, "max_order"))
    ten = [a for a in _need(data, "aggregates_10min") if a.get("complete", True)]
    used = [a for a in ten if not a.get("flagged", False)]
    short_all = _need(data, "aggregates_3s")
    short = [a for a in short_all if not a.get("flagged", False)]

    def rows(items: list[dict[str, Any]], key: str, ch: str) -> np.ndarray:
        out = [_nan(a[key][ch]) if key in a and ch in a[key] else math.nan for a in items]
        return np.asarray(out, dtype=np.float64)

    def matrix(items: list[dict[str, Any]], ch: str) -> np.ndarray:
        if not items:
            return np.zeros((0, max(order - 1, 0)))
        return np.array([[_nan(v) for v in a["harmonics_pct"][ch]] for a in items], dtype=np.float64)

    freq = [f for f in _need(data, "frequency_10s") if f.get("complete", True) and f.get("freq_hz") is not None]
    return Series(
        channels=channels,
        udin_v=udin,
        nominal_hz=nominal,
        duration_s=duration,
        max_order=order,
        ten_t=np.array([a["start_s"] for a in used], dtype=np.float64),
        ten_rms={ch: rows(used, "rms_v", ch) for ch in channels},
        ten_h={ch: matrix(used, ch) for ch in channels},
        ten_u2=np.array([_nan(a.get("u2_pct")) for a in used], dtype=np.float64),
        ten_excluded=len(ten) - len(used),
        short_t=np.array([a["start_s"] for a in short], dtype=np.float64),
        short_h={ch: matrix(short, ch) for ch in channels},
        short_excluded=len(short_all) - len(short),
        freq_t=np.array([f["start_s"] for f in freq], dtype=np.float64),
        freq_hz=np.array([f["freq_hz"] for f in freq], dtype=np.float64),
        plt={ch: np.array(data["channels"][ch].get("plt") or [], dtype=np.float64) for ch in channels},
    )


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def _thd(h: np.ndarray, max_order: int) -> np.ndarray:
    """THD [%] of each row of harmonic percentages (orders 2..) up to ``max_order``."""
    return np.sqrt(np.nansum(h[:, : max_order - 1] ** 2, axis=1)) if h.size else np.zeros(0)


# ---------------------------------------------------------------------------------------------------- EN 50160


def evaluate_en50160(data: dict[str, Any], standard: str = "en50160-lv") -> list[CriterionResult]:
    """EN 50160:2010 criteria over an analyze document; one line per criterion, channel and harmonic order."""
    if standard not in EN50160_LIMITS:
        raise ComplianceError(f"standard={standard!r}: allowed {', '.join(EN50160_LIMITS)}")
    return en50160_criteria(series_of_document(data), standard)


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
            note: str = "") -> None:  # fmt: skip
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
        f_dev, s.freq_t, 0, period_s=YEAR_S, kind="band", band=(-fb, fb),
        note="interconnected system")  # fmt: skip
    f_lo, f_hi = lim.frequency_all_band_pct
    add("power frequency (all values)", lim.sub("2.1"), None,
        f"share of 10-s values within {s.nominal_hz:g} Hz {f_hi:+g}/{f_lo:+g} %", 100.0, "%",
        f_dev, s.freq_t, 0, period_s=YEAR_S, kind="band", band=(f_lo, f_hi), note="interconnected system")  # fmt: skip
    for ch in s.channels:
        values = s.plt[ch]
        times = np.arange(values.size) * 7200.0
        add("flicker severity Plt", lim.sub("2.3.2"), ch, f"{share:g}th percentile of the 2-h Plt values in each week",
            lim.plt_limit, "", values, times, 0,
            note="" if values.size else "needs a record of 2 h or more")  # fmt: skip
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
            lim.thd_limit_pct, "%", _thd(h, thd_order), s.ten_t, s.ten_excluded,
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


def default_bus_kv(data: dict[str, Any]) -> float:
    """The PCC bus voltage [kV line to line] implied by the record's Udin (phase to neutral): Udin * sqrt 3."""
    return float(_need(data, "udin_v")) * math.sqrt(3.0) / 1000.0


def evaluate_ieee519(data: dict[str, Any], bus_kv: float | None = None) -> list[CriterionResult]:
    """IEEE 519-2014 clause 5.1 voltage distortion criteria, Table 1 row chosen by ``bus_kv``."""
    kv = default_bus_kv(data) if bus_kv is None else bus_kv
    ieee519_row(kv)  # a bad bus_kv is named before the input is read
    return ieee519_criteria(series_of_document(data), kv)


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
    for label, hs, times, excluded, period, pct, factor, per in checks:
        daily = s.short_daily if label == "3 s" else None
        for ch in s.channels:
            h = hs[ch]
            items: list[tuple[str, np.ndarray, float, int | None]] = [
                ("THD", _thd(h, order_top), row.thd_pct * factor, None)
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
                    keep = ~np.isnan(values)
                    measured, passed, periods, complete = _assess(
                        values[keep], times[keep], period, s.duration_s,
                        lambda v, p=pct: percentile_nearest_rank(v, p), lambda m, lim=limit: m < lim, max,
                    )  # fmt: skip
                    used = int(np.count_nonzero(keep))
                out.append(CriterionResult(
                    std, f"{name} ({label})", "IEEE 519-2014 5.1, Table 1", ch,
                    f"{pct:g}th percentile of the {label} values in each {per}"
                    + (f" < {factor:g} x Table 1" if factor != 1 else " < Table 1"),
                    limit, measured, "%", passed, used, excluded, periods, complete, order,
                    note,
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


def evaluate(data: dict[str, Any], standard: str, bus_kv: float | None = None) -> ComplianceReport:
    """Assess an analyze document against ``standard`` (one of :data:`STANDARDS`)."""
    if standard not in STANDARDS:
        raise ComplianceError(f"standard={standard!r}: allowed {', '.join(STANDARDS)}")
    _need(_need(data, "file"), "duration_s", "input.file")
    if standard == "ieee519":
        kv = default_bus_kv(data) if bus_kv is None else bus_kv
        ieee519_row(kv)
    elif bus_kv is not None:
        raise ComplianceError(f"bus_kv={bus_kv!r}: only for ieee519 (EN 50160 uses Udin)")
    return evaluate_series(series_of_document(data), standard, bus_kv)


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


def format_text(report: ComplianceReport) -> str:
    """A readable summary: each criterion on a line, per-order harmonics summarised per channel."""
    lines = [f"Standard  {report.standard}"]
    if report.bus_kv is not None:
        lines.append(f"Bus       {report.bus_kv:.3f} kV line to line: IEEE 519-2014 Table 1 row {report.ieee519_row}")
    lines.append(
        f"Record    {report.duration_s:.1f} s"
        + ("" if report.duration_s >= report.period_s else f" (the standard's period is {report.period_s / 86400:g} days:"
           " assessed on what the record holds)")
    )  # fmt: skip
    lines.append("")
    lines.append(f"{'criterion':<38}{'channel':<8}{'measured':>10}{'limit':>8}  result  statistic")
    harmonic = [c for c in report.criteria if c.order is not None]
    for c in report.criteria:
        if c.order is not None:
            continue
        lines.append(_line(c))
    groups: dict[tuple[str | None, str], list[CriterionResult]] = {}
    for c in harmonic:
        groups.setdefault((c.channel, c.criterion.split("(")[-1] if "(" in c.criterion else ""), []).append(c)
    for (ch, suffix), items in groups.items():
        assessed = [c for c in items if c.passed is not None]
        failed = [c for c in items if c.passed is False]
        label = f"individual harmonics {('(' + suffix) if suffix else ''}".strip()
        if not assessed:
            lines.append(f"{label:<38}{ch or '':<8}{'-':>10}{'':>8}  n/a     {items[0].note}")
            continue
        worst = max(assessed, key=lambda c: (c.measured or 0.0) / c.limit)
        lines.append(
            f"{label:<38}{ch or '':<8}{worst.measured:>10.3f}{worst.limit:>8.3g}  "
            f"{'FAIL' if failed else 'pass':<6}  worst order {worst.order} of {len(assessed)}; {worst.statistic}"
        )
        for c in failed:
            lines.append("  " + _line(c))
    lines.append("")
    lines.append(f"Verdict: {report.verdict.upper()}")
    return "\n".join(lines)


def _line(c: CriterionResult) -> str:
    result = "n/a" if c.passed is None else ("pass" if c.passed else "FAIL")
    measured = "-" if c.measured is None else f"{c.measured:.3f}"
    extra = f" ({c.note})" if c.note else ""
    return f"{c.criterion:<38}{c.channel or '':<8}{measured:>10}{c.limit:>8.3g}  {result:<6}  {c.statistic}{extra}"


# ---------------------------------------------------------------------------------------------------- streaming

#: 3-s values kept per quantity for the day in progress (IEEE 519 5.1 a): the nearest-rank 99th percentile of
#: n values needs the n - ceil(0.99 n) + 1 largest, so 512 is exact up to 51,199 values a day: 3-s values of
#: 1.69 s or longer, i.e. a frequency up to 1.77 x nominal (the chain measures 0.5..1.5 x nominal; about 28,944
#: values a day at nominal frequency: 200 a 10-min interval plus the one cut short at each tick, IEC 61000-4-30 5.5.2).
TOP_KEEP = 512
TOP_BATCH = 256  # values added before the kept set is trimmed back to TOP_KEEP (one np.partition per 12.8 min)


class _ClockRing:
    """One row per interval of ``step_s`` of the clock, over the last ``period_s``: fixed memory, the oldest
    row overwritten by the newest. A row is found by the index of its interval (start / step)."""

    def __init__(self, step_s: float, period_s: float, width: int) -> None:
        self.step_s = step_s
        self.size = round(period_s / step_s)
        self.values = np.full((self.size, width), np.nan)
        self.index = np.full(self.size, -1, dtype=np.int64)
        self.flagged = np.zeros(self.size, dtype=bool)

    def put(self, start_s: float, row: np.ndarray, flagged: bool) -> None:
        k = math.floor(start_s / self.step_s + 1e-6)
        slot = k % self.size
        self.index[slot], self.flagged[slot] = k, flagged
        self.values[slot] = row

    def window(self, end_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts, rows, flagged) of the intervals starting in ``[end_s - period, end_s)``, oldest first."""
        k_end = math.floor(end_s / self.step_s + 1e-6)
        ok = np.flatnonzero((self.index >= k_end - self.size) & (self.index < k_end))
        ok = ok[np.argsort(self.index[ok])]
        return self.index[ok] * self.step_s, self.values[ok], self.flagged[ok]

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.index.nbytes + self.flagged.nbytes


class _DayTop:
    """The largest values of each column over one UTC day, and how many values each column had."""

    def __init__(self, width: int, day: int) -> None:
        self.day = day
        self.buf = np.empty((TOP_KEEP + TOP_BATCH, width))
        self.rows = 0
        self.count = np.zeros(width, dtype=np.int64)
        self.excluded = 0

    def add(self, row: np.ndarray) -> None:
        missing = np.isnan(row)
        self.count += ~missing
        self.buf[self.rows] = np.where(missing, -np.inf, row)  # a missing value sorts below every real one
        self.rows += 1
        if self.rows == self.buf.shape[0]:
            self.buf[:TOP_KEEP] = np.partition(self.buf, self.rows - TOP_KEEP, axis=0)[self.rows - TOP_KEEP :]
            self.rows = TOP_KEEP

    def percentiles(self, percent: float) -> np.ndarray:
        top = self.buf[: self.rows]
        return np.array([percentile_nearest_rank_top(top[:, j], int(n), percent) if n else math.nan
                         for j, n in enumerate(self.count.tolist())])  # fmt: skip


class RollingStatistics:
    """What the EN 50160 and IEEE 519 criteria need of one stream, over the rolling week, in fixed memory.

    Kept (H = the stream's highest harmonic order, C channels):

    - 10-min values (IEC 61000-4-30 5.5.3) of the last week, 1008 rows: RMS per channel, harmonic subgroups
      2..H in % of the fundamental per channel, u2, and the 4.7 flag: ``8 (C H + 1) + 9`` bytes a row;
    - 10-s frequencies (5.1) of the last week, 60,480 rows of 17 bytes (only with ``frequency``);
    - Plt (IEC 61000-4-15) of the last week, 84 rows per channel;
    - 3-s values (5.5.2) for IEEE 519 5.1 a) (only with ``short``): for the UTC day in progress the
      :data:`TOP_KEEP` (+ :data:`TOP_BATCH`) largest THD and harmonic values per channel and order
      (``768 x 8 C H`` bytes), from which the daily 99th percentile is exact; for each finished day of the
      week only its percentiles and counts.

    :meth:`series` gives the criteria's :class:`Series` for the week that ends at ``end_s``.
    """

    def __init__(self, channels: Sequence[str], udin_v: float, nominal_hz: float, max_order: int, *,
                 short: bool = True, frequency: bool = True) -> None:  # fmt: skip
        self.channels = list(channels)
        self.udin_v, self.nominal_hz, self.max_order = float(udin_v), float(nominal_hz), int(max_order)
        c, orders = len(self.channels), self.max_order - 1
        self._orders = orders
        self.ten = _ClockRing(600.0, WEEK_S, c + c * orders + 1)  # rms [c], harmonics [c, orders], u2
        self.freq = _ClockRing(10.0, WEEK_S, 1) if frequency else None
        self.plt = _ClockRing(7200.0, WEEK_S, c)
        self.short = short
        self._day: _DayTop | None = None
        self._days: list[tuple[float, np.ndarray, np.ndarray, int]] = []  # (day start, percentiles, counts, excluded)
        self.since_s: float | None = None  # the start of the first value kept: how long the history is

    def _seen(self, start_s: float) -> None:
        if self.since_s is None or start_s < self.since_s:
            self.since_s = start_s

    def add_ten_min(self, start_s: float, rms_v: np.ndarray, harmonics_pct: np.ndarray, u2_pct: float,
                    flagged: bool) -> None:  # fmt: skip
        """A 10-min value; ``harmonics_pct`` is ``[channels, orders 2..H]``."""
        self._seen(start_s)
        row = np.concatenate([np.asarray(rms_v, float).ravel(), np.asarray(harmonics_pct, float).ravel(), [u2_pct]])
        self.ten.put(start_s, row, flagged)

    def add_frequency(self, start_s: float, freq_hz: float, flagged: bool) -> None:
        if self.freq is not None:
            self._seen(start_s)
            self.freq.put(start_s, np.array([freq_hz]), flagged)

    def add_plt(self, start_s: float, plt_values: np.ndarray, flagged: bool) -> None:
        """The Plt of each channel for the 2 h from ``start_s`` (NaN where a channel has none)."""
        self._seen(start_s)
        self.plt.put(start_s, np.asarray(plt_values, float), flagged)

    def add_short(self, start_s: float, harmonics_pct: np.ndarray, flagged: bool) -> None:
        """A 3-s value (harmonics ``[channels, orders 2..H]`` in %): THD (orders 2..min(50, H)) and each order."""
        if not self.short:
            return
        self._seen(start_s)
        day = math.floor(start_s / DAY_S)
        if self._day is None or day != self._day.day:
            self._close_day()
            self._day = _DayTop(len(self.channels) * (1 + self._orders), day)
        if flagged:
            self._day.excluded += 1
            return
        h = np.asarray(harmonics_pct, dtype=np.float64)
        top = min(IEEE519_MAX_ORDER, self.max_order)
        with np.errstate(invalid="ignore"):
            thd = np.where(np.isnan(h).all(axis=1), np.nan, _thd(h, top))
        self._day.add(np.concatenate([thd[:, None], h], axis=1).ravel())

    def _close_day(self) -> None:
        if self._day is not None and (self._day.count.any() or self._day.excluded):
            d = self._day
            self._days.append((d.day * DAY_S, d.percentiles(IEEE519_DAILY_PERCENTILE), d.count.copy(), d.excluded))
            self._days = self._days[-8:]  # the days a week can overlap
        self._day = None

    def series(self, end_s: float) -> Series:
        """The criteria's input for the week ending at ``end_s`` (a 10-min tick of the clock)."""
        c, orders = len(self.channels), self._orders
        t, rows, flagged = self.ten.window(end_s)
        used = rows[~flagged]
        ten_t = t[~flagged]
        rms = used[:, :c]
        harm = used[:, c : c + c * orders].reshape(-1, c, orders)
        u2 = used[:, -1]
        if self.freq is not None:
            ft, fv, ff = self.freq.window(end_s)
            keep = ~ff & ~np.isnan(fv[:, 0])
            freq_t, freq_hz = ft[keep], fv[keep, 0]
        else:
            freq_t = freq_hz = np.zeros(0)
        _, pv, pf = self.plt.window(end_s)
        plt = {ch: pv[~pf, i][~np.isnan(pv[~pf, i])] for i, ch in enumerate(self.channels)}
        daily = self._daily(end_s) if self.short else None
        since = self.since_s if self.since_s is not None else end_s
        return Series(
            channels=list(self.channels), udin_v=self.udin_v, nominal_hz=self.nominal_hz,
            duration_s=max(0.0, end_s - since), max_order=self.max_order,
            ten_t=ten_t, ten_rms={ch: rms[:, i] for i, ch in enumerate(self.channels)},
            ten_h={ch: harm[:, i, :] for i, ch in enumerate(self.channels)}, ten_u2=u2,
            ten_excluded=int(np.count_nonzero(flagged)),
            short_t=np.zeros(0), short_h={ch: np.zeros((0, orders)) for ch in self.channels}, short_excluded=0,
            freq_t=freq_t, freq_hz=freq_hz, plt=plt, short_daily=daily,
        )  # fmt: skip

    def _daily(self, end_s: float) -> dict[str, DailyPercentiles]:
        """The UTC days that overlap the week ending at ``end_s``, the day in progress included."""
        days = [d for d in self._days if d[0] + DAY_S > end_s - WEEK_S]
        d = self._day
        if d is not None and (d.count.any() or d.excluded):
            days.append((d.day * DAY_S, d.percentiles(IEEE519_DAILY_PERCENTILE), d.count.copy(), d.excluded))
        c, w = len(self.channels), 1 + self._orders
        starts = np.array([d[0] for d in days])
        meas = np.array([d[1] for d in days]).reshape(len(days), c, w)
        counts = np.array([d[2] for d in days]).reshape(len(days), c, w)
        excluded = sum(d[3] for d in days)
        return {ch: DailyPercentiles(starts, meas[:, i, :], counts[:, i, :], excluded)
                for i, ch in enumerate(self.channels)}  # fmt: skip

    @property
    def nbytes(self) -> int:
        """Memory held by the kept statistics [bytes] (numpy buffers)."""
        n = self.ten.nbytes + self.plt.nbytes + (self.freq.nbytes if self.freq is not None else 0)
        if self.short:
            width = len(self.channels) * (1 + self._orders)
            n += (TOP_KEEP + TOP_BATCH) * width * 8 + 8 * 2 * width * 8  # the day in progress; 8 days' summaries
        return n
