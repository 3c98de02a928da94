"""The DER function and its actuator against the bench's SunSpec inverter served over real Modbus TCP on loopback:
the agent's own poller, envelope, store and controller; what the device holds is read at the device (its model),
and, for conformance, by pysunspec2's own Modbus client (not our code).

Expected numbers are typed here from IEEE 1547-2018, not imported from agent/control/ieee1547.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers.aio import async_test
from helpers.derrig import DEV, der_rig

from agent.control import ieee1547
from agent.control.config import ConstantPf, DerGroupConfig
from agent.control.decision import Command
from agent.control.der import DerState, decide, wanted_state
from agent.control.inverter import write_steps
from agent.control.view import View
from agent.points import Quality, Reading

# IEEE 1547-2018 clause 5.3.3, Table 8, Category B defaults: V1..V4 = VRef -0.08, -0.02, +0.02, +0.08 VN (VRef = VN);
# Q1 = 44 % of nameplate apparent power injection, Q2 = Q3 = 0, Q4 = 44 % absorption; open-loop response 5 s.
CAT_B_V_PCT = (92.0, 98.0, 102.0, 108.0)
CAT_B_Q_PCT_OF_VA = (44.0, 0.0, 0.0, -44.0)
# Table 8, Category A defaults: V1 = VRef - 0.10 VN, V2 = V3 = VRef, V4 = VRef + 0.10 VN; Q1 = 25 % injection,
# Q4 = 25 % absorption; response 10 s.
CAT_A_V_PCT = (90.0, 100.0, 100.0, 110.0)
CAT_A_Q_PCT_OF_VA = (25.0, 0.0, 0.0, -25.0)
# clause 5.4.2, Table 10 (Categories A and B; a generation-only DER with Pmin >= 0.2 Prated): V1 = 1.06 VN with
# P1 = Prated, V2 = 1.10 VN with P2 = 0.2 Prated; open-loop response 10 s.
VW_V_PCT, VW_P_PCT, VW_RESPONSE_S = (106.0, 110.0), (100.0, 20.0), 10.0
# clause 6.5.2.7, Table 24 (Categories I, II and III): dbOF = dbUF = 0.036 Hz, kOF = kUF = 0.05, response 5 s.
FD_DB_HZ, FD_K, FD_RESPONSE_S = 0.036, 0.05, 5.0


def group(**kw) -> DerGroupConfig:
    kw.setdefault("volt_var", ieee1547.default("volt_var.category-b"))
    return DerGroupConfig(name="pv", devices=(DEV,), cadence_s=10.0, stale_after_s=30.0, **kw)


async def settle(r, cycles: int = 6) -> None:
    """Controller cycles until the function holds still (a write, then the snapshot catching up)."""
    for _ in range(cycles):
        await r.cycle()
        await asyncio.sleep(0.01)


# ---- pure -----------------------------------------------------------------------------------------------------


def test_a_curve_is_written_into_an_editable_curve_before_it_is_adopted_with_its_enable() -> None:
    steps = write_steps(wanted_state(group()))
    names = [set(s) for s in steps]
    pts = next(i for i, s in enumerate(names) if "DERVoltVar.Crv[2].Pt[1].V" in s)
    adopt = next(i for i, s in enumerate(names) if "DERVoltVar.AdptCrvReq" in s)
    off = next(i for i, s in enumerate(names) if "DERCtlAC.PFWInjEna" in s)
    assert off < pts < adopt
    assert steps[adopt] == {"DERVoltVar.AdptCrvReq": 2, "DERVoltVar.Ena": 1}


def test_a_set_point_is_written_off_first_and_enabled_last_after_its_value_and_timer() -> None:
    """Constant PF: volt-var off before anything (one reactive mode at a time, IEEE 1547-2018 5.3); the PF, its
    reversion timer and what it reverts to next; the enable last, which starts the device's timer."""
    steps = write_steps(wanted_state(group(volt_var=None, constant_pf=ConstantPf(0.95, "injecting"), reversion_s=300)))
    assert steps[0] == {"DERCtlAC.VarSetEna": 0, "DERCtlAC.WMaxLimPctEna": 0, "DERVoltVar.Ena": 0}
    assert steps[-1] == {"DERCtlAC.PFWInjEna": 1}
    values = steps[-2]
    assert (values["DERCtlAC.PFWInj.PF"], values["DERCtlAC.PFWInj.Ext"]) == (0.95, 0)  # 0: over-excited, injecting
    assert (values["DERCtlAC.PFWInjRvrtTms"], values["DERCtlAC.PFWInjEnaRvrt"]) == (300, 0)


