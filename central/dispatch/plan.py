"""From the configuration, the network model, the forecast and the prices to the dispatch problem, and from its
solution to the schedule: per interval and site, each inverter's limit and var set point, the banks' states, CVR.

The forecast's feeder PV is shared among the dispatched inverters by their rated power; the feeder's load is
spread over the model's loads in the proportions the model gives them. Each interval's base case is a full,
regulated power flow; the sensitivities are taken once, about the interval with the most PV net of load (where
the voltage and reverse-power limits bind), with the taps held where the regulators settled there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from central.dispatch.config import TAP_STEP_V, DispatchConfig, InverterSpec
from central.dispatch.inputs import Forecast
from central.dispatch.network import NetworkModel
from central.dispatch.optimise import Bank, Device, InfeasibleError, Problem, Solution, banks_max_ops, solve


def network_for(cfg: DispatchConfig) -> NetworkModel:
    return NetworkModel(cfg.network, [i.element for _, i in cfg.inverters], [c.element for _, c in cfg.capbanks],
                        cfg.monitor)  # fmt: skip


def cvr_steps(cfg: DispatchConfig) -> int:
    reg = cfg.regulator
    return 0 if reg is None else round(reg[1].cvr_drop_v / TAP_STEP_V)


def build_problem(cfg: DispatchConfig, model: NetworkModel, forecast: Forecast, price: np.ndarray,
                  banks_now: dict[str, bool] | None = None) -> Problem:  # fmt: skip
    """The linearised dispatch problem over the forecast's intervals. ``banks_now``: each bank's state before the
    first interval where central knows it (the previous round's schedule), else its ``initial``."""
    invs = [i for _, i in cfg.inverters]
    rated = np.array([i.kw for i in invs])
    share = rated / rated.sum() if rated.size else rated
    avail = np.minimum(np.outer(forecast.pv_kw, share), rated) if rated.size else np.zeros((len(forecast.starts), 0))
    initial = []
    for (_, c), model_state in zip(cfg.capbanks, model.cap_model_state, strict=True):
        if banks_now is not None and c.device in banks_now:
            initial.append(banks_now[c.device])
        else:
            initial.append(model_state if c.initial == "model" else c.initial == "closed")
    T = len(forecast.starts)
    v0, h0, l0 = np.zeros((T, len(model.nodes))), np.zeros(T), np.zeros(T)
    taps = np.zeros((T, len(model.regulators)))
    for t in range(T):
        case = model.solve(float(forecast.load_kw[t]), float(forecast.load_kvar[t]), avail[t], None, initial)
        v0[t], h0[t], l0[t], taps[t] = case.v_pu, case.head_kw, case.losses_kw, case.taps
    ref = int(np.argmax(forecast.pv_kw - forecast.load_kw))
    steps = cvr_steps(cfg)
    _, sens = model.sensitivities(float(forecast.load_kw[ref]), float(forecast.load_kvar[ref]), avail[ref], initial,
                                  cvr_steps=steps)  # fmt: skip
    reg = cfg.regulator
    devices = tuple(Device(i.device, i.kw, i.kva, i.q_inject_kvar, i.q_absorb_kvar, i.kw * i.p_limit_min_pct / 100,
                           i.pf_min, i.reserve_pct / 100) for i in invs)  # fmt: skip
    banks = tuple(Bank(c.device, init, banks_max_ops(c.max_ops_per_day, T, cfg.interval_s))
                  for (_, c), init in zip(cfg.capbanks, initial, strict=True))  # fmt: skip
    return Problem(
        starts=forecast.starts, interval_s=cfg.interval_s, nodes=model.nodes, v0=v0, h0=h0, l0=l0,
        load_kw=np.asarray(forecast.load_kw, float), avail_kw=avail, price=np.asarray(price, float), sens=sens,
        inverters=devices, banks=banks, cvr=reg is not None and steps > 0,
        cvr_drop_frac=0.0 if reg is None else reg[1].cvr_drop_v / reg[1].band_center_v,
        taps_per_cvr_change=float(steps * len(model.regulators)),
        v_lo=cfg.v_min_pu + cfg.margin_pu, v_hi=cfg.v_max_pu - cfg.margin_pu, reverse_power_kw=cfg.reverse_power_kw,
        loss_cost=cfg.loss_cost, cap_wear_cost=cfg.cap_wear_cost, tap_wear_cost=cfg.tap_wear_cost,
        cvr_factor=cfg.cvr_factor, base_taps=taps,
    )  # fmt: skip


def resolve(
    cfg: DispatchConfig, model: NetworkModel, forecast: Forecast, sol: Solution
) -> tuple[np.ndarray, np.ndarray]:
    """Full power flows of the schedule: each interval's voltages [pu] (T x N) and head import [kW] (T), with the
    inverters at their scheduled output and vars, the banks as scheduled and, under CVR, the taps lowered by the CVR
    steps from where the regulators settled in the interval's base case (what the linear model predicts)."""
    p = sol.problem
    steps = cvr_steps(cfg)
    initial = [b.initial for b in p.banks]
    v, head = np.zeros_like(p.v0), np.zeros(len(p.starts))
    for t in range(len(p.starts)):
        load, kvar = float(forecast.load_kw[t]), float(forecast.load_kvar[t])
        settled = tuple(p.base_taps[t]) if p.base_taps is not None else model.solve(load, kvar, p.avail_kw[t], None,
                                                                                     initial).taps  # fmt: skip
        taps = model.lowered(settled, steps) if p.cvr and sol.cvr_on[t] else settled
        case = model.solve(load, kvar, p.avail_kw[t] - sol.curtail_kw[t], sol.q_kvar[t], list(sol.cap_closed[t]), taps)
        cvr_load = p.cvr_factor * p.cvr_drop_frac * p.load_kw[t] if p.cvr and sol.cvr_on[t] else 0.0
        v[t], head[t] = case.v_pu, case.head_kw - cvr_load
    return v, head


def refine(cfg: DispatchConfig, model: NetworkModel, forecast: Forecast, sol: Solution,
           passes: int = 1) -> Solution:  # fmt: skip
    """Correct the linear model where it missed: re-solve the schedule in full, add each interval's error (voltage
    per node, head) to its base case, and solve again with the banks and CVR held as they were (a linear programme,
    quick). The linear model is then exact at the previous optimum; the new optimum is near it."""
    for _ in range(passes):
        v, head = resolve(cfg, model, forecast, sol)
        p = sol.problem
        corrected = replace(p, v0=p.v0 + (v - sol.v_pred), h0=p.h0 + (head - sol.head_kw))
        try:
            sol = solve(corrected, fixed=(sol.cap_closed, sol.cvr_on))
        except InfeasibleError:  # the held banks and CVR cannot keep the corrected limits: choose them again
            sol = solve(corrected)
    return sol


@dataclass(frozen=True, slots=True)
class Step:
    """One interval of one site's schedule: what its commands set, and what central predicts."""

    site: str
    start: int
    end: int
    p_limit_pct: dict[str, float]  # inverter -> % of rated power (100: no limit)
    var_pct: dict[str, float]  # inverter -> % of nameplate VA, + injecting; absent: no set point, its own mode
    p_out_kw: dict[str, float]
    cap_closed: dict[str, bool]
    cap_before: dict[str, bool]  # each bank's state in the interval before (the first: its state at the start)
    cvr_on: bool | None  # None: the site has no regulator
    band_center_v: float | None
    v_min_pu: float
    v_max_pu: float
    cost: float
    head_kw: float
    regulator_device: str | None = None


def limit_pct(inv: InverterSpec, out_kw: float) -> float:
    """The limit [% of rated power] that holds ``inv`` to ``out_kw``: rounded down to 0.1 % so the site keeps
    within it, within [its lowest limit, 100]."""
    return max(inv.p_limit_min_pct, min(100.0, math.floor(out_kw / inv.kw * 1000) / 10))


def schedule(cfg: DispatchConfig, sol: Solution) -> list[Step]:
    """The solution as per-site steps, interval by interval."""
    p = sol.problem
    out: list[Step] = []
    inv_index = {i.device: n for n, (_, i) in enumerate(cfg.inverters)}
    cap_index = {c.device: n for n, (_, c) in enumerate(cfg.capbanks)}
    for t, start in enumerate(p.starts.tolist()):
        for s in cfg.sites:
            lim, var, pout = {}, {}, {}
            for inv in s.inverters:
                n = inv_index[inv.device]
                out_kw = float(p.avail_kw[t, n] - sol.curtail_kw[t, n])
                curtailed = sol.curtail_kw[t, n] > 1e-3
                lim[inv.device] = limit_pct(inv, out_kw) if curtailed else 100.0
                pct_var = round(float(sol.q_kvar[t, n]) / inv.kva * 100, 2) + 0.0
                if abs(pct_var) >= cfg.var_min_pct:  # else none sent: the inverter's own mode (volt-var) holds
                    var[inv.device] = pct_var
                pout[inv.device] = round(out_kw, 3)
            caps = {c.device: bool(sol.cap_closed[t, cap_index[c.device]]) for c in s.capbanks}
            before = {c.device: bool(sol.cap_closed[t - 1, cap_index[c.device]]) if t
                      else p.banks[cap_index[c.device]].initial for c in s.capbanks}  # fmt: skip
            cvr = bool(sol.cvr_on[t]) if s.regulator is not None and p.cvr else None
            band = None
            if s.regulator is not None:
                band = s.regulator.band_center_v - (s.regulator.cvr_drop_v if cvr else 0.0)
            out.append(Step(s.site, int(start), int(start) + p.interval_s, lim, var, pout, caps, before, cvr, band,
                            float(sol.v_pred[t].min()), float(sol.v_pred[t].max()), float(sol.cost[t]),
                            float(sol.head_kw[t]), s.regulator.device if s.regulator else None))  # fmt: skip
    return out


__all__ = ["Step", "build_problem", "cvr_steps", "limit_pct", "network_for", "refine", "resolve", "schedule"]
