"""IEC 61000-4-7 harmonics (agent/pq/harmonics.py) against signals built here with numpy.

Expected values come from the signal's own definition (amplitudes we put in), from the DFT of a
rectangular window written out by hand (Dirichlet kernel) and from pqopen-lib as an independent peer.
Tolerance 0.1 % absolute for percentages; the standard's Class I limit is 5 % of reading (IEC 61000-4-7
Table 1), far looser.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.pq.harmonics import (
    FundamentalFilter,
    FundamentalZeroCrossings,
    HarmonicAnalyser,
    PqInputError,
    dft_bins_v,
    harmonic_groups_v,
    harmonic_subgroups_v,
    harmonic_window,
    harmonics_pct,
    interharmonic_subgroups_v,
    max_order_for,
    rms_between_v,
    samples_per_window,
    synchronised_window_v,
    thds_pct,
    window_cycles,
)

RATE = 12800.0
U = 230.0
PEAK = U * math.sqrt(2)
CONTENT = {5: 0.05, 7: 0.03, 11: 0.01}  # harmonic order -> amplitude in per unit of the fundamental
THD_BY_HAND = math.sqrt(5.0**2 + 3.0**2 + 1.0**2)  # 5.916 %


def wave(freq_hz: float, seconds: float, content: dict[float, float], phase0: float = 0.3) -> np.ndarray:
    """Fundamental PEAK at freq_hz plus ``order: per-unit`` components (non-integer orders allowed)."""
    t = np.arange(int(RATE * seconds)) / RATE
    x = PEAK * np.sin(2 * np.pi * freq_hz * t + phase0)
    for order, pu in content.items():
        x += pu * PEAK * np.sin(2 * np.pi * order * freq_hz * t + 0.7 * order)
    return x


@pytest.mark.parametrize(("freq_hz", "nominal_hz"), [(50.0, 50.0), (49.5, 50.0), (60.0, 60.0), (60.4, 60.0)])
def test_known_harmonics_give_subgroups_and_thds_by_hand(freq_hz: float, nominal_hz: float) -> None:
    r = harmonic_window(wave(freq_hz, 0.25, CONTENT), RATE, nominal_hz, freq_hz)
    pct = r.harmonic_subgroup_pct[0]
    for order, pu in CONTENT.items():
        assert pct[order] == pytest.approx(pu * 100, abs=0.1)
        assert r.harmonic_subgroup_v[0, order] == pytest.approx(pu * U, rel=1e-3)
    assert r.harmonic_subgroup_v[0, 1] == pytest.approx(U, rel=1e-4)
    assert r.thds_pct[0] == pytest.approx(THD_BY_HAND, abs=0.1)
    others = np.delete(pct[2:], [o - 2 for o in CONTENT])
    assert np.all(others < 0.01)
    # RMS of the window: sqrt of the sum of the squared RMS values we put in
    assert r.rms_v[0] == pytest.approx(U * math.sqrt(1 + sum(pu * pu for pu in CONTENT.values())), rel=1e-5)
    assert r.cycles == window_cycles(nominal_hz)
    assert r.end_s == pytest.approx(r.cycles / freq_hz)


@pytest.mark.parametrize(("freq_hz", "nominal_hz"), [(49.5, 50.0), (60.4, 60.0)])
def test_without_synchronisation_off_nominal_the_error_is_larger(freq_hz: float, nominal_hz: float) -> None:
    x = wave(freq_hz, 0.25, CONTENT)
    synced = harmonic_window(x, RATE, nominal_hz, freq_hz)
    raw = harmonic_window(x, RATE, nominal_hz, freq_hz, synchronise=False)
    err_synced = abs(synced.harmonic_subgroup_pct[0, 5] - 5.0)
    err_raw = abs(raw.harmonic_subgroup_pct[0, 5] - 5.0)
    assert err_synced < 0.01
    assert err_raw > 0.1 > err_synced  # the leakage of a window of non-integer cycles
    assert abs(raw.thds_pct[0] - THD_BY_HAND) > abs(synced.thds_pct[0] - THD_BY_HAND)


def test_resampling_error_at_the_50th_harmonic_is_the_documented_figure() -> None:
    # 49.5 Hz, 50th harmonic at 2475 Hz: 5.2 samples per period; the spline loses ~0.4 % of the amplitude
    r = harmonic_window(wave(49.5, 0.25, {50: 0.01}), RATE, 50.0, 49.5)
    assert r.harmonic_subgroup_pct[0, 50] == pytest.approx(1.0, rel=0.006)
    assert r.harmonic_subgroup_pct[0, 50] < 1.0


def test_bin_centred_interharmonic_shows_only_in_its_interharmonic_subgroup() -> None:
    # 135 Hz = bin 27 at 50 Hz: the subgroup between orders 2 and 3 (bins 22..28, 110..140 Hz)
    r = harmonic_window(wave(50.0, 0.25, {135 / 50: 0.02}), RATE, 50.0, 50.0)
    ih = r.interharmonic_subgroup_pct[0]
    assert ih[2] == pytest.approx(2.0, abs=0.01)
    assert np.all(np.delete(ih, 2) < 1e-6)
    assert np.all(r.harmonic_subgroup_pct[0, 2:] < 1e-6)
    assert r.thds_pct[0] < 1e-6


def test_interharmonic_at_137_5_hz_leaks_as_the_rectangular_window_says() -> None:
    # 137.5 Hz sits half way between bins 27 and 28: the 200-ms rectangular window of IEC 61000-4-7 spreads it
    # by the Dirichlet kernel |sin(pi d) / (M sin(pi d / M))|; most lands in interharmonic subgroup 2, and
    # the bins 29..31 (distance 1.5..3.5) leak into harmonic subgroup 3. Expected values from the kernel.
    pu = 0.02
    r = harmonic_window(wave(50.0, 0.25, {137.5 / 50: pu}), RATE, 50.0, 50.0)
    m = samples_per_window(RATE, 50.0)

    def kernel(k: np.ndarray) -> np.ndarray:
        d = k - 27.5
        return np.abs(np.sin(np.pi * d) / (m * np.sin(np.pi * d / m)))

    expect_ih2 = pu * 100 * math.sqrt(np.sum(kernel(np.arange(22, 29)) ** 2))
    expect_h3 = pu * 100 * math.sqrt(np.sum(kernel(np.arange(29, 32)) ** 2))
    assert r.interharmonic_subgroup_pct[0, 2] == pytest.approx(expect_ih2, rel=0.01)  # ~94 % of the tone
    # the kernel leaves out the image at -137.5 Hz, which adds ~3 % here
    assert r.harmonic_subgroup_pct[0, 3] == pytest.approx(expect_h3, rel=0.05)  # ~26 % of the tone
    assert r.interharmonic_subgroup_pct[0].argmax() == 2


def test_groups_take_the_bins_half_way_at_half_weight() -> None:
    # 260 Hz (bin 52) belongs to group 5 but not subgroup 5; 275 Hz (bin 55, half way between 5 and 6)
    # counts half (in power) in group 5 and half in group 6 (IEC 61000-4-7 5.5.1, eq. 8).
    r = harmonic_window(wave(50.0, 0.25, {5.2: 0.04, 5.5: 0.02}), RATE, 50.0, 50.0)
    g = r.harmonic_group_v[0] / U * 100
    assert g[5] == pytest.approx(math.sqrt(4.0**2 + 2.0**2 / 2), abs=0.01)
    assert g[6] == pytest.approx(math.sqrt(2.0**2 / 2), abs=0.01)
    assert r.harmonic_subgroup_pct[0, 5] < 1e-6


def test_grouping_functions_on_a_hand_made_spectrum() -> None:
    n = 10
    bins = np.zeros((1, 51 * n + 1), dtype=complex)
    bins[0, 50] = 3.0  # harmonic 5
    bins[0, 49] = 4.0  # its neighbour
    bins[0, 45] = 2.0  # half way to 4: half weight in groups 4 and 5
    bins[0, 57] = 1.0  # interharmonic subgroup 5 (bins 52..58)
    sub = harmonic_subgroups_v(bins, n)
    grp = harmonic_groups_v(bins, n)
    ih = interharmonic_subgroups_v(bins, n)
    assert sub[0, 5] == pytest.approx(5.0)
    assert grp[0, 5] == pytest.approx(math.sqrt(9 + 16 + 4 / 2))  # bin 57 is outside group 5 (45..55)
    assert grp[0, 4] == pytest.approx(math.sqrt(4 / 2))
    assert ih[0, 5] == pytest.approx(1.0)
    assert ih[0, 4] == pytest.approx(2.0)  # bin 45 is the centre of interharmonic subgroup 4 (bins 42..48) too
    assert sub.shape == (1, 51) and ih.shape == (1, 50)


def test_thds_of_a_hand_made_subgroup_row() -> None:
    g = np.zeros((2, 51))
    g[0, 1], g[0, 3], g[0, 50] = 100.0, 3.0, 4.0
    out = thds_pct(g)
    assert out[0] == pytest.approx(5.0)
    assert np.isnan(out[1])  # no fundamental


@pytest.mark.parametrize(
    ("rate_hz", "nominal_hz", "order"),
    [
        (12800.0, 50.0, 50),  # group 127 would fit below 6400 Hz; capped at the 50th (IEC 61000-4-30 5.8)
        (7680.0, 60.0, 50),
        (1920.0, 60.0, 15),  # group 15 reaches 15.5 x 60 = 930 Hz < 960 Hz; group 16 would reach 990 Hz
        (1600.0, 60.0, 12),  # group 12 reaches 750 Hz < 800 Hz; group 13 would reach 810 Hz
        (1650.0, 50.0, 15),  # group 16 would reach 825 Hz, the Nyquist frequency itself: not below it
        (800.0, 60.0, 6),  # 390 Hz < 400 Hz; group 7 would reach 450 Hz
        (151.0, 50.0, 1),  # the fundamental's group alone: 75 Hz < 75.5 Hz
    ],
)
def test_max_order_is_the_highest_group_below_the_nyquist_frequency(rate_hz: float, nominal_hz: float,
                                                                    order: int) -> None:  # fmt: skip
    # IEC 61000-4-7 5.5.1, eq. 8: the group of order h spans the bins up to (h + 1/2) x the fundamental
    assert max_order_for(rate_hz, nominal_hz) == order
    assert (order + 0.5) * nominal_hz < rate_hz / 2
    assert order == 50 or (order + 1.5) * nominal_hz >= rate_hz / 2


def test_max_order_is_what_a_window_at_nominal_frequency_accepts() -> None:
    x = wave(60.0, 0.25, {})[: round(0.25 * 1600)]
    order = max_order_for(1600.0, 60.0)
    assert harmonic_window(x, 1600.0, 60.0, 60.0, max_order=order).harmonic_group_v.shape == (1, order + 1)
    with pytest.raises(PqInputError, match="rate_hz=1600.0"):
        harmonic_window(x, 1600.0, 60.0, 60.0, max_order=order + 1)


def test_harmonics_pct_of_a_hand_made_subgroup_row() -> None:
    # orders 0..4: DC 1 V, fundamental 230 V, 11.5 V (5 %), 6.9 V (3 %), 0 V; a row without a fundamental
    sub = np.array([[1.0, 230.0, 11.5, 6.9, 0.0], [0.0, 0.0, 1.0, 1.0, 1.0]])
    pct = harmonics_pct(sub)
    assert pct.shape == (2, 3)
    assert pct[0] == pytest.approx([5.0, 3.0, 0.0], abs=1e-12)
    assert np.isnan(pct[1]).all()
    assert harmonics_pct([[0.0, 100.0, 2.0]]).tolist() == [[2.0]]  # a list is taken as an array


def test_dft_bins_are_rms_values() -> None:
    m = 2560
    x = 2.0 + 10 * math.sqrt(2) * np.cos(2 * np.pi * 10 * np.arange(m) / m)
    bins = dft_bins_v(x)
    assert abs(bins[0, 0]) == pytest.approx(2.0)
    assert abs(bins[0, 10]) == pytest.approx(10.0)


def test_pqopen_agrees_on_thd_of_the_same_window() -> None:
    # pqopen-lib computes subgroups (bin and both neighbours) and THD from a window it resamples linearly
    # (np.interp) to a power of two; give it exactly 10 cycles so both see the same signal.
    from pqopen.powerquality import calc_harmonics, calc_thd, resample_and_fft

    x = wave(50.0, 0.25, CONTENT)
    ours = harmonic_window(x, RATE, 50.0, 50.0)
    h_rms, _ = calc_harmonics(resample_and_fft(x[:2560], 2048), 10, 50)
    assert calc_thd(h_rms, max_harmonic=50) == pytest.approx(ours.thds_pct[0], abs=0.01)
    # pqopen interpolates linearly (np.interp) from 2560 to 2048 points: that costs its 5th harmonic 0.12 %
    assert h_rms[5] == pytest.approx(ours.harmonic_subgroup_v[0, 5], rel=2e-3)


def test_zero_crossings_of_a_distorted_sine_are_where_the_fundamental_crosses() -> None:
    # fundamental sin(2 pi f t + phi) crosses upwards at t = (k - phi / 2 pi) / f; 10 % 3rd harmonic and a
    # DC offset of 5 % must not move them (the band-pass removes both).
    f, phi = 50.0, 0.9
    t = np.arange(int(RATE)) / RATE
    x = np.sin(2 * np.pi * f * t + phi) + 0.1 * np.sin(2 * np.pi * 3 * f * t) + 0.05
    zc = FundamentalZeroCrossings(RATE, 50.0)
    got = np.concatenate([zc.push(x[i : i + 999])[0] for i in range(0, x.size, 999)]) / RATE
    k = np.round(got * f + phi / (2 * np.pi))
    expect = (k - phi / (2 * np.pi)) / f
    assert got.size == 45  # 50 crossings in 1 s, less the 5 in the filter's settling time (0.1 s)
    np.testing.assert_allclose(got[5:], expect[5:], atol=20e-6)  # 20 us: 0.36 deg
    assert np.all(np.diff(got) == pytest.approx(1 / f, abs=20e-6))


def test_zero_crossings_are_filled_in_at_the_nominal_period_when_the_signal_goes() -> None:
    t = np.arange(int(RATE)) / RATE
    x = np.where((t > 0.4) & (t < 0.6), 0.0, 100 * np.sin(2 * np.pi * 50 * t))
    zc = FundamentalZeroCrossings(RATE, 50.0, min_peak_v=10.0)
    where, real = zc.push(x)
    gap = (where > 0.43 * RATE) & (where < 0.6 * RATE)
    assert gap.sum() >= 7 and not real[gap].any()
    np.testing.assert_allclose(np.diff(where[gap]), RATE / 50)
    assert real[where > 0.7 * RATE].all()


def test_crossings_of_a_shared_filter_equal_those_of_a_detector_per_channel() -> None:
    # One FundamentalFilter over three channels (a dip and a gap on one of them), its rows handed to the
    # detectors at once, finds the same crossings, real flags included, as a detector filtering each channel.
    t = np.arange(int(2 * RATE)) / RATE
    x = np.vstack([PEAK * np.sin(2 * np.pi * 49.9 * t - k * 2 * np.pi / 3) for k in range(3)])
    x[1, (t > 0.7) & (t < 0.75)] *= 0.3
    x[2, (t > 1.1) & (t < 1.3)] = 0.0
    for both in (False, True):
        shared = FundamentalFilter(RATE, 50.0, 3)
        mine = [FundamentalZeroCrossings(RATE, 50.0, both_edges=both, min_peak_v=20.0) for _ in range(3)]
        alone = [FundamentalZeroCrossings(RATE, 50.0, both_edges=both, min_peak_v=20.0) for _ in range(3)]
        for i in range(0, t.size, 1111):
            got = FundamentalZeroCrossings.detect_channels(mine, shared.push(x[:, i : i + 1111]))
            for k in range(3):
                want = alone[k].push(x[k, i : i + 1111])
                np.testing.assert_array_equal(got[k][0], want[0])
                np.testing.assert_array_equal(got[k][1], want[1])


def test_spline_on_samples_is_scipy_cubicspline_bit_for_bit() -> None:
    from scipy.interpolate import CubicSpline

    from agent.pq.harmonics import _spline_on_samples

    rng = np.random.default_rng(3)
    for channels, n in [(1, 8), (3, 2570), (8, 2581)]:
        x = rng.normal(0.0, 300.0, (channels, n + 12))
        lo, hi = 5, 5 + n
        where = lo + np.sort(rng.uniform(0.0, n - 1.0, 500))
        where[0], where[-1] = lo, hi - 1  # both ends, the last point inside the last interval
        want = CubicSpline(np.arange(lo, hi, dtype=np.float64), x[:, lo:hi], axis=1)(where)
        np.testing.assert_array_equal(_spline_on_samples(x, lo, hi, where), want)


def test_streaming_windows_are_contiguous_synchronised_and_independent_of_block_size() -> None:
    f = 49.8
    x = np.vstack([wave(f, 2.0, CONTENT, phase0=-k * 2 * np.pi / 3) for k in range(3)])
    runs = []
    for block in (1000, 4097):
        an = HarmonicAnalyser(RATE, 50.0, 3)
        runs.append([r for i in range(0, x.shape[1], block) for r in an.push(x[:, i : i + block])])
    a, b = runs
    assert len(a) == len(b) >= 8
    for ra, rb in zip(a, b, strict=True):
        assert ra.start_s == rb.start_s and ra.end_s == rb.end_s
        np.testing.assert_allclose(ra.harmonic_subgroup_v, rb.harmonic_subgroup_v, rtol=1e-9, atol=1e-9)
    for prev, nxt in zip(a, a[1:], strict=False):
        assert nxt.start_s == prev.end_s
    for r in a[1:]:
        assert r.freq_hz == pytest.approx(f, abs=1e-3)
        np.testing.assert_allclose(r.harmonic_subgroup_pct[:, [5, 7, 11]], [[5, 3, 1]] * 3, atol=0.01)


def test_streaming_windows_resynchronise_at_the_ten_minute_tick() -> None:
    # IEC 61000-4-30 5.5.3 (Class A): the window straddling the tick finishes; the next one starts at the tick
    tick = 1_800_000_000.0  # a multiple of 600 s
    an = HarmonicAnalyser(RATE, 50.0, 1, start_utc_s=tick - 1.0037)
    x = wave(50.03, 2.0, {})
    res = [r for i in range(0, x.size, 1280) for r in an.push(x[i : i + 1280])]
    straddling = [r for r in res if r.start_s < tick < r.end_s]
    assert len(straddling) == 1
    after = [r for r in res if r.start_s >= tick]
    assert after[0].start_s == pytest.approx(tick, abs=1e-6)
    assert after[0].start_s < straddling[0].end_s  # the overlap
    assert after[0].end_s - after[0].start_s == pytest.approx(10 / 50.03, abs=1e-5)


def test_synchronised_window_and_rms_between_fractional_positions() -> None:
    x = np.sin(2 * np.pi * np.arange(1000) / 100.0)  # 100 samples per period
    w = synchronised_window_v(x, 12.5, 200.0, 64)
    np.testing.assert_allclose(w[0], np.sin(2 * np.pi * (12.5 + np.arange(64) * 200 / 64) / 100), atol=1e-6)
    assert rms_between_v(x, 12.5, 312.5)[0] == pytest.approx(1 / math.sqrt(2), rel=1e-4)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: window_cycles(55), "nominal_hz=55: allowed 50.0 or 60.0"),
        (lambda: samples_per_window(4000.0, 50.0), "rate_hz=4000.0: allowed >= 5050"),
        (lambda: samples_per_window(-1.0, 50.0), "rate_hz=-1.0"),
        (lambda: samples_per_window(12800.0, 50.0, max_order=0), "max_order=0"),
        (lambda: max_order_for(150.0, 50.0), "rate_hz=150.0: allowed > 150 Hz at 50 Hz"),
        (lambda: max_order_for(12800.0, 55.0), "nominal_hz=55"),
        (lambda: harmonic_window(np.zeros(3000), RATE, 50.0, 80.0), "freq_hz=80.0: allowed 25..75"),
        (lambda: harmonic_window(np.zeros(100), RATE, 50.0, 50.0), "window [0.000, 2560.000]"),
        (lambda: harmonic_window(np.zeros(100), RATE, 50.0, 50.0, synchronise=False), "allowed >= 2560"),
        (lambda: harmonic_window(np.full(3000, np.nan), RATE, 50.0, 50.0), "NaN or inf"),
        (lambda: harmonic_window(np.zeros((2, 2, 2)), RATE, 50.0, 50.0), "allowed [channels, samples]"),
        (lambda: harmonic_window(np.zeros(3000), 5100.0, 50.0, 51.0), "rate_hz=5100.0: allowed > 5151"),
        (lambda: rms_between_v(np.zeros(10), 5.0, 5.0), "allowed 0 <= start < end <= 10"),
        (lambda: FundamentalZeroCrossings(RATE, 50.0, min_peak_v=-1.0), "min_peak_v=-1.0"),
        (lambda: HarmonicAnalyser(RATE, 50.0, 0), "channels=0"),
        (lambda: HarmonicAnalyser(RATE, 50.0, 1, resync_s=0.0), "resync_s=0.0"),
        (lambda: HarmonicAnalyser(RATE, 50.0, 3).push(np.zeros((2, 10))), "2 channels: allowed 3"),
    ],
)
def test_bad_input_raises_a_typed_error_naming_the_value(call, needle: str) -> None:
    with pytest.raises(PqInputError) as err:
        call()
    assert needle in str(err.value)
