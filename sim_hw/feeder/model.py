"""The feeder's physics: an OpenDSS circuit (through opendssdirect.py) the bench drives and solves every step.

The bench pushes the devices' state in (regulator taps, capacitor and switch positions, PV output, a
fault), scales the loads by the load profile, calls :meth:`Feeder.solve` and hands the resulting
:class:`~sim_hw.feeder.solution.Solution` (plain data) to the device models.

Engine isolation: OpenDSS keeps its whole state in one engine, and opendssdirect's module-level ``dss``
object is a process-wide singleton. Each Feeder therefore builds its own engine with
``opendssdirect.dss.NewContext()`` (DSS C-API's context API), so several Feeders may live in one
process without seeing each other's circuit. One Feeder is not thread-safe: call it from one thread (or
one asyncio task) at a time. The engine is also told not to change the process's working directory
when it compiles a script (OpenDSS does by default; it would move every other module's relative paths).

Conventions are those of :mod:`sim_hw.feeder.solution`: phases ``a b c`` are OpenDSS nodes 1 2 3;
voltages phase-neutral, currents into the element at each terminal. Element names keep the case they
have in the script ("Transformer.Reg1"); bus names are lower case (OpenDSS's).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import opendssdirect
from opendssdirect import DSSException

from protocols.eventlog import EventLog
from sim_hw.feeder.solution import Solution, Terminal

log = EventLog("sim.feeder")

TAP_MIN = -16
TAP_MAX = 16
# Regulator tap ratio per step: 32 steps over +-10 % (IEEE 13-node "Regulator Data", the usual
# 32-step, 5/8 % step voltage regulator).
TAP_STEP_PU = 0.00625
_NODE_PHASE = {1: "a", 2: "b", 3: "c"}
_PHASE_NODE = {"a": 1, "b": 2, "c": 3}
# Classes whose terminals a Solution reports (what a meter or relay can be connected to).
_METERED_CLASSES = ("line", "transformer", "capacitor", "generator")
_FAULT_NAME = "gridedge_fault"

# The time series' voltage-dependent loads (docs/feeder.md, "Loads in the time series"): OpenDSS load model 4,
# P = P0 (V/V0)^CVR_WATTS, Q = Q0 (V/V0)^CVR_VARS. CVR_WATTS is a feeder-level CVR factor for active power (field
# studies of mixed residential/commercial feeders report about 0.7-0.8 %/%; OpenDSS's help for CVRwatts gives
# 0.4-0.8 as typical); CVR_VARS is the middle of the 2-3 OpenDSS's help gives as typical for CVRvars.
CVR_WATTS = 0.8
CVR_VARS = 2.5
# OpenDSS holds a load to its model only between Vminpu and Vmaxpu (defaults 0.95 and 1.05) and turns it into a
# constant impedance outside: widened so that the exponential law holds over every voltage a feeder in service sees
# (tests/test_feeder_loads.py measures both), and still gives way to a constant impedance in a fault.
CVR_VMIN_PU = 0.85
CVR_VMAX_PU = 1.15
LOAD_MODELS = ("published", "exponential")


class FeederError(ValueError):
    """A request the feeder cannot honour: unknown element, value out of range, unreadable script."""


@dataclass(frozen=True, slots=True)
class PvSite:
    """A PV site of the feeder: an OpenDSS Generator whose P and Q the bench sets every step."""

    name: str  # "pv675"
    bus: str  # "675"
    phases: tuple[str, ...]  # ("a", "b", "c") or ("a",)
    kva: float  # inverter rating [kVA]
    kw_peak: float  # output at 1000 W/m2 plane-of-array irradiance [kW]; arrays sized to the inverter


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each metered element's numbers sit in the engine's flat arrays (rebuilt when elements change)."""

    # (key, full name, bus, [(phase, node index into AllBusVolts | None, offset into the currents)])
    pd: tuple[tuple[str, str, str, tuple[tuple[str, int, int], ...]], ...]
    pc: tuple[tuple[str, str, str, tuple[tuple[str, int, int], ...]], ...]  # offsets into the element's own
    n_pd_values: int


