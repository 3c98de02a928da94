"""PMU monitoring as pure state machines: one per condition, fed values with their timestamps.

Every limit condition goes through :class:`Hysteresis`: the value must stay outside the band for
``pickup_s`` before the condition raises (one :class:`Trigger`), and must come back inside the band by
``deadband`` and stay there ``hold_off_s`` before it clears (one more Trigger, severity "info",
``cleared`` set, with how long the condition lasted). A value hovering at a limit therefore raises one
event per excursion, not one per frame, and each excursion ends in one "cleared" event. Nothing here does I/O or reads a clock: timestamps come with
the values (the PMU's own, UTC) and the stale-stream monitor is ticked with an injected clock.

:class:`EventWindows` holds each trigger until its after-window has passed and then attaches the
full-rate data from ``before_s`` before to ``after_s`` after the trigger as compact arrays.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.pmu.ringbuffer import RingBuffer
from agent.points import Event
from protocols.c37118 import PmuTimeQuality, Stat, TimeQuality

# Event kinds (the ``kind`` column of the store's events table).
FREQUENCY = "pmu_frequency"
ROCOF = "pmu_rocof"
VOLTAGE = "pmu_voltage"
ANGLE_DIFFERENCE = "pmu_angle_difference"
TIME_SYNC = "pmu_time_sync"
STALE = "pmu_stale"

MAX_WINDOW_JSON = 48_000  # characters of window JSON; the store takes event data up to MAX_TEXT (65536)


@dataclass(frozen=True, slots=True)
class Trigger:
    """A condition that just raised: what the event will say, before its data window is attached."""

    kind: str
    severity: str  # info | warning | error | critical (docs/telemetry.md)
    source: str  # the PMU's name (or "a/b" for a pair)
    ts: float  # when the excursion began, s UTC (the PMU's timestamp)
    text: str
    data: dict[str, Any]
    window_ts: float | None = None  # the instant the data window centres on, when not ``ts`` (stale: last frame)
    cleared: bool = False  # the condition ended (severity "info"): ``ts`` is when the value came back


def cleared_trigger(kind: str, source: str, t: Transition, what: str, data: dict[str, Any],
                    window_ts: float | None = None) -> Trigger:  # fmt: skip
    """The "cleared" event of a condition that raised at ``t.since`` and came back to normal at ``t.ts``."""
    since = t.ts if t.since is None else t.since
    duration = max(0.0, t.ts - since)
    return Trigger(kind, "info", source, t.ts, f"{source}: {what} cleared after {duration:.1f} s",
                   {**data, "cleared": True, "raised_ts": since, "duration_s": _r(duration, 3)},
                   window_ts=window_ts, cleared=True)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Transition:
    raised: bool  # True: into alarm; False: cleared
    ts: float  # start of the excursion (raise) or of the return (clear)
    extreme: float  # furthest value from the band seen in the excursion
    since: float | None = None  # on a clear: when the excursion began (its duration is ts - since)


class Hysteresis:
    """Band ``[lo, hi]`` with a pickup delay, a deadband and a hold-off; :meth:`update` returns transitions."""

    __slots__ = ("lo", "hi", "deadband", "pickup_s", "hold_off_s", "active", "_since", "_clear_since", "_extreme",
                 "_lo", "_hi")  # fmt: skip

    def __init__(self, lo: float | None, hi: float | None, *, deadband: float = 0.0, pickup_s: float = 0.0,
                 hold_off_s: float = 0.0) -> None:  # fmt: skip
        if lo is not None and hi is not None and lo >= hi:
            raise ValueError(f"band {lo!r}..{hi!r}: lo < hi")
        if deadband < 0 or pickup_s < 0 or hold_off_s < 0:
            raise ValueError("deadband, pickup_s and hold_off_s are >= 0")
        self.lo, self.hi = lo, hi
        self.deadband, self.pickup_s, self.hold_off_s = deadband, pickup_s, hold_off_s
        self.active = False
        self._since: float | None = None
        self._clear_since: float | None = None
        self._extreme = 0.0
        # The band with open sides as infinities, for the idle fast path (one chained comparison).
        self._lo = -math.inf if lo is None else lo
        self._hi = math.inf if hi is None else hi

    @property
    def idle(self) -> bool:
        """Not raised and no excursion under way: a value inside the band changes nothing."""
        return not self.active and self._since is None

    def _excess(self, v: float) -> float:
        """How far outside the band ``v`` is (> 0 outside), in the value's unit."""
        return max(self.lo - v if self.lo is not None else -math.inf, v - self.hi if self.hi is not None else -math.inf)

    def update(self, ts: float, value: float) -> Transition | None:
        # Fast path (almost every frame): idle and inside the band, where the full path below would only
        # reset _since, which is already None. NaN fails the comparison and takes the full path.
        if not self.active and self._since is None and self._lo <= value <= self._hi:
            return None
        excess = self._excess(value)
        if not self.active:
            if excess > 0:
                if self._since is None:
                    self._since, self._extreme = ts, value
                elif excess > self._excess(self._extreme):
                    self._extreme = value
                if ts - self._since >= self.pickup_s:
                    self.active, self._clear_since = True, None
                    return Transition(True, self._since, self._extreme)
            else:
                self._since = None
            return None
        if excess > 0 and excess > self._excess(self._extreme):
            self._extreme = value
        if excess <= -self.deadband:
            if self._clear_since is None:
                self._clear_since = ts
            if ts - self._clear_since >= self.hold_off_s:
                since = self._since
                self.active, self._since = False, None
                return Transition(False, self._clear_since, self._extreme, since)
        else:
            self._clear_since = None
        return None


