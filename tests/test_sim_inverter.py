"""The simulated SunSpec PV inverter over real Modbus TCP: layout, decoding by pysunspec2, IEEE 1547 behaviour."""

from __future__ import annotations

import cmath
import json
import math
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers.aio import async_test
from helpers.net import free_port
from pymodbus.client import AsyncModbusTcpClient
from sunspec2 import device as ss_device
from sunspec2 import mdef

from protocols.modbus.registermap import Table, encode_point
from protocols.sunspec.layout import SunSpecLayoutError, build_layout, from_raw, to_raw
from sim_hw.devices.inverter import (
    WRITABLE,
    InverterConfigError,
    InverterError,
    SunSpecInverter,
)
from sim_hw.devices.modbus_server import ModbusDeviceServer
from sim_hw.feeder.solution import Solution

ROOT = Path(__file__).resolve().parent.parent
DOC_FILE = ROOT / "docs" / "devices" / "sim-inverter.md"
BASE = 40000
V_LN = 4160.0 / math.sqrt(3)  # IEEE 13-node feeder: 4.16 kV line-to-line
KVA, KW = 500.0, 450.0
Q_MAX_VAR = 0.44 * KVA * 1000  # IEEE 1547-2018 Table 7, Category B: 44 % of nameplate VA


def solution(v_pu: float = 1.0, irradiance: float | None = 1.0, hz: float = 60.0, bus: str = "675") -> Solution:
    """A balanced three-phase bus at ``v_pu`` built by hand, as the feeder would report it."""
    v = {p: V_LN * v_pu * cmath.exp(1j * math.radians(a)) for p, a in zip("abc", (0.0, -120.0, 120.0), strict=True)}
    kw: dict[str, Any] = {} if irradiance is None else {"irradiance_pu": irradiance}
    return Solution(t=0.0, converged=True, bus_v={bus: v}, base_kv_ln={bus: V_LN / 1000.0}, frequency_hz=hz, **kw)


def inverter(**settings: float) -> SunSpecInverter:
    return SunSpecInverter("inv1", site="pv675", bus="675", kva=KVA, kw=KW, settings=settings or None)


class FakeFeeder:
    """Records what the inverter pushes into the physics (the real Feeder is another helper's)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, float]] = []

    def set_pv(self, name: str, p_kw: float, q_kvar: float) -> None:
        self.calls.append((name, p_kw, q_kvar))


class Bench:
    """One inverter served on a free loopback port, stepped by hand like the bench loop."""

    def __init__(self, inv: SunSpecInverter, server: ModbusDeviceServer, client: AsyncModbusTcpClient) -> None:
        self.inv, self.server, self.client = inv, server, client
        self.t = 1_780_000_000.0

    async def step(self, sol: Solution, n: int = 1) -> None:
        for _ in range(n):
            self.t += 1.0
            self.inv.observe(self.t, sol)
            await self.server.update(1, self.inv.values(self.t))

    async def read(self, address: int, count: int) -> list[int]:
        out: list[int] = []
        while count:
            n = min(count, 125)
            rr = await self.client.read_holding_registers(address, count=n, device_id=1)
            assert not rr.isError(), rr
            out += rr.registers
            address, count = address + n, count - n
        return out

    async def point(self, name: str) -> Any:
        from protocols.modbus.registermap import decode_point

        p = self.inv.register_map.point(name)
        return decode_point(p, await self.read(p.address, p.words))

    async def write(self, values: dict[str, float | int]) -> int | None:
        """Write points (contiguous, in address order) in one function-16 request; the exception code or None."""
        pts = sorted((self.inv.register_map.point(n) for n in values), key=lambda p: p.address)
        words: list[int] = []
        for a, b in zip(pts, pts[1:], strict=False):
            assert a.end == b.address, f"{a.name} and {b.name} are not contiguous"
        for p in pts:
            words += encode_point(p, values[p.name])  # type: ignore[arg-type]
        rr = await self.client.write_registers(pts[0].address, words, device_id=1)
        return rr.exception_code if rr.isError() else None


@asynccontextmanager
async def served(inv: SunSpecInverter) -> AsyncIterator[Bench]:
    port = free_port()
    server = ModbusDeviceServer.tcp("127.0.0.1", port, {1: inv.register_map})
    await server.start()
    server.on_write(1, inv.on_write)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    try:
        assert await client.connect()
        bench = Bench(inv, server, client)
        await server.update(1, inv.values())
        yield bench
    finally:
        client.close()
        await server.stop()


def _pysunspec_length(model_id: int, counts: dict[str, int]) -> int:
    """L of a model computed from the JSON definition alone: sum of point sizes, repeating groups times count."""

    def size(group: dict[str, Any], path: str) -> int:
        n = sum(int(p.get("size", 1)) for p in group.get("points", []))
        for g in group.get("groups", []):
            gpath = f"{path}.{g['name']}" if path else g["name"]
            n += size(g, gpath) * (counts[gpath] if "count" in g else 1)
        return n

    path = os.path.join(os.path.dirname(mdef.__file__), "models", "json", f"model_{model_id}.json")
    with open(path) as fh:
        return size(json.load(fh)["group"], "") - 2  # L excludes ID and L


def _doc_models(text: str) -> dict[int, int]:
    """Model id -> address from the doc's model table (rows '| 701 | DERMeasureAC | 40070 | 153 |')."""
    return {int(m[1]): int(m[2]) for m in re.finditer(r"^\| (\d+) \| \w+ \| (\d+) \| \d+ \|", text, re.M)}


