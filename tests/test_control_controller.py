"""The controller's layers: a slower layer waits for the faster ones to settle, held decisions and repeated
refusals are recorded once, monitor-mode functions do not run; and the pollers follow the agent's clock."""

from __future__ import annotations

import asyncio
import time

from helpers.aio import async_test, until
from helpers.envelope import DEV, Rig

from agent.acquisition import DevicePoller
from agent.config import DeviceConfig
from agent.control.config import FunctionPolicy
from agent.control.controller import Controller
from agent.control.decision import Command, Decision, propose
from agent.control.view import View
from protocols.modbus.registermap import parse_register_map


class Fn:
    """A function proposing ``action`` on ``device`` every cycle (or holding with ``hold_rule``)."""

    def __init__(self, name: str, layer: int, device: str = DEV, *, mode: str = "control", settle_s: float = 60.0,
                 action: str | None = "fake.up", hold_rule: str = "") -> None:  # fmt: skip
        self.name, self.layer, self.device, self.action, self.hold_rule = name, layer, device, action, hold_rule
        self.mode = mode
        self.policy = FunctionPolicy(name, mode, 30.0)
        self.cadence_s, self.settle_s, self.devices = 1.0, settle_s, (device,)
        self.steps = 0
        self.seen: list[Decision] = []

    def step(self, view: View, now: float) -> Decision | None:
        self.steps += 1
        if self.hold_rule:
            return propose(self.name, self.device, self.policy.mode, now, (), self.hold_rule, None)
        if self.action is None:
            return None
        return propose(self.name, self.device, self.policy.mode, now, (view.input("meter.q"),), "rule",
                       Command(self.device, self.action, {"x": 1}))  # fmt: skip

    def after(self, decision: Decision) -> None:
        self.seen.append(decision)


@async_test
async def test_a_slower_layer_waits_until_the_faster_one_has_settled(tmp_path) -> None:
    async with Rig(tmp_path / "a.db", env={"hunting_reversals": 99}) as rig:
        fast = Fn("fast", 1, settle_s=120.0)
        slow = Fn("slow", 2, action=None)
        ctl = Controller([fast, slow], rig.envelope, rig.snapshot, rig.clock)
        rig.fresh()
        (d,) = await ctl.cycle(1)
        assert d.outcome == "applied"
        slow.action = "fake.down"
        rig.clock.t += 60
        rig.fresh()
        (held,) = await ctl.cycle(2)
        assert held.outcome == "held" and held.detail["waiting_for_faster_layers"] == "fast"
        rig.clock.t += 61
        rig.fresh()
        (moved,) = await ctl.cycle(2)
        assert moved.outcome == "applied", "120 s after the fast layer's operation"


@async_test
async def test_held_decisions_and_repeated_refusals_are_recorded_once_with_a_count(tmp_path) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        holding = Fn("holding", 2, "other", hold_rule="inputs_stale")
        ctl = Controller([holding], rig.envelope, rig.snapshot, rig.clock)
        for _ in range(5):
            rig.clock.t += 1
            await ctl.cycle(2)
        assert [d["rule"] for _, d in rig.rows("control")] == ["inputs_stale"]
        rig.actuator.lockout_why = "discharge lockout"
        refusing = Fn("refusing", 2)
        ctl = Controller([refusing], rig.envelope, rig.snapshot, rig.clock)
        for _ in range(4):
            rig.clock.t += 1
            rig.fresh()
            await ctl.cycle(2)
        rig.actuator.lockout_why = None
        rig.clock.t += 1
        rig.fresh()
        await ctl.cycle(2)
        rows = [d for _, d in rig.rows("control") if d["function"] == "refusing"]
        assert [(d["verdict"], d["detail"].get("repeats")) for d in rows] == [
            ("refused:lockout", None), ("allowed", None)]  # fmt: skip
        assert refusing.steps == 5 and len(rig.actuator.executed) == 1


@async_test
async def test_a_function_in_monitor_mode_is_not_run_until_its_mode_is_raised(tmp_path) -> None:
    """Monitor mode makes no decisions; its layer still runs, so a central command raising the mode takes effect."""
    async with Rig(tmp_path / "a.db") as rig:
        fn = Fn("quiet", 2, mode="monitor")
        ctl = Controller([fn], rig.envelope, rig.snapshot, rig.clock)
        assert ctl.layers() == [2] and await ctl.cycle(2) == [] and fn.steps == 0
        rig.fresh()
        ctl.set_mode(fn, "advise")
        assert rig.envelope.policies["quiet"].mode == "advise"
        out = await ctl.cycle(2)
        assert fn.steps == 1 and [d.outcome for d in out] == ["advised"]


@async_test
async def test_a_device_held_by_a_central_command_is_left_alone_by_local_functions(tmp_path) -> None:
    async with Rig(tmp_path / "a.db") as rig:
        fn = Fn("local", 2)
        ctl = Controller([fn], rig.envelope, rig.snapshot, rig.clock)
        rig.fresh()
        ctl.commanded[DEV] = "cmd-1"
        out = await ctl.cycle(2)
        assert [(d.outcome, d.rule, d.detail["command_id"]) for d in out] == [("held", "central_command", "cmd-1")]


MAP = parse_register_map({"name": "m", "points": [{"name": "v", "address": 0, "type": "uint16"}]})


class Transport:
    device = "t"

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def read(self, table, start, count, unit_id):
        self.calls.append(time.monotonic())
        return [1]

    async def close(self) -> None:
        pass


@async_test
async def test_a_poller_on_a_clock_at_speed_polls_its_interval_in_that_clocks_seconds() -> None:
    """poll_interval_s = 2 s of a clock at speed 40: a poll every 50 ms of wall time, readings on that clock."""
    dev = DeviceConfig(name="m", protocol="modbus-tcp", unit_id=1, register_map=MAP, host="x", port=1,
                       poll_interval_s=2.0)  # fmt: skip
    transport = Transport()
    got = []
    poller = DevicePoller(dev, transport, got.extend, lambda: 1_781_956_800.0, speed=40.0)  # type: ignore[arg-type]
    task = asyncio.create_task(poller.run())
    await until(lambda: len(transport.calls) >= 3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # at speed 1 the third poll would be over 2 s after the first (the first at once, then one per 2-s slot of
    # the grid): three polls within 2 s are the speed at work (0.1 s apart at most here, unloaded)
    assert transport.calls[2] - transport.calls[0] < 2.0, transport.calls
    assert got and {r.ts for r in got} == {1_781_956_800.0}
