"""CVR's rules: it lowers the band centre only while the lowest end-of-line voltage is at least a step above the
floor (ANSI C84.1-2016 Table 1, Range A minimum 114 V on the 120 V base, plus the margin), raises it below the
floor, and gives it back at once when a voltage leaves Range A downward or its data goes stale. Each row can
catch a wrong direction, a wrong comparison or a give-back that waits."""

from __future__ import annotations

import pytest
from helpers.aio import arun

from agent.control.config import CvrConfig, RegulatorConfig, VoltagePoint
from agent.control.controller import Controller
from agent.control.cvr import CvrFunction, CvrState, assess
from agent.control.decision import Decision
from agent.control.regulator import BAND_CENTER, BandCentreOwner, RegulatorFunction
from agent.control.view import View
from agent.points import Quality, Reading

NOW = 1_781_956_800.0
REG = RegulatorConfig(device="reg", band_center_min_v=116.0, band_center_max_v=124.0, band_center_v=122.0,
                      reverse_power="allow")  # fmt: skip
CVR = CvrConfig(enabled=True, voltage_points=(VoltagePoint("eol.v_a", 120.0), VoltagePoint("eol.v_b", 120.0)),
                margin_v=2.0, step_v=0.5, period_s=300.0, stale_after_s=30.0)  # fmt: skip
# the floor: 114 V (Range A minimum) + 2 V margin = 116 V; a lower needs 116.5 V at the far end


def view(bc: float = 122.0, v: tuple[float, float] = (118.0, 119.0), *, age: float = 1.0,
         quality: Quality = Quality.GOOD, at: float = NOW) -> View:  # fmt: skip
    return View({
        "reg.band_center_v": Reading("reg.band_center_v", at - 1, bc, "V"),
        "reg.bandwidth_v": Reading("reg.bandwidth_v", at - 1, 2.0, "V"),
        "eol.v_a": Reading("eol.v_a", at - age, v[0], "V", quality),
        "eol.v_b": Reading("eol.v_b", at - 1, v[1], "V"),
    }, at)  # fmt: skip


ENGAGED = CvrState(engaged=True, last_move=NOW - 10)


@pytest.mark.parametrize(
    ("bc", "v", "state", "kw", "rule", "target"),
    [
        (122.0, (116.5, 119.0), CvrState(), {}, "cvr_lower", 121.5),  # floor + a step exactly: lower
        (122.0, (116.4, 119.0), CvrState(), {}, "none", None),  # less than a step above the floor: stay
        (121.0, (116.4, 119.0), ENGAGED, {}, "none", None),  # between floor and floor + step: stay
        (121.0, (115.9, 119.0), ENGAGED, {}, "cvr_raise", 121.5),  # below the floor: a step back up
        (121.8, (115.9, 119.0), ENGAGED, {}, "cvr_raise", 122.0),  # never above the normal band centre
        (122.0, (115.9, 119.0), CvrState(), {}, "none", None),  # not engaged: nothing to give back
        (120.0, (113.9, 119.0), ENGAGED, {}, "restore_out_of_band", 122.0),  # below Range A: all of it, at once
        (120.0, (118.0, 119.0), ENGAGED, {"age": 31.0}, "restore_stale", 122.0),  # stale: all of it, at once
        (120.0, (118.0, 119.0), ENGAGED, {"quality": Quality.INVALID}, "restore_stale", 122.0),
        (122.0, (118.0, 119.0), CvrState(), {"age": 31.0}, "inputs_stale", None),  # nothing lowered: hold
        (120.0, (126.2, 119.0), ENGAGED, {}, "yield_high", None),  # above Range A: let the regulator lower
        (120.0, (118.0, 119.0), CvrState(True, NOW - 100), {}, "none", None),  # period not over: wait
        (120.0, (118.0, 119.0), CvrState(True, NOW - 300), {}, "cvr_lower", 119.5),  # period over: next step
        (116.2, (118.0, 119.0), CvrState(True, NOW - 300), {}, "none", None),  # the band centre's minimum
    ],
)
def test_each_rule_moves_the_band_centre_the_right_way(bc, v, state, kw, rule, target) -> None:
    call = assess(view(bc, v, **kw), NOW, state, CVR, REG)
    assert call.rule == rule
    assert call.band_center_v == target


def test_a_restore_for_stale_data_carries_only_the_band_centre_as_its_input() -> None:
    """The envelope refuses decisions whose inputs are stale: the restore must not carry the stale voltage."""
    call = assess(view(120.0, age=31.0), NOW, ENGAGED, CVR, REG)
    assert [i.point for i in call.inputs] == ["reg.band_center_v"]
    assert call.detail["points"] == ["eol.v_a"] and call.detail["give_back"] is True


