"""IEC 61000-4-15 flickermeter: instantaneous flicker sensation Pinst, short-term Pst, long-term Plt.

The five blocks of the standard's functional diagram, each a vectorised numpy/scipy stage that keeps
its filter state between calls, so a stream can be fed in chunks of any length:

1. input voltage adaptor: each sample divided by a reference, the half-period r.m.s. value smoothed
   by a first-order low-pass filter of 27.3 s time constant;
2. squaring demodulator;
3. weighting filters: first-order high-pass 0.05 Hz, 6th-order Butterworth low-pass 35 Hz (50 Hz
   systems) or 42 Hz (60 Hz systems), and the lamp-eye weighting filter of the 230 V or 120 V lamp;
4. squaring and first-order low-pass of 300 ms time constant, scaled so the reference fluctuation
   (8.8 Hz sinusoidal at the Table 1 amplitude of the lamp) gives Pinst max = 1.00;
5. statistics: the cumulative probability function of Pinst in logarithmic classes, the smoothed
   percentiles and Pst; Plt from 12 Pst values.

The analog filters are digitised with the bilinear transform. Block 3's Butterworth filter runs at the
input rate (800 Hz and up) and is also the anti-aliasing filter of a decimation to ``output_rate_hz``
(800 to 1600 Hz); the high-pass, the weighting filter and Block 4 run at that rate.
docs/pq-flicker.md gives the rates, the digitisation error and the test results.

Clause and table numbers are those of IEC 61000-4-15:2010 (Ed. 2.0); docs/pq-flicker.md says where the
numerical values were cross-read and what to check against the standard before quoting them.

References
----------
[1] IEC 61000-4-15:2010, Electromagnetic compatibility (EMC) - Part 4-15: Testing and measurement
    techniques - Flickermeter - Functional and design specifications, Ed. 2.0. Clause 4 (principle of
    operation, blocks 1 to 5), clause 5 (specification: weighting filter coefficients, classifier),
    Tables 1a/1b and 2a/2b (normalised response), Table 5 (classifier test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import signal

from agent.pq.iir import SosFilter

__all__ = [
    "LAMP_PARAMETERS",
    "FlickerChannel",
    "Flickermeter",
    "FlickermeterBank",
    "FlickerError",
    "LampParameters",
    "PinstClassifier",
    "analyse",
    "plt",
    "pst",
    "pst_from_percentiles",
    "weighting_filter_zpk",
]

NOMINAL_HZ_ALLOWED = (50, 60)
LAMP_V_ALLOWED = (230, 120)

#: Block 1 [1] clause 4 (input voltage adaptor): time constant of the reference's low-pass filter [s].
#: 27.3 s brings the reference to 90 % of a step in about one minute (27.3 s * ln 10 = 62.9 s).
REFERENCE_TIME_CONSTANT_S = 27.3
#: Block 3 [1] clause 4: first-order high-pass cut-off [Hz] that removes the d.c. of the demodulator.
HIGH_PASS_HZ = 0.05
#: Block 3 [1] clause 4: 6th-order Butterworth low-pass cut-off [Hz] by system frequency; it removes
#: the double-mains-frequency ripple of the squaring demodulator.
LOW_PASS_HZ = {50: 35.0, 60: 42.0}
BUTTERWORTH_ORDER = 6
#: Block 4 [1] clause 4: time constant of the first-order smoothing low-pass [s].
SMOOTHING_TIME_CONSTANT_S = 0.3
#: Pst weights of the smoothed percentiles [1] clause 4 (Block 5): P0.1, P1s, P3s, P10s, P50s.
PST_WEIGHTS = (0.0314, 0.0525, 0.0657, 0.28, 0.08)
#: Percentiles averaged into the smoothed ones [1] clause 4 (Block 5).
SMOOTHED_PERCENTILES = {
    "P1s": (0.7, 1.0, 1.5),
    "P3s": (2.2, 3.0, 4.0),
    "P10s": (6.0, 8.0, 10.0, 13.0, 17.0),
    "P50s": (30.0, 50.0, 80.0),
}
#: Pst interval [s] and the number of Pst intervals in one Plt interval (2 h) [1] clause 4 (Block 5).
PST_INTERVAL_S = 600.0
PLT_PST_COUNT = 12
#: Reference modulation frequency of the calibration [Hz]: [1] Tables 1a/1b, the 8.8 Hz row.
REFERENCE_MODULATION_HZ = 8.8
#: Lowest input sample rate accepted [Hz]. Below it the bilinear weighting filter's frequency warping
#: costs more than 2 % of Pinst at 33.3 Hz and 40 Hz (docs/pq-flicker.md, "Rates and digitisation").
MIN_RATE_HZ = 800.0
#: Block 3 onwards run at the input rate divided by an integer, not below this rate [Hz].
PROCESSING_RATE_HZ = 800.0


class FlickerError(ValueError):
    """A parameter or input the flickermeter cannot use; names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"{key}={value!r} is not allowed; allowed: {allowed}")
        self.key = key
        self.value = value
        self.allowed = allowed


