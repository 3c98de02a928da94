"""Conservation voltage reduction: lower the regulator's band centre while the feeder's far end can take it.

CVR is the slowest layer (3): every ``period_s`` it lowers the band centre of ``[control.regulator]``'s device by
``step_v`` while the lowest monitored end-of-line voltage stays at least a step above its floor, ANSI C84.1
Range A's 114 V plus ``margin_v``, and raises it a step when that voltage falls below the floor. It gives the
band centre back AT ONCE — the regulator function's normal ``band_center_v`` — when a monitored voltage goes
below Range A or its data goes stale. While it has the band centre lowered (it is *engaged*), CVR owns the band
centre: the regulator function keeps the limits and holds its Range A moves (agent/control/regulator.py,
:class:`~agent.control.regulator.BandCentreOwner`). A monitored voltage above Range A while engaged (a PV bus at
noon) is not met by raising the band: CVR lets go of the band centre without a write (``yield_high``) and the
regulator function, supervising again, lowers it.

Pure: :func:`assess` says what the measurements call for; :class:`CvrFunction` carries its small state (engaged,
the time of its last move). The give-backs (``restore_*``, ``cvr_raise``) say ``detail.give_back``: the controller
does not hold them for a faster layer to settle, and their only input is the regulator's own band centre (the
stale points are in ``detail``), so the envelope's stale-input interlock cannot keep the band down for the very
reason it must come up.

| rule | engaged | when | command |
|---|---|---|---|
| ``restore_stale`` | yes | a monitored voltage is stale, missing or not good | band centre = ``band_center_v`` |
| ``restore_out_of_band`` | yes | a monitored voltage is below Range A (114 V) | band centre = ``band_center_v`` |
| ``yield_high`` (held) | yes | a monitored voltage is above Range A (126 V) | none: the regulator function has it |
| ``cvr_raise`` | yes | the lowest voltage is below the floor (114 + ``margin_v``) | band centre + ``step_v`` |
| ``cvr_lower`` | - | the lowest is at least floor + ``step_v`` and ``period_s`` has passed | band centre - ``step_v`` |
| ``inputs_stale`` / ``out_of_band`` (held) | no | as above, nothing to give back | none |

Volts are on the 120 V base. The floor is 114 V + ``margin_v`` + ``pv_margin_v_per_mw`` x the MW the PV of
``pv_points`` makes now: on a high-PV feeder a cloud edge takes that output away within seconds, and the far end
falls with it faster than a regulator (time delay, one tap at a time) gives a reduction back. Measured on the
bench's cloudy day: 3.7 V at bus 611 within 30 s (docs/control.md, "CVR"). A stale PV point is a stale input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.control.config import RANGE_A_MAX_V, RANGE_A_MIN_V, CvrConfig, FunctionPolicy, RegulatorConfig
from agent.control.decision import Command, Decision, Input, new_id, propose
from agent.control.regulator import BAND_CENTER, BandCentreOwner
from agent.control.view import View
from protocols.eventlog import EventLog

log = EventLog("control")

NAME = "cvr"
LAYER = 3  # every few minutes: after the inverters, the regulator and the cap bank
WATCH_S = 10.0  # CVR looks this often (period_s if shorter): a give-back waits for no period
ENGAGED_BY_V = 0.05  # the band centre is below normal by more than this: CVR's reduction is in force
GIVE_BACK = frozenset({"restore_stale", "restore_out_of_band", "cvr_raise"})
HELD_RULES = frozenset({"inputs_stale", "out_of_band", "yield_high"})


@dataclass(frozen=True, slots=True)
class CvrState:
    """CVR's memory between cycles: whether it has the band centre lowered, and when it last moved it [s UTC]."""

    engaged: bool = False
    last_move: float | None = None


@dataclass(frozen=True, slots=True)
class Call:
    rule: str
    band_center_v: float | None  # the band centre to write (None: nothing)
    inputs: tuple[Input, ...]
    detail: dict[str, Any] = field(default_factory=dict)


