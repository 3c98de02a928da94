"""The regulator function: supervise the regulator's own control, or step its taps in manual.

Pure: :func:`assess` says what the measurements call for now and :func:`decide` makes it a decision; the class
:class:`RegulatorFunction` (run by agent/control/controller.py, layer 1, tens of seconds) only carries the state
it shares with CVR. The safety envelope decides whether a command goes (bounds, budgets, dwell, hunting...).

``operation = "supervise"`` (the regulator stays on automatic, the agent moves its band), in priority order:

| rule | when | command |
|---|---|---|
| ``bandwidth_limit`` | its bandwidth is outside ``bandwidth_min_v..bandwidth_max_v`` | band centre, bandwidth clamped |
| ``band_center_limit`` | its band centre is outside ``band_center_min_v..band_center_max_v`` | band centre, clamped |
| ``reverse_power`` (held) | ``reverse_power = "hold"`` and the head's active power is negative (PV exports) | none |
| ``cvr_engaged`` (held) | CVR has lowered the band centre and owns it (agent/control/cvr.py) | none |
| ``voltage_high`` | the highest monitored voltage is above ANSI C84.1 Range A (126 V) | band centre a tap lower |
| ``voltage_low`` | the lowest is below Range A (114 V) | band centre a tap higher |
| ``voltage_spread`` (held) | the move would push the other extreme out of Range A, or both are out | none |

``operation = "manual"`` (the agent holds the regulator in manual and steps its taps): each phase's regulated
voltage ``v_reg_<p>`` outside ``band centre +- bandwidth_v / 2`` moves that phase's tap toward the band, at most
``max_tap_step`` steps (rule ``tap_lower`` / ``tap_raise``, all three targets in one command); the band centre is
CVR's while it is engaged, else ``band_center_v``. A ``bandwidth_v`` narrower than one tap step (0.75 V) hunts
and the envelope's hunting detector freezes it (check-config warns).

Any input stale, missing or not good: ``inputs_stale``, no command. Volts are on the 120 V base.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.control.config import RANGE_A_MAX_V, RANGE_A_MIN_V, TAP_STEP_V, FunctionPolicy, RegulatorConfig
from agent.control.decision import Command, Decision, Input, new_id, propose
from agent.control.view import View

NAME = "regulator"
LAYER = 1  # tens of seconds: after the inverters (0), before the cap bank (2) and CVR (3)
BAND_CENTER, TAPS = "regulator.band_center", "regulator.taps"
PHASES = ("a", "b", "c")
TAP_MIN, TAP_MAX = -16, 16  # ANSI C57.15: 32 steps of 0.625 %, +-10 %
HELD_RULES = frozenset({"inputs_stale", "reverse_power", "cvr_engaged", "voltage_spread"})


@dataclass
class BandCentreOwner:
    """Who moves the band centre: shared by the regulator function and CVR (built once by the wiring).

    While CVR is engaged (it lowered the band centre and has not given it back) it owns the band centre: the
    regulator function keeps the limits and holds its Range A moves; the moment CVR gives it back (restore,
    or a voltage above Range A) the regulator function supervises again. ``cvr_target_v`` is CVR's band centre
    (manual operation keeps the taps on it)."""

    cvr_engaged: bool = False
    cvr_target_v: float | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """What the measurements call for now: a rule, the values to write (None: nothing), the inputs read."""

    rule: str
    action: str | None
    values: dict[str, float] | None
    inputs: tuple[Input, ...]
    detail: dict[str, Any] = field(default_factory=dict)


def _volts(view: View, cfg: RegulatorConfig) -> tuple[list[Input], list[float]]:
    ins = [view.input(vp.point) for vp in cfg.voltage_points]
    pairs = zip(cfg.voltage_points, ins, strict=True)
    volts = [vp.on_120v_base(float(i.value)) for vp, i in pairs if i.usable(cfg.stale_after_s)]  # type: ignore[arg-type]
    return ins, volts


def _stale(inputs: list[Input], max_age_s: float) -> list[str]:
    return [i.point for i in inputs if not i.usable(max_age_s) or isinstance(i.value, str)]


def assess_supervise(view: View, cfg: RegulatorConfig, owner: BandCentreOwner | None = None) -> Call:
    """The call of supervise operation (module docstring's first table)."""
    dev = cfg.device
    bc_in, bw_in = view.input(f"{dev}.band_center_v"), view.input(f"{dev}.bandwidth_v")
    inputs = [bc_in, bw_in]
    p_in = None
    if cfg.reverse_power == "hold" and cfg.head_power_point is not None:
        p_in = view.input(cfg.head_power_point)
        inputs.append(p_in)
    v_ins, volts = _volts(view, cfg)
    inputs += v_ins
    stale = _stale(inputs, cfg.stale_after_s)
    if stale:
        return Call("inputs_stale", None, None, tuple(inputs), {"points": stale, "max_age_s": cfg.stale_after_s})
    ins = tuple(inputs)
    bc, bw = float(bc_in.value), float(bw_in.value)  # type: ignore[arg-type]
    detail: dict[str, Any] = {"band_center_v": bc, "bandwidth_v": bw}
    if volts:
        detail |= {"v_min_v": round(min(volts), 2), "v_max_v": round(max(volts), 2)}
    lo, hi = cfg.band_center_min_v, cfg.band_center_max_v
    bc_ok = round(min(max(bc, lo), hi), 1)  # the register's resolution is 0.1 V: what is written reads back
    if not cfg.bandwidth_min_v <= bw <= cfg.bandwidth_max_v:
        bw_ok = round(min(max(bw, cfg.bandwidth_min_v), cfg.bandwidth_max_v), 1)
        return Call("bandwidth_limit", BAND_CENTER, {"band_center_v": bc_ok, "bandwidth_v": bw_ok}, ins, detail)
    if not lo <= bc <= hi:
        return Call("band_center_limit", BAND_CENTER, {"band_center_v": bc_ok}, ins, detail)
    if p_in is not None and float(p_in.value) < 0:  # type: ignore[arg-type]
        return Call("reverse_power", None, None, ins, {**detail, "head_power": p_in.value})
    if not volts:
        return Call("none", None, None, ins, detail)
    vmin, vmax = min(volts), max(volts)
    high, low = vmax > RANGE_A_MAX_V, vmin < RANGE_A_MIN_V
    if not (high or low):
        return Call("none", None, None, ins, detail)
    if owner is not None and owner.cvr_engaged:
        return Call("cvr_engaged", None, None, ins, detail)
    if high and low:
        return Call("voltage_spread", None, None, ins, {**detail, "called_for": "both"})
    if high:
        # lowering moves every monitored voltage down about a step: the lowest must stay in Range A
        if vmin - TAP_STEP_V < RANGE_A_MIN_V:
            return Call("voltage_spread", None, None, ins, {**detail, "called_for": "voltage_high"})
        target = max(lo, bc - TAP_STEP_V)
        if target >= bc:
            return Call("voltage_spread", None, None, ins, {**detail, "called_for": "voltage_high", "at_limit": lo})
        return Call("voltage_high", BAND_CENTER, {"band_center_v": round(target, 1)}, ins, detail)
    if vmax + TAP_STEP_V > RANGE_A_MAX_V:
        return Call("voltage_spread", None, None, ins, {**detail, "called_for": "voltage_low"})
    target = min(hi, bc + TAP_STEP_V)
    if target <= bc:
        return Call("voltage_spread", None, None, ins, {**detail, "called_for": "voltage_low", "at_limit": hi})
    return Call("voltage_low", BAND_CENTER, {"band_center_v": round(target, 1)}, ins, detail)


def assess_manual(view: View, cfg: RegulatorConfig, owner: BandCentreOwner | None = None) -> Call:
    """The call of manual operation: tap targets that bring each phase's regulated voltage into the band."""
    dev = cfg.device
    centre = cfg.band_center_v
    if owner is not None and owner.cvr_engaged and owner.cvr_target_v is not None:
        centre = owner.cvr_target_v
    half = cfg.bandwidth_v / 2
    tap_ins = [view.input(f"{dev}.tap_{p}") for p in PHASES]
    v_ins = [view.input(f"{dev}.v_reg_{p}") for p in PHASES]
    inputs = [*tap_ins, *v_ins]
    stale = _stale(inputs, cfg.stale_after_s)
    if stale:
        return Call("inputs_stale", None, None, tuple(inputs), {"points": stale, "max_age_s": cfg.stale_after_s})
    taps = [int(i.value) for i in tap_ins]  # type: ignore[arg-type]
    volts = [float(i.value) for i in v_ins]  # type: ignore[arg-type]
    detail: dict[str, Any] = {"band_v": [round(centre - half, 2), round(centre + half, 2)],
                              "v_reg_v": [round(v, 2) for v in volts], "taps": taps}  # fmt: skip
    targets = list(taps)
    for k, v in enumerate(volts):
        if centre - half <= v <= centre + half:
            continue
        # steps toward the centre (at least one, at most max_tap_step): one step is about TAP_STEP_V
        steps = min(cfg.max_tap_step, max(1, round(abs(v - centre) / TAP_STEP_V)))
        move = -steps if v > centre + half else steps
        targets[k] = min(TAP_MAX, max(TAP_MIN, taps[k] + move))
    if targets == taps:
        return Call("none", None, None, tuple(inputs), detail)
    delta = sum(t - n for t, n in zip(targets, taps, strict=True))
    rule = "tap_lower" if delta < 0 else "tap_raise" if delta > 0 else "tap_spread"
    values = {f"tap_{p}": float(t) for p, t in zip(PHASES, targets, strict=True)}
    return Call(rule, TAPS, values, tuple(inputs), detail)


def assess(view: View, cfg: RegulatorConfig, owner: BandCentreOwner | None = None) -> Call:
    return assess_manual(view, cfg, owner) if cfg.operation == "manual" else assess_supervise(view, cfg, owner)


def decide(
    view: View,
    now: float,
    cfg: RegulatorConfig,
    mode: str,
    owner: BandCentreOwner | None = None,
    *,
    id_factory: Callable[[], str] = new_id,
) -> Decision | None:
    """The decision for ``now``: a command when a rule fires, a held decision when the function holds still for a
    reason an operator should see, None when nothing is called for."""
    call = assess(view, cfg, owner)
    if call.action is None or call.values is None:
        if call.rule in HELD_RULES:
            return propose(NAME, cfg.device, mode, now, call.inputs, call.rule, None, detail=call.detail,
                           id_factory=id_factory)  # fmt: skip
        return None
    values = {k: (int(v) if call.action == TAPS else v) for k, v in call.values.items()}
    shown = ", ".join(f"{k} {v:g}" for k, v in values.items())
    command = Command(cfg.device, call.action, values, f"{call.rule}: {shown}")
    return propose(NAME, cfg.device, mode, now, call.inputs, call.rule, command, detail=call.detail,
                   id_factory=id_factory)  # fmt: skip


class RegulatorFunction:
    """The regulator function as the controller runs it (module docstring)."""

    name = NAME
    layer = LAYER

    def __init__(self, cfg: RegulatorConfig, mode: str, owner: BandCentreOwner | None = None, *,
                 id_factory: Callable[[], str] = new_id) -> None:  # fmt: skip
        self.cfg = cfg
        self.mode = mode
        self.owner = owner if owner is not None else BandCentreOwner()
        self._new_id = id_factory
        self.policy = FunctionPolicy(NAME, mode, cfg.stale_after_s, cfg.min_dwell_s)

    @property
    def cadence_s(self) -> float:
        return self.cfg.cadence_s

    @property
    def settle_s(self) -> float:
        return self.cfg.settle_s

    @property
    def devices(self) -> tuple[str, ...]:
        return (self.cfg.device,)

    def step(self, view: View, now: float) -> Decision | None:
        return decide(view, now, self.cfg, self.mode, self.owner, id_factory=self._new_id)

    def after(self, decision: Decision) -> None:
        """Nothing to carry: each cycle reads the device afresh (the envelope keeps dwell and hunting)."""


__all__ = ["BAND_CENTER", "LAYER", "NAME", "TAPS", "BandCentreOwner", "Call", "RegulatorFunction", "assess",
           "assess_manual", "assess_supervise", "decide"]  # fmt: skip
