"""Harmonics and interharmonics of sampled voltages after IEC 61000-4-7:2002+A1:2008.

The chain of one measurement window (clause 4.4.1 of IEC 61000-4-7; clause 5.2 of IEC 61000-4-30):

1. Window: 10 cycles of the fundamental at 50 Hz, 12 at 60 Hz (~200 ms), rectangular, contiguous.
2. Synchronisation: the window spans exactly 10/12 *measured* cycles. The cycles come from the positive
   zero crossings of the fundamental of the reference channel (:class:`FundamentalZeroCrossings`); the
   window's ``[start, start + N cycles]`` interval is resampled onto ``M = N * round(rate / nominal)``
   equidistant points by a cubic spline (``scipy.interpolate.CubicSpline``, not-a-knot, over the raw
   samples plus 4 either side). Measured at 12.8 kHz and 49.5 Hz: amplitude error of the resampled
   window -3e-7 at the 5th harmonic, -2e-4 at the 25th, -4.2e-3 at the 50th (2.5 kHz, 5.1 samples per
   period), well inside the 5 % of reading of Class I (IEC 61000-4-7 Table 1).
3. DFT of the M points: bin k is at ``k * f / N`` (5 Hz at 50 Hz), its RMS value ``C_k``.
4. Grouping (clause 5.5 and 5.6): harmonic subgroups, harmonic groups, centred interharmonic subgroups, THDS.

All arrays are ``[channels, ...]``; values are RMS volts unless the name says ``_pct`` (percent of the
fundamental subgroup, index 1).

References
----------
[1] IEC 61000-4-7:2002+A1:2008, General guide on harmonics and interharmonics measurements.
[2] IEC 61000-4-30:2015, Power quality measurement methods.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent.pq.errors import PqInputError

# IEC 61000-4-7 4.4.1 and IEC 61000-4-30 5.2: the window is 10 cycles at 50 Hz, 12 cycles at 60 Hz.
WINDOW_CYCLES = {50.0: 10, 60.0: 12}
MAX_ORDER = 50  # highest harmonic order measured: IEC 61000-4-30 5.8 (Class A) asks up to the 50th
_SPLINE_MARGIN = 4  # raw samples either side of the window given to the spline

# Fundamental filter for the zero crossings (ours, not the standard's): Butterworth band-pass, 3rd order
# per edge, edges nominal/1.4 and nominal*1.4 so the geometric centre is the nominal frequency (zero phase
# there). Gain at 50 Hz nominal: 1.0 at 49.5-50.5 Hz; 3rd harmonic 0.017, 137.5 Hz 0.03; DC 0.
ZC_FILTER_ORDER = 3
ZC_FILTER_WIDTH = 1.4


def window_cycles(nominal_hz: float) -> int:
    """Cycles in one measurement window: 10 at 50 Hz, 12 at 60 Hz (IEC 61000-4-7 4.4.1, IEC 61000-4-30 5.2)."""
    cycles = WINDOW_CYCLES.get(float(nominal_hz))
    if cycles is None:
        raise PqInputError(f"nominal_hz={nominal_hz!r}: allowed 50.0 or 60.0")
    return cycles


def as_channels(samples_v: np.ndarray, name: str = "samples_v") -> np.ndarray:
    """``samples_v`` as a float64 ``[channels, n]`` array (a 1-D array is one channel)."""
    arr = np.asarray(samples_v, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise PqInputError(f"{name}: shape {arr.shape}: allowed [channels, samples] with channels >= 1")
    if not np.all(np.isfinite(arr)):
        raise PqInputError(f"{name}: contains NaN or inf: allowed finite values")
    return arr


def samples_per_window(rate_hz: float, nominal_hz: float, max_order: int = MAX_ORDER) -> int:
    """M, the fixed number of points of a synchronised window: cycles * round(rate / nominal).

    The groups of ``max_order`` need bins up to ``(max_order + 1/2) * N`` (clause 5.5.1), so at least
    ``2 * max_order + 1`` points per cycle.
    """
    cycles = window_cycles(nominal_hz)
    if not (math.isfinite(rate_hz) and rate_hz > 0):
        raise PqInputError(f"rate_hz={rate_hz!r}: allowed a finite rate > 0")
    if not (isinstance(max_order, int) and 1 <= max_order <= 100):
        raise PqInputError(f"max_order={max_order!r}: allowed an integer 1..100")
    per_cycle = round(rate_hz / nominal_hz)
    if per_cycle < 2 * max_order + 1:
        raise PqInputError(
            f"rate_hz={rate_hz!r}: allowed >= {(2 * max_order + 1) * nominal_hz:g} Hz for max_order={max_order}"
            f" at {nominal_hz:g} Hz (the groups reach order {max_order} + 1/2)"
        )
    return cycles * per_cycle


def max_order_for(rate_hz: float, nominal_hz: float) -> int:
    """Highest harmonic order a sample rate can measure: the largest h with ``(2 h + 1) * nominal_hz < rate_hz``,
    at most :data:`MAX_ORDER`.

    The harmonic group of order h (IEC 61000-4-7 5.5.1, eq. 8) takes the DFT bins up to ``(h + 1/2) * f``, so
    that frequency must lie below the Nyquist frequency ``rate_hz / 2`` of the samples; the same bound
    :func:`harmonic_window` checks at the measured frequency. Counting the points per cycle after rounding
    (``round(rate / nominal)``) would claim one order too many where the rounding goes up: 1600 Hz at 60 Hz
    holds 26.67 samples per cycle, and order 13's group would reach 810 Hz, above the 800 Hz Nyquist frequency.

    Parameters
    ----------
    rate_hz : float
        Sampling rate [Hz].
    nominal_hz : float
        Nominal frequency, 50 or 60 [Hz].

    Raises
    ------
    PqInputError
        When not even the fundamental's group fits (``rate_hz <= 3 * nominal_hz``).
    """
    window_cycles(nominal_hz)
    if not (math.isfinite(rate_hz) and rate_hz > 3 * nominal_hz):
        raise PqInputError(
            f"rate_hz={rate_hz!r}: allowed > {3 * nominal_hz:g} Hz at {nominal_hz:g} Hz (the harmonic group of "
            f"order 1 reaches 1.5 x nominal, which must lie below half the rate)"
        )
    return min(MAX_ORDER, math.ceil(rate_hz / nominal_hz / 2 - 0.5) - 1)


def harmonics_pct(subgroup_v: np.ndarray) -> np.ndarray:
    """Harmonic subgroups of orders 2..H in % of the fundamental subgroup G_sg,1 (IEC 61000-4-7 5.6) [%].

    ``subgroup_v`` is ``[channels, H + 1]`` (orders 0..H, as :func:`harmonic_subgroups_v` gives them); the
    result is ``[channels, H - 1]``, NaN where the fundamental subgroup is zero.
    """
    g = np.asarray(subgroup_v, dtype=np.float64)
    return _pct_of_fundamental(g[:, 2:], g[:, 1])


def synchronised_window_v(samples_v: np.ndarray, start_pos: float, length_samples: float, points: int) -> np.ndarray:
    """Resample ``[start_pos, start_pos + length_samples)`` (in samples of ``samples_v``) onto ``points`` points.

    IEC 61000-4-7 4.4.1 asks the window to hold an integer number of fundamental cycles; this is the
    resampling way of meeting it. Cubic spline over the raw samples around the window (error figures in the
    module docstring). The raw samples must cover the window plus one sample each side.
    """
    x = as_channels(samples_v)
    n = x.shape[1]
    if start_pos < 0 or start_pos + length_samples > n - 1 or length_samples <= 0:
        raise PqInputError(
            f"window [{start_pos:.3f}, {start_pos + length_samples:.3f}] samples: allowed inside [0, {n - 1}]"
        )
    lo = max(int(math.floor(start_pos)) - _SPLINE_MARGIN, 0)
    hi = min(int(math.ceil(start_pos + length_samples)) + _SPLINE_MARGIN + 1, n)
    where = start_pos + np.arange(points) * (length_samples / points)
    return _spline_on_samples(x, lo, hi, where)


def _spline_on_samples(x: np.ndarray, lo: int, hi: int, where: np.ndarray) -> np.ndarray:
    """The not-a-knot cubic spline through the samples ``x[:, lo:hi]`` (knots at the sample positions) at ``where``.

    The values of ``scipy.interpolate.CubicSpline(np.arange(lo, hi), x[:, lo:hi], axis=1)(where)``, computed step
    for step as it computes them (the slopes system solved by LAPACK ``gtsv``, the tridiagonal solver
    ``scipy.linalg.solve_banded`` calls; the Hermite coefficients; the power sum of each point), with the knot
    spacing of 1 written in (multiplying or dividing by 1.0 is exact). What is left out is its input checking,
    its general knot handling and its interval search (the interval of a point is its integer part here).
    ``where`` must lie in ``[lo, hi - 1]``; ``hi - lo >= 4``.
    """
    global _gtsv
    n = hi - lo
    y = x[:, lo:hi]  # [channels, n]: the element-wise steps give the same values in either layout
    slope = np.diff(y, axis=1)
    b = np.empty((y.shape[0], n))  # right-hand side of the slopes system, one row per channel
    b[:, 1:-1] = 3 * (slope[:, :-1] + slope[:, 1:])
    b[:, 0] = (5.0 * slope[:, 0] + slope[:, 1]) / 2.0  # not-a-knot at the start
    b[:, -1] = (slope[:, -2] + 5.0 * slope[:, -1]) / 2.0  # and at the end
    diag = np.full(n, 4.0)
    diag[0] = diag[-1] = 1.0
    upper = np.ones(n - 1)
    upper[0] = 2.0
    lower = np.ones(n - 1)
    lower[-1] = 2.0
    if _gtsv is None:
        from scipy.linalg import get_lapack_funcs  # here: the agent validates [[waveforms]] without scipy (~65 MB)

        _gtsv = get_lapack_funcs(("gtsv",), (diag, b))[0]
    *_, d, info = _gtsv(lower, diag, upper, b.T, True, True, True, True)  # b.T: [n, channels], column-major
    if info != 0:
        raise PqInputError(f"spline through samples {lo}..{hi}: LAPACK gtsv info={info}")
    d = d.T
    i = np.minimum(np.floor(where).astype(np.int64) - lo, n - 2)  # interval of each point
    s = where - (lo + i).astype(np.float64)
    s2 = s * s
    s3 = s2 * s
    d0 = np.take(d, i, axis=1)
    slope0 = np.take(slope, i, axis=1)
    t0 = d0 + np.take(d, i + 1, axis=1) - 2 * slope0  # CubicSpline's t of the intervals used
    # c3 + c2 s + c1 s^2 + c0 s^3 with c0 = t, c1 = slope - d0 - t, c2 = d0, c3 = y, in CubicSpline's order
    out = np.take(y, i, axis=1) + d0 * s
    out += (slope0 - d0 - t0) * s2
    out += t0 * s3
    return out


_gtsv = None  # LAPACK's tridiagonal solver, looked up on first use


def rms_between_v(samples_v: np.ndarray, start_pos: float, end_pos: float) -> np.ndarray:
    """RMS of each channel over ``[start_pos, end_pos]`` (fractional sample positions) [V].

    The squared signal is integrated by its cumulative sum, linearly interpolated at the fractional ends,
    so the interval can hold a non-integer number of samples (IEC 61000-4-30 5.2 over exact cycles).
    """
    x = as_channels(samples_v)
    if not 0 <= start_pos < end_pos <= x.shape[1]:
        raise PqInputError(f"interval [{start_pos}, {end_pos}]: allowed 0 <= start < end <= {x.shape[1]}")
    return _rms_between(x, start_pos, end_pos)


def _rms_between(x: np.ndarray, start_pos: float, end_pos: float) -> np.ndarray:
    """:func:`rms_between_v` of checked input. The cumulative sum stops after the interval: a running sum's
    first values do not depend on what follows, so the result is the same as over all of ``x``."""
    x = x[:, : min(x.shape[1], math.ceil(end_pos) + 1)]
    cum = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x * x, axis=1)], axis=1)
    idx = np.arange(cum.shape[1], dtype=np.float64)
    ends = np.array([start_pos, end_pos])
    energy = np.array([np.interp(ends, idx, row) for row in cum])
    return np.sqrt(np.maximum(energy[:, 1] - energy[:, 0], 0.0) / (end_pos - start_pos))


def dft_bins_v(window_v: np.ndarray) -> np.ndarray:
    """RMS complex amplitude of each DFT bin of a window (IEC 61000-4-7 4.4.1, eq. 2 and 3) [V].

    ``C_k = sqrt(2) |X_k| / M`` for k >= 1, ``C_0 = |X_0| / M`` (the DC value). Bin k is at ``k * f / N``.
    """
    return _dft_bins(as_channels(window_v, "window_v"))


def _dft_bins(x: np.ndarray) -> np.ndarray:
    bins = np.fft.rfft(x, axis=1) / x.shape[1]
    bins[:, 1:] *= math.sqrt(2.0)
    return bins


def harmonic_subgroups_v(bins_v: np.ndarray, cycles: int, max_order: int = MAX_ORDER) -> np.ndarray:
    """Harmonic subgroups G_sg,h for h = 0..max_order (IEC 61000-4-7 5.6, eq. 9) [V].

    ``G_sg,h = sqrt(sum_{i=-1..1} C_{hN+i}^2)``: the bin at the harmonic and its two neighbours. Index 0 is
    the DC bin alone.
    """
    return _subgroups(np.abs(bins_v) ** 2, cycles, max_order)


def _subgroups(c2: np.ndarray, cycles: int, max_order: int) -> np.ndarray:
    centres = np.arange(1, max_order + 1) * cycles
    sub = np.sqrt(c2[:, centres - 1] + c2[:, centres] + c2[:, centres + 1])
    return np.concatenate([np.sqrt(c2[:, :1]), sub], axis=1)


def harmonic_groups_v(bins_v: np.ndarray, cycles: int, max_order: int = MAX_ORDER) -> np.ndarray:
    """Harmonic groups G_g,h for h = 0..max_order (IEC 61000-4-7 5.5.1, eq. 8) [V].

    ``G_g,h^2 = C_{hN-N/2}^2 / 2 + sum_{i=-N/2+1..N/2-1} C_{hN+i}^2 + C_{hN+N/2}^2 / 2``: the bins half way to
    the neighbouring harmonics count half (N = 10 at 50 Hz: +-4 full and +-5 half). Index 0 is the DC bin alone.
    """
    return _groups(np.abs(bins_v) ** 2, cycles, max_order)


def _groups(c2: np.ndarray, cycles: int, max_order: int) -> np.ndarray:
    half = cycles // 2
    centres = np.arange(1, max_order + 1) * cycles
    offsets = np.arange(-half, half + 1)
    weights = np.ones(offsets.size)
    weights[0] = weights[-1] = 0.5
    grp = np.sqrt(np.einsum("chk,k->ch", c2[:, centres[:, None] + offsets[None, :]], weights))
    return np.concatenate([np.sqrt(c2[:, :1]), grp], axis=1)


def interharmonic_subgroups_v(bins_v: np.ndarray, cycles: int, max_order: int = MAX_ORDER) -> np.ndarray:
    """Centred interharmonic subgroups C_isg,h between orders h and h+1, h = 0..max_order-1 (IEC 61000-4-7 5.6) [V].

    ``C_isg,h^2 = sum_{i=2..N-2} C_{hN+i}^2``: the bins between two harmonics, without the two next to each
    harmonic (those belong to the harmonic subgroups). At 50 Hz the subgroup h spans ``h*50 + 10..40 Hz``.
    """
    return _interharmonic_subgroups(np.abs(bins_v) ** 2, cycles, max_order)


def _interharmonic_subgroups(c2: np.ndarray, cycles: int, max_order: int) -> np.ndarray:
    starts = np.arange(max_order) * cycles
    offsets = np.arange(2, cycles - 1)
    return np.sqrt(c2[:, starts[:, None] + offsets[None, :]].sum(axis=2))


def thds_pct(harmonic_subgroup_v: np.ndarray, max_order: int = MAX_ORDER) -> np.ndarray:
    """Subgroup total harmonic distortion THDS (IEC 61000-4-7 3.3.3; here H = ``max_order``) [%].

    ``THDS = sqrt(sum_{h=2..H} (G_sg,h / G_sg,1)^2) * 100``. NaN where the fundamental subgroup is zero.
    """
    g = np.asarray(harmonic_subgroup_v, dtype=np.float64)
    fund = g[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fund > 0, np.sqrt(np.sum(g[:, 2 : max_order + 1] ** 2, axis=1)) / fund * 100.0, np.nan)


@dataclass(frozen=True, slots=True)
class HarmonicResult:
    """One 10/12-cycle window's harmonic content; arrays are ``[channels, ...]``.

    ``start_s``/``end_s`` are absolute (the analyser's ``start_utc_s`` plus the sample position / rate).
    ``fundamental_v`` is the complex RMS phasor of the fundamental bin (bin N), for unbalance (IEC 61000-4-30 5.7.1).
    """

    start_s: float
    end_s: float
    freq_hz: float
    cycles: int
    rms_v: np.ndarray
    fundamental_v: np.ndarray
    harmonic_subgroup_v: np.ndarray
    harmonic_group_v: np.ndarray
    interharmonic_subgroup_v: np.ndarray
    thds_pct: np.ndarray

    @property
    def harmonic_subgroup_pct(self) -> np.ndarray:
        """Harmonic subgroups in % of the fundamental subgroup G_sg,1 (IEC 61000-4-7 5.6)."""
        return _pct_of_fundamental(self.harmonic_subgroup_v, self.harmonic_subgroup_v[:, 1])

    @property
    def interharmonic_subgroup_pct(self) -> np.ndarray:
        """Interharmonic subgroups in % of the fundamental subgroup G_sg,1."""
        return _pct_of_fundamental(self.interharmonic_subgroup_v, self.harmonic_subgroup_v[:, 1])


def _pct_of_fundamental(values_v: np.ndarray, fund_v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fund_v[:, None] > 0, values_v / fund_v[:, None] * 100.0, np.nan)


def _analyse(window_v: np.ndarray, cycles: int, max_order: int, start_s: float, end_s: float, freq_hz: float,
             rms_v: np.ndarray) -> HarmonicResult:  # fmt: skip
    bins = _dft_bins(window_v)
    c2 = np.abs(bins) ** 2  # the bins' squares, shared by the groupings
    sub = _subgroups(c2, cycles, max_order)
    return HarmonicResult(
        start_s=start_s,
        end_s=end_s,
        freq_hz=freq_hz,
        cycles=cycles,
        rms_v=rms_v,
        fundamental_v=bins[:, cycles].copy(),
        harmonic_subgroup_v=sub,
        harmonic_group_v=_groups(c2, cycles, max_order),
        interharmonic_subgroup_v=_interharmonic_subgroups(c2, cycles, max_order),
        thds_pct=thds_pct(sub, max_order),
    )


def harmonic_window(samples_v: np.ndarray, rate_hz: float, nominal_hz: float, freq_hz: float, *,
                    max_order: int = MAX_ORDER, synchronise: bool = True) -> HarmonicResult:  # fmt: skip
    """Harmonics of one 10/12-cycle window starting at sample 0 (IEC 61000-4-7 4.4.1, 5.5, 5.6).

    Parameters
    ----------
    samples_v : array [channels, n]
        Voltages [V]; n must cover the window, ``cycles * rate_hz / freq_hz`` samples, plus one.
    rate_hz : float
        Sampling rate [Hz].
    nominal_hz : float
        50 or 60 [Hz]: sets 10 or 12 cycles.
    freq_hz : float
        Measured fundamental frequency [Hz]; the window holds exactly ``cycles`` periods of it.
    synchronise : bool
        False takes the nominal number of raw samples instead (no resampling): what an unsynchronised
        instrument does; kept to show the error it makes off nominal.
    """
    cycles = window_cycles(nominal_hz)
    points = samples_per_window(rate_hz, nominal_hz, max_order)
    if not (math.isfinite(freq_hz) and 0.5 * nominal_hz <= freq_hz <= 1.5 * nominal_hz):
        raise PqInputError(f"freq_hz={freq_hz!r}: allowed {0.5 * nominal_hz:g}..{1.5 * nominal_hz:g} Hz")
    if rate_hz / 2 <= (max_order + 0.5) * freq_hz:
        raise PqInputError(f"rate_hz={rate_hz!r}: allowed > {2 * (max_order + 0.5) * freq_hz:g} Hz at {freq_hz} Hz")
    x = as_channels(samples_v)
    if synchronise:
        length = cycles * rate_hz / freq_hz
        window = synchronised_window_v(x, 0.0, length, points)
    else:
        length = float(points)
        if x.shape[1] < points:
            raise PqInputError(f"samples_v: {x.shape[1]} samples: allowed >= {points}")
        window = x[:, :points]
    rms = rms_between_v(x, 0.0, length)
    return _analyse(window, cycles, max_order, 0.0, length / rate_hz, freq_hz if synchronise else nominal_hz, rms)


class FundamentalFilter:
    """The band-pass of :class:`FundamentalZeroCrossings` (``ZC_FILTER_*``) over blocks ``[channels, n]``, state kept.

    One filter call per block for every channel; :class:`~agent.pq.classa.ClassAMeter` filters each block once
    and hands the rows to the crossing detectors of the harmonics, the frequency and the Urms(1/2).
    """

    def __init__(self, rate_hz: float, nominal_hz: float, channels: int) -> None:
        from scipy import signal  # here, like solve_banded above

        self.channels = channels
        self._sos = signal.butter(
            ZC_FILTER_ORDER,
            [nominal_hz / ZC_FILTER_WIDTH, nominal_hz * ZC_FILTER_WIDTH],
            btype="bandpass",
            fs=rate_hz,
            output="sos",
        )
        _, h = signal.sosfreqz(self._sos, [nominal_hz], fs=rate_hz)
        self.delay = float(-np.angle(h[0]) / (2 * math.pi * nominal_hz) * rate_hz)  # phase delay at nominal, samples
        from agent.pq.iir import SosFilter  # scipy, like the import above

        self._filter = SosFilter(self._sos, np.zeros((self._sos.shape[0], channels, 2)))

    def push(self, samples_v: np.ndarray) -> np.ndarray:
        """The band-passed block ``[channels, n]``."""
        return self._filter.push(samples_v)


class FundamentalZeroCrossings:
    """Positive-going zero crossings of the fundamental, streamed over blocks of one channel.

    Serves IEC 61000-4-7 4.4.1 (window synchronisation), IEC 61000-4-30 5.1 (frequency: integral cycles)
    and 5.4.1 (Urms(1/2) starts at a fundamental zero crossing; with ``both_edges`` the negative-going
    crossings too). The harmonics are removed by a Butterworth band-pass centred on the nominal frequency
    (``ZC_FILTER_*``); crossing instants are interpolated linearly between the two filtered samples around
    zero and corrected by the filter's phase delay at nominal frequency (0 by design, kept for other
    designs). A crossing closer than half a nominal half-period (or period) to the previous one is
    ignored, and none is looked for in the first ``5 / nominal_hz`` s while the filter settles.

    Crossings are positions in samples since the stream start (floats). Where the signal gives none for
    1.5 periods (interruption), crossings are filled in at the nominal period and marked not real.
    """

    def __init__(self, rate_hz: float, nominal_hz: float, *, both_edges: bool = False, min_peak_v: float = 0.0):
        window_cycles(nominal_hz)
        if not (math.isfinite(min_peak_v) and min_peak_v >= 0):
            raise PqInputError(f"min_peak_v={min_peak_v!r}: allowed a finite value >= 0")
        self.rate_hz = float(rate_hz)
        self.nominal_hz = float(nominal_hz)
        self.both_edges = both_edges
        self._filter = FundamentalFilter(rate_hz, nominal_hz, 1)
        self._delay = self._filter.delay
        self._prev = 0.0
        self._pos = 0  # samples consumed
        self._step = rate_hz / nominal_hz / (2 if both_edges else 1)  # nominal spacing of crossings, samples
        # slope of a sine of peak min_peak_v at its zero crossing, per sample
        self._min_slope = min_peak_v * 2 * math.pi * nominal_hz / rate_hz
        self._settle = 5 * rate_hz / nominal_hz
        self._last: float | None = None

    def push(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filter one block; return ``(positions, real)``: crossing positions [samples] and whether measured."""
        x = np.asarray(samples, dtype=np.float64)
        return self.detect(self._filter.push(x[np.newaxis, :])[0])

    def detect(self, fundamental: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`push` for a block already band-passed by a :class:`FundamentalFilter` of the same rate and nominal."""
        return self.detect_channels([self], np.asarray(fundamental)[np.newaxis, :])[0]

    @staticmethod
    def detect_channels(detectors: Sequence[FundamentalZeroCrossings],
                        fundamental: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
        """:meth:`detect` of one band-passed block ``[channels, n]``, row k by ``detectors[k]``, in one set of array
        operations; the detectors must share ``both_edges`` and ``min_peak_v`` (one per channel of one signal)."""
        y = fundamental
        first = detectors[0]
        prev = np.concatenate((np.array([[d._prev] for d in detectors]), y[:, :-1]), axis=1)
        if first.both_edges:
            rows, cand = np.nonzero(((prev < 0) & (y >= 0)) | ((prev > 0) & (y <= 0)))
        else:
            rows, cand = np.nonzero((prev < 0) & (y >= 0))
        p, q = prev[rows, cand], y[rows, cand]
        keep = np.abs(q - p) > first._min_slope
        rows, cand, p, q = rows[keep], cand[keep], p[keep], q[keep]
        frac = p / (p - q)
        where = first._pos + cand - 1 + frac - first._delay
        bounds = np.searchsorted(rows, np.arange(len(detectors) + 1)).tolist()
        return [d._accept(where[bounds[k] : bounds[k + 1]], y[k]) for k, d in enumerate(detectors)]

    def _accept(self, where: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keep the candidate crossings ``where`` of the block ``y`` that pass the settling and spacing rules."""
        self._prev = float(y[-1]) if y.size else self._prev
        self._pos += y.size
        out: list[float] = []
        real: list[bool] = []
        for t in where.tolist():
            if t < self._settle:
                continue
            if self._last is not None:
                if t - self._last < 0.5 * self._step:
                    continue
                self._fill(t, out, real)
            out.append(t)
            real.append(True)
            self._last = t
        if self._last is not None:
            self._fill(self._pos - self._delay, out, real)
        return np.asarray(out), np.asarray(real, dtype=bool)

    def _fill(self, until: float, out: list[float], real: list[bool]) -> None:
        assert self._last is not None
        while until - self._last > 1.5 * self._step:
            self._last += self._step
            out.append(self._last)
            real.append(False)


class HarmonicAnalyser:
    """Streaming IEC 61000-4-7 analyser: blocks of samples in, one :class:`HarmonicResult` per 10/12-cycle window.

    Windows are contiguous and each spans ``N`` measured cycles: from its start ``s``, the cycles are those
    between the first ``N + 1`` positive fundamental crossings of channel 0 at or after ``s`` (so the
    result for a window comes about one cycle after its end). The first window starts at the first
    crossing. IEC 61000-4-30 5.5.3 (Class A): at every ``resync_s`` tick of the absolute clock
    (``start_utc_s`` is the time of the first sample) the window that straddles the tick is finished,
    and the next one starts at the tick, so the two overlap.
    """

    def __init__(self, rate_hz: float, nominal_hz: float, channels: int, *, max_order: int = MAX_ORDER,
                 start_utc_s: float = 0.0, resync_s: float | None = 600.0, min_peak_v: float = 0.0) -> None:  # fmt: skip
        self.cycles = window_cycles(nominal_hz)
        self.points = samples_per_window(rate_hz, nominal_hz, max_order)
        if not (isinstance(channels, int) and channels >= 1):
            raise PqInputError(f"channels={channels!r}: allowed an integer >= 1")
        if resync_s is not None and not resync_s > 0:
            raise PqInputError(f"resync_s={resync_s!r}: allowed None or > 0")
        self.rate_hz = float(rate_hz)
        self.nominal_hz = float(nominal_hz)
        self.channels = channels
        self.max_order = max_order
        self.start_utc_s = float(start_utc_s)
        self.resync_s = resync_s
        self._zc = FundamentalZeroCrossings(rate_hz, nominal_hz, min_peak_v=min_peak_v)
        self._crossings: list[float] = []
        self._buf = np.zeros((channels, 0))
        self._buf_pos = 0  # stream position of self._buf[:, 0]
        self._next: float | None = None  # stream position where the next window starts

    def _time_s(self, pos: float) -> float:
        return self.start_utc_s + pos / self.rate_hz

    def _next_tick_pos(self, after_pos: float) -> float | None:
        if self.resync_s is None:
            return None
        t = self._time_s(after_pos)
        tick = (math.floor(t / self.resync_s) + 1) * self.resync_s
        return (tick - self.start_utc_s) * self.rate_hz

    def push(
        self, samples_v: np.ndarray, *, crossings: tuple[np.ndarray, np.ndarray] | None = None
    ) -> list[HarmonicResult]:
        """Feed one block ``[channels, n]`` of any length; return the windows it completed.

        ``crossings``: the block's ``(positions, real)`` from a :class:`FundamentalZeroCrossings` of the same rate,
        nominal frequency and ``min_peak_v`` fed channel 0 from the stream's start; None finds them here.
        """
        x = as_channels(samples_v)
        if x.shape[0] != self.channels:
            raise PqInputError(f"samples_v: {x.shape[0]} channels: allowed {self.channels}")
        where, _ = self._zc.push(x[0]) if crossings is None else crossings
        self._crossings.extend(where.tolist())
        self._buf = np.concatenate([self._buf, x], axis=1)
        if self._next is None and self._crossings:
            self._next = self._crossings[0]
        results: list[HarmonicResult] = []
        end_of_data = self._buf_pos + self._buf.shape[1]
        while self._next is not None:
            j = bisect_left(self._crossings, self._next - 1e-6)
            if j + self.cycles >= len(self._crossings):
                break
            length = self._crossings[j + self.cycles] - self._crossings[j]
            start = self._next
            end = start + length
            if end + _SPLINE_MARGIN + 1 > end_of_data:
                break
            results.append(self._window(start, length))
            tick = self._next_tick_pos(start)
            self._next = tick if tick is not None and tick < end else end
        keep_from = int(math.floor(self._next if self._next is not None else end_of_data)) - 2 * _SPLINE_MARGIN
        drop = max(0, keep_from - self._buf_pos)
        if drop:
            self._buf = self._buf[:, drop:]
            self._buf_pos += drop
        if self._next is not None:
            first = bisect_left(self._crossings, self._next - 1e-6)
            del self._crossings[: max(0, first - 1)]
        return results

    def _window(self, start: float, length: float) -> HarmonicResult:
        rel = start - self._buf_pos
        # synchronised_window_v and rms_between_v on the buffer, whose blocks were checked by push()
        lo = max(int(math.floor(rel)) - _SPLINE_MARGIN, 0)
        hi = min(int(math.ceil(rel + length)) + _SPLINE_MARGIN + 1, self._buf.shape[1])
        window = _spline_on_samples(self._buf, lo, hi, rel + np.arange(self.points) * (length / self.points))
        rms = _rms_between(self._buf, rel, rel + length)
        freq = self.cycles * self.rate_hz / length
        return _analyse(window, self.cycles, self.max_order, self._time_s(start), self._time_s(start + length), freq,
                        rms)  # fmt: skip
