"""IEC 61000-4-15:2010 flickermeter (agent/pq/flicker.py) against the standard's published test points.

Expected values come from the standard's tables, never from the code under test:

- Tables 1a/1b (sinusoidal) and 2a/2b (rectangular), "Normalized flickermeter response": the relative
  voltage change dV/V (peak to peak, % of the r.m.s. value) that gives Pinst max = 1.00 at each
  modulation frequency, per lamp (230 V, 120 V) and system (50 Hz, 60 Hz). Ed. 2.0 allows +-8 %.
- Table 5 "Test specification for flickermeter classifier": rectangular changes per minute and the
  dV/V giving Pst = 1.00. Allowed +-5 %.

The Ed. 2.0 values below were read from M. Sira's (CMI) verify_flicker_sim.m (MIT licence), which
transcribes the tables of Ed. 1 (1997), Ed. 1 + A1 (2003) and Ed. 2 (2010) side by side. Some of them
differ slightly from the Ed. 1 + A1 values (e.g. Table 5, 1 cpm: 2.715 % in Ed. 2,
2.724 % in Ed. 1 + A1); the Ed. 2 column is used because the implementation follows Ed. 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.pq.flicker import (
    PST_WEIGHTS,
    FlickerError,
    Flickermeter,
    FlickermeterBank,
    PinstClassifier,
    analyse,
    plt,
    pst,
)

# --- Tables 1a/1b and 2a/2b, IEC 61000-4-15:2010: modulation frequency [Hz] -> dV/V [%] ---------------
_F_SIN = [*np.arange(0.5, 8.01, 0.5), 8.8, *np.arange(9.5, 12.01, 0.5), *range(13, 26)]
_F_RECT = [*np.arange(0.5, 8.01, 0.5), 8.8, *np.arange(9.5, 12.01, 0.5), *range(13, 22), 21.5, *range(22, 26),
           25.5, 28, 30.5]  # fmt: skip
_THIRD = 33 + 1 / 3
SINUSOIDAL = {
    # Table 1b (230 V lamp), 50 Hz system
    (230, 50): dict(zip([*_F_SIN, _THIRD], [
        2.325, 1.397, 1.067, 0.879, 0.747, 0.645, 0.564, 0.497, 0.442, 0.396, 0.357, 0.325, 0.300, 0.280, 0.265,
        0.256, 0.250, 0.254, 0.261, 0.271, 0.283, 0.298, 0.314, 0.351, 0.393, 0.438, 0.486, 0.537, 0.590, 0.646,
        0.704, 0.764, 0.828, 0.894, 0.964, 1.037, 2.128], strict=True)),
    # Table 1a (120 V lamp), 60 Hz system
    (120, 60): dict(zip([*_F_SIN, _THIRD, 40], [
        2.453, 1.465, 1.126, 0.942, 0.815, 0.717, 0.637, 0.570, 0.514, 0.466, 0.426, 0.393, 0.366, 0.346, 0.332,
        0.323, 0.321, 0.329, 0.341, 0.355, 0.373, 0.394, 0.417, 0.469, 0.528, 0.592, 0.660, 0.734, 0.811, 0.892,
        0.977, 1.067, 1.160, 1.257, 1.359, 1.464, 2.570, 4.393], strict=True)),
    # Table 1a (120 V lamp), 50 Hz system
    (120, 50): dict(zip([*_F_SIN, _THIRD], [
        2.453, 1.465, 1.126, 0.942, 0.815, 0.717, 0.637, 0.570, 0.514, 0.466, 0.426, 0.393, 0.366, 0.346, 0.332,
        0.323, 0.321, 0.329, 0.341, 0.355, 0.373, 0.394, 0.417, 0.469, 0.528, 0.592, 0.660, 0.734, 0.811, 0.892,
        0.978, 1.068, 1.162, 1.261, 1.365, 1.476, 3.111], strict=True)),
    # Table 1b (230 V lamp), 60 Hz system
    (230, 60): dict(zip([*_F_SIN, _THIRD, 40], [
        2.325, 1.397, 1.067, 0.879, 0.747, 0.645, 0.564, 0.497, 0.442, 0.396, 0.357, 0.325, 0.300, 0.280, 0.265,
        0.256, 0.250, 0.254, 0.261, 0.271, 0.283, 0.298, 0.314, 0.351, 0.393, 0.438, 0.486, 0.537, 0.590, 0.645,
        0.703, 0.764, 0.826, 0.892, 0.959, 1.029, 1.758, 2.963], strict=True)),
}  # fmt: skip
RECTANGULAR = {
    # Table 2b (230 V lamp), 50 Hz system
    (230, 50): dict(zip([*_F_RECT, _THIRD], [
        0.509, 0.467, 0.429, 0.398, 0.370, 0.352, 0.342, 0.332, 0.312, 0.291, 0.268, 0.248, 0.231, 0.216, 0.207,
        0.199, 0.196, 0.199, 0.203, 0.212, 0.222, 0.233, 0.245, 0.272, 0.308, 0.341, 0.376, 0.411, 0.446, 0.497,
        0.553, 0.585, 0.592, 0.612, 0.680, 0.743, 0.764, 0.806, 0.915, 0.847, 1.671], strict=True)),
    # Table 2a (120 V lamp), 60 Hz system
    (120, 60): dict(zip([*_F_RECT, _THIRD, 37, 40], [
        0.598, 0.548, 0.503, 0.469, 0.439, 0.419, 0.408, 0.394, 0.373, 0.348, 0.324, 0.302, 0.283, 0.269, 0.258,
        0.253, 0.252, 0.258, 0.266, 0.278, 0.292, 0.308, 0.324, 0.367, 0.411, 0.457, 0.509, 0.575, 0.626, 0.688,
        0.746, 0.815, 0.837, 0.851, 0.946, 1.067, 1.088, 1.072, 1.383, 1.602, 1.823, 1.304, 3.451], strict=True)),
    # Table 2a (120 V lamp), 50 Hz system
    (120, 50): dict(zip([*_F_RECT, _THIRD], [
        0.597, 0.547, 0.503, 0.468, 0.438, 0.420, 0.408, 0.394, 0.372, 0.348, 0.323, 0.302, 0.283, 0.269, 0.259,
        0.253, 0.252, 0.258, 0.265, 0.278, 0.293, 0.308, 0.325, 0.363, 0.413, 0.460, 0.511, 0.562, 0.611, 0.683,
        0.768, 0.811, 0.820, 0.852, 0.957, 1.052, 1.087, 1.148, 1.303, 1.144, 2.443], strict=True)),
    # Table 2b (230 V lamp), 60 Hz system
    (230, 60): dict(zip([*_F_RECT, _THIRD, 37, 40], [
        0.510, 0.468, 0.429, 0.399, 0.371, 0.351, 0.342, 0.331, 0.313, 0.291, 0.269, 0.249, 0.231, 0.217, 0.206,
        0.200, 0.196, 0.199, 0.203, 0.212, 0.222, 0.233, 0.244, 0.275, 0.306, 0.338, 0.376, 0.420, 0.457, 0.498,
        0.537, 0.584, 0.600, 0.611, 0.678, 0.753, 0.778, 0.768, 0.962, 1.105, 1.258, 0.975, 2.327], strict=True)),
}  # fmt: skip
# --- Table 5, IEC 61000-4-15:2010: rectangular changes per minute -> dV/V [%] giving Pst = 1.00 ----------
TABLE_5 = {
    (230, 50): {1: 2.715, 2: 2.191, 7: 1.450, 39: 0.894, 110: 0.722, 1620: 0.407, 4000: 2.343},
    (120, 60): {1: 3.181, 2: 2.564, 7: 1.694, 39: 1.040, 110: 0.844, 1620: 0.548, 4800: 4.837},
    (120, 50): {1: 3.178, 2: 2.561, 7: 1.694, 39: 1.045, 110: 0.844, 1620: 0.545, 4000: 3.426},
    (230, 60): {1: 2.719, 2: 2.194, 7: 1.450, 39: 0.895, 110: 0.723, 1620: 0.409, 4800: 3.263},
}
PINST_TOLERANCE = 0.08  # Ed. 2.0: Pinst max = 1.00 +- 8 % at every point of Tables 1 and 2
PST_TOLERANCE = 0.05  # Table 5: Pst = 1.00 +- 5 %


def modulated(rate_hz: float, nominal_hz: int, rms_v: float, fm_hz: float, dv_pct: float, rectangular: bool,
              seconds: float) -> np.ndarray:  # fmt: skip
    """u(t) = sqrt(2) V (1 + dV/V / 2 m(t)) sin(2 pi f t); m a unit sine or square wave (dV/V peak to peak)."""
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    # rectangular: 50 % duty exactly (sign(sin) would put a rounding-error sample in the wrong half)
    square = np.where(np.floor(2 * fm_hz * t + 1e-9) % 2 == 0, 1.0, -1.0)
    m = square if rectangular else np.sin(2 * np.pi * fm_hz * t)
    return math.sqrt(2) * rms_v * (1 + dv_pct / 200 * m) * np.sin(2 * np.pi * nominal_hz * t)


def pinst_max(rate_hz: float, nominal_hz: int, lamp_v: int, fm_hz: float, dv_pct: float, rectangular: bool) -> float:
    """Pinst max over 8 s after 6 s of settling (3 periods of the slowest test modulation, 0.5 Hz)."""
    meter = Flickermeter(rate_hz, nominal_hz, lamp_v)
    out = meter.process(modulated(rate_hz, nominal_hz, lamp_v, fm_hz, dv_pct, rectangular, 14.0))
    return float(out[round(6.0 * meter.output_rate_hz) :].max())


def _points(table: dict) -> list:
    return [pytest.param(key, f, dv, id=f"{key[0]}V-{key[1]}Hz-{f:.2f}Hz") for key, row in table.items() for f, dv in row.items()]  # fmt: skip


# (a) Pinst: every row of Tables 1a/1b and 2a/2b, both lamps, both systems, at 1.6 kHz --------------------
@pytest.mark.parametrize(("key", "fm_hz", "dv_pct"), _points(SINUSOIDAL))
def test_pinst_max_sinusoidal_table_1(key: tuple[int, int], fm_hz: float, dv_pct: float) -> None:
    lamp_v, nominal_hz = key
    assert pinst_max(1600.0, nominal_hz, lamp_v, fm_hz, dv_pct, False) == pytest.approx(1.0, abs=PINST_TOLERANCE)


@pytest.mark.parametrize(("key", "fm_hz", "dv_pct"), _points(RECTANGULAR))
def test_pinst_max_rectangular_table_2(key: tuple[int, int], fm_hz: float, dv_pct: float) -> None:
    # 6.4 kHz, not 1.6 kHz: the table's dips (37 Hz on 60 Hz, 30.5 Hz on 50 Hz) come from the 3rd
    # harmonic of the square wave beating with 2 x f_nominal into the 9 Hz band; at 1.6 kHz the edges
    # of a 37 Hz square wave snap to the sample grid, which changes that harmonic (Pinst max 0.85).
    lamp_v, nominal_hz = key
    assert pinst_max(6400.0, nominal_hz, lamp_v, fm_hz, dv_pct, True) == pytest.approx(1.0, abs=PINST_TOLERANCE)


@pytest.mark.parametrize("rate_hz", [800.0, 1000.0, 1100.0, 3200.0, 10240.0, 12800.0])
def test_reference_point_reads_one_at_every_rate(rate_hz: float) -> None:
    # 8.8 Hz sinusoidal at 0.250 % (Table 1b, 230 V lamp) and 0.321 % (Table 1a, 120 V lamp) read 1.00
    # within 1 %, also where a half period is not a whole number of samples (1 kHz, 1.1 kHz, 10.24 kHz
    # at 60 Hz): Block 1 integrates between exact half-period boundaries.
    assert pinst_max(rate_hz, 50, 230, 8.8, 0.250, False) == pytest.approx(1.0, abs=0.01)
    assert pinst_max(rate_hz, 60, 120, 8.8, 0.321, False) == pytest.approx(1.0, abs=0.01)


# (b) Pst: Table 5 at 800 Hz, 10 min after 20 s of settling ---------------------------------------------
@pytest.mark.parametrize(
    ("key", "cpm", "dv_pct"),
    [pytest.param(key, cpm, dv, id=f"{key[0]}V-{key[1]}Hz-{cpm}cpm") for key, row in TABLE_5.items() for cpm, dv in row.items()],
)  # fmt: skip
def test_pst_table_5(key: tuple[int, int], cpm: int, dv_pct: float) -> None:
    lamp_v, nominal_hz = key
    rate_hz, settle_s = 800.0, 20.0
    u = modulated(rate_hz, nominal_hz, lamp_v, cpm / 120.0, dv_pct, True, settle_s + 600.0)
    meter = Flickermeter(rate_hz, nominal_hz, lamp_v)
    split = round(settle_s * rate_hz)
    meter.process(u[:split])
    meter.reset_interval()
    for chunk in np.array_split(u[split:], 7):  # streamed in uneven chunks
        meter.process(chunk)
    assert meter.pst_10min() == pytest.approx(1.0, abs=PST_TOLERANCE)


@pytest.mark.parametrize(("nominal_hz", "carrier_hz", "lamp_v", "dv_pct"), [
    (50, 47.5, 230, 0.250), (50, 52.5, 230, 0.250), (60, 58.8, 120, 0.321), (60, 61.2, 120, 0.321),
])  # fmt: skip
def test_reference_point_off_nominal_frequency(nominal_hz: int, carrier_hz: float, lamp_v: int, dv_pct: float) -> None:
    # Block 1's half-period windows are timed from the nominal frequency; off nominal they slip over the
    # waveform, and the 27.3 s smoothing must keep that out of Pinst (here within 1 %, at -5 % .. +5 %).
    t = np.arange(round(14.0 * 1600.0)) / 1600.0
    u = math.sqrt(2) * lamp_v * (1 + dv_pct / 200 * np.sin(2 * np.pi * 8.8 * t)) * np.sin(2 * np.pi * carrier_hz * t)
    meter = Flickermeter(1600.0, nominal_hz, lamp_v)
    assert meter.process(u)[round(6.0 * meter.output_rate_hz) :].max() == pytest.approx(1.0, abs=0.01)


# Block 1: the reference follows a step with the 27.3 s time constant -----------------------------------
def test_reference_follows_a_voltage_step_with_27_3_s_time_constant() -> None:
    rate_hz = 1000.0
    meter = Flickermeter(rate_hz, 50, 230)
    meter.process(modulated(rate_hz, 50, 230.0, 1.0, 0.0, False, 5.0))
    assert meter.reference_v == pytest.approx(230.0, rel=1e-4)
    meter.process(modulated(rate_hz, 50, 253.0, 1.0, 0.0, False, 27.3))  # +10 % step
    # first-order response after one time constant: 1 - 1/e of the step (one half period of lag)
    assert meter.reference_v == pytest.approx(230.0 + 23.0 * (1 - math.exp(-1)), abs=0.05)


# Block 3: the digital filters against the standard's analog transfer functions -------------------------
@pytest.mark.parametrize("lamp_v", [230, 120])
def test_digital_block_3_follows_the_analog_filters(lamp_v: int) -> None:
    # F(s) = k w1 s / (s^2 + 2 lambda s + w1^2) * (1 + s/w2) / ((1 + s/w3)(1 + s/w4)), coefficients typed
    # here from the standard's clause 5 table, evaluated with numpy, times the 0.05 Hz high-pass and the
    # analog 6th-order Butterworth. Bound: 1 % of gain up to 25 Hz at the slowest processing rate (800 Hz).
    from scipy import signal

    k, lam, f1, f2, f3, f4 = {
        230: (1.74802, 4.05981, 9.15494, 2.27979, 1.22535, 21.9),
        120: (1.6357, 4.167375, 9.077169, 2.939902, 1.394468, 17.31512),
    }[lamp_v]
    w = [2 * np.pi * f for f in (lam, f1, f2, f3, f4)]
    b_bw, a_bw = signal.butter(6, 2 * np.pi * 35.0, analog=True)
    meter = Flickermeter(800.0, 50, lamp_v)
    for f in (0.5, 2.0, 8.8, 15.0, 25.0):
        s = 2j * np.pi * f
        weight = k * w[1] * s / (s**2 + 2 * w[0] * s + w[1] ** 2) * (1 + s / w[2]) / ((1 + s / w[3]) * (1 + s / w[4]))
        analog = abs(weight * s / (s + 2 * np.pi * 0.05) * np.polyval(b_bw, s) / np.polyval(a_bw, s))
        digital = 1.0
        for sos in (meter._sos_lp, meter._sos_hp, meter._sos_weight):
            digital *= abs(signal.sosfreqz(sos, worN=[f], fs=800.0)[1][0])
        assert digital == pytest.approx(analog, rel=0.01), f


# Block 5: classifier, Pst and Plt by hand ------------------------------------------------------------
def _pst_by_hand(pinst: np.ndarray) -> float:
    """Pst with exact percentiles (numpy, no classes) and the weights typed from the standard's formula."""

    def p(x: float) -> float:
        return float(np.percentile(pinst, 100.0 - x))

    p1s = (p(0.7) + p(1) + p(1.5)) / 3
    p3s = (p(2.2) + p(3) + p(4)) / 3
    p10s = (p(6) + p(8) + p(10) + p(13) + p(17)) / 5
    p50s = (p(30) + p(50) + p(80)) / 3
    return math.sqrt(0.0314 * p(0.1) + 0.0525 * p1s + 0.0657 * p3s + 0.28 * p10s + 0.08 * p50s)


