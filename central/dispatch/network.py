"""Central's network model: the utility's OpenDSS file of the feeder, solved with opendssdirect, and the linear
sensitivities of bus voltages, head power and losses to each controllable injection (docs/dispatch.md, "The
network model").

Central reads the model the utility keeps of its feeder (a ``.dss`` file named in ``[dispatch] network``); it
never imports the simulated substation. One OpenDSS engine per model (``dss.NewContext()``), compiled without
changing the process's working directory.

A *case* is the feeder at one interval: every load scaled to the forecast's feeder totals (P and Q apart), each
dispatched inverter at its available power and zero vars, each capacitor bank in a given state, the regulators
either regulating (OpenDSS's static control mode: the base of an interval) or held at given taps (what the
sensitivities and the check re-solve use). Sensitivities are finite differences about one case with the taps
held: one re-solve per inverter P, inverter Q, capacitor bank and the CVR tap shift.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import opendssdirect

TAP_STEP_PU = 0.00625  # one step of a 32-step +-10 % regulator (the model's NumTaps=32, MaxTap=1.1, MinTap=0.9)


class NetworkError(ValueError):
    """The network model cannot be used as configured; the text names the file, element or bus."""


@dataclass(frozen=True, slots=True)
class Case:
    """One solved state: monitored node voltages [pu], head import [kW, kvar] (positive: from the grid), losses
    [kW], the regulators' taps [pu]."""

    v_pu: np.ndarray
    head_kw: float
    head_kvar: float
    losses_kw: float
    taps: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Sensitivities:
    """Linear responses about one case, columns in the order of the model's inverters / capacitor banks.

    ``dv_dp``, ``dv_dq``: [pu/kW], [pu/kvar] of injected power (nodes x inverters); ``dv_cap``: [pu] for the bank
    switched from open to closed (nodes x banks); ``dv_cvr``: [pu] for the regulators lowered by the CVR steps
    (nodes). ``dhead_*`` and ``dloss_*``: the same for the head import and the losses [kW per kW or kvar; kW]."""

    dv_dp: np.ndarray
    dv_dq: np.ndarray
    dv_cap: np.ndarray
    dv_cvr: np.ndarray
    dhead_dp: np.ndarray
    dhead_dq: np.ndarray
    dhead_cap: np.ndarray
    dhead_cvr: float
    dloss_dp: np.ndarray
    dloss_dq: np.ndarray
    dloss_cap: np.ndarray
    dloss_cvr: float
    d2loss_dq2: np.ndarray  # [kW/kvar^2] the losses' curvature in each inverter's vars (central difference)