# --- SunSpec discovery and decoding ---------------------------------------------------------------------


@async_test
async def test_sunspec_walk_finds_the_documented_models_at_their_addresses() -> None:
    async with served(inverter()) as bench:
        assert bytes(b for w in await bench.read(BASE, 2) for b in w.to_bytes(2, "big")) == b"SunS"
        found: dict[int, tuple[int, int]] = {}
        address = BASE + 2
        while True:
            model_id, length = await bench.read(address, 2)
            if model_id == 0xFFFF:
                assert length == 0
                found[model_id] = (address, length)
                break
            found[model_id] = (address, length)
            address += 2 + length
            assert len(found) < 20, "no end model"
    assert list(found) == [1, 701, 702, 703, 704, 705, 706, 711, 0xFFFF]
    assert {m: a for m, (a, _) in found.items()} == _doc_models(DOC_FILE.read_text())
    # the lengths are those of the SunSpec definitions with the documented group counts
    counts = {705: {"Crv": 3, "Crv.Pt": 4}, 706: {"Crv": 3, "Crv.Pt": 2}, 711: {"Ctl": 3}}
    for model_id, (_, length) in list(found.items())[:-1]:
        assert length == _pysunspec_length(model_id, counts.get(model_id, {})), model_id


async def _decode(bench: Bench, model_id: int) -> dict[str, Any]:
    """Read one model's registers and decode them with pysunspec2's own Model class (independent of our map)."""
    block = bench.inv.layout.model(model_id)
    words = await bench.read(block.address, block.length + 2)
    assert words[:2] == [model_id, block.length]
    data = b"".join(w.to_bytes(2, "big") for w in words)
    model = ss_device.Model(model_id=model_id, model_addr=block.address, model_len=block.length, data=data)
    assert model.error_info == ""
    return model.get_dict(computed=True)


@async_test
async def test_pysunspec2_decodes_the_settings_written_and_the_measurements() -> None:
    async with served(inverter()) as bench:
        await bench.step(solution(v_pu=1.02), n=3)
        assert await bench.write({"DERCtlAC.WMaxLimPctEna": 1, "DERCtlAC.WMaxLimPct": 80.0}) is None
        assert await bench.write({"DERCtlAC.VarSetEna": 1, "DERCtlAC.VarSetMod": 4, "DERCtlAC.VarSetPri": 1}) is None
        assert await bench.write({"DERCtlAC.VarSet": -50_000}) is None
        await bench.step(solution(v_pu=1.02, hz=60.01), n=2)
        ctl = await _decode(bench, 704)
        assert ctl["WMaxLimPctEna"] == 1 and ctl["WMaxLimPct"] == pytest.approx(80.0)
        assert ctl["VarSetEna"] == 1 and ctl["VarSetMod"] == 4 and ctl["VarSet"] == -50_000
        meas = await _decode(bench, 701)
        # what the Solution says the terminal sees: 1.02 x 2401.8 V per phase, 1.02 x 4160 V between phases
        assert meas["ACType"] == 2 and meas["ConnSt"] == 1
        assert meas["LNV"] == pytest.approx(1.02 * V_LN, abs=0.1)
        assert meas["LLV"] == pytest.approx(1.02 * 4160.0, abs=0.1)
        assert meas["VL1"] == pytest.approx(1.02 * V_LN, abs=0.1)
        assert meas["Hz"] == pytest.approx(60.01, abs=0.001)
        # what the model produced, within one step of the W/Var scale factor
        w_step = 10.0 ** bench.inv.layout.sf_of("DERMeasureAC.W")
        assert meas["W"] == pytest.approx(bench.inv.p_kw * 1000, abs=w_step)
        assert meas["Var"] == pytest.approx(bench.inv.q_kvar * 1000, abs=w_step)
        assert meas["Var"] < 0  # absorbing: the var setpoint is negative
        assert meas["PF"] == pytest.approx(meas["W"] / math.hypot(meas["W"], meas["Var"]), abs=0.002)
        assert meas["A"] == pytest.approx(math.hypot(meas["W"], meas["Var"]) / (1.02 * V_LN), rel=0.02)  # sum of phases
        cap = await _decode(bench, 702)
        assert cap["WMaxRtg"] == KW * 1000 and cap["VAMaxRtg"] == KVA * 1000
        assert cap["VarMaxAbsRtg"] == Q_MAX_VAR and cap["NorOpCatRtg"] == 1  # CAT_B


