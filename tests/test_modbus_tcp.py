"""TcpTransport (our MBAP client) against a real pymodbus server, with its answers mangled on the wire.

Every fault ends in the typed error the poller expects, and the transport is usable again on the next call
(a fresh connection after a timeout, a bad frame or a lost link; the same one after a Modbus exception).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import pytest
from helpers.aio import async_test
from helpers.modbus import modbus_server
from helpers.net import free_port

from protocols.modbus.client import TcpTransport
from protocols.modbus.errors import (
    ModbusConnectionError,
    ModbusExceptionResponse,
    ModbusFrameError,
    ModbusTimeout,
)
from protocols.modbus.registermap import Table


class Mangler:
    """What the server sends, changed for the next ``times`` answers by ``fn``; counts the answers."""

    def __init__(self) -> None:
        self.fn: Callable[[bytes], bytes | None] | None = None
        self.times = 0
        self.answers = 0

    def arm(self, fn: Callable[[bytes], bytes | None], times: int = 1) -> None:
        self.fn, self.times = fn, times

    def __call__(self, frame: bytes) -> bytes | None:
        self.answers += 1
        if self.fn is None or self.times == 0:
            return frame
        self.times -= 1
        return self.fn(frame)


def _header(frame: bytes, *, tid: int | None = None, proto: int = 0, length: int | None = None) -> bytes:
    old_tid, _, old_len, unit = struct.unpack(">HHHB", frame[:7])
    return struct.pack(">HHHB", old_tid if tid is None else tid, proto, old_len if length is None else length, unit)


def _pdu(pdu: bytes) -> Callable[[bytes], bytes]:
    """The answer's header (its transaction id and unit) around another PDU, the length fixed to fit."""
    return lambda frame: _header(frame, length=len(pdu) + 1) + pdu


MALFORMED = [
    pytest.param(lambda f: _header(f, proto=1) + f[7:], id="protocol-id-not-0"),
    pytest.param(lambda f: _header(f, length=1) + f[7:], id="length-leaves-no-pdu"),
    pytest.param(lambda f: _header(f, length=300) + f[7:], id="length-over-254"),
    pytest.param(lambda f: b"\xde\xad\xbe\xef" * 8, id="junk"),
    pytest.param(lambda f: _header(f, tid=(struct.unpack(">H", f[:2])[0] ^ 0x0101)) + f[7:], id="wrong-tid"),
    pytest.param(lambda f: f[:6] + bytes((f[6] ^ 1,)) + f[7:], id="wrong-unit"),
    pytest.param(_pdu(b"\x03\x02\x00\x01"), id="one-register-for-two"),
    pytest.param(_pdu(b"\x03\x06\x00\x01\x00\x02\x00\x03"), id="three-registers-for-two"),
    pytest.param(_pdu(b"\x03\x04\x00\x01"), id="byte-count-over-data"),
    pytest.param(_pdu(b"\x04\x04\x00\x01\x00\x02"), id="answer-to-function-4"),
    pytest.param(_pdu(b"\x83\x02\x00"), id="exception-answer-too-long"),
]


@pytest.mark.parametrize("mangle", MALFORMED)
@async_test
async def test_a_malformed_answer_is_a_frame_error_and_the_next_read_is_good(mangle) -> None:
    port, m = free_port(), Mangler()
    async with modbus_server(port, m):
        t = TcpTransport("127.0.0.1", port, timeout_s=5.0, retries=0)
        try:
            m.arm(mangle)
            with pytest.raises(ModbusFrameError) as info:  # at once, not after the 5 s timeout
                await t.read(Table.HOLDING, 0, 2, 1)
            assert info.value.device == f"tcp:127.0.0.1:{port}/1"
            assert await t.read(Table.HOLDING, 0, 2, 1) == [100, 101]
        finally:
            await t.close()


