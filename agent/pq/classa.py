"""IEC 61000-4-30:2015 Class A measurement chain: RMS, frequency, unbalance, aggregation and flagging.

- 5.2 magnitude of the supply voltage: RMS over 10/12 cycles (:func:`rms_10cycle_v`), over the windows
  that :class:`~agent.pq.harmonics.HarmonicAnalyser` synchronises to the measured fundamental.
- 5.1 frequency: every 10 s of the UTC clock, the integral cycles counted inside the interval divided by
  their cumulative duration (:func:`frequency_10s_hz`, :class:`FrequencyMeter`); cycles run between positive
  zero crossings of the fundamental (band-pass filter described in :mod:`agent.pq.harmonics`).
- 5.7.1 supply voltage unbalance from the fundamental phasors of a 10/12-cycle window, by symmetrical
  components (:func:`voltage_unbalance_pct`), with the line-voltage formula as an alternative.
- 5.5 aggregation: 10/12-cycle values to 150/180 cycles (3 s), to 10 min aligned on the UTC clock, and
  10-min values to 2 h, each as the root of the mean of the squares (:func:`aggregate_rms`, :class:`Aggregator`).
- 4.7 flagging: a 10/12-cycle value is flagged when a dip, swell or interruption overlapped it; an
  aggregate is flagged when one of its values is (:func:`flag_windows`).

:class:`ClassAMeter` runs the whole chain over blocks of samples.

References
----------
[1] IEC 61000-4-30:2015, Power quality measurement methods.
[2] IEC 61000-4-7:2002+A1:2008 (the harmonic windows the chain shares).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.pq.events import Event, EventConfig, EventDetector
from agent.pq.harmonics import (
    MAX_ORDER,
    FundamentalFilter,
    FundamentalZeroCrossings,
    HarmonicAnalyser,
    HarmonicResult,
    PqInputError,
    as_channels,
    rms_between_v,
    window_cycles,
)

FREQUENCY_INTERVAL_S = 10.0  # 5.1.1: one value per 10 s of the clock
SHORT_VALUES = 15  # 5.5.2: a 150/180-cycle value aggregates 15 10/12-cycle values
TEN_MIN_S = 600.0  # 5.5.3
TWO_HOUR_S = 7200.0  # 5.5.4: twelve 10-min values
_A = np.exp(2j * np.pi / 3)  # the operator a = 1 /120 deg of the symmetrical components


def rms_10cycle_v(samples_v: np.ndarray, rate_hz: float, nominal_hz: float, freq_hz: float) -> np.ndarray:
    """RMS of each channel over the 10/12 cycles of ``freq_hz`` from sample 0 (IEC 61000-4-30 5.2) [V]."""
    cycles = window_cycles(nominal_hz)
    if not (math.isfinite(freq_hz) and 0.5 * nominal_hz <= freq_hz <= 1.5 * nominal_hz):
        raise PqInputError(f"freq_hz={freq_hz!r}: allowed {0.5 * nominal_hz:g}..{1.5 * nominal_hz:g} Hz")
    x = as_channels(samples_v)
    return rms_between_v(x, 0.0, cycles * rate_hz / freq_hz)


# ---------------------------------------------------------------------------------------------------- 5.1


def frequency_10s_hz(crossing_times_s: Sequence[float] | np.ndarray, interval_start_s: float,
                     real: Sequence[bool] | np.ndarray | None = None) -> float:  # fmt: skip
    """Frequency of one 10-s clock interval from the positive zero crossings (IEC 61000-4-30 5.1.1) [Hz].

    The integral cycles are those between consecutive (measured, ``real``) crossings that both lie in
    ``[interval_start_s, interval_start_s + 10)``; the value is their number divided by their summed
    duration. NaN when the interval holds no whole cycle.
    """
    t = np.asarray(crossing_times_s, dtype=np.float64)
    ok = np.ones(t.size, dtype=bool) if real is None else np.asarray(real, dtype=bool)
    inside = (t >= interval_start_s) & (t < interval_start_s + FREQUENCY_INTERVAL_S)
    pair = inside[:-1] & inside[1:] & ok[:-1] & ok[1:]
    duration = float(np.sum(np.diff(t)[pair]))
    cycles = int(np.count_nonzero(pair))
    return cycles / duration if cycles else math.nan


@dataclass(frozen=True, slots=True)
class FrequencyValue:
    start_s: float  # the 10-s interval starts here (UTC, a multiple of 10 s)
    freq_hz: float
    cycles: int


class FrequencyMeter:
    """Streaming 10-s frequency (IEC 61000-4-30 5.1) of one channel; intervals aligned on the 10-s clock."""

    def __init__(self, rate_hz: float, nominal_hz: float, *, start_utc_s: float = 0.0, min_peak_v: float = 0.0):
        self._zc = FundamentalZeroCrossings(rate_hz, nominal_hz, min_peak_v=min_peak_v)
        self.rate_hz = float(rate_hz)
        self.start_utc_s = float(start_utc_s)
        self._interval: float | None = None
        self._last: tuple[float, bool] | None = None
        self._cycles = 0
        self._duration = 0.0

    def push(
        self, samples: np.ndarray, *, crossings: tuple[np.ndarray, np.ndarray] | None = None
    ) -> list[FrequencyValue]:
        """The 10-s values completed by one block of samples.

        ``crossings``: the block's ``(positions, real)`` from a :class:`FundamentalZeroCrossings` of the same rate,
        nominal frequency and ``min_peak_v`` fed the same channel from the stream's start (the Class A chain
        shares the one of its harmonic windows); None finds them here.
        """
        if crossings is None:
            crossings = self._zc.push(np.asarray(samples, dtype=np.float64).ravel())
        where, real = crossings
        out: list[FrequencyValue] = []
        for pos, ok in zip(where.tolist(), real.tolist(), strict=True):
            t = self.start_utc_s + pos / self.rate_hz
            interval = math.floor(t / FREQUENCY_INTERVAL_S) * FREQUENCY_INTERVAL_S
            if self._interval is not None and interval != self._interval:
                if self._cycles:
                    out.append(FrequencyValue(self._interval, self._cycles / self._duration, self._cycles))
                self._cycles, self._duration = 0, 0.0
                self._last = None  # the cycle across the tick belongs to neither interval
            if self._last is not None and self._last[1] and ok:
                self._cycles += 1
                self._duration += t - self._last[0]
            self._interval = interval
            self._last = (t, ok)
        return out


# ---------------------------------------------------------------------------------------------------- 5.7.1


def symmetrical_components_v(phasors_v: np.ndarray) -> np.ndarray:
    """Zero, positive and negative sequence phasors ``[..., 3]`` (U0, U1, U2) of phasors ``[..., 3]`` (a, b, c)."""
    p = np.asarray(phasors_v, dtype=np.complex128)
    if p.shape[-1] != 3:
        raise PqInputError(f"phasors_v: shape {p.shape}: allowed [..., 3] (phases a, b, c)")
    ua, ub, uc = p[..., 0], p[..., 1], p[..., 2]
    u0 = (ua + ub + uc) / 3
    u1 = (ua + _A * ub + _A**2 * uc) / 3
    u2 = (ua + _A**2 * ub + _A * uc) / 3
    return np.stack([u0, u1, u2], axis=-1)


def voltage_unbalance_pct(phasors_v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Negative and zero sequence unbalance ``(u2, u0)`` [%] (IEC 61000-4-30 5.7.1).

    ``u2 = |U2| / |U1| * 100``, ``u0 = |U0| / |U1| * 100`` from the fundamental phasors of the
    10/12-cycle window (``HarmonicResult.fundamental_v``), phase order a, b, c. NaN where U1 is 0.
    """
    seq = np.abs(symmetrical_components_v(phasors_v))
    # U1 below 1e-9 of the largest phase is rounding noise (e.g. a pure negative sequence): no ratio
    has_u1 = seq[..., 1] > 1e-9 * np.max(np.abs(np.asarray(phasors_v)), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        u2 = np.where(has_u1, seq[..., 2] / seq[..., 1] * 100.0, np.nan)
        u0 = np.where(has_u1, seq[..., 0] / seq[..., 1] * 100.0, np.nan)
    return u2, u0


def unbalance_from_line_voltages_pct(u12_v: np.ndarray, u23_v: np.ndarray, u31_v: np.ndarray) -> np.ndarray:
    """Negative sequence unbalance from the three fundamental line-voltage magnitudes (IEC 61000-4-30 5.7.1) [%].

    ``u2 = sqrt((1 - sqrt(3 - 6 beta)) / (1 + sqrt(3 - 6 beta))) * 100`` with
    ``beta = (U12^4 + U23^4 + U31^4) / (U12^2 + U23^2 + U31^2)^2``. Line voltages hold no zero sequence, so
    this gives u2 only.
    """
    a, b, c = (np.asarray(v, dtype=np.float64) ** 2 for v in (u12_v, u23_v, u31_v))
    beta = (a * a + b * b + c * c) / (a + b + c) ** 2
    root = np.sqrt(np.maximum(3 - 6 * beta, 0.0))
    return np.sqrt(np.maximum((1 - root) / (1 + root), 0.0)) * 100.0


# ---------------------------------------------------------------------------------------------------- 5.5, 4.7


def aggregate_rms(values: np.ndarray | Sequence[float], axis: int = 0) -> np.ndarray:
    """Root of the arithmetic mean of the squared values (IEC 61000-4-30 5.5.1), along ``axis``."""
    v = np.asarray(values, dtype=np.float64)
    if v.shape[axis] == 0:
        raise PqInputError("values: empty: allowed at least one value to aggregate")
    return np.sqrt(np.mean(v * v, axis=axis))


def flag_windows(starts_s: np.ndarray, ends_s: np.ndarray, events: Iterable[Event], *,
                 lead_s: float = 0.0) -> np.ndarray:  # fmt: skip
    """Which intervals ``[start, end]`` a dip, swell or interruption overlapped (IEC 61000-4-30 4.7).

    An event covers ``[start_s - lead_s, end_s]``; ``lead_s`` (one nominal cycle in :class:`ClassAMeter`)
    reaches back over the Urms(1/2) cycle whose end stamps the event's start.
    """
    s = np.asarray(starts_s, dtype=np.float64)
    e = np.asarray(ends_s, dtype=np.float64)
    flagged = np.zeros(s.shape, dtype=bool)
    for ev in events:
        flagged |= (s <= ev.end_s) & (e >= ev.start_s - lead_s)
    return flagged


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One aggregated value (IEC 61000-4-30 5.5). ``kind``: "150/180-cycle", "10-min" or "2-h"."""

    kind: str
    start_s: float
    end_s: float  # the 10-min and 2-h values are tagged with the clock tick that ends them
    values: dict[str, np.ndarray]
    flagged: bool
    count: int  # how many input values (15 for a full 150/180-cycle value; fewer at a 10-min resync)


@dataclass(slots=True)
class _Acc:
    start_s: float
    end_s: float = 0.0
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    count: int = 0
    flagged: bool = False

    def add(self, end_s: float, values: Mapping[str, np.ndarray], flagged: bool) -> None:
        for key, v in values.items():
            sq = np.asarray(v, dtype=np.float64) ** 2
            self.sums[key] = self.sums[key] + sq if key in self.sums else sq
        self.count += 1
        self.end_s = end_s
        self.flagged |= flagged

    def result(self, kind: str, end_s: float | None = None) -> Aggregate:
        values = {key: np.sqrt(s / self.count) for key, s in self.sums.items()}
        return Aggregate(kind, self.start_s, self.end_s if end_s is None else end_s, values, self.flagged, self.count)


class Aggregator:
    """Streaming IEC 61000-4-30 5.5 aggregation of 10/12-cycle values (Class A time alignment).

    - 150/180 cycles (5.5.2): 15 consecutive 10/12-cycle values. At a 10-min tick the one in progress is
      closed with the value that straddles the tick (it may hold fewer than 15: ``count``) and the next
      starts with the first window after the tick (our reading of the resynchronisation of 5.5.2/5.5.3).
    - 10 min (5.5.3): the values that start inside ``[tick, tick + 600 s)`` of the UTC clock; the value
      straddling the next tick is the last one of the interval (the analyser then restarts its windows
      at the tick, so the next interval's first value overlaps it). Tagged with the end tick.
    - 2 h (5.5.4): the 10-min values inside ``[tick, tick + 7200 s)``.

    An aggregate is flagged when any value it holds is flagged (4.7). Intervals cut short by the start of
    the stream are emitted with their ``count``.
    """

    def __init__(self) -> None:
        self._short: _Acc | None = None
        self._ten: _Acc | None = None
        self._two: _Acc | None = None

    def push(self, start_s: float, end_s: float, values: Mapping[str, np.ndarray], flagged: bool) -> list[Aggregate]:
        """Add one 10/12-cycle value; return the aggregates it completed (shortest first)."""
        if not end_s > start_s:
            raise PqInputError(f"end_s={end_s!r}: allowed > start_s={start_s!r}")
        out: list[Aggregate] = []
        tick = (math.floor(start_s / TEN_MIN_S) + 1) * TEN_MIN_S
        if self._ten is None:
            self._ten = _Acc(tick - TEN_MIN_S)
        if self._short is None:
            self._short = _Acc(start_s)
        self._short.add(end_s, values, flagged)
        self._ten.add(end_s, values, flagged)
        straddles = end_s >= tick
        if self._short.count == SHORT_VALUES or straddles:
            out.append(self._short.result("150/180-cycle"))
            self._short = None
        if straddles:
            ten = self._ten.result("10-min", end_s=tick)
            out.append(ten)
            self._ten = None
            out.extend(self._push_two_hour(ten))
        return out

    def _push_two_hour(self, ten: Aggregate) -> list[Aggregate]:
        tick2 = (math.floor(ten.start_s / TWO_HOUR_S) + 1) * TWO_HOUR_S
        if self._two is None:
            self._two = _Acc(tick2 - TWO_HOUR_S)
        self._two.add(ten.end_s, ten.values, ten.flagged)
        if ten.end_s >= tick2:
            two = self._two.result("2-h", end_s=tick2)
            self._two = None
            return [two]
        return []


# ---------------------------------------------------------------------------------------------------- the chain


@dataclass(frozen=True, slots=True)
class WindowValue:
    """One 10/12-cycle interval of the Class A chain."""

    harmonics: HarmonicResult
    u2_pct: float  # NaN unless three channels
    u0_pct: float
    flagged: bool

    @property
    def rms_v(self) -> np.ndarray:
        return self.harmonics.rms_v


@dataclass(slots=True)
class ClassAOutput:
    windows: list[WindowValue] = field(default_factory=list)
    aggregates: list[Aggregate] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    frequencies: list[FrequencyValue] = field(default_factory=list)


class ClassAMeter:
    """The IEC 61000-4-30 Class A chain over blocks ``[channels, n]`` (phase voltages a, b, c for unbalance).

    Per block: Urms(1/2) and events (5.4), 10-s frequency of channel 0 (5.1), 10/12-cycle windows
    (harmonics, RMS, unbalance; 5.2, 5.7.1, 5.8), flagging (4.7) and aggregation (5.5) of rms_v, thds_pct,
    harmonic_subgroup_v, u2_pct and u0_pct. A window is released once the event detector has seen one
    nominal cycle past its end, so its flag is final.
    """

    def __init__(self, config: EventConfig, rate_hz: float, nominal_hz: float, channels: int = 3, *,
                 start_utc_s: float = 0.0, max_order: int = MAX_ORDER) -> None:  # fmt: skip
        if not isinstance(config, EventConfig):
            raise PqInputError(f"config={config!r}: allowed an EventConfig")
        min_peak = 0.5 * config.interruption_threshold_pct / 100 * config.udin_v * math.sqrt(2.0)
        self.channels = channels
        self._cycle_s = 1.0 / nominal_hz
        self.harmonics = HarmonicAnalyser(rate_hz, nominal_hz, channels, max_order=max_order,
                                          start_utc_s=start_utc_s, min_peak_v=min_peak)  # fmt: skip
        self.events = EventDetector(config, rate_hz, nominal_hz, channels, start_utc_s=start_utc_s)
        self.frequency = FrequencyMeter(rate_hz, nominal_hz, start_utc_s=start_utc_s, min_peak_v=min_peak)
        self._fundamental = FundamentalFilter(rate_hz, nominal_hz, channels)
        self._zc = FundamentalZeroCrossings(rate_hz, nominal_hz, min_peak_v=min_peak)
        self.aggregator = Aggregator()
        self._pending: list[HarmonicResult] = []
        self._recent: list[Event] = []

    def push(self, samples_v: np.ndarray) -> ClassAOutput:
        x = as_channels(samples_v)
        out = ClassAOutput()
        # One band-pass call for every channel: its rows feed the Urms(1/2) crossings (both edges, each channel)
        # and the positive crossings of channel 0 that time the harmonic windows and the 10-s frequency.
        fundamental = self._fundamental.push(x)
        out.events = self.events.push(x, fundamental=fundamental)
        crossings = self._zc.detect(fundamental[0])
        out.frequencies = self.frequency.push(x[0], crossings=crossings)
        self._pending.extend(self.harmonics.push(x, crossings=crossings))
        self._recent.extend(out.events)
        horizon = self.events.processed_s - self._cycle_s
        ready = [w for w in self._pending if w.end_s <= horizon]
        if not ready:
            return out
        self._pending = self._pending[len(ready) :]
        covering = list(self._recent)
        open_since = self.events.open_since_s
        if open_since is not None:
            covering.append(Event("open", "", "", open_since, math.inf))
        flags = flag_windows(
            np.array([w.start_s for w in ready]), np.array([w.end_s for w in ready]), covering, lead_s=self._cycle_s
        )
        for w, flag in zip(ready, flags.tolist(), strict=True):
            if self.channels == 3:
                u2, u0 = voltage_unbalance_pct(w.fundamental_v)
                u2, u0 = float(u2), float(u0)
            else:
                u2 = u0 = math.nan
            out.windows.append(WindowValue(w, u2, u0, flag))
            values = {
                "rms_v": w.rms_v,
                "thds_pct": w.thds_pct,
                "harmonic_subgroup_v": w.harmonic_subgroup_v,
                "u2_pct": np.array(u2),
                "u0_pct": np.array(u0),
            }
            out.aggregates.extend(self.aggregator.push(w.start_s, w.end_s, values, flag))
        oldest = self._pending[0].start_s if self._pending else horizon
        self._recent = [e for e in self._recent if e.end_s >= oldest - self._cycle_s]
        return out
