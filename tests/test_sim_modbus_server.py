"""ModbusDeviceServer over real Modbus TCP: writes reach the simulated device's model through on_write (function 22,
mask write, included), and the registers serve what the model last said, also after a restart."""

from __future__ import annotations

import pytest
from helpers.aio import async_test
from helpers.net import free_port
from pymodbus.client import AsyncModbusTcpClient

from protocols.modbus.registermap import Table, encode_point, parse_register_map
from sim_hw.devices.modbus_server import ModbusDeviceServer, ModbusServerError, WriteRequest

MAP = parse_register_map(
    {
        "name": "w",
        "points": [
            {"name": "setpoint_kvar", "table": "holding", "address": 10, "type": "float32"},
            {"name": "mode", "table": "holding", "address": 12, "type": "uint16"},
            {"name": "status", "table": "input", "address": 0, "type": "uint16"},
            {"name": "close", "table": "coil", "address": 0, "type": "bool"},
        ],
    }
)


class Model:
    """Accepts a mode of 0..2 only; records what it saw."""

    def __init__(self) -> None:
        self.seen: list[WriteRequest] = []

    def __call__(self, req: WriteRequest) -> int | None:
        self.seen.append(req)
        if "mode" in req.points and not 0 <= int(req.points["mode"]) <= 2:
            return 3
        return None


async def _served(model: Model | None) -> tuple[ModbusDeviceServer, AsyncModbusTcpClient]:
    port = free_port()
    server = ModbusDeviceServer.tcp("127.0.0.1", port, {1: MAP})
    await server.start()
    if model is not None:
        server.on_write(1, model)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    assert await client.connect()
    return server, client


@async_test
async def test_an_accepted_write_is_decoded_for_the_model_and_stored() -> None:
    model = Model()
    server, client = await _served(model)
    try:
        words = encode_point(MAP.point("setpoint_kvar"), -125.5)
        rr = await client.write_registers(10, words + [2], device_id=1)
        assert not rr.isError()
        assert model.seen[-1].points == {"setpoint_kvar": -125.5, "mode": 2}
        assert model.seen[-1].table is Table.HOLDING and model.seen[-1].address == 10
        assert await server.registers(1, Table.HOLDING, 10, 3) == [*words, 2]
        rr = await client.write_coil(0, True, device_id=1)
        assert not rr.isError() and model.seen[-1].points == {"close": True}
    finally:
        client.close()
        await server.stop()


@async_test
async def test_a_refused_write_answers_the_models_exception_and_stores_nothing() -> None:
    model = Model()
    server, client = await _served(model)
    try:
        rr = await client.write_register(12, 7, device_id=1)
        assert rr.isError() and rr.exception_code == 3
        assert await server.registers(1, Table.HOLDING, 12, 1) == [0]
    finally:
        client.close()
        await server.stop()


@async_test
async def test_a_write_to_half_a_float_is_refused_with_illegal_address() -> None:
    model = Model()
    server, client = await _served(model)
    try:
        rr = await client.write_register(11, 0x4000, device_id=1)
        assert rr.isError() and rr.exception_code == 2
        assert model.seen == [] and await server.registers(1, Table.HOLDING, 10, 2) == [0, 0]
    finally:
        client.close()
        await server.stop()


@async_test
async def test_a_write_that_does_not_decode_is_refused_with_illegal_value() -> None:
    server, client = await _served(Model())
    try:
        rr = await client.write_registers(10, [0x7FC0, 0x0000], device_id=1)  # float32 NaN
        assert rr.isError() and rr.exception_code == 3
    finally:
        client.close()
        await server.stop()


@async_test
async def test_a_handler_that_raises_answers_device_failure_and_the_server_lives_on() -> None:
    def broken(_req: WriteRequest) -> int | None:
        raise RuntimeError("model bug")

    server, client = await _served(None)
    server.on_write(1, broken)
    try:
        rr = await client.write_register(12, 1, device_id=1)
        assert rr.isError() and rr.exception_code == 4
        server.on_write(1, None)  # without a handler, writes are stored as they come
        rr = await client.write_register(12, 1, device_id=1)
        assert not rr.isError() and await server.registers(1, Table.HOLDING, 12, 1) == [1]
    finally:
        client.close()
        await server.stop()


# ---- the values served: the model's, whatever a client wrote or the server went through ---------------------

VALUES_MAP = parse_register_map(
    {
        "name": "t",
        "points": [
            {"name": "a", "table": "holding", "address": 10, "type": "uint16"},
            {"name": "b", "table": "holding", "address": 11, "type": "uint16"},
        ],
    },
    "t",
)


async def _serving(port: int) -> ModbusDeviceServer:
    srv = ModbusDeviceServer.tcp("127.0.0.1", port, {1: VALUES_MAP})
    await srv.start()
    await srv.update(1, {"a": 100, "b": 7})
    return srv


@async_test
async def test_mask_write_is_undone_by_the_next_update() -> None:
    port = free_port()
    srv = await _serving(port)
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    try:
        await client.connect()
        # function 22: (100 AND 0) OR (5 AND NOT 0) = 5 is stored
        r = await client.mask_write_register(address=10, and_mask=0x0000, or_mask=0x0005, device_id=1)
        assert not r.isError()
        assert await srv.registers(1, Table.HOLDING, 10, 1) == [5]
        await srv.update(1, {"a": 100, "b": 7})  # the model still says 100: the register must say so again
        assert await srv.registers(1, Table.HOLDING, 10, 2) == [100, 7]
    finally:
        client.close()
        await srv.stop()


@async_test
async def test_mask_write_is_asked_of_the_write_handler_with_the_value_it_would_store() -> None:
    port = free_port()
    srv = await _serving(port)
    seen = []

    def refuse(request):
        seen.append(request.points)
        return 3

    srv.on_write(1, refuse)
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    try:
        await client.connect()
        # (100 AND 0xFF00) OR (0x0021 AND 0x00FF) = 0 | 0x21 = 33
        r = await client.mask_write_register(address=10, and_mask=0xFF00, or_mask=0x0021, device_id=1)
        assert r.isError() and r.exception_code == 3
        assert seen == [{"a": 33}]
        assert await srv.registers(1, Table.HOLDING, 10, 1) == [100]
    finally:
        client.close()
        await srv.stop()


@async_test
async def test_a_restarted_server_serves_the_values_it_is_given_again() -> None:
    srv = await _serving(free_port())
    try:
        await srv.stop()
        await srv.start()  # a fresh datastore holds zeros
        await srv.update(1, {"a": 100, "b": 7})
        assert await srv.registers(1, Table.HOLDING, 10, 2) == [100, 7]
    finally:
        await srv.stop()


@async_test
async def test_an_update_refused_for_one_name_leaves_no_point_marked_as_served() -> None:
    srv = await _serving(free_port())
    try:
        with pytest.raises(ModbusServerError, match="no point 'nope'"):
            await srv.update(1, {"a": 200, "nope": 1})
        await srv.update(1, {"a": 200})
        assert await srv.registers(1, Table.HOLDING, 10, 1) == [200]
    finally:
        await srv.stop()
