"""The bench's truth log: what the bench itself did and what its physics solved, one JSON object per line, for the
programs that judge an agent by the physics rather than by what the agent believes (the demo follows the scenario
from it; the control proofs count voltages out of range, tap and capacitor operations and energy from it).

``gridedge sim run --truth FILE`` writes it; docs/truth-log.md is the format. Every record has ``record`` (its
type) and ``ts`` (the simulated clock [s since the epoch, UTC]):

- ``bench_up``: the bench is up (``pid``, ``speed``, ``step_s``, ``sim_start``, ``wall``, ``devices``, ``scenario``,
  ``feeder``: the buses with their phases and nominal phase-neutral kV, the substation buses, the head terminal,
  the PV sites' ratings, the capacitors and the loads' model);
- ``step``: the solved feeder at one bench step (``n``; bus voltages in per unit, taps, capacitors, head P and Q,
  losses, load, PV, cumulative energies);
- ``scenario_step``: a scripted event the bench played (or failed to play);
- ``bench_down``: ``steps``, ``late_steps``, ``max_lag_s``.

A line is flushed as it is written, so a reader following the file sees each record at once. A log that cannot
be written is reported once and dropped; the bench goes on.

The reader half: :func:`read_records` iterates a log's records, :func:`summarise` turns them into the figures a
proof of control reports (:class:`TruthSummary`); ``gridedge sim truth FILE`` prints them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from protocols.eventlog import EventLog

if TYPE_CHECKING:
    from sim_hw.feeder.solution import Solution

log = EventLog("sim.bench")

PHASES = ("a", "b", "c")
# ANSI C84.1-2016, Table 1, service voltage on the 120 V base: Range A 114..126 V, Range B 110..127 V.
RANGE_A_PU = (114.0 / 120.0, 126.0 / 120.0)
RANGE_B_PU = (110.0 / 120.0, 127.0 / 120.0)
DEAD_PU = 0.1  # a bus whose every phase is below this is de-energised: an interruption, not a voltage out of range
# per unit to 1e-4 (0.012 V on the 120 V base): OpenDSS solves to 1e-4 pu, a fifth digit would be noise
V_DIGITS = 4


class TruthLogError(ValueError):
    """A truth log that cannot be read: names the file and the line."""


class TruthLog:
    """Appends records to ``path`` (replacing what a previous run left there on the first record).

    :meth:`step` writes a ``step`` record from a solved feeder and keeps the cumulative energies: the energy a
    record carries is what flowed from the first step up to that record's time (each step's power held for one
    ``step_s``), as an energy register reads at that instant.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._broken = False
        self._energy = {"head_kwh": 0.0, "head_import_kwh": 0.0, "head_export_kwh": 0.0, "loss_kwh": 0.0}

    def write(self, record: str, ts: float, **fields: Any) -> None:
        if self._broken:
            return
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("w", encoding="utf-8")
            self._file.write(json.dumps({"record": record, "ts": ts, **fields}, separators=(",", ":")) + "\n")
            self._file.flush()
        except OSError as err:
            self._broken = True
            log.error("truth_log_failed", path=self.path, error=err)

    def step(self, solution: Solution, n: int, *, head: tuple[str, int], step_s: float,
             meters: dict[str, tuple[float, float]] | None = None) -> None:  # fmt: skip
        """One ``step`` record: the feeder as solved at step ``n`` (``head``: the feeder head's element and
        terminal; ``step_s``: how long this step's powers hold, for the energies; ``meters``: each revenue meter's
        true delivered and received energy so far [Wh], unwrapped and not reset by a swap)."""
        if self._broken:
            return
        fields = step_fields(solution, head)
        for key, value in self._energy.items():
            fields[key] = round(value, 4)
        if meters:
            fields["meters"] = {name: [round(d, 3), round(r, 3)] for name, (d, r) in sorted(meters.items())}
        self.write("step", solution.t, n=n, **fields)
        hours = step_s / 3600.0
        head_kw = fields["head_kw"]
        self._energy["head_kwh"] += head_kw * hours
        self._energy["head_import_kwh"] += max(head_kw, 0.0) * hours
        self._energy["head_export_kwh"] += max(-head_kw, 0.0) * hours
        self._energy["loss_kwh"] += fields["loss_kw"] * hours

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def step_fields(solution: Solution, head: tuple[str, int]) -> dict[str, Any]:
    """What a ``step`` record says about a solved feeder (docs/truth-log.md), energies aside."""
    v: dict[str, list[float | None]] = {}
    for bus, phases in solution.bus_v.items():
        base = solution.base_kv_ln[bus] * 1000.0
        v[bus] = [round(abs(phases[p]) / base, V_DIGITS) if p in phases else None for p in PHASES]
    s_head = solution.terminal(*head).s_total_va / 1000.0
    pv: dict[str, list[float]] = {}
    s_pv = 0j
    for key, term in solution.terminals.items():
        if key.lower().startswith("generator."):
            s = -term.s_total_va / 1000.0  # into the element at its terminal: generation is negative
            s_pv += s
            pv[term.element.split(".", 1)[1].lower()] = [_r(s.real, 2), _r(s.imag, 2)]
    # what the loads draw: everything the source sends in and the PV adds, less the losses (the capacitors' vars
    # are in the kvar: a capacitor is a load of negative vars to OpenDSS's power balance)
    load = solution.source_kva + s_pv - solution.losses_kva
    return {
        "v": v,
        "taps": list(solution.regulator_taps),
        "caps": dict(solution.capacitors),
        "head_kw": _r(s_head.real, 2),
        "head_kvar": _r(s_head.imag, 2),
        "loss_kw": _r(solution.losses_kva.real, 3),
        "loss_kvar": _r(solution.losses_kva.imag, 3),
        "load_kw": _r(load.real, 2),
        "load_kvar": _r(load.imag, 2),
        "pv": pv,
    }