@pytest.mark.parametrize("mangle", MALFORMED[:3])
@async_test
async def test_a_retry_after_a_malformed_answer_reads_on_a_fresh_connection(mangle) -> None:
    port, m = free_port(), Mangler()
    async with modbus_server(port, m) as server:
        t = TcpTransport("127.0.0.1", port, timeout_s=5.0, retries=1)
        try:
            m.arm(mangle)
            assert await t.read(Table.HOLDING, 3, 2, 1) == [103, 104]
            assert m.answers == 2
            assert len(server.active_connections) == 1  # the garbled one was closed
        finally:
            await t.close()


@async_test
async def test_exception_codes_of_the_real_server_keep_the_link() -> None:
    port = free_port()
    async with modbus_server(port) as server:
        t = TcpTransport("127.0.0.1", port, timeout_s=1.0, retries=2)
        try:
            with pytest.raises(ModbusExceptionResponse) as info:
                await t.read(Table.HOLDING, 45, 10, 1)  # 50..54 do not exist
            assert (info.value.code, info.value.function_code, info.value.name) == (2, 3, "illegal data address")
            with pytest.raises(ModbusExceptionResponse) as info:
                await t.read(Table.INPUT, 0, 2, 9)  # pymodbus answers 4 for a unit it lacks
            assert info.value.code == 4 and info.value.device == f"tcp:127.0.0.1:{port}/9"
            assert await t.read(Table.HOLDING, 0, 1, 1) == [100]
            assert len(server.active_connections) == 1
        finally:
            await t.close()


@pytest.mark.parametrize("code", [1, 3, 6, 11])
@async_test
async def test_every_exception_code_comes_through_with_its_function(code: int) -> None:
    port, m = free_port(), Mangler()
    async with modbus_server(port, m):
        t = TcpTransport("127.0.0.1", port, timeout_s=1.0, retries=3)
        try:
            m.arm(_pdu(bytes((0x81, code))))
            with pytest.raises(ModbusExceptionResponse) as info:
                await t.read(Table.COIL, 0, 3, 1)
            assert (info.value.code, info.value.function_code) == (code, 1)
            assert m.answers == 1  # not retried: the device answered
        finally:
            await t.close()


@async_test
async def test_a_silent_server_times_out_and_each_retry_asks_again() -> None:
    port, m = free_port(), Mangler()
    async with modbus_server(port, m):
        t = TcpTransport("127.0.0.1", port, timeout_s=0.2, retries=2)
        try:
            m.arm(lambda f: b"", times=3)
            with pytest.raises(ModbusTimeout) as info:
                await t.read(Table.HOLDING, 0, 2, 1)
            assert info.value.device == f"tcp:127.0.0.1:{port}/1" and "0.2 s" in str(info.value)
            assert m.answers == 3  # three attempts, each one answered into the void
            assert await t.read(Table.HOLDING, 0, 2, 1) == [100, 101]
        finally:
            await t.close()


@async_test
async def test_a_half_answer_then_silence_is_a_timeout() -> None:
    port, m = free_port(), Mangler()
    async with modbus_server(port, m):
        t = TcpTransport("127.0.0.1", port, timeout_s=0.2, retries=0)
        try:
            m.arm(lambda f: f[: len(f) - 2])
            with pytest.raises(ModbusTimeout):
                await t.read(Table.HOLDING, 0, 2, 1)
            assert await t.read(Table.HOLDING, 0, 2, 1) == [100, 101]
        finally:
            await t.close()


@async_test
async def test_a_peer_that_closes_fails_the_request_as_a_lost_link() -> None:
    port, m = free_port(), Mangler()
    async with modbus_server(port, m):
        t = TcpTransport("127.0.0.1", port, timeout_s=10.0, retries=0)
        try:
            m.arm(lambda f: None)  # the server closes instead of answering
            with pytest.raises(ModbusConnectionError) as info:  # a timeout would be ModbusTimeout
                await t.read(Table.HOLDING, 0, 2, 1)
            assert info.value.device == f"tcp:127.0.0.1:{port}/1" and "closed" in str(info.value)
            assert await t.read(Table.HOLDING, 0, 2, 1) == [100, 101]
        finally:
            await t.close()


