"""The actuators against the bench's own controller models served over real Modbus TCP, stepped on a simulated
clock: the command as the manual asks, its readback, its refusal with the device's reason, the hand-back."""

from __future__ import annotations

import asyncio

from helpers.aio import async_test
from helpers.devicerigs import capbank_rig, regulator_rig

from agent.control.actuators import CapBankActuator, RegulatorActuator
from agent.control.decision import Command
from agent.control.view import View
from agent.devicelink import RegisterMapLink
from agent.points import Reading
from sim_hw.devices.capbank import Mode, Result
from sim_hw.devices.regulator import Mode as RegMode


async def stepping(rig, stop: asyncio.Event) -> None:
    await rig.run(stop, period_s=0.002)


def cap_actuator(rig, **kw) -> CapBankActuator:
    return CapBankActuator(RegisterMapLink(rig.device(), rig.transport()), rig.clock, ops_per_day=4, **kw)


@async_test
async def test_a_close_takes_the_bank_to_remote_selects_operates_and_reads_it_back() -> None:
    async with capbank_rig(closed=False, mode="local_auto") as rig:
        act = cap_actuator(rig)
        stop = asyncio.Event()
        task = asyncio.create_task(stepping(rig, stop))
        try:
            result = await act.carry_out(Command("cap", "capbank.close", {"action": 1}), None, 30.0)
        finally:
            stop.set()
            await task
        assert result.status == "applied" and result.held == {"mode": "remote"}
        assert result.readback["closed"] == 1
        assert rig.model.closed and rig.model.mode is Mode.REMOTE and rig.model.operation_count == 1
        await act.link.close()


@async_test
async def test_a_refused_close_reports_the_exception_and_the_devices_reason() -> None:
    async with capbank_rig(closed=True) as rig:
        rig.model._pending = None
        act = cap_actuator(rig)
        stop = asyncio.Event()
        task = asyncio.create_task(stepping(rig, stop))
        try:
            opened = await act.carry_out(Command("cap", "capbank.open", {"action": 2}), None, 30.0)
            assert opened.status == "applied"
            refused = await act.carry_out(Command("cap", "capbank.close", {"action": 1}), opened.held, 30.0)
        finally:
            stop.set()
            await task
        assert refused.status == "refused"
        assert (refused.detail["exception"], refused.detail["result"]) == (6, "LOCKOUT")
        assert not rig.model.closed and rig.model.last_result is Result.LOCKOUT
        await act.link.close()


@async_test
async def test_a_bank_that_accepts_and_never_switches_fails_its_readback() -> None:
    async with capbank_rig(closed=False) as rig:
        rig.ignore_operates = True
        act = cap_actuator(rig)
        stop = asyncio.Event()
        task = asyncio.create_task(stepping(rig, stop))
        try:
            result = await act.carry_out(Command("cap", "capbank.close", {"action": 1}), None, 5.0)
        finally:
            stop.set()
            await task
        assert result.status == "readback_failed" and result.readback["closed"] == 0
        assert result.held == {"mode": "remote"}, "it was taken to remote: the envelope must hand it back"
        await act.link.close()


@async_test
async def test_the_hand_back_puts_the_bank_in_local_automatic_and_the_heartbeat_writes_its_register() -> None:
    async with capbank_rig(closed=True) as rig:
        act = cap_actuator(rig, heartbeat_point="auto_delay_s")  # a writable register standing in for one
        act._beat = 99  # the counter's next value, 100, is a delay the register takes
        stop = asyncio.Event()
        task = asyncio.create_task(stepping(rig, stop))
        try:
            assert await act.heartbeat()
            result = await act.hand_back({"mode": "remote"}, 10.0)
        finally:
            stop.set()
            await task
        assert result.status == "applied" and result.released and result.held is None
        assert rig.model.mode is Mode.LOCAL_AUTO
        assert rig.model.auto_delay_s == 100 and act.heartbeats == 1
        await act.link.close()