def _r(x: float, nd: int) -> float:
    return round(x, nd)


class FrequencyMonitor:
    """Frequency outside nominal + [lo_dev, hi_dev] Hz."""

    def __init__(self, source: str, nominal_hz: float, lo_dev_hz: float, hi_dev_hz: float, clause: str, *,
                 pickup_s: float, hold_off_s: float, deadband_hz: float = 0.02) -> None:  # fmt: skip
        self.source, self.nominal_hz, self.clause = source, nominal_hz, clause
        self.band = Hysteresis(nominal_hz + lo_dev_hz, nominal_hz + hi_dev_hz, deadband=deadband_hz,
                               pickup_s=pickup_s, hold_off_s=hold_off_s)  # fmt: skip

    def update(self, ts: float, frequency_hz: float) -> Trigger | None:
        b = self.band
        if not b.active and b._since is None and b._lo <= frequency_hz <= b._hi:  # Hysteresis.update's fast path
            return None
        t = b.update(ts, frequency_hz)
        if t is None:
            return None
        lo, hi = self.band.lo, self.band.hi
        if not t.raised:
            return cleared_trigger(FREQUENCY, self.source, t, f"frequency back inside {lo:.3f}..{hi:.3f} Hz",
                                   {"frequency_hz": _r(t.extreme, 4), "limit_lo_hz": lo, "limit_hi_hz": hi,
                                    "nominal_hz": self.nominal_hz, "clause": self.clause,
                                    "hold_off_s": b.hold_off_s})  # fmt: skip
        return Trigger(FREQUENCY, "error", self.source, t.ts,
                       f"{self.source}: frequency {t.extreme:.3f} Hz outside {lo:.3f}..{hi:.3f} Hz ({self.clause})",
                       {"frequency_hz": _r(t.extreme, 4), "limit_lo_hz": lo, "limit_hi_hz": hi,
                        "nominal_hz": self.nominal_hz, "clause": self.clause, "pickup_s": self.band.pickup_s})  # fmt: skip


class RocofMonitor:
    """|ROCOF| above ``limit_hz_per_s``."""

    def __init__(self, source: str, limit_hz_per_s: float, clause: str, *, pickup_s: float, hold_off_s: float,
                 deadband_hz_per_s: float = 0.05) -> None:  # fmt: skip
        self.source, self.clause = source, clause
        self.band = Hysteresis(-limit_hz_per_s, limit_hz_per_s, deadband=deadband_hz_per_s, pickup_s=pickup_s,
                               hold_off_s=hold_off_s)  # fmt: skip

    def update(self, ts: float, rocof_hz_per_s: float) -> Trigger | None:
        b = self.band
        if not b.active and b._since is None and b._lo <= rocof_hz_per_s <= b._hi:  # Hysteresis.update's fast path
            return None
        t = b.update(ts, rocof_hz_per_s)
        if t is None:
            return None
        lim = self.band.hi
        if not t.raised:
            return cleared_trigger(ROCOF, self.source, t, f"ROCOF back within +-{lim:g} Hz/s",
                                   {"rocof_hz_per_s": _r(t.extreme, 3), "limit_hz_per_s": lim, "clause": self.clause,
                                    "hold_off_s": b.hold_off_s})  # fmt: skip
        return Trigger(ROCOF, "error", self.source, t.ts,
                       f"{self.source}: ROCOF {t.extreme:+.2f} Hz/s beyond +-{lim:g} Hz/s ({self.clause})",
                       {"rocof_hz_per_s": _r(t.extreme, 3), "limit_hz_per_s": lim, "clause": self.clause,
                        "pickup_s": self.band.pickup_s})  # fmt: skip