def _r(x: float, digits: int) -> float:
    return round(x, digits) + 0.0  # + 0.0: no "-0.0" in the log


# --- reading ------------------------------------------------------------------------------------------------


def read_records(path: Path | str) -> Iterator[dict[str, Any]]:
    """Every complete record of a truth log, in order. A last line without its newline (the bench still writing
    it) is left out; a complete line that is not a JSON object raises :class:`TruthLogError` naming the line."""
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError as err:
        raise TruthLogError(f"{path}: cannot read the truth log: {err.strerror or err}") from err
    with fh:
        for number, line in enumerate(fh, 1):
            if not line.endswith(b"\n"):
                return
            try:
                record = json.loads(line)
            except ValueError as err:
                raise TruthLogError(f"{path}:{number}: not a JSON record: {err}") from err
            if not isinstance(record, dict) or not isinstance(record.get("record"), str):
                raise TruthLogError(f"{path}:{number}: a record must be a JSON object with a 'record' type")
            yield record


@dataclass(frozen=True, slots=True)
class Extreme:
    """The highest or lowest phase voltage of a log: where and when."""

    pu: float
    bus: str
    phase: str
    ts: float


@dataclass
class TruthSummary:
    """The figures a proof of control reports, from a truth log's ``step`` records.

    Each step stands for ``step_s`` of simulated time (the ``bench_up`` record's, else the spacing of the steps).
    A bus is out of a range for a step when any of its phases is; a bus whose phases are all below ``DEAD_PU`` is
    de-energised and counted apart (``bus_minutes_dead``). Energies integrate each step's power over its step.
    """

    steps: int
    step_s: float
    start_ts: float | None
    end_ts: float | None  # the time the last step holds until
    buses: tuple[str, ...]  # the buses judged against the ranges
    bus_minutes_outside_a: float
    bus_minutes_above_a: float
    bus_minutes_below_a: float
    bus_minutes_outside_b: float
    bus_minutes_dead: float
    outside_a_by_bus: dict[str, float]
    v_max: Extreme | None
    v_min: Extreme | None
    v_mean_pu: float | None  # every energised phase of the judged buses, every step
    tap_operations: int
    tap_operations_by_phase: list[int]
    cap_operations: int
    cap_operations_by_cap: dict[str, int]
    head_kwh: float  # net energy through the feeder head (import - export)
    head_import_kwh: float
    head_export_kwh: float
    loss_kwh: float
    load_kwh: float
    pv_kwh: float
    range_a_pu: tuple[float, float] = RANGE_A_PU
    range_b_pu: tuple[float, float] = RANGE_B_PU
    scenario_steps: int = 0
    late_steps: int | None = None  # from bench_down: steps the bench took late (None: no bench_down record)

    @property
    def duration_s(self) -> float:
        return self.steps * self.step_s

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["duration_s"] = self.duration_s
        return out