def test_pst_of_constant_pinst_is_sqrt_of_the_weight_sum() -> None:
    # every percentile equals the constant: Pst = sqrt(0.5096 * Pinst)
    assert pst(np.full(1000, 2.0)) == pytest.approx(math.sqrt(0.5096 * 2.0), rel=1e-3)


def test_classifier_matches_exact_percentiles() -> None:
    # The log classes (8192 over 1e-6..1e5, 0.3 % wide) with interpolation inside a class agree with
    # numpy's exact percentiles within 0.1 % on a spread-out Pinst distribution (a 10-min interval's
    # worth of samples: with fewer, the sparse 0.1 % tail makes both estimates differ by the sample gaps).
    rng = np.random.default_rng(5)
    pinst = rng.lognormal(mean=-1.0, sigma=1.0, size=480_000)  # 10 min at 800 Hz
    assert PinstClassifier.CLASSES >= 1024
    assert pst(pinst) == pytest.approx(_pst_by_hand(pinst), rel=1e-3)
    classifier = PinstClassifier()
    classifier.add(pinst)
    for x in (0.1, 1.0, 10.0, 50.0, 80.0):
        assert classifier.level_exceeded(x) == pytest.approx(np.percentile(pinst, 100 - x), rel=3e-3)


def test_classifier_underflow_and_overflow_classes() -> None:
    classifier = PinstClassifier()
    classifier.add(np.array([0.0] * 98 + [1e9] * 2))
    assert classifier.level_exceeded(1.0) == PinstClassifier.HIGH  # 2 % of the time above the range
    assert classifier.level_exceeded(50.0) == 0.0


