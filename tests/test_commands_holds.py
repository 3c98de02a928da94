"""What a command holds in force on the bench, and how it ends: a switched cap bank handed back when its time runs
out, a schedule's steps and its end, a link to central lost longer than the site allows, ``revert.all``, modes.

Judged at the bench: the cap bank controller's model (position, remote or local automatic), the inverter's
settings, and the bench's truth log (pv675's output, on the simulated clock). The agent's clock is the bench's.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from helpers.aio import async_test, until
from helpers.commandrig import command_site
from helpers.controlbench import CAP
from helpers.derrig import DEV

from sim_hw.devices.capbank import Mode
from sim_hw.truthlog import read_records

pytestmark = pytest.mark.integration

LIMIT, LIMIT_ENA = "DERCtlAC.WMaxLimPct", "DERCtlAC.WMaxLimPctEna"


async def _ready(s) -> None:
    await until(lambda: s.agent.snapshot.get(f"{DEV}.{LIMIT_ENA}") is not None, timeout=30)
    await until(lambda: s.agent.snapshot.get(f"{CAP}.closed") is not None, timeout=30)


@async_test
async def test_a_switched_bank_is_held_from_local_control_and_handed_back_when_its_time_runs_out(
    tmp_path, broker
) -> None:
    async with command_site(tmp_path, broker) as s:
        await _ready(s)
        cap = s.bench.model_of(CAP)
        was_closed = cap.closed
        kind = "capbank.open" if was_closed else "capbank.close"
        cmd = s.command(kind, CAP, {"until": s.now() + 60})
        await s.send(cmd)
        res = await s.wait_result(cmd.command_id)
        assert res.status == "applied", res
        assert cap.closed is (not was_closed) and cap.mode is Mode.REMOTE
        assert res.readback["closed"] == int(not was_closed)
        assert s.agent.control.controller.commanded == {CAP: cmd.command_id}
        await until(lambda: cap.mode is Mode.LOCAL_AUTO, timeout=20)  # 60 simulated s at 20x, then the hand-back
        assert s.agent.control.controller.commanded == {}
        await until(lambda: any(a["what"] == "override_ended" for a in s.audit()), timeout=10)  # stored after the write
        ended = [a for a in s.audit() if a["what"] == "override_ended"]
        assert [(a["command_id"], a["reason"]) for a in ended] == [(cmd.command_id, "expired")]
        handbacks = [d for d in s.agent.decisions() if d["rule"] == "handback:command_expired"]
        assert handbacks and handbacks[-1]["outcome"] == "reverted"


@async_test
async def test_a_set_point_too_soon_after_the_last_write_is_applied_once_the_interval_has_passed(
    tmp_path, broker
) -> None:
    """min_command_interval_s = 30 (1.5 s of wall time at 20x): a second set point right after the first is first
    refused by the rate limit, then, the interval passed, written and read back: the command is applied, and the
    two writes are at least the interval apart on the bench's clock."""
    async with command_site(tmp_path, broker, min_interval_s=30) as s:
        await _ready(s)
        inv = s.bench.model_of(DEV)
        first = s.command("der.setpoint", DEV, {"p_limit_pct": 40, "until": s.now() + 600})
        await s.send(first)
        assert (await s.wait_result(first.command_id)).status == "applied"
        second = s.command("der.setpoint", DEV, {"p_limit_pct": 30, "until": s.now() + 600})
        await s.send(second)
        res = await s.wait_result(second.command_id)
        assert res.status == "applied", res
        assert inv.settings[LIMIT] == pytest.approx(30.0)
        mine = [d for d in s.agent.decisions() if d.get("detail", {}).get("command_id") == second.command_id]
        assert [d["outcome"] for d in mine] == ["refused", "applied"]
        assert mine[0]["verdict"] == "refused:rate_limit"
        assert mine[1]["ts"] - mine[0]["ts"] <= 30.5


@async_test
async def test_revert_all_ends_every_hold_and_mode_change(tmp_path, broker) -> None:
    async with command_site(tmp_path, broker) as s:
        await _ready(s)
        inv, cap = s.bench.model_of(DEV), s.bench.model_of(CAP)
        sp = s.command("der.setpoint", DEV, {"p_limit_pct": 40, "until": s.now() + 3600})
        sw = s.command("capbank.open" if cap.closed else "capbank.close", CAP, {"until": s.now() + 3600})
        mode = s.command("control.mode", "*", {"mode": "advise"})
        for c in (sp, sw, mode):
            await s.send(c)
            assert (await s.wait_result(c.command_id)).status == "applied"
        assert inv.settings[LIMIT_ENA] == 1 and s.agent.control.envelope.mode == "advise"
        assert set(s.service.executor.slots) == {f"der:{DEV}:setpoint", f"device:{CAP}", "mode:*"}
        rv = s.command("revert.all", "*")
        await s.send(rv)
        res = await s.wait_result(rv.command_id)
        assert res.status == "applied" and sorted(res.readback["ended"]) == sorted(
            [f"der:{DEV}:setpoint", f"device:{CAP}", "mode:*"]
        )
        assert s.service.executor.slots == {}
        assert s.agent.control.envelope.mode == "control", "the site file's mode again"
        assert cap.mode is Mode.LOCAL_AUTO, "the bank back to its own automatic control"
        await until(lambda: inv.settings[LIMIT_ENA] == 0, timeout=20)  # the group's own: no limit


