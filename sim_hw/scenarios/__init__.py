"""Scripted events on the bench's time line: what the field throws at an agent.

A scenario is a TOML file of ``[[events]]``, each at ``at_s`` simulated seconds after the bench's start::

    [[events]]
    at_s = 600
    action = "cloud"          # every PV site's irradiance x factor for duration_s
    factor = 0.15
    duration_s = 240

    [[events]]
    at_s = 1200
    action = "fault"          # a fault at a bus (OpenDSS Fault element) for duration_s: the relay sees it
    bus = "671"
    phases = "abc"
    r_ohm = 0.05
    duration_s = 0.5

Actions and their keys (every key is checked; an error names it, its value and what is allowed):

- ``cloud``: factor (0..1), duration_s. A cloud over the whole feeder: voltages fall as the PV output does.
- ``fault``: bus, phases ("a", "b", "c", "ab", ..., "abc"), r_ohm (> 0), duration_s. Cleared after
  duration_s (a temporary fault: the recloser's reclose then holds).
- ``silence``: device, duration_s. The device stops answering (a dead RS-485 unit, a cut cable).
- ``pmu_sync_loss``: pmu, duration_s. The PMU loses its time source (STAT bits, time quality).
- ``meter_swap``: device. The meter is replaced: its energy registers restart from 0, new serial number.
- ``frequency``: hz (55..65), rocof_hz_s, duration_s (optional: back to 60 Hz after it).

Times are simulated, so a scenario plays the same at any ``--speed``.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("sim_hw.scenario")

ACTIONS: dict[str, set[str]] = {
    "cloud": {"factor", "duration_s"},
    "fault": {"bus", "phases", "r_ohm", "duration_s"},
    "silence": {"device", "duration_s"},
    "pmu_sync_loss": {"pmu", "duration_s"},
    "meter_swap": {"device"},
    "frequency": {"hz", "rocof_hz_s", "duration_s"},
}
_PHASE_SETS = ("a", "b", "c", "ab", "bc", "ac", "abc")


class ScenarioError(ValueError):
    """A scenario file that cannot be played: the message names the event, key, value and what is allowed."""


@dataclass(order=True)
class _Step:
    at: float  # simulated seconds since the epoch
    order: int
    name: str = field(compare=False)
    run: Callable[[Any, float], None] = field(compare=False)
    after: int | None = field(default=None, compare=False)  # the order of the start step this one ends


@dataclass
class Scenario:
    """Steps sorted by time; :meth:`apply_due` runs those whose time has come (the bench calls it per step)."""

    source: Path
    steps: list[_Step]
    played: list[tuple[float, str]] = field(default_factory=list)  # (sim time, what) for logs and tests
    failed: list[tuple[float, str, str]] = field(default_factory=list)  # (sim time, what, error): logged, not fatal
    fault_buses: frozenset[str] = frozenset()  # checked against the feeder when the bench starts

    def apply_due(self, t: float, bench: Any) -> None:
        """Run the steps due at ``t`` in order. An end never runs in the same call as its start: the physics
        solves at least once in between (a 0.5 s fault on a 1 s bench step still reaches the relay). A step
        that fails is logged and recorded in ``failed``; the others still play."""
        fired: set[int] = set()
        while self.steps and self.steps[0].at <= t:
            if self.steps[0].after in fired:
                break  # this end (and what follows it) waits for the next step
            step = self.steps.pop(0)
            fired.add(step.order)
            try:
                step.run(bench, t)
            except Exception as err:  # a device without that fault, a bus the feeder refused...
                self.failed.append((t, step.name, repr(err)))
                log.error("scenario=%s t=%.3f event=%s failed: %r", self.source.name, t, step.name, err)
                continue
            self.played.append((t, step.name))
            log.info("scenario=%s t=%.3f event=%s", self.source.name, t, step.name)

    @property
    def pending(self) -> int:
        return len(self.steps)


def _num(raw: Mapping[str, Any], where: str, key: str, lo: float, hi: float, default: float | None = None) -> float:
    value = raw.get(key, default)
    if value is None:
        raise ScenarioError(f"{where}.{key} is required (a number in {lo}..{hi})")
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ScenarioError(f"{where}.{key} = {value!r}: must be a number in {lo}..{hi}")
    return float(value)


def _name(raw: Mapping[str, Any], where: str, key: str, known: tuple[str, ...]) -> str:
    value = raw.get(key)
    if value not in known:
        raise ScenarioError(f"{where}.{key} = {value!r}: must be one of {', '.join(map(repr, known)) or '(none)'}")
    return str(value)


def _event(
    raw: Mapping[str, Any], where: str, start: float, devices: tuple[str, ...], pmus: tuple[str, ...]
) -> list[tuple]:
    """(at, name, run[, True for the end of the event just before it]) for one [[events]] entry."""
    action = raw.get("action")
    if action not in ACTIONS:
        raise ScenarioError(f"{where}.action = {action!r}: must be one of {', '.join(map(repr, ACTIONS))}")
    unknown = set(raw) - ACTIONS[action] - {"at_s", "action"}
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)} for action {action!r} (allowed: at_s, action, "
                            f"{', '.join(sorted(ACTIONS[action]))})")  # fmt: skip
    at = start + _num(raw, where, "at_s", 0, 10 * 86400)
    out: list[tuple] = []
    if action == "cloud":
        factor = _num(raw, where, "factor", 0, 1)
        end = at + _num(raw, where, "duration_s", 1, 86400)
        out.append((at, f"cloud factor={factor:g}", lambda b, _t: b.set_irradiance_factor(factor)))
        out.append((end, "cloud clears", lambda b, _t: b.set_irradiance_factor(1.0), True))
    elif action == "fault":
        bus = raw.get("bus")
        if not isinstance(bus, str) or not bus:
            raise ScenarioError(f"{where}.bus = {bus!r}: must be a bus name of the feeder, e.g. '671'")
        phases = raw.get("phases", "abc")
        if phases not in _PHASE_SETS:
            raise ScenarioError(f"{where}.phases = {phases!r}: must be one of {', '.join(map(repr, _PHASE_SETS))}")
        r_ohm = _num(raw, where, "r_ohm", 1e-4, 1e4, 0.05)
        end = at + _num(raw, where, "duration_s", 0.01, 86400)
        out.append((at, f"fault bus={bus} phases={phases}", lambda b, _t: b.feeder.set_fault(bus, phases, r_ohm)))
        out.append((end, f"fault bus={bus} cleared", lambda b, _t: b.feeder.clear_fault(), True))
    elif action == "silence":
        device = _name(raw, where, "device", devices)
        end = at + _num(raw, where, "duration_s", 0.01, 10 * 86400)
        out.append((at, f"silence {device}", lambda b, _t: b.silence(device, True)))
        out.append((end, f"{device} answers again", lambda b, _t: b.silence(device, False), True))
    elif action == "pmu_sync_loss":
        pmu = _name(raw, where, "pmu", pmus)
        end = at + _num(raw, where, "duration_s", 0.01, 10 * 86400)
        out.append((at, f"{pmu} loses time sync", lambda b, _t: b.pmus[pmu].lose_sync()))
        out.append((end, f"{pmu} regains time sync", lambda b, _t: b.pmus[pmu].regain_sync(), True))
    elif action == "meter_swap":
        device = _name(raw, where, "device", devices)
        out.append((at, f"meter swap {device}", lambda b, t: b.model_of(device).swap(t)))
    else:  # frequency
        hz = _num(raw, where, "hz", 55, 65)
        rocof = _num(raw, where, "rocof_hz_s", -10, 10, 0.0)
        out.append((at, f"frequency {hz:g} Hz", lambda b, _t: b.feeder.set_frequency(hz, rocof)))
        if "duration_s" in raw:
            end = at + _num(raw, where, "duration_s", 0.01, 86400)
            out.append((end, "frequency back to 60 Hz", lambda b, _t: b.feeder.set_frequency(60.0, 0.0), True))
    return out


def parse_scenario(
    data: Mapping[str, Any], source: Path, *, start: float, devices: tuple[str, ...] = (), pmus: tuple[str, ...] = ()
) -> Scenario:
    """Validate a parsed scenario; ``start`` is the bench's simulated start time [s UTC]."""
    unknown = set(data) - {"events", "description"}
    if unknown:
        raise ScenarioError(f"{source.name}: unknown top-level keys {sorted(unknown)} (allowed: description, events)")
    events = data.get("events", [])
    if not isinstance(events, list) or not all(isinstance(e, Mapping) for e in events):
        raise ScenarioError(f"{source.name}: events must be an array of tables ([[events]])")
    steps: list[_Step] = []
    buses: set[str] = set()
    for i, raw in enumerate(events):
        if isinstance(raw, Mapping) and raw.get("action") == "fault" and isinstance(raw.get("bus"), str):
            buses.add(raw["bus"].lower())
        for at, name, run, *end in _event(raw, f"events[{i}]", start, devices, pmus):
            steps.append(_Step(at, len(steps), name, run, len(steps) - 1 if end else None))
    return Scenario(source, sorted(steps), fault_buses=frozenset(buses))


def load_scenario(path: Path, *, start: float, devices: tuple[str, ...] = (), pmus: tuple[str, ...] = ()) -> Scenario:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ScenarioError(f"{path}: cannot read: {err}") from err
    return parse_scenario(data, path, start=start, devices=devices, pmus=pmus)
