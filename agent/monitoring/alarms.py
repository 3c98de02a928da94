"""Voltage alarms from successive pictures: ANSI C84.1 range excursions and stale data, as events.

Pure state machines: :meth:`VoltageAlarms.update` takes a :class:`~agent.monitoring.picture.VoltagePicture`
and returns the events it causes; nothing here does I/O or reads a clock.

Range excursions (``voltage_range_a``, ``voltage_range_b``), per bus and phase, per range, low and high
apart, on the value the picture uses (its freshest usable source):

- Timing is measurement time: each new value is fed with its reading's timestamp (a value already fed, or
  an older one from another source, is not fed again). An excursion raises once a value taken ``pickup_s``
  or more after the first value outside is still outside: one outside reading between two inside ones
  never raises, whatever the polling rate. The event's ``ts`` is the first value outside.
- It clears once a value taken ``hold_off_s`` or more after the first value back inside is still inside
  (a "cleared" event, severity info, ``ts`` the first value back inside, with the excursion's duration and
  extreme). A value hovering at a limit therefore raises one event pair per excursion.
- A bus-phase without a usable value neither raises nor clears: its sources' ``voltage_data_stale`` events
  say the data stopped, and the excursion goes on when values come back.
- With ``range = "A"`` Range A (warning) and Range B (error) excursions both raise; with ``range = "B"``
  only Range B's.

Stale data (``voltage_data_stale``), per configured point: raised when the point has had no usable reading
for ``stale_after_s`` (counted from the monitoring's start for a point never read), cleared by its next
usable reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.monitoring.config import MonitoringConfig
from agent.monitoring.limits import SERVICE_VOLTAGE_RANGES, VoltageRange
from agent.monitoring.perunit import per_unit
from agent.monitoring.picture import BusPhaseVoltage, SourceVoltage, VoltagePicture
from agent.points import Event

# Event kinds (the ``kind`` column of the store's events table)
RANGE_KINDS = {"A": "voltage_range_a", "B": "voltage_range_b"}
DATA_STALE = "voltage_data_stale"
RANGE_SEVERITY = {"A": "warning", "B": "error"}  # outside Range B: corrective action should be taken promptly
LOW, HIGH = "low", "high"


@dataclass(frozen=True, slots=True)
class Transition:
    """A limit alarm that raised (``raised``) or cleared, and the values that made it."""

    raised: bool
    ts: float  # raise: the first value outside; clear: the first value back inside [s UTC]
    decided_ts: float  # the value that completed the pickup or the hold-off [s UTC]
    extreme_v: float  # the furthest value outside the limit in the excursion [V, 120 V base]
    value_v: float  # the value that completed the pickup or the hold-off
    since: float  # the excursion's first value outside [s UTC]


class LimitAlarm:
    """One side (``low`` or ``high``) of one range for one bus-phase, with pickup and hold-off (module docstring)."""

    __slots__ = ("range", "side", "pickup_s", "hold_off_s", "active", "since", "clear_since", "extreme_v")

    def __init__(self, rng: VoltageRange, side: str, *, pickup_s: float, hold_off_s: float) -> None:
        if side not in (LOW, HIGH):
            raise ValueError(f"side = {side!r}: {LOW!r} or {HIGH!r}")
        if pickup_s < 0 or hold_off_s < 0:
            raise ValueError("pickup_s and hold_off_s are >= 0")
        self.range, self.side, self.pickup_s, self.hold_off_s = rng, side, pickup_s, hold_off_s
        self.active = False
        self.since: float | None = None  # the excursion's first value outside (pending or raised)
        self.clear_since: float | None = None  # the first value back inside while raised
        self.extreme_v = 0.0

    @property
    def limit_v(self) -> float:
        return self.range.lo_v if self.side == LOW else self.range.hi_v

    def outside(self, v: float) -> bool:
        return self.range.below(v) if self.side == LOW else self.range.above(v)

    def _further(self, v: float) -> bool:
        return v < self.extreme_v if self.side == LOW else v > self.extreme_v

    def update(self, ts: float, v: float) -> Transition | None:
        """Feed one new value ``v`` [V, 120 V base] taken at ``ts`` [s]; the transition it causes, if any."""
        outside = self.outside(v)
        if not self.active:
            if not outside:
                self.since = None
                return None
            if self.since is None:
                self.since, self.extreme_v = ts, v
            elif self._further(v):
                self.extreme_v = v
            if ts - self.since < self.pickup_s:
                return None
            self.active, self.clear_since = True, None
            return Transition(True, self.since, ts, self.extreme_v, v, self.since)
        if outside:
            self.clear_since = None
            if self._further(v):
                self.extreme_v = v
            return None
        if self.clear_since is None:
            self.clear_since = ts
        if ts - self.clear_since < self.hold_off_s:
            return None
        since = self.since if self.since is not None else self.clear_since
        self.active, self.since = False, None
        return Transition(False, self.clear_since, ts, self.extreme_v, v, since)


@dataclass(slots=True)
class _Watch:
    """Stale-data state of one configured point."""

    last_usable_ts: float | None = None
    active: bool = False
    raised_ts: float = 0.0


def _r(x: float, nd: int) -> float:
    return round(x, nd)


class VoltageAlarms:
    """Every range and stale-data alarm of a :class:`MonitoringConfig`; ``started`` [s UTC] begins the watch."""

    def __init__(self, config: MonitoringConfig, started: float) -> None:
        self.config = config
        self.started = started
        self._alarms: dict[tuple[str, str], tuple[LimitAlarm, ...]] = {}
        for v in config.voltages:
            key = (v.bus, v.phase)
            if key not in self._alarms:
                pickup, hold_off = config.pickup_s, config.hold_off_s
                ranges = [SERVICE_VOLTAGE_RANGES[name] for name in config.alarm_ranges]
                self._alarms[key] = tuple(
                    LimitAlarm(r, side, pickup_s=pickup, hold_off_s=hold_off) for r in ranges for side in (LOW, HIGH)
                )
        self._fed: dict[tuple[str, str], float] = {}  # the timestamp of the last value fed per bus-phase
        self._watch = {v.point: _Watch() for v in config.voltages}

    def update(self, picture: VoltagePicture) -> list[Event]:
        """The events ``picture`` causes: range transitions first (in bus-phase order), then stale data."""
        events: list[Event] = []
        for bp in picture.bus_phases:
            events += self._ranges(bp)
        for s in picture.sources:
            ev = self._stale(s, picture.ts)
            if ev is not None:
                events.append(ev)
        return events

    def active(self) -> dict[str, list[str]]:
        """The raised range alarms by ``<bus>/<phase>``, each as ``"<range> <side>"`` (``"A low"``)."""
        out: dict[str, list[str]] = {}
        for (bus, phase), alarms in self._alarms.items():
            names = [f"{a.range.name} {a.side}" for a in alarms if a.active]
            if names:
                out[f"{bus}/{phase}"] = names
        return out

    def stale_points(self) -> list[str]:
        """The points whose ``voltage_data_stale`` is raised."""
        return [point for point, w in self._watch.items() if w.active]

    # ---- ranges ------------------------------------------------------------------------------------------

    def _ranges(self, bp: BusPhaseVoltage) -> list[Event]:
        if bp.stale or bp.ts is None or bp.value_v is None or bp.source is None:
            return []
        key = (bp.bus, bp.phase)
        last = self._fed.get(key)
        if last is not None and bp.ts <= last:
            return []  # the value already fed, or an older one from another source
        self._fed[key] = bp.ts
        out = []
        for alarm in self._alarms.get(key, ()):
            t = alarm.update(bp.ts, bp.value_v)
            if t is not None:
                out.append(self._range_event(bp, alarm, t))
        return out

    def _range_event(self, bp: BusPhaseVoltage, alarm: LimitAlarm, t: Transition) -> Event:
        rng = alarm.range
        kind = RANGE_KINDS[rng.name]
        where = f"bus {bp.bus} phase {bp.phase}"
        data: dict[str, Any] = {
            "bus": bp.bus, "phase": bp.phase, "side": alarm.side, "range": rng.name, "end_of_line": bp.end_of_line,
            "value_v": _r(t.value_v, 3), "value_pu": _r(per_unit(t.value_v), 5),
            "extreme_v": _r(t.extreme_v, 3), "extreme_pu": _r(per_unit(t.extreme_v), 5),
            "limit_v": alarm.limit_v, "limit_pu": _r(per_unit(alarm.limit_v), 5),
            "source_point": bp.source, "clause": rng.source,
        }  # fmt: skip
        word = "below" if alarm.side == LOW else "above"
        if not t.raised:
            duration = max(0.0, t.ts - t.since)
            data.update(cleared=True, raised_ts=t.since, duration_s=_r(duration, 3), hold_off_s=alarm.hold_off_s,
                        decided_ts=t.decided_ts)  # fmt: skip
            text = (f"{where}: back inside Range {rng.name} ({t.value_v:.2f} V on the 120 V base) after "
                    f"{duration:.1f} s {word} it, extreme {t.extreme_v:.2f} V")  # fmt: skip
            return Event(t.ts, kind, "info", bp.key, text, data)
        data.update(pickup_s=alarm.pickup_s, decided_ts=t.decided_ts)
        bound = "minimum" if alarm.side == LOW else "maximum"
        text = (f"{where}: {t.value_v:.2f} V ({per_unit(t.value_v):.4f} pu) {word} Range {rng.name}'s {bound} "
                f"{alarm.limit_v:g} V on the 120 V base ({rng.source}), from {bp.source}")  # fmt: skip
        return Event(t.ts, kind, RANGE_SEVERITY[rng.name], bp.key, text, data)

    # ---- stale data --------------------------------------------------------------------------------------

    def _stale(self, s: SourceVoltage, now: float) -> Event | None:
        w = self._watch.get(s.point)
        if w is None:
            return None
        stale_after = self.config.stale_after_s
        if s.usable:
            assert s.ts is not None
            if w.last_usable_ts is None or s.ts > w.last_usable_ts:
                w.last_usable_ts = s.ts
            if not w.active:
                return None
            w.active = False
            ts = max(s.ts, w.raised_ts)
            duration = ts - w.raised_ts
            return Event(ts, DATA_STALE, "info", s.point,
                                   f"{s.point} (bus {s.bus} phase {s.phase}): usable again after {duration:.1f} s",
                                   {"point": s.point, "bus": s.bus, "phase": s.phase, "cleared": True,
                                    "raised_ts": w.raised_ts, "duration_s": _r(duration, 3),
                                    "stale_after_s": stale_after})  # fmt: skip
        reference = w.last_usable_ts if w.last_usable_ts is not None else self.started
        silent = now - reference
        if w.active or silent <= stale_after:
            return None
        w.active, w.raised_ts = True, now
        last = "never read" if s.state == "missing" else f"latest reading {s.state}"
        return Event(now, DATA_STALE, "warning", s.point,
                               f"{s.point} (bus {s.bus} phase {s.phase}): no usable reading for {silent:.1f} s "
                               f"(limit {stale_after:g} s; {last})",
                               {"point": s.point, "bus": s.bus, "phase": s.phase, "state": s.state,
                                "quality": s.quality, "last_usable_ts": w.last_usable_ts, "silent_s": _r(silent, 3),
                                "stale_after_s": stale_after, "end_of_line": s.end_of_line,
                                "clause": "configured stale_after_s"})  # fmt: skip


__all__ = ["DATA_STALE", "HIGH", "LOW", "RANGE_KINDS", "RANGE_SEVERITY", "LimitAlarm", "Transition",
           "VoltageAlarms"]  # fmt: skip
