"""Interval energy from register reads (agent/metering/intervals.py, docs/metering.md): each rule holds on a
table of cases whose expected values are worked out by hand in the test, every item passes the wire contract,
and a restart from the engine's state emits exactly what an engine without the restart emits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.metering.intervals import CONFIRM_READS, MAX_FORWARD_S, Interval, RegisterIntervals, correct
from agent.points import Quality
from protocols.telemetry.intervals import MAX_READS, check_interval
from protocols.telemetry.schema import SchemaError

B0 = 1_764_000_000  # a multiple of 3600 (so of 300 and 900 too): 2025-11-24 16:00 UTC
L = 900
# 2000 kW rated, 15 min, margin 1.5: 750 kWh = 750 000 Wh an interval, 833.3 Wh/s
MAX_DELTA_WH = 2000 * 0.25 * 1.5 * 1000


def make(**kw) -> RegisterIntervals:
    params = dict(interval_s=L, modulus=2**32, to_unit=0.001, max_delta=MAX_DELTA_WH, estimate_span_s=3600.0,
                  actual_span_s=10.0, resolution=1.0)  # fmt: skip
    params.update(kw)
    return RegisterIntervals("fdr-671-meter", "energy_delivered_wh", "kwh_delivered", **params)


def feed(eng: RegisterIntervals, reads, meter_id: str | None = "111/SIM3P-120") -> list[Interval]:
    """Every interval ``reads`` close; each item passes the wire contract."""
    out: list[Interval] = []
    for r in reads:
        ts, raw = r[0], r[1]
        mid = r[2] if len(r) > 2 else meter_id
        out += eng.add(ts, raw, "good", mid)
    for iv in out:
        check_interval(0, iv.to_item())
    return out


def linear(t0: float, t1: float, step: float, wh_per_s: float, at: float = B0, base: float = 0):
    """Reads every ``step`` s in [t0, t1] of a counter rising ``wh_per_s`` from ``base`` at ``at``."""
    out = []
    t = t0
    while t <= t1 + 1e-9:
        out.append((t, base + wh_per_s * (t - at)))
        t += step
    return out


def brief(ivs: list[Interval]):
    return [(iv.start, iv.quality, None if iv.value is None else round(iv.value, 9), iv.method, iv.flags) for iv in ivs]


# --- rule 1: boundaries -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval_s", "wh_per_s", "step", "offset", "expected_kwh"),
    [
        (900, 500.0, 1.0, 0.3, 450.0),  # 500 Wh/s x 900 s = 450 000 Wh
        (900, 123.0, 1.7, 0.9, 110.7),  # 123 x 900 = 110 700 Wh
        (300, 40.0, 2.0, 1.5, 12.0),  # 40 x 300 = 12 000 Wh
        (3600, 10.0, 3.3, 0.1, 36.0),  # 10 x 3600 = 36 000 Wh
    ],
)
def test_a_linear_counter_gives_rate_times_length_every_interval(interval_s, wh_per_s, step, offset, expected_kwh):
    """Boundaries interpolated between irregular reads: each interval of a linear counter is exactly rate x length."""
    eng = make(interval_s=interval_s, max_delta=wh_per_s * interval_s * 3)
    out = feed(eng, linear(B0 + offset, B0 + 4 * interval_s + step + offset, step, wh_per_s))
    assert [iv.start for iv in out] == [B0 + k * interval_s for k in range(1, 4)]
    for iv in out:
        assert iv.value == pytest.approx(expected_kwh, rel=1e-12)
        assert (iv.quality, iv.method, iv.flags, iv.end - iv.start) == ("A", None, (), interval_s)


def test_the_boundary_value_is_interpolated_and_reads_inside_do_not_count():
    """Value at B0 = 0 + 200 x 1/2 = 100 Wh; at B1 = 10000 + 500 x 2/5 = 10200 Wh; energy 10.1 kWh, actual: each
    boundary's reads are 2 and 5 s apart (<= 10 s), the 897 s without reads inside the interval do not matter."""
    eng = make()
    out = feed(eng, [(B0 - 1, 0), (B0 + 1, 200), (B0 + L - 2, 10_000), (B0 + L + 3, 10_500)])
    assert brief(out) == [(B0, "A", 10.1, None, ())]
    assert out[0].reads == ((B0 - 1, 0), (B0 + 1, 200), (B0 + L - 2, 10_000), (B0 + L + 3, 10_500))