@dataclass(frozen=True, slots=True)
class LampParameters:
    """Lamp-eye weighting filter of [1] clause 5 (Block 3), with the calibration reference of the lamp.

    F(s) = k w1 s / (s^2 + 2 lambda s + w1^2) * (1 + s / w2) / ((1 + s / w3) (1 + s / w4))
    """

    k: float
    lambda_hz: float  # lambda / (2 pi)
    f1_hz: float  # w1 / (2 pi)
    f2_hz: float
    f3_hz: float
    f4_hz: float
    reference_dv_pct: float  # dV/V giving Pinst max = 1.00 at 8.8 Hz sinusoidal, [1] Table 1a/1b
    source: str


#: The two lamps of [1]. Coefficients: [1] clause 5, weighting filter coefficient table (60 W coiled
#: filament lamp at 230 V and at 120 V). Reference: the 8.8 Hz sinusoidal row of [1] Tables 1a/1b.
LAMP_PARAMETERS: dict[int, LampParameters] = {
    230: LampParameters(1.74802, 4.05981, 9.15494, 2.27979, 1.22535, 21.9, 0.250,
                        "IEC 61000-4-15:2010 clause 5 weighting filter, 230 V 60 W lamp; Table 1b 8.8 Hz: 0.250 %"),
    120: LampParameters(1.6357, 4.167375, 9.077169, 2.939902, 1.394468, 17.31512, 0.321,
                        "IEC 61000-4-15:2010 clause 5 weighting filter, 120 V 60 W lamp; Table 1a 8.8 Hz: 0.321 %"),
}  # fmt: skip


def _lamp(lamp_v: object) -> LampParameters:
    if isinstance(lamp_v, bool) or lamp_v not in LAMP_PARAMETERS:
        raise FlickerError("lamp_v", lamp_v, "230 or 120 (the lamps of IEC 61000-4-15:2010 clause 5)")
    return LAMP_PARAMETERS[int(lamp_v)]  # type: ignore[call-overload]


def _nominal(nominal_hz: object) -> int:
    if isinstance(nominal_hz, bool) or nominal_hz not in NOMINAL_HZ_ALLOWED:
        raise FlickerError("nominal_hz", nominal_hz, "50 or 60")
    return int(nominal_hz)  # type: ignore[call-overload]


def _rate(rate_hz: object) -> float:
    ok = isinstance(rate_hz, int | float) and not isinstance(rate_hz, bool) and math.isfinite(rate_hz)
    if not ok or rate_hz < MIN_RATE_HZ:  # type: ignore[operator]
        raise FlickerError("rate_hz", rate_hz, f"a finite sample rate >= {MIN_RATE_HZ:g} Hz")
    return float(rate_hz)  # type: ignore[arg-type]


def weighting_filter_zpk(lamp: LampParameters) -> tuple[np.ndarray, np.ndarray, float]:
    """Analog zeros, poles [rad/s] and gain of the lamp-eye weighting filter, [1] clause 5 (Block 3)."""
    two_pi = 2.0 * math.pi
    lam, w1, w2, w3, w4 = (two_pi * f for f in (lamp.lambda_hz, lamp.f1_hz, lamp.f2_hz, lamp.f3_hz, lamp.f4_hz))
    zeros = np.array([0.0, -w2])
    poles = np.concatenate([np.roots([1.0, 2.0 * lam, w1 * w1]), [-w3, -w4]])
    gain = lamp.k * w1 * w3 * w4 / w2  # k w1 s (s + w2)/w2 / ((s + w3)(s + w4)/(w3 w4))
    return zeros, poles, gain


