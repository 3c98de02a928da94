"""Voltage dips, swells and interruptions after IEC 61000-4-30:2015 5.4.

The basic value is Urms(1/2) (5.4.1, definition 3.30): the RMS voltage over one cycle, starting at a
fundamental zero crossing and refreshed every half cycle. Here, per channel, the cycles run between
every second zero crossing (both edges) of that channel's fundamental, as found by
:class:`~agent.pq.harmonics.FundamentalZeroCrossings` (harmonics filtered out); each value is stamped
with the end of its cycle, when it becomes known. Channels refresh at their own crossings, so for a
three-phase system values arrive every 1/6 cycle in turn. Where a channel has no crossings (below
half the interruption threshold) the cycles continue at the nominal period.

Polyphase rules (5.4.2.1, 5.4.3.1, 5.4.4.1): a dip starts when Urms(1/2) of one channel falls below the
dip threshold and ends when all channels are at or above threshold + hysteresis; a swell mirrors it; an
interruption starts when all channels are below the interruption threshold and ends when one channel is
at or above that threshold + hysteresis. An interruption is also reported as the dip it sits in.

Event phase rule (ours): ``phase`` is the worst channel (the lowest Urms(1/2) of a dip or interruption,
the highest of a swell); ``phases`` lists every channel that crossed the threshold, e.g. ``"ab"``.

References
----------
[1] IEC 61000-4-30:2015, Power quality measurement methods, 5.4.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# the error and the thresholds live apart, numpy-free (the site file's checks use them); their names are ours too
from agent.pq.errors import PqInputError
from agent.pq.eventconfig import EventConfig as EventConfig
from agent.pq.eventconfig import EventConfigError as EventConfigError
from agent.pq.harmonics import FundamentalFilter, FundamentalZeroCrossings, as_channels, window_cycles


@dataclass(frozen=True, slots=True)
class Event:
    """One dip, swell or interruption (IEC 61000-4-30 5.4.2-5.4.4). Times absolute [s]."""

    kind: str  # "dip" | "swell" | "interruption"
    phase: str  # worst channel
    phases: str  # every channel past the threshold
    start_s: float
    duration_s: float
    residual_pct: float | None = None  # dips, interruptions: lowest Urms(1/2), % of Udin
    max_pct: float | None = None  # swells: highest Urms(1/2), % of Udin

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


def default_channel_names(channels: int) -> tuple[str, ...]:
    return ("a", "b", "c")[:channels] if channels <= 3 else tuple(str(i + 1) for i in range(channels))


class HalfCycleRms:
    """Streaming Urms(1/2) of every channel (IEC 61000-4-30 5.4.1, 3.30).

    Each value is the RMS over one cycle that starts at a zero crossing (either edge) of the channel's
    fundamental. The cycle's length is the channel's measured period, the mean over its last 10 cycles
    of crossings (the nominal period until 10 cycles are known), not the distance to the crossing two
    half-cycles on: the band-pass filter's transient after a step in amplitude moves single crossings by a
    fraction of a millisecond, which would make the one-cycle window a little longer or shorter than a
    cycle exactly where a dip starts. :meth:`push` returns ``(times_s, channel, urms_v)`` in time order,
    each value stamped with the end of its cycle.
    """

    _HISTORY = 21  # crossings: 10 cycles of both edges

    def __init__(self, rate_hz: float, nominal_hz: float, channels: int, *, start_utc_s: float = 0.0,
                 min_peak_v: float = 0.0) -> None:  # fmt: skip
        window_cycles(nominal_hz)
        if not (isinstance(channels, int) and channels >= 1):
            raise PqInputError(f"channels={channels!r}: allowed an integer >= 1")
        self.rate_hz = float(rate_hz)
        self.channels = channels
        self.start_utc_s = float(start_utc_s)
        self._period = rate_hz / nominal_hz  # samples
        self._zc = [
            FundamentalZeroCrossings(rate_hz, nominal_hz, both_edges=True, min_peak_v=min_peak_v)
            for _ in range(channels)
        ]
        self._filter = FundamentalFilter(rate_hz, nominal_hz, channels)
        self._hist: list[deque[float]] = [deque(maxlen=self._HISTORY) for _ in range(channels)]
        self._pending: list[list[tuple[float, float]]] = [[] for _ in range(channels)]
        self._buf = np.zeros((channels, 0))
        self._buf_pos = 0

    def push(
        self, samples_v: np.ndarray, *, fundamental: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Urms(1/2) values completed by one block ``[channels, n]``.

        ``fundamental``: the block already band-passed by a :class:`~agent.pq.harmonics.FundamentalFilter` of the
        same rate, nominal frequency and channels, fed every block from the stream's start (the Class A chain
        filters once for the harmonics, the frequency and this); None filters here.
        """
        x = as_channels(samples_v)
        if x.shape[0] != self.channels:
            raise PqInputError(f"samples_v: {x.shape[0]} channels: allowed {self.channels}")
        y = self._filter.push(x) if fundamental is None else fundamental
        crossings = FundamentalZeroCrossings.detect_channels(self._zc, y)
        self._buf = np.concatenate([self._buf, x], axis=1)
        end = self._buf_pos + self._buf.shape[1]
        cum = np.concatenate([np.zeros((self.channels, 1)), np.cumsum(self._buf * self._buf, axis=1)], axis=1)
        grid = np.arange(cum.shape[1], dtype=np.float64)
        times, chans, values = [], [], []
        for ch in range(self.channels):
            where, _ = crossings[ch]
            hist, pending = self._hist[ch], self._pending[ch]
            for c in where.tolist():
                hist.append(c)
                period = (hist[-1] - hist[0]) * 2 / (len(hist) - 1) if len(hist) == self._HISTORY else self._period
                pending.append((c, period))
            ready = 0
            while ready < len(pending) and sum(pending[ready]) <= end:
                ready += 1
            if not ready:
                continue
            spans = np.asarray(pending[:ready])
            starts, lengths = spans[:, 0], spans[:, 1]
            e0 = np.interp(starts - self._buf_pos, grid, cum[ch])
            e1 = np.interp(starts + lengths - self._buf_pos, grid, cum[ch])
            times.append(self.start_utc_s + (starts + lengths) / self.rate_hz)
            chans.append(np.full(ready, ch))
            values.append(np.sqrt(np.maximum(e1 - e0, 0.0) / lengths))
            del pending[:ready]
        keep = min((p[0][0] for p in self._pending if p), default=end)
        drop = max(0, int(math.floor(keep)) - 1 - self._buf_pos)
        if drop:
            self._buf = self._buf[:, drop:]
            self._buf_pos += drop
        if not times:
            return np.zeros(0), np.zeros(0, dtype=int), np.zeros(0)
        t, ch_arr, v = np.concatenate(times), np.concatenate(chans), np.concatenate(values)
        order = np.argsort(t, kind="stable")
        return t[order], ch_arr[order], v[order]