@pytest.mark.parametrize(
    ("gap_s", "quality", "method", "flags"),
    [(10.0, "A", None, ()), (10.5, "S", 17, ("gap",)), (3600.0, "S", 17, ("gap",)), (3600.5, "N", None, ("gap",))],
)
def test_the_span_of_the_reads_around_a_boundary_sets_its_quality(gap_s, quality, method, flags):
    """Reads around B1 at most actual_span_s (10 s) apart: A; up to estimate_span_s (3600 s): S, method 17; beyond: N."""
    eng = make()
    # 100 Wh/s; reads every second up to B1 - 5, the next gap_s later
    reads = linear(B0 - 1, B0 + L - 5, 1.0, 100.0) + linear(B0 + L - 5 + gap_s, B0 + L - 5 + gap_s, 1.0, 100.0)
    out = feed(eng, reads)
    first = out[0]
    assert (first.start, first.quality, first.method, first.flags) == (B0, quality, method, flags)
    if quality == "N":
        assert first.value is None
    else:
        assert first.value == pytest.approx(90.0)  # 100 Wh/s x 900 s, the counter is linear across the gap too


# --- rule 2: rollover -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("modulus", "prev", "raw", "delta_wh"),
    [
        (2**16, 65_500, 36, 72),  # uint16: 65536 - 65500 + 36
        (2**32, 4_294_967_290, 10, 16),  # uint32: 2**32 - 4294967290 + 10
        (2**64, 2**64 - 5, 7, 12),  # uint64: 5 + 7
        (1_000_000, 999_990, 5, 15),  # a configured modulus (a 6-digit display counter): 10 + 5
    ],
)
def test_a_read_below_the_previous_by_over_half_the_modulus_wraps(modulus, prev, raw, delta_wh):
    eng = make(modulus=modulus)
    out = feed(eng, [(B0, prev), (B0 + 1, raw), (B0 + L, raw)])
    assert brief(out) == [(B0, "A", delta_wh / 1000, None, ("rollover",))]


def test_a_uint64_wrap_is_exact_in_integers():
    """2**64 - 1 -> 2**64 + 99 (wrapped: 99) is 100 Wh exactly, not a float rounded to 2048 Wh steps."""
    eng = make(modulus=2**64)
    out = feed(eng, [(B0, 2**64 - 1), (B0 + 1, 99), (B0 + L, 99)])
    assert out[0].value == 0.1
    assert out[0].reads[0] == (B0, 2**64 - 1)


# --- rule 3: backward -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("modulus", "base", "back"),
    [
        (2**32, 1000, 10),  # 1005 -> 995
        (2**32, 3_000_000_000, 2**31 - 10),  # back by just under half the modulus: not a wrap
        (None, 1000, 1005),  # a float register has no modulus: any smaller read is backward
        (2**16, 40_000, 2**15 - 1),
    ],
)
def test_a_backward_read_is_dropped_and_never_rebases(modulus, base, back):
    """base, +5, +5 - back (backward), +10, +900: 900 Wh, quality A; the dropped read is not among the reads."""
    eng = make(modulus=modulus)
    out = feed(
        eng, [(B0, base), (B0 + 1, base + 5), (B0 + 2, base + 5 - back), (B0 + 3, base + 10), (B0 + L, base + 900)]
    )
    assert brief(out) == [(B0, "A", 0.9, None, ("backward",))]
    assert [r[1] - base for r in out[0].reads] == [0, 5, 10, 900]


def test_a_counter_that_restarts_without_a_swap_leaves_null_intervals_not_energy():
    """Counter at 50 000 Wh restarts at 0 (no identity change, no declared swap): every later read is backward and
    dropped; after estimate_span_s without an accepted read the intervals are null (flush), none booked."""
    eng = make()
    feed(eng, [(B0, 50_000), (B0 + 1, 50_001)])
    feed(eng, linear(B0 + 2, B0 + 2 * L - 1, 1.0, 1.0, at=B0 + 2))  # 0, 1, 2, ... 1797: all below 50 001
    assert eng.flush(B0 + 1 + 3600) == []  # not yet past estimate_span_s
    out = eng.flush(B0 + 4 * L + 1.5)
    # boundaries B0+900 .. B0+3600 are null: intervals [B0, +900) .. [B0+2700, +900)
    assert brief(out) == [
        (B0, "N", None, None, ("backward", "gap")),
        (B0 + L, "N", None, None, ("backward", "gap")),
        (B0 + 2 * L, "N", None, None, ("gap",)),
        (B0 + 3 * L, "N", None, None, ("gap",)),
    ]