def test_weights_are_the_standards() -> None:
    assert PST_WEIGHTS == (0.0314, 0.0525, 0.0657, 0.28, 0.08)


def test_plt_is_the_cube_root_of_the_mean_cube() -> None:
    assert plt([1.0] * 11 + [2.0]) == pytest.approx((19 / 12) ** (1 / 3), rel=1e-12)
    assert plt([0.5] * 12) == pytest.approx(0.5, rel=1e-12)
    values = [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 0.3, 0.5, 0.7, 0.9, 1.1, 1.3]
    assert Flickermeter.plt(values) == pytest.approx((sum(v**3 for v in values) / 12) ** (1 / 3), rel=1e-12)


# Streaming -----------------------------------------------------------------------------------------------
def test_chunked_processing_equals_one_pass() -> None:
    rate_hz = 1100.0  # 9.17 samples per half period at 60 Hz: chunks cut half periods anywhere
    u = modulated(rate_hz, 60, 120.0, 7.0, 0.5, True, 6.0)
    whole = Flickermeter(rate_hz, 60, 120).process(u)
    meter = Flickermeter(rate_hz, 60, 120)
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.choice(np.arange(1, u.size), size=300, replace=False))
    parts = [meter.process(c) for c in np.split(u, cuts)]
    assert np.concatenate(parts) == pytest.approx(whole, rel=1e-9, abs=1e-12)
    assert meter.process(np.empty(0)).size == 0


