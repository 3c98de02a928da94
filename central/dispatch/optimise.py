"""The dispatch problem: a mixed-integer linear programme over the horizon's intervals, solved by HiGHS through
``scipy.optimize.milp`` (docs/dispatch.md, "The formulation").

Per interval t (length dt [h]) and inverter i: curtailment ``c`` [kW] of its available power, reactive power
``qp - qn`` [kvar] (+ injecting); per capacitor bank k: its state ``s`` (1 closed) and a switching indicator
``u``; for the regulator: CVR ``b`` (1: band centre lowered) and its switching indicator ``w``.

Linearised about each interval's regulated base case (``V0``, ``H0``, ``L0``: inverters at their available power
and no vars, banks as they start, no CVR) with the sensitivities of central/dispatch/network.py:

    V(t)    = V0(t) - dV/dP c + dV/dQ (qp - qn) + dV/dcap (s - s0) + dV/dcvr b            [pu]
    head(t) = H0(t) - dH/dP c + dH/dQ (qp - qn) + dH/dcap (s - s0) + (dH/dcvr - cvrf dv load(t)) b   [kW]
    loss(t) = L0(t) - dL/dP c + dL/dQ (qp - qn) + dL/dcap (s - s0) + dL/dcvr b          [kW]

minimise   sum_t dt [price(t) head(t) + loss_cost loss(t) + eps (qp + qn)]
         + cap_wear_cost sum u + tap_wear_cost taps_per_cvr_change sum w
subject to v_min + margin <= V(t) <= v_max - margin        (ANSI C84.1-2016 Table 1, Range A, service voltage)
           head(t) >= -reverse_power_kw
           reserve avail <= c <= max(0, avail - p_limit_min), 0 <= qp <= q_inject, 0 <= qn <= q_absorb   (IEEE 1547-2018 5.2)
           (avail - c) cos(a) + (qp + qn) sin(a) <= S cos(pi/16), a in {22.5, 45, 67.5} deg (the S circle, inside)
           qp + qn <= tan(acos(pf_min)) (avail - c)                                          (when pf_min > 0)
           u(t) >= |s(t) - s(t-1)|, sum_t u <= max_ops; w(t) >= |b(t) - b(t-1)|
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from central.dispatch.network import Sensitivities

VAR_EPS = 1e-5  # [currency/kvarh]: vars that buy nothing are not asked for (a unique, quiet set point)
FAIR_EPS = 1e-3  # [currency per interval per unit fraction]: equal cost curtailment is shared, not arbitrary
SLACK_COST = 1e6  # [currency per pu or kW per interval]: the diagnosis run's price of breaking a limit
_ANGLES = (math.pi / 8, math.pi / 4, 3 * math.pi / 8)
_INSIDE = math.cos(math.pi / 16)  # tangents at 0, 22.5, ..., 90 deg scaled by this lie inside the circle


class InfeasibleError(ValueError):
    """No schedule keeps every limit; the text names the intervals, the limit and by how much it is missed with
    every control at its bound."""


@dataclass(frozen=True, slots=True)
class Device:
    """One inverter as the optimisation sees it [kW, kVA, kvar]."""

    name: str
    kw: float
    kva: float
    q_inject: float
    q_absorb: float
    p_min: float  # the lowest limit the site's envelope takes [kW]
    pf_min: float = 0.0
    reserve: float = 0.0  # the share of the available power always curtailed (a delta constraint)


@dataclass(frozen=True, slots=True)
class Bank:
    name: str
    initial: bool  # closed before the first interval
    max_ops: int  # operations over the horizon


@dataclass(frozen=True, slots=True)
class Problem:
    """The linearised problem: T intervals, N monitored nodes, I inverters, K banks."""

    starts: np.ndarray  # (T,) epoch s
    interval_s: int
    nodes: tuple[str, ...]
    v0: np.ndarray  # (T, N) pu
    h0: np.ndarray  # (T,) kW
    l0: np.ndarray  # (T,) kW
    load_kw: np.ndarray  # (T,)
    avail_kw: np.ndarray  # (T, I)
    price: np.ndarray  # (T,) currency/kWh
    sens: Sensitivities
    inverters: tuple[Device, ...]
    banks: tuple[Bank, ...] = ()
    cvr: bool = False  # a regulator whose band centre CVR may lower
    cvr_drop_frac: float = 0.0  # the band centre's drop / the band centre
    taps_per_cvr_change: float = 0.0  # tap operations one CVR switch costs (steps x regulator phases)
    v_lo: float = 0.955
    v_hi: float = 1.045
    reverse_power_kw: float | None = None
    loss_cost: float = 0.0
    cap_wear_cost: float = 0.0
    tap_wear_cost: float = 0.0
    cvr_factor: float = 0.7
    base_taps: np.ndarray | None = None  # (T, R) where the regulators settled in each base case [pu]


@dataclass(frozen=True, slots=True)
class Solution:
    """The optimum, per interval: curtailment, vars, bank states, CVR, the predicted voltages, head, losses, cost."""

    problem: Problem
    curtail_kw: np.ndarray  # (T, I)
    q_kvar: np.ndarray  # (T, I) + injecting
    cap_closed: np.ndarray  # (T, K) bool
    cvr_on: np.ndarray  # (T,) bool
    v_pred: np.ndarray  # (T, N) pu
    head_kw: np.ndarray  # (T,)
    losses_kw: np.ndarray  # (T,)
    cost: np.ndarray  # (T,) energy + losses + wear, currency
    status: str
    solve_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def p_out_kw(self) -> np.ndarray:
        return self.problem.avail_kw - self.curtail_kw

    @property
    def cap_ops(self) -> np.ndarray:
        """Operations per bank over the horizon."""
        prev = np.array([b.initial for b in self.problem.banks], dtype=bool)
        states = np.vstack([prev, self.cap_closed]) if self.cap_closed.size else np.zeros((1, 0), bool)
        return np.abs(np.diff(states.astype(int), axis=0)).sum(axis=0)


class _Layout:
    def __init__(self, n_i: int, n_k: int, cvr: bool) -> None:
        self.n_i, self.n_k, self.cvr = n_i, n_k, cvr
        self.c = np.arange(n_i)
        self.qp = n_i + np.arange(n_i)
        self.qn = 2 * n_i + np.arange(n_i)
        self.s = 3 * n_i + np.arange(n_k)
        self.u = 3 * n_i + n_k + np.arange(n_k)
        self.b = 3 * n_i + 2 * n_k if cvr else -1
        self.w = self.b + 1 if cvr else -1
        self.z = 3 * n_i + 2 * n_k + (2 if cvr else 0)  # the largest curtailed fraction among the inverters
        self.n = self.z + 1


def _linear_rows(p: Problem, lay: _Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-interval coefficient rows of voltage (N x n), head (n) and losses (n), without the CVR load term."""
    s = p.sens
    n_v = len(p.nodes)
    av, ah, al = np.zeros((n_v, lay.n)), np.zeros(lay.n), np.zeros(lay.n)
    for a, dp, dq, dcap, dcvr in ((av, s.dv_dp, s.dv_dq, s.dv_cap, s.dv_cvr),
                                  (ah, s.dhead_dp, s.dhead_dq, s.dhead_cap, s.dhead_cvr),
                                  (al, s.dloss_dp, s.dloss_dq, s.dloss_cap, s.dloss_cvr)):  # fmt: skip
        a[..., lay.c] = -dp
        a[..., lay.qp] = dq
        a[..., lay.qn] = -dq
        if lay.n_k:
            a[..., lay.s] = dcap
        if lay.cvr:
            a[..., lay.b] = dcvr
    return av, ah, al