# --- rule 4: spike ----------------------------------------------------------------------------------------------


def test_a_single_spike_read_is_dropped_and_the_interval_stays_actual():
    """1000, 1500, 50 001 500 (+50 MWh in 1 s: bound 833.3 x 2 + 1 Wh), 2500, 10 000 at B1: 9 kWh, A, flagged."""
    eng = make()
    out = feed(eng, [(B0, 1000), (B0 + 1, 1500), (B0 + 2, 50_001_500), (B0 + 3, 2500), (B0 + L, 10_000)])
    assert brief(out) == [(B0, "A", 9.0, None, ("spike",))]


def test_a_glitch_to_zero_that_looks_like_a_wrap_is_a_spike():
    """uint32 at 3e9 reads 0: a wrap would be 2**32 - 3e9 = 1 294 967 296 Wh in 1 s: a spike, not a rollover."""
    eng = make()
    out = feed(eng, [(B0, 3_000_000_000), (B0 + 1, 0), (B0 + 2, 3_000_000_100), (B0 + L, 3_000_000_500)])
    assert brief(out) == [(B0, "A", 0.5, None, ("spike",))]


def test_a_counter_that_jumps_and_stays_never_books_the_jump():
    """+50 MWh and counting on: every read is dropped (the bound grows 833 Wh/s: 60 000 s to admit 50 MWh), so after
    estimate_span_s the intervals are null; 2 hours of reads -> 8 null intervals at flush, never a 50-MWh value."""
    eng = make()
    feed(eng, [(B0, 0), (B0 + 1, 100)])
    feed(eng, linear(B0 + 2, B0 + 7200, 1.0, 100.0, base=50_000_000))
    out = eng.flush(B0 + 7200)
    assert [iv.start for iv in out] == [B0 + k * L for k in range(8)]
    assert all(iv.quality == "N" and iv.value is None and "spike" in iv.flags for iv in out)


# --- rule 5: meter swap -----------------------------------------------------------------------------------------


def test_a_swap_mid_interval_is_old_part_plus_new_part():
    """Old meter 5000 -> 9000 Wh (B0..B0+400), new meter 0 -> 700 Wh (B0+460..B1): 4000 + 700 = 4.7 kWh; the next
    interval is the new meter's alone."""
    eng = make()
    old = [(B0, 5000, "111/SIM"), (B0 + 1, 5010, "111/SIM"), (B0 + 400, 9000, "111/SIM")]
    new = [(B0 + 460, 0, "222/SIM"), (B0 + 461, 5, "222/SIM"), (B0 + L, 700, "222/SIM"), (B0 + 2 * L, 1600, "222/SIM")]
    out = feed(eng, old + new)
    assert brief(out) == [(B0, "A", 4.7, None, ("meter_swap",)), (B0 + L, "A", 0.9, None, ())]
    assert [iv.meter_id for iv in out] == [None, "222/SIM"]


def test_a_declared_swap_rebases_a_counter_with_the_same_identity():
    """A register reset the operator declares: 5000 -> 8000, reset, 0 -> 400: 3000 + 400 = 3.4 kWh (without the
    declaration the read of 0 would be a backward read)."""
    eng = make()
    feed(eng, [(B0, 5000), (B0 + 300, 8000)])
    eng.swap(B0 + 350)
    out = feed(eng, [(B0 + 360, 0), (B0 + L, 400)])
    assert brief(out) == [(B0, "A", 3.4, None, ("meter_swap",))]
    assert out[0].meter_id is None


@pytest.mark.parametrize(
    ("read_id", "declared_id", "meter_id"),
    [("111", "NEW", "111"), (None, "NEW", "NEW"), (None, None, None)],
)
def test_a_declared_swap_takes_the_identity_the_reads_carry(read_id, declared_id, meter_id):
    """The identity read from the meter wins over the declared one: a declared id the reads contradict would swap
    back at the next read. 0 -> 300 Wh on the new base after B0+10."""
    eng = make()
    feed(eng, [(B0, 5000, read_id)])
    eng.swap(B0 + 5, declared_id)
    out = feed(eng, [(B0 + 10, 0, read_id), (B0 + 11, 1, read_id), (B0 + L, 300, read_id), (B0 + 2 * L, 400, read_id)])
    assert brief(out) == [(B0, "A", 0.3, None, ("meter_swap",)), (B0 + L, "A", 0.1, None, ())]
    assert out[1].meter_id == meter_id


