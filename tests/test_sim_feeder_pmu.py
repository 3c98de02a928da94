"""PMUs on the feeder: phasors from the solved bus voltages, turning with the frequency's deviation."""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from sim_hw.config import PmuSpec
from sim_hw.devices.feeder_pmu import FeederPmuError, feeder_pmu, feeder_source
from sim_hw.devices.pmu import PmuSimError
from sim_hw.feeder.model import Feeder
from sim_hw.feeder.solution import Solution, Terminal

ROOT = Path(__file__).resolve().parent.parent
BASE_V = 2401.77
V = {"a": cmath.rect(1.02 * BASE_V, 0.0), "b": cmath.rect(1.01 * BASE_V, -2.1), "c": cmath.rect(1.00 * BASE_V, 2.1)}
I_INTO_LINE_AT_671 = {
    "a": cmath.rect(300, math.pi - 0.3),
    "b": cmath.rect(280, math.pi - 2.4),
    "c": cmath.rect(290, math.pi + 1.8),
}


@dataclass
class BenchState:
    """The two things a feeder PMU reads from the bench: the latest solution and the grid's angle drift."""

    solution: Solution
    phase_rad: float = 0.0
    drift_hz: float = 0.0

    def grid_phase_rad(self, t: float) -> float:
        return self.phase_rad + 2 * math.pi * self.drift_hz * (t - self.solution.t)

    def clock(self) -> float:
        return self.solution.t


def solution(t: float = 1000.0, v: dict[str, complex] | None = None, f: float = 60.0) -> Solution:
    term = Terminal("Line.632671", "671", V, I_INTO_LINE_AT_671)
    return Solution(t, True, {"671": v or V}, {"671": BASE_V / 1000}, {"Line.632671/2": term}, frequency_hz=f,
                    rocof_hz_s=-0.05)  # fmt: skip


SPEC = PmuSpec("pmu-671", "671", 671, "127.0.0.1", 0, 30, "Line.632671/2")


def test_phasors_are_the_bus_voltages_and_the_current_arriving_at_the_bus() -> None:
    m = feeder_source(BenchState(solution()), SPEC)(1000.0)
    assert m.phasors[:3] == pytest.approx([V["a"], V["b"], V["c"]])
    # OpenDSS gives the current INTO the line at 671; the PMU reports the current flowing into the bus
    assert m.phasors[3:] == pytest.approx([-I_INTO_LINE_AT_671[p] for p in "abc"])
    s = sum(V[p] * (-I_INTO_LINE_AT_671[p]).conjugate() for p in "abc")
    assert m.analogs == pytest.approx((s.real, s.imag)) and s.real > 0  # a load bus: power arrives
    assert m.frequency_hz == 60.0 and m.rocof_hz_per_s == -0.05 and m.digitals == (1,)


def test_between_solutions_every_phasor_turns_at_the_frequency_deviation() -> None:
    bench = BenchState(solution(f=60.05), phase_rad=0.4, drift_hz=0.05)
    src = feeder_source(bench, SPEC)
    m0, m1 = src(1000.0), src(1000.5)
    turn = 2 * math.pi * 0.05 * 0.5  # 0.05 Hz off nominal for 0.5 s (C37.118.1-2011 4.2)
    assert cmath.phase(m0.phasors[0]) == pytest.approx(0.4)
    assert cmath.phase(m1.phasors[0] / m0.phasors[0]) == pytest.approx(turn)
    assert abs(m1.phasors[1]) == pytest.approx(abs(V["b"]))


def test_a_dead_bus_clears_the_energised_bit() -> None:
    dead = {p: 0.01 * v for p, v in V.items()}
    m = feeder_source(BenchState(solution(v=dead)), SPEC)(1000.0)
    assert m.digitals == (0,)


def test_the_pmu_is_configured_for_the_bus_nominal_voltage_and_rate() -> None:
    pmu = feeder_pmu(BenchState(solution()), SPEC)
    block = pmu.config.pmus[0]
    assert pmu.idcode == 671 and pmu.rate == 30 and block.nominal_hz == 60
    assert block.station.strip() == "pmu-671" and block.phasor_names == ("VA", "VB", "VC", "IA", "IB", "IC")


# ---- a PMU's bus and current terminal must exist in the feeder ------------------------------------------------


def _stub_bench() -> SimpleNamespace:
    feeder = Feeder.from_file(ROOT / "config" / "ieee13" / "IEEE13.dss")
    return SimpleNamespace(solution=feeder.solve(0.0), grid_phase_rad=lambda t: 0.0, clock=lambda: 0.0)


@pytest.mark.parametrize(
    ("bus", "current", "message"),
    [
        ("671", "Line.632671/x", "current = 'Line.632671/x'"),
        ("671", "Line.nope/2", "current = 'Line.nope/2'"),
        ("nope", None, "bus = 'nope'"),
    ],
)
def test_a_pmu_on_a_missing_bus_or_terminal_is_refused_when_built(bus: str, current: str | None, message: str) -> None:
    with pytest.raises(FeederPmuError, match=message):
        feeder_pmu(_stub_bench(), PmuSpec("p", bus, 1, "127.0.0.1", 1, current=current))


def test_a_terminal_gone_from_a_later_solution_is_an_error_the_pmu_tick_logs() -> None:
    bench = _stub_bench()
    source = feeder_source(bench, PmuSpec("p", "671", 1, "127.0.0.1", 1, current="Line.632671/2"))
    bench.solution = _without_terminals(bench.solution)
    with pytest.raises(PmuSimError, match="Line.632671/2"):
        source(0.0)


def _without_terminals(solution):
    from dataclasses import replace

    return replace(solution, terminals={})
