"""The decision records: frozen, slotted, JSON-serialisable, and refusing what would be a lie in the audit."""

from __future__ import annotations

import dataclasses
import json

import pytest

from agent.control.decision import (
    AUDIT_KIND,
    Command,
    Decision,
    Input,
    audit_event,
    lesser_mode,
    propose,
)

INPUTS = (
    Input("sub-meter.q_total", 812_000.0, 1_781_913_600.0, 2.0, "good"),
    Input("cap675-ctl.v_control", 119.2, 1_781_913_598.0, 4.0, "good"),
)


def a_decision(**kw) -> Decision:
    base = propose("capbank", "cap675-ctl", "control", 1_781_913_602.0, INPUTS, "var_lagging",
                   Command("cap675-ctl", "capbank.close", {"action": 1}, "vars above 600 kvar for 120 s"),
                   id_factory=lambda: "d1")  # fmt: skip
    return base.replace(**kw) if kw else base


def test_a_decision_survives_json_and_back_unchanged() -> None:
    d = a_decision(verdict="allowed", outcome="applied", readback={"closed": 1}, budgets_left={"cap_ops_per_day": 3},
                   detail={"attempt": 1})  # fmt: skip
    text = json.dumps(d.to_dict(), allow_nan=False)
    assert Decision.from_dict(json.loads(text)) == d


def test_records_are_frozen_and_slotted() -> None:
    d = a_decision()
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.outcome = "applied"  # type: ignore[misc]
    for obj in (d, d.inputs[0], d.command):
        assert not hasattr(obj, "__dict__")
    with pytest.raises(TypeError):
        d.detail["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        d.command.values["action"] = 2  # type: ignore[index,union-attr]


def test_a_proposal_without_a_command_is_held() -> None:
    d = propose("capbank", "cap675-ctl", "control", 1.0, INPUTS, "inputs_stale", None)
    assert (d.verdict, d.outcome, d.command) == ("held", "held", None)


def test_refuse_names_the_reason_and_keeps_the_detail() -> None:
    d = a_decision(detail={"a": 1}).refuse("budget:cap_ops_per_day", used=4, limit=4)
    assert d.verdict == "refused:budget:cap_ops_per_day" and d.reason == "budget:cap_ops_per_day"
    assert d.outcome == "refused" and dict(d.detail) == {"a": 1, "used": 4, "limit": 4}


@pytest.mark.parametrize(
    "change",
    [
        {"mode": "auto"},
        {"outcome": "done"},
        {"verdict": "ok"},
        {"verdict": "refused:"},
        {"verdict": "refused:Bad Reason"},
        {"device": "reg-ctl"},  # the command is for another device
    ],
)
def test_a_record_the_audit_could_not_trust_cannot_be_built(change: dict) -> None:
    with pytest.raises(ValueError):
        a_decision(**change)


def test_a_command_refuses_a_value_json_cannot_carry() -> None:
    with pytest.raises(ValueError):
        Command("cap675-ctl", "capbank.close", {"action": float("nan")})
    with pytest.raises(ValueError):
        Command("cap675-ctl", "Close Bank", {})
    with pytest.raises(ValueError):
        Input("x.y", 1.0, 0.0, 0.0, "fine")


def test_an_input_is_usable_only_good_present_and_fresh() -> None:
    assert Input("p", 1.0, 0.0, 5.0, "good").usable(5.0)
    assert not Input("p", 1.0, 0.0, 5.1, "good").usable(5.0)
    assert not Input("p", 1.0, 0.0, 1.0, "stale").usable(5.0)
    assert not Input("p", None, 0.0, 1.0, "good").usable(5.0)
    assert not Input("p", None, None, None, "missing").usable(5.0)


def test_the_audit_event_carries_the_whole_record() -> None:
    d = a_decision(verdict="allowed", outcome="applied")
    ev = audit_event(d)
    assert (ev.kind, ev.severity, ev.source, ev.ts) == (AUDIT_KIND, "info", "cap675-ctl", d.ts)
    assert ev.text == "capbank cap675-ctl capbank.close: applied (var_lagging)"
    assert ev.data == d.to_dict()
    assert audit_event(d.refuse("stale_inputs")).severity == "warning"
    assert audit_event(d.replace(outcome="readback_failed")).severity == "error"


def test_a_function_mode_is_never_above_the_global_one() -> None:
    assert lesser_mode("control", "advise") == "advise"
    assert lesser_mode("monitor", "control") == "monitor"
    assert lesser_mode("control", "control") == "control"