# --- behaviour ------------------------------------------------------------------------------------------


@async_test
async def test_absorbing_var_setpoint_reaches_90_percent_after_the_response_time() -> None:
    inv = inverter(**{"DERCtlAC.VarSetEna": 1, "DERCtlAC.VarSet": 0})
    feeder = FakeFeeder()
    x_var = -150_000.0
    async with served(inv) as bench:
        await bench.step(solution(), n=5)
        assert abs(inv.q_kvar) < 0.5
        assert await bench.write({"DERCtlAC.VarSet": x_var}) is None
        fractions = []
        for _ in range(20):
            await bench.step(solution())
            inv.actuate(bench.t, feeder)
            fractions.append(inv.q_kvar * 1000 / x_var)
        # a first-order lag whose open-loop response time (IEEE 1547-2018 3.1: 90 % of the change) is 5 s
        # (OpenDER's CONST_Q_RT) reaches 1 - 10^(-t/5) at t: 37 % after 1 s, 90 % after 5 s. OpenDER's
        # bilinear discretisation at 1 s steps lands within a few % of that: 85..95 % after 5 steps.
        assert 0.1 < fractions[0] < 0.45
        assert fractions[1] < 0.75
        assert 0.85 <= fractions[4] <= 0.95
        assert fractions[19] == pytest.approx(1.0, abs=0.01)
        assert all(b >= a for a, b in zip(fractions, fractions[1:], strict=False))  # monotonic approach
        # the register reads it, and the physics is told to absorb (q < 0)
        assert await bench.point("DERMeasureAC.Var") == pytest.approx(inv.q_kvar * 1000, abs=100)
        assert feeder.calls[-1][0] == "pv675"
        assert feeder.calls[-1][2] == pytest.approx(x_var / 1000, abs=1.5)
        assert feeder.calls[-1][1] == pytest.approx(KW, abs=1)


VV_CURVE_2 = {
    "DERVoltVar.Crv[2].Pt[1].V": 90.0,
    "DERVoltVar.Crv[2].Pt[1].Var": 100.0,
    "DERVoltVar.Crv[2].Pt[2].V": 97.0,
    "DERVoltVar.Crv[2].Pt[2].Var": 0.0,
    "DERVoltVar.Crv[2].Pt[3].V": 101.0,
    "DERVoltVar.Crv[2].Pt[3].Var": 0.0,
    "DERVoltVar.Crv[2].Pt[4].V": 105.0,
    "DERVoltVar.Crv[2].Pt[4].Var": -100.0,
}


@async_test
async def test_volt_var_absorbs_above_the_deadband_as_the_written_curve_says() -> None:
    inv = inverter()
    async with served(inv) as bench:
        await bench.step(solution(v_pu=1.03), n=2)
        assert await bench.write(VV_CURVE_2) is None
        assert await bench.write({"DERVoltVar.Ena": 1, "DERVoltVar.AdptCrvReq": 2}) is None
        await bench.step(solution(v_pu=1.03), n=40)
        # 103 % lies between V3 = 101 % (0 var) and V4 = 105 % (-100 % of VarMax): halfway, -50 % of 220 kvar
        expected_var = (0.0 + (103.0 - 101.0) / (105.0 - 101.0) * (-100.0 - 0.0)) / 100.0 * Q_MAX_VAR
        assert expected_var == pytest.approx(-110_000.0)
        assert inv.q_kvar * 1000 == pytest.approx(expected_var, rel=0.01)
        vv = await _decode(bench, 705)
        active = vv["Crv"][0]
        assert active["ReadOnly"] == 1
        assert [pt["V"] for pt in active["Pt"]] == [90.0, 97.0, 101.0, 105.0]
        assert [pt["Var"] for pt in active["Pt"]] == [100.0, 0.0, 0.0, -100.0]
        assert vv["AdptCrvRslt"] == 1  # COMPLETED
        # inside the deadband the inverter goes back to 0 var
        await bench.step(solution(v_pu=0.99), n=40)
        assert abs(inv.q_kvar) < 1.0


