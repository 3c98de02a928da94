"""The agent as its own process supervising the bench's regulator (the bench another process, the broker a real
Mosquitto), killed with SIGKILL while it holds the regulator away from its panel band centre: nothing it wrote
keeps the control there longer than the control's own communication-loss timer (docs/control.md, "The regulator
function", fallback). The bench's control, read over the RS-485 line afterwards, says so."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.bench import NOON, ieee13_copy
from helpers.controlbench import INTERLOCKS, site_file
from helpers.db import query_db
from helpers.net import wait_port
from helpers.processes import Processes
from helpers.wait import wait_for
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType

from sim_hw.config import load_bench_config

pytestmark = pytest.mark.integration

SPEED = 20
REVERT_S = 60  # the bench control's revert_timeout_s (10..7200 s, docs/devices/sim-regulator.md)
CONTROL = """
[control]
mode = "control"
[control.envelope]
min_command_interval_s = 0
{interlocks}
[control.regulator]
device = "reg-ctl"
cadence_s = 5
band_center_v = 121.0
band_center_max_v = 121.5       # the panel's 122 V is above it: the agent writes 121.5 V and holds the control
reverse_power = "allow"
min_dwell_s = 0
heartbeat_point = "heartbeat"
heartbeat_s = 10
"""


@dataclass
class BenchSite(Processes):
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)


def decisions(db: Path) -> list[dict]:
    return [json.loads(r[0]) for r in query_db(db, "SELECT data FROM events WHERE stream='control' ORDER BY id")]


async def read_reg(link: Path, unit: int) -> dict[str, float]:
    """The regulator control's mode, band centre and fallback registers, read over the RS-485 line as its manual
    says (holding 0 mode, 1 band_center_v x0.1; input 32 revert_remaining_s, 33 reverted_count, 34
    last_revert_reason)."""
    client = AsyncModbusSerialClient(str(link), framer=FramerType.RTU, baudrate=19200, timeout=1, retries=2)
    assert await client.connect()
    try:
        hold = await client.read_holding_registers(0, count=2, device_id=unit)
        inp = await client.read_input_registers(32, count=3, device_id=unit)
        assert not hold.isError() and not inp.isError()
        return {"mode": hold.registers[0], "band_center_v": hold.registers[1] / 10, "revert_remaining_s":
                inp.registers[0], "reverted_count": inp.registers[1], "last_revert_reason": inp.registers[2]}  # fmt: skip
    finally:
        client.close()


def reg_device(link: Path, unit: int) -> str:
    maps = Path(__file__).resolve().parents[1] / "config" / "maps"
    return (f'\n[[devices]]\nname = "reg-ctl"\nprotocol = "modbus-rtu"\nserial_port = "{link}"\nbaudrate = 19200\n'
            f'unit_id = {unit}\npoll_interval_s = 2.0\ntimeout_s = 0.3\nmap = "{maps / "sim-regulator.toml"}"\n')  # fmt: skip


def test_sigkill_leaves_the_regulator_on_automatic_with_its_panel_band_centre_after_its_timer(
    tmp_path: Path, broker
) -> None:
    revert = ('kind = "regulator"', f'kind = "regulator"\noptions = {{ revert_timeout_s = {REVERT_S} }}')
    bench_path = ieee13_copy(tmp_path, edit=revert, irradiance="clear")
    cfg = load_bench_config(bench_path)
    site = BenchSite(tmp_path)
    site.start_gridedge("sim", "sim", "run", "--config", str(bench_path), "--speed", str(SPEED))
    try:
        wait_port(next(d.port for d in cfg.devices if d.name == "sub-meter"), 30)
        link = cfg.bus("bus1").link
        wait_for(link.exists, 15, "the bench's RTU pty")
        unit = next(d.unit_id for d in cfg.devices if d.name == "reg-ctl")
        clock = f'[clock]\nspeed = {SPEED}\nstart = "{NOON}"\n'
        control = reg_device(link, unit) + CONTROL.format(interlocks=INTERLOCKS)
        agent_site = site_file(cfg, tmp_path / "agent", control, extra=clock, broker=broker.url)
        db = tmp_path / "agent" / "agent.db"
        site.start_gridedge("agent", "run", "--config", str(agent_site))
        wait_for(lambda: any(d["outcome"] == "applied" for d in decisions(db)), 60,
                 f"the agent writing the band centre\n{site.logs('agent', 'sim')}")  # fmt: skip
        (applied,) = [d for d in decisions(db) if d["outcome"] == "applied"]
        assert applied["rule"] == "band_center_limit" and applied["readback"]["band_center_v"] == 121.5
        assert query_db(db, "SELECT kind, device FROM control_flags") == [("taken", "reg-ctl")]
        time.sleep(3 * 10 / SPEED)  # a few heartbeats: the timer is held off while the agent lives
        site.kill("agent")
        after = asyncio.run(read_reg(link, unit))
        assert (after["mode"], after["band_center_v"]) == (1, 121.5), "the agent's band centre, still in force"
        assert 0 < after["revert_remaining_s"] <= REVERT_S
        assert after["reverted_count"] == 0, "the heartbeats kept the timer from running out while it lived"

        def reverted() -> bool:
            return asyncio.run(read_reg(link, unit))["reverted_count"] == 1

        # the bound, in the bench's own time: at most revert_remaining_s (read just after the kill) plus a scan
        wait_for(reverted, 30, f"the control's fallback\n{site.logs('sim')}")
        final = asyncio.run(read_reg(link, unit))
        assert (final["mode"], final["band_center_v"]) == (1, 122.0), "automatic on its panel band centre"
        assert final["last_revert_reason"] == 2, "communication loss with a master's band centre"
    finally:
        site.kill_all()