def summarise(records: Iterable[Mapping[str, Any]], *, buses: Iterable[str] | None = None) -> TruthSummary:
    """The figures of a truth log (:func:`read_records`). ``buses``: those judged against ANSI C84.1's ranges;
    default every bus of the ``bench_up`` record but its substation buses (the source, the substation bus and the
    regulator's output, held high on purpose), or every bus the steps carry when there is no ``bench_up``."""
    header: Mapping[str, Any] | None = None
    steps: list[Mapping[str, Any]] = []
    scenario_steps = 0
    late_steps = None
    for rec in records:
        kind = rec.get("record")
        if kind == "bench_up" and header is None:
            header = rec
        elif kind == "step":
            steps.append(rec)
        elif kind == "scenario_step":
            scenario_steps += 1
        elif kind == "bench_down":
            late_steps = rec.get("late_steps")
    step_s = _step_s(header, steps)
    judged = _judged_buses(header, steps, buses)
    dt_min = step_s / 60.0
    outside_a = above_a = below_a = outside_b = dead = 0.0
    by_bus = dict.fromkeys(judged, 0.0)
    v_max: Extreme | None = None
    v_min: Extreme | None = None
    v_sum, v_n = 0.0, 0
    taps_by_phase: list[int] = []
    caps_by_cap: dict[str, int] = {}
    prev_taps: list[int] | None = None
    prev_caps: Mapping[str, Any] | None = None
    energy = {"head": 0.0, "import": 0.0, "export": 0.0, "loss": 0.0, "load": 0.0, "pv": 0.0}
    hours = step_s / 3600.0
    for rec in steps:
        ts = float(rec["ts"])
        volts = rec.get("v", {})
        for bus in judged:
            phases = volts.get(bus)
            if not phases:
                continue
            present = [(PHASES[k], float(x)) for k, x in enumerate(phases) if x is not None]
            if not present:
                continue
            if all(x < DEAD_PU for _, x in present):
                dead += dt_min
                continue
            hi = max(present, key=lambda px: px[1])
            lo = min(present, key=lambda px: px[1])
            if v_max is None or hi[1] > v_max.pu:
                v_max = Extreme(hi[1], bus, hi[0], ts)
            if v_min is None or lo[1] < v_min.pu:
                v_min = Extreme(lo[1], bus, lo[0], ts)
            for _, x in present:
                v_sum += x
                v_n += 1
            if hi[1] > RANGE_A_PU[1] or lo[1] < RANGE_A_PU[0]:
                outside_a += dt_min
                by_bus[bus] += dt_min
                if hi[1] > RANGE_A_PU[1]:
                    above_a += dt_min
                if lo[1] < RANGE_A_PU[0]:
                    below_a += dt_min
            if hi[1] > RANGE_B_PU[1] or lo[1] < RANGE_B_PU[0]:
                outside_b += dt_min
        taps = [int(x) for x in rec.get("taps", [])]
        if prev_taps is not None and len(prev_taps) == len(taps):
            if len(taps_by_phase) < len(taps):
                taps_by_phase += [0] * (len(taps) - len(taps_by_phase))
            for k, (a, b) in enumerate(zip(prev_taps, taps, strict=True)):
                taps_by_phase[k] += abs(b - a)
        prev_taps = taps
        caps = rec.get("caps", {})
        if prev_caps is not None:
            for name, closed in caps.items():
                if name in prev_caps and bool(prev_caps[name]) != bool(closed):
                    caps_by_cap[name] = caps_by_cap.get(name, 0) + 1
        prev_caps = caps
        head_kw = float(rec.get("head_kw", 0.0))
        energy["head"] += head_kw * hours
        energy["import"] += max(head_kw, 0.0) * hours
        energy["export"] += max(-head_kw, 0.0) * hours
        energy["loss"] += float(rec.get("loss_kw", 0.0)) * hours
        energy["load"] += float(rec.get("load_kw", 0.0)) * hours
        energy["pv"] += sum(float(pq[0]) for pq in rec.get("pv", {}).values()) * hours
    return TruthSummary(
        steps=len(steps),
        step_s=step_s,
        start_ts=float(steps[0]["ts"]) if steps else None,
        end_ts=float(steps[-1]["ts"]) + step_s if steps else None,
        buses=tuple(judged),
        bus_minutes_outside_a=outside_a,
        bus_minutes_above_a=above_a,
        bus_minutes_below_a=below_a,
        bus_minutes_outside_b=outside_b,
        bus_minutes_dead=dead,
        outside_a_by_bus={bus: m for bus, m in by_bus.items() if m > 0},
        v_max=v_max,
        v_min=v_min,
        v_mean_pu=v_sum / v_n if v_n else None,
        tap_operations=sum(taps_by_phase),
        tap_operations_by_phase=taps_by_phase,
        cap_operations=sum(caps_by_cap.values()),
        cap_operations_by_cap=caps_by_cap,
        head_kwh=energy["head"],
        head_import_kwh=energy["import"],
        head_export_kwh=energy["export"],
        loss_kwh=energy["loss"],
        load_kwh=energy["load"],
        pv_kwh=energy["pv"],
        scenario_steps=scenario_steps,
        late_steps=late_steps,
    )