@async_test
async def test_volt_watt_curtails_active_power_at_high_voltage() -> None:
    inv = inverter()
    async with served(inv) as bench:
        await bench.step(solution(v_pu=1.08), n=2)
        assert inv.p_kw == pytest.approx(KW)
        curve = {
            "DERVoltWatt.Crv[2].Pt[1].V": 106.0,
            "DERVoltWatt.Crv[2].Pt[1].W": 100.0,
            "DERVoltWatt.Crv[2].Pt[2].V": 110.0,
            "DERVoltWatt.Crv[2].Pt[2].W": 20.0,
        }
        assert await bench.write(curve) is None
        assert await bench.write({"DERVoltWatt.Ena": 1, "DERVoltWatt.AdptCrvReq": 2}) is None
        await bench.step(solution(v_pu=1.08), n=80)
        # 108 % is halfway from V1 = 106 % (100 %) to V2 = 110 % (20 %): 60 % of 450 kW
        assert inv.p_kw == pytest.approx(0.6 * KW, rel=0.01)
        assert await bench.point("DERMeasureAC.W") == pytest.approx(270_000.0, abs=100)


@async_test
async def test_active_power_limit_caps_output() -> None:
    inv = inverter()
    async with served(inv) as bench:
        assert await bench.write({"DERCtlAC.WMaxLimPctEna": 1, "DERCtlAC.WMaxLimPct": 50.0}) is None
        await bench.step(solution(), n=60)
        assert inv.p_kw == pytest.approx(0.5 * KW, rel=0.01)


@async_test
async def test_permit_service_off_disconnects_and_on_reconnects_after_the_delay() -> None:
    inv = inverter(**{"DEREnterService.ESDlyTms": 10, "DEREnterService.ESRmpTms": 10})
    async with served(inv) as bench:
        await bench.step(solution(), n=3)
        assert inv.p_kw > 400
        assert await bench.write({"DEREnterService.ES": 0}) is None
        await bench.step(solution(), n=3)
        assert inv.p_kw == pytest.approx(0.0, abs=1e-6)
        assert await bench.point("DERMeasureAC.ConnSt") == 0
        assert await bench.point("DERMeasureAC.InvSt") == 7  # STANDBY
        assert await bench.write({"DEREnterService.ES": 1}) is None
        await bench.step(solution(), n=5)
        assert inv.p_kw == pytest.approx(0.0, abs=1e-6)  # still within the 10 s enter-service delay
        await bench.step(solution(), n=30)
        assert inv.p_kw == pytest.approx(KW, rel=0.01)
        assert await bench.point("DERMeasureAC.ConnSt") == 1


def test_missing_or_invalid_irradiance_gives_no_power() -> None:
    for sol in (solution(irradiance=None), solution(irradiance=math.nan), solution(irradiance=-0.2)):
        inv = inverter()
        for k in range(3):
            inv.observe(float(k), sol)
        assert inv.p_kw == 0.0
        assert inv.values()["DERMeasureAC.W"] == 0.0
        assert inv.values()["DERMeasureAC.InvSt"] == 1  # SLEEPING


# --- refused writes -------------------------------------------------------------------------------------


