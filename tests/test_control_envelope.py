"""The safety envelope in isolation: every check, in its order, on a real SQLite store with a fake actuator.

The integration tests with the bench's real devices are in tests/test_control_bench.py; here each check is made to
fire alone (and, where it matters, together with a later one, to pin the order).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers.aio import async_test
from helpers.envelope import DEV, Rig

from agent.control.actuators import Result
from agent.control.decision import Input
from agent.points import Quality
from agent.store import ControlFlag

ROOT = Path(__file__).resolve().parents[1]


# ---- 1. mode -----------------------------------------------------------------------------------------------


@async_test
async def test_monitor_mode_makes_no_decision_and_writes_nothing(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db", mode="monitor") as rig:
        d = await rig.submit()
        assert (d.verdict, d.outcome) == ("refused:monitor", "refused")
        assert rig.actuator.executed == [] and rig.rows("control") == []


@async_test
async def test_advise_mode_records_and_sends_the_decision_and_writes_nothing(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db", mode="advise", ops_per_day=1) as rig:
        d = await rig.submit()
        assert (d.verdict, d.outcome, d.detail["would"]) == ("advise", "advised", "allowed")
        assert rig.actuator.executed == []
        ((kind, data),) = rig.rows("control")
        assert kind == "control_decision" and data["id"] == d.id and data["outcome"] == "advised"


@async_test
async def test_a_function_in_advise_under_a_global_control_is_advise_and_the_reverse_too(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db", mode="control") as rig:
        d = await rig.submit(mode="advise")
        assert d.outcome == "advised" and rig.actuator.executed == []
    async with Rig(tmp_path / "b.db", mode="advise") as rig:
        d = await rig.submit(mode="control")
        assert d.outcome == "advised", "a function's mode is never above the global one"


# ---- 2. suspension -------------------------------------------------------------------------------------------


@async_test
async def test_a_suspended_function_is_refused_before_any_other_check(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        await rig.store.control_set_flag(ControlFlag("suspended", "fn", DEV, rig.clock.t - 10, "readback_failed", {}))
        rig.set("meter.q", 1.0, age_s=999.0)  # stale as well: suspension comes first
        d = await rig.envelope.submit(rig.decision())
        assert d.reason == "suspended" and d.detail["suspended_for"] == "readback_failed"
        assert rig.actuator.executed == []
        other = await rig.submit(function="other")
        assert other.outcome == "applied", "suspended for that function only"


# ---- 3. interlocks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "value", "age_s", "quality", "reason"),
    [
        ("meter.v_a", 2450.0, 60.0, Quality.GOOD, "interlock_inputs_stale"),
        ("relay.relay_state", 0, 0.0, Quality.STALE, "interlock_inputs_stale"),
        ("relay.relay_state", 3, 0.0, Quality.GOOD, "relay_tripped"),
        ("relay.breaker_closed", False, 0.0, Quality.GOOD, "relay_tripped"),
        ("relay.relay_state", 4, 0.0, Quality.GOOD, "relay_lockout"),
        ("relay.lockout", True, 0.0, Quality.GOOD, "relay_lockout"),
        ("meter.q", 1.2e6, 31.0, Quality.GOOD, "stale_inputs"),
        ("meter.q", 1.2e6, 0.0, Quality.INVALID, "stale_inputs"),
        ("dev.mode", 1, 45.0, Quality.GOOD, "device_state_stale"),
    ],
)
@async_test
async def test_an_interlock_refuses_and_nothing_is_written(
    tmp_path: Path, point: str, value: object, age_s: float, quality: Quality, reason: str
) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        rig.set(point, value, age_s=age_s, quality=quality)
        d = await rig.envelope.submit(rig.decision())
        assert d.reason == reason, d
        assert rig.actuator.executed == []


@async_test
async def test_a_dead_feeder_refuses_every_command(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        for p in "abc":
            rig.set(f"meter.v_{p}", 300.0)  # 0.12 pu: the head is open
        d = await rig.envelope.submit(rig.decision())
        assert d.reason == "feeder_dead" and d.detail["dead_below_pu"] == 0.5
        rig.set("meter.v_b", 2400.0)  # one phase alive: not dead
        assert (await rig.envelope.submit(rig.decision())).outcome == "applied"


@async_test
async def test_a_missing_decision_input_is_stale(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        d = await rig.envelope.submit(rig.decision(inputs=(Input("meter.nothing", None, None, None, "missing"),)))
        assert d.reason == "stale_inputs" and d.detail["points"] == ["meter.nothing"]


@async_test
async def test_a_device_taken_back_while_held_releases_it_and_suspends_the_function(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        assert (await rig.submit()).outcome == "applied"
        assert rig.envelope.held(DEV) is not None
        rig.clock.t += 100
        rig.actuator.local_why = "taken back to local automatic while the agent held it in remote"
        d = await rig.submit("fake.down")
        assert d.reason == "device_local"
        assert rig.envelope.held(DEV) is None and rig.envelope.suspension("fn", DEV) is not None
        assert rig.actuator.handed_back == [], "it is already back: nothing is written"
        assert [k for k, _ in rig.rows("events")] == ["control_device_taken_back"]


# ---- 4. bounds -------------------------------------------------------------------------------------------------


@async_test
async def test_an_action_the_device_does_not_have_is_out_of_bounds(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        d = await rig.submit("fake.sideways")
        assert d.reason == "bounds" and "fake.sideways" in d.detail["why"]


# ---- 5. rate limit -----------------------------------------------------------------------------------------------


@async_test
async def test_commands_closer_than_the_minimum_interval_are_refused(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db", env={"min_command_interval_s": 30.0}) as rig:
        assert (await rig.submit()).outcome == "applied"
        rig.clock.t += 29.0
        d = await rig.submit("fake.down")
        assert d.reason == "rate_limit" and d.detail["since_last_s"] == 29.0
        rig.clock.t += 1.0
        assert (await rig.submit("fake.down")).outcome == "applied"


@async_test
async def test_at_most_n_commands_an_hour(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db", env={"max_commands_per_hour": 3, "hunting_reversals": 99}) as rig:
        for _ in range(3):
            assert (await rig.submit()).outcome == "applied"
            rig.clock.t += 60
        d = await rig.submit()
        assert d.reason == "rate_limit" and d.detail["in_last_hour"] == 3
        rig.clock.t += 3600 - 180 + 1
        assert (await rig.submit()).outcome == "applied"


@async_test
async def test_a_device_refusal_backs_off_instead_of_retrying(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        rig.actuator.results = [Result("refused", {"last_result": 14}, {"exception": 6, "result": "LOCKOUT"})] * 2
        d = await rig.submit()
        assert (d.verdict, d.outcome) == ("refused:device_refused:6", "refused")
        assert d.detail["result"] == "LOCKOUT"
        rig.clock.t += 30
        again = await rig.submit()
        assert again.reason == "rate_limit" and again.detail["after_device_refusal"] is True
        assert len(rig.actuator.executed) == 1, "one write, not a retry storm"
        rig.clock.t += 31
        assert (await rig.submit()).reason == "device_refused:6"
        rig.clock.t += 61
        assert (await rig.submit()).reason == "rate_limit", "the back-off doubled: 120 s"
        assert await rig.store.control_ops(0.0) == [], "a refused command wore nothing"


# ---- 6. wear budgets ----------------------------------------------------------------------------------------------


@async_test
async def test_a_spent_budget_refuses_with_one_event_and_what_is_left_is_reported(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db", ops_per_day=2, env={"hunting_reversals": 99}) as rig:
        first = await rig.submit()
        assert first.outcome == "applied" and first.budgets_left == {"ops_per_day": 1}
        rig.clock.t += 60
        assert (await rig.submit("fake.down")).budgets_left == {"ops_per_day": 0}
        for _ in range(2):
            rig.clock.t += 60
            d = await rig.submit()
            assert d.reason == "budget:ops_per_day" and d.detail["left"] == 0 and d.budgets_left == {"ops_per_day": 0}
        assert [k for k, _ in rig.rows("events")] == ["control_budget_spent"], "one event, not one per refusal"
        assert rig.envelope.status()["devices"][DEV]["budgets_left"] == {"ops_per_day": 0}
        rig.clock.t += 86_400
        assert (await rig.submit()).outcome == "applied", "the window moved on"


# ---- 7. minimum dwell ---------------------------------------------------------------------------------------------


@async_test
async def test_the_minimum_dwell_holds_the_device_in_its_position(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db", min_dwell_s=600.0) as rig:
        assert (await rig.submit()).outcome == "applied"
        rig.clock.t += 599
        d = await rig.submit("fake.down")
        assert d.reason == "dwell" and d.detail["min_dwell_s"] == 600.0
        rig.clock.t += 1
        assert (await rig.submit("fake.down")).outcome == "applied"


# ---- 8. device lockouts ----------------------------------------------------------------------------------------


@async_test
async def test_the_devices_own_lockout_refuses(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        rig.actuator.lockout_why = "discharge lockout (240 s left)"
        d = await rig.submit()
        assert d.reason == "lockout" and "240 s" in d.detail["why"] and rig.actuator.executed == []


# ---- 9. hunting -----------------------------------------------------------------------------------------------------


@async_test
async def test_hunting_freezes_the_device_for_the_function_alarms_and_hands_it_back(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db", env={"hunting_reversals": 3, "hunting_window_s": 3600.0}) as rig:
        for action in ("fake.up", "fake.down", "fake.up"):  # two reversals
            assert (await rig.submit(action)).outcome == "applied"
            rig.clock.t += 300
        d = await rig.submit("fake.down")  # the third
        assert d.reason == "hunting" and d.detail["reversals"] == 3
        assert len(rig.actuator.executed) == 3
        assert rig.envelope.suspension("fn", DEV) is not None
        assert rig.actuator.handed_back == [{"mode": "remote"}] and rig.envelope.held(DEV) is None
        kinds = [k for k, _ in rig.rows("events")]
        assert kinds == ["control_hunting"]
        outcomes = [data["outcome"] for _, data in rig.rows("control")]
        assert outcomes == ["applied"] * 3 + ["reverted", "refused"], "the hand-back is a decision of its own"
        rig.clock.t += 7200
        assert (await rig.submit()).reason == "suspended", "frozen until an operator clears it"
        assert await rig.envelope.clear("fn", DEV)
        assert (await rig.submit()).outcome == "applied"


@async_test
async def test_a_function_with_its_own_hunting_limit_is_judged_by_it(tmp_path: Path) -> None:
    """CVR follows the clouds: its own limit (here 5) applies to its commands, not the envelope's 3."""
    env = {"hunting_reversals": 3, "hunting_window_s": 3600.0}
    async with Rig(tmp_path / "a.db", env=env, hunting_reversals=5) as rig:
        for action in ("fake.up", "fake.down", "fake.up", "fake.down", "fake.up"):  # four reversals
            assert (await rig.submit(action)).outcome == "applied"
            rig.clock.t += 300
        d = await rig.submit("fake.down")  # the fifth
        assert d.reason == "hunting" and d.detail["reversals"] == 5 and d.detail["limit"] == 5


