"""One solved state of the feeder, as the bench's devices see it: plain data, no OpenDSS in sight.

The physics (``sim_hw.feeder.model.Feeder``) fills a :class:`Solution` after every solve; device models
read what their instrument transformers would see from it (``observe``) and never talk to OpenDSS.
Tests may build a Solution by hand.

Conventions: phases are ``"a"``, ``"b"``, ``"c"``; voltages are phase-to-neutral complex volts (primary
side, rms); currents complex amperes flowing INTO the element at that terminal (OpenDSS's convention);
an absent phase is simply missing from the dict.
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass, field

PHASES = ("a", "b", "c")


@dataclass(frozen=True, slots=True)
class Terminal:
    """What a meter at one terminal of an element sees: per-phase V [V] and I [A] (into the element)."""

    element: str  # OpenDSS full name, e.g. "Line.650632", "Transformer.Reg1"
    bus: str
    v: dict[str, complex]
    i: dict[str, complex]

    def s_va(self, phase: str) -> complex:
        """Complex power into the element at this terminal, one phase [VA]."""
        return self.v[phase] * self.i[phase].conjugate()

    @property
    def s_total_va(self) -> complex:
        return sum((self.s_va(p) for p in self.v if p in self.i), 0j)


@dataclass(frozen=True, slots=True)
class Solution:
    """The feeder at simulated time ``t`` [s since the epoch, UTC]."""

    t: float
    converged: bool
    bus_v: dict[str, dict[str, complex]]  # bus -> phase -> complex V (phase-neutral)
    base_kv_ln: dict[str, float]  # bus -> nominal phase-neutral kV (for per-unit)
    terminals: dict[str, Terminal] = field(default_factory=dict)  # "<element>/<terminal number>" -> Terminal
    frequency_hz: float = 60.0
    rocof_hz_s: float = 0.0
    irradiance_pu: float = 0.0  # plane-of-array irradiance / 1000 W/m2 at this instant (all PV sites)
    load_scale: float = 1.0  # the load profile's multiplier at this instant
    losses_kva: complex = 0j  # the circuit's losses: lines, transformers, regulators [kW + j kvar]
    source_kva: complex = 0j  # what the source delivers into the circuit [kW + j kvar]
    regulator_taps: tuple[int, ...] = ()  # the regulators' tap steps, phases a, b, c
    capacitors: dict[str, bool] = field(default_factory=dict)  # capacitor -> closed

    def v(self, bus: str) -> dict[str, complex]:
        try:
            return self.bus_v[bus.lower()]
        except KeyError:
            raise KeyError(f"no bus {bus!r} in the feeder (buses: {', '.join(sorted(self.bus_v))})") from None

    def v_pu(self, bus: str) -> dict[str, float]:
        base = self.base_kv_ln[bus.lower()] * 1000.0
        return {p: abs(v) / base for p, v in self.v(bus).items()}

    def terminal(self, element: str, terminal: int = 1) -> Terminal:
        key = f"{element}/{terminal}"
        term = self.terminals.get(key)
        if term is not None:
            return term
        for k, term in self.terminals.items():
            if k.lower() == key.lower():
                return term
        raise KeyError(f"no terminal {key!r} in the solution")

    def to_json(self) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
        """``{"buses": {bus: {phase: {"pu": magnitude, "deg": angle}}}}`` (what ``sim solve --json`` prints)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for bus, phases in sorted(self.bus_v.items()):
            base = self.base_kv_ln[bus] * 1000.0
            out[bus] = {
                p: {"pu": round(abs(v) / base, 6), "deg": round(math.degrees(cmath.phase(v)), 4)}
                for p, v in sorted(phases.items())
            }
        return {"buses": out}