def test_decimated_output_rate() -> None:
    meter = Flickermeter(12800.0, 50, 230)
    assert (meter.decimation, meter.output_rate_hz) == (16, 800.0)
    assert meter.process(modulated(12800.0, 50, 230.0, 8.8, 0.25, False, 1.0)).size == 800


def test_pst_10min_needs_ten_minutes() -> None:
    meter = Flickermeter(800.0, 50, 230)
    meter.process(modulated(800.0, 50, 230.0, 8.8, 0.25, False, 60.0))
    with pytest.raises(FlickerError) as err:
        meter.pst_10min()
    assert err.value.key == "interval_s" and err.value.value == pytest.approx(60.0)


def test_analyse_reports_pinst_max_pst_and_plt() -> None:
    # 2 h of Table 5's 110 cpm point (0.722 %, 230 V lamp): every Pst and the Plt read 1.00 +- 5 %.
    rate_hz = 800.0
    u = modulated(rate_hz, 50, 230.0, 110 / 120, 0.722, True, 10.0 + 7200.0)
    result = analyse(u, rate_hz, 50, 230, settle_s=10.0)
    assert len(result["pst"]) == 12
    assert result["pst"] == pytest.approx([1.0] * 12, abs=PST_TOLERANCE)
    assert result["plt"] == pytest.approx([1.0], abs=PST_TOLERANCE)
    assert result["pinst_max"] > 1.0  # rectangular steps overshoot the mean