@async_test
async def test_a_mode_command_cannot_raise_the_site_above_its_site_file(tmp_path, broker) -> None:
    async with command_site(tmp_path, broker) as s:
        await _ready(s)
        down = s.command("control.mode", "*", {"mode": "monitor"})
        await s.send(down)
        assert (await s.wait_result(down.command_id)).status == "applied"
        sw = s.command("capbank.close", CAP, {"until": s.now() + 600})
        await s.send(sw)
        res = await s.wait_result(sw.command_id)
        assert (res.status, res.reason) == ("refused", "monitor"), "monitor mode writes nothing, a command neither"
        up = s.command("control.mode", "capbank", {"mode": "control"})
        await s.send(up)
        res = await s.wait_result(up.command_id)
        assert res.status == "applied" and res.readback["modes"] == {"capbank": "monitor"}, "capped by the site's"
        # the site file says control: raising the site back to it is allowed
        back = s.command("control.mode", "*", {"mode": "control"})
        await s.send(back)
        assert (await s.wait_result(back.command_id)).status == "applied"
        assert s.agent.control.envelope.mode == "control"


def _pv_kw(truth, since: float) -> list[tuple[float, float]]:
    return [(r["ts"], r["pv"][DEV][0]) for r in read_records(truth) if r["record"] == "step" and r["ts"] >= since]


@async_test
async def test_a_schedule_steps_then_returns_the_inverter_to_its_fallback_at_its_end(tmp_path, broker) -> None:
    """Two 5-minute steps (60 % then 40 % of rated power) from the current boundary; at the end the limit is off
    again. Measured from the bench's truth log: pv675's output under each step, and back above the last step's
    limit after the end."""
    truth = tmp_path / "truth.jsonl"
    async with command_site(tmp_path, broker, speed=40.0, truth=truth) as s:
        await _ready(s)
        inv = s.bench.model_of(DEV)
        rated = inv.kw
        start = math.floor(s.now() / 300) * 300
        end = start + 600
        sched = s.command("schedule.load", DEV, {"schedule_id": "pv-cap-1", "quantity": "p_limit_pct", "step_s": 300,
                                                 "start": start, "values": [60, 40], "fallback": "autonomous"},
                          key="dispatch-1")  # fmt: skip
        await s.send(sched)
        res = await s.wait_result(sched.command_id)
        assert res.status == "applied" and res.readback["end"] == end
        await until(lambda: inv.settings[LIMIT_ENA] == 1 and inv.settings[LIMIT] == pytest.approx(60), timeout=20)
        await until(lambda: inv.settings[LIMIT] == pytest.approx(40), timeout=30)
        await until(lambda: inv.settings[LIMIT_ENA] == 0, timeout=30)
        off_at = s.now()
        await asyncio.sleep(1.0)
    steps = _pv_kw(truth, start)
    in_second = [kw for ts, kw in steps if start + 300 + 60 <= ts < end]
    after = [kw for ts, kw in steps if ts > off_at + 30]
    assert in_second and max(in_second) <= 0.40 * rated * 1.02, "the second step's limit held at the inverter"
    assert after and max(after) > 0.40 * rated * 1.05, "back to full output after the end"
    print(f"\nschedule end {end:.0f}: limit off at {off_at - end:+.1f} s (agent clock); pv675 {max(in_second):.1f} kW "
          f"under the 40 % step, {max(after):.1f} kW after (rated {rated:g} kW)")  # fmt: skip
    assert off_at - end <= 60, "the fallback came within a minute of the schedule's end"
    audit = [a["what"] for a in s.audit()]
    assert audit.count("schedule_step") >= 2 and "override_ended" in audit