class FakeEnvelope:
    """Applies every command (the envelope's own checks are tested in test_control_envelope.py)."""

    def __init__(self) -> None:
        self.submitted: list[Decision] = []
        self.ops: dict[str, float] = {}

    def last_operation(self, devices):
        times = [self.ops[d] for d in devices if d in self.ops]
        return max(times) if times else None

    async def submit(self, d: Decision, *, record: bool = True) -> Decision:
        self.submitted.append(d)
        self.ops[d.device] = d.ts
        return d.replace(verdict="allowed", outcome="applied")

    async def record(self, d: Decision) -> None:
        pass

    def status(self):
        return {}


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def time(self) -> float:
        return self.t


def test_cvr_owns_the_band_centre_while_lowered_and_its_give_back_is_never_held_for_settling() -> None:
    owner = BandCentreOwner()
    reg = RegulatorConfig(**{**{k: getattr(REG, k) for k in REG.__slots__}, "settle_s": 120.0,
                             "voltage_points": (VoltagePoint("eol.v_a", 120.0),)})  # fmt: skip
    regf, cvrf = RegulatorFunction(reg, "control", owner), CvrFunction(CVR, reg, "control", owner)
    env, clock = FakeEnvelope(), Clock(NOW)
    readings = {"reg.band_center_v": 122.0, "reg.bandwidth_v": 2.0, "eol.v_a": 118.0, "eol.v_b": 119.0}

    class Snap:
        def get(self, point):
            v = readings.get(point)
            return None if v is None else Reading(point, clock.t - 1, v, "V")

    ctl = Controller([regf, cvrf], env, Snap(), clock)  # type: ignore[arg-type]
    (d,) = arun(ctl.cycle(3))
    assert (d.rule, d.outcome, dict(d.command.values)) == ("cvr_lower", "applied", {"band_center_v": 121.5})
    assert owner.cvr_engaged and owner.cvr_target_v == 121.5
    readings["reg.band_center_v"] = 121.5
    # 30 s later the regulator layer looks: the voltages are in Range A, nothing for it to do
    clock.t += 30
    assert arun(ctl.cycle(1)) == []
    # the far end drops below Range A 20 s after CVR's lower, while the regulator layer has not settled: the
    # restore goes at once
    clock.t += 20
    readings["eol.v_a"] = 113.5
    out = arun(ctl.cycle(3))
    assert [(x.rule, x.outcome, dict(x.command.values)) for x in out] == [
        ("restore_out_of_band", "applied", {"band_center_v": 122.0})
    ]
    assert not owner.cvr_engaged
    # an ordinary lower in that situation would have waited for the regulator layer to settle
    readings |= {"reg.band_center_v": 122.0, "eol.v_a": 118.0}
    clock.t += 300
    env.ops["reg"] = clock.t - 10
    (held,) = arun(ctl.cycle(3))
    assert held.rule == "cvr_lower" and held.outcome == "held"
    assert held.detail["waiting_for_faster_layers"] == "regulator"


def test_a_voltage_above_range_a_hands_the_band_centre_to_the_regulator_function() -> None:
    owner = BandCentreOwner(cvr_engaged=True, cvr_target_v=120.0)
    reg = RegulatorConfig(**{**{k: getattr(REG, k) for k in REG.__slots__},
                             "voltage_points": CVR.voltage_points})  # fmt: skip
    cvrf = CvrFunction(CVR, reg, "control", owner)
    cvrf.state = CvrState(True, NOW - 10)
    v = view(120.0, (126.3, 119.0))
    d = cvrf.step(v, NOW)
    assert d is not None and d.rule == "yield_high" and d.command is None
    assert not owner.cvr_engaged
    d = RegulatorFunction(reg, "control", owner).step(v, NOW)
    assert d is not None and d.rule == "voltage_high" and d.command.action == BAND_CENTER
    assert d.command.values["band_center_v"] == 119.2  # one tap step (0.75 V) lower


def test_advice_comes_once_a_period_and_engages_nothing() -> None:
    owner = BandCentreOwner()
    f = CvrFunction(CVR, REG, "advise", owner)
    d = f.step(view(), NOW)
    assert d is not None and d.rule == "cvr_lower"
    f.after(d.replace(verdict="advise", outcome="advised"))
    assert not owner.cvr_engaged
    assert f.step(view(at=NOW + 60), NOW + 60) is None
    assert f.step(view(at=NOW + 300), NOW + 300).rule == "cvr_lower"


def test_cvr_watches_often_and_steps_every_period() -> None:
    f = CvrFunction(CVR, REG, "control", BandCentreOwner())
    assert (f.layer, f.cadence_s, f.devices, f.policy.min_dwell_s) == (3, 10.0, ("reg",), 0.0)