def assess(view: View, now: float, state: CvrState, cfg: CvrConfig, reg: RegulatorConfig) -> Call:
    """The call of the measurements (module docstring's table)."""
    bc_in = view.input(f"{reg.device}.band_center_v")
    v_ins = [view.input(vp.point) for vp in cfg.voltage_points]
    normal = reg.band_center_v
    if not bc_in.usable(cfg.stale_after_s) or isinstance(bc_in.value, str):
        return Call("inputs_stale", None, (bc_in, *v_ins), {"points": [bc_in.point], "max_age_s": cfg.stale_after_s})
    bc = float(bc_in.value)  # type: ignore[arg-type]
    engaged = state.engaged and bc < normal - ENGAGED_BY_V
    detail: dict[str, Any] = {"band_center_v": bc, "normal_v": normal, "floor_v": cfg.floor_v, "engaged": engaged}
    pv_ins = [view.input(point) for point, _ in cfg.pv_points]
    stale = [i for i in (*v_ins, *pv_ins) if not i.usable(cfg.stale_after_s) or isinstance(i.value, str)]
    if stale:
        gone = {"points": [i.point for i in stale], "ages_s": [i.age_s for i in stale],
                "qualities": [i.quality for i in stale], "max_age_s": cfg.stale_after_s}  # fmt: skip
        if engaged:  # the restore's only input is the band centre: stale data must not keep the band down
            return Call("restore_stale", normal, (bc_in,), {**detail, **gone, "give_back": True})
        return Call("inputs_stale", None, (bc_in, *v_ins, *pv_ins), {**detail, **gone})
    watts = [max(0.0, float(i.value)) * scale for i, (_, scale) in zip(pv_ins, cfg.pv_points, strict=True)]  # type: ignore[arg-type]
    pv_mw = sum(watts) / 1e6
    floor = cfg.floor_v + cfg.pv_margin_v_per_mw * pv_mw
    if cfg.pv_points:
        detail |= {"pv_mw": round(pv_mw, 3), "floor_v": round(floor, 2)}
    pairs = zip(cfg.voltage_points, v_ins, strict=True)
    volts = [vp.on_120v_base(float(i.value)) for vp, i in pairs]  # type: ignore[arg-type]
    ins = (bc_in, *v_ins, *pv_ins)
    vmin, vmax = min(volts), max(volts)
    detail |= {"v_min_v": round(vmin, 2), "v_max_v": round(vmax, 2)}
    if vmin < RANGE_A_MIN_V:
        if engaged:
            return Call("restore_out_of_band", normal, ins, {**detail, "give_back": True})
        return Call("out_of_band", None, ins, detail)
    if vmax > RANGE_A_MAX_V:
        return Call("yield_high" if engaged else "out_of_band", None, ins, detail)
    if vmin < floor:
        if engaged:
            return Call("cvr_raise", round(min(normal, bc + cfg.step_v), 1), ins, {**detail, "give_back": True})
        return Call("none", None, ins, detail)
    if vmin >= floor + cfg.step_v:
        if state.last_move is not None and now - state.last_move < cfg.period_s:
            return Call("none", None, ins, {**detail, "next_in_s": round(state.last_move + cfg.period_s - now, 1)})
        target = round(bc - cfg.step_v, 1)
        if target < reg.band_center_min_v:
            return Call("none", None, ins, {**detail, "at_limit_v": reg.band_center_min_v})
        return Call("cvr_lower", target, ins, detail)
    return Call("none", None, ins, detail)


def decide(view: View, now: float, state: CvrState, cfg: CvrConfig, reg: RegulatorConfig, mode: str, *,
           id_factory: Callable[[], str] = new_id) -> tuple[Decision | None, Call]:  # fmt: skip
    """The decision for ``now`` and the call it came from."""
    call = assess(view, now, state, cfg, reg)
    if call.band_center_v is None:
        if call.rule in HELD_RULES:
            return propose(NAME, reg.device, mode, now, call.inputs, call.rule, None, detail=call.detail,
                           id_factory=id_factory), call  # fmt: skip
        return None, call
    command = Command(reg.device, BAND_CENTER, {"band_center_v": call.band_center_v},
                      f"{call.rule}: band centre {call.band_center_v:g} V")  # fmt: skip
    return propose(NAME, reg.device, mode, now, call.inputs, call.rule, command, detail=call.detail,
                   id_factory=id_factory), call  # fmt: skip


class CvrFunction:
    """CVR as the controller runs it: the pure rules above, its state, and the band centre it shares."""

    name = NAME
    layer = LAYER

    def __init__(self, cfg: CvrConfig, reg: RegulatorConfig, mode: str, owner: BandCentreOwner, *,
                 id_factory: Callable[[], str] = new_id) -> None:  # fmt: skip
        self.cfg = cfg
        self.reg = reg
        self.mode = mode
        self.owner = owner
        self.state = CvrState()
        self._new_id = id_factory
        # a give-back never waits for dwell; cloud-following moves have their own hunting limit
        self.policy = FunctionPolicy(NAME, mode, cfg.stale_after_s, 0.0, hunting_reversals=cfg.hunting_reversals)

    @property
    def cadence_s(self) -> float:
        return min(self.cfg.period_s, WATCH_S)

    @property
    def settle_s(self) -> float:
        return self.cfg.period_s

    @property
    def devices(self) -> tuple[str, ...]:
        return (self.reg.device,)

    def _engage(self, engaged: bool, target: float | None) -> None:
        self.owner.cvr_engaged = engaged
        self.owner.cvr_target_v = target if engaged else None

    def step(self, view: View, now: float) -> Decision | None:
        d, call = decide(view, now, self.state, self.cfg, self.reg, self.mode, id_factory=self._new_id)
        engaged = bool(call.detail.get("engaged", self.state.engaged))
        if call.rule == "yield_high":
            log.info("control_cvr_yielded", device=self.reg.device, v_max_v=call.detail.get("v_max_v"),
                     band_center_v=call.detail.get("band_center_v"))  # fmt: skip
            engaged = False
        if engaged != self.state.engaged:
            self.state = CvrState(engaged, self.state.last_move)
            self._engage(engaged, call.detail.get("band_center_v") if engaged else None)
        return d

    def after(self, decision: Decision) -> None:
        """What a command did: a lower applied engages CVR, a give-back applied may release it."""
        cmd = decision.command
        if cmd is None or decision.outcome not in ("applied", "advised"):
            return
        target = float(cmd.values["band_center_v"])
        if decision.outcome == "advised":  # nothing written: only the period runs, so advice comes once a period
            self.state = CvrState(self.state.engaged, decision.ts)
            return
        engaged = target < self.reg.band_center_v - ENGAGED_BY_V
        self.state = CvrState(engaged, decision.ts)
        self._engage(engaged, target)
        if decision.rule in ("restore_stale", "restore_out_of_band"):
            log.warning("control_cvr_restored", device=self.reg.device, rule=decision.rule,
                        band_center_v=target, points=",".join(decision.detail.get("points", [])))  # fmt: skip


__all__ = ["GIVE_BACK", "LAYER", "NAME", "Call", "CvrFunction", "CvrState", "assess", "decide"]