def test_a_swap_across_a_boundary_holds_the_counter_flat_in_between():
    """Old meter's last read at B1-100 (raw 9000, from 0 at B0), new meter's first at B1+100 (0), 900 at B2: B1 is
    interpolated on the flat span (9000 Wh of the old counter): [B0,B1) 9 kWh, [B1,B2) 0.9 kWh, both S (gap 200 s)."""
    eng = make()
    out = feed(eng, [(B0, 0, "111"), (B0 + L - 100, 9000, "111"), (B0 + L + 100, 0, "222"), (B0 + 2 * L, 900, "222")])
    assert brief(out) == [(B0, "S", 9.0, 17, ("meter_swap", "gap")), (B0 + L, "S", 0.9, 17, ("meter_swap", "gap"))]


def test_an_unknown_identity_is_not_a_swap():
    """A read whose identity could not be read (meter_id None) keeps counting on the meter it came from."""
    eng = make()
    out = feed(eng, [(B0, 0, "111"), (B0 + 1, 10, None), (B0 + L, 900, "111")])
    assert brief(out) == [(B0, "A", 0.9, None, ())]
    assert out[0].meter_id == "111"


# --- rule 6: gaps -----------------------------------------------------------------------------------------------


def test_a_gap_under_the_span_is_interpolated_and_substituted():
    """100 Wh/s; no read from B0+100 to B0+2100 (2000 s <= 3600): B1 and B2 interpolated exactly (linear counter):
    [B0,B1) S 90, [B1,B2) S 90, [B2,B3) S 90 (its start is in the gap), [B3,B4) A 90."""
    eng = make()
    out = feed(eng, linear(B0, B0 + 100, 1.0, 100.0) + linear(B0 + 2100, B0 + 4 * L, 1.0, 100.0))
    assert brief(out) == [
        (B0, "S", 90.0, 17, ("gap",)),
        (B0 + L, "S", 90.0, 17, ("gap",)),
        (B0 + 2 * L, "S", 90.0, 17, ("gap",)),
        (B0 + 3 * L, "A", 90.0, None, ()),
    ]


def test_a_gap_over_the_span_stays_null():
    """No read from B0+100 to B0+4100 (4000 s > 3600): B1..B4 null, so [B0,B1) .. [B4,B5) are N; [B5,B6) A 90."""
    eng = make()
    out = feed(eng, linear(B0, B0 + 100, 1.0, 100.0) + linear(B0 + 4100, B0 + 6 * L, 1.0, 100.0))
    assert brief(out) == [(B0 + k * L, "N", None, None, ("gap",)) for k in range(5)] + [
        (B0 + 5 * L, "A", 90.0, None, ())
    ]


def test_flush_reports_an_outage_while_it_lasts_and_nothing_twice():
    """Same outage as above, flushed at B0+3700.5 (3600.5 s after the last read): the 4 intervals ending by then are
    null at once; the read that ends the outage closes only [B4,B5). The sequence equals the one without flush."""
    reads_before = linear(B0, B0 + 100, 1.0, 100.0)
    reads_after = linear(B0 + 4100, B0 + 6 * L, 1.0, 100.0)
    eng = make()
    feed(eng, reads_before)
    assert eng.flush(B0 + 100 + 3600) == []
    flushed = eng.flush(B0 + 3700.5)
    assert [iv.start for iv in flushed] == [B0, B0 + L, B0 + 2 * L, B0 + 3 * L]
    assert eng.flush(B0 + 3800) == []
    later = feed(eng, reads_after)
    plain = feed(make(), reads_before + reads_after)
    assert brief(flushed + later) == brief(plain)