class _Tracker:
    """One kind of event over the per-channel latest Urms(1/2) (a small state machine)."""

    def __init__(self, kind: str, names: Sequence[str]) -> None:
        self.kind = kind
        self.names = names
        self.start: float | None = None
        self.extreme = 0.0
        self.worst = 0
        self.hit: set[int] = set()

    def begin(self, t: float, latest: np.ndarray, crossed: np.ndarray, low: bool) -> None:
        self.start = t
        self.hit = set(np.flatnonzero(crossed).tolist())
        self.worst = int(np.argmin(latest) if low else np.argmax(latest))
        self.extreme = float(latest[self.worst])

    def update(self, ch: int, value: float, crossed: bool, low: bool) -> None:
        if crossed:
            self.hit.add(ch)
        if (value < self.extreme) if low else (value > self.extreme):
            self.extreme = value
            self.worst = ch

    def finish(self, t: float, udin_v: float, low: bool) -> Event:
        assert self.start is not None
        pct = self.extreme / udin_v * 100.0
        event = Event(
            kind=self.kind,
            phase=self.names[self.worst],
            phases="".join(self.names[i] for i in sorted(self.hit)),
            start_s=self.start,
            duration_s=t - self.start,
            residual_pct=pct if low else None,
            max_pct=None if low else pct,
        )
        self.start = None
        return event


