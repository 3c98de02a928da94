"""Writes reach a simulated device's model through ModbusDeviceServer.on_write, over real Modbus TCP."""

from __future__ import annotations

from helpers.aio import async_test
from helpers.net import free_port
from pymodbus.client import AsyncModbusTcpClient

from protocols.modbus.registermap import Table, encode_point, parse_register_map
from sim_hw.devices.modbus_server import ModbusDeviceServer, WriteRequest

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
