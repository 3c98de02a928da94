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

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.eventlog import EventLog

log = EventLog("sim.scenario")

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
class ScenarioStep:
    """One thing the scenario does at ``at``: an event's start, or its end (``after``: the start it ends)."""

    at: float  # simulated seconds since the epoch
    order: int
    name: str = field(compare=False)  # short, for the bench's log: "fault bus=671 phases=abc"
    run: Callable[[Any, float], None] = field(compare=False)
    after: int | None = field(default=None, compare=False)  # the order of the start step this one ends
    action: str = field(default="", compare=False)  # the event's action: "fault", "silence"...
    where: str = field(default="", compare=False)  # the PMU, device or bus it happens at; "feeder" for all of it
    text: str = field(default="", compare=False)  # what happens, for people: "fault at bus 671 (abc, 0.01 ohm)..."


@dataclass
class Scenario:
    """Steps sorted by time; :meth:`apply_due` runs those whose time has come (the bench calls it per step).

    ``on_step(t, step, error)`` is called after each step is played (``error`` None) or has failed."""

    source: Path
    steps: list[ScenarioStep]
    played: list[tuple[float, str]] = field(default_factory=list)  # (sim time, what) for logs and tests
    failed: list[tuple[float, str, str]] = field(default_factory=list)  # (sim time, what, error): logged, not fatal
    fault_buses: frozenset[str] = frozenset()  # checked against the feeder when the bench starts
    description: str = ""
    events: int = 0  # [[events]] entries; each is one step, or two (a start and its end)
    on_step: Callable[[float, ScenarioStep, str | None], None] | None = None

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
                log.error("scenario_step_failed", scenario=self.source.name, t=round(t, 3), step=step.name,
                          error=repr(err))  # fmt: skip
                if self.on_step is not None:
                    self.on_step(t, step, repr(err))
                continue
            self.played.append((t, step.name))
            log.info("scenario_step", scenario=self.source.name, t=round(t, 3), step=step.name)
            if self.on_step is not None:
                self.on_step(t, step, None)

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


_Part = tuple[float, str, str, str, Callable[[Any, float], None], bool]  # at, name, where, text, run, is an end


def _event(
    raw: Mapping[str, Any], where: str, start: float, devices: tuple[str, ...], pmus: tuple[str, ...]
) -> list[_Part]:
    """The steps of one [[events]] entry: its start and, for an event with a duration, its end."""
    action = raw.get("action")
    if action not in ACTIONS:
        raise ScenarioError(f"{where}.action = {action!r}: must be one of {', '.join(map(repr, ACTIONS))}")
    unknown = set(raw) - ACTIONS[action] - {"at_s", "action"}
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)} for action {action!r} (allowed: at_s, action, "
                            f"{', '.join(sorted(ACTIONS[action]))})")  # fmt: skip
    at = start + _num(raw, where, "at_s", 0, 10 * 86400)
    out: list[_Part] = []
    if action == "cloud":
        factor = _num(raw, where, "factor", 0, 1)
        duration = _num(raw, where, "duration_s", 1, 86400)
        out.append((at, f"cloud factor={factor:g}", "feeder",
                    f"a cloud over every PV site: irradiance x{factor:g} for {duration:g} s",
                    lambda b, _t: b.set_irradiance_factor(factor), False))  # fmt: skip
        out.append((at + duration, "cloud clears", "feeder", "the cloud clears: full irradiance on every PV site",
                    lambda b, _t: b.set_irradiance_factor(1.0), True))  # fmt: skip
    elif action == "fault":
        bus = raw.get("bus")
        if not isinstance(bus, str) or not bus:
            raise ScenarioError(f"{where}.bus = {bus!r}: must be a bus name of the feeder, e.g. '671'")
        phases = raw.get("phases", "abc")
        if phases not in _PHASE_SETS:
            raise ScenarioError(f"{where}.phases = {phases!r}: must be one of {', '.join(map(repr, _PHASE_SETS))}")
        r_ohm = _num(raw, where, "r_ohm", 1e-4, 1e4, 0.05)
        duration = _num(raw, where, "duration_s", 0.01, 86400)
        out.append((at, f"fault bus={bus} phases={phases}", f"bus {bus}",
                    f"fault at bus {bus}, phases {phases}, {r_ohm:g} ohm, for {duration:g} s",
                    lambda b, _t: b.feeder.set_fault(bus, phases, r_ohm), False))  # fmt: skip
        out.append((at + duration, f"fault bus={bus} cleared", f"bus {bus}", f"the fault at bus {bus} clears",
                    lambda b, _t: b.feeder.clear_fault(), True))  # fmt: skip
    elif action == "silence":
        device = _name(raw, where, "device", devices)
        duration = _num(raw, where, "duration_s", 0.01, 10 * 86400)
        out.append((at, f"silence {device}", device, f"{device} stops answering for {duration:g} s",
                    lambda b, _t: b.silence(device, True), False))  # fmt: skip
        out.append((at + duration, f"{device} answers again", device, f"{device} answers again",
                    lambda b, _t: b.silence(device, False), True))  # fmt: skip
    elif action == "pmu_sync_loss":
        pmu = _name(raw, where, "pmu", pmus)
        duration = _num(raw, where, "duration_s", 0.01, 10 * 86400)
        out.append((at, f"{pmu} loses time sync", pmu, f"PMU {pmu} loses time sync for {duration:g} s",
                    lambda b, _t: b.pmus[pmu].lose_sync(), False))  # fmt: skip
        out.append((at + duration, f"{pmu} regains time sync", pmu, f"PMU {pmu} regains time sync",
                    lambda b, _t: b.pmus[pmu].regain_sync(), True))  # fmt: skip
    elif action == "meter_swap":
        device = _name(raw, where, "device", devices)
        out.append((at, f"meter swap {device}", device, f"meter {device} replaced: its energy registers restart at 0",
                    lambda b, t: b.model_of(device).swap(t), False))  # fmt: skip
    else:  # frequency
        hz = _num(raw, where, "hz", 55, 65)
        rocof = _num(raw, where, "rocof_hz_s", -10, 10, 0.0)
        out.append((at, f"frequency {hz:g} Hz", "feeder", f"the grid frequency goes to {hz:g} Hz (ROCOF {rocof:g} Hz/s)",
                    lambda b, _t: b.feeder.set_frequency(hz, rocof), False))  # fmt: skip
        if "duration_s" in raw:
            end = at + _num(raw, where, "duration_s", 0.01, 86400)
            out.append((end, "frequency back to 60 Hz", "feeder", "the grid frequency goes back to 60 Hz",
                        lambda b, _t: b.feeder.set_frequency(60.0, 0.0), True))  # fmt: skip
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
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{source.name}: description = {description!r}: must be a string")
    steps: list[ScenarioStep] = []
    buses: set[str] = set()
    for i, raw in enumerate(events):
        if isinstance(raw, Mapping) and raw.get("action") == "fault" and isinstance(raw.get("bus"), str):
            buses.add(raw["bus"].lower())
        for at, name, where, text, run, is_end in _event(raw, f"events[{i}]", start, devices, pmus):
            after = len(steps) - 1 if is_end else None
            steps.append(ScenarioStep(at, len(steps), name, run, after, str(raw["action"]), where, text))
    return Scenario(source, sorted(steps), fault_buses=frozenset(buses), description=description, events=len(events))


def load_scenario(path: Path, *, start: float, devices: tuple[str, ...] = (), pmus: tuple[str, ...] = ()) -> Scenario:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ScenarioError(f"{path}: cannot read: {err}") from err
    return parse_scenario(data, path, start=start, devices=devices, pmus=pmus)
