"""IEC 61000-4-15:2010 flickermeter (agent/pq/flicker.py) against the standard's published test points.

Expected values come from the standard's tables, never from the code under test:

- Tables 1a/1b (sinusoidal) and 2a/2b (rectangular), "Normalized flickermeter response": the relative
  voltage change dV/V (peak to peak, % of the r.m.s. value) that gives Pinst max = 1.00 at each
  modulation frequency, per lamp (230 V, 120 V) and system (50 Hz, 60 Hz). Ed. 2.0 allows +-8 %.
- Table 5 "Test specification for flickermeter classifier": rectangular changes per minute and the
  dV/V giving Pst = 1.00. Allowed +-5 %.

The Ed. 2.0 values below were read from M. Sira's (CMI) verify_flicker_sim.m (MIT licence), which
transcribes the tables of Ed. 1 (1997), Ed. 1 + A1 (2003) and Ed. 2 (2010) side by side. Some of them
differ slightly from the Ed. 1 + A1 values quoted in our issue (e.g. Table 5, 1 cpm: 2.715 % in Ed. 2,
2.724 % in Ed. 1 + A1); the Ed. 2 column is used because the implementation follows Ed. 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.pq.flicker import (
    PST_WEIGHTS,
    Flickermeter,
    FlickerError,
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
    if rectangular:  # 50 % duty exactly: sign(sin) would put a rounding-error sample in the wrong half
        m = np.where(np.floor(2 * fm_hz * t + 1e-9) % 2 == 0, 1.0, -1.0)
    else:
        m = np.sin(2 * np.pi * fm_hz * t)
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


@pytest.mark.parametrize("rate_hz", [400.0, 800.0, 3200.0, 12800.0, 1000.0])
def test_reference_point_holds_at_every_supported_rate(rate_hz: float) -> None:
    # 8.8 Hz sinusoidal at 0.250 % (Table 1b, 230 V lamp) reads 1.00; the tight bound (+-1 %) shows the
    # digitisation is not tuned to one rate. 1 kHz is not a multiple of 2 x 50 Hz... it is; 60 Hz below.
    assert pinst_max(rate_hz, 50, 230, 8.8, 0.250, False) == pytest.approx(1.0, abs=0.01)
    if rate_hz >= 480:
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
