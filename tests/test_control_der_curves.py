"""Explicit curves (not the category's IEEE 1547-2018 default) on an inverter whose curve models have SunSpec's own
reversion timer: the DER function writes the curve with ``RvrtTms`` = ``reversion_s`` and the default kept in the
curve the device falls back to, refreshes the timer while it wants the curve, and the hand-back stops it. The bench
inverter served on loopback, the agent's real poller, envelope and actuator; the device read by pysunspec2."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers.aio import async_test
from helpers.derrig import der_rig, read_volt_var

from agent.control import ieee1547
from agent.control.config import DerGroupConfig
from agent.control.der import refresh_margin_s, wanted_state
from agent.control.inverter import DerActuator, write_steps

DEV = "pv675"
# IEEE 1547-2018 clause 5.3.3, Table 8, Category B default: V1..V4 = VRef -0.08, -0.02, +0.02, +0.08 VN, Q1 = 44 %
# of nameplate VA injected, Q4 = 44 % absorbed
CAT_B_V_PCT = [92.0, 98.0, 102.0, 108.0]
CAT_B_Q_PCT_OF_VA = [44.0, 0.0, 0.0, -44.0]
# an explicit curve inside Table 8's ranges of allowable settings (Category B), narrower and softer than the default
MINE = ieee1547.VoltVarCurve((0.93, 0.99, 1.01, 1.07), (30.0, 0.0, 0.0, -30.0), 1.0, 5.0)
MINE_V_PCT, MINE_Q_PCT = [93.0, 99.0, 101.0, 107.0], [30.0, 0.0, 0.0, -30.0]
REVERSION_S = 30.0
SLOW = 0.05  # wall s between bench steps: the refresh margin (10 simulated s) is some 0.5 s of wall time


def group(**kw) -> DerGroupConfig:
    kw.setdefault("volt_var", MINE)
    kw.setdefault("reversion_s", REVERSION_S)
    return DerGroupConfig(name="pv", devices=(DEV,), cadence_s=2.0, stale_after_s=30.0, **kw)


def active_v(inv) -> list[float]:
    return [inv.settings[f"DERVoltVar.Crv[1].Pt[{i}].V"] for i in range(1, 5)]


async def settle(r, cycles: int = 6) -> None:
    for _ in range(cycles):
        await r.cycle()
        await asyncio.sleep(0.01)


def q_pct_of_va(vv: dict, var: float) -> float:
    """A 705 Var point in % of nameplate VA (the served inverter: 500 kVA, VarMax 44 % of it), by its DeptRef."""
    return var if vv["DeptRef"] == 3 else var * 0.44


def test_the_default_goes_into_curve_3_before_the_explicit_curve_is_adopted_with_its_timer() -> None:
    steps = write_steps(wanted_state(group()))
    at = {name: i for i, step in enumerate(steps) for name in step}
    assert steps[at["DERVoltVar.Crv[3].Pt[1].V"]]["DERVoltVar.Crv[3].Pt[1].V"] == CAT_B_V_PCT[0]
    assert at["DERVoltVar.Crv[3].Pt[1].V"] < at["DERVoltVar.Crv[2].Pt[1].V"] < at["DERVoltVar.AdptCrvReq"]
    adopt = steps[at["DERVoltVar.AdptCrvReq"]]
    assert adopt == {"DERVoltVar.AdptCrvReq": 2, "DERVoltVar.Ena": 1, "DERVoltVar.RvrtCrv": 3,
                     "DERVoltVar.RvrtTms": REVERSION_S}  # fmt: skip


def test_a_default_curve_asks_no_timer_and_the_hand_back_stops_the_timers_the_device_has() -> None:
    assert "DERVoltVar.RvrtTms" not in wanted_state(group(volt_var=ieee1547.default("volt_var.category-b")))
    act = DerActuator(None, None, category="B", reversion_s=30, setpoint_changes_per_hour=12)  # type: ignore[arg-type]
    back = act.autonomous(None, ("DERVoltVar", "DERFreqDroop"))
    assert back["DERVoltVar.RvrtTms"] == 0 and back["DERFreqDroop.RvrtTms"] == 0
    assert "DERVoltWatt.RvrtTms" not in back  # a model without the timer is not written one
    adopt = next(s for s in write_steps(back) if "DERVoltVar.AdptCrvReq" in s)
    assert adopt["DERVoltVar.RvrtTms"] == 0  # with the adopt: the default adopted with no timer running


@async_test
async def test_an_explicit_curve_is_written_with_its_reversion_timer_as_pysunspec2_reads_it(tmp_path: Path) -> None:
    async with der_rig(tmp_path, group()) as r:
        await settle(r)
        vv = await asyncio.to_thread(read_volt_var, r.served.port)
        applied = [d for d in r.decisions() if d["outcome"] == "applied"]
    assert vv["Ena"] == 1 and vv["V"] == pytest.approx(MINE_V_PCT, abs=0.05)
    assert [q_pct_of_va(vv, q) for q in vv["Var"]] == pytest.approx(MINE_Q_PCT, abs=0.05)
    assert vv["RvrtTms"] == REVERSION_S and 0 < vv["RvrtRem"] <= REVERSION_S
    assert vv["RvrtCrv"] == 3  # the curve it falls back to holds the Category B default (next test)
    assert applied and applied[0]["rule"] == "settings_differ"


@async_test
async def test_with_no_refresh_the_timer_takes_the_device_back_to_the_default_curve(tmp_path: Path) -> None:
    """The agent stops deciding (as after a crash): within ``reversion_s`` of its write the inverter's own timer
    puts the active curve back on Table 8's Category B default."""
    async with der_rig(tmp_path, group(), step_every_s=SLOW) as r:
        await settle(r)
        assert active_v(r.inv) == MINE_V_PCT
        wrote = r.served.t
        while active_v(r.inv) == MINE_V_PCT and r.served.t < wrote + REVERSION_S + 10:
            await asyncio.sleep(SLOW / 4)  # the rig's task steps the inverter; nothing polls or decides any more
        reverted_after = r.served.t - wrote
        vv = await asyncio.to_thread(read_volt_var, r.served.port)
    assert vv["V"] == pytest.approx(CAT_B_V_PCT, abs=0.05)
    assert [q_pct_of_va(vv, q) for q in vv["Var"]] == pytest.approx(CAT_B_Q_PCT_OF_VA, abs=0.05)
    assert vv["RvrtRem"] == 0 and vv["Ena"] == 1
    assert reverted_after <= REVERSION_S + 1, f"reverted {reverted_after:.0f} s after the last write"


