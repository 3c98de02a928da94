"""The DER function in the loop with the real bench: the IEEE 13-node bench's SunSpec inverter pv675 (OpenDER behind
Modbus TCP), the agent's own SunSpec poller, store, envelope and controller built from a site file.

What the tests judge is read at the bench: the inverter model's settings, or its registers read over Modbus by
pysunspec2's own client (not our code). Expected numbers are typed from IEEE 1547-2018 here, not imported from
agent/control/ieee1547.py. The bench runs at 20x; the agent's clock is the bench's (simulated seconds).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers.aio import async_test, until
from helpers.controlbench import running_agent, running_bench, site_file
from helpers.derrig import der_control

from sim_hw.devices.modbus_server import WriteRequest

pytestmark = pytest.mark.integration

PV = "pv675"
# IEEE 1547-2018 clause 5.3.3, Table 8, Category B defaults: V = VRef -0.08, -0.02, +0.02, +0.08 VN (VRef = VN);
# Q1 = 44 % of nameplate apparent power injection, Q4 = 44 % absorption; open-loop response 5 s.
CAT_B = ((92.0, 98.0, 102.0, 108.0), (44.0, 0.0, 0.0, -44.0), 5.0)
# Table 8, Category A defaults: V = VRef -0.10, 0, 0, +0.10 VN; Q1 = 25 % injection, Q4 = 25 % absorption; 10 s.
CAT_A = ((90.0, 100.0, 100.0, 110.0), (25.0, 0.0, 0.0, -25.0), 10.0)
# clause 5.4.2, Table 10 (generation-only DER, Pmin >= 0.2 Prated): (1.06 VN, Prated), (1.10 VN, 0.2 Prated); 10 s.
VOLT_WATT = ((106.0, 110.0), (100.0, 20.0), 10.0)
# clause 6.5.2.7, Table 24 (Categories I, II, III): dbOF = dbUF = 0.036 Hz, kOF = kUF = 0.05, response 5 s.
DROOP = (0.036, 0.036, 0.05, 0.05, 5.0)


def der_site(bench, folder: Path, group: str, *, mode: str = "control", readback: float = 30) -> Path:
    port = {d.name: d.port for d in bench.config.devices}[PV]
    return site_file(bench, folder, der_control(port, group, mode=mode, readback_s=readback))


def applied(agent) -> list[dict]:
    return [d for d in agent.decisions() if d["outcome"] == "applied"]


def read_with_pysunspec2(port: int) -> dict:
    """Models 705, 706 and 711 of the bench inverter as pysunspec2's SunSpecModbusClientDeviceTCP reads them."""
    import sunspec2.modbus.client as client

    d = client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port)
    try:
        d.scan()
        vv, vw, fd = d.models[705][0], d.models[706][0], d.models[711][0]
        for m in (vv, vw, fd):
            m.read()
        c, w, f = vv.Crv[0], vw.Crv[0], fd.Ctl[0]
        return {
            "vv_ena": vv.Ena.value, "vv_dept_ref": c.DeptRef.value, "vv_rsp": c.RspTms.cvalue,
            "vv_v": [p.V.cvalue for p in c.Pt], "vv_var": [p.Var.cvalue for p in c.Pt],
            "vw_ena": vw.Ena.value, "vw_rsp": w.RspTms.cvalue, "vw_v": [p.V.cvalue for p in w.Pt],
            "vw_w": [p.W.cvalue for p in w.Pt],
            "fd_ena": fd.Ena.value, "fd": [f.DbOf.cvalue, f.DbUf.cvalue, f.KOf.cvalue, f.KUf.cvalue, f.RspTms.cvalue],
        }  # fmt: skip
    finally:
        d.close()


def port_of(bench) -> int:
    return {d.name: d.port for d in bench.config.devices}[PV]