def test_analyse_of_a_short_record() -> None:
    u = modulated(1600.0, 50, 230.0, 8.8, 0.25, False, 12.0)
    result = analyse(u, 1600.0, 50, 230, settle_s=6.0)
    assert result["pinst_max"] == pytest.approx(1.0, abs=0.01)  # Table 1b reference point
    assert (result["pst"], result["plt"]) == ([], [])
    assert analyse(u, 1600.0, settle_s=20.0)["pinst_max"] is None  # nothing after settling


# Cross-check with pqopen-lib (230 V lamp only; it has no 120 V lamp) --------------------------------------
def test_pst_agrees_with_pqopen() -> None:
    # pqopen's VoltageFluctuation fed as pqopen's own PowerSystem feeds it: blocks of 10 periods with
    # their 20 half-period r.m.s. values. A signal that is no table point: three fluctuations at once.
    from pqopen.powerquality import VoltageFluctuation

    rate_hz, settle_s = 2000.0, 40.0
    t = np.arange(round((settle_s + 600.0) * rate_hz)) / rate_hz
    env = 1 + 0.002 * np.sin(2 * np.pi * 6.3 * t) + 0.004 * np.sign(np.sin(2 * np.pi * 0.35 * t))
    env += 0.001 * np.sin(2 * np.pi * 17.0 * t) * (t % 90 < 30)
    u = math.sqrt(2) * 230.0 * env * np.sin(2 * np.pi * 50.0 * t)
    peer = VoltageFluctuation(samplerate=rate_hz, nominal_volt=230, nominal_freq=50)
    block, half = 400, 20
    for start in range(0, u.size - block + 1, block):
        raw = u[start : start + block]
        peer.process(start, np.sqrt(np.mean(raw.reshape(-1, half) ** 2, axis=1)), raw)
    first, last = round(settle_s * rate_hz), u.size
    theirs = peer.calc_pst(first, last)
    meter = Flickermeter(rate_hz, 50, 230)
    meter.process(u[:first])
    meter.reset_interval()
    meter.process(u[first:])
    ours = meter.pst_10min()
    assert 0.5 < theirs < 5.0  # the signal flickers visibly, the comparison means something
    assert ours == pytest.approx(theirs, rel=0.01)