@async_test
async def test_bad_writes_are_refused_with_exception_3_and_change_nothing() -> None:
    inv = inverter()
    async with served(inv) as bench:
        await bench.step(solution(), n=2)
        before = await bench.read(BASE, 520)
        not_increasing = dict(VV_CURVE_2) | {"DERVoltVar.Crv[2].Pt[2].V": 102.0}  # V2 > V3
        assert await bench.write(not_increasing) == 3
        assert await bench.write({"DERCtlAC.VarSetMod": 7}) == 3  # enum out of range
        assert await bench.write({"DERCtlAC.VarSetMod": 2}) == 3  # VAR_AVAIL_PCT: not supported
        assert await bench.write({"DERCtlAC.VarSet": -300_000}) == 3  # beyond the 220 kvar rating
        assert await bench.write({"DERCtlAC.WMaxLimPct": 120.0}) == 3
        assert await bench.write({"DERVoltWatt.Crv[2].Pt[1].V": 111.0}) == 3  # outside IEEE 1547 Table 10
        assert await bench.write({"DERVoltVar.Crv[2].RspTms": 0.5}) == 3  # below 1 s (Table 8, Cat B)
        assert await bench.write({"DERFreqDroop.Ctl[2].KOf": 0.1}) == 3  # beyond 0.07 (Table 24)
        assert await bench.write({"DERVoltVar.AdptCrvReq": 4}) == 3  # only 3 curves
        # two reactive power modes at once
        assert await bench.write({"DERCtlAC.VarSetEna": 1}) is None
        assert await bench.write({"DERVoltVar.Ena": 1}) == 3
        assert await bench.write({"DERCtlAC.VarSetEna": 0}) is None
        # read-only or fixed points: illegal data address
        assert await bench.write({"DERMeasureAC.W_SF": 0}) == 2
        assert await bench.write({"DERVoltVar.Crv[1].Pt[1].V": 80.0}) == 2  # the active curve is read-only
        assert await bench.write({"DERCtlAC.WSetEna": 1}) == 2  # not implemented
        # writing a read-only point with the value it holds is harmless (block writes)
        assert await bench.write({"DERVoltVar.Crv[2].ReadOnly": 0}) is None
        after = await bench.read(BASE, 520)
        assert after == before
        assert inv.settings["DERCtlAC.VarSetMod"] == 4 and inv.settings["DERCtlAC.VarSet"] == 0


# --- SunSpec 704 reversion timers -----------------------------------------------------------------------

VAR_BLOCK = {  # DERCtlAC 40331..40342, in address order: a var set point with its reversion
    "DERCtlAC.VarSetEna": 1,
    "DERCtlAC.VarSetMod": 4,  # VARS
    "DERCtlAC.VarSetPri": 1,  # read-only, written with the value it holds
    "DERCtlAC.VarSet": -100_000,
    "DERCtlAC.VarSetRvrt": 0,
    "DERCtlAC.VarSetPct": 0.0,
    "DERCtlAC.VarSetPctRvrt": 0.0,
    "DERCtlAC.VarSetEnaRvrt": 0,
    "DERCtlAC.VarSetRvrtTms": 20,
}


@async_test
async def test_a_var_set_point_reverts_when_its_timer_runs_out_and_a_rewrite_restarts_the_timer() -> None:
    inv = inverter()
    async with served(inv) as bench:
        await bench.step(solution(), n=3)
        assert await bench.write(VAR_BLOCK) is None  # the timer runs from the last step, t_w
        await bench.step(solution(), n=10)  # t_w + 10
        assert inv.q_kvar == pytest.approx(-100.0, rel=0.02)  # 10 s: past the 5 s response time
        assert await bench.point("DERCtlAC.VarSetRvrtRem") == 10
        assert await bench.write({"DERCtlAC.VarSet": -100_000}) is None  # the master refreshes it: 20 s again
        await bench.step(solution(), n=19)  # t_w + 29
        assert await bench.point("DERCtlAC.VarSetRvrtRem") == 1 and await bench.point("DERCtlAC.VarSetEna") == 1
        await bench.step(solution())  # t_w + 30: 20 s after the refresh
        assert await bench.point("DERCtlAC.VarSetEna") == 0  # VarSetEnaRvrt
        assert await bench.point("DERCtlAC.VarSet") == 0  # VarSetRvrt
        assert await bench.point("DERCtlAC.VarSetRvrtRem") == 0
        assert inv.der.der.der_file.CONST_Q_MODE_ENABLE is False  # carried out by OpenDER's own controls
        await bench.step(solution(), n=40)
        assert abs(inv.q_kvar) < 1.0  # back to unity power factor


@async_test
async def test_constant_power_factor_reverts_to_its_reversion_power_factor() -> None:
    inv = inverter()
    async with served(inv) as bench:
        await bench.step(solution(), n=3)
        # the reversion values alone start nothing
        assert await bench.write({"DERCtlAC.PFWInjRvrt.PF": 0.98, "DERCtlAC.PFWInjRvrt.Ext": 0}) is None
        assert await bench.write({"DERCtlAC.PFWInj.PF": 0.95, "DERCtlAC.PFWInj.Ext": 1}) is None  # function off
        assert await bench.point("DERCtlAC.PFWInjRvrtRem") == 0
        enable = {"DERCtlAC.PFWInjEna": 1, "DERCtlAC.PFWInjEnaRvrt": 1, "DERCtlAC.PFWInjRvrtTms": 30}
        assert await bench.write(enable) is None
        await bench.step(solution(), n=29)
        # absorbing at PF 0.95: Q = -P tan(acos 0.95) = -0.3287 P
        assert inv.q_kvar == pytest.approx(-inv.p_kw * math.tan(math.acos(0.95)), rel=0.02)
        assert await bench.point("DERCtlAC.PFWInjRvrtRem") == 1
        await bench.step(solution())
        assert await bench.point("DERCtlAC.PFWInjEna") == 1  # PFWInjEnaRvrt = 1: the function stays on ...
        assert await bench.point("DERCtlAC.PFWInj.PF") == pytest.approx(0.98)  # ... at its reversion PF
        assert await bench.point("DERCtlAC.PFWInj.Ext") == 0
        await bench.step(solution(), n=40)
        # injecting at PF 0.98: Q = +P tan(acos 0.98) = +0.2031 P
        assert inv.q_kvar == pytest.approx(inv.p_kw * math.tan(math.acos(0.98)), rel=0.02)


