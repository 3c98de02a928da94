"""The feeder voltage picture: every monitored voltage, per bus and phase, on the 120 V base, with its age.

:func:`voltage_picture` is a pure function of the live snapshot (the latest :class:`~agent.points.Reading`
of each point) and the time: the monitoring task, ``gridedge status``, control and the tests all read the
same record.

- A source (one ``[[monitoring.voltages]]`` entry) is *usable* when its latest reading is GOOD, a finite
  number in volts, and at most ``stale_after_s`` old. Otherwise its ``state`` says why: ``missing`` (never
  read), ``stale`` (too old, or the poller marked it STALE), ``invalid``, ``flagged`` or ``estimated`` (the
  reading's quality), ``not_voltage`` (a value that is not a number, or a unit that is not V), ``future``
  (timestamped more than ``stale_after_s`` ahead of the picture's time: that device's clock and the
  agent's disagree, and a reading that never ages would never go stale).
- The value of a bus and phase is that of its freshest usable source (the latest timestamp: the most recent
  measurement of a voltage that moves is the best one); on equal timestamps the entry listed first in the
  configuration wins. With no usable source the bus-phase has no value and is stale.
- Each value is classed against ANSI C84.1 (agent/monitoring/limits.py): ``A`` inside Range A, ``B``
  outside Range A and inside Range B, ``outside_b`` outside Range B; limits are inside their range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from agent.monitoring.config import MonitoringConfig, VoltagePoint
from agent.monitoring.limits import SERVICE_VOLTAGE_RANGES
from agent.monitoring.perunit import base_v, per_unit
from agent.points import Quality, Reading

# Source states (SourceVoltage.state)
OK = "ok"
MISSING = "missing"
STALE = "stale"
NOT_VOLTAGE = "not_voltage"
FUTURE = "future"
# Range classes (BusPhaseVoltage.range_class)
IN_A = "A"
IN_B = "B"  # outside Range A, inside Range B
OUTSIDE_B = "outside_b"


class Latest(Protocol):
    """Where the latest readings are: the agent's :class:`~agent.acquisition.Snapshot`."""

    def get(self, point: str) -> Reading | None: ...


def range_class(v: float) -> str:
    """``A``, ``B`` or ``outside_b``: where ``v`` [V, 120 V base] sits in ANSI C84.1 Table 1."""
    if SERVICE_VOLTAGE_RANGES["A"].contains(v):
        return IN_A
    if SERVICE_VOLTAGE_RANGES["B"].contains(v):
        return IN_B
    return OUTSIDE_B


@dataclass(frozen=True, slots=True)
class SourceVoltage:
    """One configured voltage as the snapshot has it at the picture's time."""

    point: str
    bus: str
    phase: str
    end_of_line: bool
    state: str  # ok, missing, stale, future, invalid, flagged, estimated, not_voltage
    reading: float | None  # as measured [V]
    ts: float | None  # the reading's timestamp [s UTC]
    age_s: float | None
    quality: str | None  # the reading's quality; None: never read
    value_v: float | None  # on the 120 V base [V]; None when the reading has no number
    value_pu: float | None

    @property
    def usable(self) -> bool:
        return self.state == OK


@dataclass(frozen=True, slots=True)
class BusPhaseVoltage:
    """The value used for one bus and phase: its freshest usable source's, or none (stale)."""

    bus: str
    phase: str
    end_of_line: bool
    sources: tuple[str, ...]  # every configured point of this bus and phase, in configuration order
    source: str | None  # the point whose value is used; None: no usable source
    value_v: float | None  # [V, 120 V base]
    value_pu: float | None
    ts: float | None
    age_s: float | None
    quality: str | None
    range_class: str | None  # A, B or outside_b; None when stale

    @property
    def stale(self) -> bool:
        """No usable source: the bus-phase has no value."""
        return self.source is None

    @property
    def key(self) -> str:
        """``<bus>/<phase>``: how status and events name it."""
        return f"{self.bus}/{self.phase}"