def solve(p: Problem, *, time_limit_s: float = 30.0, fixed: tuple[np.ndarray, np.ndarray] | None = None) -> Solution:
    """The optimal schedule, or InfeasibleError saying which limit cannot be kept where.

    ``fixed``: the banks' states (T x K) and CVR (T) held as given: the rest is then a linear programme."""
    t0 = time.perf_counter()
    sol = _solve(p, time_limit_s=time_limit_s, slack=False, fixed=fixed)
    if sol is None:
        raise InfeasibleError(_diagnose(p, time_limit_s))
    return replace(sol, solve_s=time.perf_counter() - t0)


def _solve(p: Problem, *, time_limit_s: float, slack: bool,
           fixed: tuple[np.ndarray, np.ndarray] | None = None) -> Solution | None:  # fmt: skip
    T, n_i, n_k = len(p.starts), len(p.inverters), len(p.banks)
    lay = _Layout(n_i, n_k, p.cvr)
    n_x = T * lay.n
    n_sl = 3 * T if slack else 0  # per interval: voltage over, voltage under, reverse power
    n = n_x + n_sl
    dt_h = p.interval_s / 3600.0
    av, ah, al = _linear_rows(p, lay)
    s0 = np.array([b.initial for b in p.banks], dtype=float)
    cap_v0 = p.sens.dv_cap @ s0 if n_k else np.zeros(len(p.nodes))
    h_const = p.h0 - (p.sens.dhead_cap @ s0 if n_k else 0.0)
    l_const = p.l0 - (p.sens.dloss_cap @ s0 if n_k else 0.0)
    cvr_load = p.cvr_factor * p.cvr_drop_frac * p.load_kw  # (T,) kW less load while CVR is on

    # objective
    cost = np.zeros(n)
    for t in range(T):
        row = dt_h * (p.price[t] * ah + p.loss_cost * al)
        if p.cvr:
            row[lay.b] -= dt_h * p.price[t] * cvr_load[t]
        # the losses grow with the square of the vars; a linear term at the base misses it, so each kvar also pays
        # the secant of that curvature over the inverter's range (a q^2 <= a qmax |q|): no var is moved for a gain
        # the first-order loss term alone would promise. At a negative price, vars are never moved to burn energy in
        # losses: their head effect is priced at zero there.
        secant = p.sens.d2loss_dq2 / 2 * np.array([max(d.q_inject, d.q_absorb) for d in p.inverters])
        var_price = max(p.price[t], 0.0)
        for cols, sign in ((lay.qp, 1.0), (lay.qn, -1.0)):
            row[cols] = dt_h * (sign * (var_price * p.sens.dhead_dq + p.loss_cost * p.sens.dloss_dq)
                                + VAR_EPS + (var_price + p.loss_cost) * secant)  # fmt: skip
        row[lay.u] += p.cap_wear_cost
        row[lay.z] += FAIR_EPS
        if p.cvr:
            row[lay.w] += p.tap_wear_cost * p.taps_per_cvr_change
        cost[t * lay.n : (t + 1) * lay.n] = row
    if slack:
        cost[n_x:] = SLACK_COST

    # bounds and integrality
    lb, ub = np.zeros(n), np.full(n, np.inf)
    integrality = np.zeros(n)
    for t in range(T):
        o = t * lay.n
        for i, d in enumerate(p.inverters):
            ub[o + lay.c[i]] = max(0.0, p.avail_kw[t, i] - d.p_min)
            lb[o + lay.c[i]] = min(d.reserve * max(p.avail_kw[t, i], 0.0), ub[o + lay.c[i]])
            ub[o + lay.qp[i]] = d.q_inject
            ub[o + lay.qn[i]] = d.q_absorb
        ub[o + lay.s] = 1
        ub[o + lay.u] = 1
        ub[o + lay.z] = 1
        integrality[o + lay.s] = 1
        if p.cvr:
            ub[o + lay.b] = 1
            ub[o + lay.w] = 1
            integrality[o + lay.b] = 1
        if fixed is not None:
            lb[o + lay.s] = ub[o + lay.s] = fixed[0][t]
            if p.cvr:
                lb[o + lay.b] = ub[o + lay.b] = float(fixed[1][t])

    cons: list[LinearConstraint] = []
    eye = sp.identity(T, format="csr")

    def with_slack(a: sp.spmatrix, cols: np.ndarray | None, sign: float) -> sp.spmatrix:
        """``a`` widened to every variable; with ``cols``, each row's interval's slack with ``sign``."""
        a = sp.hstack([a, sp.csr_matrix((a.shape[0], n_sl))], format="csr") if n_sl else a.tocsr()
        if cols is None:
            return a
        rows = np.arange(a.shape[0])
        return a + sp.csr_matrix((np.full(len(rows), sign), (rows, cols)), shape=a.shape)

    # voltage limits, one row per node per interval; a row no choice of the controls within their bounds could
    # push past its limit is left out (most of them: HiGHS then solves a far smaller problem)
    n_v = len(p.nodes)
    ub_t = ub[:n_x].reshape(T, lay.n)
    base_tn = p.v0 - cap_v0
    reach_hi = base_tn + ub_t @ np.maximum(av, 0).T
    reach_lo = base_tn + ub_t @ np.minimum(av, 0).T
    keep = ((reach_hi > p.v_hi - 1e-9) | (reach_lo < p.v_lo + 1e-9)).ravel()
    a_v = sp.kron(eye, sp.csr_matrix(av), format="csr")[keep]
    base = base_tn.ravel()[keep]
    t_of_row = np.repeat(np.arange(T), n_v)[keep]
    if slack:
        cons.append(LinearConstraint(with_slack(a_v, n_x + 3 * t_of_row, -1.0), -np.inf, p.v_hi - base))
        cons.append(LinearConstraint(with_slack(a_v, n_x + 3 * t_of_row + 1, 1.0), p.v_lo - base, np.inf))
    else:
        cons.append(LinearConstraint(with_slack(a_v, None, 0), p.v_lo - base, p.v_hi - base))

    # reverse power at the head
    if p.reverse_power_kw is not None:
        a_h = sp.lil_matrix((T, n_x))
        for t in range(T):
            row = ah.copy()
            if p.cvr:
                row[lay.b] -= cvr_load[t]
            a_h[t, t * lay.n : (t + 1) * lay.n] = row
        lo = -p.reverse_power_kw - h_const
        cons.append(LinearConstraint(with_slack(a_h.tocsr(), n_x + 3 * np.arange(T) + 2 if slack else None, 1.0),
                                     lo, np.inf))  # fmt: skip

    # inverter capability: the S circle (inside polygon) and the power factor
    if n_i:
        g_rows, g_rhs = [], []
        for i, d in enumerate(p.inverters):
            for a in _ANGLES:
                r = np.zeros(lay.n)
                r[lay.c[i]] = -math.cos(a)
                r[lay.qp[i]] = r[lay.qn[i]] = math.sin(a)
                g_rows.append(r)
                g_rhs.append(d.kva * _INSIDE - math.cos(a) * p.avail_kw[:, i])
            if d.pf_min > 0:
                tan = math.tan(math.acos(d.pf_min))
                r = np.zeros(lay.n)
                r[lay.c[i]] = tan
                r[lay.qp[i]] = r[lay.qn[i]] = 1.0
                g_rows.append(r)
                g_rhs.append(tan * p.avail_kw[:, i])
        g = sp.kron(eye, sp.csr_matrix(np.array(g_rows)), format="csr")
        rhs = np.column_stack(g_rhs).ravel()  # (T, rows) row-major: interval by interval
        cons.append(LinearConstraint(with_slack(g, None, 0), -np.inf, rhs))
        # c_i(t) <= z(t) avail_i(t): z bounds every inverter's curtailed fraction; its small cost spreads curtailment
        rows = np.arange(T * n_i)
        t_idx, i_idx = np.divmod(rows, n_i)
        fair = sp.csr_matrix((np.concatenate([np.ones(T * n_i), -p.avail_kw.ravel()]),
                              (np.concatenate([rows, rows]), np.concatenate([t_idx * lay.n + lay.c[i_idx],
                                                                             t_idx * lay.n + lay.z]))),
                             shape=(T * n_i, n_x))  # fmt: skip
        cons.append(LinearConstraint(with_slack(fair, None, 0), -np.inf, np.zeros(T * n_i)))

    # switching indicators and the banks' operation budgets; CVR switching
    def switching(state: np.ndarray, ind: np.ndarray, initial: float) -> None:
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for t in range(T):
            o = t * lay.n
            for j, (sc, ic) in enumerate(zip(state, ind, strict=True)):
                r = t * len(state) + j
                rows += [r, r]
                cols += [o + ic, o + sc]
                vals += [1.0, -1.0]
                if t:
                    rows.append(r)
                    cols.append(o - lay.n + sc)
                    vals.append(1.0)
        m = T * len(state)
        a_plus = sp.csr_matrix((vals, (rows, cols)), shape=(m, n_x))  # u - s(t) + s(t-1)
        vals_b = [v if c % lay.n in ind else -v for v, c in zip(vals, cols, strict=True)]
        a_minus = sp.csr_matrix((vals_b, (rows, cols)), shape=(m, n_x))  # u + s(t) - s(t-1)
        init = np.zeros(m)  # s(-1): the state before the first interval, a constant on the right-hand side
        init[: len(state)] = initial
        cons.append(LinearConstraint(with_slack(a_plus, None, 0), -init, np.inf))
        cons.append(LinearConstraint(with_slack(a_minus, None, 0), init, np.inf))

    for k, bank in enumerate(p.banks):
        switching(lay.s[k : k + 1], lay.u[k : k + 1], float(bank.initial))
        budget = sp.csr_matrix((np.ones(T), (np.zeros(T, int), np.arange(T) * lay.n + lay.u[k])), shape=(1, n_x))
        cons.append(LinearConstraint(with_slack(budget, None, 0), -np.inf, bank.max_ops))
    if p.cvr:
        switching(np.array([lay.b]), np.array([lay.w]), 0.0)

    res = milp(cost, integrality=integrality, bounds=Bounds(lb, ub), constraints=cons,
               options={"time_limit": time_limit_s, "mip_rel_gap": 1e-4, "disp": False})  # fmt: skip
    if res.x is None:
        if res.status == 2 or "infeasible" in str(res.message).lower():
            return None
        raise InfeasibleError(f"HiGHS stopped without a schedule: {res.message}")
    x = res.x[:n_x].reshape(T, lay.n)
    c = x[:, lay.c]
    q = x[:, lay.qp] - x[:, lay.qn]
    s = np.rint(x[:, lay.s]).astype(bool) if n_k else np.zeros((T, 0), bool)
    b = np.rint(x[:, lay.b]).astype(bool) if p.cvr else np.zeros(T, bool)
    xr = x.copy()
    if n_k:
        xr[:, lay.s] = s
    if p.cvr:
        xr[:, lay.b] = b
    v = p.v0 - cap_v0 + xr @ av.T
    head = h_const + xr @ ah - (cvr_load * b if p.cvr else 0.0)
    loss = l_const + xr @ al
    cost_t = dt_h * (p.price * head + p.loss_cost * loss)
    prev = np.vstack([[float(bk.initial) for bk in p.banks], s.astype(float)]) if n_k else np.zeros((T + 1, 0))
    cost_t = cost_t + p.cap_wear_cost * np.abs(np.diff(prev, axis=0)).sum(axis=1)
    if p.cvr:
        toggles = np.abs(np.diff(np.concatenate([[0.0], b.astype(float)])))
        cost_t = cost_t + p.tap_wear_cost * p.taps_per_cvr_change * toggles
    sol = Solution(p, c, q, s, b, v, head, loss, cost_t, "optimal" if res.status == 0 else str(res.message))
    if slack:
        sol.extra["slack"] = res.x[n_x:]  # type: ignore[assignment]
    return sol