def test_the_cap_bank_checks_read_the_snapshot() -> None:
    class NoLink:
        device = "cap"

    act = CapBankActuator(NoLink(), None, ops_per_day=4)  # type: ignore[arg-type]
    now = 1000.0
    snap = {p: Reading(p, now, v, "") for p, v in
            (("cap.closed", True), ("cap.lockout_active", True), ("cap.lockout_remaining_s", 120), ("cap.mode", 1))}  # fmt: skip
    view = View(snap, now)
    close, open_ = Command("cap", "capbank.close", {"action": 1}), Command("cap", "capbank.open", {"action": 2})
    assert act.bounds(close, view) == "already_in_position: the bank is closed"
    assert act.bounds(open_, view) is None
    assert act.lockout(close, view) == "discharge lockout (120 s left)" and act.lockout(open_, view) is None
    assert (act.direction(close, view), act.direction(open_, view)) == (1, -1)
    assert act.local_state(view, None) is None, "local automatic is its autonomous state: ours to take"
    assert act.local_state(view, {"mode": "remote"}) is not None, "taken back while we held it"
    assert act.state_points() == ("cap.mode", "cap.closed", "cap.lockout_active")


def reg_actuator(rig) -> RegulatorActuator:
    return RegulatorActuator(RegisterMapLink(rig.device(), rig.transport()), rig.clock, band_center_v=(118.0, 124.0),
                             bandwidth_v=(1.5, 3.0), max_tap_step=2, taps_per_day=60, setpoint_changes_per_hour=6)  # fmt: skip


@async_test
async def test_the_regulator_band_centre_is_read_back_and_handed_back_to_the_panel_value() -> None:
    async with regulator_rig() as rig:
        act = reg_actuator(rig)
        stop = asyncio.Event()
        task = asyncio.create_task(stepping(rig, stop))
        try:
            result = await act.carry_out(Command("reg", "regulator.band_center", {"band_center_v": 119.5}), None, 10.0)
            assert result.status == "applied" and result.held is not None
            assert result.held["panel_band_center_v"] == 122.0 and rig.model.settings["band_center_v"] == 119.5
            back = await act.hand_back(result.held, 10.0)
        finally:
            stop.set()
            await task
        assert back.released and rig.model.settings["band_center_v"] == 122.0
        assert rig.model.mode is RegMode.AUTOMATIC
        await act.link.close()


@async_test
async def test_manual_taps_move_one_step_per_delay_to_their_targets_and_are_read_back() -> None:
    async with regulator_rig() as rig:
        act = reg_actuator(rig)
        taps = {f"tap_{p}": t + 1 for p, t in zip("abc", rig.model.taps, strict=True)}
        stop = asyncio.Event()
        task = asyncio.create_task(stepping(rig, stop))
        try:
            result = await act.carry_out(Command("reg", "regulator.taps", taps), None, 30.0)
            back = await act.hand_back(result.held, 10.0)
        finally:
            stop.set()
            await task
        assert result.status == "applied" and result.held["held_mode"] == 0
        assert [result.readback[f"tap_{p}"] for p in "abc"] == list(taps.values())
        assert back.released and rig.model.mode is RegMode.AUTOMATIC
        await act.link.close()


def test_the_regulator_bounds_cost_and_direction_read_the_snapshot() -> None:
    class NoLink:
        device = "reg"

    act = RegulatorActuator(NoLink(), None, band_center_v=(118.0, 124.0), bandwidth_v=(1.5, 3.0), max_tap_step=1,  # type: ignore[arg-type]
                            taps_per_day=60, setpoint_changes_per_hour=6)  # fmt: skip
    snap = {p: Reading(p, 0.0, v, "") for p, v in
            (("reg.tap_a", 5), ("reg.tap_b", 4), ("reg.tap_c", 5), ("reg.band_center_v", 122.0), ("reg.mode", 1))}  # fmt: skip
    view = View(snap, 1.0)
    low = Command("reg", "regulator.band_center", {"band_center_v": 117.0})
    assert "must be in 118..124" in (act.bounds(low, view) or "")
    ok = Command("reg", "regulator.band_center", {"band_center_v": 120.0})
    assert (
        act.bounds(ok, view) is None and act.direction(ok, view) == -1 and act.cost(ok, view) == {"setpoint_changes": 1}
    )
    up = Command("reg", "regulator.taps", {"tap_a": 6, "tap_b": 5, "tap_c": 6})
    assert act.bounds(up, view) is None and act.direction(up, view) == 1 and act.cost(up, view) == {"taps": 3}
    jump = Command("reg", "regulator.taps", {"tap_a": 7, "tap_b": 4, "tap_c": 5})
    assert "at most 1 step" in (act.bounds(jump, view) or "")
    assert act.local_state(View({**snap, "reg.mode": Reading("reg.mode", 0.0, 0, "")}, 1.0), None) == \
        "in manual, not by the agent"  # fmt: skip
