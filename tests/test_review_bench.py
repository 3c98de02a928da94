"""Review of the bench (issue 4): stale Modbus registers, the simulated clock, PMU settings checked at start."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.aio import async_test
from helpers.bench import bench_config
from helpers.net import free_port
from pymodbus.client import AsyncModbusTcpClient

from protocols.modbus.registermap import Table, parse_register_map
from sim_hw.bench import Bench, BenchError
from sim_hw.config import PmuSpec, parse_bench_config
from sim_hw.devices.feeder_pmu import FeederPmuError, feeder_pmu, feeder_source
from sim_hw.devices.modbus_server import ModbusDeviceServer, ModbusServerError
from sim_hw.devices.pmu import PmuSimError
from sim_hw.feeder.model import Feeder

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


def _stub_bench() -> SimpleNamespace:
    feeder = Feeder.from_file(ROOT / "config" / "ieee13" / "IEEE13.dss")
    return SimpleNamespace(solution=feeder.solve(0.0), grid_phase_rad=lambda t: 0.0, clock=lambda: 0.0)


@pytest.mark.parametrize(
    ("bus", "current", "message"),
    [
        ("671", "Line.632671/x", "current = 'Line.632671/x'"),
        ("671", "Line.nope/2", "current = 'Line.nope/2'"),
        ("nope", None, "bus = 'nope'"),
    ],
)
def test_a_pmu_on_a_missing_bus_or_terminal_is_refused_when_built(bus: str, current: str | None, message: str) -> None:
    with pytest.raises(FeederPmuError, match=message):
        feeder_pmu(_stub_bench(), PmuSpec("p", bus, 1, "127.0.0.1", 1, current=current))


def test_a_terminal_gone_from_a_later_solution_is_an_error_the_pmu_tick_logs() -> None:
    bench = _stub_bench()
    source = feeder_source(bench, PmuSpec("p", "671", 1, "127.0.0.1", 1, current="Line.632671/2"))
    bench.solution = _without_terminals(bench.solution)
    with pytest.raises(PmuSimError, match="Line.632671/2"):
        source(0.0)


def _without_terminals(solution):
    from dataclasses import replace

    return replace(solution, terminals={})


@async_test
async def test_the_bench_refuses_a_pmu_current_terminal_the_feeder_lacks(tmp_path: Path) -> None:
    config = bench_config(tmp_path, ('current = "Line.632671/2"', 'current = "Line.632671/x"'))
    bench = Bench(config)
    with pytest.raises(BenchError, match=r"pmu '.*': current = 'Line.632671/x'"):
        await bench.start()
    assert bench.pmus == {}