def test_the_hand_back_writes_the_category_defaults_and_the_enables_the_device_had() -> None:
    from agent.control.inverter import DerActuator

    class Link:
        device = type("D", (), {"name": DEV})()

    act = DerActuator(Link(), None, category="A", reversion_s=300, setpoint_changes_per_hour=12)  # type: ignore[arg-type]
    target = act.autonomous({"enables": {"DERVoltVar.Ena": 0, "DERFreqDroop.Ena": 1}})
    assert [target[f"DERVoltVar.Crv[1].Pt[{i}].V"] for i in range(1, 5)] == list(CAT_A_V_PCT)
    assert [target[f"DERVoltVar.Crv[1].Pt[{i}].Var"] for i in range(1, 5)] == list(CAT_A_Q_PCT_OF_VA)
    assert (target["DERVoltVar.Ena"], target["DERFreqDroop.Ena"]) == (0, 1) and "DERVoltWatt.Ena" not in target
    assert all(target[f"DERCtlAC.{s}Ena"] == 0 and target[f"DERCtlAC.{s}RvrtTms"] == 0
               for s in ("PFWInj", "VarSet", "WMaxLimPct"))  # fmt: skip


def test_stale_inputs_make_a_held_decision_without_a_command() -> None:
    """Every compared point 40 s old (stale_after_s 30): no command, rule inputs_stale."""
    now = 1_800_000_000.0
    snap = {
        f"{DEV}.{k}": Reading(f"{DEV}.{k}", now - 40.0, v, "", Quality.GOOD) for k, v in wanted_state(group()).items()
    }
    d = decide(View(snap, now), now, group(), DEV, "control", DerState())
    assert d is not None and d.command is None and d.rule == "inputs_stale"


def test_holding_what_is_asked_makes_no_decision_and_one_point_off_asks_for_all() -> None:
    now = 1_800_000_000.0
    want = wanted_state(group())
    snap = {f"{DEV}.{k}": Reading(f"{DEV}.{k}", now - 1.0, v, "", Quality.GOOD) for k, v in want.items()}
    assert decide(View(snap, now), now, group(), DEV, "control", DerState()) is None
    k = "DERVoltVar.Crv[1].Pt[4].Var"
    snap[f"{DEV}.{k}"] = Reading(f"{DEV}.{k}", now - 1.0, -100.0, "", Quality.GOOD)
    d = decide(View(snap, now), now, group(), DEV, "control", DerState())
    assert d is not None and d.command is not None and d.command.action == "der.configure"
    assert d.rule == "settings_differ" and list(d.detail["differ"]) == [k]


# ---- against the served inverter -----------------------------------------------------------------------------------


@async_test
async def test_category_b_is_written_verified_and_then_left_alone(tmp_path: Path) -> None:
    async with der_rig(tmp_path, group()) as r:
        await settle(r)
        s = r.inv.settings
        assert [s[f"DERVoltVar.Crv[1].Pt[{i}].V"] for i in range(1, 5)] == list(CAT_B_V_PCT)
        assert s["DERVoltVar.Crv[1].DeptRef"] == 3  # VA_MAX_PCT: Table 8's unit
        assert [s[f"DERVoltVar.Crv[1].Pt[{i}].Var"] for i in range(1, 5)] == list(CAT_B_Q_PCT_OF_VA)
        assert s["DERVoltVar.Ena"] == 1
        applied = [d for d in r.decisions() if d["outcome"] == "applied"]
        assert len(applied) == 1 and applied[0]["command"]["action"] == "der.configure"
        assert applied[0]["budgets_left"]["setpoint_changes_per_hour"] == 11
        await settle(r, 3)
        assert len([d for d in r.decisions() if d["outcome"] == "applied"]) == 1  # holds what is asked: no write