@dataclass(frozen=True, slots=True)
class VoltagePicture:
    """Every monitored voltage at ``ts``: the sources, the value per bus and phase, the extremes."""

    ts: float
    stale_after_s: float
    sources: tuple[SourceVoltage, ...]
    bus_phases: tuple[BusPhaseVoltage, ...]  # in the order their first source is configured

    def get(self, bus: str, phase: str) -> BusPhaseVoltage | None:
        for bp in self.bus_phases:
            if bp.bus == bus and bp.phase == phase:
                return bp
        return None

    def _valued(self, end_of_line: bool) -> list[BusPhaseVoltage]:
        return [bp for bp in self.bus_phases if not bp.stale and (bp.end_of_line or not end_of_line)]

    def lowest(self, *, end_of_line: bool = False) -> BusPhaseVoltage | None:
        """The lowest bus-phase value (of end-of-line buses only, if asked); None when none has a value."""
        valued = self._valued(end_of_line)
        return min(valued, key=lambda bp: bp.value_v or 0.0) if valued else None

    def highest(self, *, end_of_line: bool = False) -> BusPhaseVoltage | None:
        """The highest bus-phase value (of end-of-line buses only, if asked); None when none has a value."""
        valued = self._valued(end_of_line)
        return max(valued, key=lambda bp: bp.value_v or 0.0) if valued else None

    @property
    def stale_sources(self) -> tuple[SourceVoltage, ...]:
        """The sources without a usable reading, each with its ``state``."""
        return tuple(s for s in self.sources if not s.usable)

    def stale_bus_phases(self, *, end_of_line: bool = False) -> tuple[BusPhaseVoltage, ...]:
        """The bus-phases with no usable source (of end-of-line buses only, if asked)."""
        return tuple(bp for bp in self.bus_phases if bp.stale and (bp.end_of_line or not end_of_line))


def source_voltage(v: VoltagePoint, reading: Reading | None, now: float, stale_after_s: float) -> SourceVoltage:
    """One configured voltage from its latest ``reading`` at ``now`` (see the module docstring for the states)."""
    if reading is None:
        return SourceVoltage(v.point, v.bus, v.phase, v.end_of_line, MISSING, None, None, None, None, None, None)
    age = now - reading.ts
    raw = reading.value
    number = isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw)
    value_v = value_pu = None
    if number:
        value_v = base_v(float(raw), pt_ratio=v.pt_ratio, nominal_v=v.nominal_v)
        value_pu = per_unit(value_v)
    quality = str(reading.quality)
    if reading.quality == Quality.STALE or age > stale_after_s:
        state = STALE
    elif age < -stale_after_s:
        state = FUTURE
    elif reading.quality != Quality.GOOD:
        state = quality
    elif not number or reading.unit != "V":
        state = NOT_VOLTAGE
    else:
        state = OK
    return SourceVoltage(v.point, v.bus, v.phase, v.end_of_line, state, float(raw) if number else None, reading.ts,
                         age, quality, value_v, value_pu)  # fmt: skip


def voltage_picture(config: MonitoringConfig, latest: Latest, now: float) -> VoltagePicture:
    """The picture of ``config``'s voltages from the ``latest`` readings at ``now`` [s UTC]."""
    sources = tuple(source_voltage(v, latest.get(v.point), now, config.stale_after_s) for v in config.voltages)
    groups: dict[tuple[str, str], list[SourceVoltage]] = {}
    for s in sources:
        groups.setdefault((s.bus, s.phase), []).append(s)
    bus_phases = []
    for (bus, phase), group in groups.items():
        names = tuple(s.point for s in group)
        best: SourceVoltage | None = None
        for s in group:  # the latest usable; the first listed on a tie
            if s.usable and (best is None or (s.ts or 0.0) > (best.ts or 0.0)):
                best = s
        if best is None:
            bus_phases.append(BusPhaseVoltage(bus, phase, group[0].end_of_line, names, None, None, None, None, None,
                                              None, None))  # fmt: skip
            continue
        assert best.value_v is not None
        bus_phases.append(BusPhaseVoltage(bus, phase, best.end_of_line, names, best.point, best.value_v,
                                          best.value_pu, best.ts, best.age_s, best.quality,
                                          range_class(best.value_v)))  # fmt: skip
    return VoltagePicture(now, config.stale_after_s, sources, tuple(bus_phases))


__all__ = [
    "FUTURE", "IN_A", "IN_B", "MISSING", "NOT_VOLTAGE", "OK", "OUTSIDE_B", "STALE", "BusPhaseVoltage", "Latest",
    "SourceVoltage", "VoltagePicture", "range_class", "source_voltage", "voltage_picture",
]  # fmt: skip
