"""Validation, estimation and editing (VEE) of interval energy at central: pure numpy functions over one register's
intervals laid on a grid of whole days.

Each rule is one function of arrays and documented parameters (``VeeParams``), tested against a table computed by
hand (tests/test_settlement_vee.py). The rules follow the usual shape of a meter data agent's VEE (AEMO Metrology
Procedure Part B: validation of interval data against register reads, like days, and the substitution types 11
"check meter" and 15 "average like day"); the thresholds are ours and configured (docs/settlement.md).

Arrays are days x slots (``slots`` = intervals per day). ``value`` is kWh (kvarh) with NaN where no value exists
(NEM12 quality ``N``, or no item at all). A failed check sets a bit in ``failed``:

- ``SUM``: the day's intervals do not add up to the register's advance over the day (the reads the intervals carry).
- ``HIGH`` / ``LOW``: the day's total against the average of like days (same weekday, ``like_weeks`` weeks back).
- ``FROZEN``: the same non-zero value ``frozen_intervals`` times in a row or more.
- ``NEGATIVE``: a negative value on a register that only counts one way (every NEM12 channel here does).
- ``CLOCK``: a read the interval came from lies outside [start - X, end + X].

Intervals whose bits intersect ``replace_on`` lose their value and are estimated like a gap; the others keep
their value and stay flagged (they count as not validated in the reconciliation rate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SUM, HIGH, LOW, FROZEN, NEGATIVE, CLOCK = 1, 2, 4, 8, 16, 32
CHECKS: dict[str, int] = {"sum": SUM, "high": HIGH, "low": LOW, "frozen": FROZEN, "negative": NEGATIVE, "clock": CLOCK}
METHOD_CHECK_METER = 11  # NEM12 substitution type 11: check meter (AEMO Metrology Procedure Part B)
METHOD_AVERAGE_LIKE_DAY = 15  # NEM12 substitution type 15: average like day
# Edge flags (protocols/telemetry/intervals.py FLAGS) after which the register's advance is no measure of the
# energy: a rollover or a meter swap resets the register, so the sum check is skipped for that day.
SKIP_SUM_FLAGS = ("rollover", "meter_swap")


@dataclass(frozen=True, slots=True)
class VeeParams:
    """The VEE rules' parameters; ``[settlement.vee]`` in central's file (docs/settlement.md).

    Attributes
    ----------
    sum_tolerance_pct : float
        Sum check: allowed |sum of intervals - register advance| as a share of the advance [%].
    sum_tolerance_kwh : float
        Sum check: an absolute allowance besides the share, for the reads' resolution [kWh].
    like_weeks : int
        Like days: the same weekday this many weeks back (high/low check and like-day estimation).
    high_low_factor : float
        High/low: a day above factor x the like days' average total, or below that average / factor, fails.
    high_low_min_kwh : float
        High/low: a difference from the like days' average below this never fails [kWh].
    frozen_intervals : int
        Frozen: this many equal non-zero values in a row fail (K).
    clock_tolerance_s : float
        Clock: a read more than this before the start or after the end of its interval fails (X) [s].
    replace_on : tuple of str
        The checks whose failures are replaced by an estimate; the others only flag.
    """

    sum_tolerance_pct: float = 0.5
    sum_tolerance_kwh: float = 0.1
    like_weeks: int = 4
    high_low_factor: float = 3.0
    high_low_min_kwh: float = 1.0
    frozen_intervals: int = 8
    clock_tolerance_s: float = 120.0
    replace_on: tuple[str, ...] = field(default=("negative", "frozen"))

    @property
    def replace_mask(self) -> int:
        return sum(CHECKS[c] for c in set(self.replace_on))


def read_scale(register: str) -> float:
    """kWh (kvarh) per unit of the raw register when its items do not say (``read_scale``, absent from older
    agents' items): taken from the register's name (``energy_delivered_wh`` counts Wh; ``..._kwh`` kWh); 1 when the name does not say."""
    name = register.lower()
    if name.endswith(("_kwh", "_kvarh")):
        return 1.0
    if name.endswith(("_wh", "_varh")):
        return 0.001
    return 1.0


# ---- validation rules ------------------------------------------------------------------------------------------


def sum_check(
    value: np.ndarray, reg_start: np.ndarray, reg_end: np.ndarray, skip_day: np.ndarray, scale: float, p: VeeParams
) -> tuple[np.ndarray, np.ndarray]:
    """Per day: (checked, failed). The register's advance over the day is its value at the end of the day's last
    interval less its value at the start of the first (each interpolated from the reads the interval carries),
    times ``scale``; the day fails when its intervals' sum differs by more than
    ``max(sum_tolerance_kwh, sum_tolerance_pct % of the advance)``. A day is checked only when all its intervals
    have a value, both register values exist and ``skip_day`` is False (a rollover or meter swap that day)."""
    advance = (reg_end[:, -1] - reg_start[:, 0]) * scale
    complete = ~np.isnan(value).any(axis=1)
    checked = complete & ~np.isnan(advance) & ~skip_day
    total = np.where(complete, np.nansum(value, axis=1), np.nan)
    allowed = np.maximum(p.sum_tolerance_kwh, np.abs(advance) * p.sum_tolerance_pct / 100.0)
    with np.errstate(invalid="ignore"):
        failed = checked & (np.abs(total - advance) > allowed)
    return checked, failed


def like_day_average(x: np.ndarray, weeks: int) -> np.ndarray:
    """For each day (axis 0), the mean of ``x`` on the same weekday 1..``weeks`` weeks back, ignoring NaN; NaN
    where none of them has a value. Works on a vector of day totals and on days x slots alike."""
    acc = np.zeros_like(x, dtype=float)
    n = np.zeros_like(x, dtype=float)
    for k in range(1, weeks + 1):
        lag = 7 * k
        if lag >= x.shape[0]:
            break
        past = x[:-lag]
        ok = ~np.isnan(past)
        acc[lag:] += np.where(ok, past, 0.0)
        n[lag:] += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, acc / np.where(n > 0, n, 1), np.nan)


def high_low_check(day_total: np.ndarray, p: VeeParams) -> tuple[np.ndarray, np.ndarray]:
    """Per day: (high, low) against the average like day's total (``like_day_average``): high when the total is
    above ``high_low_factor`` x the average, low when below the average / ``high_low_factor``; either only when the
    difference exceeds ``high_low_min_kwh``. A day without a total or without like days is not judged."""
    ref = like_day_average(day_total, p.like_weeks)
    with np.errstate(invalid="ignore"):
        big = np.abs(day_total - ref) > p.high_low_min_kwh
        high = big & (day_total > p.high_low_factor * ref)
        low = big & (day_total < ref / p.high_low_factor)
    return high, low


def frozen_check(value: np.ndarray, k: int) -> np.ndarray:
    """True for every interval in a run of ``k`` or more equal non-zero values (flat, in time order)."""
    v = value.ravel()
    out = np.zeros(v.shape, dtype=bool)
    if v.size == 0 or k <= 1:
        return (~np.isnan(v) & (v != 0)).reshape(value.shape) if k <= 1 else out.reshape(value.shape)
    # run boundaries: a new run where the value changes (NaN never equals, so it splits runs)
    change = np.ones(v.size, dtype=bool)
    change[1:] = v[1:] != v[:-1]
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, v.size))
    for s, n in zip(starts[lengths >= k], lengths[lengths >= k], strict=True):
        if v[s] != 0 and not np.isnan(v[s]):
            out[s : s + n] = True
    return out.reshape(value.shape)


def negative_check(value: np.ndarray) -> np.ndarray:
    """True where a one-way register's interval is negative (every channel of the wire counts one way)."""
    with np.errstate(invalid="ignore"):
        return value < 0


def clock_check(
    read_min: np.ndarray, read_max: np.ndarray, start: np.ndarray, end: np.ndarray, x_s: float
) -> np.ndarray:
    """True where the interval's earliest read is before ``start - x_s`` or its latest after ``end + x_s``;
    an interval without reads is not judged."""
    with np.errstate(invalid="ignore"):
        return (read_min < start - x_s) | (read_max > end + x_s)


# ---- estimation and substitution -------------------------------------------------------------------------------


def gap_runs(missing: np.ndarray) -> list[tuple[int, int]]:
    """(first, last+1) of each run of True in a flat mask."""
    m = np.concatenate(([False], missing.ravel(), [False]))
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def estimate_like_day(value: np.ndarray, missing: np.ndarray, weeks: int) -> np.ndarray:
    """Average like day (NEM12 substitution type 15): each missing slot gets the mean of the same slot on the same
    weekday 1..``weeks`` weeks back, from values that are not missing themselves; NaN when there is none."""
    base = np.where(missing, np.nan, value)
    return like_day_average(base, weeks)


def scale_to_advance(est: np.ndarray, first: int, last: int, advance: float) -> np.ndarray:
    """Scale the estimated block ``est[first:last]`` (flat) so it adds up to ``advance``, the register's advance
    across the gap: by a factor when the block has energy, evenly spread when it has none."""
    block = est[first:last]
    total = float(np.sum(block))
    if total > 0:
        est[first:last] = block * (advance / total)
    else:
        est[first:last] = advance / (last - first)
    return est


@dataclass(frozen=True, slots=True)
class VeeResult:
    """What VEE made of one register's grid (all days x slots): the value used, its NEM12 quality and method, the
    failed checks' bits, and which intervals were estimated or substituted here."""

    value: np.ndarray
    quality: np.ndarray
    method: np.ndarray
    failed: np.ndarray
    replaced: np.ndarray


def run_vee(
    value: np.ndarray,
    quality: np.ndarray,
    method: np.ndarray,
    reg_start: np.ndarray,
    reg_end: np.ndarray,
    read_min: np.ndarray,
    read_max: np.ndarray,
    start: np.ndarray,
    skip_sum: np.ndarray,
    scale: float,
    length_s: int,
    p: VeeParams,
    check_value: np.ndarray | None = None,
) -> VeeResult:
    """Validate, then fill: every rule above, then the check meter (type 11) where configured, then the average like
    day (type 15) scaled to the register's advance across each gap whose both sides have a register value.

    ``value`` etc. are days x slots; ``start`` the intervals' starts [s]; ``skip_sum`` per day.
    """
    value = value.astype(float, copy=True)
    quality = quality.copy()
    method = method.copy()
    failed = np.zeros(value.shape, dtype=np.int32)
    checked, sum_failed = sum_check(value, reg_start, reg_end, skip_sum, scale, p)
    failed[sum_failed] |= SUM
    complete = ~np.isnan(value).any(axis=1)
    day_total = np.where(complete, np.nansum(value, axis=1), np.nan)
    high, low = high_low_check(day_total, p)
    failed[high] |= HIGH
    failed[low] |= LOW
    failed[frozen_check(value, p.frozen_intervals)] |= FROZEN
    failed[negative_check(value)] |= NEGATIVE
    failed[clock_check(read_min, read_max, start, start + length_s, p.clock_tolerance_s)] |= CLOCK

    drop = (failed & p.replace_mask) != 0
    value[drop] = np.nan
    missing = np.isnan(value)
    replaced = np.zeros(value.shape, dtype=bool)
    if check_value is not None:
        sub = missing & ~np.isnan(check_value)
        value[sub] = check_value[sub]
        quality[sub] = "S"
        method[sub] = METHOD_CHECK_METER
        replaced |= sub
        missing &= ~sub
    if missing.any():
        est = estimate_like_day(value, missing, p.like_weeks).ravel()
        flat_v, flat_rs, flat_re = value.ravel(), reg_start.ravel(), reg_end.ravel()
        for first, last in gap_runs(missing):
            if np.isnan(est[first:last]).any():
                continue  # no like day for part of the gap: it stays null (N) for an operator
            # the register where the gap begins (the end of the interval before it) and where it ends
            before = flat_re[first - 1] if first > 0 else np.nan
            after = flat_rs[last] if last < flat_v.size else np.nan
            advance = (after - before) * scale
            if not np.isnan(advance) and advance >= 0:
                scale_to_advance(est, first, last, advance)
        fill = missing & ~np.isnan(est.reshape(value.shape))
        value[fill] = est.reshape(value.shape)[fill]
        quality[fill] = "S"
        method[fill] = METHOD_AVERAGE_LIKE_DAY
        replaced |= fill
    quality[np.isnan(value)] = "N"
    method[np.isnan(value)] = 0
    return VeeResult(value=value, quality=quality, method=method, failed=failed, replaced=replaced)


__all__ = [
    "CHECKS",
    "CLOCK",
    "FROZEN",
    "HIGH",
    "LOW",
    "METHOD_AVERAGE_LIKE_DAY",
    "METHOD_CHECK_METER",
    "NEGATIVE",
    "SUM",
    "VeeParams",
    "VeeResult",
    "clock_check",
    "estimate_like_day",
    "frozen_check",
    "gap_runs",
    "high_low_check",
    "like_day_average",
    "negative_check",
    "read_scale",
    "run_vee",
    "scale_to_advance",
    "sum_check",
]