class VoltageMonitor:
    """Each voltage phasor's magnitude, in pu of ``nominal_v``, outside [lo_pu, hi_pu]; one band per phase."""

    def __init__(self, source: str, phases: Sequence[str], nominal_v: float, lo_pu: float, hi_pu: float,
                 clause: str, *, pickup_s: float, hold_off_s: float, deadband_pu: float = 0.005,
                 severity: str = "warning") -> None:  # fmt: skip
        if nominal_v <= 0:
            raise ValueError(f"nominal_v = {nominal_v!r}: > 0")
        self.source, self.phases, self.nominal_v, self.clause, self.severity = (
            source, tuple(phases), nominal_v, clause, severity)  # fmt: skip
        self.bands = [Hysteresis(lo_pu, hi_pu, deadband=deadband_pu, pickup_s=pickup_s, hold_off_s=hold_off_s)
                      for _ in self.phases]  # fmt: skip
        self._lo_pu, self._hi_pu, self._n = lo_pu, hi_pu, len(self.phases)
        self._idle = True  # every band idle (see Hysteresis.idle): the fast path applies

    def update_words(self, ts: float, words: Sequence[float], phasors: Sequence[tuple[int, float]],
                     polar: bool) -> list[Trigger]:  # fmt: skip
        """:meth:`update` with each magnitude read from a data frame's ``words`` (C37.118.2-2011 6.3 Table 5).

        ``phasors`` gives each phase's (word index, scale to V): polar, the magnitude is ``|words[i] * scale|``;
        rectangular, the hypotenuse of ``words[i]`` and ``words[i + 1]`` scaled. :meth:`update`'s fast path
        runs on the words, so a frame with every phase in the band builds no list.
        """
        if self._idle and len(phasors) == self._n:
            lo, hi, nominal = self._lo_pu, self._hi_pu, self.nominal_v
            if polar:
                for i, k in phasors:
                    m = words[i] * k
                    if not lo <= (-m if m < 0 else m) / nominal <= hi:
                        break
                else:
                    return []
            else:
                hypot = math.hypot
                for i, k in phasors:
                    if not lo <= hypot(words[i] * k, words[i + 1] * k) / nominal <= hi:
                        break
                else:
                    return []
        if polar:
            mags = [-m if (m := words[i] * k) < 0 else m for i, k in phasors]
        else:
            mags = [math.hypot(words[i] * k, words[i + 1] * k) for i, k in phasors]
        return self.update(ts, mags)

    def update(self, ts: float, magnitudes_v: Sequence[float]) -> list[Trigger]:
        # Fast path: every band idle and every phase inside the band: no band would change state.
        if self._idle and len(magnitudes_v) == self._n:
            lo, hi, nominal = self._lo_pu, self._hi_pu, self.nominal_v
            for mag in magnitudes_v:
                if not lo <= mag / nominal <= hi:
                    break
            else:
                return []
        out = []
        nominal = self.nominal_v
        self._idle = False  # until every band has been updated (a length mismatch raises below)
        for phase, band, mag in zip(self.phases, self.bands, magnitudes_v, strict=True):
            t = band.update(ts, mag / nominal)
            if t is None:
                continue
            if not t.raised:
                out.append(cleared_trigger(VOLTAGE, self.source, t,
                                           f"{phase} voltage back inside {band.lo:g}..{band.hi:g} pu",
                                           {"phase": phase, "voltage_pu": _r(t.extreme, 5),
                                            "voltage_v": _r(t.extreme * self.nominal_v, 2), "nominal_v": self.nominal_v,
                                            "limit_lo_pu": band.lo, "limit_hi_pu": band.hi, "clause": self.clause,
                                            "hold_off_s": band.hold_off_s}))  # fmt: skip
                continue
            side = "below" if t.extreme < band.lo else "above"
            out.append(Trigger(VOLTAGE, self.severity, self.source, t.ts,
                               f"{self.source}: {phase} voltage {t.extreme:.4f} pu {side} "
                               f"{band.lo:g}..{band.hi:g} pu ({self.clause})",
                               {"phase": phase, "voltage_pu": _r(t.extreme, 5),
                                "voltage_v": _r(t.extreme * self.nominal_v, 2), "nominal_v": self.nominal_v,
                                "limit_lo_pu": band.lo, "limit_hi_pu": band.hi, "clause": self.clause,
                                "pickup_s": band.pickup_s}))  # fmt: skip
        self._idle = all(band.idle for band in self.bands)
        return out


