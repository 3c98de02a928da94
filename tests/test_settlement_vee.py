"""Each VEE rule against a table worked out by hand: the sum check, high/low against like days, frozen non-zero,
negative, clock, average-like-day estimation scaled to the register's advance, check-meter substitution.

Grids are days x slots; four slots a day keep the hand arithmetic short (the rules do not care how long a slot is).
"""

from __future__ import annotations

import numpy as np
import pytest

from central.settlement.vee import (
    CLOCK,
    FROZEN,
    HIGH,
    LOW,
    NEGATIVE,
    SUM,
    VeeParams,
    clock_check,
    frozen_check,
    high_low_check,
    like_day_average,
    negative_check,
    read_scale,
    run_vee,
    sum_check,
)

NAN = np.nan
P = VeeParams()  # sum 0.5 % or 0.1 kWh, like_weeks 4, high/low x3 and 1 kWh, frozen 8, clock 120 s


@pytest.mark.parametrize(
    ("values", "reg0_wh", "reg1_wh", "skip", "checked", "failed"),
    [
        ([1, 1, 1, 1], 0, 4000, False, True, False),  # exact
        ([1, 1, 1, 1.09], 0, 4000, False, True, False),  # 0.09 kWh off: within the 0.1 kWh floor
        ([1, 1, 1, 1.2], 0, 4000, False, True, True),  # 0.2 kWh off: more than max(0.1, 0.5 % of 4 = 0.02)
        ([250, 250, 250, 254], 0, 1_000_000, False, True, False),  # 4 kWh off 1000: within 0.5 % = 5 kWh
        ([250, 250, 250, 256], 0, 1_000_000, False, True, True),  # 6 kWh off 1000: beyond 5 kWh
        ([1, 1, NAN, 1], 0, 4000, False, False, False),  # incomplete day: not checked
        ([1, 1, 1, 1], NAN, 4000, False, False, False),  # no register value at the day's start: not checked
        ([1, 1, 1, 9], 0, 4000, True, False, False),  # a rollover or meter swap that day: not checked
    ],
)
def test_sum_check_against_the_register_advance(values, reg0_wh, reg1_wh, skip, checked, failed) -> None:
    v = np.array([values], dtype=float)
    rs, re_ = np.full_like(v, NAN), np.full_like(v, NAN)
    rs[0, 0], re_[0, -1] = reg0_wh, reg1_wh
    c, f = sum_check(v, rs, re_, np.array([skip]), 0.001, P)
    assert (bool(c[0]), bool(f[0])) == (checked, failed)


def test_like_day_average_takes_the_same_weekday_of_previous_weeks() -> None:
    totals = np.arange(22, dtype=float)  # day d totals d
    totals[7] = NAN
    avg = like_day_average(totals, weeks=2)
    assert np.isnan(avg[:7]).all()  # no previous week
    assert avg[8] == 1.0  # day 1 only
    assert avg[7] == 0.0  # day 7's own total is NaN, its like day (day 0) is not
    assert avg[14] == 0.0  # day 7 is NaN, day 0 is 0 -> 0
    assert avg[21] == 14.0  # days 14 and 7 (NaN); day 0 is three weeks back, beyond like_weeks


@pytest.mark.parametrize(
    ("today", "like", "high", "low"),
    [
        (30.0, 10.0, False, False),  # exactly 3 x: not above
        (31.0, 10.0, True, False),  # above 3 x and 21 kWh off
        (3.0, 10.0, False, True),  # below 10 / 3 = 3.33 and 7 kWh off
        (0.2, 0.7, False, False),  # below a third but only 0.5 kWh off: too small to judge
        (5.0, NAN, False, False),  # no like day: not judged
    ],
)
def test_high_low_against_like_days(today, like, high, low) -> None:
    totals = np.full(8, NAN)
    totals[0], totals[7] = like, today
    h, lo = high_low_check(totals, VeeParams(like_weeks=1))
    assert (bool(h[7]), bool(lo[7])) == (high, low)


@pytest.mark.parametrize(
    ("values", "k", "expect"),
    [
        ([1, 1, 1, 2, 2, 2, 2, 0, 0, 0, 0], 4, [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]),  # zeros never frozen
        ([3, 3, 3, 3, 3], 5, [1, 1, 1, 1, 1]),
        ([3, 3, NAN, 3, 3], 3, [0, 0, 0, 0, 0]),  # a null breaks the run
        ([1, 2, 1, 2], 2, [0, 0, 0, 0]),
    ],
)
def test_frozen_non_zero(values, k, expect) -> None:
    assert frozen_check(np.array(values, dtype=float), k).astype(int).tolist() == expect