def test_failed_reads_are_missing_reads():
    """Reads of quality stale/invalid, None or NaN values, NaN times count as absent: a 20 s hole around B1
    makes it S."""
    eng = make()
    out = []
    bad_reads = [(None, Quality.STALE), (float("nan"), Quality.GOOD), ("SIM3P", Quality.GOOD), (7, Quality.INVALID)]
    for i, (t, raw) in enumerate(linear(B0, B0 + 2 * L, 1.0, 100.0)):
        if B0 + L - 10 < t < B0 + L + 10:
            value, quality = bad_reads[i % len(bad_reads)]
            out += eng.add(t, value, quality, "111")
            out += eng.add(float("nan"), raw, Quality.GOOD, "111")
        else:
            out += eng.add(t, raw, Quality.GOOD, "111")
    assert brief(out) == [(B0, "S", 90.0, 17, ("gap",)), (B0 + L, "S", 90.0, 17, ("gap",))]


# --- rule 7: clock steps ----------------------------------------------------------------------------------------


def test_a_backward_clock_step_drops_reads_and_conserves_energy():
    """100 Wh/s; at B0+300 the clock steps back 120 s: reads stamped B0+181..B0+300 again are dropped
    (clock_step), the first reads after carry 120 s more energy than their 1 s (spike, dropped until the bound
    admits them), and [B0,B1) holds all the energy counted: raw at B1 stamped = 100 x (900 + 120) = 102 kWh."""
    eng = make()
    before = linear(B0, B0 + 300, 1.0, 100.0)
    after = [(t, 100.0 * (t - B0 + 120)) for t, _ in linear(B0 + 181, B0 + 2 * L, 1.0, 100.0)]
    out = feed(eng, before + after)
    assert brief(out)[0] == (B0, "A", 102.0, None, ("spike", "clock_step"))
    assert brief(out)[1] == (B0 + L, "A", 90.0, None, ())