def _step_s(header: Mapping[str, Any] | None, steps: list[Mapping[str, Any]]) -> float:
    if header is not None and isinstance(header.get("step_s"), int | float) and header["step_s"] > 0:
        return float(header["step_s"])
    if len(steps) >= 2:
        gaps = sorted(float(b["ts"]) - float(a["ts"]) for a, b in zip(steps, steps[1:], strict=False))
        gap = gaps[len(gaps) // 2]
        if gap > 0 and math.isfinite(gap):
            return gap
    raise TruthLogError("the log gives no step length: no bench_up record with step_s, and fewer than two steps")


def _judged_buses(
    header: Mapping[str, Any] | None, steps: list[Mapping[str, Any]], buses: Iterable[str] | None
) -> list[str]:
    if buses is not None:
        return [str(b).lower() for b in buses]
    feeder = header.get("feeder") if header is not None else None
    if isinstance(feeder, Mapping) and isinstance(feeder.get("buses"), Mapping):
        skip = set(feeder.get("substation_buses") or ())
        return [b for b in feeder["buses"] if b not in skip]
    seen: dict[str, None] = {}
    for rec in steps:
        seen.update(dict.fromkeys(rec.get("v", {})))
    return list(seen)


def format_summary(s: TruthSummary) -> str:
    """The summary as aligned text, for people (``gridedge sim truth FILE``)."""

    def ext(e: Extreme | None) -> str:
        return "-" if e is None else f"{e.pu:.4f} pu ({e.pu * 120:.1f} V) at {e.bus}.{e.phase}, ts {e.ts:.0f}"

    lo, hi = s.range_a_pu
    rows = [
        ("steps", f"{s.steps} x {s.step_s:g} s = {s.duration_s / 3600:.3f} h"),
        ("buses judged", " ".join(s.buses)),
        (f"bus-minutes outside Range A ({lo:.4f}..{hi:.4f} pu)",
         f"{s.bus_minutes_outside_a:.1f} (above {s.bus_minutes_above_a:.1f}, below {s.bus_minutes_below_a:.1f})"),
        ("  by bus", ", ".join(f"{b} {m:.1f}" for b, m in s.outside_a_by_bus.items()) or "-"),
        ("bus-minutes outside Range B", f"{s.bus_minutes_outside_b:.1f}"),
        ("bus-minutes de-energised", f"{s.bus_minutes_dead:.1f}"),
        ("highest voltage", ext(s.v_max)),
        ("lowest voltage", ext(s.v_min)),
        ("mean voltage", "-" if s.v_mean_pu is None else f"{s.v_mean_pu:.4f} pu ({s.v_mean_pu * 120:.2f} V)"),
        ("tap operations", f"{s.tap_operations} (per phase {', '.join(map(str, s.tap_operations_by_phase)) or '-'})"),
        ("capacitor operations",
         f"{s.cap_operations} ({', '.join(f'{c} {n}' for c, n in s.cap_operations_by_cap.items()) or 'none'})"),
        ("feeder-head energy", f"{s.head_kwh:.1f} kWh net (import {s.head_import_kwh:.1f}, export "
                               f"{s.head_export_kwh:.1f})"),
        ("losses", f"{s.loss_kwh:.1f} kWh"),
        ("load", f"{s.load_kwh:.1f} kWh"),
        ("PV", f"{s.pv_kwh:.1f} kWh"),
    ]  # fmt: skip
    if s.late_steps is not None:
        rows.append(("steps the bench took late", str(s.late_steps)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


__all__ = [
    "DEAD_PU",
    "RANGE_A_PU",
    "RANGE_B_PU",
    "Extreme",
    "TruthLog",
    "TruthLogError",
    "TruthSummary",
    "format_summary",
    "read_records",
    "step_fields",
    "summarise",
]