@async_test
async def test_an_active_power_limit_reverts_to_full_power() -> None:
    inv = inverter()
    async with served(inv) as bench:
        await bench.step(solution(), n=3)
        limit = {"DERCtlAC.WMaxLimPctEna": 1, "DERCtlAC.WMaxLimPct": 50.0, "DERCtlAC.WMaxLimPctRvrt": 100.0,
                 "DERCtlAC.WMaxLimPctEnaRvrt": 0, "DERCtlAC.WMaxLimPctRvrtTms": 60}  # fmt: skip
        assert await bench.write(limit) is None
        await bench.step(solution(), n=59)
        assert inv.p_kw == pytest.approx(0.5 * KW, rel=0.01)
        await bench.step(solution())
        assert await bench.point("DERCtlAC.WMaxLimPctEna") == 0
        assert await bench.point("DERCtlAC.WMaxLimPct") == pytest.approx(100.0)
        await bench.step(solution(), n=60)
        assert inv.p_kw == pytest.approx(KW, rel=0.01)


@async_test
async def test_no_timer_without_a_time_or_a_set_point_write_and_disabling_the_function_stops_it() -> None:
    inv = inverter()
    async with served(inv) as bench:
        await bench.step(solution(), n=3)
        assert await bench.write(VAR_BLOCK | {"DERCtlAC.VarSetRvrtTms": 0}) is None
        await bench.step(solution(), n=100)
        assert await bench.point("DERCtlAC.VarSetEna") == 1  # no timer: the set point holds
        # a time alone starts nothing; the next set point write does
        assert await bench.write({"DERCtlAC.VarSetEnaRvrt": 1, "DERCtlAC.VarSetRvrtTms": 10}) is None
        await bench.step(solution(), n=20)
        assert await bench.point("DERCtlAC.VarSetRvrtRem") == 0 and await bench.point("DERCtlAC.VarSetEna") == 1
        assert await bench.write({"DERCtlAC.VarSet": -50_000}) is None
        await bench.step(solution())
        assert await bench.point("DERCtlAC.VarSetRvrtRem") == 9
        # the master turns the function off itself: nothing is left to revert (VarSetEnaRvrt = 1 would turn it on)
        assert await bench.write({"DERCtlAC.VarSetEna": 0}) is None
        await bench.step(solution(), n=20)
        assert await bench.point("DERCtlAC.VarSetEna") == 0 and await bench.point("DERCtlAC.VarSetRvrtRem") == 0
        # a time of 0 written while a timer runs stops it too
        assert await bench.write({"DERCtlAC.VarSetEna": 1, "DERCtlAC.VarSetMod": 4}) is None
        assert await bench.write({"DERCtlAC.VarSetRvrtTms": 0}) is None
        await bench.step(solution(), n=20)
        assert await bench.point("DERCtlAC.VarSetEna") == 1


@pytest.mark.parametrize(
    ("values", "bad"),
    [
        ({"DERCtlAC.VarSetRvrtTms": 86_401}, "longer than a day"),
        ({"DERCtlAC.VarSetRvrt": -300_000}, "beyond the 220 kvar rating"),
        ({"DERCtlAC.VarSetEnaRvrt": 2}, "not an enum value"),
        ({"DERCtlAC.PFWInjRvrt.PF": 0.5}, "below 0.898"),
        ({"DERCtlAC.WMaxLimPctRvrt": 120.0}, "above 100 %"),
    ],
)
@async_test
async def test_reversion_settings_out_of_range_are_refused_with_3(values: dict[str, float], bad: str) -> None:
    inv = inverter()
    async with served(inv) as bench:
        await bench.step(solution())
        assert await bench.write(values) == 3, bad


