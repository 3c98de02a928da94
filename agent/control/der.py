"""The DER function: IEEE 1547-2018 curves and set points configured on SunSpec inverters, and verified.

The inverters act on their curves in seconds by themselves; the agent's part is slower: every ``cadence_s`` it
checks that each inverter of a ``[[control.der]]`` group holds what the group asks, and when it does not, it
proposes a decision that the safety envelope carries out (agent/control/inverter.py writes it and reads it back).

Pure: :func:`wanted_state` says which SunSpec points (by the device's layout names) a group asks an inverter to
hold, :func:`autonomous_state` what the inverter holds on its own (the hand-back), and :func:`decide` turns the
snapshot into a decision. :class:`DerFunction` (one per inverter of a group, run by agent/control/controller.py)
carries the little state there is between cycles.

The rules, in order:

- ``inputs_stale``: a point it compares is stale, missing or not good. No command (held): nothing refreshes the set
  points, so the device's own reversion timers take them back within ``reversion_s``.
- ``settings_differ``: a point differs from what the group asks. ``der.configure`` with every point the group asks.
- ``reversion_refresh``: a set point, or an explicit curve, the group asks has less than :func:`refresh_margin_s` (a
  third of ``reversion_s``, at least three cadences) left on its timer (704 ``*RvrtRem``, 705/706/711 ``RvrtRem``).
  ``der.refresh``: that set point again, or the curve model's ``RvrtTms`` again, which restarts its timer.

A curve other than the category's default goes with its model's own reversion timer (``RvrtTms`` = ``reversion_s``)
and the default kept in curve 3, the curve the device adopts when the timer runs out (``RvrtCrv``). On a device
that serves ``RvrtTms`` "not implemented" those points are not compared, and the command is refused by the
actuator's bounds (``no_reversion_timer``).

The points of a curve are those of the active curve (``Crv[1]`` of 705 and 706, ``Ctl[1]`` of 711, read-only on
the device): the actuator writes an editable curve and asks the device to adopt it. Volt-var Q is written in
percent of nameplate VA (``DeptRef`` = 3, VA_MAX_PCT), the unit of IEEE 1547-2018 Table 8, so what the device
holds reads in the standard's own numbers. A decision the snapshot has not yet caught up with (every compared
point read before the last write) is not made again; an advised decision is not repeated while what differs stays
the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.control import ieee1547
from agent.control.config import DerGroupConfig, FunctionPolicy
from agent.control.decision import Command, Decision, Input, new_id, propose
from agent.control.view import View

NAME = "der"
LAYER = 0  # seconds: the devices act on their curves; the agent configures and verifies
VV, VW, FD, CTL = "DERVoltVar", "DERVoltWatt", "DERFreqDroop", "DERCtlAC"  # SunSpec models 705, 706, 711, 704
ACTIVE = {VV: f"{VV}.Crv[1]", VW: f"{VW}.Crv[1]", FD: f"{FD}.Ctl[1]"}
EDIT = {VV: f"{VV}.Crv[2]", VW: f"{VW}.Crv[2]", FD: f"{FD}.Ctl[2]"}  # the curve the actuator writes, then adopts
ADOPT = {VV: f"{VV}.AdptCrvReq", VW: f"{VW}.AdptCrvReq", FD: f"{FD}.AdptCtlReq"}
DEPT_REF_VA_MAX_PCT = 3  # SunSpec 705 DeptRef: Q in % of VAMax (nameplate VA), IEEE 1547-2018 Table 8's unit
DEPT_REF_W_MAX_PCT = 0  # SunSpec 706 DeptRef: P in % of WMax
EXT_OVER, EXT_UNDER = 0, 1  # SunSpec 704 PFWInj.Ext: over-excited (injecting) / under-excited (absorbing)
VAR_SET_MOD_VA_PCT = 3  # SunSpec 704 VarSetMod: VarSetPct in % of VAMax
REFRESH_FRACTION = 1 / 3  # a set point is refreshed once less than this part of its reversion time is left ...
REFRESH_CADENCES = 3  # ... or less than this many cadences
SETPOINTS = ("PFWInj", "VarSet", "WMaxLimPct")  # the 704 functions with a reversion timer
ENABLE = {"PFWInj": f"{CTL}.PFWInjEna", "VarSet": f"{CTL}.VarSetEna", "WMaxLimPct": f"{CTL}.WMaxLimPctEna"}
REMAINING = {s: f"{CTL}.{s}RvrtRem" for s in SETPOINTS}
# The curve models' own reversion points (pysunspec2's model_705/706/711.json): the timer [s], the time left, the
# curve adopted when it runs out; the agent keeps its category's default curve in the slot it names (FALLBACK).
TIMER = {m: f"{m}.RvrtTms" for m in (VV, VW, FD)}
CURVE_REMAINING = {m: f"{m}.RvrtRem" for m in (VV, VW, FD)}
RVRT_TO = {VV: f"{VV}.RvrtCrv", VW: f"{VW}.RvrtCrv", FD: f"{FD}.RvrtCtl"}
FALLBACK_INDEX = 3
FALLBACK = {VV: f"{VV}.Crv[3]", VW: f"{VW}.Crv[3]", FD: f"{FD}.Ctl[3]"}


# ---- what a group asks ---------------------------------------------------------------------------------------


def volt_var_points(curve: ieee1547.VoltVarCurve) -> dict[str, float]:
    """The active 705 curve holding ``curve`` (V in %VN, Q in % of nameplate VA, IEEE 1547-2018 Table 8)."""
    k = ACTIVE[VV]
    out: dict[str, float] = {f"{k}.DeptRef": DEPT_REF_VA_MAX_PCT, f"{k}.VRef": round(curve.v_ref_pu * 100.0, 3),
                             f"{k}.RspTms": curve.response_s}  # fmt: skip
    for i, (v, q) in enumerate(zip(curve.v_pu, curve.q_pct, strict=True), 1):
        out[f"{k}.Pt[{i}].V"] = round(v * 100.0, 3)
        out[f"{k}.Pt[{i}].Var"] = q
    return out


def volt_watt_points(curve: ieee1547.VoltWattCurve) -> dict[str, float]:
    """The active 706 curve holding ``curve`` (V in %VN, P in % of WMax, IEEE 1547-2018 Table 10)."""
    k = ACTIVE[VW]
    out: dict[str, float] = {f"{k}.DeptRef": DEPT_REF_W_MAX_PCT, f"{k}.RspTms": curve.response_s}
    for i, (v, p) in enumerate(zip(curve.v_pu, curve.p_pct, strict=True), 1):
        out[f"{k}.Pt[{i}].V"] = round(v * 100.0, 3)
        out[f"{k}.Pt[{i}].W"] = p
    return out


def freq_droop_points(droop: ieee1547.FreqDroop) -> dict[str, float]:
    """The active 711 control holding ``droop`` (IEEE 1547-2018 6.5.2.7, Table 24)."""
    k = ACTIVE[FD]
    return {f"{k}.DbOf": droop.db_of_hz, f"{k}.DbUf": droop.db_uf_hz, f"{k}.KOf": droop.k_of,
            f"{k}.KUf": droop.k_uf, f"{k}.RspTms": droop.response_s}  # fmt: skip


def _setpoint(name: str, values: Mapping[str, float], reversion_s: float, revert: Mapping[str, float]) -> dict:
    """A 704 set point on, with its reversion timer: when it runs out the function is off and neutral."""
    out = {ENABLE[name]: 1, **{f"{CTL}.{k}": v for k, v in values.items()}}
    out[f"{CTL}.{name}RvrtTms"] = int(math.ceil(reversion_s))
    out[f"{CTL}.{name}EnaRvrt"] = 0
    out |= {f"{CTL}.{k}": v for k, v in revert.items()}
    return out


def _curve(model: str, points: dict[str, float], default: dict[str, float], reversion_s: float) -> dict[str, float]:
    """A curve on, and when it is not the category's default, with the model's reversion timer: its default kept
    in the slot the device falls back to (``FALLBACK``, adopted when ``RvrtTms`` = ``reversion_s`` runs out)."""
    out = points | {f"{model}.Ena": 1}
    if points != default:
        out |= {TIMER[model]: int(math.ceil(reversion_s)), RVRT_TO[model]: FALLBACK_INDEX}
        out |= {FALLBACK[model] + k.removeprefix(ACTIVE[model]): v for k, v in default.items()}
    return out


def timer_points(model: str, names: Iterable[str]) -> list[str]:
    """The points of ``names`` that belong to the model's reversion timer (what a device without one cannot hold)."""
    return [n for n in names if n in (TIMER[model], RVRT_TO[model], CURVE_REMAINING[model])]