class EventDetector:
    """Streaming dips, swells and interruptions (IEC 61000-4-30 5.4.2-5.4.4) over blocks ``[channels, n]``.

    :meth:`push` returns the events that ended in the block; :attr:`open_since_s` tells when the earliest
    event still in progress started (for flagging, IEC 61000-4-30 4.7); :attr:`last_urms` holds the
    Urms(1/2) values the last :meth:`push` computed, ``(times_s, channels, urms_v)``, for a caller that shows them.
    """

    def __init__(self, config: EventConfig, rate_hz: float, nominal_hz: float, channels: int, *,
                 start_utc_s: float = 0.0, channel_names: Sequence[str] | None = None) -> None:  # fmt: skip
        if not isinstance(config, EventConfig):
            raise PqInputError(f"config={config!r}: allowed an EventConfig")
        names = tuple(channel_names) if channel_names is not None else default_channel_names(channels)
        if len(names) != channels:
            raise PqInputError(f"channel_names={names!r}: allowed {channels} names")
        self.config = config
        self.names = names
        u = config.udin_v / 100.0
        self._dip_on, self._dip_off = (
            config.dip_threshold_pct * u,
            (config.dip_threshold_pct + config.hysteresis_pct) * u,
        )
        self._sw_on, self._sw_off = (
            config.swell_threshold_pct * u,
            (config.swell_threshold_pct - config.hysteresis_pct) * u,
        )
        self._int_on = config.interruption_threshold_pct * u
        self._int_off = (config.interruption_threshold_pct + config.hysteresis_pct) * u
        min_peak = 0.5 * self._int_on * math.sqrt(2.0)
        self.rms = HalfCycleRms(rate_hz, nominal_hz, channels, start_utc_s=start_utc_s, min_peak_v=min_peak)
        self._latest = np.full(channels, np.nan)
        self._dip = _Tracker("dip", names)
        self._swell = _Tracker("swell", names)
        self._int = _Tracker("interruption", names)
        self.processed_s = start_utc_s  # time of the last Urms(1/2) value seen
        self.last_urms: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0, dtype=int), np.zeros(0))

    @property
    def open_since_s(self) -> float | None:
        starts = [tr.start for tr in (self._dip, self._swell, self._int) if tr.start is not None]
        return min(starts) if starts else None

    def push(self, samples_v: np.ndarray, *, fundamental: np.ndarray | None = None) -> list[Event]:
        """The events that ended in one block ``[channels, n]``; ``fundamental`` as for :meth:`HalfCycleRms.push`."""
        times, chans, values = self.rms.push(samples_v, fundamental=fundamental)
        self.last_urms = (times, chans, values)
        return self.feed(times, chans, values)

    def feed(self, times_s: np.ndarray, channels: np.ndarray, urms_v: np.ndarray) -> list[Event]:
        """Run the state machines over Urms(1/2) values in time order (what :meth:`push` does after the RMS)."""
        out: list[Event] = []
        latest = self._latest
        first = 0
        if self.open_since_s is None and len(urms_v):
            # While no event is open, a value at or above the dip threshold and at or below the swell threshold
            # starts none (an interruption needs every channel below its threshold, which is below the dip's):
            # the run of such values up to the first other one only moves the latest values and the time.
            quiet = (urms_v >= self._dip_on) & (urms_v <= self._sw_on)
            first = len(urms_v) if quiet.all() else int(np.argmin(quiet))
            if first:
                backwards = channels[:first][::-1]
                chans, last = np.unique(backwards, return_index=True)  # each channel's last value in the run
                latest[chans] = urms_v[:first][::-1][last]
                self.processed_s = float(times_s[first - 1])
        for t, ch, v in zip(times_s[first:].tolist(), channels[first:].tolist(), urms_v[first:].tolist(), strict=True):
            latest[ch] = v
            self.processed_s = t
            if np.isnan(latest).any():
                continue
            # 5.4.2.1: starts when one channel is below the threshold, ends when all are above threshold + hysteresis
            if self._dip.start is None:
                if v < self._dip_on:
                    self._dip.begin(t, latest, latest < self._dip_on, low=True)
            else:
                self._dip.update(ch, v, v < self._dip_on, low=True)
                if (latest >= self._dip_off).all():
                    out.append(self._dip.finish(t, self.config.udin_v, low=True))
            # 5.4.3.1: the mirror image for swells
            if self._swell.start is None:
                if v > self._sw_on:
                    self._swell.begin(t, latest, latest > self._sw_on, low=False)
            else:
                self._swell.update(ch, v, v > self._sw_on, low=False)
                if (latest <= self._sw_off).all():
                    out.append(self._swell.finish(t, self.config.udin_v, low=False))
            # 5.4.4.1: starts when all channels are below the threshold, ends when one is above threshold + hysteresis
            if self._int.start is None:
                if (latest < self._int_on).all():
                    self._int.begin(t, latest, latest < self._int_on, low=True)
            else:
                self._int.update(ch, v, v < self._int_on, low=True)
                if (latest >= self._int_off).any():
                    out.append(self._int.finish(t, self.config.udin_v, low=True))
        return out


def detect_events(samples_v: np.ndarray, rate_hz: float, nominal_hz: float, config: EventConfig, *,
                  channel_names: Sequence[str] | None = None) -> list[Event]:  # fmt: skip
    """Dips, swells and interruptions of a recording (IEC 61000-4-30 5.4); events still open at its end are left out."""
    x = as_channels(samples_v)
    return EventDetector(config, rate_hz, nominal_hz, x.shape[0], channel_names=channel_names).push(x)