@async_test
async def test_a_reversion_the_rules_refuse_disables_the_function_instead(mocker, caplog) -> None:
    """A reversion that would break a rule cannot be made through writes (each value is checked when written, and
    a timer runs only while its function is the one reactive mode on): the guard is tested with a refusal
    injected into the settings check."""
    from sim_hw.devices import inverter as module

    real = module._check_settings

    def refuse_the_reversion(s, changes, q_max_kvar):  # type: ignore[no-untyped-def]
        if "DERCtlAC.VarSetPct" in changes and changes.get("DERCtlAC.VarSetEna") == 1:
            return "DERCtlAC.VarSetEna", "injected refusal"
        return real(s, changes, q_max_kvar)

    inv = inverter()
    async with served(inv) as bench:
        await bench.step(solution())
        assert await bench.write(VAR_BLOCK | {"DERCtlAC.VarSetEnaRvrt": 1, "DERCtlAC.VarSetRvrtTms": 5}) is None
        mocker.patch.object(module, "_check_settings", side_effect=refuse_the_reversion)
        await bench.step(solution(), n=5)
        assert await bench.point("DERCtlAC.VarSetEna") == 0
    assert any("inverter_reversion_refused" in r.getMessage() for r in caplog.records)


# --- parameters and errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"kva": 0}, "kva"),
        ({"kw": 600.0}, "kw"),  # above kva
        ({"kva": math.inf}, "kva"),
        ({"site": ""}, "site"),
        ({"phases": "ab"}, "phases"),
        ({"category": "A"}, "category"),
        ({"nominal_hz": 50.0}, "nominal_hz"),
        ({"step_s": 0.0}, "step_s"),
        ({"v_nom_ll_v": -1}, "v_nom_ll_v"),
        ({"settings": {"DERMeasureAC.W": 1}}, "settings.DERMeasureAC.W"),
        ({"settings": {"DERCtlAC.VarSet": 1e6}}, "settings.DERCtlAC.VarSet"),
    ],
)
def test_bad_parameters_name_the_key(kw: dict[str, Any], key: str) -> None:
    args: dict[str, Any] = {"site": "pv675", "bus": "675", "kva": KVA, "kw": KW} | kw
    with pytest.raises(InverterConfigError) as err:
        SunSpecInverter("inv1", **args)
    assert err.value.key == f"inv1.{key}"


def test_from_options_refuses_unknown_and_missing_keys() -> None:
    with pytest.raises(InverterConfigError, match="inv9.colour"):
        SunSpecInverter.from_options("inv9", {"site": "pv1", "bus": "1", "kva": 1, "kw": 1, "colour": "red"})
    with pytest.raises(InverterConfigError, match="inv9.kw"):
        SunSpecInverter.from_options("inv9", {"site": "pv1", "bus": "1", "kva": 1})
    inv = SunSpecInverter.from_options("inv9", {"site": "pv1", "bus": "634", "kva": 10, "kw": 8, "v_nom_ll_v": 480})
    assert inv.site == "pv1" and inv.values()["DERCapacity.VNomRtg"] == 480


def test_observe_refuses_a_missing_bus_and_time_running_backwards() -> None:
    inv = inverter()
    with pytest.raises(InverterError, match="'675'"):
        inv.observe(0.0, solution(bus="680"))
    inv.observe(10.0, solution())
    with pytest.raises(InverterError, match="backwards"):
        inv.observe(9.0, solution())
    single = SunSpecInverter("inv2", site="pv652", bus="652", kva=10, kw=10, phases="c")
    sol = Solution(t=0, converged=True, bus_v={"652": {"a": V_LN + 0j}}, base_kv_ln={"652": V_LN / 1000})
    with pytest.raises(InverterError, match="phase 'c'"):
        single.observe(0.0, sol)


def _inverter_500kva() -> SunSpecInverter:
    return SunSpecInverter("inv1", site="pv675", bus="675", kva=500.0, kw=450.0)


def _bus(v: complex) -> Solution:
    return Solution(
        t=0.0,
        converged=True,
        bus_v={"675": dict.fromkeys("abc", v)},
        base_kv_ln={"675": V_LN / 1000},
        irradiance_pu=1.0,
    )