@async_test
async def test_while_the_function_runs_it_refreshes_the_timer_and_the_curve_stays(tmp_path: Path) -> None:
    """Over three reversion times the curve never leaves; each refresh comes with less than the margin left."""
    g = group()
    async with der_rig(tmp_path, g, step_every_s=SLOW) as r:
        await settle(r)
        start = r.served.t
        while r.served.t < start + 3 * REVERSION_S:
            await r.cycle()
            assert active_v(r.inv) == MINE_V_PCT, f"curve lost at +{r.served.t - start:.0f} s"
            await asyncio.sleep(SLOW)
        refreshes = [d for d in r.decisions() if d["rule"] == "reversion_refresh"]
        tms = r.inv.settings["DERVoltVar.RvrtTms"]
    assert len(refreshes) >= 2 and all(d["outcome"] == "applied" for d in refreshes)
    assert all(d["command"]["values"] == {"DERVoltVar.RvrtTms": REVERSION_S} for d in refreshes)
    assert refresh_margin_s(g) == REVERSION_S / 3 and tms == REVERSION_S


@async_test
async def test_the_hand_back_restores_the_default_curve_and_stops_the_timer(tmp_path: Path) -> None:
    async with der_rig(tmp_path, group()) as r:
        await settle(r)
        assert active_v(r.inv) == MINE_V_PCT
        done = await r.envelope.hand_back_all()
        vv = await asyncio.to_thread(read_volt_var, r.served.port)
    assert [d.outcome for d in done] == ["reverted"]
    assert vv["V"] == pytest.approx(CAT_B_V_PCT, abs=0.05) and vv["RvrtTms"] == 0 and vv["RvrtRem"] == 0