@async_test
async def test_conformance_model_705_read_by_pysunspec2_holds_table_8_category_b(tmp_path: Path) -> None:
    async with der_rig(tmp_path, group(volt_watt=ieee1547.default("volt_watt.default"),
                                        freq_droop=ieee1547.default("freq_droop.default"))) as r:  # fmt: skip
        await settle(r)
        vv, vw, fd = await asyncio.to_thread(read_with_pysunspec2, r.served.port)
    assert vv["Ena"] == 1
    assert [p["V"] for p in vv["pts"]] == pytest.approx(CAT_B_V_PCT, abs=0.05)
    assert [q_pct_of_va(vv, p["Var"]) for p in vv["pts"]] == pytest.approx(CAT_B_Q_PCT_OF_VA, abs=0.05)
    assert vv["RspTms"] == pytest.approx(5.0)
    assert [p["V"] for p in vw["pts"]] == pytest.approx(VW_V_PCT, abs=0.05)
    assert [p["W"] for p in vw["pts"]] == pytest.approx(VW_P_PCT, abs=0.05)
    assert vw["RspTms"] == pytest.approx(VW_RESPONSE_S) and vw["Ena"] == 1
    assert (fd["DbOf"], fd["DbUf"]) == pytest.approx((FD_DB_HZ, FD_DB_HZ), abs=5e-4)
    assert (fd["KOf"], fd["KUf"]) == pytest.approx((FD_K, FD_K), abs=5e-4)
    assert fd["RspTms"] == pytest.approx(FD_RESPONSE_S) and fd["Ena"] == 1


@async_test
async def test_conformance_model_705_read_by_pysunspec2_holds_table_8_category_a(tmp_path: Path) -> None:
    g = group(category="A", volt_var=ieee1547.default("volt_var.category-a"))
    async with der_rig(tmp_path, g) as r:
        await settle(r)
        vv, _vw, _fd = await asyncio.to_thread(read_with_pysunspec2, r.served.port)
    assert [p["V"] for p in vv["pts"]] == pytest.approx(CAT_A_V_PCT, abs=0.05)
    assert [q_pct_of_va(vv, p["Var"]) for p in vv["pts"]] == pytest.approx(CAT_A_Q_PCT_OF_VA, abs=0.05)
    assert vv["RspTms"] == pytest.approx(10.0)


@async_test
async def test_advise_mode_decides_and_writes_nothing_to_the_device(tmp_path: Path) -> None:
    async with der_rig(tmp_path, group(), mode="advise") as r:
        before = dict(r.inv.settings)
        await settle(r)
        assert r.inv.settings == before  # the device's own Cat B curve in % of VarMax, volt-var off: untouched
        advised = [d for d in r.decisions() if d["outcome"] == "advised"]
        assert len(advised) == 1 and advised[0]["command"]["action"] == "der.configure"  # once, not every cycle


@async_test
async def test_a_device_that_ignores_writes_raises_the_alarm_is_suspended_and_stays_in_its_safe_state(
    tmp_path: Path,
) -> None:
    async with der_rig(tmp_path, group(), ignore_writes=True) as r:
        await settle(r, 4)
        outcomes = [d["outcome"] for d in r.decisions()]
        assert "readback_failed" in outcomes
        assert "control_readback_failed" in r.events()
        assert r.envelope.suspension(r.function.name, DEV) is not None
        later = [d for d in r.decisions() if d["verdict"] == "refused:suspended"]
        assert later, "the suspended function's next proposal is refused"
        s = r.inv.settings  # its autonomous state: its own Table 8 Cat B curve, no set point on
        assert [s[f"DERVoltVar.Crv[1].Pt[{i}].V"] for i in range(1, 5)] == list(CAT_B_V_PCT)
        assert s["DERCtlAC.PFWInjEna"] == 0 and s["DERCtlAC.VarSetEna"] == 0 and s["DERCtlAC.WMaxLimPctEna"] == 0