# Errors --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"rate_hz": 799.0}, "rate_hz"),
        ({"rate_hz": float("nan")}, "rate_hz"),
        ({"rate_hz": "12800"}, "rate_hz"),
        ({"rate_hz": True}, "rate_hz"),
        ({"nominal_hz": 55}, "nominal_hz"),
        ({"nominal_hz": True}, "nominal_hz"),
        ({"lamp_v": 240}, "lamp_v"),
        ({"lamp_v": "230"}, "lamp_v"),
    ],
)
def test_bad_parameters_name_key_value_and_allowed(kwargs: dict, key: str) -> None:
    args = {"rate_hz": 1600.0, "nominal_hz": 50, "lamp_v": 230} | kwargs
    with pytest.raises(FlickerError) as err:
        Flickermeter(**args)
    assert isinstance(err.value, ValueError)
    assert err.value.key == key
    assert key in str(err.value) and "allowed" in str(err.value)
    assert repr(kwargs[key]) in str(err.value)


@pytest.mark.parametrize("samples", [np.zeros((2, 10)), np.array([1.0, np.nan]), np.array([np.inf])])
def test_bad_samples(samples: np.ndarray) -> None:
    with pytest.raises(FlickerError) as err:
        Flickermeter(1600.0).process(samples)
    assert err.value.key == "samples_v"


