"""PMUs on the feeder: a SimPmu whose phasors, frequency and ROCOF come from the bench's physics.

The voltages are the bus's phase-neutral phasors of the latest solution (primary volts), the currents
those of one element terminal (``current = "Line.632671/2"``: into the element at terminal 2, i.e. the
current flowing on to the bus, negated... see :func:`feeder_source`). Between two solutions every phasor
turns with the frequency's deviation from nominal, so the angle a PMU reports is continuous and its
slope is the frequency it reports (IEEE C37.118.1-2011, 4.2: the phasor of a signal off nominal frequency
rotates at 2 pi (f - f0)). The analogs are the bus's three-phase P and Q [W, var] through the current
terminal (0 without one); digital word 0 bit 0 is 1 while the bus is energised.

Timestamps follow the bench's simulated clock (``Bench.clock``): at ``--speed N`` a PMU still sends
``rate`` frames per wall second and successive timestamps are N frame periods apart, as a PMU stream
decimated by N would be.
"""

from __future__ import annotations

import cmath
from collections.abc import Callable
from typing import Any

from protocols.c37118 import PhasorKind
from sim_hw.config import PmuSpec
from sim_hw.devices.pmu import DEFAULT_UDP_PORT, PmuMeasurement, PmuSimError, SimPmu

PHASES = ("a", "b", "c")
PHASORS = (
    ("VA", PhasorKind.VOLTAGE),
    ("VB", PhasorKind.VOLTAGE),
    ("VC", PhasorKind.VOLTAGE),
    ("IA", PhasorKind.CURRENT),
    ("IB", PhasorKind.CURRENT),
    ("IC", PhasorKind.CURRENT),
)
_ENERGISED_V = 0.1  # a bus below 10 % of its nominal voltage reads as de-energised (digital bit 0 clear)


class FeederPmuError(ValueError):
    """A PMU's bus or current terminal is not in the feeder (checked when the PMU is built, not in its tick)."""


def feeder_source(bench: Any, spec: PmuSpec) -> Callable[[float], PmuMeasurement]:
    """``source(t)`` for a SimPmu on ``spec.bus``, reading ``bench.solution`` and ``bench.grid_phase_rad``.

    The currents are reported flowing INTO the bus from the named terminal's element when that terminal
    is on the bus (OpenDSS gives the current into the element: the PMU negates it), so a load bus fed
    by a line shows positive power.
    """
    bus = spec.bus.lower()
    element, _, terminal = (spec.current or "/").partition("/")

    def source(t: float) -> PmuMeasurement:
        sol = bench.solution
        turn = cmath.rect(1.0, bench.grid_phase_rad(t))
        v = sol.v(bus)
        volts = [v.get(p, 0j) * turn for p in PHASES]
        amps = [0j, 0j, 0j]
        p_w = q_var = 0.0
        if element:
            try:
                term = sol.terminal(element, int(terminal))
            except KeyError as err:  # the tick logs a PmuSimError and goes on; anything else would end it
                raise PmuSimError(f"current = {spec.current!r}: {err.args[0]}") from err
            sign = -1.0 if term.bus.lower().split(".")[0] == bus else 1.0
            amps = [sign * term.i.get(p, 0j) * turn for p in PHASES]
            s = sum((volts[k] * amps[k].conjugate() for k in range(3)), 0j)
            p_w, q_var = s.real, s.imag
        base = sol.base_kv_ln[bus] * 1000.0
        energised = max(abs(x) for x in volts) > _ENERGISED_V * base
        return PmuMeasurement(
            tuple(volts) + tuple(amps), sol.frequency_hz, sol.rocof_hz_s, (p_w, q_var), (1 if energised else 0,)
        )

    return source


def feeder_pmu(bench: Any, spec: PmuSpec) -> SimPmu:
    """A SimPmu for ``spec`` on the bench's feeder (not started)."""
    sol = bench.solution
    bus = spec.bus.lower()
    if bus not in sol.bus_v or not sol.base_kv_ln.get(bus):
        raise FeederPmuError(
            f"bus = {spec.bus!r}: not a bus of the feeder with a base voltage ({', '.join(sorted(sol.bus_v))})"
        )
    if spec.current is not None:
        element, _, terminal = spec.current.partition("/")
        try:
            sol.terminal(element, int(terminal))
        except (KeyError, ValueError) as err:
            raise FeederPmuError(
                f'current = {spec.current!r}: must be "<element>/<terminal number>" of the feeder, e.g. '
                f'"Line.632671/2" ({err})'
            ) from err
    nominal_v = sol.base_kv_ln[bus] * 1000.0
    return SimPmu(
        spec.idcode,
        spec.name[:16],
        phasors=PHASORS,
        rate=spec.rate,
        nominal_hz=60,
        nominal_v=nominal_v,
        version=spec.version,
        source=feeder_source(bench, spec),
        clock=bench.clock,
        host=spec.host,
        port=spec.port,
        udp_data=spec.udp_port is not None,
        udp_port=spec.udp_port or DEFAULT_UDP_PORT,
    )