def test_a_read_far_ahead_is_dropped_unless_confirmed():
    """One read stamped 40 days ahead is dropped (clock_step); CONFIRM_READS of them in a row move the engine to
    the new time without emitting the 40 days in between."""
    eng = make()
    far = B0 + 40 * 86400 + 7  # not on a boundary
    assert far - B0 > MAX_FORWARD_S
    out = feed(eng, [(B0, 0), (B0 + 1, 100), (far, 200), (B0 + 2, 200), (B0 + L, 90_000)])
    assert brief(out) == [(B0, "A", 90.0, None, ("clock_step",))]
    jumped = feed(eng, [(far + k, 100_000 + k) for k in range(CONFIRM_READS)] + [(far + L + 100, 200_000)])
    assert jumped == []  # the first interval after the jump starts at the first boundary after it
    out = feed(eng, [(far + 2 * L + 100, 300_000)])
    first_b = (far // L + 1) * L
    assert [iv.start for iv in out] == [first_b]
    assert "clock_step" in out[0].flags


def test_flush_with_a_clock_far_ahead_stops_at_max_forward():
    """flush(now) 100 days after the last read closes the intervals of 31 days (MAX_FORWARD_S), no more: a clock
    stepped years ahead must not make years of null items."""
    eng = make()
    feed(eng, [(B0, 0), (B0 + 1, 100)])
    out = eng.flush(B0 + 100 * 86400)
    assert len(out) == MAX_FORWARD_S // L == 31 * 96
    assert out[-1].end == B0 + 31 * 86400
    assert eng.flush(B0 + 100 * 86400) == []


# --- rule 8: reads and versions ---------------------------------------------------------------------------------


def test_reads_are_thinned_to_max_reads_and_keep_both_ends():
    eng = make(interval_s=3600, max_delta=3600 * 1000)
    out = feed(eng, linear(B0 - 0.5, B0 + 2 * 3600 + 0.5, 1.0, 100.0))
    for iv in out:
        assert 3 <= len(iv.reads) <= MAX_READS
        assert iv.reads[0][0] <= iv.start < iv.reads[1][0]
        assert iv.reads[-2][0] < iv.end <= iv.reads[-1][0]
        assert [r[0] for r in iv.reads] == sorted(r[0] for r in iv.reads)


def test_a_correction_is_a_new_version():
    eng = make()
    out = feed(eng, linear(B0, B0 + 100, 1.0, 100.0) + linear(B0 + 4100, B0 + 5 * L, 1.0, 100.0))
    null = out[0]
    fixed = correct(null, value=88.5, quality="F", method=14)
    assert (fixed.version, fixed.value, fixed.quality, fixed.method, fixed.reads) == (2, 88.5, "F", 14, null.reads)
    assert null.version == 1 and null.value is None  # the first version is untouched
    check_interval(0, fixed.to_item())
    with pytest.raises(ValueError, match="method"):
        correct(null, value=1.0, quality="S", method=99)
    with pytest.raises(ValueError, match="None exactly"):
        correct(null, value=None, quality="A", method=None)


# --- rule 9: UTC ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "down_local", "up_local", "down_utc", "up_utc", "first_utc", "qualities"),
    [
        # Sydney leaves daylight time on 2026-04-05 at 03:00 AEDT (-> 02:00 AEST): down 23:40 AEDT (UTC+11), before
        # local midnight; up at the second 02:40 (AEST, UTC+10). 4 h of UTC, 3 h of local clock. Reads 12:00..17:00
        # UTC: 20 quarter-hours; boundaries 12:45..16:30 are in the outage, so intervals 12:30..16:30 (17) are S.
        ("Australia/Sydney", (2026, 4, 4, 23, 40, 0), (2026, 4, 5, 2, 40, 1), (2026, 4, 4, 12, 40), (2026, 4, 4, 16, 40),
         (2026, 4, 4, 12, 0), ["A", "A"] + ["S"] * 17 + ["A"]),
        # New York starts daylight time on 2026-03-08 at 02:00 EST (-> 03:00 EDT): down 01:50 EST (UTC-5), up 03:10 EDT
        # (UTC-4): 20 min of UTC, 80 min of local clock. Reads 06:00..08:00 UTC: 8 quarter-hours; only the 07:00
        # boundary is in the outage, so [06:45, 07:00) and [07:00, 07:15) are S.
        ("America/New_York", (2026, 3, 8, 1, 50, 0), (2026, 3, 8, 3, 10, 0), (2026, 3, 8, 6, 50), (2026, 3, 8, 7, 10),
         (2026, 3, 8, 6, 0), ["A", "A", "A", "S", "S", "A", "A", "A"]),
        # Berlin leaves summer time on 2026-10-25 at 03:00 CEST (-> 02:00 CET): down 23:30 CEST (UTC+2) the evening
        # before, up at the second 02:30 (CET, UTC+1): 4 h of UTC across local midnight. Reads 21:00..02:00 UTC: 20
        # quarter-hours; boundaries 21:45..01:15 are in the outage, so intervals 21:30..01:15 (16) are S.
        ("Europe/Berlin", (2026, 10, 24, 23, 30, 0), (2026, 10, 25, 2, 30, 1), (2026, 10, 24, 21, 30),
         (2026, 10, 25, 1, 30), (2026, 10, 24, 21, 0), ["A", "A"] + ["S"] * 16 + ["A", "A"]),
    ],
)  # fmt: skip
def test_an_outage_across_local_midnight_and_a_dst_change_stays_utc_and_contiguous(
    zone, down_local, up_local, down_utc, up_utc, first_utc, qualities
):
    """Reads every 10 s at 100 Wh/s, an outage between two local times that a DST change separates: the intervals
    are contiguous UTC quarter-hours, as many as UTC hours allow, each exactly 90 kWh (a 6-hour estimate span)."""
    tz = ZoneInfo(zone)
    *d, dfold = down_local
    *u, ufold = up_local
    down = datetime(*d, fold=dfold, tzinfo=tz).timestamp()
    up = datetime(*u, fold=ufold, tzinfo=tz).timestamp()
    assert (down, up) == (datetime(*down_utc, tzinfo=UTC).timestamp(), datetime(*up_utc, tzinfo=UTC).timestamp())
    t0 = datetime(*first_utc, tzinfo=UTC).timestamp()
    t_end = t0 + len(qualities) * L
    eng = make(estimate_span_s=6 * 3600)
    out = feed(eng, linear(t0, down, 10.0, 100.0, at=t0) + linear(up, t_end, 10.0, 100.0, at=t0))
    assert [iv.start for iv in out] == [t0 + k * L for k in range(len(qualities))]
    assert all(iv.end - iv.start == L and iv.value == pytest.approx(90.0) for iv in out)
    assert [iv.quality for iv in out] == qualities


def test_a_kvarh_register_goes_out_in_kvarh():
    eng = RegisterIntervals("m", "q_received_varh", "kvarh_received", interval_s=300, modulus=2**16, to_unit=0.001,
                            max_delta=1e6)  # fmt: skip
    out = feed(eng, [(B0, 65_000), (B0 + 1, 100), (B0 + 300, 600)])
    item = out[0].to_item()
    assert (item["unit"], item["channel"], item["value"], item["flags"]) == (
        "kvarh",
        "kvarh_received",
        1.136,
        ["rollover"],
    )