def wanted_state(g: DerGroupConfig) -> dict[str, float]:
    """Every point (layout name, engineering value) the group asks each of its inverters to hold."""
    out: dict[str, float] = {}
    vv, vw, fd = category_defaults(g.category)
    if g.volt_var is not None:
        out |= _curve(VV, volt_var_points(g.volt_var), volt_var_points(vv), g.reversion_s)
    elif g.constant_pf is not None or g.constant_var_pct is not None:
        out[f"{VV}.Ena"] = 0  # one reactive power mode at a time (IEEE 1547-2018 5.3)
    if g.volt_watt is not None:
        out |= _curve(VW, volt_watt_points(g.volt_watt), volt_watt_points(vw), g.reversion_s)
    if g.freq_droop is not None:
        out |= _curve(FD, freq_droop_points(g.freq_droop), freq_droop_points(fd), g.reversion_s)
    if g.constant_pf is not None:
        ext = EXT_OVER if g.constant_pf.excitation == "injecting" else EXT_UNDER
        out |= _setpoint("PFWInj", {"PFWInj.PF": g.constant_pf.pf, "PFWInj.Ext": ext}, g.reversion_s,
                         {"PFWInjRvrt.PF": 1.0, "PFWInjRvrt.Ext": EXT_OVER})  # fmt: skip
    else:
        out[ENABLE["PFWInj"]] = 0
    if g.constant_var_pct is not None:
        out |= _setpoint("VarSet", {"VarSetMod": VAR_SET_MOD_VA_PCT, "VarSetPct": g.constant_var_pct},
                         g.reversion_s, {"VarSetPctRvrt": 0.0})  # fmt: skip
    else:
        out[ENABLE["VarSet"]] = 0
    if g.p_limit_pct is not None:
        out |= _setpoint("WMaxLimPct", {"WMaxLimPct": g.p_limit_pct}, g.reversion_s, {"WMaxLimPctRvrt": 100.0})
    else:
        out[ENABLE["WMaxLimPct"]] = 0
    return out