def _bilinear_sos(zeros: np.ndarray, poles: np.ndarray, gain: float, fs: float, prewarp_hz: float) -> np.ndarray:
    """Bilinear transform with the frequency ``prewarp_hz`` mapped exactly onto itself."""
    fs_warped = math.pi * prewarp_hz / math.tan(math.pi * prewarp_hz / fs)
    zd, pd, kd = signal.bilinear_zpk(zeros, poles, gain, fs_warped)
    return signal.zpk2sos(zd, pd, kd)


def _first_order_sos(fs: float, time_constant_s: float, high_pass: bool) -> np.ndarray:
    """First-order low-pass 1/(1 + s T) or high-pass s T/(1 + s T), bilinear with the corner prewarped."""
    corner_hz = 1.0 / (2.0 * math.pi * time_constant_s)
    wc = 1.0 / time_constant_s
    zeros, gain = (np.array([0.0]), 1.0) if high_pass else (np.array([]), wc)
    return _bilinear_sos(zeros, np.array([-wc]), gain, fs, corner_hz)


def _sos_gain(sos: np.ndarray, fs: float, f_hz: float) -> float:
    _, h = signal.sosfreqz(sos, worN=[f_hz], fs=fs)
    return float(abs(h[0]))


class PinstClassifier:
    """Cumulative probability function of Pinst in logarithmic classes, [1] clause 4 (Block 5).

    ``CLASSES`` classes, equally wide in log10(Pinst), cover ``[LOW, HIGH)``; Pinst below ``LOW``
    counts in an underflow class read as 0, above ``HIGH`` in an overflow class read as ``HIGH``.
    A percentile is read by linear interpolation of log10(Pinst) inside its class. Memory is fixed,
    whatever the interval length.
    """

    CLASSES = 8192
    LOW = 1e-6
    HIGH = 1e5

    def __init__(self) -> None:
        self._lo = math.log10(self.LOW)
        self._width = (math.log10(self.HIGH) - self._lo) / self.CLASSES
        # index 0: underflow, 1..CLASSES: the log classes, CLASSES + 1: overflow
        self.counts = np.zeros(self.CLASSES + 2, dtype=np.int64)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add(self, pinst: np.ndarray) -> None:
        values = np.asarray(pinst, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            pos = (np.log10(values) - self._lo) / self._width
        index = np.where(
            values < self.LOW, 0, np.clip(np.floor(np.nan_to_num(pos, neginf=-1.0)) + 1, 1, self.CLASSES + 1)
        )
        self.counts += np.bincount(index.astype(np.int64), minlength=self.CLASSES + 2)

    def level_exceeded(self, percent: float) -> float:
        """Pinst level exceeded during ``percent`` % of the classified time (the CPF read at ``percent``)."""
        total = self.total
        if total == 0:
            raise FlickerError("pinst", "no samples classified", "at least one Pinst value")
        above = total * percent / 100.0  # samples that must lie above the level
        from_top = np.cumsum(self.counts[::-1])  # from_top[j]: samples in the top j + 1 bins
        j = int(np.searchsorted(from_top, above, side="left"))
        bin_index = self.CLASSES + 1 - j
        if bin_index <= 0:
            return 0.0
        if bin_index > self.CLASSES:
            return self.HIGH
        in_bin = self.counts[bin_index]
        above_bin = from_top[j] - in_bin
        # fraction of this class (from its top) needed to reach ``above`` samples
        frac = (above - above_bin) / in_bin if in_bin else 0.0
        log_top = self._lo + bin_index * self._width
        return float(10.0 ** (log_top - frac * self._width))


def pst_from_percentiles(levels: dict[float, float]) -> float:
    """Pst from the levels exceeded x % of the time, ``{x: Pinst level}``, [1] clause 4 (Block 5).

    Pst = sqrt(0.0314 P0.1 + 0.0525 P1s + 0.0657 P3s + 0.28 P10s + 0.08 P50s), where P1s, P3s, P10s
    and P50s are the means of the percentiles in ``SMOOTHED_PERCENTILES``.
    """
    smoothed = [levels[0.1]] + [float(np.mean([levels[x] for x in xs])) for xs in SMOOTHED_PERCENTILES.values()]
    return math.sqrt(sum(w * p for w, p in zip(PST_WEIGHTS, smoothed, strict=True)))


def _percent_points() -> tuple[float, ...]:
    return (0.1, *sorted({x for xs in SMOOTHED_PERCENTILES.values() for x in xs}))


def _pst_of(classifier: PinstClassifier) -> float:
    return pst_from_percentiles({x: classifier.level_exceeded(x) for x in _percent_points()})


def pst(pinst: np.ndarray) -> float:
    """Short-term flicker severity Pst of a Pinst series, [1] clause 4 (Block 5).

    Parameters
    ----------
    pinst : numpy.ndarray
        Instantaneous flicker sensation over the interval [-], equally spaced in time. The standard's
        interval is 10 min (``PST_INTERVAL_S``); this function does not check the length.

    Returns
    -------
    float
        Pst [-] from the CPF of ``pinst`` in ``PinstClassifier.CLASSES`` logarithmic classes.
    """
    values = np.asarray(pinst, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise FlickerError("pinst", f"array of shape {values.shape}", "a non-empty 1-D array of finite values >= 0")
    classifier = PinstClassifier()
    classifier.add(values)
    return _pst_of(classifier)


def plt(pst_values: Any) -> float:
    """Long-term flicker severity Plt over 2 h, [1] clause 4 (Block 5): cube root of the mean of Pst^3.

    Parameters
    ----------
    pst_values : sequence of float
        The 12 consecutive Pst values [-] of the 2-h interval.
    """
    values = np.asarray(pst_values, dtype=np.float64)
    if values.shape != (PLT_PST_COUNT,) or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise FlickerError("pst_values", pst_values, f"{PLT_PST_COUNT} finite values >= 0 (12 x 10 min = 2 h)")
    return float(np.cbrt(np.mean(values**3)))


class FlickermeterBank:
    """Streaming IEC 61000-4-15 flickermeters for ``channels`` voltage channels sampled together.

    Parameters
    ----------
    rate_hz : float
        Sample rate of the voltage waveforms [Hz], at least ``MIN_RATE_HZ`` (800 Hz).
    nominal_hz : int
        Nominal system frequency [Hz]: 50 or 60 (selects the 35 Hz or 42 Hz Butterworth low-pass).
    lamp_v : int
        Reference lamp [V]: 230 or 120 (selects the weighting filter and the calibration).
    channels : int
        Number of channels, at least 1.

    Each channel is its own flickermeter (its own Block 1 reference, filter states and Pst interval);
    the bank runs every block of the chain once over the ``[channels, n]`` array instead of once per
    channel, so the fixed cost of a numpy or scipy call is paid once per block for all channels. A
    channel's output is the same as that of a one-channel meter fed the same samples.

    Feed samples ``[channels, n]`` in chunks of any length with :meth:`process`; every Pinst value it
    returns (at ``output_rate_hz``) is also classified for the channel's running Pst interval, read and
    restarted by :meth:`pst_10min`; :meth:`channel` gives one channel's view of those.
    """

    def __init__(self, rate_hz: float, nominal_hz: int = 50, lamp_v: int = 230, channels: int = 1) -> None:
        self.nominal_hz = _nominal(nominal_hz)
        self.lamp = _lamp(lamp_v)
        self.lamp_v = int(lamp_v)
        self.rate_hz = _rate(rate_hz)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise FlickerError("channels", channels, "an integer >= 1")
        self.channels = channels
        self.decimation = max(1, int(self.rate_hz // PROCESSING_RATE_HZ))
        self.output_rate_hz = self.rate_hz / self.decimation

        # Block 1: half-period r.m.s., then y += alpha (x - y) once per half period
        self._samples_per_half = self.rate_hz / (2.0 * self.nominal_hz)
        self._alpha = 1.0 - math.exp(-1.0 / (2.0 * self.nominal_hz * REFERENCE_TIME_CONSTANT_S))
        self._reference: np.ndarray | None = None  # [channels]
        self._next_boundary = 1  # index k of the next half-period boundary, at sample k * half
        self._acc = np.zeros(channels)  # integral of u^2 from the last boundary to the next sample [V^2 samples]
        self._startup: list[np.ndarray] = []
        self._n = 0  # samples consumed so far

        # Block 3 at the input rate: the Butterworth low-pass (bilinear, cut-off prewarped by scipy)
        self._sos_lp = signal.butter(
            BUTTERWORTH_ORDER, LOW_PASS_HZ[self.nominal_hz], btype="low", fs=self.rate_hz, output="sos"
        )
        # Block 3 at the output rate: high-pass, then the weighting filter prewarped at 8.8 Hz
        fd = self.output_rate_hz
        self._sos_hp = _first_order_sos(fd, 1.0 / (2.0 * math.pi * HIGH_PASS_HZ), high_pass=True)
        self._sos_weight = _bilinear_sos(*weighting_filter_zpk(self.lamp), fd, REFERENCE_MODULATION_HZ)
        # The two run as one cascade: sosfilt takes the sections in turn, sample by sample, so the
        # output is that of the two filters one after the other.
        self._sos_block3 = np.concatenate([self._sos_hp, self._sos_weight])
        # Block 4
        self._sos_smooth = _first_order_sos(fd, SMOOTHING_TIME_CONSTANT_S, high_pass=False)
        self.calibration = self._calibration()

        # Filter states start at the steady state of an unmodulated input: the normalised square
        # has mean 1, so the low-pass holds 1 and the high-pass outputs 0 from the first sample.
        zi_hp = signal.sosfilt_zi(self._sos_hp)
        zi_block3 = np.concatenate([zi_hp, np.zeros((self._sos_weight.shape[0], 2))])
        self._lp = SosFilter(
            self._sos_lp, np.repeat(signal.sosfilt_zi(self._sos_lp)[:, np.newaxis, :], channels, axis=1)
        )
        self._block3 = SosFilter(self._sos_block3, np.repeat(zi_block3[:, np.newaxis, :], channels, axis=1))
        self._smooth = SosFilter(self._sos_smooth, np.zeros((self._sos_smooth.shape[0], channels, 2)))
        # Block 5: per channel, the counts of PinstClassifier's classes
        self._counts = np.zeros((channels, PinstClassifier.CLASSES + 2), dtype=np.int64)
        self._class_lo = math.log10(PinstClassifier.LOW)
        self._class_width = (math.log10(PinstClassifier.HIGH) - self._class_lo) / PinstClassifier.CLASSES

    def _calibration(self) -> float:
        """Block 4 gain so the 8.8 Hz sinusoidal reference of the lamp gives Pinst max = 1.00 [1] Tables 1a/1b.

        A sinusoidal fluctuation dV/V = d (peak to peak) leaves Block 2 as d sin(w t) on a d.c. of 1.
        Block 3 scales it by |H(f)|; squaring gives (d |H|)^2 / 2 (1 - cos 2 w t); the 300 ms low-pass
        passes the d.c. and |L(2 f)| of the ripple, so the maximum is (d |H|)^2 / 2 (1 + |L(2 f)|).
        The gains are those of the digital filters actually used.
        """
        f = REFERENCE_MODULATION_HZ
        fd = self.output_rate_hz
        h = (
            _sos_gain(self._sos_lp, self.rate_hz, f)
            * _sos_gain(self._sos_hp, fd, f)
            * _sos_gain(self._sos_weight, fd, f)
        )
        amplitude = self.lamp.reference_dv_pct / 100.0 * h
        peak = amplitude**2 / 2.0 * (1.0 + _sos_gain(self._sos_smooth, fd, 2.0 * f))
        return 1.0 / peak

    # Block 1 -----------------------------------------------------------------------------------
    def _normalise(self, u: np.ndarray) -> np.ndarray:
        """Divide each sample by its channel's reference as it stood at the start of the sample's half period.

        The half-period mean square integrates the sample-and-hold waveform between the exact
        boundaries k / (2 f_nominal), so a rate that is not a multiple of 2 f_nominal gives no
        boundary jitter (whole-sample windows would modulate the reference at a beat frequency
        inside the flicker band). The boundaries are the same for every channel.
        """
        n0, size, length = self._n, u.shape[1], self._samples_per_half
        cum = np.zeros((u.shape[0], size + 1))
        np.cumsum(u * u, axis=1, out=cum[:, 1:])
        k_last = math.floor((n0 + size) / length + 1e-9)
        ks = np.arange(self._next_boundary, k_last + 1)
        # linear interpolation of the cumulative sum at the boundaries, as numpy.interp on the grid 0..size
        pos = np.clip(ks * length - n0, 0.0, float(size))
        j = np.minimum(pos.astype(np.int64), size - 1)
        lo = cum[:, j]
        at = (cum[:, j + 1] - lo) * (pos - j) + lo
        at[:, pos >= size] = cum[:, -1:]
        mean_square = np.diff(np.concatenate((-self._acc[:, np.newaxis], at), axis=1), axis=1) / length
        self._acc = cum[:, -1] - at[:, -1] if ks.size else self._acc + cum[:, -1]
        self._next_boundary = k_last + 1
        if self._reference is None:
            # Start from the r.m.s. of the first second (2 f_nominal half periods; process() holds the
            # samples back until it is complete, so the start does not depend on how the stream is cut),
            # not from one half period: its sampling error would persist with the 27.3 s time constant.
            # (row by row: a reduction over a 2-D array may sum in another order than over one row)
            first = np.array([row.mean() for row in mean_square[:, : 2 * self.nominal_hz]])
            self._reference = np.where(first > 0.0, np.sqrt(np.maximum(first, 0.0)), 1.0)
        ref_prev = self._reference
        if ks.size:
            a = self._alpha
            refs, _ = signal.lfilter(
                [a], [1.0, -(1.0 - a)], np.sqrt(mean_square), axis=1, zi=(1.0 - a) * ref_prev[:, np.newaxis]
            )
            self._reference = refs[:, -1].copy()
            table = np.maximum(np.concatenate((ref_prev[:, np.newaxis], refs), axis=1), 1e-12)
        else:
            table = np.maximum(ref_prev[:, np.newaxis], 1e-12)
        half = np.floor((n0 + np.arange(size, dtype=np.float64)) / length + 1e-9).astype(np.int64)
        return u / table[:, half - (ks[0] - 1 if ks.size else half[0])]

    def process(self, samples_v: np.ndarray) -> np.ndarray:
        """Run blocks 1 to 4 over the next samples ``[channels, n]``; returns Pinst [-] ``[channels, m]`` at ``output_rate_hz``.

        The first second of the stream is held back (returned with the call that completes it) to
        start the Block 1 reference, so the output does not depend on how the stream is cut.

        Parameters
        ----------
        samples_v : numpy.ndarray
            The next instantaneous voltage samples [V], ``[channels, n]``, finite, at ``rate_hz``.
        """
        u = np.asarray(samples_v, dtype=np.float64)
        if u.ndim != 2 or u.shape[0] != self.channels or not np.isfinite(u).all():
            raise FlickerError(
                "samples_v", f"array of shape {u.shape}", f"a [{self.channels}, n] array of finite voltages [V]"
            )
        if self._reference is None:  # the first second is held back to start the Block 1 reference
            self._startup.append(u)
            if sum(part.shape[1] for part in self._startup) < math.ceil(self.rate_hz):
                return np.empty((self.channels, 0))
            u = np.concatenate(self._startup, axis=1)
            self._startup = []
        if u.shape[1] == 0:
            return np.empty((self.channels, 0))
        x = self._normalise(u)
        # Block 2: squaring demodulator
        x *= x
        # Block 3: Butterworth at the input rate, then keep every ``decimation``-th sample
        x = self._lp.push(x)
        first = (-self._n) % self.decimation
        x = x[:, first :: self.decimation]
        self._n += u.shape[1]
        if x.shape[1] == 0:
            return x
        x = self._block3.push(x)
        # Block 4: squaring, 300 ms smoothing, calibration
        x *= x
        x = self._smooth.push(x)
        pinst = x * self.calibration
        # Block 5: classification for the running Pst interval
        self._classify(pinst)
        return pinst

    def _classify(self, pinst: np.ndarray) -> None:
        """:meth:`PinstClassifier.add` for every channel at once: the same classes, counted into each channel's row."""
        low = PinstClassifier.LOW
        values = np.maximum(pinst, 0.0)
        pos = (np.log10(np.maximum(values, low)) - self._class_lo) / self._class_width
        top = PinstClassifier.CLASSES + 1
        index = np.clip(np.floor(pos) + 1, 1, top).astype(np.int64)
        index[values < low] = 0  # the underflow class
        index += (top + 1) * np.arange(self.channels)[:, np.newaxis]
        np.add.at(self._counts.reshape(-1), index.ravel(), 1)

    @property
    def reference_v(self) -> np.ndarray | None:
        """Block 1 references [V] ``[channels]``: the smoothed half-period r.m.s. values the samples are divided by."""
        return None if self._reference is None else self._reference.copy()

    def interval_s(self, channel: int) -> float:
        """Duration of Pinst classified on ``channel`` since its last :meth:`pst_10min` or :meth:`reset_interval` [s]."""
        return self._interval_of(channel)

    def reset_interval(self, channel: int | None = None) -> None:
        """Forget the Pinst classified so far on ``channel`` (all channels if None), e.g. the filters' settling time."""
        self._counts[slice(None) if channel is None else channel] = 0

    def _interval_of(self, channel: int) -> float:
        return int(self._counts[channel].sum()) / self.output_rate_hz

    def pst_10min(self, channel: int, tolerance_s: float = 0.02) -> float:
        """Pst of ``channel`` over the 10-min interval just processed, [1] clause 4 (Block 5); starts its next interval.

        The caller cuts the stream at the interval boundaries (clock-aligned in the agent); the
        classified duration must be 600 s within ``tolerance_s``.
        """
        duration = self._interval_of(channel)
        if abs(duration - PST_INTERVAL_S) > tolerance_s:
            raise FlickerError("interval_s", round(duration, 3), f"{PST_INTERVAL_S} s +- {tolerance_s} s of Pinst")
        classifier = PinstClassifier()
        classifier.counts = self._counts[channel].copy()
        self._counts[channel] = 0
        return _pst_of(classifier)

    def channel(self, channel: int) -> FlickerChannel:
        """One channel's Pst interval: ``interval_s``, ``reset_interval()`` and ``pst_10min()`` of that channel."""
        if not 0 <= channel < self.channels:
            raise FlickerError("channel", channel, f"0..{self.channels - 1}")
        return FlickerChannel(self, channel)

    @staticmethod
    def plt(pst_values: Any) -> float:
        """Plt of 12 Pst values; see :func:`plt`."""
        return plt(pst_values)


class FlickerChannel:
    """One channel of a :class:`FlickermeterBank`: its Pst interval, read and restarted as a one-channel meter's."""

    def __init__(self, bank: FlickermeterBank, channel: int) -> None:
        self.bank = bank
        self.index = channel

    @property
    def interval_s(self) -> float:
        return self.bank.interval_s(self.index)

    def reset_interval(self) -> None:
        self.bank.reset_interval(self.index)

    def pst_10min(self, tolerance_s: float = 0.02) -> float:
        return self.bank.pst_10min(self.index, tolerance_s)


class Flickermeter(FlickermeterBank):
    """Streaming IEC 61000-4-15 flickermeter for one voltage channel: a :class:`FlickermeterBank` of one.

    Parameters
    ----------
    rate_hz : float
        Sample rate of the voltage waveform [Hz], at least ``MIN_RATE_HZ`` (800 Hz).
    nominal_hz : int
        Nominal system frequency [Hz]: 50 or 60 (selects the 35 Hz or 42 Hz Butterworth low-pass).
    lamp_v : int
        Reference lamp [V]: 230 or 120 (selects the weighting filter and the calibration).

    Feed samples in chunks of any length with :meth:`process`; every Pinst value it returns (at
    ``output_rate_hz``) is also classified for the running Pst interval, read and restarted by
    :meth:`pst_10min`. :meth:`reset_interval` drops what was classified (e.g. the settling time).
    """

    def __init__(self, rate_hz: float, nominal_hz: int = 50, lamp_v: int = 230) -> None:
        super().__init__(rate_hz, nominal_hz, lamp_v, channels=1)

    def process(self, samples_v: np.ndarray) -> np.ndarray:  # type: ignore[override]
        """Run blocks 1 to 4 over the next samples; returns Pinst [-] at ``output_rate_hz``.

        The first second of the stream is held back (returned with the call that completes it) to
        start the Block 1 reference, so the output does not depend on how the stream is cut.

        Parameters
        ----------
        samples_v : numpy.ndarray
            The next instantaneous voltage samples [V], 1-D, finite, at ``rate_hz``.
        """
        u = np.asarray(samples_v, dtype=np.float64)
        if u.ndim != 1 or not np.isfinite(u).all():
            raise FlickerError("samples_v", f"array of shape {u.shape}", "a 1-D array of finite voltages [V]")
        return super().process(u[np.newaxis, :])[0]

    @property
    def reference_v(self) -> float | None:  # type: ignore[override]
        """Block 1 reference [V]: the smoothed half-period r.m.s. value the samples are divided by."""
        return None if self._reference is None else float(self._reference[0])

    @property
    def interval_s(self) -> float:  # type: ignore[override]
        """Duration of Pinst classified since the last :meth:`pst_10min` or :meth:`reset_interval` [s]."""
        return self._interval_of(0)

    def reset_interval(self) -> None:  # type: ignore[override]
        """Forget the Pinst classified so far (e.g. the filters' settling time after start)."""
        self._counts[0] = 0

    def pst_10min(self, tolerance_s: float = 0.02) -> float:  # type: ignore[override]
        """Pst of the 10-min interval just processed, [1] clause 4 (Block 5); starts the next interval.

        The caller cuts the stream at the interval boundaries (clock-aligned in the agent); the
        classified duration must be 600 s within ``tolerance_s``.
        """
        return super().pst_10min(0, tolerance_s)


def analyse(
    samples_v: np.ndarray, rate_hz: float, nominal_hz: int = 50, lamp_v: int = 230, settle_s: float = 10.0
) -> dict[str, Any]:
    """Flicker of a recorded waveform: Pinst max, the Pst of each full 10 min and the Plt of each 2 h.

    Parameters
    ----------
    samples_v : numpy.ndarray
        Instantaneous voltage [V] at ``rate_hz``.
    rate_hz, nominal_hz, lamp_v
        As for :class:`Flickermeter`.
    settle_s : float
        Leading time [s] left out of Pinst max and Pst while the filters settle (the 0.05 Hz
        high-pass has a 3.2 s time constant).

    Returns
    -------
    dict
        ``pinst_max`` [-] after ``settle_s`` (None if the record is not longer than that), ``pst``
        list of Pst [-] of consecutive 600 s intervals after ``settle_s``, ``plt`` list of Plt [-] of
        consecutive groups of 12 of those.
    """
    meter = Flickermeter(rate_hz, nominal_hz, lamp_v)
    if not (isinstance(settle_s, int | float) and math.isfinite(settle_s) and settle_s >= 0):
        raise FlickerError("settle_s", settle_s, "a finite number of seconds >= 0")
    u = np.asarray(samples_v, dtype=np.float64)
    if u.ndim != 1:
        raise FlickerError("samples_v", f"array of shape {u.shape}", "a 1-D array of finite voltages [V]")
    start = min(u.size, round(settle_s * meter.rate_hz))
    meter.process(u[:start])
    meter.reset_interval()
    per_interval = round(PST_INTERVAL_S * meter.rate_hz)
    pinst_max: float | None = None
    psts: list[float] = []
    pos = start
    while pos < u.size:
        chunk = meter.process(u[pos : pos + per_interval])
        if chunk.size:
            pinst_max = max(float(chunk.max()), pinst_max if pinst_max is not None else -math.inf)
        pos += per_interval
        if pos <= u.size:
            psts.append(meter.pst_10min())
    plts = [plt(psts[i : i + PLT_PST_COUNT]) for i in range(0, len(psts) - PLT_PST_COUNT + 1, PLT_PST_COUNT)]
    return {"pinst_max": pinst_max, "pst": psts, "plt": plts}