@async_test
async def test_a_link_to_central_lost_longer_than_allowed_returns_devices_to_their_fallback(tmp_path, broker) -> None:
    """link_loss_s = 120: central (the broker) goes away; within the limit nothing changes, past it every command
    hold ends: the inverter's limit off, and its output back up in the bench's truth log; an event says so."""
    truth = tmp_path / "truth.jsonl"
    async with command_site(tmp_path, broker, link_loss_s=120, truth=truth) as s:
        await _ready(s)
        inv = s.bench.model_of(DEV)
        rated = inv.kw
        sp = s.command("der.setpoint", DEV, {"p_limit_pct": 30, "until": s.now() + 7200})
        await s.send(sp)
        assert (await s.wait_result(sp.command_id)).status == "applied"
        broker.kill()
        lost_at = s.now()
        await until(lambda: s.service.link_lost, timeout=30)
        fallback_at = s.now()
        await until(lambda: inv.settings[LIMIT_ENA] == 0, timeout=20)
        off_at = s.now()
        print(f"\nlink lost: fallback after {fallback_at - lost_at:.0f} s (limit {120} s), limit off at the inverter "
              f"{off_at - lost_at:.0f} s after the broker died")  # fmt: skip
        assert fallback_at - lost_at >= 120 - 5, "not before the site's limit (less the last ack's age)"
        assert any(k == "commands_link_loss_fallback" for k, _ in s.agent.events())
        assert s.service.executor.slots == {}
        await asyncio.sleep(1.5)  # 30 simulated s of output after the fallback
        broker.start()
    limited = [kw for ts, kw in _pv_kw(truth, lost_at + 30) if ts < fallback_at - 5]  # after the ramp down
    after = [kw for ts, kw in _pv_kw(truth, off_at + 10)]
    assert limited and max(limited) <= 0.30 * rated * 1.02, "the 30 % limit held while central was unheard"
    assert after and max(after) > 0.30 * rated * 1.05, "full output again after the fallback (the bench's truth)"


@async_test
async def test_a_commanded_band_centre_holds_the_regulator_and_is_given_back_at_its_end(tmp_path, broker) -> None:
    """regulator.band_center 120 V for 120 simulated s, within the site's 118..126 V: written and read back, the
    local regulator function's decisions held meanwhile; then the panel's 122 V again, in automatic."""
    async with command_site(tmp_path, broker, regulator=True) as s:
        await until(lambda: s.agent.snapshot.get("reg-ctl.band_center_v") is not None, timeout=30)
        reg = s.bench.model_of("reg-ctl")
        too_low = s.command("regulator.band_center", "reg-ctl", {"volts": 110.0, "until": s.now() + 120})
        await s.send(too_low)
        res = await s.wait_result(too_low.command_id)
        assert (res.status, res.reason) == ("refused", "bounds"), "the envelope's bounds, narrower than the wire's"
        cmd = s.command("regulator.band_center", "reg-ctl", {"volts": 120.0, "until": s.now() + 120})
        await s.send(cmd)
        res = await s.wait_result(cmd.command_id)
        assert res.status == "applied" and res.readback["band_center_v"] == pytest.approx(120.0), res
        assert reg.settings["band_center_v"] == pytest.approx(120.0)
        await until(lambda: reg.settings["band_center_v"] == pytest.approx(122.0), timeout=30)
        await until(lambda: any(a["what"] == "override_ended" for a in s.audit()), timeout=10)  # stored after the write
        ended = [a for a in s.audit() if a["what"] == "override_ended"]
        assert [a["reason"] for a in ended] == ["expired"]


@async_test
async def test_a_curve_is_applied_by_name_and_reverted_to_the_groups_own(tmp_path, broker) -> None:
    """der.curve volt_var category-a (IEEE 1547-2018 Table 8: V 90/100/100/110 %, Q 25/0/0/-25 %), then
    der.curve_revert: the DER group (monitor mode) has no curve of its own, so the inverter is handed back to its
    autonomous state (the category B default curve, IEEE 1547-2018 Table 8: 92/98/102/108 %, 44/0/0/-44 %)."""
    async with command_site(tmp_path, broker) as s:
        await _ready(s)
        inv = s.bench.model_of(DEV)
        bad = s.command("der.curve", DEV, {"curve": "volt_var", "points": {"v_pu": [1.0, 0.9, 1.0, 1.1],
                                                                         "q_pct": [25, 0, 0, -25]},
                                             "until": s.now() + 3600})  # fmt: skip
        await s.send(bad)
        res = await s.wait_result(bad.command_id)
        assert res.status == "refused" and res.reason == "bad_curve"
        cmd = s.command("der.curve", DEV, {"curve": "volt_var", "name": "category-a", "until": s.now() + 3600})
        await s.send(cmd)
        res = await s.wait_result(cmd.command_id)
        assert res.status == "applied", res
        pts = [inv.settings[f"DERVoltVar.Crv[1].Pt[{i}].V"] for i in range(1, 5)]
        assert pts == pytest.approx([90.0, 100.0, 100.0, 110.0])
        rv = s.command("der.curve_revert", DEV, {"curve": "volt_var"})
        await s.send(rv)
        res = await s.wait_result(rv.command_id)
        assert res.status == "applied", res
        pts = [inv.settings[f"DERVoltVar.Crv[1].Pt[{i}].V"] for i in range(1, 5)]
        assert pts == pytest.approx([92.0, 98.0, 102.0, 108.0])
