"""The pure parts of carrying out commands: a schedule's value at a time, a set point or curve folded into a DER
group, a decision's outcome as a command's result."""

from __future__ import annotations

import pytest

from agent.commands.execute import _with_setpoint, outcome_of, schedule_value, too_soon_s
from agent.control import ieee1547
from agent.control.config import ConstantPf, DerGroupConfig
from agent.control.decision import Command, propose

T0 = 1_800_000_000.0
SCHED = {"start": T0, "step_s": 300, "values": [60, None, 40], "fallback": 80}


@pytest.mark.parametrize(
    ("t", "want"),
    [(T0 - 1, None), (T0, 60), (T0 + 299.9, 60), (T0 + 300, 80), (T0 + 650, 40), (T0 + 900, None)],
)
def test_a_schedule_gives_each_step_its_value_a_null_step_the_fallback_and_nothing_outside(t, want) -> None:
    assert schedule_value(SCHED, t) == want


def test_an_autonomous_fallback_is_named_not_a_number() -> None:
    assert schedule_value({**SCHED, "fallback": "autonomous"}, T0 + 300) == "autonomous"


def test_one_reactive_power_mode_at_a_time_ieee_1547_clause_5_3() -> None:
    g = DerGroupConfig("pv", ("pv1",), volt_var=ieee1547.default("volt_var.category-b"), constant_var_pct=10.0)
    pf = _with_setpoint(g, {"pf": 0.95, "excitation": "absorbing"})
    assert pf.constant_pf == ConstantPf(0.95, "absorbing") and pf.volt_var is None and pf.constant_var_pct is None
    var = _with_setpoint(g, {"var_pct": -20})
    assert var.constant_var_pct == -20.0 and var.volt_var is None and var.constant_pf is None
    limit = _with_setpoint(g, {"p_limit_pct": 30})
    assert limit.p_limit_pct == 30.0 and limit.volt_var == g.volt_var, "a P limit leaves the reactive mode alone"


def test_a_decisions_outcome_becomes_the_results_status_and_reason() -> None:
    d = propose("central", "cap1", "control", T0, (), "central_command", Command("cap1", "capbank.close"))
    assert outcome_of(d.replace(outcome="applied", readback={"closed": 1})).status == "applied"
    r = outcome_of(d.refuse("rate_limit"))
    assert (r.status, r.reason) == ("refused", "rate_limit")
    a = outcome_of(d.replace(verdict="advise", outcome="advised", detail={"would": "allowed"}))
    assert (a.status, a.reason) == ("refused", "advise_mode:allowed")
    f = outcome_of(d.replace(verdict="allowed", outcome="readback_failed"))
    assert (f.status, f.reason) == ("failed", "readback_failed")


def test_only_a_refusal_for_coming_too_soon_after_the_last_write_waits_for_another_try() -> None:
    d = propose("central", "pv1", "control", T0, (), "settings_differ", Command("pv1", "der.configure"))
    soon = d.refuse("rate_limit", since_last_s=1.5, min_command_interval_s=5.0)
    assert too_soon_s(soon) == pytest.approx(3.51)
    assert too_soon_s(d.refuse("rate_limit", in_last_hour=20, max_commands_per_hour=20)) is None
    assert too_soon_s(d.refuse("rate_limit", after_device_refusal=True, blocked_for_s=60.0)) is None
    assert too_soon_s(d.refuse("bounds", why="p_limit_pct 120 over 100")) is None
    assert too_soon_s(d.replace(outcome="applied")) is None