def category_defaults(category: str) -> tuple[ieee1547.VoltVarCurve, ieee1547.VoltWattCurve, ieee1547.FreqDroop]:
    """The IEEE 1547-2018 default curves of a normal operating performance category (agent/control/ieee1547.py)."""
    return (ieee1547.default(f"volt_var.category-{category.lower()}"), ieee1547.default("volt_watt.default"),
            ieee1547.default("freq_droop.default"))  # fmt: skip


def autonomous_state(category: str) -> dict[str, float]:
    """What an inverter holds on its own (the hand-back): the category's default curves, set points off and no
    reversion timer running. The curves' enables are left as the device had them."""
    vv, vw, fd = category_defaults(category)
    out = volt_var_points(vv) | volt_watt_points(vw) | freq_droop_points(fd)
    for s in SETPOINTS:
        out[ENABLE[s]] = 0
        out[f"{CTL}.{s}RvrtTms"] = 0
    return out


def is_default(g: DerGroupConfig) -> dict[str, bool]:
    """Per curve the group asks: whether it is the category's default (what the device falls back to anyway)."""
    vv, vw, fd = category_defaults(g.category)
    out = {}
    if g.volt_var is not None:
        out[VV] = volt_var_points(g.volt_var) == volt_var_points(vv)
    if g.volt_watt is not None:
        out[VW] = volt_watt_points(g.volt_watt) == volt_watt_points(vw)
    if g.freq_droop is not None:
        out[FD] = freq_droop_points(g.freq_droop) == freq_droop_points(fd)
    return out


def tolerance(point: str) -> float:
    """How far a value read back may be from the one asked: half the device's resolution and a little (the SFs of
    SunSpec 705/706: 0.1 %; 711's dead bands and droops: 0.001)."""
    tail = point.rsplit(".", 1)[-1]
    return 6e-4 if tail.startswith(("Db", "K")) or tail == "PF" else 0.051


def differs(have: Any, want: float, point: str) -> bool:
    return not isinstance(have, int | float) or abs(float(have) - want) > tolerance(point)


# ---- the decision ------------------------------------------------------------------------------------------------


@dataclass
class DerState:
    """Between cycles: when the agent last wrote the device [s UTC], and the last advised difference."""

    last_write: float | None = None
    wrote: bool = False  # a write finished since the last cycle: readings older than this cycle predate it
    advised: tuple[str, ...] | None = None