def test_negative_and_clock() -> None:
    assert negative_check(np.array([0.0, -0.001, 2.0, NAN])).tolist() == [False, True, False, False]
    start = np.array([0.0, 0.0, 0.0, 0.0, 0.0])
    rmin = np.array([-120.0, -121.0, -10.0, -10.0, NAN])
    rmax = np.array([1020.0, 1000.0, 1021.0, 950.0, NAN])
    assert clock_check(rmin, rmax, start, start + 900, 120.0).tolist() == [False, True, True, False, False]


def test_read_scale_from_the_register_name() -> None:
    assert read_scale("energy_delivered_wh") == 0.001 and read_scale("kvarh_received_varh") == 0.001
    assert read_scale("total_kwh") == 1.0 and read_scale("energy") == 1.0


def _run(value, reg_start=None, reg_end=None, p=P, check=None, length=900):
    value = np.asarray(value, dtype=float)
    shape = value.shape
    nan = np.full(shape, NAN)
    quality = np.where(np.isnan(value), "N", "A").astype("<U1")
    start = np.arange(value.size, dtype=float).reshape(shape) * length
    return run_vee(value, quality, np.zeros(shape, dtype=np.int16), nan if reg_start is None else reg_start,
                   nan if reg_end is None else reg_end, nan, nan, start, np.zeros(shape[0], dtype=bool), 0.001, length,
                   p, check)  # fmt: skip


def test_a_gap_is_filled_from_the_average_like_day_scaled_to_the_register_advance() -> None:
    # 15 days x 4 slots, like_weeks 2: day 14's slots 1-2 are null.
    v = np.ones((15, 4))
    v[0, 1], v[7, 1] = 4.0, 2.0  # slot 1 like days: (2 + 4) / 2 = 3
    v[0, 2], v[7, 2] = 2.0, 2.0  # slot 2 like days: 2
    v[14, 1:3] = NAN
    rs, re_ = np.full_like(v, NAN), np.full_like(v, NAN)
    re_[14, 0] = 50_000.0  # the register at the gap's start [Wh]
    rs[14, 3] = 60_000.0  # ... and at its end: 10 kWh across the gap
    r = _run(v, rs, re_, VeeParams(like_weeks=2, frozen_intervals=100))
    # the like-day block (3, 2) = 5 kWh scaled by 10 / 5
    assert r.value[14, 1:3].tolist() == [6.0, 4.0]
    assert r.quality[14].tolist() == ["A", "S", "S", "A"] and r.method[14].tolist() == [0, 15, 15, 0]
    # without register values on both sides: the like day as it is
    r = _run(v, p=VeeParams(like_weeks=2, frozen_intervals=100))
    assert r.value[14, 1:3].tolist() == [3.0, 2.0]


def test_a_gap_without_like_days_stays_null() -> None:
    v = np.ones((3, 4))
    v[2, 0] = NAN
    r = _run(v, p=VeeParams(frozen_intervals=100))
    assert np.isnan(r.value[2, 0]) and r.quality[2, 0] == "N" and r.method[2, 0] == 0


def test_check_meter_substitutes_before_the_like_day() -> None:
    v = np.ones((8, 4))
    v[7, 2] = NAN
    check = np.full_like(v, NAN)
    check[7, 2] = 1.25
    r = _run(v, p=VeeParams(like_weeks=1, frozen_intervals=100), check=check)
    assert r.value[7, 2] == 1.25 and r.quality[7, 2] == "S" and r.method[7, 2] == 11


def test_failed_checks_replace_or_flag_as_configured() -> None:
    v = np.ones((1, 12)) * 0.5
    v[0, 0] = -1.0  # negative: replaced by default (no like day here: it stays null)
    v[0, 4:12] = 2.0  # 8 equal non-zero values: frozen, replaced
    r = _run(v)
    assert r.failed[0, 0] == NEGATIVE and (r.failed[0, 4:] == FROZEN).all()
    assert r.quality[0, 0] == "N" and (r.quality[0, 4:] == "N").all() and r.quality[0, 1] == "A"
    # flag only: the values stay, the bits say what failed
    r = _run(v, p=VeeParams(replace_on=()))
    assert r.value[0, 0] == -1.0 and r.quality[0, 0] == "A" and r.failed[0, 0] == NEGATIVE
    assert {SUM, HIGH, LOW, CLOCK}.isdisjoint({int(b) for b in r.failed.ravel()})