# --- state and restart ------------------------------------------------------------------------------------------


def scenario():
    """Reads with a bit of everything: wrap, spike, backward read, swap, gap, flush-able outage."""
    reads = [(t, (raw + 2**32 - 55_000) % 2**32, "111") for t, raw in linear(B0 + 0.4, B0 + 1000.4, 1.3, 60.0)]
    reads += [(B0 + 1002, 3_000_000_000, "111"), (B0 + 1003, 10, "111")]
    reads += [(t, raw, "222") for t, raw in linear(B0 + 1100, B0 + 2000, 0.9, 50.0, at=B0 + 1100)]
    reads += [(t, raw, "222") for t, raw in linear(B0 + 7000, B0 + 9000, 1.1, 50.0, at=B0 + 1100)]
    return reads


def run(eng: RegisterIntervals, reads, restart_at: int | None = None) -> list[Interval]:
    out: list[Interval] = []
    for i, (t, raw, mid) in enumerate(reads):
        if i == restart_at:
            state = json.loads(json.dumps(eng.state()))
            eng = RegisterIntervals.from_state(state, eng.meter, eng.register, eng.channel, interval_s=eng.interval_s,
                                               modulus=eng.modulus, to_unit=eng.to_unit, max_delta=eng.max_delta,
                                               estimate_span_s=eng.estimate_span_s, actual_span_s=eng.actual_span_s)  # fmt: skip
        out += eng.add(t, raw, "good", mid)
        out += eng.flush(t + 1)
    return out


def test_the_scenario_passes_the_wire_contract():
    out = run(make(), scenario())
    for iv in out:
        check_interval(0, iv.to_item())
    starts = [iv.start for iv in out]
    assert starts == list(range(starts[0], starts[-1] + L, L))  # contiguous, each once


def test_every_item_says_its_reads_scale_and_where_the_register_wraps():
    out = run(make(), scenario())
    assert {(iv.to_item()["read_scale"], iv.to_item()["modulus"]) for iv in out} == {(0.001, 2**32)}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("read_scale", 0, "read_scale = 0: a finite number > 0"),
        ("read_scale", None, "read_scale = None: a finite number > 0"),
        ("read_scale", True, "read_scale = True"),
        ("modulus", -65536, "modulus = -65536: a finite number > 0 or null"),
        ("modulus", float("inf"), "modulus = inf"),
        ("modulus", "2**32", "modulus = '2\\*\\*32'"),
    ],
)
def test_a_bad_read_scale_or_modulus_is_refused_by_name(field, value, message):
    item = run(make(), scenario())[0].to_item() | {field: value}
    with pytest.raises(SchemaError, match=message):
        check_interval(0, item)


def test_an_item_without_read_scale_or_modulus_is_still_taken():
    item = run(make(), scenario())[0].to_item()
    del item["read_scale"], item["modulus"]
    check_interval(0, item)
    check_interval(0, item | {"modulus": None})


@pytest.mark.parametrize("restart_at", [1, 5, 700, 770, 771, 772, 800, 1500, 1800, 2600])
def test_a_restart_from_state_emits_what_no_restart_emits(restart_at):
    reads = scenario()
    assert run(make(), reads, restart_at) == run(make(), reads)


def test_a_restart_replays_the_reads_after_last_ts():
    """The agent stores the state with the intervals it emitted, then crashes; on start it replays the reads it
    stored after the state's last_ts: the intervals come out exactly as without the crash."""
    reads = scenario()
    eng, stored, committed, emitted = make(), [], None, []
    for t, raw, mid in reads[:3000]:
        stored.append((t, raw, mid))
        got = eng.add(t, raw, "good", mid)
        if got:
            emitted += got
            committed = json.loads(json.dumps(eng.state()))
    resumed = RegisterIntervals.from_state(committed, eng.meter, eng.register, eng.channel, interval_s=L,
                                           modulus=2**32, to_unit=0.001, max_delta=MAX_DELTA_WH)  # fmt: skip
    assert resumed.last_ts is not None
    replayed = [r for r in stored if r[0] > resumed.last_ts] + reads[3000:]
    out = emitted + [iv for t, raw, mid in replayed for iv in resumed.add(t, raw, "good", mid)]
    assert out == feed(make(), reads)


