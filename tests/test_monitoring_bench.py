"""Feeder voltage monitoring in the loop: the real IEEE 13-node bench (a private copy of config/sim-ieee13.toml)
and the agent (`gridedge run`, its own process) reading the feeder-head meter at bus rg60, the regulators' output.

The regulator control is in manual mode with every tap at 4: rg60 sits at 120 V x (1 + 4 x 0.625 %) = 123.0 V on
the 120 V base, inside ANSI C84.1 Range A (114-126 V). The test, as an operator on the regulator control's RS-485
line, raises phase b's tap to 9: 120 V x (1 + 9 x 0.625 %) = 126.75 V, above Range A and inside Range B (127 V).
The agent must raise one voltage_range_a event for bus rg60 phase b, high, from the meter's phase-b point, and
clear it once the tap is back at 4.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.aio import async_test, until
from helpers.bench import ieee13_copy
from helpers.db import query_db
from helpers.net import free_port
from helpers.processes import Processes
from pymodbus.client import AsyncModbusSerialClient

from sim_hw.bench import Bench
from sim_hw.config import load_bench_config

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "config" / "maps" / "sim-meter.toml"
TAP_TARGET_B = 11  # holding register of the regulator control (docs/devices/sim-regulator.md)
REGULATOR_UNIT = 2


@dataclass
class Site(Processes):
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.workdir / "agent.db"

    def events(self, kind_prefix: str = "voltage_") -> list[tuple]:
        rows = query_db(self.db, "SELECT ts, kind, severity, source, text, data FROM events WHERE kind LIKE ? "
                        "ORDER BY id", (kind_prefix + "%",))  # fmt: skip
        return [(ts, kind, severity, source, text, json.loads(data)) for ts, kind, severity, source, text, data in rows]

    def monitoring(self) -> dict | None:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads((self.workdir / "agent.db.status.json").read_text()).get("monitoring")
        return None


def agent_config(workdir: Path, meter_port: int) -> Path:
    voltages = "".join(
        f'[[monitoring.voltages]]\npoint = "sub-meter.v_{p}"\nbus = "rg60"\nphase = "{p}"\nnominal_v = 2401.8\n'
        for p in "abc"
    )
    path = workdir / "agent.toml"
    path.write_text(f"""
site_id = "monitoring-bench"
[store]
path = "agent.db"
[uplink]
broker = "mqtt://127.0.0.1:{free_port()}"
[[devices]]
name = "sub-meter"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {meter_port}
poll_interval_s = 1.0
timeout_s = 0.5
map = "{MAP}"
[monitoring]
pickup_s = 2.0
hold_off_s = 2.0
{voltages}""")  # fmt: skip
    return path


async def write_tap_b(link: Path, tap: int) -> None:
    client = AsyncModbusSerialClient(str(link), baudrate=19200, timeout=1, retries=2)
    try:
        assert await client.connect()
        rr = await client.write_register(TAP_TARGET_B, tap, device_id=REGULATOR_UNIT)
        assert not rr.isError(), rr
    finally:
        client.close()


@pytest.mark.integration
@async_test
async def test_a_regulator_tap_raised_at_the_bench_is_a_range_a_event_for_that_bus_and_phase(tmp_path: Path) -> None:
    regulator = ("unit_id = 2\n", 'unit_id = 2\noptions = { mode = "manual", taps = [4, 4, 4] }\n')
    cfg = load_bench_config(ieee13_copy(tmp_path, edit=regulator))
    meter_port = next(d.port for d in cfg.devices if d.name == "sub-meter")
    assert meter_port is not None
    site = Site(tmp_path)
    bench = Bench(cfg, speed=4.0)  # the tap changer steps every 2 simulated seconds: 0.5 s here
    await bench.start()
    running = asyncio.create_task(bench.run())
    try:
        site.start_gridedge("agent", "run", "--config", str(agent_config(tmp_path, meter_port)))

        def in_range_a() -> bool:
            mon = site.monitoring()
            bps = (mon or {}).get("bus_phases") or {}
            return [bps.get(f"rg60/{p}", {}).get("range_class") for p in "abc"] == ["A", "A", "A"]

        await until(in_range_a, timeout=40)
        status = site.monitoring()
        assert status is not None and abs(status["bus_phases"]["rg60/b"]["value_v"] - 123.0) < 0.3, status

        await write_tap_b(cfg.bus("bus1").link, 9)
        await until(lambda: site.events("voltage_range_a"), timeout=30)
        ts, kind, severity, source, text, data = site.events("voltage_range_a")[0]
        assert (kind, severity, source) == ("voltage_range_a", "warning", "rg60/b"), text
        assert (data["bus"], data["phase"], data["side"], data["range"]) == ("rg60", "b", "high", "A")
        assert data["source_point"] == "sub-meter.v_b" and data["limit_v"] == 126.0
        assert 126.0 < data["value_v"] < 127.0, data  # tap 9: 126.75 V
        assert data["decided_ts"] - ts >= 2.0  # the pickup, in measurement time

        await write_tap_b(cfg.bus("bus1").link, 4)
        await until(lambda: len(site.events()) >= 2, timeout=30)
        got = site.events()
        assert [(k, s, src, d.get("cleared", False)) for _, k, s, src, _, d in got] == [
            ("voltage_range_a", "warning", "rg60/b", False),
            ("voltage_range_a", "info", "rg60/b", True),
        ], site.logs("agent")
        cleared = got[1][5]
        assert cleared["raised_ts"] == ts and cleared["duration_s"] > 0 and cleared["value_v"] < 126.0
        assert site.stop("agent", 20) == 0, site.logs("agent")
    finally:
        site.kill_all()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await bench.stop()
