"""TcpTransport against real sockets on 127.0.0.1: a pymodbus server, a mute one, a babbling one."""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from helpers.aio import arun, async_test
from helpers.modbus import modbus_server, raw_server
from helpers.net import free_port

from protocols.modbus.client import TcpTransport
from protocols.modbus.errors import (
    ModbusConnectionError,
    ModbusDeviceError,
    ModbusExceptionResponse,
    ModbusFrameError,
    ModbusTimeout,
)
from protocols.modbus.registermap import Table


@asynccontextmanager
async def tcp_transport(port: int, *, timeout_s: float, retries: int) -> AsyncIterator[TcpTransport]:
    """A transport to 127.0.0.1:``port``, closed when the block ends (before the server it talks to)."""
    t = TcpTransport("127.0.0.1", port, timeout_s=timeout_s, retries=retries)
    try:
        yield t
    finally:
        await t.close()


@async_test
async def test_reads_every_table_and_both_units() -> None:
    port = free_port()
    async with modbus_server(port), tcp_transport(port, timeout_s=1.0, retries=0) as t:
        assert await t.read(Table.HOLDING, 0, 5, 1) == [100, 101, 102, 103, 104]
        assert await t.read(Table.HOLDING, 45, 5, 1) == [145, 146, 147, 148, 149]
        assert await t.read(Table.INPUT, 2, 3, 1) == [202, 203, 204]
        assert await t.read(Table.COIL, 0, 5, 1) == [True, False, True, False, True]  # not padded
        assert await t.read(Table.DISCRETE, 0, 2, 1) == [True, True]
        assert await t.read(Table.HOLDING, 0, 3, 2) == [7, 7, 7]


@async_test
async def test_values_changed_on_the_server_are_read_back_and_writes_land() -> None:
    port = free_port()
    async with modbus_server(port) as server, tcp_transport(port, timeout_s=1.0, retries=0) as t:
        await server.async_setValues(1, 3, 10, [0x4366, 0x8000])
        assert await t.read(Table.HOLDING, 10, 2, 1) == [0x4366, 0x8000]
        await t.write_registers(0, [1, 2, 3], 1)
        assert await t.read(Table.HOLDING, 0, 4, 1) == [1, 2, 3, 103]
        await t.write_coil(1, True, 1)
        assert await t.read(Table.COIL, 0, 2, 1) == [True, True]


@async_test
async def test_address_the_server_lacks_is_exception_2() -> None:
    port = free_port()
    async with modbus_server(port), tcp_transport(port, timeout_s=1.0, retries=2) as t:
        with pytest.raises(ModbusExceptionResponse) as info:
            await t.read(Table.HOLDING, 45, 10, 1)  # 50..54 do not exist
        assert info.value.code == 2
        assert info.value.name == "illegal data address"
        assert "exception=2" in str(info.value) and f"tcp:127.0.0.1:{port}/1" in str(info.value)
        # the link survives an exception answer
        assert await t.read(Table.HOLDING, 0, 1, 1) == [100]


@async_test
async def test_silent_server_times_out_within_the_timeout() -> None:
    port = free_port()
    async with raw_server(port, lambda req: None), tcp_transport(port, timeout_s=0.2, retries=1) as t:
        start = time.monotonic()
        with pytest.raises(ModbusTimeout) as info:
            await t.read(Table.HOLDING, 0, 2, 1)
        elapsed = time.monotonic() - start
        assert info.value.device == f"tcp:127.0.0.1:{port}/1"
        # 2 attempts of 0.2 s each; generous upper bound for a loaded machine, not a perf check
        assert 0.35 <= elapsed < 2.0