def test_inverter_refuses_a_non_numeric_bus_voltage_with_its_own_error_and_keeps_its_state() -> None:
    """A NaN voltage (a solve gone wrong) is refused with an InverterError naming the inverter, bus and phase
    before it reaches OpenDER (whose bare ValueError names no device), and the inverter keeps its last good
    measurement."""
    inv = _inverter_500kva()
    inv.observe(1.0, _bus(V_LN + 0j))
    before = inv.values()
    with pytest.raises(InverterError, match=r"inverter 'inv1': bus '675' phase a voltage nan"):
        inv.observe(2.0, _bus(complex(math.nan, 0.0)))
    assert inv.values()["DERMeasureAC.LNV"] == pytest.approx(V_LN)  # the last good measurement stands
    assert inv.values()["DERMeasureAC.W"] == before["DERMeasureAC.W"]
    inv.observe(3.0, _bus(V_LN + 0j))  # and it carries on with the next good solution


def test_single_phase_inverter_reports_phase_one_only() -> None:
    inv = SunSpecInverter("inv2", site="pv652", bus="652", kva=10, kw=10, phases="a")
    sol = Solution(
        t=0, converged=True, bus_v={"652": {"a": 1.01 * V_LN + 0j}}, base_kv_ln={"652": V_LN / 1000}, irradiance_pu=0.5
    )
    for k in range(3):
        inv.observe(float(k), sol)
    v = inv.values()
    assert inv.p_kw == pytest.approx(5.0)
    assert v["DERMeasureAC.ACType"] == 0 and v["DERMeasureAC.VL1"] == pytest.approx(1.01 * V_LN)
    assert v["DERMeasureAC.AL1"] == pytest.approx(5000.0 / (1.01 * V_LN))


def test_every_value_encodes_into_its_register() -> None:
    inv = inverter()
    inv.observe(0.0, solution())
    values = inv.values()
    assert set(values) == {p.name for p in inv.register_map.points}
    for p in inv.register_map.points:
        encode_point(p, values[p.name])  # raises if a value does not fit its type and SF


def test_scale_factor_helpers() -> None:
    # SunSpec: value = raw x 10^SF
    assert to_raw(0.036, -3) == 36 and from_raw(36, -3) == pytest.approx(0.036)
    assert to_raw(450_000.0, 2) == 4500 and from_raw(4500, 2) == 450_000.0
    assert to_raw(-1.5, 0) == -2 and from_raw(-7, 0) == -7


def test_layout_errors_name_the_model_or_group() -> None:
    with pytest.raises(SunSpecLayoutError, match="model 9999"):
        build_layout((9999,), {}, {})
    with pytest.raises(SunSpecLayoutError, match="Crv"):
        build_layout((705,), {}, {})
    with pytest.raises(SunSpecLayoutError, match="NoSuch_SF"):
        build_layout((701,), {}, {"DERMeasureAC.NoSuch_SF": 1})


# --- the manual -----------------------------------------------------------------------------------------


def _doc_rows(text: str) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    cols = ("name", "address", "type", "registers", "sf", "unit", "access", "description")
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(cols) and cells[1].isdigit():
            rows[cells[0].strip("`")] = dict(zip(cols, cells, strict=True))
    return rows


def _doc_mismatches(text: str, inv: SunSpecInverter) -> list[str]:
    rows = _doc_rows(text)
    problems = []
    if list(rows) != [p.name for p in inv.register_map.points]:
        problems.append("points differ")
    for p in inv.register_map.points:
        row = rows.get(p.name)
        if row is None:
            continue
        sp = inv.layout.point(p.name)
        expected = {
            "address": str(p.address),
            "type": sp.sunspec_type,
            "registers": str(p.words),
            "sf": "" if sp.sf is None else str(inv.layout.sf_of(p.name)),
            "unit": sp.units,
            "access": "RW" if p.name in WRITABLE else "R",
        }
        for column, value in expected.items():
            if row[column] != value:
                problems.append(f"{p.name}.{column}: doc {row[column]!r}, map {value!r}")
    return problems


def test_doc_register_table_matches_the_map() -> None:
    assert _doc_mismatches(DOC_FILE.read_text(), inverter()) == []


def test_doc_check_catches_a_drifted_address() -> None:
    text = DOC_FILE.read_text()
    drifted = text.replace("| `DERMeasureAC.W` | 40080 |", "| `DERMeasureAC.W` | 40081 |")
    assert drifted != text
    assert _doc_mismatches(drifted, inverter()) == ["DERMeasureAC.W.address: doc '40081', map '40080'"]


def test_the_map_ends_with_the_end_model() -> None:
    inv = inverter()
    last = inv.register_map.points[-1]
    assert last.name == "end.L" and last.address == inv.layout.model(0xFFFF).address + 1
    assert inv.register_map.point("SunS").table is Table.HOLDING