@async_test
async def test_a_device_that_refuses_the_curve_is_alarmed_suspended_and_left_on_its_defaults(tmp_path: Path) -> None:
    """Its firmware takes the 704 writes and refuses every volt-var write: a partial write, so a readback failure."""
    async with der_rig(tmp_path, group(), refuse="DERVoltVar.") as r:
        await settle(r, 4)
        (failed,) = [d for d in r.decisions() if d["outcome"] == "readback_failed" and d["rule"] == "settings_differ"]
        assert failed["detail"]["exception"] == 3 and failed["detail"]["partial"] is True
        assert "control_readback_failed" in r.events()
        assert r.envelope.suspension(r.function.name, DEV) is not None
        s = r.inv.settings
        assert [s[f"DERVoltVar.Crv[1].Pt[{i}].V"] for i in range(1, 5)] == list(CAT_B_V_PCT)
        assert s["DERVoltVar.Ena"] == 0 and s["DERCtlAC.PFWInjEna"] == 0


@async_test
async def test_constant_pf_goes_with_its_reversion_timer_and_the_hand_back_restores_the_defaults(
    tmp_path: Path,
) -> None:
    g = group(volt_var=None, constant_pf=ConstantPf(0.95, "absorbing"), reversion_s=120.0)
    async with der_rig(tmp_path, g) as r:
        await settle(r)
        s = r.inv.settings
        assert (s["DERCtlAC.PFWInjEna"], s["DERCtlAC.PFWInj.Ext"]) == (1, 1)  # on, under-excited (absorbing)
        assert s["DERCtlAC.PFWInj.PF"] == pytest.approx(0.95, abs=5e-4)
        assert s["DERCtlAC.PFWInjRvrtTms"] == 120 and 0 < r.inv.values()["DERCtlAC.PFWInjRvrtRem"] <= 120
        done = await r.envelope.hand_back_all()
        assert [d.outcome for d in done] == ["reverted"]
        s = r.inv.settings
        assert s["DERCtlAC.PFWInjEna"] == 0 and s["DERCtlAC.PFWInjRvrtTms"] == 0
        assert [s[f"DERVoltVar.Crv[1].Pt[{i}].V"] for i in range(1, 5)] == list(CAT_B_V_PCT)


@async_test
async def test_an_explicit_curve_on_a_device_without_a_reversion_timer_is_refused_by_bounds(tmp_path: Path) -> None:
    """The device's 705 serves RvrtTms "not implemented": the curve would outlast an agent crash."""
    curve = ieee1547.VoltVarCurve((0.93, 0.99, 1.01, 1.07), (40.0, 0.0, 0.0, -40.0), 1.0, 5.0)
    async with der_rig(tmp_path, group(volt_var=curve), curve_reversion=False) as r:
        before = dict(r.inv.settings)
        await settle(r, 3)
        assert r.inv.settings == before
        refused = [d for d in r.decisions() if d["verdict"] == "refused:bounds"]
        assert refused and "no_reversion_timer" in refused[0]["detail"]["why"]


@async_test
async def test_bounds_refuse_a_volt_var_curve_beyond_the_category_capability(tmp_path: Path) -> None:
    async with der_rig(tmp_path, group()) as r:
        await r.poll()
        values = {**wanted_state(group()), "DERVoltVar.Crv[1].Pt[1].Var": 60.0}
        why = r.actuator.bounds(Command(DEV, "der.configure", values), View(r.snapshot, r.clock.time()))
        assert why is not None and "capability" in why


def test_the_shipped_sim_site_keeps_its_inverters_on_category_b_and_writes_nothing() -> None:
    from agent.config import load_config

    cfg = load_config(Path(__file__).resolve().parent.parent / "config" / "agent-sim.toml")
    assert cfg.control is not None  # [control] mode is "control" for the demo's cap bank; the DER group advises
    (g,) = cfg.control.der
    assert set(g.devices) == {"pv675", "pv680", "pv634", "pv652"}
    assert g.volt_var is not None and [round(v * 100) for v in g.volt_var.v_pu] == list(CAT_B_V_PCT)
    assert g.stale_after_s > 60, "above the curves' settings poll (60 s), or every decision is inputs_stale"
    assert cfg.control.function_mode(g.mode) == "advise"