@async_test
async def test_conformance_category_b_volt_watt_and_droop_defaults_read_by_pysunspec2_at_the_bench(
    tmp_path: Path,
) -> None:
    group = 'volt_var = "category-b"\nvolt_watt = "default"\nfreq_droop = "default"'
    async with running_bench(tmp_path) as bench:
        site = der_site(bench, tmp_path / "agent", group)
        async with running_agent(bench, site) as agent:
            await until(lambda: applied(agent), timeout=30)
            got = await asyncio.to_thread(read_with_pysunspec2, port_of(bench))
    (v, q, rsp) = CAT_B
    assert got["vv_ena"] == 1 and got["vv_dept_ref"] == 3  # 3 = VA_MAX_PCT: Q in % of nameplate VA, Table 8's unit
    assert got["vv_v"] == pytest.approx(v, abs=0.05) and got["vv_var"] == pytest.approx(q, abs=0.05)
    assert got["vv_rsp"] == pytest.approx(rsp)
    (wv, ww, wrsp) = VOLT_WATT
    assert got["vw_ena"] == 1 and got["vw_v"] == pytest.approx(wv, abs=0.05)
    assert got["vw_w"] == pytest.approx(ww, abs=0.05) and got["vw_rsp"] == pytest.approx(wrsp)
    assert got["fd_ena"] == 1 and got["fd"] == pytest.approx(DROOP, abs=5e-4)


@async_test
async def test_conformance_category_a_read_by_pysunspec2_at_the_bench(tmp_path: Path) -> None:
    async with running_bench(tmp_path) as bench:
        site = der_site(bench, tmp_path / "agent", 'category = "A"\nvolt_var = "category-a"')
        async with running_agent(bench, site) as agent:
            await until(lambda: applied(agent), timeout=30)
            got = await asyncio.to_thread(read_with_pysunspec2, port_of(bench))
    (v, q, rsp) = CAT_A
    assert got["vv_ena"] == 1 and got["vv_dept_ref"] == 3
    assert got["vv_v"] == pytest.approx(v, abs=0.05) and got["vv_var"] == pytest.approx(q, abs=0.05)
    assert got["vv_rsp"] == pytest.approx(rsp)


@async_test
async def test_advise_mode_decides_and_the_bench_inverter_is_not_written(tmp_path: Path) -> None:
    async with running_bench(tmp_path) as bench:
        model = bench.model_of(PV)
        before = dict(model.settings)  # type: ignore[attr-defined]
        site = der_site(bench, tmp_path / "agent", 'volt_var = "category-b"', mode="advise")
        async with running_agent(bench, site) as agent:
            await until(lambda: any(d["outcome"] == "advised" for d in agent.decisions()), timeout=30)
            await asyncio.sleep(1.0)  # 20 more simulated seconds: still nothing written
            assert model.settings == before  # type: ignore[attr-defined]
            advised = [d for d in agent.decisions() if d["outcome"] == "advised"]
            assert advised[0]["command"]["action"] == "der.configure" and advised[0]["detail"]["would"] == "allowed"


@async_test
async def test_stale_inputs_make_no_command_and_fresh_ones_bring_it_back(tmp_path: Path) -> None:
    """pv675 goes silent after the agent configured it; someone at its panel turns volt-var off. While the agent's
    data is stale no command goes (held, inputs_stale); once the inverter answers again the function restores it."""
    async with running_bench(tmp_path) as bench:
        model = bench.model_of(PV)
        async with running_agent(bench, der_site(bench, tmp_path / "agent", 'volt_var = "category-b"')) as agent:
            await until(lambda: applied(agent), timeout=30)
            bench.silence(PV, True)
            assert model.on_write(WriteRequest(1, None, 0, (), {"DERVoltVar.Ena": 0})) is None  # type: ignore[attr-defined,arg-type]
            await until(lambda: any(d["rule"] == "inputs_stale" for d in agent.decisions()), timeout=30)
            await asyncio.sleep(1.0)
            assert len(applied(agent)) == 1 and model.settings["DERVoltVar.Ena"] == 0  # type: ignore[attr-defined]
            held = next(d for d in agent.decisions() if d["rule"] == "inputs_stale")
            assert held["command"] is None and held["outcome"] == "held"
            bench.silence(PV, False)
            await until(lambda: len(applied(agent)) == 2, timeout=30)
            assert model.settings["DERVoltVar.Ena"] == 1  # type: ignore[attr-defined]


