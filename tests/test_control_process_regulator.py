"""The agent as its own process supervising the bench's regulator (the bench another process, the broker a real
Mosquitto), killed with SIGKILL while it holds the regulator away from its panel band centre: nothing it wrote
keeps the control there longer than the control's own communication-loss timer (docs/control.md, "The regulator
function", fallback). The bench's control, read over the RS-485 line afterwards, says so."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from helpers.bench import ieee13_copy
from helpers.benchsite import BenchSite, decisions, rtu_client
from helpers.controlbench import INTERLOCKS
from helpers.controlbench_reg import REG, reg_device
from helpers.db import query_db
from helpers.wait import wait_for

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


async def read_reg(link: Path, unit: int) -> dict[str, float]:
    """The regulator control's mode, band centre and fallback registers, read over the RS-485 line as its manual
    says (holding 0 mode, 1 band_center_v x0.1; input 32 revert_remaining_s, 33 reverted_count, 34
    last_revert_reason)."""
    async with rtu_client(link) as client:
        hold = await client.read_holding_registers(0, count=2, device_id=unit)
        inp = await client.read_input_registers(32, count=3, device_id=unit)
        assert not hold.isError() and not inp.isError()
        return {"mode": hold.registers[0], "band_center_v": hold.registers[1] / 10, "revert_remaining_s":
                inp.registers[0], "reverted_count": inp.registers[1], "last_revert_reason": inp.registers[2]}  # fmt: skip


def test_sigkill_leaves_the_regulator_on_automatic_with_its_panel_band_centre_after_its_timer(
    tmp_path: Path, broker
) -> None:
    revert = ('kind = "regulator"', f'kind = "regulator"\noptions = {{ revert_timeout_s = {REVERT_S} }}')
    bench_path = ieee13_copy(tmp_path, edit=revert, irradiance="clear")
    site = BenchSite(tmp_path)
    try:
        cfg, link = site.start_bench(bench_path, SPEED)
        unit = next(d.unit_id for d in cfg.devices if d.name == REG)
        control = reg_device(cfg) + CONTROL.format(interlocks=INTERLOCKS)
        _agent_site, db = site.start_agent(cfg, control, speed=SPEED, broker=broker.url)
        site.wait_applied(db, "the agent writing the band centre")
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