def test_a_state_of_another_interval_length_resumes_from_its_last_read():
    eng = make()
    feed(eng, linear(B0, B0 + 500, 1.0, 100.0))
    other = RegisterIntervals.from_state(eng.state(), eng.meter, eng.register, eng.channel, interval_s=300,
                                         modulus=2**32, to_unit=0.001, max_delta=MAX_DELTA_WH / 3)  # fmt: skip
    out = feed(other, linear(B0 + 501, B0 + 1200, 1.0, 100.0))
    assert brief(out) == [(B0 + 600, "A", 30.0, None, ()), (B0 + 900, "A", 30.0, None, ())]


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(0.2, 4.0), min_size=50, max_size=400),
    start=st.floats(0, 900),
    rates=st.lists(st.floats(0.0, 500.0), min_size=1, max_size=5),
    restart=st.integers(0, 400),
)
def test_intervals_add_up_to_the_true_energy_and_survive_a_restart(gaps, start, rates, restart):
    """Random read times, a piecewise-linear true energy (rate changes every 300 s) on a wrapping uint16 counter:
    the intervals are contiguous and actual, their sum equals the true energy between the first and last
    boundary within the interpolation error at those two boundaries, and a restart anywhere changes nothing."""
    step = 300.0

    def true_wh(t: float) -> float:
        e, t0 = 0.0, 0.0
        for k in range(int(t // step) + 1):
            seg = min(step, t - t0)
            e += rates[k % len(rates)] * seg
            t0 += step
        return e

    times, t = [], B0 + start
    for g in gaps * 6:
        times.append(t)
        t += g
    reads = [(x, int(true_wh(x - B0)) % 2**16, "111") for x in times]
    eng = make(interval_s=300, modulus=2**16, max_delta=1000 * 300)
    out = run(eng, reads)
    assert out == run(make(interval_s=300, modulus=2**16, max_delta=1000 * 300), reads, restart % len(reads))
    if not out:
        return
    assert [iv.start for iv in out] == list(range(out[0].start, out[-1].end, 300))
    assert all(iv.quality == "A" for iv in out)
    total = sum(iv.value for iv in out)
    exact = (true_wh(out[-1].end - B0) - true_wh(out[0].start - B0)) / 1000
    # each end boundary's reads are <= 4 s apart: interpolation between them is off by at most 500 Wh/s x 4 s,
    # and rounding the counter to whole Wh adds 1 Wh at each end
    assert total == pytest.approx(exact, abs=2 * (500 * 4 + 1) / 1000)


EVENT = st.one_of(
    st.tuples(st.just("read"), st.floats(0.1, 3.0)),
    st.tuples(st.just("gap"), st.floats(5.0, 8000.0)),
    st.tuples(st.just("glitch"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("swap"), st.floats(0.5, 100.0)),
    st.tuples(st.just("back"), st.floats(0.5, 200.0)),
)


@settings(max_examples=80, deadline=None)
@given(events=st.lists(EVENT, min_size=1, max_size=300), restart=st.integers(0, 10_000), rate=st.floats(0, 800))
def test_any_read_sequence_gives_contiguous_valid_intervals_once(events, restart, rate):
    """Whatever the reads do (gaps, garbage values, swaps, clock steps back), the intervals are contiguous, each
    passes the wire contract, no value exceeds the spike bound, and a restart anywhere changes nothing."""
    reads, t, wh, meter = [], float(B0 + 3), 0.0, 1
    for kind, x in events:
        if kind == "read":
            t += x
            wh += rate * x
            reads.append((t, int(wh) % 2**32, str(meter)))
        elif kind == "gap":
            t += x
            wh += rate * x
        elif kind == "glitch":
            t += 1
            reads.append((t, x, str(meter)))
        elif kind == "swap":
            t += x
            meter, wh = meter + 1, 0.0
            reads.append((t, 0, str(meter)))
        else:
            reads.append((t - x, int(wh) % 2**32, str(meter)))
    if not reads:
        return
    out = run(make(), reads)
    assert out == run(make(), reads, restart % len(reads))
    assert [iv.start for iv in out] == list(range(out[0].start, out[-1].end, L)) if out else True
    for iv in out:
        check_interval(0, iv.to_item())
        # the bound over the interval, plus what the per-read jitter and resolution slack can add on top
        assert iv.value is None or iv.value <= MAX_DELTA_WH / 1000 * 2 + 1
