"""The bench's waveform generator, checked from first principles: RMS of a sine, DFT bins over whole cycles,
zero-crossing counts, envelope ratios, and chunked generation equal to whole generation."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import comtrade as peer
import numpy as np
import pytest

from protocols import comtrade as ct
from sim_hw.waveforms import (
    DescriptionError,
    Event,
    Flicker,
    Harmonic,
    Interharmonic,
    Noise,
    WaveformDesc,
    chunks,
    generate,
    write_comtrade,
)

SQ2 = math.sqrt(2.0)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x)))


def _dft(x: np.ndarray, k: int) -> complex:
    """Complex amplitude of bin k (k cycles in the window) of a real signal: A e^{j phi} for A cos(.+phi)."""
    n = len(x)
    return complex(2.0 / n * np.sum(x * np.exp(-2j * np.pi * k * np.arange(n) / n)))


def test_rms_unbalance_and_power_factor_of_a_clean_signal() -> None:
    d = WaveformDesc(samples_per_cycle=256, v_rms=(230.0, 220.0, 240.0), i_rms=(10.0, 12.0, 8.0), pf_angle_deg=30.0)
    w = generate(d, 0.2)  # 10 whole cycles at 50 Hz: the RMS of a sine is its amplitude / sqrt 2 exactly
    assert w.data.shape == (6, 2560) and w.rate_hz == 12800.0
    for i, v in enumerate((230.0, 220.0, 240.0, 10.0, 12.0, 8.0)):
        assert _rms(w.data[i]) == pytest.approx(v, rel=1e-9)
    # active power of phase a: V I cos(30 deg)
    assert np.mean(w.data[0] * w.data[3]) == pytest.approx(230 * 10 * math.cos(math.radians(30)), rel=1e-9)
    # phase b lags a by 120 degrees: fundamental bin phase difference
    assert np.angle(_dft(w.data[1], 10) / _dft(w.data[0], 10), deg=True) == pytest.approx(-120.0, abs=1e-6)


def test_harmonics_have_their_amplitude_phase_and_natural_sequence() -> None:
    d = WaveformDesc(
        rate_hz=12800.0,
        harmonics=(Harmonic(3, 5.0, 30.0), Harmonic(5, 4.0), Harmonic(7, 3.0)),
        current_harmonics=(Harmonic(5, 20.0),),
    )
    w = generate(d, 0.2)
    fund = abs(_dft(w.data[0], 10))
    assert fund == pytest.approx(230 * SQ2, rel=1e-9)
    for order, pct in ((3, 5.0), (5, 4.0), (7, 3.0)):
        assert abs(_dft(w.data[0], 10 * order)) / fund == pytest.approx(pct / 100, rel=1e-9)
    assert abs(_dft(w.data[0], 20)) / fund < 1e-12  # nothing at the 2nd
    # sin(3 theta + 30 deg) = cos(3 theta - 60 deg)
    assert np.angle(_dft(w.data[0], 30), deg=True) == pytest.approx(-60.0, abs=1e-6)
    # 3rd in phase in all phases (zero sequence), 5th rotates backwards (negative), 7th forwards (positive)
    rel = {h: np.angle(_dft(w.data[1], 10 * h) / _dft(w.data[0], 10 * h), deg=True) for h in (3, 5, 7)}
    assert rel[3] == pytest.approx(0.0, abs=1e-6)
    assert rel[5] == pytest.approx(120.0, abs=1e-6)
    assert rel[7] == pytest.approx(-120.0, abs=1e-6)
    assert abs(_dft(w.data[3], 50)) / abs(_dft(w.data[3], 10)) == pytest.approx(0.20, rel=1e-9)


def test_interharmonic_at_a_fixed_frequency() -> None:
    d = WaveformDesc(rate_hz=12800.0, frequency_hz=50.0, interharmonics=(Interharmonic(175.0, 2.0),))
    w = generate(d, 0.2)  # 5 Hz bins: 175 Hz is bin 35
    assert abs(_dft(w.data[0], 35)) / abs(_dft(w.data[0], 10)) == pytest.approx(0.02, rel=1e-9)


def _crossings(x: np.ndarray) -> np.ndarray:
    """Sample indices (fractional, linear interpolation) of the upward zero crossings."""
    k = np.nonzero((x[:-1] < 0) & (x[1:] >= 0))[0]
    return k + (-x[k]) / (x[k + 1] - x[k])


def test_actual_and_slowly_varying_frequency() -> None:
    w = generate(WaveformDesc(samples_per_cycle=128, frequency_hz=50.3), 10.0)
    z = _crossings(w.data[0])
    # upward crossings at k / 50.3 s for k = 1 .. 502 inside (0, 10 s): the one at t = 0 has no sample before it
    assert len(z) == 502
    assert np.diff(z).mean() / w.rate_hz == pytest.approx(1 / 50.3, rel=1e-6)
    ramp = WaveformDesc(samples_per_cycle=128, frequency_profile=((0.0, 49.5), (10.0, 50.5)))
    z = _crossings(generate(ramp, 10.0).data[0]) / 6400.0
    assert len(z) == 499  # the integral of a 49.5 -> 50.5 Hz ramp over 10 s is 500 cycles: crossings 1 .. 499
    # over one cycle the mean frequency is that at the cycle's middle: 49.5 + 0.1 t (a linear ramp)
    for t_s in (2.0, 8.0):
        i = np.searchsorted(z, t_s)
        mid = 0.5 * (z[i] + z[i + 1])
        assert 1.0 / (z[i + 1] - z[i]) == pytest.approx(49.5 + 0.1 * mid, abs=2e-4)


def _cycle_rms(x: np.ndarray, spc: int) -> np.ndarray:
    n = len(x) // spc
    return np.sqrt(np.mean(x[: n * spc].reshape(n, spc) ** 2, axis=1))


def test_sinusoidal_flicker_envelope_ratio() -> None:
    # 8.8 Hz is not a multiple of 50 Hz; use 2 Hz so every cycle sits in one place of the modulation
    d = WaveformDesc(samples_per_cycle=256, flicker=Flicker(dv_v_pct=2.0, freq_hz=2.0))
    w = generate(d, 1.0)
    env = np.abs(w.data[0])
    # peaks reach sqrt2 V (1 +- dV/V / 2)
    assert env.max() == pytest.approx(230 * SQ2 * 1.01, rel=2e-4)
    per_cycle_peak = np.abs(w.data[0][: 50 * 256].reshape(50, 256)).max(axis=1)
    assert per_cycle_peak.min() == pytest.approx(230 * SQ2 * 0.99, rel=5e-4)


def test_rectangular_flicker_changes_per_minute() -> None:
    # IEC 61000-4-15 Table 2 style: 110 changes per minute = a 110/120 Hz square wave
    d = WaveformDesc(samples_per_cycle=64, flicker=Flicker(dv_v_pct=1.0, shape="rect", changes_per_min=110))
    rms = _cycle_rms(generate(d, 60.0).data[0], 64)
    levels = np.where(rms > 230.0, 1, -1)
    changes = np.count_nonzero(np.diff(levels))
    assert changes in (109, 110)  # 110 changes in the minute (the first at t = 0 is not seen)
    steady = rms[np.abs(rms - 230.0) > 0.5]
    np.testing.assert_allclose(np.sort(np.unique(np.round(steady, 6)))[[0, -1]], [230 * 0.995, 230 * 1.005], rtol=1e-9)


def test_dip_on_one_phase_switches_at_a_zero_crossing() -> None:
    d = WaveformDesc(samples_per_cycle=256, events=(Event("dip", 0.1013, 0.1, 50.0, "a"),))
    w = generate(d, 0.4)
    rms_a = _cycle_rms(w.data[0], 256)
    assert rms_a[:5] == pytest.approx([230.0] * 5, rel=1e-9)
    assert rms_a[6:10] == pytest.approx([115.0] * 4, rel=1e-9)
    assert rms_a[12:] == pytest.approx([230.0] * 8, rel=1e-9)
    assert _cycle_rms(w.data[1], 256) == pytest.approx([230.0] * 20, rel=1e-9)
    # the ratio to the undisturbed wave shows where the amplitude changed: at a zero crossing of phase a
    clean = generate(WaveformDesc(samples_per_cycle=256), 0.4).data[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        changed = np.nonzero(~np.isclose(w.data[0], clean, rtol=1e-12, atol=1e-9))[0]
    on, off = changed[0], changed[-1] + 1
    step = 230 * SQ2 * 2 * math.pi / 256  # largest change of the wave between two samples
    assert abs(clean[on]) <= step and abs(clean[off]) <= step
    assert on / 12800 >= 0.1013 and (off - on) / 12800 == pytest.approx(0.1, abs=0.01)


def test_swell_and_interruption_at_a_point_on_wave() -> None:
    d = WaveformDesc(
        samples_per_cycle=360,
        events=(
            Event("swell", 0.05, 0.04, 120.0, "bc", point_on_wave_deg=90.0),
            Event("interruption", 0.2, 0.06, phases="a"),
        ),
    )
    w = generate(d, 0.3)
    clean = generate(WaveformDesc(samples_per_cycle=360), 0.3).data
    ratio_b = w.data[1] / np.where(np.abs(clean[1]) > 1.0, clean[1], np.nan)
    on = int(np.nonzero(np.abs(ratio_b - 1.2) < 1e-9)[0][0])
    # switched at the positive peak of phase b: sin(theta - 120 deg) = 1
    assert clean[1][on] == pytest.approx(230 * SQ2, rel=1e-3)
    assert _cycle_rms(w.data[2], 360)[3] == pytest.approx(276.0, rel=1e-9)
    rms_a = _cycle_rms(w.data[0], 360)
    assert rms_a[11] == pytest.approx(0.0, abs=1e-9) and rms_a[9] == pytest.approx(230.0, rel=1e-9)


def test_chunks_equal_the_whole_signal_sample_for_sample() -> None:
    d = WaveformDesc(
        rate_hz=12800.0,
        frequency_profile=((0.0, 49.8), (0.5, 50.4), (1.0, 50.1)),
        harmonics=(Harmonic(5, 4.0, 10.0),),
        interharmonics=(Interharmonic(217.0, 1.0),),
        flicker=Flicker(1.0, "rect", changes_per_min=1620),
        events=(Event("dip", 0.3, 0.2, 40.0, "ab"),),
        noise=Noise(0.5, 1.0, seed=7),
    )
    whole = generate(d, 1.3).data
    for block_s in (0.0371, 0.02, 0.5):
        parts = list(chunks(d, block_s, 1.3))
        assert parts[1].first_index == parts[0].n_samples
        np.testing.assert_array_equal(np.concatenate([p.data for p in parts], axis=1), whole)
    # the phase is continuous across a boundary: no step larger than the largest sample-to-sample change
    clean = WaveformDesc(rate_hz=12800.0, frequency_hz=50.7)
    a, b = list(chunks(clean, 0.0371, 0.1))[:2]
    jump = abs(b.data[0, 0] - a.data[0, -1])
    assert jump <= 230 * SQ2 * 2 * math.pi * 50.7 / 12800 and jump > 0


def test_endless_chunks_continue_past_any_duration() -> None:
    it = chunks(WaveformDesc(samples_per_cycle=64), 0.1)
    firsts = [next(it).first_index for _ in range(5)]
    assert firsts == [0, 320, 640, 960, 1280]


def test_noise_is_seeded_and_of_the_asked_size() -> None:
    base = WaveformDesc(samples_per_cycle=256)
    noisy = WaveformDesc(samples_per_cycle=256, noise=Noise(v_pct=1.0, i_pct=2.0, seed=3))
    n1 = generate(noisy, 2.0).data - generate(base, 2.0).data
    np.testing.assert_array_equal(n1, generate(noisy, 2.0).data - generate(base, 2.0).data)
    other = WaveformDesc(samples_per_cycle=256, noise=Noise(v_pct=1.0, i_pct=2.0, seed=4))
    assert not np.allclose(n1, generate(other, 2.0).data - generate(base, 2.0).data)
    # 25 600 samples: the sample standard deviation is within ~1.5 % (3 sigma ~ 3 / sqrt(2 n))
    assert np.std(n1[0]) == pytest.approx(0.01 * 230 * SQ2, rel=0.03)
    assert np.std(n1[3]) == pytest.approx(0.02 * 10 * SQ2, rel=0.03)


def test_from_dict_reads_a_toml_table() -> None:
    text = """
    nominal_hz = 60
    samples_per_cycle = 128
    v_rms = [120.0, 121.0, 119.0]
    harmonics = [{order = 5, pct = 3.0}, {order = 7, pct = 2.0, phase_deg = 45}]
    flicker = {dv_v_pct = 0.5, shape = "rect", changes_per_min = 110}
    noise = {v_pct = 0.1, seed = 1}
    [[events]]
    kind = "dip"
    start_s = 0.5
    duration_s = 0.1
    magnitude_pct = 70
    phases = "b"
    """
    d = WaveformDesc.from_dict(tomllib.loads(text))
    assert d == WaveformDesc(
        nominal_hz=60,
        samples_per_cycle=128,
        v_rms=(120.0, 121.0, 119.0),
        harmonics=(Harmonic(5, 3.0), Harmonic(7, 2.0, 45)),
        flicker=Flicker(0.5, "rect", changes_per_min=110),
        noise=Noise(v_pct=0.1, seed=1),
        events=(Event("dip", 0.5, 0.1, 70, "b"),),
    )
    assert d.rate == 7680.0


@pytest.mark.parametrize(
    ("desc", "key", "allowed"),
    [
        ({"rate_hz": 12800, "colour": "red"}, "colour", "one of"),
        ({"rate_hz": 12800, "nominal_hz": 55}, "nominal_hz", "50 or 60"),
        ({"rate_hz": 12800, "samples_per_cycle": 256}, "rate", "exactly one"),
        ({"samples_per_cycle": 4}, "samples_per_cycle", "[8, 65536]"),
        (
            {"rate_hz": 12800, "harmonics": [{"order": 5, "pct": 3}, {"order": 7, "pct": 130}]},
            "harmonics[1].pct",
            "[0.0, 100.0]",
        ),
        ({"rate_hz": 12800, "harmonics": [{"order": 5, "pct": 3, "phase": 1}]}, "harmonics[0].phase", "one of"),
        ({"rate_hz": 1000, "harmonics": [{"order": 11, "pct": 3}]}, "harmonics[0].order", "Nyquist"),
        (
            {"rate_hz": 12800, "flicker": {"dv_v_pct": 1, "freq_hz": 8.8, "changes_per_min": 1}},
            "flicker",
            "exactly one",
        ),
        (
            {"rate_hz": 12800, "flicker": {"dv_v_pct": 1, "shape": "saw", "freq_hz": 8.8}},
            "flicker.shape",
            "sine or rect",
        ),
        (
            {"rate_hz": 12800, "events": [{"kind": "sag", "start_s": 0, "duration_s": 1}]},
            "events[0].kind",
            "dip or swell",
        ),
        (
            {"rate_hz": 12800, "events": [{"kind": "dip", "start_s": 0, "duration_s": 1, "magnitude_pct": 120}]},
            "events[0].magnitude_pct",
            "[0.0, 99.999]",
        ),
        (
            {
                "rate_hz": 12800,
                "events": [{"kind": "dip", "start_s": 0, "duration_s": 1, "magnitude_pct": 50, "phases": "ad"}],
            },
            "events[0].phases",
            "subset",
        ),
        ({"rate_hz": 12800, "events": [{"kind": "dip", "start_s": 0}]}, "events[0]", "required fields"),
        ({"rate_hz": 12800, "frequency_profile": [[0, 50], [0, 51]]}, "frequency_profile[1].t_s", "greater than"),
        ({"rate_hz": 12800, "v_rms": [230, 230]}, "v_rms", "three numbers"),
        ({"rate_hz": 12800, "v_rms": [230, "x", 230]}, "v_rms.b", "finite number"),
        ({"rate_hz": 12800, "noise": {"v_pct": 1, "seed": -1}}, "noise.seed", "non-negative"),
    ],
)
def test_bad_descriptions_name_key_value_and_allowed(desc: dict, key: str, allowed: str) -> None:
    with pytest.raises(DescriptionError) as err:
        WaveformDesc.from_dict(desc)
    assert err.value.key == key
    assert allowed in err.value.allowed
    assert key in str(err.value)


def test_bench_recording_reads_back_with_ours_and_the_peer(tmp_path: Path) -> None:
    d = WaveformDesc(rate_hz=12800.0, harmonics=(Harmonic(5, 4.0),), t0=1_767_225_600.25)  # 2026-01-01 00:00:00.25Z
    w = generate(d, 0.1)
    cfg, _ = write_comtrade(w, tmp_path / "bench", data_format="BINARY")
    rec = ct.read(cfg)
    assert rec.config.start.isoformat() == "2026-01-01T00:00:00.250000"
    assert [c.name for c in rec.config.analog] == ["va", "vb", "vc", "ia", "ib", "ic"]
    tol = np.array([c.a for c in rec.config.analog])[:, None] / 2 * (1 + 1e-9)
    assert (np.abs(rec.analog - w.data) <= tol).all()
    theirs = peer.Comtrade(use_numpy_arrays=True, use_double_precision=True, ignore_warnings=True)
    theirs.load(str(cfg))
    assert (np.abs(np.array(theirs.analog) - w.data) <= tol).all()