def _mbap_echo(pdu: bytes) -> Callable[[bytes], bytes]:
    """A reply with the request's transaction id and a well-formed MBAP header around ``pdu``."""

    def reply(req: bytes) -> bytes:
        return req[:4] + (len(pdu) + 1).to_bytes(2, "big") + req[6:7] + pdu

    return reply


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(lambda req: b"\xde\xad\xbe\xef" * 8, id="random-junk"),
        pytest.param(lambda req: b"\x00" * 300, id="zeros"),
        pytest.param(lambda req: req[:4] + b"\x00\xff" + req[6:], id="mbap-length-lies"),
        pytest.param(_mbap_echo(b"\x03\x04\x00\x01"), id="byte-count-too-big"),
        pytest.param(_mbap_echo(b"\x03\x02\x00\x01"), id="one-register-for-two"),
        pytest.param(_mbap_echo(b"\x55\x01\x02"), id="unknown-function"),
        pytest.param(_mbap_echo(b"\x04\x04\x00\x01\x00\x02"), id="wrong-function"),
    ],
)
@async_test
async def test_garbage_answers_are_frame_errors_or_timeouts(reply) -> None:
    port = free_port()
    async with raw_server(port, reply), tcp_transport(port, timeout_s=0.2, retries=1) as t:
        with pytest.raises(ModbusDeviceError) as info:
            await t.read(Table.HOLDING, 0, 2, 1)
        assert isinstance(info.value, ModbusFrameError | ModbusTimeout), repr(info.value)


@async_test
async def test_short_register_answer_is_a_frame_error() -> None:
    port = free_port()
    async with raw_server(port, _mbap_echo(b"\x03\x02\x00\x01")), tcp_transport(port, timeout_s=0.3, retries=0) as t:
        with pytest.raises(ModbusFrameError):
            await t.read(Table.HOLDING, 0, 2, 1)


@async_test
async def test_connection_refused() -> None:
    port = free_port()  # nothing listens there
    t = TcpTransport("127.0.0.1", port, timeout_s=0.5, retries=1)
    with pytest.raises(ModbusConnectionError) as info:
        await t.read(Table.HOLDING, 0, 1, 1)
    assert info.value.device == f"tcp:127.0.0.1:{port}/1"
    await t.close()


@async_test
async def test_reconnects_on_the_next_call_after_the_server_comes_back() -> None:
    port = free_port()
    async with tcp_transport(port, timeout_s=0.3, retries=0) as t:
        async with modbus_server(port):
            assert await t.read(Table.HOLDING, 0, 1, 1) == [100]
        with pytest.raises((ModbusConnectionError, ModbusTimeout)):
            await t.read(Table.HOLDING, 0, 1, 1)
        with pytest.raises(ModbusConnectionError):
            await t.read(Table.HOLDING, 0, 1, 1)
        async with modbus_server(port):
            assert await t.read(Table.HOLDING, 0, 1, 1) == [100]


@pytest.mark.parametrize(
    "table,start,count", [(Table.HOLDING, 0, 126), (Table.COIL, 0, 2001), (Table.HOLDING, 65535, 2)]
)
@async_test
async def test_out_of_spec_read_is_refused_before_sending(table, start, count) -> None:
    t = TcpTransport("127.0.0.1", free_port(), timeout_s=0.2, retries=0)
    with pytest.raises(ValueError):
        await t.read(table, start, count, 1)


# ---- answers that are well formed but wrong ---------------------------------------------------------------------


def test_tcp_answer_with_a_wrong_byte_count_is_a_frame_error() -> None:
    """A well-formed MBAP answer whose PDU holds 1 register where 2 were asked for."""

    def reply(req: bytes) -> bytes:
        tid = req[:2]
        pdu = b"\x03\x02\x03\xe8"
        return tid + b"\x00\x00" + struct.pack(">H", len(pdu) + 1) + req[6:7] + pdu

    async def go():
        port = free_port()
        async with raw_server(port, reply):
            t = TcpTransport("127.0.0.1", port, timeout_s=0.3, retries=0)
            with pytest.raises(ModbusFrameError):
                await t.read(Table.HOLDING, 0, 2, 1)
            await t.close()

    arun(go())


@pytest.mark.parametrize("wrong", ["unit", "transaction"])
def test_tcp_answer_for_another_unit_or_transaction_is_never_taken(wrong: str) -> None:
    """A gateway that answers with the wrong unit id or transaction id: an error, not the data."""

    def reply(req: bytes) -> bytes:
        tid, unit = struct.unpack(">H", req[:2])[0], req[6]
        if wrong == "unit":
            unit ^= 0x01
        else:
            tid ^= 0x0101
        pdu = b"\x03\x04\x03\xe8\x03\xe9"
        return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu

    async def go():
        port = free_port()
        async with raw_server(port, reply):
            t = TcpTransport("127.0.0.1", port, timeout_s=0.3, retries=1)
            with pytest.raises((ModbusFrameError, ModbusTimeout)):
                await t.read(Table.HOLDING, 0, 2, 1)
            await t.close()

    arun(go())