def refresh_margin_s(g: DerGroupConfig) -> float:
    """A set point is refreshed once its timer has less than this left [s]: a third of ``reversion_s``, and at
    least three cadences (a cycle may come a cadence late, the reading a poll old, the write take a while)."""
    return max(g.reversion_s * REFRESH_FRACTION, REFRESH_CADENCES * g.cadence_s)


def _timed(wanted: Mapping[str, float]) -> dict[str, str]:
    """Every reversion timer the wanted state runs: set point (704) or curve model -> its time-left point."""
    out = {s: REMAINING[s] for s in SETPOINTS if wanted.get(ENABLE[s]) == 1}
    return out | {m: CURVE_REMAINING[m] for m in (VV, VW, FD) if wanted.get(TIMER[m])}


def _refresh_due(g: DerGroupConfig, view: View, device: str, wanted: Mapping[str, float]) -> list[str]:
    """The set points and curves the group asks whose reversion timer has less than :func:`refresh_margin_s` left
    now (what the device said, less the reading's age)."""
    due = []
    for s, rem in _timed(wanted).items():
        i = view.input(f"{device}.{rem}")
        if isinstance(i.value, int | float) and i.value - (i.age_s or 0.0) < refresh_margin_s(g):
            due.append(s)
    return due


def _refresh_values(wanted: Mapping[str, float], due: Iterable[str]) -> dict[str, float]:
    """What a refresh writes: a set point's points again (704 restarts its timer), a curve's ``RvrtTms`` again."""
    out: dict[str, float] = {}
    for s in due:
        if s in SETPOINTS:
            out |= {k: v for k, v in wanted.items() if k.startswith(f"{CTL}.{s}")}
        else:
            out[TIMER[s]] = wanted[TIMER[s]]
    return out


def _without_timer(view: View, device: str, wanted: Mapping[str, float]) -> list[str]:
    """The curve models the group asks a timer of that the device does not implement (it reads "not implemented":
    INVALID with no value, while the model's enable reads): their timer points are not compared."""
    out = []
    for m in (VV, VW, FD):
        if TIMER[m] in wanted:
            t, ena = view.input(f"{device}.{TIMER[m]}"), view.input(f"{device}.{m}.Ena")
            if t.quality == "invalid" and t.value is None and ena.quality == "good":
                out.append(m)
    return out


def decide(
    view: View,
    now: float,
    g: DerGroupConfig,
    device: str,
    mode: str,
    state: DerState,
    *,
    name: str = NAME,
    id_factory: Callable[[], str] = new_id,
    written_at: float | None = None,
) -> Decision | None:
    """The decision for ``device`` at ``now`` (module docstring's table), or None when it holds what is asked.

    ``written_at``: when the device was last written [s, the agent's clock] (a central command's decision): if the
    snapshot shows what is asked only from readings taken before that write, it is not believed
    (``settings_unconfirmed``: written again, and read back)."""
    wanted = wanted_state(g)
    names = [*wanted, *_timed(wanted).values()]
    for m in _without_timer(view, device, wanted):  # the command asks them; the actuator's bounds refuse it
        names = [n for n in names if n not in timer_points(m, names)]
    inputs: tuple[Input, ...] = view.inputs(f"{device}.{n}" for n in names)
    stale = [i.point for i in inputs if not i.usable(g.stale_after_s)]
    if stale:
        return propose(name, device, mode, now, inputs, "inputs_stale", None,
                       detail={"points": stale[:8], "stale": len(stale), "max_age_s": g.stale_after_s},
                       id_factory=id_factory)  # fmt: skip
    if state.last_write is not None and all((i.ts or 0.0) <= state.last_write for i in inputs):
        return None  # the snapshot has not read the device since the last write
    by = {i.point.removeprefix(f"{device}."): i.value for i in inputs}
    diff = sorted(k for k, v in wanted.items() if k in by and differs(by[k], v, k))
    if diff:
        command = Command(device, "der.configure", wanted, f"{len(diff)} point(s) differ from {g.name}")
        detail = {"group": g.name, "differ": {k: [by.get(k), wanted[k]] for k in diff[:12]}, "differing": len(diff)}
        key: tuple[str, ...] = ("der.configure", *diff[:12])
        rule = "settings_differ"
    elif written_at is not None and any((i.ts or 0.0) <= written_at for i in inputs):
        command = Command(device, "der.configure", wanted, f"{g.name}: not read since the last write")
        detail = {"group": g.name, "written_at": written_at}
        key = ("der.configure",)
        rule = "settings_unconfirmed"
    else:
        due = _refresh_due(g, view, device, wanted)
        if not due:
            state.advised = None
            return None
        values = _refresh_values(wanted, due)
        command = Command(device, "der.refresh", values, f"reversion timer of {', '.join(due)} running out")
        detail = {"group": g.name, "refresh": due, "reversion_s": g.reversion_s}
        key = ("der.refresh", *due)
        rule = "reversion_refresh"
    if mode == "advise" and state.advised == key:
        return None  # advised already: not again every cycle while the same points differ
    return propose(name, device, mode, now, inputs, rule, command, detail=detail, id_factory=id_factory)