@pytest.mark.parametrize("pinst", [np.array([]), np.array([1.0, -0.1]), np.array([np.nan]), np.ones((2, 2))])
def test_bad_pinst(pinst: np.ndarray) -> None:
    with pytest.raises(FlickerError) as err:
        pst(pinst)
    assert err.value.key == "pinst"


@pytest.mark.parametrize("values", [[1.0] * 11, [1.0] * 13, [1.0] * 11 + [-1.0], [1.0] * 11 + [float("nan")]])
def test_bad_plt_input(values: list[float]) -> None:
    with pytest.raises(FlickerError) as err:
        plt(values)
    assert err.value.key == "pst_values" and "12" in err.value.allowed


def test_empty_classifier_and_bad_analyse_arguments() -> None:
    with pytest.raises(FlickerError) as err:
        PinstClassifier().level_exceeded(1.0)
    assert err.value.key == "pinst"
    with pytest.raises(FlickerError) as err:
        analyse(np.zeros(1000), 1600.0, settle_s=-1.0)
    assert err.value.key == "settle_s"
    with pytest.raises(FlickerError) as err:
        analyse(np.zeros((2, 1000)), 1600.0)
    assert err.value.key == "samples_v"


# --- FlickermeterBank: every channel in one pass, each the same as a meter of its own ----------------------

U_PEAK_TEST = 230.0 * math.sqrt(2)