def _original_names(script: str) -> dict[str, str]:
    """``"transformer.reg1" -> "Transformer.Reg1"``: the names as the script writes them (OpenDSS lowercases)."""
    names: dict[str, str] = {}
    for cls, name in re.findall(r"(?im)^\s*new\s+(?:object\s*=\s*)?([a-z]+)\.([^\s]+)", script):
        names[f"{cls.lower()}.{name.lower()}"] = f"{cls.capitalize()}.{name}"
    return names


def _finite(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FeederError(f"{what}={value!r}: expected a finite number")
    return float(value)


class Feeder:
    """One compiled OpenDSS circuit in its own engine. Build with :meth:`from_file`."""

    def __init__(self, path: Path, dss: object, script: str) -> None:
        self.path = path
        self._dss = dss
        self._names = _original_names(script)
        d = self._dss
        self._node_names: list[str] = [n.lower() for n in d.Circuit.AllNodeNames()]
        self._node_index = {n: k for k, n in enumerate(self._node_names)}
        self._bus_phases: dict[str, tuple[str, ...]] = {}
        for node in self._node_names:
            bus, _, num = node.partition(".")
            phase = _NODE_PHASE.get(int(num))
            if phase is not None:
                self._bus_phases[bus] = (*self._bus_phases.get(bus, ()), phase)
        self._base_kv_ln: dict[str, float] = {}
        for bus in d.Circuit.AllBusNames():
            d.Circuit.SetActiveBus(bus)
            self._base_kv_ln[bus.lower()] = float(d.Bus.kVBase())
        # bus -> [(phase, index into AllBusVolts)], for the bus voltages of a Solution
        self._bus_nodes = tuple(
            (bus, tuple((p, self._node_index[f"{bus}.{_PHASE_NODE[p]}"]) for p in phases))
            for bus, phases in self._bus_phases.items()
        )
        self._capacitors = {n.lower(): n.lower() for n in d.Capacitors.AllNames()}
        self._lines = {f"line.{n.lower()}": self._pretty(f"Line.{n}") for n in d.Lines.AllNames()}
        self._regulators = self._find_regulators()
        self._pv = self._find_pv_sites()
        self._taps_fixed = False
        self._fault_defined = False
        self._fault_on = False
        self._frequency_hz = 60.0
        self._rocof_hz_s = 0.0
        self._irradiance_pu = 0.0
        self._load_scale = 1.0
        self._load_model = "published"
        self._loads = tuple(n.lower() for n in d.Loads.AllNames())
        self._load_ratings: dict[str, tuple[float, float]] = {}
        for name in self._loads:
            d.Loads.Name(name)
            self._load_ratings[name] = (float(d.Loads.kW()), float(d.Loads.kvar()))
        self._layout = self._build_layout()

    # ------------------------------------------------------------------ building
    @classmethod
    def from_file(cls, path: Path | str) -> Feeder:
        """Compile an OpenDSS script in a fresh engine of its own.

        Raises :class:`FeederError` if the file is missing or OpenDSS refuses it (the engine's message
        included). The script must not ``Redirect`` to other files by relative path (the engine does not
        change directory); ``Compile`` is run with the absolute path.
        """
        path = Path(path).resolve()
        try:
            script = path.read_text(encoding="utf-8")
        except OSError as err:
            raise FeederError(f"cannot read the feeder script {str(path)!r}: {err.strerror}") from err
        dss = opendssdirect.dss.NewContext()
        dss.Basic.AllowChangeDir(False)
        try:
            dss.Text.Command(f'Compile "{path}"')
        except DSSException as err:
            raise FeederError(f"OpenDSS cannot compile {str(path)!r}: {err}") from err
        try:
            n_buses = dss.Circuit.NumBuses()
        except DSSException:  # "There is no active circuit!"
            n_buses = 0
        if n_buses == 0:
            raise FeederError(f"{str(path)!r} defines no circuit (no 'New Circuit.' line?)")
        return cls(path, dss, script)

    def _pretty(self, full_name: str) -> str:
        return self._names.get(full_name.lower(), full_name)

    def _find_regulators(self) -> dict[str, str]:
        """phase -> transformer name of each RegControl'd single-phase regulator."""
        d = self._dss
        regs: dict[str, str] = {}
        for ctrl in d.RegControls.AllNames():
            d.RegControls.Name(ctrl)
            xf = d.RegControls.Transformer().lower()
            d.Circuit.SetActiveElement(f"Transformer.{xf}")
            phases = {_NODE_PHASE[n] for n in d.CktElement.NodeOrder() if n in _NODE_PHASE}
            if len(phases) != 1:
                raise FeederError(f"regulator Transformer.{xf} must be single-phase (has phases {sorted(phases)})")
            (phase,) = phases
            if phase in regs:
                raise FeederError(f"two regulators on phase {phase}: {regs[phase]} and {xf}")
            regs[phase] = xf
        return {p: regs[p] for p in sorted(regs)}

    def _find_pv_sites(self) -> dict[str, PvSite]:
        d = self._dss
        sites: dict[str, PvSite] = {}
        for name in d.Generators.AllNames():
            d.Circuit.SetActiveElement(f"Generator.{name}")
            bus = d.CktElement.BusNames()[0].split(".")[0].lower()
            phases = tuple(_NODE_PHASE[n] for n in d.CktElement.NodeOrder() if n in _NODE_PHASE)
            d.Generators.Name(name)
            kva = float(d.Generators.kVARated())
            sites[name.lower()] = PvSite(name.lower(), bus, phases, kva, kva)
        return sites

    def _terminal_map(self, nodes: list[int], buses: list[str], n_terms: int) -> list[tuple[str, tuple]]:
        """For each terminal: (bus, ((phase, node index, conductor offset), ...))."""
        n_cond = len(nodes) // n_terms
        out = []
        for t in range(n_terms):
            bus = buses[t].split(".")[0].lower()
            entries = []
            for c in range(n_cond):
                node = nodes[t * n_cond + c]
                phase = _NODE_PHASE.get(node)
                if phase is None:  # neutral / ground conductor
                    continue
                entries.append((phase, self._node_index[f"{bus}.{node}"], t * n_cond + c))
            out.append((bus, tuple(entries)))
        return out

    def _build_layout(self) -> _Layout:
        d = self._dss
        pd = []
        offset = 0
        for name in d.PDElements.AllNames():
            d.Circuit.SetActiveElement(name)
            nodes = list(d.CktElement.NodeOrder())
            n_terms = d.CktElement.NumTerminals()
            if name.split(".")[0].lower() in _METERED_CLASSES:
                pretty = self._pretty(name)
                for t, (bus, entries) in enumerate(self._terminal_map(nodes, d.CktElement.BusNames(), n_terms), 1):
                    if not entries:  # e.g. a capacitor's grounded star point: nothing to meter
                        continue
                    shifted = tuple((p, k, offset + c) for p, k, c in entries)
                    pd.append((f"{pretty}/{t}", pretty, bus, shifted))
            offset += len(nodes)
        pc = []
        for name in d.Generators.AllNames():
            full = f"Generator.{name}"
            d.Circuit.SetActiveElement(full)
            pretty = self._pretty(full)
            nodes = list(d.CktElement.NodeOrder())
            for t, (bus, entries) in enumerate(
                self._terminal_map(nodes, d.CktElement.BusNames(), d.CktElement.NumTerminals()), 1
            ):
                pc.append((f"{pretty}/{t}", pretty, bus, entries))
        return _Layout(tuple(pd), tuple(pc), offset)

    def substation_buses(self) -> tuple[str, ...]:
        """The source bus and the buses at the regulators' terminals (IEEE 13-node: sourcebus, 650, rg60).

        They are the substation's: the regulator's output is held high on purpose (line-drop compensation), so a
        service-voltage range is judged on the other buses (sim_hw/truthlog.py).
        """
        d = self._dss
        buses: list[str] = []
        d.Vsources.First()
        d.Circuit.SetActiveElement(f"Vsource.{d.Vsources.Name()}")
        buses.append(d.CktElement.BusNames()[0].split(".")[0].lower())
        for xf in self._regulators.values():
            d.Circuit.SetActiveElement(f"Transformer.{xf}")
            buses += [b.split(".")[0].lower() for b in d.CktElement.BusNames()]
        return tuple(dict.fromkeys(buses))

    # ------------------------------------------------------------------ loads
    def set_load_model(self, model: str) -> None:
        """``"published"``: every load as the script defines it (the IEEE 13-node data: constant PQ, Z or I);
        ``"exponential"``: every load P = P0 (V/V0)^CVR_WATTS, Q = Q0 (V/V0)^CVR_VARS (OpenDSS model 4)."""
        if model not in LOAD_MODELS:
            raise FeederError(f"load model={model!r}: allowed {', '.join(LOAD_MODELS)}")
        if model == self._load_model:
            return
        if model == "published":
            raise FeederError("load model: the published models come back only by compiling the script again")
        for name in self._loads:
            self._dss.Text.Command(
                f"Edit Load.{name} model=4 CVRwatts={CVR_WATTS} CVRvars={CVR_VARS} "
                f"Vminpu={CVR_VMIN_PU} Vmaxpu={CVR_VMAX_PU}"
            )
        self._load_model = model

    def load_ratings(self) -> dict[str, tuple[float, float]]:
        """Every load's nominal (kW, kvar) as the script defines it (a profile scales from these)."""
        return dict(self._load_ratings)

    def set_load(self, name: str, p_kw: float, q_kvar: float) -> None:
        """Set one load's P [kW] and Q [kvar] at nominal voltage (a per-load profile; LoadMult still applies)."""
        key = name.lower() if isinstance(name, str) else name
        if key not in self._load_ratings:
            raise FeederError(f"load {name!r}: no such load (loads: {', '.join(self._loads)})")
        p = _finite(f"load {key} p_kw", p_kw)
        q = _finite(f"load {key} q_kvar", q_kvar)
        if p < 0:
            raise FeederError(f"load {key}: p_kw={p_kw!r}: allowed >= 0")
        d = self._dss
        d.Loads.Name(key)
        d.Loads.kW(p)
        d.Loads.kvar(q)

    @property
    def load_model(self) -> str:
        return self._load_model

    # ------------------------------------------------------------------ regulators
    def set_regulator_taps(self, taps: tuple[int, int, int]) -> None:
        """Fix the regulators' taps, phases a, b, c, each an integer step in -16..16 (0.625 % per step).

        From the first call on, OpenDSS's own RegControls are disabled: the bench's regulator controller
        decides the taps.
        """
        phases = tuple(self._regulators)
        if phases != ("a", "b", "c"):
            raise FeederError(f"set_regulator_taps needs regulators on phases a, b, c; this feeder has {phases}")
        if not isinstance(taps, tuple | list) or len(taps) != 3:
            raise FeederError(f"regulator taps={taps!r}: expected 3 integers (phases a, b, c)")
        for phase, tap in zip(phases, taps, strict=True):
            if isinstance(tap, bool) or not isinstance(tap, int) or not TAP_MIN <= tap <= TAP_MAX:
                raise FeederError(
                    f"regulator tap phase {phase}={tap!r}: allowed integers {TAP_MIN}..{TAP_MAX} "
                    f"({TAP_STEP_PU * 100:g} % per step)"
                )
        d = self._dss
        if not self._taps_fixed:
            for ctrl in d.RegControls.AllNames():
                d.Circuit.SetActiveElement(f"RegControl.{ctrl}")
                d.CktElement.Enabled(False)
            self._taps_fixed = True
        for phase, tap in zip(phases, taps, strict=True):
            d.Transformers.Name(self._regulators[phase])
            d.Transformers.Wdg(2)
            d.Transformers.Tap(1.0 + TAP_STEP_PU * tap)

    def regulator_taps(self) -> tuple[int, ...]:
        """The regulators' present tap steps, phases a, b, c (set, or chosen by OpenDSS's RegControls)."""
        d = self._dss
        out = []
        for xf in self._regulators.values():
            d.Transformers.Name(xf)
            d.Transformers.Wdg(2)
            out.append(round((d.Transformers.Tap() - 1.0) / TAP_STEP_PU))
        return tuple(out)

    # ------------------------------------------------------------------ capacitors
    def _capacitor(self, name: str) -> str:
        key = name.lower() if isinstance(name, str) else name
        if key not in self._capacitors:
            raise FeederError(f"capacitor {name!r}: no such capacitor (capacitors: {', '.join(self._capacitors)})")
        return key

    def set_capacitor(self, name: str, closed: bool) -> None:
        """Close (all steps in) or open a shunt capacitor bank, e.g. ``"cap675"``."""
        key = self._capacitor(name)
        d = self._dss
        d.Capacitors.Name(key)
        if closed:
            d.Capacitors.Close()
        else:
            d.Capacitors.Open()

    def capacitor_closed(self, name: str) -> bool:
        key = self._capacitor(name)
        self._dss.Capacitors.Name(key)
        return any(s == 1 for s in self._dss.Capacitors.States())

    # ------------------------------------------------------------------ PV
    def pv_sites(self) -> dict[str, PvSite]:
        return dict(self._pv)

    def set_pv_rating(self, name: str, kva: float) -> None:
        """Rate a PV site's inverter at ``kva`` (0 < kva <= 20000): the OpenDSS Generator's kVA and the site's
        limit in :meth:`set_pv`. A bench with more PV than the script's sites carry sets it before it starts."""
        key = name.lower() if isinstance(name, str) else name
        site = self._pv.get(key)
        if site is None:
            raise FeederError(f"PV site {name!r}: no such site (sites: {', '.join(self._pv)})")
        rating = _finite(f"{site.name} kva", kva)
        if not 0 < rating <= 20_000:
            raise FeederError(f"PV site {site.name}: kva={kva!r}: allowed 0 < kva <= 20000")
        self._dss.Text.Command(f"Edit Generator.{key} kVA={rating!r}")
        self._pv[key] = PvSite(site.name, site.bus, site.phases, rating, rating)

    def set_pv(self, name: str, p_kw: float, q_kvar: float) -> None:
        """Set a PV site's output: three-phase totals [kW], [kvar]; ``q_kvar`` > 0 injects vars.

        Allowed: 0 <= p_kw and hypot(p_kw, q_kvar) <= the site's kVA (the inverter model clips first).
        """
        key = name.lower() if isinstance(name, str) else name
        site = self._pv.get(key)
        if site is None:
            raise FeederError(f"PV site {name!r}: no such site (sites: {', '.join(self._pv)})")
        p = _finite(f"{site.name} p_kw", p_kw)
        q = _finite(f"{site.name} q_kvar", q_kvar)
        if p < 0 or math.hypot(p, q) > site.kva * (1 + 1e-9):
            raise FeederError(
                f"PV site {site.name}: p_kw={p_kw!r}, q_kvar={q_kvar!r} out of range: "
                f"allowed 0 <= p_kw and hypot(p_kw, q_kvar) <= {site.kva:g} kVA"
            )
        d = self._dss
        d.Generators.Name(key)
        d.Generators.kW(p)
        d.Generators.kvar(q)

    # ------------------------------------------------------------------ switching and faults
    def _line(self, element: str) -> str:
        key = element.lower() if isinstance(element, str) else element
        if key not in self._lines:
            raise FeederError(f"switch element {element!r}: no such line (lines: {', '.join(self._lines.values())})")
        return key

    def set_switch(self, element: str, closed: bool) -> None:
        """Open or close every phase of a line at its terminal 1 (a breaker or switch), e.g. "Line.650632"."""
        key = self._line(element)
        d = self._dss
        d.Circuit.SetActiveElement(key)
        if closed:
            d.CktElement.Close(1, 0)
        else:
            d.CktElement.Open(1, 0)

    def switch_closed(self, element: str) -> bool:
        key = self._line(element)
        self._dss.Circuit.SetActiveElement(key)
        return not self._dss.CktElement.IsOpen(1, 0)

    def set_fault(self, bus: str, phases: str = "abc", r_ohm: float = 0.01) -> None:
        """Apply a bolted-ish fault from the given phases of ``bus`` to ground, ``r_ohm`` per phase [ohm].

        One fault at a time: a new call moves it. :meth:`clear_fault` removes it.
        """
        key = bus.lower() if isinstance(bus, str) else bus
        if key not in self._bus_phases:
            raise FeederError(f"fault bus {bus!r}: no such bus (buses: {', '.join(sorted(self._bus_phases))})")
        have = self._bus_phases[key]
        if (
            not isinstance(phases, str)
            or not phases
            or any(p not in have for p in phases)
            or len(set(phases)) != len(phases)
        ):
            raise FeederError(f"fault phases={phases!r} at bus {key}: allowed a non-empty subset of {''.join(have)!r}")
        r = _finite("fault r_ohm", r_ohm)
        if r <= 0:
            raise FeederError(f"fault r_ohm={r_ohm!r}: allowed > 0 [ohm]")
        nodes = ".".join(str(_PHASE_NODE[p]) for p in sorted(phases))
        verb = "Edit" if self._fault_defined else "New"
        self._dss.Text.Command(
            f"{verb} Fault.{_FAULT_NAME} bus1={key}.{nodes} phases={len(phases)} r={r!r} enabled=yes"
        )
        self._fault_defined = True
        self._fault_on = True

    def clear_fault(self) -> None:
        if self._fault_defined and self._fault_on:
            self._dss.Text.Command(f"Edit Fault.{_FAULT_NAME} enabled=no")
        self._fault_on = False

    # ------------------------------------------------------------------ profiles and grid state
    def set_load_scale(self, scale: float) -> None:
        """Multiply every load's nominal P and Q by ``scale`` (the load profile; 1 = published loads)."""
        s = _finite("load scale", scale)
        if not 0.0 <= s <= 10.0:
            raise FeederError(f"load scale={scale!r}: allowed 0..10")
        self._load_scale = s
        self._dss.Solution.LoadMult(s)

    def set_irradiance(self, pu: float) -> None:
        """Record plane-of-array irradiance [pu of 1000 W/m2] for the Solution (the PV devices read it)."""
        v = _finite("irradiance", pu)
        if not 0.0 <= v <= 1.5:
            raise FeederError(f"irradiance={pu!r}: allowed 0..1.5 pu of 1000 W/m2")
        self._irradiance_pu = v

    def set_frequency(self, hz: float, rocof: float = 0.0) -> None:
        """Record the grid frequency [Hz] and its rate of change [Hz/s] for the Solution.

        The power flow itself stays at the circuit's base frequency (60 Hz): a quasi-static solve.
        """
        f = _finite("frequency", hz)
        r = _finite("rocof", rocof)
        if not 40.0 <= f <= 70.0:
            raise FeederError(f"frequency={hz!r}: allowed 40..70 Hz")
        self._frequency_hz = f
        self._rocof_hz_s = r

    # ------------------------------------------------------------------ solving
    def solve(self, t: float = 0.0) -> Solution:
        """Solve the power flow (regulator control included when taps are not fixed) and read it out.

        A power flow that does not converge gives ``Solution.converged == False`` (logged); nothing is
        raised, so a bench keeps stepping through a collapse.
        """
        d = self._dss
        try:
            d.Solution.Solve()
            converged = bool(d.Solution.Converged())
        except DSSException as err:
            converged = False
            log.warning("feeder_solve_failed", t=t, error=err)
        if not converged:
            log.warning("feeder_not_converged", t=t, iterations=d.Solution.Iterations())
        return self._read(t, converged)

    def solve_lean(self) -> bool:
        """Solve the power flow without reading the whole Solution out (a long history); True if it converged."""
        try:
            self._dss.Solution.Solve()
            return bool(self._dss.Solution.Converged())
        except DSSException:
            return False

    def terminal_power(self, element: str, terminal: int) -> complex:
        """The three-phase power into ``element`` at ``terminal`` after the last solve [kW + j kvar]."""
        d = self._dss
        try:
            d.Circuit.SetActiveElement(element)
            n_terms = d.CktElement.NumTerminals()
        except DSSException as err:
            raise FeederError(f"element {element!r}: {err}") from err
        if d.CktElement.Name().lower() != element.lower() or not 1 <= terminal <= n_terms:
            raise FeederError(f"element {element!r} terminal {terminal!r}: no such element terminal")
        powers = d.CktElement.Powers()
        n = len(powers) // (2 * n_terms)
        chunk = powers[2 * n * (terminal - 1) : 2 * n * terminal]
        return complex(sum(chunk[0::2]), sum(chunk[1::2]))

    def losses_kw(self) -> float:
        """The circuit's losses after the last solve [kW]."""
        return float(self._dss.Circuit.Losses()[0]) / 1000.0

    def _read(self, t: float, converged: bool) -> Solution:
        d = self._dss
        flat = d.Circuit.AllBusVolts()
        volts = [complex(flat[k], flat[k + 1]) for k in range(0, len(flat), 2)]
        bus_v = {bus: {p: volts[k] for p, k in nodes} for bus, nodes in self._bus_nodes}
        layout = self._layout
        flat_i = d.PDElements.AllCurrents()
        if len(flat_i) != 2 * layout.n_pd_values:  # an element was added or removed since the layout
            self._layout = layout = self._build_layout()
            flat_i = d.PDElements.AllCurrents()
        terminals: dict[str, Terminal] = {}
        for key, element, bus, entries in layout.pd:
            terminals[key] = Terminal(
                element,
                bus,
                {p: volts[k] for p, k, _ in entries},
                {p: complex(flat_i[2 * c], flat_i[2 * c + 1]) for p, _, c in entries},
            )
        for key, element, bus, entries in layout.pc:
            d.Circuit.SetActiveElement(element)
            cur = d.CktElement.Currents()
            terminals[key] = Terminal(
                element,
                bus,
                {p: volts[k] for p, k, _ in entries},
                {p: complex(cur[2 * c], cur[2 * c + 1]) for p, _, c in entries},
            )
        losses = d.Circuit.Losses()  # [W, var]
        source = d.Circuit.TotalPower()  # [kW, kvar] into the source: negative while it feeds the circuit
        return Solution(
            t=t,
            converged=converged,
            bus_v=bus_v,
            base_kv_ln=dict(self._base_kv_ln),
            terminals=terminals,
            frequency_hz=self._frequency_hz,
            rocof_hz_s=self._rocof_hz_s,
            irradiance_pu=self._irradiance_pu,
            load_scale=self._load_scale,
            losses_kva=complex(losses[0], losses[1]) / 1000.0,
            source_kva=-complex(source[0], source[1]),
            regulator_taps=self.regulator_taps(),
            capacitors={name: self.capacitor_closed(name) for name in self._capacitors},
        )
