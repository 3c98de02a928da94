"""The device link: named points read fresh and written in one request, over real Modbus TCP to the bench's
capacitor bank controller; every refusal keeps the device's exception code."""

from __future__ import annotations

import pytest
from helpers.aio import async_test
from helpers.devicerigs import capbank_rig

from agent.devicelink import LinkError, RegisterMapLink, SharedTransport
from protocols.modbus.errors import ModbusExceptionResponse


@async_test
async def test_a_select_before_operate_through_the_link_switches_the_bank() -> None:
    async with capbank_rig(closed=False) as rig:
        link = RegisterMapLink(rig.device(), rig.transport())
        try:
            got = await link.read(["closed", "mode", "operation_count", "model", "lockout_active"])
            assert got == {"closed": False, "mode": 0, "operation_count": 0, "model": "SIM-CBC-1",
                           "lockout_active": False}  # fmt: skip
            await link.write({"sbo_select": 1, "sbo_token": 0x2A})  # one request: registers 0..1
            await link.write({"sbo_operate": 1, "sbo_operate_token": 0x2A})
            await rig.step()
            assert await link.read(["closed", "operation_count", "last_result"]) == {
                "closed": True, "operation_count": 1, "last_result": 1}  # fmt: skip
        finally:
            await link.close()


@async_test
async def test_a_refused_write_keeps_the_devices_exception_code() -> None:
    """A close during the discharge lockout: exception 6 (server device busy), LOCKOUT left in last_result."""
    async with capbank_rig(closed=True) as rig:
        link = RegisterMapLink(rig.device(), rig.transport())
        try:
            await link.write({"sbo_select": 2, "sbo_token": 7})
            await link.write({"sbo_operate": 2, "sbo_operate_token": 7})
            await rig.step()
            with pytest.raises(ModbusExceptionResponse) as info:
                await link.write({"sbo_select": 1, "sbo_token": 8})
            assert info.value.code == 6
            await rig.step()
            assert (await link.read(["last_result"]))["last_result"] == 14  # LOCKOUT
        finally:
            await link.close()


@async_test
async def test_what_cannot_be_one_request_is_refused_before_anything_is_sent() -> None:
    async with capbank_rig() as rig:
        link = RegisterMapLink(rig.device(), rig.transport())
        try:
            with pytest.raises(LinkError, match="not contiguous"):
                await link.write({"sbo_select": 1, "mode": 0})
            with pytest.raises(LinkError, match="no point 'sbo_selekt'"):
                await link.write({"sbo_selekt": 1})
            with pytest.raises(LinkError, match="not holding registers"):
                await link.write({"closed": True})
            with pytest.raises(LinkError, match="out of range|not"):
                await link.write({"mode": -1})
            assert link.writes == 0
        finally:
            await link.close()


class CountingTransport:
    device = "fake"

    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


@async_test
async def test_a_shared_transport_closes_when_its_last_user_closes() -> None:
    inner = CountingTransport()
    shared = SharedTransport(inner)  # type: ignore[arg-type]
    shared.attach()
    shared.attach()
    await shared.close()
    assert inner.closed == 0, "the poller stopped; the link still needs the line"
    await shared.close()
    assert inner.closed == 1
