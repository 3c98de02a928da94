"""The capacitor bank function: switch the bank on var flow at a meter and/or on voltage at chosen buses.

Pure: :func:`assess` says what the measurements call for now, :func:`track` keeps the time a call has held,
:func:`decide` turns a call that has held for ``delay_s`` into a decision. The async part
(:class:`CapBankFunction`, run by agent/control/controller.py) only carries that state between cycles; the
safety envelope decides whether the command goes.

The rules, in priority order (voltage first: it is what customers get), with the bank's position read from its
controller (``closed``):

| rule | bank | when | command |
|---|---|---|---|
| ``voltage_low`` | open | the lowest voltage is below ``v_close_below_v`` | close |
| ``voltage_high`` | closed | the highest voltage is above ``v_open_above_v`` | open |
| ``var_lagging`` | open | the var flow is above ``q_close_above_var`` | close |
| ``var_leading`` | closed | the var flow is below ``q_open_below_var`` | open |

A switching that would push another voltage out of its band (the highest above ``v_open_above_v`` after a
close, the lowest below ``v_close_below_v`` after an open, by ``bank_rise_v``) is not proposed: the call is
``voltage_spread`` and the bank holds. A close called for while the controller reports its discharge lockout
(``lockout_active``) waits: the call is ``lockout_wait`` (the envelope would refuse it; the device too). The configuration guarantees dead bands wider than the bank's own step
(``q_close_above_var - q_open_below_var > bank_var``, ``v_open_above_v - v_close_below_v > bank_rise_v``), so a
switching never calls for its own reversal. Any input stale, missing or not good: the call is
``inputs_stale`` and no command is proposed. Volts are on the 120 V base.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.control.config import CapBankConfig, FunctionPolicy
from agent.control.decision import Command, Decision, Input, new_id, propose
from agent.control.view import View

NAME = "capbank"
LAYER = 2  # minutes: after the inverters (0) and the regulator (1), before CVR (3)
CLOSE, OPEN = "capbank.close", "capbank.open"
ACTION_CODE = {CLOSE: 1, OPEN: 2}  # sbo_select / sbo_operate (docs/devices/sim-capbank.md)


@dataclass(frozen=True, slots=True)
class Call:
    """What the measurements call for now: a rule, the action (None: nothing), the inputs it read."""

    rule: str
    action: str | None
    inputs: tuple[Input, ...]
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CapBankState:
    """The function's memory between cycles: which call holds and since when [s UTC]."""

    rule: str | None = None
    since: float | None = None


def assess(view: View, cfg: CapBankConfig) -> Call:
    """The call of the measurements in ``view`` (module docstring's table)."""
    closed_in = view.input(f"{cfg.device}.closed")
    lockout_in = view.input(f"{cfg.device}.lockout_active")
    inputs = [closed_in, lockout_in]
    q_in = view.input(cfg.var_point) if cfg.var_point is not None else None
    if q_in is not None:
        inputs.append(q_in)
    v_ins = [view.input(vp.point) for vp in cfg.voltage_points]
    inputs += v_ins
    stale = [i.point for i in inputs if not i.usable(cfg.stale_after_s)]
    if stale:
        return Call("inputs_stale", None, tuple(inputs), {"points": stale, "max_age_s": cfg.stale_after_s})
    closed = bool(closed_in.value)
    q = None if q_in is None else float(q_in.value) * cfg.var_scale  # type: ignore[arg-type]
    volts = [vp.on_120v_base(float(i.value)) for vp, i in zip(cfg.voltage_points, v_ins, strict=True)]  # type: ignore[arg-type]
    vmin, vmax = (min(volts), max(volts)) if volts else (None, None)
    detail: dict[str, Any] = {"closed": closed}
    if q is not None:
        detail["q_var"] = round(q, 1)
    if volts:
        detail |= {"v_min_v": round(vmin, 2), "v_max_v": round(vmax, 2)}  # type: ignore[arg-type]
    ins = tuple(inputs)
    if not closed:
        room = vmax is None or vmax + cfg.bank_rise_v <= cfg.v_open_above_v  # closing keeps the highest in band
        rule = None
        if vmin is not None and vmin < cfg.v_close_below_v:
            rule = "voltage_low"
        elif q is not None and cfg.q_close_above_var is not None and q > cfg.q_close_above_var:
            rule = "var_lagging"
        if rule is None:
            return Call("none", None, ins, detail)
        if not room:
            return Call("voltage_spread", None, ins, {**detail, "called_for": rule})
        if lockout_in.value:
            return Call("lockout_wait", None, ins, {**detail, "called_for": rule})
        return Call(rule, CLOSE, ins, detail)
    room = vmin is None or vmin - cfg.bank_rise_v >= cfg.v_close_below_v  # opening keeps the lowest in band
    if vmax is not None and vmax > cfg.v_open_above_v:
        return Call("voltage_high", OPEN, ins, detail) if room else Call("voltage_spread", None, ins, detail)
    if q is not None and cfg.q_open_below_var is not None and q < cfg.q_open_below_var:
        return Call("var_leading", OPEN, ins, detail) if room else Call("voltage_spread", None, ins, detail)
    return Call("none", None, ins, detail)


def track(state: CapBankState, call: Call, now: float) -> CapBankState:
    """The state after seeing ``call`` at ``now``: the timer runs while the same call holds, restarts otherwise."""
    if call.action is None:
        return CapBankState()
    if state.rule == call.rule and state.since is not None:
        return state
    return CapBankState(call.rule, now)


def decide(
    view: View,
    now: float,
    state: CapBankState,
    cfg: CapBankConfig,
    mode: str,
    *,
    id_factory: Callable[[], str] = new_id,
) -> Decision | None:
    """The decision for ``now``, given the state :func:`track` left (``state`` already includes this cycle).

    A command once a call has held ``delay_s``; a held decision when inputs are stale or a switching would push
    another voltage out of band; None when nothing is called for or the delay is still running.
    """
    call = assess(view, cfg)
    if call.action is None:
        if call.rule in ("inputs_stale", "voltage_spread", "lockout_wait"):
            return propose(NAME, cfg.device, mode, now, call.inputs, call.rule, None, detail=call.detail,
                           id_factory=id_factory)  # fmt: skip
        return None
    held_s = now - state.since if state.rule == call.rule and state.since is not None else 0.0
    if held_s < cfg.delay_s:
        return None
    command = Command(cfg.device, call.action, {"action": ACTION_CODE[call.action]},
                      f"{call.rule} held {held_s:.0f} s (delay {cfg.delay_s:g} s)")  # fmt: skip
    return propose(NAME, cfg.device, mode, now, call.inputs, call.rule, command,
                   detail={**call.detail, "held_s": round(held_s, 1)}, id_factory=id_factory)  # fmt: skip


class CapBankFunction:
    """The cap bank function as the controller runs it: the pure functions above and their state."""

    name = NAME
    layer = LAYER

    def __init__(self, cfg: CapBankConfig, mode: str, *, id_factory: Callable[[], str] = new_id) -> None:
        self.cfg = cfg
        self.mode = mode
        self.state = CapBankState()
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
        self.state = track(self.state, assess(view, self.cfg), now)
        return decide(view, now, self.state, self.cfg, self.mode, id_factory=self._new_id)

    def after(self, decision: Decision) -> None:
        """A command that went out restarts the timer: the next switching needs its own delay."""
        if decision.outcome in ("applied", "readback_failed", "failed", "advised"):
            self.state = CapBankState()


__all__ = ["CLOSE", "LAYER", "NAME", "OPEN", "Call", "CapBankFunction", "CapBankState", "assess", "decide", "track"]