@async_test
async def test_an_inverter_that_ignores_writes_is_alarmed_suspended_and_left_on_its_defaults(tmp_path: Path) -> None:
    async with running_bench(tmp_path) as bench:
        model = bench.model_of(PV)
        bench.server_of(PV).on_write(1, lambda req: None)  # takes every write, its firmware never applies them
        site = der_site(bench, tmp_path / "agent", 'volt_var = "category-b"', readback=10)
        async with running_agent(bench, site) as agent:
            await until(lambda: any(d["outcome"] == "readback_failed" for d in agent.decisions()), timeout=30)
            await until(lambda: any(k == "control_readback_failed" for k, _ in agent.events()), timeout=10)
            assert agent.control.envelope.suspension(f"der:pv:{PV}", PV) is not None
            s = model.settings  # type: ignore[attr-defined]
            assert [s[f"DERVoltVar.Crv[1].Pt[{i}].V"] for i in range(1, 5)] == list(CAT_B[0])
            assert s["DERCtlAC.PFWInjEna"] == s["DERCtlAC.VarSetEna"] == s["DERCtlAC.WMaxLimPctEna"] == 0


@async_test
async def test_after_an_agent_crash_the_set_point_reverts_within_reversion_s(tmp_path: Path) -> None:
    """Constant PF 0.95 absorbing with reversion_s = 20; the agent dies without handing back (its control tasks
    cancelled, no stop): the inverter's own 704 timer turns constant PF off within 20 simulated seconds of the
    agent's last write, so within 20 s of its death."""
    group = 'constant_pf = { pf = 0.95, excitation = "absorbing" }\nreversion_s = 20'
    async with running_bench(tmp_path) as bench:
        model = bench.model_of(PV)
        async with running_agent(bench, der_site(bench, tmp_path / "agent", group)) as agent:
            await until(lambda: applied(agent), timeout=30)
            assert model.settings["DERCtlAC.PFWInjEna"] == 1  # type: ignore[attr-defined]
            crashed = bench.clock()
            due = model.reversion.due["PFWInj"]  # type: ignore[attr-defined]  # the device's own timer, running
            for t in agent.tasks[len(agent.pollers) :]:
                t.cancel()  # the agent's control dies: no refresh, no hand-back

            async def no_stop() -> None:
                return None

            agent.control.stop = no_stop  # type: ignore[method-assign]
            await until(lambda: model.settings["DERCtlAC.PFWInjEna"] == 0, timeout=10)  # type: ignore[attr-defined]
            reverted_after = bench.clock() - crashed
            assert agent.control.envelope.held(PV) is not None, "no hand-back: the device's own timer did it"
    # The timer was started by the agent's last write, before the crash, so it runs out within reversion_s of the
    # crash; when the physics step that applies it runs is the bench's business (late under load), not the agent's.
    assert crashed < due <= crashed + 20
    assert reverted_after >= due - crashed
    print(f"constant PF reverted {reverted_after:.1f} s (simulated) after the agent's control died")


@async_test
async def test_while_the_agent_runs_it_refreshes_the_set_point_before_its_timer_runs_out(tmp_path: Path) -> None:
    """reversion_s = 20, cadence 5 s: over 80 simulated seconds the set point stays on, refreshed (der.refresh)
    whenever less than three cadences (15 s) are left on its timer, and the refreshes cost no set-point change."""
    group = 'constant_pf = { pf = 0.95, excitation = "absorbing" }\nreversion_s = 20'
    async with running_bench(tmp_path) as bench:
        model = bench.model_of(PV)
        async with running_agent(bench, der_site(bench, tmp_path / "agent", group)) as agent:
            await until(lambda: applied(agent), timeout=30)
            start = bench.clock()
            off_seen = False
            while bench.clock() - start < 80:
                off_seen |= model.settings["DERCtlAC.PFWInjEna"] != 1  # type: ignore[attr-defined]
                await asyncio.sleep(0.02)
            refreshes = [d for d in applied(agent) if d["command"]["action"] == "der.refresh"]
    assert not off_seen, "the timer never ran out while the agent was there"
    assert len(refreshes) >= 3 and all(d["rule"] == "reversion_refresh" for d in refreshes)
    assert refreshes[-1]["budgets_left"]["setpoint_changes_per_hour"] == 11  # only the first write counted
