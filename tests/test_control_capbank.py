"""The capacitor bank function's rules, one row each: the direction, the comparison and the delay can each be
caught wrong here. Volts are on the 120 V base, var flow + lagging (drawn by the loads)."""

from __future__ import annotations

import pytest

from agent.control.capbank import CLOSE, OPEN, CapBankFunction, CapBankState, assess, decide, track
from agent.control.config import CapBankConfig, VoltagePoint
from agent.control.view import View
from agent.points import Quality, Reading

NOW = 1_781_956_800.0
CFG = CapBankConfig(
    device="cap", var_point="meter.q", q_close_above_var=1.2e6, q_open_below_var=3e5, bank_var=7e5,
    voltage_points=(VoltagePoint("cap.v", 120.0),), v_close_below_v=118.0, v_open_above_v=126.0, bank_rise_v=2.5,
    delay_s=120.0, stale_after_s=30.0,
)  # fmt: skip


def view(closed: bool | None, q: float | None = 8e5, v: float | tuple[float, ...] = 121.0, *, q_age: float = 1.0,
         q_quality: Quality = Quality.GOOD, lockout: bool = False) -> View:  # fmt: skip
    snap: dict[str, Reading] = {"cap.lockout_active": Reading("cap.lockout_active", NOW - 2, lockout, "")}
    if closed is not None:
        snap["cap.closed"] = Reading("cap.closed", NOW - 2, closed, "")
    if q is not None:
        snap["meter.q"] = Reading("meter.q", NOW - q_age, q, "var", q_quality)
    volts = v if isinstance(v, tuple) else (v,)
    for i, x in enumerate(volts):
        name = "cap.v" if i == 0 else f"m{i}.v"
        snap[name] = Reading(name, NOW - 1, x, "V")
    return View(snap, NOW)


@pytest.mark.parametrize(
    ("closed", "q", "v", "rule", "action"),
    [
        (False, 1.3e6, 120.0, "var_lagging", CLOSE),  # vars high, bank open: close
        (False, 1.2e6, 120.0, "none", None),  # at the threshold: strictly above is needed
        (False, 1.3e6, 124.0, "voltage_spread", None),  # closing would put 675 at 126.5 V, above 126
        (False, 5e5, 117.9, "voltage_low", CLOSE),  # voltage low, bank open: close
        (False, 5e5, 118.0, "none", None),  # at the threshold: strictly below is needed
        (True, 2.9e5, 121.0, "var_leading", OPEN),  # vars low (toward leading), bank closed: open
        (True, 3.0e5, 121.0, "none", None),  # at the threshold
        (True, 2.9e5, 120.0, "voltage_spread", None),  # opening would put 675 at 117.5 V, below 118
        (True, 1.0e6, 126.1, "voltage_high", OPEN),  # voltage high, bank closed: open
        (True, 1.0e6, 126.0, "none", None),  # at the threshold
        (False, -1e5, 121.0, "none", None),  # leading vars never close a bank
        (True, 1.3e6, 121.0, "none", None),  # lagging vars with the bank in: nothing more to do
        (False, -5e5, 117.0, "voltage_low", CLOSE),  # voltage first: low voltage closes despite leading vars
        (True, 2.0e6, 127.0, "voltage_high", OPEN),  # voltage first: high voltage opens despite lagging vars
        (False, 8e5, (117.5, 124.0), "voltage_spread", None),  # one bus low, another would go high
        (True, 8e5, (127.0, 119.0), "voltage_spread", None),  # one bus high, another would go low
    ],
)
def test_each_rule_switches_the_right_way_on_the_right_comparison(
    closed: bool, q: float, v: float | tuple[float, ...], rule: str, action: str | None
) -> None:
    cfg = CFG
    if isinstance(v, tuple) and len(v) > 1:
        cfg = CapBankConfig(**{**{f: getattr(CFG, f) for f in CFG.__dataclass_fields__},
                               "voltage_points": (VoltagePoint("cap.v", 120.0), VoltagePoint("m1.v", 120.0))})  # fmt: skip
    call = assess(view(closed, q, v), cfg)
    assert (call.rule, call.action) == (rule, action), call.detail