def wrap_deg(angle_deg: float) -> float:
    """An angle difference brought into (-180, 180] degrees."""
    a = math.fmod(angle_deg + 180.0, 360.0)
    if a <= 0:
        a += 360.0
    return a - 180.0


class AngleDifferenceMonitor:
    """|angle(a) - angle(b)| of one phasor at two PMUs, at the same timestamp, beyond ``limit_deg``."""

    def __init__(self, pmu_a: str, pmu_b: str, phasor: str, limit_deg: float, *, pickup_s: float,
                 hold_off_s: float, deadband_deg: float = 0.5) -> None:  # fmt: skip
        self.pmu_a, self.pmu_b, self.phasor, self.limit_deg = pmu_a, pmu_b, phasor, limit_deg
        self.source = f"{pmu_a}/{pmu_b}"
        self.band = Hysteresis(-limit_deg, limit_deg, deadband=deadband_deg, pickup_s=pickup_s,
                               hold_off_s=hold_off_s)  # fmt: skip

    def update(self, ts: float, angle_a_rad: float, angle_b_rad: float) -> Trigger | None:
        diff = wrap_deg(math.degrees(angle_a_rad - angle_b_rad))
        t = self.band.update(ts, diff)
        if t is None:
            return None
        if not t.raised:
            return cleared_trigger(ANGLE_DIFFERENCE, self.source, t,
                                   f"{self.phasor} angle difference back within +-{self.limit_deg:g} deg",
                                   {"pmu_a": self.pmu_a, "pmu_b": self.pmu_b, "phasor": self.phasor,
                                    "angle_difference_deg": _r(t.extreme, 3), "limit_deg": self.limit_deg,
                                    "hold_off_s": self.band.hold_off_s})  # fmt: skip
        return Trigger(ANGLE_DIFFERENCE, "warning", self.source, t.ts,
                       f"{self.source}: {self.phasor} angle difference {t.extreme:+.2f} deg beyond "
                       f"+-{self.limit_deg:g} deg (configured limit)",
                       {"pmu_a": self.pmu_a, "pmu_b": self.pmu_b, "phasor": self.phasor,
                        "angle_difference_deg": _r(t.extreme, 3), "limit_deg": self.limit_deg,
                        "clause": "configured per pair (no standard default)", "pickup_s": self.band.pickup_s})  # fmt: skip


def sync_problems(stat: Stat, time_quality: TimeQuality, worst_time_quality: int) -> list[str]:
    """Why a frame's time cannot be trusted (C37.118.2-2011 6.3 Table 7 STAT, 6.2.2 Table 3/4 FRACSEC)."""
    out = []
    if stat.sync_lost:
        out.append("STAT bit 13: PMU not in sync with UTC")
    if stat.unlocked_time:
        out.append(f"STAT bits 5-4: unlocked time code {int(stat.unlocked_time)}")
    if stat.time_quality != PmuTimeQuality.NOT_USED and stat.time_quality >= worst_time_quality:
        out.append(f"STAT bits 8-6: time quality code {int(stat.time_quality)} (>= {worst_time_quality})")
    if time_quality.code == 15:
        out.append("FRACSEC time quality 15: clock failure")
    return out


