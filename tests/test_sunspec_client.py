"""SunSpec writes with readback over real Modbus TCP against the bench's inverter: a volt-var curve goes in one
function-16 request and reads back (applied), a curve the inverter refuses comes back refused with its exception
code, a device that acknowledges and ignores the write comes back as a mismatch; values are encoded with the SF the
device holds at the time; and pysunspec2's own client, which is not ours, reads back the curve we wrote."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from helpers.aio import async_test
from helpers.sunspec import served_inverter
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from protocols.modbus.client import TcpTransport
from protocols.modbus.registermap import Table
from protocols.sunspec.client import discover, read_points, write_points
from protocols.sunspec.write import Applied, Failed, Mismatch, Refused, SunSpecWriteError

VV = "DERVoltVar"


def curve(n: int, v: Sequence[float], var: Sequence[float]) -> dict[str, float]:
    """Volt-var curve ``n``'s points: V [% VNom] and Var [% of VarMax] (IEEE 1547-2018 Table 8's shape)."""
    return {f"{VV}.Crv[{n}].Pt[{i}].{k}": x for i, (a, b) in enumerate(zip(v, var, strict=True), 1)
            for k, x in (("V", a), ("Var", b))}  # fmt: skip


class CountingTransport(TcpTransport):
    """Modbus TCP that records the function-16 requests it sends: (address, count)."""

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port, timeout_s=1.0)
        self.writes: list[tuple[int, int]] = []

    async def write_registers(self, start: int, values: Sequence[int], unit_id: int) -> None:
        self.writes.append((start, len(values)))
        await super().write_registers(start, values, unit_id)


@async_test
async def test_a_volt_var_curve_goes_in_one_request_and_reads_back_applied() -> None:
    async with served_inverter() as rig:
        t = CountingTransport(rig.port)
        try:
            layout = (await discover(t, 1)).layout
            values = curve(2, (93.5, 97.0, 103.0, 106.5), (50.0, 10.0, -10.0, -50.0))
            outcome = await write_points(t, 1, layout, values)
        finally:
            await t.close()
    assert isinstance(outcome, Applied) and outcome.outcome == "applied" and outcome.requests == 1
    assert t.writes == [(layout.point(f"{VV}.Crv[2].Pt[1].V").register.address, 8)]
    assert outcome.readback == values
    held = {k: rig.inv.settings[k] for k in values}
    assert held == values, "the inverter took the curve"


@async_test
async def test_a_curve_the_device_refuses_comes_back_refused_with_its_code() -> None:
    async with served_inverter() as rig:
        t = TcpTransport("127.0.0.1", rig.port, timeout_s=1.0)
        try:
            layout = (await discover(t, 1)).layout
            before = {k: v for k, v in rig.inv.settings.items() if k.startswith(f"{VV}.Crv[2].Pt")}
            # V2 < V1: not a curve (IEEE 1547-2018 Table 8 needs V1 < V2 <= V3 < V4); the inverter answers exception 3
            outcome = await write_points(t, 1, layout, curve(2, (95.0, 93.0, 103.0, 107.0), (44.0, 0.0, 0.0, -44.0)))
            after = await read_points(t, 1, layout, list(before))
        finally:
            await t.close()
    assert isinstance(outcome, Refused) and outcome.outcome == "refused"
    assert (outcome.code, outcome.meaning) == (3, "illegal data value")
    assert outcome.written == () and len(outcome.points) == 8 and outcome.count == 8
    assert {k: v for k, (v, _) in after.items()} == before, "nothing of the refused curve was stored"


@async_test
async def test_a_device_that_ignores_the_write_comes_back_as_a_mismatch_naming_every_point() -> None:
    async with served_inverter(ignore_writes=True) as rig:
        t = TcpTransport("127.0.0.1", rig.port, timeout_s=1.0)
        try:
            layout = (await discover(t, 1)).layout
            values = curve(2, (93.0, 97.0, 103.0, 107.0), (50.0, 10.0, -10.0, -50.0))
            outcome = await write_points(t, 1, layout, values)
        finally:
            await t.close()
    assert isinstance(outcome, Mismatch) and outcome.outcome == "mismatch"
    assert [m.name for m in outcome.mismatches] == list(values)
    # what it holds: the Category B default of IEEE 1547-2018 Table 8, which it kept
    assert [(m.wanted, m.read) for m in outcome.mismatches[:2]] == [(93.0, 92.0), (50.0, 100.0)]
    assert outcome.readback[f"{VV}.Crv[2].Pt[4].V"] == 108.0


@async_test
async def test_values_are_encoded_with_the_sf_the_device_holds_at_the_time() -> None:
    async with served_inverter() as rig:
        rig.server.on_write(1, None)  # store what comes: this test looks at the raw registers
        await rig.server.update(1, {f"{VV}.V_SF": -2})
        t = TcpTransport("127.0.0.1", rig.port, timeout_s=1.0)
        try:
            layout = (await discover(t, 1)).layout
            name = f"{VV}.Crv[2].Pt[1].V"
            outcome = await write_points(t, 1, layout, {name: 92.35})
            address = layout.point(name).register.address
            raw = await rig.server.registers(1, Table.HOLDING, address, 1)
        finally:
            await t.close()
    assert raw == [9235]  # 92.35 / 10^-2
    assert isinstance(outcome, Applied) and outcome.readback == {name: 92.35}


@async_test
async def test_a_read_only_point_is_refused_before_anything_is_sent() -> None:
    async with served_inverter() as rig:
        t = CountingTransport(rig.port)
        try:
            layout = (await discover(t, 1)).layout
            with pytest.raises(SunSpecWriteError, match=r"DERVoltVar.Crv\[1\].ReadOnly: read-only"):
                await write_points(t, 1, layout, {f"{VV}.Crv[1].ReadOnly": 0})
        finally:
            await t.close()
    assert t.writes == []


@async_test
async def test_a_device_that_stops_answering_gives_failed_naming_the_stage() -> None:
    async with served_inverter() as rig:
        t = TcpTransport("127.0.0.1", rig.port, timeout_s=0.2, retries=0)
        try:
            layout = (await discover(t, 1)).layout
            rig.server.set_fault(1, "silent")
            outcome = await write_points(t, 1, layout, {f"{VV}.Crv[2].Pt[1].V": 93.0})
        finally:
            await t.close()
    assert isinstance(outcome, Failed) and outcome.stage == "scale factors" and "no answer" in outcome.error
    assert outcome.written == ()


def _read_with_pysunspec2(port: int, curve_index: int) -> tuple[list[tuple[float, float]], int]:
    """Scan the device and read one volt-var curve with pysunspec2's own (blocking) Modbus client."""
    device = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port, timeout=2)
    try:
        device.scan()
        vv = device.models[VV][0]
        vv.read()
        crv = vv.Crv[curve_index - 1]
        return [(pt.V.cvalue, pt.Var.cvalue) for pt in crv.Pt], crv.ActPt.value
    finally:
        device.close()


@async_test
async def test_pysunspec2s_own_client_reads_back_the_curve_we_wrote() -> None:
    async with served_inverter() as rig:
        t = TcpTransport("127.0.0.1", rig.port, timeout_s=1.0)
        try:
            layout = (await discover(t, 1)).layout
            values = curve(3, (93.5, 97.0, 103.0, 106.5), (44.0, 0.0, 0.0, -44.0))
            assert isinstance(await write_points(t, 1, layout, values), Applied)
        finally:
            await t.close()
        points, active = await asyncio.to_thread(_read_with_pysunspec2, rig.port, 3)
    assert points == [(93.5, 44.0), (97.0, 0.0), (103.0, 0.0), (106.5, -44.0)]
    assert active == 4
