"""The ``[monitoring]`` section -> typed configuration (docs/monitoring.md).

agent/config.py reads the site file and hands this section, with its shared Checker, the devices' register
maps and the PMU names, to :func:`parse_monitoring`; every problem is recorded with its key path, value and
what is allowed. A device point is checked against the device's register map here, at configuration time;
a PMU phasor's name comes from the PMU's configuration frame at run time, so only its PMU and the form
``<pmu>.<phasor>.mag`` are checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from agent.monitoring.limits import SERVICE_VOLTAGE_RANGES
from protocols.configcheck import MISSING, Checker

PHASES = ("a", "b", "c")
MONITORING_KEYS = frozenset({"range", "pickup_s", "hold_off_s", "stale_after_s", "voltages"})
VOLTAGE_KEYS = frozenset({"point", "bus", "phase", "pt_ratio", "nominal_v", "end_of_line"})
#: A PMU's voltage magnitude as agent/pmu/ingest.py names it: ``<pmu>.<phasor>.mag`` (volts, phase-neutral).
PMU_MAGNITUDE_SUFFIX = ".mag"
#: Units of a register-map point that is a voltage.
VOLTAGE_UNITS = ("V",)

# Defaults: ours, not the standard's (ANSI C84.1 speaks of sustained voltages and gives no duration).
PICKUP_S = 5.0  # a value outside for this long (in measurement time) raises: longer than one poll's blip
HOLD_OFF_S = 10.0  # back inside for this long before the alarm clears: one excursion, one event pair
STALE_AFTER_S = 10.0  # no usable reading for this long: voltage_data_stale (a 5-s poll misses one answer)


@dataclass(frozen=True, slots=True)
class MeasuredDevice:
    """What ``[monitoring]`` checks of a ``[[devices]]`` entry: its points' units and how often it is read.

    ``points`` maps each point name to its unit; None when the device's points are known only at run time
    (then a point of it is taken as given).
    """

    points: Mapping[str, str] | None
    poll_interval_s: float
    map_name: str = ""


@dataclass(frozen=True, slots=True)
class VoltagePoint:
    """One ``[[monitoring.voltages]]`` entry: a measured voltage tied to a feeder bus and phase."""

    point: str  # <device>.<point> or <pmu>.<phasor>.mag
    bus: str
    phase: str  # a | b | c
    pt_ratio: float | None = None  # the reading is this PT's 120 V secondary
    nominal_v: float | None = None  # the reading is primary phase-neutral volts; this is 120 V on the base
    end_of_line: bool = False  # a bus CVR must keep above Range A's floor


@dataclass(frozen=True, slots=True)
class MonitoringConfig:
    """``[monitoring]``: the voltages, the range that alarms and the timing (docs/monitoring.md)."""

    range: str = "A"  # "A": Range A and Range B excursions alarm; "B": only Range B's
    pickup_s: float = PICKUP_S
    hold_off_s: float = HOLD_OFF_S
    stale_after_s: float = STALE_AFTER_S
    voltages: tuple[VoltagePoint, ...] = ()

    @property
    def alarm_ranges(self) -> tuple[str, ...]:
        """The ANSI C84.1 ranges whose excursions raise events, narrowest first."""
        return ("A", "B") if self.range == "A" else ("B",)


def _longest_prefix(point: str, names: Set[str], seps: str) -> str | None:
    """The longest name in ``names`` that ``point`` starts with, followed by one of ``seps``."""
    found = [n for n in names if len(point) > len(n) and point.startswith(n) and point[len(n)] in seps]
    return max(found, key=len) if found else None


def _check_point(c: Checker, key: str, point: str, devices: Mapping[str, MeasuredDevice], device_names: Set[str],
                 pmu_names: Set[str]) -> str | None:  # fmt: skip
    """Record what is wrong with ``point``; the device's name if it is a device point, "" for a PMU's."""
    dev = _longest_prefix(point, set(device_names), ".")
    pmu = _longest_prefix(point, set(pmu_names), "./")
    if dev is not None and (pmu is None or len(dev) >= len(pmu)):
        d = devices.get(dev)
        if d is None or d.points is None:  # the device entry has errors of its own, or its points come at run time
            return dev
        name = point[len(dev) + 1 :]
        volts = sorted(n for n, u in d.points.items() if u in VOLTAGE_UNITS)
        listed = ", ".join(volts) or "(none)"
        if name not in d.points:
            c.fail(key, point, f"the register map of {dev} ({d.map_name}) has no point {name!r}; its voltage points: "
                   f"{listed}")  # fmt: skip
        elif d.points[name] not in VOLTAGE_UNITS:
            c.fail(key, point, f"is not a voltage: {name} of {dev} has unit {d.points[name]!r} (a voltage point has "
                   f"unit {' or '.join(map(repr, VOLTAGE_UNITS))}); its voltage points: {listed}")  # fmt: skip
        return dev
    if pmu is not None:
        rest = point[len(pmu) :]
        if rest.startswith("/"):  # <stream>/<station>: one PMU block of a multi-PMU (PDC) stream
            station, dot, rest = rest[1:].partition(".")
            rest = dot + rest if station else ""
        phasor = rest[1 : len(rest) - len(PMU_MAGNITUDE_SUFFIX)]
        if not rest.startswith(".") or not rest.endswith(PMU_MAGNITUDE_SUFFIX) or not phasor:
            c.fail(key, point, f"a PMU voltage is <pmu>.<phasor>{PMU_MAGNITUDE_SUFFIX} (or <pmu>/<station>.<phasor>"
                   f"{PMU_MAGNITUDE_SUFFIX} for a PDC stream), the phasor as the PMU's configuration names it, "
                   f"e.g. {pmu}.VA{PMU_MAGNITUDE_SUFFIX}")  # fmt: skip
        return ""
    c.fail(key, point, "must be <device>.<point> of a [[devices]] entry ("
           + (", ".join(sorted(device_names)) or "none") + ") or <pmu>.<phasor>.mag of a [[pmus]] entry ("
           + (", ".join(sorted(pmu_names)) or "none") + "): no device or PMU has that name")  # fmt: skip
    return None


def _voltage(c: Checker, raw: Mapping[str, Any], prefix: str, devices: Mapping[str, MeasuredDevice],
             device_names: Set[str], pmu_names: Set[str],
             pmu_nominal_v: Mapping[str, float | None]) -> tuple[VoltagePoint | None, str | None]:  # fmt: skip
    start = len(c.issues)
    c.unknown(raw, prefix, VOLTAGE_KEYS)
    point = c.get(raw, prefix, "point", "string")
    device = _check_point(c, f"{prefix}.point", point, devices, device_names, pmu_names) if point else None
    bus = c.get(raw, prefix, "bus", "string")
    phase = c.get(raw, prefix, "phase", "string", choices=PHASES)
    pt_ratio = c.get(raw, prefix, "pt_ratio", "number", None, lo=1e-3, hi=1e6)
    nominal_v = c.get(raw, prefix, "nominal_v", "number", None, lo=1e-3, hi=1e7)
    eol = c.get(raw, prefix, "end_of_line", "boolean", False)
    has_pt, has_nominal = "pt_ratio" in raw, "nominal_v" in raw
    if has_pt and has_nominal:
        c.fail(f"{prefix}.nominal_v", raw["nominal_v"], "give pt_ratio or nominal_v, not both: pt_ratio when the "
               "reading is a PT's 120 V secondary, nominal_v when it is primary volts phase-neutral")  # fmt: skip
    elif not has_pt and not has_nominal:
        pmu = _longest_prefix(point, set(pmu_names), "./") if point and device == "" else None
        hint = ""
        if pmu is not None and pmu_nominal_v.get(pmu):
            hint = f" (the [[pmus]] entry {pmu} says nominal_v = {pmu_nominal_v[pmu]:g})"
        c.fail(f"{prefix}.pt_ratio", MISSING, "one of pt_ratio (the reading is a PT's 120 V secondary, e.g. 20 for "
               "2400:120 V) or nominal_v (the reading is primary volts phase-neutral and this value is 120 V on the "
               f"base, e.g. 2401.8 on a 4.16 kV feeder) is required{hint}")  # fmt: skip
    if len(c.issues) > start:
        return None, device
    return VoltagePoint(point=point, bus=bus, phase=phase, pt_ratio=None if pt_ratio is None else float(pt_ratio),
                        nominal_v=None if nominal_v is None else float(nominal_v), end_of_line=eol), device  # fmt: skip


def parse_monitoring(c: Checker, raw: Mapping[str, Any], devices: Mapping[str, MeasuredDevice],
                     device_names: Set[str], pmu_names: Set[str],
                     pmu_nominal_v: Mapping[str, float | None] | None = None) -> MonitoringConfig:  # fmt: skip
    """``[monitoring]``; its points must be of ``devices`` (register maps known) or of ``pmu_names``.

    ``device_names`` and ``pmu_names`` hold every name the file gives, also of entries with errors of their
    own, so a point of one is not reported as a second, false error. ``pmu_nominal_v`` (the ``[[pmus]]``
    entries' nominal_v) only improves a message.
    """
    p = "monitoring"
    c.unknown(raw, p, MONITORING_KEYS)
    rng = c.get(raw, p, "range", "string", "A", choices=tuple(SERVICE_VOLTAGE_RANGES))
    pickup = c.get(raw, p, "pickup_s", "number", PICKUP_S, lo=0, hi=3600)
    hold_off = c.get(raw, p, "hold_off_s", "number", HOLD_OFF_S, lo=0, hi=3600)
    stale = c.get(raw, p, "stale_after_s", "number", STALE_AFTER_S, lo=0.1, hi=86400)
    voltages: list[VoltagePoint] = []
    by_point: dict[str, tuple[str, VoltagePoint]] = {}
    eol_of_bus: dict[str, tuple[str, bool]] = {}
    warned: set[str] = set()
    for prefix, t in c.tables(raw, "voltages", p):
        v, device = _voltage(c, t, prefix, devices, device_names, pmu_names, pmu_nominal_v or {})
        if v is None:
            continue
        if v.point in by_point:
            where, first = by_point[v.point]
            c.fail(f"{prefix}.point", v.point, f"is already tied to bus {first.bus} phase {first.phase} by {where}: "
                   "one entry per point (a point measures one bus and phase)")  # fmt: skip
            continue
        by_point[v.point] = (prefix, v)
        where, eol = eol_of_bus.setdefault(v.bus, (prefix, v.end_of_line))
        if eol != v.end_of_line:
            c.fail(f"{prefix}.end_of_line", v.end_of_line, f"{where} says end_of_line = {str(eol).lower()} for bus "
                   f"{v.bus}: every entry of a bus says the same")  # fmt: skip
            continue
        if device and device not in warned and stale is not None and devices.get(device) is not None:
            poll = devices[device].poll_interval_s
            if stale < 2 * poll:
                warned.add(device)
                c.warn(f"{p}.stale_after_s", stale, f"{v.point} is read every {poll:g} s: a reading ages that long "
                       f"between polls, so one late answer makes it stale; at least {2 * poll:g} s is safer")  # fmt: skip
        voltages.append(v)
    if "voltages" in raw and not voltages and not c.issues:
        c.warn(f"{p}.voltages", [], "no voltage is configured: nothing is monitored")
    if any(x is None for x in (rng, pickup, hold_off, stale)):
        return MonitoringConfig()  # issues recorded; the caller raises
    return MonitoringConfig(range=rng, pickup_s=float(pickup), hold_off_s=float(hold_off), stale_after_s=float(stale),
                            voltages=tuple(voltages))  # fmt: skip


__all__ = ["PHASES", "MeasuredDevice", "MonitoringConfig", "VoltagePoint", "parse_monitoring"]