@async_test
async def test_a_server_that_went_away_is_a_connection_error_until_it_is_back() -> None:
    port = free_port()
    t = TcpTransport("127.0.0.1", port, timeout_s=1.0, retries=0)
    try:
        async with modbus_server(port):
            assert await t.read(Table.INPUT, 2, 3, 1) == [202, 203, 204]
        with pytest.raises(ModbusConnectionError):
            await t.read(Table.INPUT, 2, 3, 1)
        with pytest.raises(ModbusConnectionError):
            await t.read(Table.INPUT, 2, 3, 1)
        async with modbus_server(port):
            assert await t.read(Table.INPUT, 2, 3, 1) == [202, 203, 204]
    finally:
        await t.close()


@async_test
async def test_transaction_ids_wrap_without_zero_and_still_match() -> None:
    port, seen = free_port(), []

    def record(frame: bytes) -> bytes:
        seen.append(struct.unpack(">H", frame[:2])[0])
        return frame

    async with modbus_server(port, record):
        t = TcpTransport("127.0.0.1", port, timeout_s=1.0, retries=0)
        try:
            t._tid = 0xFFFE
            for start in range(3):
                assert await t.read(Table.HOLDING, start, 1, 1) == [100 + start]
        finally:
            await t.close()
    assert seen == [0xFFFF, 1, 2]


@async_test
async def test_concurrent_requests_to_two_units_go_one_at_a_time_on_one_connection() -> None:
    port = free_port()
    async with modbus_server(port) as server:
        t = TcpTransport("127.0.0.1", port, timeout_s=1.0, retries=0)
        try:
            got = await asyncio.gather(
                t.read(Table.HOLDING, 0, 3, 1), t.read(Table.HOLDING, 0, 3, 2), t.read(Table.COIL, 0, 4, 1)
            )
            assert got == [[100, 101, 102], [7, 7, 7], [True, False, True, False]]
            assert len(server.active_connections) == 1
        finally:
            await t.close()


@async_test
async def test_a_cancelled_read_leaves_no_answer_for_the_next() -> None:
    port, m = free_port(), Mangler()
    async with modbus_server(port, m):
        t = TcpTransport("127.0.0.1", port, timeout_s=5.0, retries=0)
        try:
            m.arm(lambda f: b"")
            task = asyncio.create_task(t.read(Table.HOLDING, 0, 2, 1))
            while m.answers == 0:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await t.read(Table.HOLDING, 10, 2, 1) == [110, 111]
        finally:
            await t.close()


@async_test
async def test_writes_land_and_a_wrong_echo_is_a_frame_error() -> None:
    port, m = free_port(), Mangler()
    async with modbus_server(port, m):
        t = TcpTransport("127.0.0.1", port, timeout_s=1.0, retries=0)
        try:
            await t.write_registers(5, [1, 0xFFFF], 1)
            await t.write_coil(1, True, 1)
            assert await t.read(Table.HOLDING, 4, 3, 1) == [104, 1, 0xFFFF]
            assert await t.read(Table.COIL, 0, 2, 1) == [True, True]
            m.arm(_pdu(b"\x10\x00\x05\x00\x01"))  # echoes a quantity of 1 for 2 written
            with pytest.raises(ModbusFrameError):
                await t.write_registers(5, [2, 3], 1)
            m.arm(_pdu(b"\x90\x02"))
            with pytest.raises(ModbusExceptionResponse) as info:
                await t.write_registers(5, [2, 3], 1)
            assert (info.value.code, info.value.function_code) == (2, 16)
        finally:
            await t.close()


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda t: t.write_registers(0, [], 1), id="no-values"),
        pytest.param(lambda t: t.write_registers(0, [0] * 124, 1), id="124-values"),
        pytest.param(lambda t: t.write_registers(0, [0x10000], 1), id="value-over-16-bits"),
        pytest.param(lambda t: t.write_registers(65535, [1, 2], 1), id="past-65535"),
        pytest.param(lambda t: t.write_coil(0x10000, True, 1), id="coil-address"),
    ],
)
@async_test
async def test_an_out_of_spec_write_is_refused_before_connecting(call) -> None:
    t = TcpTransport("127.0.0.1", free_port(), timeout_s=0.2, retries=0)  # nothing listens
    with pytest.raises(ValueError):
        await call(t)
