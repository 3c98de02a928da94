"""IEC 61000-4-30 Class A chain (agent/pq/classa.py) against hand computations and signals built here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.pq.classa import (
    Aggregator,
    ClassAMeter,
    FrequencyMeter,
    aggregate_rms,
    flag_windows,
    frequency_10s_hz,
    rms_10cycle_v,
    symmetrical_components_v,
    unbalance_from_line_voltages_pct,
    voltage_unbalance_pct,
)
from agent.pq.events import Event, EventConfig
from agent.pq.harmonics import PqInputError, harmonic_window

RATE = 12800.0
U = 230.0
PEAK = U * math.sqrt(2)


def polar(mag: float, deg: float) -> complex:
    return mag * complex(math.cos(math.radians(deg)), math.sin(math.radians(deg)))


@pytest.mark.parametrize(("f", "nominal"), [(50.0, 50.0), (49.5, 50.0), (60.4, 60.0)])
def test_rms_of_a_known_sine_with_harmonics(f: float, nominal: float) -> None:
    t = np.arange(int(RATE * 0.3)) / RATE
    x = PEAK * np.sin(2 * np.pi * f * t + 0.4) + 0.1 * PEAK * np.sin(2 * np.pi * 3 * f * t)
    assert rms_10cycle_v(x, RATE, nominal, f)[0] == pytest.approx(U * math.sqrt(1.01), rel=1e-6)
    # a window of 10 nominal cycles at 49.5 Hz is not a whole number of cycles: that is why the window follows f
    if f != nominal:
        assert rms_10cycle_v(x, RATE, nominal, nominal)[0] != pytest.approx(U * math.sqrt(1.01), rel=1e-4)


def test_frequency_of_50_02_hz_over_10_s_within_10_mhz() -> None:
    # Class A, IEC 61000-4-30 5.1.4: +-10 mHz. With 5 % 5th harmonic, 2 % 7th and a 1 % DC offset.
    f = 50.02
    t = np.arange(int(RATE * 21.0)) / RATE
    x = PEAK * (
        np.sin(2 * np.pi * f * t) + 0.05 * np.sin(2 * np.pi * 5 * f * t + 1) + 0.02 * np.sin(14 * np.pi * f * t)
    )
    x += 0.01 * PEAK
    meter = FrequencyMeter(RATE, 50.0, start_utc_s=1_700_000_000.0 - 0.5)
    values = [v for i in range(0, x.size, 12800) for v in meter.push(x[i : i + 12800])]
    # the signal holds the 10-s clock intervals starting at 1_700_000_000 and +10 wholly (and a cut one before)
    full = [v for v in values if v.cycles > 490]
    assert [v.start_s for v in full] == [1_700_000_000.0, 1_700_000_010.0]
    for v in full:
        assert abs(v.freq_hz - f) < 0.010
        assert abs(v.freq_hz - f) < 1e-4  # what it really does on a steady signal
        assert v.cycles == 499  # 500 crossings in 10 s at 50.02 Hz (500.2 cycles), 499 whole cycles between them


def test_frequency_10s_counts_only_whole_cycles_inside_the_interval() -> None:
    # crossings every 0.02 s but one missing (not real) in the middle; 3 whole real cycles of 0.02 s inside
    times = [9.99, 10.01, 10.03, 10.05, 10.07, 10.09, 20.01]
    real = [True, True, True, True, False, True, True]
    assert frequency_10s_hz(times, 10.0, real) == pytest.approx(1 / 0.02)
    assert math.isnan(frequency_10s_hz([1.0], 0.0))


def test_unbalance_of_magnitudes_1_0_95_1_05_by_hand() -> None:
    ua, ub, uc = polar(1.0, 0), polar(0.95, -120), polar(1.05, 120)
    a = polar(1.0, 120)
    u1 = (ua + a * ub + a * a * uc) / 3  # IEC 61000-4-30 5.7.1: positive sequence
    u2 = (ua + a * a * ub + a * uc) / 3  # negative sequence
    u0 = (ua + ub + uc) / 3
    got_u2, got_u0 = voltage_unbalance_pct(np.array([ua, ub, uc]))
    assert got_u2 == pytest.approx(abs(u2) / abs(u1) * 100, rel=1e-12)
    assert got_u0 == pytest.approx(abs(u0) / abs(u1) * 100, rel=1e-12)
    # closed form: 3 U2 = 1 + 0.95/120 + 1.05/240 = 0.05 (1/240 - 1/120) = -j 0.05 sqrt(3), 3 U1 = 3,
    # so u2 = 0.05 / sqrt(3) = 2.8868 %
    assert got_u2 == pytest.approx(5 / math.sqrt(3), rel=1e-12)
    # the line-voltage formula of 5.7.1 is a second, independent route to u2
    line = [abs(ua - ub), abs(ub - uc), abs(uc - ua)]
    assert unbalance_from_line_voltages_pct(*line) == pytest.approx(got_u2, rel=1e-9)


def test_unbalance_of_an_angle_shifted_set_and_balanced_sets() -> None:
    ph = np.array([polar(230, 0), polar(230, -115), polar(230, 120)])  # b 5 deg off
    u2, _ = voltage_unbalance_pct(ph)
    # by hand: 3 U1 = 1 + a 1/-115 + a^2 1/120 = 2 + 1/5 ; 3 U2 = 1 + 1/125 + 1/240 = 1/125 - 1/120 (per unit)
    seq = symmetrical_components_v(ph)
    assert u2 == pytest.approx(abs(seq[2]) / abs(seq[1]) * 100)
    expect = abs(polar(1, -115 + 240) - polar(1, 120)) / abs(2 + polar(1, -115 + 120)) * 100
    assert u2 == pytest.approx(expect, rel=1e-9)
    assert voltage_unbalance_pct(np.array([polar(230, 0), polar(230, -120), polar(230, 120)]))[0] < 1e-12
    assert np.isnan(voltage_unbalance_pct(np.array([polar(230, 0), polar(230, 120), polar(230, -120)]))[0])  # U1 = 0
    assert np.isnan(voltage_unbalance_pct(np.zeros(3))[0])


def test_unbalance_from_sampled_waveforms_matches_hand_and_pqopen() -> None:
    from pqopen.powerquality import calc_harmonics, calc_unbalance, resample_and_fft

    mags, angles = (1.0, 0.95, 1.05), (0.0, -117.0, 120.0)
    t = np.arange(int(RATE * 0.25)) / RATE
    x = np.vstack(
        [
            PEAK * m * np.sin(2 * np.pi * 50 * t + math.radians(a)) + 0.03 * PEAK * np.sin(2 * np.pi * 250 * t)
            for m, a in zip(mags, angles, strict=True)
        ]  # fmt: skip
    )
    r = harmonic_window(x, RATE, 50.0, 50.0)
    u2, u0 = voltage_unbalance_pct(r.fundamental_v)
    hand_u2, hand_u0 = voltage_unbalance_pct(np.array([polar(m, a) for m, a in zip(mags, angles, strict=True)]))
    assert u2 == pytest.approx(hand_u2, abs=1e-4) and u0 == pytest.approx(hand_u0, abs=1e-4)
    cplx = []
    for row in x[:, :2560]:
        mag, phi = calc_harmonics(resample_and_fft(row, 2048), 10, 50)
        cplx.append(mag[1] * np.exp(1j * np.radians(phi[1])))
    pq_u0, pq_u2 = calc_unbalance(cplx)
    assert pq_u2 == pytest.approx(u2, abs=0.01) and pq_u0 == pytest.approx(u0, abs=0.01)


def test_aggregate_rms_by_hand() -> None:
    assert aggregate_rms([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt((1 + 4 + 9 + 16) / 4))
    np.testing.assert_allclose(aggregate_rms(np.array([[3.0, 0.0], [4.0, 2.0]])), [math.sqrt(12.5), math.sqrt(2)])


def test_three_second_and_ten_minute_aggregation_with_the_clock() -> None:
    # 0.2-s windows from 594.05 s: 30 windows fill two 3-s values (594.05..600.05); the 30th straddles the
    # 600-s tick and closes the 10-min value; the next window restarts at the tick (as the analyser does).
    agg = Aggregator()
    out = []
    values = np.arange(1.0, 41.0)
    starts = [594.05 + 0.2 * i for i in range(30)] + [600.0 + 0.2 * i for i in range(10)]
    flags = [i == 3 for i in range(40)]
    for v, s, flag in zip(values, starts, flags, strict=True):
        out += agg.push(s, s + 0.2, {"rms_v": np.array([v, 2 * v])}, flag)
    short = [a for a in out if a.kind == "150/180-cycle"]
    ten = [a for a in out if a.kind == "10-min"]
    assert [a.count for a in short] == [15, 15]
    assert short[0].values["rms_v"][0] == pytest.approx(math.sqrt(np.mean(values[:15] ** 2)))
    assert short[1].values["rms_v"][1] == pytest.approx(2 * math.sqrt(np.mean(values[15:30] ** 2)))
    assert (short[0].flagged, short[1].flagged) == (True, False)
    assert len(ten) == 1 and ten[0].end_s == 600.0 and ten[0].start_s == 0.0 and ten[0].count == 30
    assert ten[0].values["rms_v"][0] == pytest.approx(math.sqrt(np.mean(values[:30] ** 2)))
    assert ten[0].flagged
    assert out[-1].kind == "10-min"  # nothing yet from the 10 windows after the tick


def test_ten_minute_tick_cuts_a_three_second_value_short() -> None:
    agg = Aggregator()
    out = []
    starts = [598.5 + 0.2 * i for i in range(8)]  # the 8th (599.9..600.1) straddles
    for s in starts:
        out += agg.push(s, s + 0.2, {"x": np.array(2.0)}, False)
    assert [(a.kind, a.count) for a in out] == [("150/180-cycle", 8), ("10-min", 8)]
    assert out[0].values["x"] == pytest.approx(2.0)


def test_two_hour_value_from_twelve_ten_minute_values() -> None:
    agg = Aggregator()
    out = []
    for k in range(12):
        # one window per 10-min interval, straddling its end tick, value k + 1
        s = 600.0 * (k + 1) - 0.1 + 7200.0
        out += agg.push(s, s + 0.2, {"x": np.array(float(k + 1))}, k == 11)
    two = [a for a in out if a.kind == "2-h"]
    assert len(two) == 1 and two[0].end_s == 14400.0 and two[0].count == 12
    assert two[0].values["x"] == pytest.approx(math.sqrt(np.mean(np.arange(1, 13) ** 2)))
    assert two[0].flagged


def test_flag_windows_overlap_rule() -> None:
    ev = Event("dip", "a", "a", start_s=1.01, duration_s=0.1)
    flags = flag_windows(np.array([0.6, 0.8, 1.0, 1.2]), np.array([0.8, 1.0, 1.2, 1.4]), [ev], lead_s=0.02)
    assert flags.tolist() == [False, True, True, False]  # 0.8..1.0 reaches the event's lead (0.99)


def test_class_a_meter_end_to_end_with_a_dip_across_a_ten_minute_tick() -> None:
    tick = 1_800_000_000.0
    f = 50.01
    t = np.arange(int(RATE * 8.0)) / RATE
    env = np.where((t >= 3.5) & (t < 3.6), 0.6, 1.0)  # the dip is at tick - 0.5 s
    x = np.vstack(
        [
            PEAK * env * np.sin(2 * np.pi * f * t - k * 2 * np.pi / 3) + 0.04 * PEAK * np.sin(2 * np.pi * 5 * f * t)
            for k in range(3)
        ]  # fmt: skip
    )
    meter = ClassAMeter(EventConfig(udin_v=U), RATE, 50.0, 3, start_utc_s=tick - 4.0)
    outs = [meter.push(x[:, i : i + 2000]) for i in range(0, x.shape[1], 2000)]
    windows = [w for o in outs for w in o.windows]
    aggs = [a for o in outs for a in o.aggregates]
    events = [e for o in outs for e in o.events]
    assert [e.kind for e in events] == ["dip"] and events[0].residual_pct == pytest.approx(60.0, abs=1.0)
    flagged = [w for w in windows if w.flagged]
    assert 1 <= len(flagged) <= 2
    assert all(
        w.harmonics.start_s <= events[0].end_s and w.harmonics.end_s >= events[0].start_s - 0.02 for w in flagged
    )
    steady = [w for w in windows if not w.flagged][3]
    np.testing.assert_allclose(steady.rms_v, U * math.sqrt(1 + 0.04**2), rtol=1e-5)
    assert steady.u2_pct < 0.01  # the 5th is in phase on all three: no fundamental unbalance
    np.testing.assert_allclose(steady.harmonics.thds_pct, 4.0, atol=0.01)
    ten = [a for a in aggs if a.kind == "10-min"]
    assert len(ten) == 1 and ten[0].end_s == tick and ten[0].flagged
    after = [w for w in windows if w.harmonics.start_s >= tick]
    assert after[0].harmonics.start_s == pytest.approx(tick, abs=1e-6)
    short_after = [a for a in aggs if a.kind == "150/180-cycle" and a.start_s >= tick]
    assert short_after and not short_after[0].flagged and short_after[0].count == 15


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: rms_10cycle_v(np.zeros(3000), RATE, 50.0, 20.0), "freq_hz=20.0"),
        (lambda: voltage_unbalance_pct(np.zeros(2)), "allowed [..., 3]"),
        (lambda: aggregate_rms([]), "empty"),
        (lambda: Aggregator().push(1.0, 1.0, {}, False), "end_s=1.0: allowed > start_s=1.0"),
        (lambda: ClassAMeter({"udin_v": 230}, RATE, 50.0), "allowed an EventConfig"),  # type: ignore[arg-type]
        (lambda: FrequencyMeter(RATE, 16.7), "nominal_hz=16.7"),
    ],
)
def test_bad_input_raises_a_typed_error(call, needle: str) -> None:
    with pytest.raises(PqInputError) as err:
        call()
    assert needle in str(err.value)


def test_chain_sharing_one_band_pass_equals_its_parts_run_alone() -> None:
    # ClassAMeter band-passes each block once and shares channel 0's crossings between the windows and the
    # frequency: its windows, events and 10-s values are those of the analyser, the detector and the frequency
    # meter each run on its own (with the chain's min_peak_v), to the last bit.
    from agent.pq.events import EventDetector
    from agent.pq.harmonics import HarmonicAnalyser

    cfg = EventConfig(udin_v=U)
    t = np.arange(int(RATE * 12.5)) / RATE
    x = np.vstack([PEAK * np.sin(2 * np.pi * 50.03 * t - k * 2 * np.pi / 3) for k in range(3)])
    x[:, (t > 3.0) & (t < 3.5)] *= 0.01  # an interruption (no crossings: filled in at the nominal period)
    x[1, (t > 7.0) & (t < 7.2)] *= 1.15  # a swell on one phase
    min_peak = 0.5 * cfg.interruption_threshold_pct / 100 * cfg.udin_v * math.sqrt(2.0)
    meter = ClassAMeter(cfg, RATE, 50.0, 3, start_utc_s=595.0)
    analyser = HarmonicAnalyser(RATE, 50.0, 3, start_utc_s=595.0, min_peak_v=min_peak)
    detector = EventDetector(cfg, RATE, 50.0, 3, start_utc_s=595.0)
    freq = FrequencyMeter(RATE, 50.0, start_utc_s=595.0, min_peak_v=min_peak)
    windows, events, freqs, want_windows, want_events, want_freqs = [], [], [], [], [], []
    for i in range(0, t.size, 1000):
        out = meter.push(x[:, i : i + 1000])
        windows += [w.harmonics for w in out.windows]
        events += out.events
        freqs += out.frequencies
        want_windows += analyser.push(x[:, i : i + 1000])
        want_events += detector.push(x[:, i : i + 1000])
        want_freqs += freq.push(x[0, i : i + 1000])
    assert [e.kind for e in events] == ["interruption", "dip", "swell"] and events == want_events
    assert len(freqs) == 1 and freqs == want_freqs
    assert len(windows) > 50
    for got, want in zip(windows, want_windows, strict=False):  # the chain holds the last ones back for flags
        assert (got.start_s, got.end_s, got.freq_hz) == (want.start_s, want.end_s, want.freq_hz)
        for name in ("rms_v", "fundamental_v", "harmonic_subgroup_v", "harmonic_group_v", "interharmonic_subgroup_v"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
