"""``gridedge control explain`` from a live picture (agent/control/explain.py): it runs the site's own functions
on the published snapshot at the agent's clock, asks the envelope what it would answer from the published state,
and sends nothing to any device; ``gridedge status``'s control section says what the agent published.

The site is the cap bank site of tests/helpers/controlbench.py (var switching: close above 1.5 Mvar lagging,
delay 10 s, 4 operations a day); the figures of the picture are chosen so each rule's answer is known."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from helpers.bench import bench_config
from helpers.controlbench import CAP, capbank_control, site_file

from agent.config import load_config
from agent.control.explain import NoWire, explain, explain_text
from agent.statustext import AgentState, status_text

CLOCK = 1_782_043_200.0  # 2026-06-21T12:00:00Z, the agent's clock when the picture was taken
CONTROL = capbank_control(envelope="", more='ops_per_day = 4\nheartbeat_point = "heartbeat"')


def picture(q_var: float, *, age_s: float = 1.0, since: float | None, ops: int = 0) -> dict:
    """A picture of an open bank in remote, a healthy feeder, ``q_var`` at the head; the cap bank function's call
    ``var_lagging`` held since ``since`` [agent clock]; ``ops`` operations of the bank in the last hours."""
    ts = CLOCK - age_s
    values = {"sub-meter.q_total": q_var, "sub-meter.v_a": 2450.0, f"{CAP}.closed": 0, f"{CAP}.lockout_active": 0,
              f"{CAP}.mode": 0, "head-relay.relay_state": 1, "head-relay.breaker_closed": 1,
              "head-relay.lockout": 0}  # fmt: skip
    state = {"rule": None if since is None else "var_lagging", "since": since}
    return {
        "ts": 1e12, "pid": 1, "clock_ts": CLOCK, "mode": "control",
        "readings": [[p, ts, v, "", "good"] for p, v in values.items()],
        "envelope": {"ops": [{"id": i + 1, "ts": CLOCK - 3600.0 * (i + 1), "device": CAP, "function": "capbank",
                              "action": "capbank.close" if i % 2 else "capbank.open", "direction": 1 if i % 2 else -1,
                              "costs": {"cap_ops": 1}, "decision_id": f"d{i}"} for i in range(ops)],
                     "flags": []},
        "functions": {"capbank": {"mode": "control", "layer": 2, "devices": [CAP], "state": state}},
    }  # fmt: skip


def site(tmp_path: Path):
    return load_config(site_file(bench_config(tmp_path), tmp_path / "agent", CONTROL))


def test_a_call_held_past_its_delay_is_a_close_the_envelope_would_allow_and_nothing_is_sent(
    tmp_path: Path, monkeypatch
) -> None:
    sent: list[str] = []
    monkeypatch.setattr(NoWire, "_refuse", lambda self: sent.append(self.device))
    mode, (e,) = asyncio.run(explain(site(tmp_path), picture(2_000_000.0, since=CLOCK - 30)))
    assert mode == "control" and e.memory == "agent"
    d = e.decision
    assert d is not None and d.command is not None
    assert (d.command.action, d.rule, d.detail["would"]) == ("capbank.close", "var_lagging", "allowed")
    assert d.budgets_left == {"cap_ops_per_day": 4}
    assert sent == [], "a dry run reaches no device"
    text = explain_text(mode, [e], picture(0, since=None), CLOCK)
    assert "would: capbank.close" in text and "the agent writes it at this decision" in text


def test_the_agents_timer_counts_a_call_younger_than_its_delay_does_nothing_yet(tmp_path: Path) -> None:
    _, (e,) = asyncio.run(explain(site(tmp_path), picture(2_000_000.0, since=CLOCK - 4)))
    assert e.decision is None, "4 s of a 10 s delay: no command yet"
    assert e.state == {"rule": "var_lagging", "since": CLOCK - 4}


def test_a_spent_budget_is_what_the_envelope_would_answer(tmp_path: Path) -> None:
    _, (e,) = asyncio.run(explain(site(tmp_path), picture(2_000_000.0, since=CLOCK - 30, ops=4)))
    d = e.decision
    assert d is not None and d.detail["would"] == "budget:cap_ops_per_day"
    assert "the envelope would refuse it: budget:cap_ops_per_day" in explain_text("control", [e], {}, CLOCK)


def test_stale_inputs_hold_the_function(tmp_path: Path) -> None:
    _, (e,) = asyncio.run(explain(site(tmp_path), picture(2_000_000.0, age_s=120.0, since=None)))
    d = e.decision
    assert d is not None and d.command is None and d.rule == "inputs_stale"


def test_status_shows_mode_last_decision_budget_left_and_a_suspension_with_its_way_out() -> None:
    control = {
        "mode": "control", "clock_ts": CLOCK, "cycles": 7,
        "functions": {"capbank": {"mode": "control", "layer": 2, "cadence_s": 60, "devices": [CAP]}},
        "envelope": {
            "functions": {"capbank": "control", "regulator": "monitor"}, "decisions": {"applied": 1},
            "heartbeats": 3, "heartbeat_failures": 0,
            "last_decisions": {"capbank": {"id": "x", "ts": CLOCK - 90, "device": CAP, "rule": "var_lagging",
                                           "verdict": "allowed", "outcome": "readback_failed",
                                           "action": "capbank.close"}},
            "devices": {CAP: {"held": False, "held_since": None, "budgets_left": {"cap_ops_per_day": 3},
                              "budgets": {"cap_ops_per_day": {"left": 3, "limit": 4, "window_s": 86400}},
                              "suspended": {"capbank": {"reason": "readback_failed", "since": CLOCK - 90}}}},
        },
    }  # fmt: skip
    text = status_text({"site": "s", "control": control}, AgentState(True, "running"), CLOCK)
    assert "control: mode control" in text
    assert "regulator    mode monitor  makes no decisions" in text
    assert "last decision 1 min 30 s ago, 2026-06-21 11:58:30Z: rule var_lagging, capbank.close on cap675-ctl " \
           "-> readback_failed" in text  # fmt: skip
    assert "wear left: ops/day 3 of 4" in text
    assert "SUSPENDED capbank since 2026-06-21 11:58:30Z: readback_failed" in text
    assert f"gridedge control clear capbank {CAP}" in text
    json.dumps(control)


def test_the_control_commands_front_the_operator_tool_and_explain_needs_a_running_agent(tmp_path: Path,
                                                                                          capsys) -> None:  # fmt: skip
    from agent.cli import EXIT_NO_STATUS, EXIT_NOT_RUNNING, main

    path = site_file(bench_config(tmp_path), tmp_path / "agent", CONTROL)
    assert main(["control", "list", "--config", str(path)]) == 0
    assert "no suspension, no device held" in capsys.readouterr().out
    assert main(["control", "clear", "--config", str(path), "capbank", CAP, "--by", "j.doe"]) == 1
    assert f"no suspension of capbank on {CAP}" in capsys.readouterr().err
    assert main(["control", "explain", "--config", str(path)]) == EXIT_NO_STATUS
    assert "the agent is not running: it has never run with this store" in capsys.readouterr().err
    status = tmp_path / "agent" / "agent.db.status.json"
    status.write_text(json.dumps({"ts": 1.0, "running": False, "pid": 1}))  # a clean stop long ago
    assert main(["control", "explain", "--config", str(path)]) == EXIT_NOT_RUNNING
    err = capsys.readouterr().err
    assert "the agent is not running, so there is no live snapshot to explain from: NOT RUNNING: stopped" in err