class TimeSyncMonitor:
    """Loss of time synchronisation from the STAT word and the message time quality; immediate pickup."""

    def __init__(self, source: str, *, worst_time_quality: int = 4, hold_off_s: float) -> None:
        self.source, self.worst_time_quality = source, worst_time_quality
        self.band = Hysteresis(None, 0.5, pickup_s=0.0, hold_off_s=hold_off_s)
        self._reasons: list[str] = []  # why it raised, repeated in the cleared event

    def update_words(self, ts: float, stat_word: int, fracsec_word: int) -> Trigger | None:
        """:meth:`update` from the raw STAT word and FRACSEC word (time quality in bits 31-24), for every frame.

        The idle check of :meth:`update` on the bits themselves (6.3 Table 7: bit 13 sync, bits 5-4 unlocked
        time, bits 8-6 time quality; 6.2.2 Table 3: FRACSEC bits 27-24, 15 = clock failure), so a frame
        with nothing to report builds no :class:`Stat`.
        """
        b = self.band
        if (not b.active and b._since is None and not stat_word & 0x2030
                and ((tq := (stat_word >> 6) & 7) == PmuTimeQuality.NOT_USED or tq < self.worst_time_quality)
                and (fracsec_word >> 24) & 0x0F != 15):  # fmt: skip
            return None
        return self.update(ts, Stat.from_word(stat_word), TimeQuality.from_byte(fracsec_word >> 24))

    def update(self, ts: float, stat: Stat, time_quality: TimeQuality) -> Trigger | None:
        b = self.band
        if (not b.active and b._since is None and not stat.sync_lost and not stat.unlocked_time
                and (stat.time_quality == PmuTimeQuality.NOT_USED or stat.time_quality < self.worst_time_quality)
                and time_quality.code != 15):  # fmt: skip
            return None  # idle and no problem (the conditions of sync_problems, negated): nothing changes
        reasons = sync_problems(stat, time_quality, self.worst_time_quality)
        t = self.band.update(ts, 1.0 if reasons else 0.0)
        if t is None:
            return None
        if not t.raised:
            return cleared_trigger(TIME_SYNC, self.source, t, "time synchronisation regained",
                                   {"reasons": self._reasons, "stat": stat.word,
                                    "time_quality_code": int(stat.time_quality), "hold_off_s": self.band.hold_off_s,
                                    "clause": "IEEE C37.118.2-2011 6.3 Table 7 (STAT bits 13, 8-6, 5-4); 6.2.2 Table 4"})  # fmt: skip
        self._reasons = reasons
        return Trigger(TIME_SYNC, "error", self.source, t.ts,
                       f"{self.source}: time synchronisation lost: {'; '.join(reasons)}",
                       {"reasons": reasons, "stat": stat.word, "time_quality_code": int(stat.time_quality),
                        "unlocked_time_code": int(stat.unlocked_time), "fracsec_quality": time_quality.code,
                        "limit_time_quality_code": self.worst_time_quality,
                        "clause": "IEEE C37.118.2-2011 6.3 Table 7 (STAT bits 13, 8-6, 5-4); 6.2.2 Table 4"})  # fmt: skip


class StaleMonitor:
    """No frame for ``stale_after_s`` on the injected ``clock``: one event per outage, clears on the next frame.

    ``clock`` gives s UTC (the event's timestamp); :meth:`frame` marks each arrival (and returns the
    "cleared" trigger when it ends an outage), :meth:`tick` checks.
    """

    def __init__(self, source: str, stale_after_s: float, clock: Callable[[], float]) -> None:
        if stale_after_s <= 0:
            raise ValueError(f"stale_after_s = {stale_after_s!r}: > 0")
        self.source, self.stale_after_s, self.clock = source, stale_after_s, clock
        self.last_arrival: float | None = None
        self.last_frame_ts: float | None = None
        self.active = False
        self._raised: tuple[float, float] = (0.0, 0.0)  # (stale event time, last arrival before the silence)

    def frame(self, frame_ts: float, now: float | None = None) -> Trigger | None:
        """A frame arrived (at ``now``, read from the clock when not given); the "cleared" trigger if it ends an outage."""
        now = self.clock() if now is None else now
        self.last_arrival, self.last_frame_ts = now, frame_ts
        if not self.active:
            return None
        self.active = False
        raised_at, silent_from = self._raised
        return cleared_trigger(STALE, self.source, Transition(False, now, 0.0, raised_at), "stale stream",
                               {"silent_s": _r(now - silent_from, 3), "stale_after_s": self.stale_after_s,
                                "first_frame_ts": frame_ts, "clause": "configured stale_after_s"},
                               window_ts=frame_ts)  # fmt: skip

    def start(self) -> None:
        """Begin watching (a stream never heard from goes stale too)."""
        if self.last_arrival is None:
            self.last_arrival = self.clock()

    def tick(self) -> Trigger | None:
        now = self.clock()
        if self.active or self.last_arrival is None or now - self.last_arrival < self.stale_after_s:
            return None
        self.active = True
        self._raised = (now, self.last_arrival)
        silent = now - self.last_arrival
        return Trigger(STALE, "warning", self.source, now,
                       f"{self.source}: no data frame for {silent:.1f} s (limit {self.stale_after_s:g} s)",
                       {"silent_s": _r(silent, 3), "stale_after_s": self.stale_after_s,
                        "last_frame_ts": self.last_frame_ts, "clause": "configured stale_after_s"},
                       window_ts=self.last_frame_ts if self.last_frame_ts is not None else now)  # fmt: skip


