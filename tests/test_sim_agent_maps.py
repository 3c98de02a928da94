"""The agent's SunSpec maps (config/maps/sunspec-*.toml) match the bench's inverters register for register."""

from __future__ import annotations

import tomllib
from pathlib import Path

from helpers.aio import async_test
from helpers.net import free_port

from protocols.modbus.registermap import Table, decode_point, parse_register_map
from sim_hw.agent_maps import POLLED, map_toml, write_maps
from sim_hw.config import load_bench_config
from sim_hw.devices.inverter import SunSpecInverter
from sim_hw.devices.modbus_server import ModbusDeviceServer
from sim_hw.feeder.solution import Solution

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "sim-ieee13.toml"


def test_shipped_maps_are_what_the_inverters_serve(tmp_path: Path) -> None:
    written = write_maps(load_bench_config(CONFIG), tmp_path)
    assert len(written) == 4
    for path in written:
        shipped = ROOT / "config" / "maps" / path.name
        assert shipped.read_text() == path.read_text(), f"{shipped} is stale: run python -m sim_hw.agent_maps"


@async_test
async def test_the_agent_map_decodes_what_the_inverter_serves() -> None:
    inv = SunSpecInverter.from_options("pv675", {"site": "pv675", "bus": "675", "kva": 500.0, "kw": 500.0})
    agent_map = parse_register_map(tomllib.loads(map_toml(inv, "pv675")))
    t = 1_781_000_000.0
    base = 2401.77
    sol = Solution(t, True, {"675": {"a": base * 1.01 + 0j, "b": base * 1.01 + 0j, "c": base * 1.01 + 0j}},
                   {"675": base / 1000}, frequency_hz=60.01, irradiance_pu=0.8)  # fmt: skip
    for k in range(10):  # let the output settle toward 80 % of 500 kW
        inv.observe(t + k, sol)
    server = ModbusDeviceServer.tcp("127.0.0.1", free_port(), {1: inv.register_map})
    await server.start()
    try:
        served = inv.values(t + 9)
        await server.update(1, served)
        for p in agent_map.points:
            words = await server.registers(1, Table.HOLDING, p.address, p.words)
            ours = decode_point(p, words)
            theirs = served[POLLED[p.name]]
            assert abs(float(ours) - float(theirs)) <= p.scale / 2 + 1e-9, (p.name, ours, theirs)
        assert 300_000 < served["DERMeasureAC.W"] <= 400_000  # 0.8 pu irradiance on a 500 kW array
    finally:
        await server.stop()