class DerFunction:
    """The DER function on one inverter of a group, as the controller runs it.

    A central command (agent/commands) sets ``commanded``: the group as the command changes it (a set point, a
    curve), which the function holds the inverter to, refreshing its timers, until the command's time runs out
    and ``commanded`` is None again; then the group's own settings come back the same way (``settings_differ``).
    """

    layer = LAYER
    takes_commands = True

    def __init__(self, group: DerGroupConfig, device: str, mode: str, *,
                 id_factory: Callable[[], str] = new_id) -> None:  # fmt: skip
        self.group = group
        self.device = device
        self.mode = mode
        self.name = f"{NAME}:{group.name}:{device}"
        self.state = DerState()
        self._new_id = id_factory
        self.policy = FunctionPolicy(self.name, mode, group.stale_after_s, 0.0)
        self.commanded: DerGroupConfig | None = None  # the group as a central command has it (class docstring)
        self.commanded_mode: str | None = None  # the mode the command's decisions go with

    @property
    def target(self) -> DerGroupConfig:
        return self.commanded if self.commanded is not None else self.group

    @property
    def cadence_s(self) -> float:
        return self.group.cadence_s

    @property
    def settle_s(self) -> float:
        return self.group.settle_s

    @property
    def devices(self) -> tuple[str, ...]:
        return (self.device,)

    def step(self, view: View, now: float) -> Decision | None:
        if self.state.wrote:  # the write ended before this cycle began: only readings from now on show it
            self.state.last_write, self.state.wrote = now, False
        mode = self.commanded_mode if self.commanded is not None and self.commanded_mode else self.mode
        return decide(view, now, self.target, self.device, mode, self.state, name=self.name,
                      id_factory=self._new_id)  # fmt: skip

    def decide_now(self, view: View, now: float, mode: str, written_at: float | None = None) -> Decision | None:
        """The decision for what ``target`` asks, now (a command wants its answer at once): readings from before
        ``written_at``, the device's last write, do not count as showing it (:func:`decide`)."""
        return decide(view, now, self.target, self.device, mode, DerState(), name=self.name, id_factory=self._new_id,
                      written_at=written_at)  # fmt: skip

    def after(self, decision: Decision) -> None:
        """A write (whatever came of it) waits for the snapshot to read the device again; an advice is not
        repeated while the same points differ."""
        if decision.outcome in ("applied", "readback_failed", "failed"):
            self.state.last_write, self.state.wrote = decision.ts, True
        if decision.outcome == "advised" and decision.command is not None:
            diff = decision.detail.get("differ") or {}
            refresh = decision.detail.get("refresh") or []
            keys = sorted(diff) if decision.command.action == "der.configure" else list(refresh)
            self.state.advised = (decision.command.action, *keys)


def functions_of(group: DerGroupConfig, mode: str) -> list[DerFunction]:
    """One function per inverter of the group."""
    return [DerFunction(group, dev, mode) for dev in group.devices]


__all__ = [
    "LAYER",
    "NAME",
    "DerFunction",
    "DerState",
    "CURVE_REMAINING",
    "FALLBACK",
    "RVRT_TO",
    "TIMER",
    "autonomous_state",
    "category_defaults",
    "decide",
    "differs",
    "functions_of",
    "refresh_margin_s",
    "freq_droop_points",
    "is_default",
    "volt_var_points",
    "volt_watt_points",
    "timer_points",
    "wanted_state",
]