# ---- pysunspec2's own reader ----------------------------------------------------------------------------------


def read_with_pysunspec2(port: int) -> tuple[dict, dict, dict]:
    """Models 705, 706, 711 as pysunspec2's SunSpecModbusClientDeviceTCP reads them (its scan, its scale factors)."""
    import sunspec2.modbus.client as client

    d = client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port)
    try:
        d.scan()
        m702 = d.models["DERCapacity"][0] if "DERCapacity" in d.models else None
        vv, vw, fd = d.models[705][0], d.models[706][0], d.models[711][0]
        vv.read()
        vw.read()
        fd.read()
        crv = vv.Crv[0]
        out_vv = {"Ena": vv.Ena.value, "DeptRef": crv.DeptRef.value, "RspTms": crv.RspTms.cvalue,
                  "pts": [{"V": p.V.cvalue, "Var": p.Var.cvalue} for p in crv.Pt],
                  "VarMaxInj": None if m702 is None else m702.VarMaxInj.cvalue,
                  "VAMax": None if m702 is None else m702.VAMax.cvalue}  # fmt: skip
        wc = vw.Crv[0]
        out_vw = {"Ena": vw.Ena.value, "RspTms": wc.RspTms.cvalue,
                  "pts": [{"V": p.V.cvalue, "W": p.W.cvalue} for p in wc.Pt]}  # fmt: skip
        c = fd.Ctl[0]
        out_fd = {"Ena": fd.Ena.value, "DbOf": c.DbOf.cvalue, "DbUf": c.DbUf.cvalue, "KOf": c.KOf.cvalue,
                  "KUf": c.KUf.cvalue, "RspTms": c.RspTms.cvalue}  # fmt: skip
        return out_vv, out_vw, out_fd
    finally:
        d.close()


def q_pct_of_va(vv: dict, var: float) -> float:
    """A 705 Var point in % of nameplate VA, by its DeptRef (SunSpec 705: 1 = % of VarMax, 3 = % of VAMax)."""
    if vv["DeptRef"] == 3:
        return var
    assert vv["DeptRef"] == 1 and vv["VarMaxInj"] and vv["VAMax"], vv
    return var * vv["VarMaxInj"] / vv["VAMax"]


@async_test
async def test_constant_var_and_an_active_power_limit_go_with_their_reversion_timers(tmp_path: Path) -> None:
    """Constant var (IEEE 1547-2018 5.3.4) 20 % of nameplate VA absorbing, with an active-power limit of 60 %
    (4.6.2): both written to 704 with their reversion timers and enabled, volt-var off (one reactive power mode at a
    time, 5.3); the hand-back turns both off and stops their timers."""
    g = group(volt_var=None, constant_var_pct=-20.0, p_limit_pct=60.0, reversion_s=120.0)
    async with der_rig(tmp_path, g) as r:
        await settle(r)
        s = r.inv.settings
        assert (s["DERCtlAC.VarSetEna"], s["DERCtlAC.WMaxLimPctEna"], s["DERVoltVar.Ena"]) == (1, 1, 0)
        assert s["DERCtlAC.VarSetPct"] == pytest.approx(-20.0, abs=0.05)
        assert s["DERCtlAC.WMaxLimPct"] == pytest.approx(60.0, abs=0.05)
        assert s["DERCtlAC.VarSetRvrtTms"] == 120 and s["DERCtlAC.WMaxLimPctRvrtTms"] == 120
        done = await r.envelope.hand_back_all()
        assert [d.outcome for d in done] == ["reverted"]
        s = r.inv.settings
        assert (s["DERCtlAC.VarSetEna"], s["DERCtlAC.WMaxLimPctEna"]) == (0, 0)
        assert s["DERCtlAC.VarSetRvrtTms"] == s["DERCtlAC.WMaxLimPctRvrtTms"] == 0