@async_test
async def test_the_same_direction_again_is_no_reversal(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db", env={"hunting_reversals": 2}) as rig:
        for _ in range(4):
            assert (await rig.submit("fake.up")).outcome == "applied"
            rig.clock.t += 10


# ---- the write and its readback ----------------------------------------------------------------------------------------


@async_test
async def test_an_applied_command_is_an_operation_a_held_device_and_a_recent_action(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        d = await rig.submit()
        assert (d.verdict, d.outcome, dict(d.readback or {})) == ("allowed", "applied", {"position": 1})
        (op,) = await rig.store.control_ops(0.0)
        assert (op.device, op.function, op.action, op.direction, op.costs, op.decision_id) == (
            DEV, "fn", "fake.up", 1, {"ops": 1}, d.id)  # fmt: skip
        held = rig.envelope.held(DEV)
        assert held is not None and held.data == {"mode": "remote"}
        assert rig.actions.match(rig.clock.t + 5).id == d.id


@async_test
async def test_a_write_counts_as_written_until_it_and_its_readback_end(tmp_path: Path) -> None:
    """A write waits for the poll read in progress on its link and reads itself back: it lasts. A reading stamped
    within that time may hold the value from before the write, so what the device was written "until" is the
    write's end, not the moment it was decided (the operation's time, which the budgets count)."""
    async with Rig(tmp_path / "a.db") as rig:
        assert rig.envelope.written_until(DEV) is None
        plain = rig.actuator.carry_out

        async def slow(*args: object, **kw: object) -> Result:
            await rig.clock.sleep(2.5)  # waiting for the link, the write, the readback
            return await plain(*args, **kw)  # type: ignore[arg-type]

        rig.actuator.carry_out = slow  # type: ignore[method-assign]
        decided = rig.clock.t
        d = await rig.submit()
        assert d.outcome == "applied" and rig.envelope.last_operation([DEV]) == decided
        assert rig.envelope.written_until(DEV) == decided + 2.5
        rig.clock.t += 100
        refused = await rig.submit(mode="monitor")  # not carried out: the device was not written again
        assert refused.outcome == "refused" and rig.envelope.written_until(DEV) == decided + 2.5


@async_test
async def test_a_readback_mismatch_alarms_hands_back_and_suspends(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        rig.actuator.results = [Result("readback_failed", {"position": 0}, held={"mode": "remote"})]
        d = await rig.submit()
        assert (d.verdict, d.outcome) == ("allowed", "readback_failed")
        assert rig.actuator.handed_back == [{"mode": "remote"}] and rig.envelope.held(DEV) is None
        s = rig.envelope.suspension("fn", DEV)
        assert s is not None and s.reason == "readback_failed"
        assert [k for k, _ in rig.rows("events")] == ["control_readback_failed"]
        rig.clock.t += 600
        assert (await rig.submit()).reason == "suspended"


@async_test
async def test_a_device_that_stops_answering_mid_command_is_handed_back_without_suspension(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        rig.actuator.results = [Result("failed", {}, {"error": "no answer"}, held={"mode": "remote"})]
        d = await rig.submit()
        assert d.outcome == "failed"
        assert rig.actuator.handed_back == [{"mode": "remote"}]
        assert rig.envelope.suspension("fn", DEV) is None
        assert [k for k, _ in rig.rows("events")] == ["control_command_failed"]


@async_test
async def test_a_failed_hand_back_keeps_the_device_held_and_alarms(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        await rig.submit()
        rig.actuator.handback_result = Result("failed", {}, {"error": "no answer"}, held={"mode": "remote"})
        (d,) = await rig.envelope.hand_back_all()
        assert d.outcome == "failed" and rig.envelope.held(DEV) is not None
        assert [k for k, _ in rig.rows("events")] == ["control_handback_failed"]


# ---- persisted state -------------------------------------------------------------------------------------------------


@async_test
async def test_a_spent_budget_and_a_suspension_survive_a_restart_of_the_envelope(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "a.db", ops_per_day=1)
    await rig.open()
    assert (await rig.submit()).outcome == "applied"
    await rig.store.control_set_flag(ControlFlag("suspended", "other", DEV, rig.clock.t, "hunting", {}))
    await rig.close()
    rig.clock.t += 3600
    await rig.open()  # a new envelope, a new store connection, the same file
    try:
        d = await rig.submit()
        assert d.reason == "budget:ops_per_day" and d.budgets_left == {"ops_per_day": 0}
        assert (await rig.submit(function="other")).reason == "suspended"
    finally:
        await rig.close()


@async_test
async def test_a_device_a_previous_run_held_is_handed_back_when_the_envelope_starts(tmp_path: Path) -> None:
    import asyncio

    rig = Rig(tmp_path / "a.db")
    await rig.open()
    await rig.submit()
    await rig.close()  # the agent died holding the device
    await rig.open()
    try:
        task = asyncio.create_task(rig.envelope.run())
        while rig.envelope.held(DEV) is not None or not rig.actuator.handed_back:
            await asyncio.sleep(0.01)
        task.cancel()
        assert rig.actuator.handed_back == [{"mode": "remote"}]
        assert (await rig.store.control_flags("taken")) == []
        ((_, data),) = [r for r in rig.rows("control") if r[1]["rule"] == "handback:agent_start"]
        assert data["outcome"] == "reverted"
    finally:
        await rig.close()


@async_test
async def test_a_held_device_gets_its_heartbeat(tmp_path: Path) -> None:
    import asyncio

    async with Rig(tmp_path / "a.db") as rig:
        task = asyncio.create_task(rig.envelope.run())
        await asyncio.sleep(0.05)
        await rig.submit()
        beats = rig.actuator.beats
        while rig.actuator.beats < beats + 3:
            await asyncio.sleep(0.001)
        task.cancel()
        assert rig.envelope.heartbeats >= 3


# ---- structure: the envelope is the only way to a device ----------------------------------------------------------------

ACTUATOR_CALLS = {"carry_out", "hand_back", "heartbeat"}
DEVICE_WRITES = {"write_registers", "write_coil"}


def _calls(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}


def _device_writes_outside_links(path: Path) -> set[str]:
    """Device writes made anywhere but in a link class (``...Link``) or a transport wrapper (``...Transport``)
    that forwards a link's request."""
    tree = ast.parse(path.read_text())
    bad: set[str] = set()

    def visit(node: ast.AST, owner: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.ClassDef) else owner
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                    and child.func.attr in DEVICE_WRITES and not name.endswith(("Link", "Transport"))):  # fmt: skip
                bad.add(f"{child.func.attr} in {name or 'module'}")
            visit(child, name)

    visit(tree, "")
    return bad


def test_only_the_envelope_calls_an_actuator_and_only_links_write_to_a_device() -> None:
    """Actuators are carried out by the envelope alone; a device register is written by the links alone
    (and the bench's own simulator, which is the device)."""
    offenders: dict[str, set[str]] = {}
    for path in sorted((ROOT / "agent").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        calls = _calls(path)
        bad = set()
        if rel not in ("agent/control/envelope.py", "agent/control/actuators.py"):
            bad |= calls & ACTUATOR_CALLS
        bad |= _device_writes_outside_links(path)
        if rel not in ("agent/control/actuators.py", "agent/devicelink.py") and "write" in calls:
            # a ".write(" call elsewhere must not be on a link: only the actuators hold links
            src = path.read_text()
            if "link.write(" in src:
                bad.add("link.write")
        if bad:
            offenders[rel] = bad
    assert offenders == {}


ACTUATOR_MODULES = ("agent.control.actuators", "agent.control.inverter")


def test_actuators_are_imported_only_by_the_envelope_and_the_composition_root() -> None:
    importers = set()
    for path in sorted((ROOT / "agent").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module in ACTUATOR_MODULES:
                importers.add(f"{path.relative_to(ROOT)}<-{n.module}")
    # an actuator module may build on the base (agent/control/inverter.py: the DER actuator)
    allowed = {f"{m}<-{a}" for m in ("agent/control/envelope.py", "agent/service.py", "agent/control/wiring.py")
               for a in ACTUATOR_MODULES} | {"agent/control/inverter.py<-agent.control.actuators"}  # fmt: skip
    assert importers <= allowed