@pytest.mark.parametrize("rate_hz", [12800.0, 4096.0, 1000.0])
def test_bank_channels_equal_one_channel_meters(rate_hz: float) -> None:
    # Four different channels (a 3.3 Hz fluctuation, a step, a DC offset, noise), fed in uneven blocks:
    # the bank's rows are bit for bit the Pinst and references of four separate meters.
    rng = np.random.default_rng(7)
    t = np.arange(round(8.0 * rate_hz)) / rate_hz
    base = U_PEAK_TEST * np.sin(2 * np.pi * 50.0 * t)
    x = np.vstack([
        base * (1 + 0.01 * np.sin(2 * np.pi * 3.3 * t)),
        base * np.where(t < 4.0, 1.0, 1.02),
        base + 5.0,
        base + rng.normal(0, 2.0, t.size),
    ])  # fmt: skip
    bank = FlickermeterBank(rate_hz, 50, 230, channels=4)
    meters = [Flickermeter(rate_hz, 50, 230) for _ in range(4)]
    cuts = [0, 17, 1001, round(1.3 * rate_hz), round(2.0 * rate_hz), round(5.5 * rate_hz), t.size]
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        rows = bank.process(x[:, a:b])
        for k, meter in enumerate(meters):
            np.testing.assert_array_equal(rows[k], meter.process(x[k, a:b]))
    assert bank.reference_v is not None
    assert list(bank.reference_v) == [m.reference_v for m in meters]
    assert [bank.interval_s(k) for k in range(4)] == [m.interval_s for m in meters]


def test_bank_pst_per_channel_equals_one_channel_meters() -> None:
    # 10 min of two channels at the lowest rate: the Pst read through each channel's view is the one-channel
    # meter's, and reading one channel leaves the other's interval running.
    rate = 1000.0
    t = np.arange(round(610.0 * rate)) / rate
    base = U_PEAK_TEST * np.sin(2 * np.pi * 50.0 * t)
    x = np.vstack([base * (1 + 0.003 * np.sign(np.sin(2 * np.pi * 4.0 * t))), base * (1 + 0.001 * np.sin(t))])
    bank = FlickermeterBank(rate, 50, 230, channels=2)
    meters = [Flickermeter(rate, 50, 230) for _ in range(2)]
    split = round(10.0 * rate)
    bank.process(x[:, :split])
    bank.reset_interval()
    for k, m in enumerate(meters):
        m.process(x[k, :split])
        m.reset_interval()
    for a in range(split, t.size, 77_777):
        bank.process(x[:, a : a + 77_777])
        for k, m in enumerate(meters):
            m.process(x[k, a : a + 77_777])
    first, second = bank.channel(0), bank.channel(1)
    assert first.interval_s == pytest.approx(600.0)
    assert first.pst_10min() == meters[0].pst_10min()
    assert first.interval_s == 0.0 and second.interval_s == pytest.approx(600.0)
    assert second.pst_10min() == meters[1].pst_10min()


def test_bank_rejects_what_it_cannot_use() -> None:
    bank = FlickermeterBank(1600.0, 50, 230, channels=3)
    with pytest.raises(FlickerError) as err:
        bank.process(np.zeros((2, 100)))
    assert err.value.key == "samples_v"
    with pytest.raises(FlickerError):
        bank.process(np.full((3, 10), np.nan))
    with pytest.raises(FlickerError) as err:
        bank.channel(3)
    assert err.value.key == "channel"
    for bad in (0, True, 1.5):
        with pytest.raises(FlickerError) as err:
            FlickermeterBank(1600.0, 50, 230, channels=bad)  # type: ignore[arg-type]
        assert err.value.key == "channels"


def test_bank_classifies_as_pinst_classifier_at_the_edges() -> None:
    # Underflow (0, below LOW), LOW itself, class edges, HIGH and above (overflow), per channel.
    edges = 10.0 ** (math.log10(PinstClassifier.LOW) + np.arange(0, PinstClassifier.CLASSES + 1, 512) * 15 / 8192)
    row = np.concatenate([[0.0, 1e-9, PinstClassifier.LOW, 1.0, PinstClassifier.HIGH, 1e7], edges, edges * 1.0001])
    pinst = np.vstack([row, row[::-1] * 0.5])
    bank = FlickermeterBank(1600.0, 50, 230, channels=2)
    bank._classify(pinst)
    for k in range(2):
        ref = PinstClassifier()
        ref.add(np.maximum(pinst[k], 0.0))
        np.testing.assert_array_equal(bank._counts[k], ref.counts)