def _diagnose(p: Problem, time_limit_s: float) -> str:
    """Which limits no control can keep: the same problem with every limit allowed to break at a high price."""
    sol = _solve(p, time_limit_s=time_limit_s, slack=True)
    if sol is None:
        return "the dispatch problem is infeasible even with its voltage and reverse-power limits relaxed"
    sl = np.asarray(sol.extra["slack"]).reshape(len(p.starts), 3)
    parts = []
    for col, what in ((0, "over"), (1, "under")):
        bad = np.flatnonzero(sl[:, col] > 1e-6)
        if bad.size:
            t = int(bad[np.argmax(sl[bad, col])])
            node = int(np.argmax(sol.v_pred[t]) if col == 0 else np.argmin(sol.v_pred[t]))
            limit = p.v_hi if col == 0 else p.v_lo
            parts.append(f"bus voltage {what} its limit in {bad.size} interval(s): worst at {_iso(p.starts[t])}, node "
                         f"{p.nodes[node]} {sol.v_pred[t, node]:.4f} pu against {limit:.4f} pu (limit minus margin) "
                         "with every control at its bound")  # fmt: skip
    bad = np.flatnonzero(sl[:, 2] > 1e-6)
    if bad.size:
        t = int(bad[np.argmax(sl[bad, 2])])
        parts.append(f"reverse power over reverse_power_kw = {p.reverse_power_kw:g} kW in {bad.size} interval(s): "
                     f"worst at {_iso(p.starts[t])}, {-sol.head_kw[t]:.1f} kW exported with every inverter curtailed "
                     "to its p_limit_min_pct")  # fmt: skip
    return "no schedule keeps every limit: " + ("; ".join(parts) or "(the relaxed problem broke no limit)")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def evaluate(p: Problem, curtail_kw: np.ndarray | None = None, q_kvar: np.ndarray | None = None,
             cap_closed: np.ndarray | None = None, cvr_on: np.ndarray | None = None) -> Solution:  # fmt: skip
    """A given plan's predicted voltages, head, losses and cost (the no-dispatch baseline: everything None)."""
    T, n_i, n_k = len(p.starts), len(p.inverters), len(p.banks)
    lay = _Layout(n_i, n_k, p.cvr)
    c = np.zeros((T, n_i)) if curtail_kw is None else curtail_kw
    q = np.zeros((T, n_i)) if q_kvar is None else q_kvar
    init = np.array([b.initial for b in p.banks], dtype=bool)
    s = np.tile(init, (T, 1)) if cap_closed is None else cap_closed
    b = np.zeros(T, bool) if cvr_on is None else cvr_on
    x = np.zeros((T, lay.n))
    x[:, lay.c] = c
    x[:, lay.qp] = np.maximum(q, 0)
    x[:, lay.qn] = np.maximum(-q, 0)
    if n_k:
        x[:, lay.s] = s
    if p.cvr:
        x[:, lay.b] = b
    av, ah, al = _linear_rows(p, lay)
    s0 = init.astype(float)
    cap_v0 = p.sens.dv_cap @ s0 if n_k else 0.0
    cvr_load = p.cvr_factor * p.cvr_drop_frac * p.load_kw
    v = p.v0 - cap_v0 + x @ av.T
    head = p.h0 - (p.sens.dhead_cap @ s0 if n_k else 0.0) + x @ ah - (cvr_load * b if p.cvr else 0.0)
    loss = p.l0 - (p.sens.dloss_cap @ s0 if n_k else 0.0) + x @ al
    dt_h = p.interval_s / 3600.0
    cost = dt_h * (p.price * head + p.loss_cost * loss)
    prev = np.vstack([s0, s.astype(float)]) if n_k else np.zeros((T + 1, 0))
    cost = cost + p.cap_wear_cost * np.abs(np.diff(prev, axis=0)).sum(axis=1)
    if p.cvr:
        cost = cost + p.tap_wear_cost * p.taps_per_cvr_change * np.abs(np.diff(np.concatenate([[0.0], b * 1.0])))
    return Solution(p, c, q, s, b, v, head, loss, cost, "evaluated")


def banks_max_ops(max_ops_per_day: int, n_intervals: int, interval_s: int) -> int:
    """A bank's operation budget over the horizon: its daily budget pro rata, rounded up."""
    return math.ceil(max_ops_per_day * n_intervals * interval_s / 86_400)


__all__ = ["Bank", "Device", "InfeasibleError", "Problem", "Solution", "banks_max_ops", "evaluate", "solve"]