class NetworkModel:
    """The feeder's OpenDSS model with the dispatched elements named.

    ``inverters``: Generator names; ``capbanks``: Capacitor names; ``monitor``: bus names whose every node is
    watched (empty: every bus but the source's and the regulators' own)."""

    def __init__(self, path: Path | str, inverters: Sequence[str], capbanks: Sequence[str],
                 monitor: Sequence[str] = ()) -> None:  # fmt: skip
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise NetworkError(f"{self.path}: no such network model file")
        dss = opendssdirect.dss.NewContext()
        dss.Basic.AllowChangeDir(False)
        try:
            dss.Text.Command(f'Compile "{self.path}"')
            n_buses = dss.Circuit.NumBuses()
        except opendssdirect.DSSException as err:
            raise NetworkError(f"{self.path}: OpenDSS cannot compile it: {err}") from err
        if n_buses == 0:
            raise NetworkError(f"{self.path}: defines no circuit")
        self._dss = dss
        gens = {n.lower() for n in dss.Generators.AllNames()}
        caps = {n.lower() for n in dss.Capacitors.AllNames()}
        for name in inverters:
            if name.lower() not in gens:
                raise NetworkError(f"inverter element {name!r}: no Generator of that name in {self.path.name} "
                                   f"(has: {', '.join(sorted(gens)) or 'none'})")  # fmt: skip
        for name in capbanks:
            if name.lower() not in caps:
                raise NetworkError(f"capacitor element {name!r}: no Capacitor of that name in {self.path.name} "
                                   f"(has: {', '.join(sorted(caps)) or 'none'})")  # fmt: skip
        self.inverters = tuple(n.lower() for n in inverters)
        self.capbanks = tuple(n.lower() for n in capbanks)
        self.regulators = tuple(dss.RegControls.Transformer().lower() for _ in self._each(dss.RegControls))
        names = [n.lower() for n in dss.Circuit.AllNodeNames()]
        source = dss.Circuit.AllBusNames()[0].lower()
        regulated = set()  # the regulators' own buses: the regulator holds them, no customer is served there
        for xf in self.regulators:
            dss.Circuit.SetActiveElement(f"Transformer.{xf}")
            regulated.update(b.split(".")[0].lower() for b in dss.CktElement.BusNames())
        buses = {b.lower() for b in dss.Circuit.AllBusNames()}
        wanted = [b.lower() for b in monitor]
        for b in wanted:
            if b not in buses:
                raise NetworkError(f"monitored bus {b!r}: not a bus of {self.path.name}")
        if not wanted:
            wanted = [b for b in buses if b != source and b not in regulated]
        self._node_idx = np.array([i for i, n in enumerate(names) if n.split(".")[0] in set(wanted)])
        self.nodes = tuple(names[i] for i in self._node_idx)
        self._loads: list[tuple[str, float, float]] = []
        for _ in self._each(dss.Loads):
            self._loads.append((dss.Loads.Name(), dss.Loads.kW(), dss.Loads.kvar()))
        self.base_load_kw = float(sum(p for _, p, _ in self._loads))
        self.base_load_kvar = float(sum(q for _, _, q in self._loads))
        self.cap_model_state = tuple(self._cap_closed(c) for c in self.capbanks)
        self._start_taps = self._taps()

    @staticmethod
    def _each(iface: Any) -> Iterator[int]:
        """Each element of an OpenDSS collection made active in turn."""
        i = iface.First()
        while i > 0:
            yield i
            i = iface.Next()

    def _cap_closed(self, name: str) -> bool:
        self._dss.Capacitors.Name(name)
        return all(s == 1 for s in self._dss.Capacitors.States())

    # ---- one case ----------------------------------------------------------------------------------------------

    def _set(self, load_kw: float, load_kvar: float, pv_kw: Sequence[float], pv_kvar: Sequence[float],
             cap_closed: Sequence[bool]) -> None:  # fmt: skip
        d = self._dss
        kp = load_kw / self.base_load_kw if self.base_load_kw else 0.0
        kq = load_kvar / self.base_load_kvar if self.base_load_kvar else 0.0
        for name, p, q in self._loads:
            d.Loads.Name(name)
            d.Loads.kW(p * kp)
            d.Loads.kvar(q * kq)
        for gen in [n.lower() for n in d.Generators.AllNames()]:
            d.Generators.Name(gen)
            i = self.inverters.index(gen) if gen in self.inverters else None
            d.Generators.kW(float(pv_kw[i]) if i is not None else 0.0)
            d.Generators.kvar(float(pv_kvar[i]) if i is not None else 0.0)
        for name, closed in zip(self.capbanks, cap_closed, strict=True):
            d.Capacitors.Name(name)
            if closed:
                d.Capacitors.Close()
            else:
                d.Capacitors.Open()

    def _taps(self) -> tuple[float, ...]:
        out = []
        for xf in self.regulators:
            self._dss.Transformers.Name(xf)
            self._dss.Transformers.Wdg(2)
            out.append(float(self._dss.Transformers.Tap()))
        return tuple(out)

    def _hold_taps(self, taps: Sequence[float]) -> None:
        for xf, tap in zip(self.regulators, taps, strict=True):
            self._dss.Transformers.Name(xf)
            self._dss.Transformers.Wdg(2)
            self._dss.Transformers.Tap(float(tap))

    def _solve(self, regulate: bool) -> Case:
        d = self._dss
        d.Text.Command(f"Set ControlMode={'STATIC' if regulate else 'OFF'}")
        d.Solution.Solve()
        if not d.Solution.Converged():
            raise NetworkError(f"{self.path.name}: the power flow did not converge")
        v = np.asarray(d.Circuit.AllBusMagPu())[self._node_idx]
        kw, kvar = d.Circuit.TotalPower()
        loss_w, _ = d.Circuit.Losses()
        return Case(v, -float(kw), -float(kvar), float(loss_w) / 1000.0, self._taps())

    def solve(self, load_kw: float, load_kvar: float, pv_kw: Sequence[float], pv_kvar: Sequence[float] | None = None,
              cap_closed: Sequence[bool] | None = None, taps: Sequence[float] | None = None) -> Case:  # fmt: skip
        """The case at these loads [kW, kvar feeder totals] and injections; the regulators regulate unless
        ``taps`` holds them."""
        pv_kvar = [0.0] * len(self.inverters) if pv_kvar is None else pv_kvar
        cap_closed = self.cap_model_state if cap_closed is None else cap_closed
        self._set(load_kw, load_kvar, pv_kw, pv_kvar, cap_closed)
        if taps is not None:
            self._hold_taps(taps)
            return self._solve(regulate=False)
        # a regulator stops at the first tap inside its band, so where it settles depends on where it started:
        # start every regulated case from the same taps, so a case is a function of its inputs alone
        self._hold_taps(self._start_taps)
        return self._solve(regulate=True)

    # ---- sensitivities ------------------------------------------------------------------------------------------

    def sensitivities(self, load_kw: float, load_kvar: float, pv_kw: Sequence[float],
                      cap_closed: Sequence[bool] | None = None, cvr_steps: int = 0,
                      dp_kw: Mapping[int, float] | None = None) -> tuple[Case, Sensitivities]:  # fmt: skip
        """Finite differences about the regulated case at these loads: taps held at where the regulators settled.
        ``dp_kw``: the step per inverter (default 10 % of its available power, at least 5 kW)."""
        cap = list(self.cap_model_state if cap_closed is None else cap_closed)
        pv = [float(x) for x in pv_kw]
        zero = [0.0] * len(pv)
        base = self.solve(load_kw, load_kvar, pv, zero, cap)
        taps = base.taps
        held = self.solve(load_kw, load_kvar, pv, zero, cap, taps)
        n_i, n_c, n_v = len(pv), len(cap), len(held.v_pu)
        dv_dp, dv_dq = np.zeros((n_v, n_i)), np.zeros((n_v, n_i))
        dh_dp, dh_dq, dl_dp, dl_dq, d2l = (np.zeros(n_i) for _ in range(5))
        for i in range(n_i):
            step = (dp_kw or {}).get(i, max(5.0, 0.1 * pv[i]))
            for vec, dv, dh, dl, is_p in ((pv, dv_dp, dh_dp, dl_dp, True), (zero, dv_dq, dh_dq, dl_dq, False)):
                x = list(vec)
                x[i] += step
                c = self.solve(load_kw, load_kvar, x if is_p else pv, zero if is_p else x, cap, taps)
                dv[:, i] = (c.v_pu - held.v_pu) / step
                dh[i] = (c.head_kw - held.head_kw) / step
                dl[i] = (c.losses_kw - held.losses_kw) / step
                if not is_p:
                    x[i] = -step
                    back = self.solve(load_kw, load_kvar, pv, x, cap, taps)
                    d2l[i] = (c.losses_kw + back.losses_kw - 2 * held.losses_kw) / step**2
        dv_cap, dh_cap, dl_cap = np.zeros((n_v, n_c)), np.zeros(n_c), np.zeros(n_c)
        for k in range(n_c):
            on, off = list(cap), list(cap)
            on[k], off[k] = True, False
            c_on = self.solve(load_kw, load_kvar, pv, zero, on, taps)
            c_off = self.solve(load_kw, load_kvar, pv, zero, off, taps)
            dv_cap[:, k] = c_on.v_pu - c_off.v_pu
            dh_cap[k] = c_on.head_kw - c_off.head_kw
            dl_cap[k] = c_on.losses_kw - c_off.losses_kw
        dv_cvr, dh_cvr, dl_cvr = np.zeros(n_v), 0.0, 0.0
        if cvr_steps and self.regulators:
            low = self.solve(load_kw, load_kvar, pv, zero, cap, self.lowered(taps, cvr_steps))
            dv_cvr = low.v_pu - held.v_pu
            dh_cvr, dl_cvr = low.head_kw - held.head_kw, low.losses_kw - held.losses_kw
        self._hold_taps(taps)
        return held, Sensitivities(dv_dp, dv_dq, dv_cap, dv_cvr, dh_dp, dh_dq, dh_cap, dh_cvr, dl_dp, dl_dq, dl_cap,
                                   dl_cvr, d2l)  # fmt: skip

    @staticmethod
    def lowered(taps: Sequence[float], steps: int) -> tuple[float, ...]:
        """The taps ``steps`` regulator steps lower (what a band centre lowered by CVR settles to)."""
        return tuple(max(0.9, t - steps * TAP_STEP_PU) for t in taps)


__all__ = ["Case", "NetworkError", "NetworkModel", "Sensitivities", "TAP_STEP_PU"]
