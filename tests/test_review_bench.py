"""Review of the bench (issue 4): stale Modbus registers, the simulated clock, PMU settings checked at start."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest
from conftest import async_test, free_port
from pymodbus.client import AsyncModbusTcpClient

from protocols.modbus.registermap import Table, parse_register_map
from sim_hw.bench import Bench
from sim_hw.config import parse_bench_config
from sim_hw.devices.modbus_server import ModbusDeviceServer, ModbusServerError

ROOT = Path(__file__).resolve().parent.parent
MAP = parse_register_map(
    {
        "name": "t",
        "points": [
            {"name": "a", "table": "holding", "address": 10, "type": "uint16"},
            {"name": "b", "table": "holding", "address": 11, "type": "uint16"},
        ],
    },
    "t",
)


async def _served(port: int) -> ModbusDeviceServer:
    srv = ModbusDeviceServer.tcp("127.0.0.1", port, {1: MAP})
    await srv.start()
    await srv.update(1, {"a": 100, "b": 7})
    return srv


@async_test
async def test_mask_write_is_undone_by_the_next_update() -> None:
    port = free_port()
    srv = await _served(port)
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
    srv = await _served(port)
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
    srv = await _served(free_port())
    try:
        await srv.stop()
        await srv.start()  # a fresh datastore holds zeros
        await srv.update(1, {"a": 100, "b": 7})
        assert await srv.registers(1, Table.HOLDING, 10, 2) == [100, 7]
    finally:
        await srv.stop()


@async_test
async def test_an_update_refused_for_one_name_leaves_no_point_marked_as_served() -> None:
    srv = await _served(free_port())
    try:
        with pytest.raises(ModbusServerError, match="no point 'nope'"):
            await srv.update(1, {"a": 200, "nope": 1})
        await srv.update(1, {"a": 200})
        assert await srv.registers(1, Table.HOLDING, 10, 1) == [200]
    finally:
        await srv.stop()


@async_test
async def test_the_clock_does_not_go_back_when_a_run_ends_between_two_steps() -> None:
    text = f"""
[bench]
step_s = 0.1
start = "2026-06-01T00:00:00Z"
[[devices]]
name = "m"
map = "{ROOT / "config" / "maps" / "sim-meter.toml"}"
protocol = "modbus-tcp"
port = {free_port()}
"""
    bench = Bench(parse_bench_config(tomllib.loads(text), ROOT / "bench.toml"))
    await bench.start()
    try:
        readings = []

        async def read_late() -> None:
            await asyncio.sleep(0.14)  # between step 1 (0.1 s) and the run's end (0.15 s): paced past sim_time
            readings.append(bench.clock())

        reader = asyncio.create_task(read_late())
        await bench.run(seconds=0.15)
        await reader
        after = bench.clock()
        assert after >= readings[0]
        await bench.step_once()
        await bench.run(seconds=0.02)
        assert bench.clock() >= after
    finally:
        await bench.stop()