# ---- event windows -------------------------------------------------------------------------------------


def compact_window(ts: Sequence[float], rows: Sequence[tuple], channels: Sequence[str], t_ref: float,
                   *, digits: Sequence[int] | None = None, max_chars: int = MAX_WINDOW_JSON) -> dict[str, Any]:  # fmt: skip
    """Rows as one array per channel plus ``t_ms`` (offsets from ``t_ref``), decimated until it fits.

    ``digits`` rounds each channel (fewer characters). Decimation keeps every k-th sample and says so
    (``decimation``), so an operator knows the window is not full rate.
    """
    digits = digits or [4] * len(channels)
    step = 1
    while True:
        idx = range(0, len(ts), step)
        win: dict[str, Any] = {
            "t_ref": t_ref,
            "decimation": step,
            "t_ms": [round((ts[i] - t_ref) * 1000, 1) for i in idx],
        }
        for c, (name, nd) in enumerate(zip(channels, digits, strict=True)):
            win[name] = [None if (v := rows[i][c]) is None or not math.isfinite(v) else round(v, nd) for i in idx]
        if len(json.dumps(win, separators=(",", ":"))) <= max_chars or len(ts) // step <= 1:
            return win
        step *= 2


@dataclass
class _Pending:
    trigger: Trigger
    buffer: RingBuffer
    channels: tuple[str, ...]
    digits: tuple[int, ...]
    due_data_ts: float  # release when the stream's data time reaches this...
    due_clock: float  # ...or when the clock passes this (the stream stopped)


@dataclass
class EventWindows:
    """Triggers waiting for their after-window; :meth:`poll` returns the events that are complete."""

    before_s: float
    after_s: float
    clock: Callable[[], float]  # s UTC, the same clock as the stale monitor's
    grace_s: float = 1.0  # extra wait past the after-window for data still in flight
    _pending: list[_Pending] = field(default_factory=list)

    def add(self, trigger: Trigger, buffer: RingBuffer, channels: Sequence[str], digits: Sequence[int],
            *, immediate: bool = False) -> None:  # fmt: skip
        after = 0.0 if immediate else self.after_s
        self._pending.append(_Pending(trigger, buffer, tuple(channels), tuple(digits), trigger.ts + after,
                                      self.clock() + after + (0.0 if immediate else self.grace_s)))  # fmt: skip

    def __len__(self) -> int:
        return len(self._pending)

    def poll(self) -> list[Event]:
        now = self.clock()
        done, keep = [], []
        for p in self._pending:
            last = p.buffer.last_ts
            if (last is not None and last >= p.due_data_ts) or now >= p.due_clock:
                done.append(self._finish(p))
            else:
                keep.append(p)
        self._pending = keep
        return done

    def flush(self) -> list[Event]:
        """Everything pending, with what data there is (shutdown)."""
        done = [self._finish(p) for p in self._pending]
        self._pending = []
        return done

    def _finish(self, p: _Pending) -> Event:
        t = p.trigger
        centre = t.ts if t.window_ts is None else t.window_ts
        ts, rows = p.buffer.window(centre - self.before_s, centre + self.after_s)
        win = compact_window(ts, rows, p.channels, centre, digits=p.digits)
        win.update(before_s=self.before_s, after_s=self.after_s)
        data = dict(t.data, window=win)
        return Event(t.ts, t.kind, t.severity, t.source, t.text, data)


__all__ = [
    "ANGLE_DIFFERENCE", "FREQUENCY", "ROCOF", "STALE", "TIME_SYNC", "VOLTAGE", "AngleDifferenceMonitor",
    "EventWindows", "FrequencyMonitor", "Hysteresis", "RocofMonitor", "StaleMonitor", "TimeSyncMonitor", "Transition",
    "Trigger", "VoltageMonitor", "cleared_trigger", "compact_window", "sync_problems", "wrap_deg",
]  # fmt: skip