@pytest.mark.parametrize(
    ("snap", "stale"),
    [
        ({"closed": None}, "cap.closed"),  # the position is not known
        ({"q_age": 31.0}, "meter.q"),  # older than stale_after_s
        ({"q_quality": Quality.STALE}, "meter.q"),
        ({"q": None}, "meter.q"),  # never read
    ],
)
def test_a_stale_or_missing_input_proposes_no_command(snap: dict, stale: str) -> None:
    args = {"closed": False, "q": 2e6, "v": 117.0, **snap}
    closed = args.pop("closed")
    v = view(closed, **args)
    call = assess(v, CFG)
    assert (call.rule, call.action) == ("inputs_stale", None) and stale in call.detail["points"]
    d = decide(v, NOW, CapBankState("var_lagging", NOW - 1000), CFG, "control")
    assert d is not None and d.command is None and d.outcome == "held" and d.rule == "inputs_stale"


def test_a_close_called_for_during_the_discharge_lockout_waits() -> None:
    v = view(False, 1.3e6, lockout=True)
    call = assess(v, CFG)
    assert (call.rule, call.action, call.detail["called_for"]) == ("lockout_wait", None, "var_lagging")
    d = decide(v, NOW, CapBankState(), CFG, "control")
    assert d is not None and d.command is None and d.rule == "lockout_wait"
    assert assess(view(True, 2.9e5, lockout=True), CFG).action == OPEN, "an open never waits for the lockout"


def test_a_var_point_in_kvar_is_scaled_to_var() -> None:
    kvar = CapBankConfig(**{**{f: getattr(CFG, f) for f in CFG.__dataclass_fields__}, "var_scale": 1000.0})
    assert assess(view(False, 1300.0), kvar).action == CLOSE
    assert assess(view(False, 1100.0), kvar).action is None


def test_the_call_must_hold_for_the_delay_before_a_command_is_proposed() -> None:
    v = view(False, 1.3e6)
    state = track(CapBankState(), assess(v, CFG), NOW - 119.0)
    assert state == CapBankState("var_lagging", NOW - 119.0)
    assert decide(v, NOW, state, CFG, "control") is None, "119 s of a 120 s delay"
    state = track(CapBankState(), assess(v, CFG), NOW - 120.0)
    d = decide(v, NOW, state, CFG, "control")
    assert d is not None and d.command is not None
    assert (d.command.device, d.command.action, dict(d.command.values)) == ("cap", CLOSE, {"action": 1})
    assert (d.rule, d.verdict, d.outcome, d.detail["held_s"]) == ("var_lagging", "proposed", "pending", 120.0)
    assert [i.point for i in d.inputs] == ["cap.closed", "cap.lockout_active", "meter.q", "cap.v"]


def test_the_delay_restarts_when_the_call_changes_or_goes() -> None:
    lagging = assess(view(False, 1.3e6), CFG)
    low = assess(view(False, 5e5, 117.0), CFG)
    state = track(CapBankState(), lagging, NOW - 500)
    assert track(state, lagging, NOW) is state, "the same call keeps its start"
    assert track(state, low, NOW) == CapBankState("voltage_low", NOW), "another call starts its own timer"
    assert track(state, assess(view(False, 8e5), CFG), NOW) == CapBankState(), "no call, no timer"


def test_the_function_proposes_after_the_delay_and_starts_again_after_a_command() -> None:
    fn = CapBankFunction(CFG, "control", id_factory=lambda: "d")
    assert fn.step(view(False, 1.3e6), NOW - 120.0) is None
    d = fn.step(view(False, 1.3e6), NOW)
    assert d is not None and d.command is not None and d.command.action == CLOSE
    fn.after(d.replace(verdict="allowed", outcome="applied"))
    assert fn.state == CapBankState()
    assert fn.step(view(False, 1.3e6), NOW + 60) is None, "a new delay"
    assert fn.policy.stale_after_s == 30.0 and fn.devices == ("cap",)
