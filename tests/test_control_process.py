"""The agent as its own process in control of the bench's capacitor bank (the bench another process, the broker a
real Mosquitto): on SIGTERM it hands the bank back to local automatic before it lets go of the RS-485 line, and
the bench's controller, read over that line afterwards, says so."""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.bench import NOON, ieee13_copy
from helpers.controlbench import CAP, INTERLOCKS, OPEN_LOCAL_AUTO, site_file
from helpers.db import query_db
from helpers.net import wait_port
from helpers.processes import Processes
from helpers.wait import wait_for
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType

from sim_hw.config import load_bench_config

pytestmark = pytest.mark.integration

CONTROL = """
[control]
mode = "control"
[control.envelope]
min_command_interval_s = 0
{interlocks}
[control.capbank]
device = "cap675-ctl"
cadence_s = 5
delay_s = 10
var_point = "sub-meter.q_total"
q_close_above_var = 1500000
q_open_below_var = 200000
bank_var = 700000
min_dwell_s = 0
"""


@dataclass
class BenchSite(Processes):
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)


def decisions(db: Path) -> list[dict]:
    return [json.loads(r[0]) for r in query_db(db, "SELECT data FROM events WHERE stream='control' ORDER BY id")]


async def read_cap(link: Path, unit: int) -> tuple[int, bool]:
    """``mode`` and ``closed`` of the bench's cap bank controller, read over the RS-485 line as its manual says."""
    client = AsyncModbusSerialClient(str(link), framer=FramerType.RTU, baudrate=19200, timeout=1, retries=2)
    assert await client.connect()
    try:
        mode = await client.read_holding_registers(10, count=1, device_id=unit)
        closed = await client.read_discrete_inputs(0, count=1, device_id=unit)
        assert not mode.isError() and not closed.isError()
        return mode.registers[0], bool(closed.bits[0])
    finally:
        client.close()


def test_sigterm_hands_the_bank_back_to_local_automatic_before_the_agent_exits(tmp_path: Path, broker) -> None:
    bench_path = ieee13_copy(tmp_path, edit=OPEN_LOCAL_AUTO, irradiance="clear")
    cfg = load_bench_config(bench_path)
    site = BenchSite(tmp_path)
    site.start_gridedge("sim", "sim", "run", "--config", str(bench_path), "--speed", "20")
    try:
        wait_port(next(d.port for d in cfg.devices if d.name == "sub-meter"), 30)
        link = cfg.bus("bus1").link
        wait_for(link.exists, 15, "the bench's RTU pty")
        clock = f'[clock]\nspeed = 20\nstart = "{NOON}"\n'
        agent_site = site_file(cfg, tmp_path / "agent", CONTROL.format(interlocks=INTERLOCKS), extra=clock,
                               broker=broker.url)  # fmt: skip
        db = tmp_path / "agent" / "agent.db"
        site.start_gridedge("agent", "run", "--config", str(agent_site))
        wait_for(lambda: any(d["outcome"] == "applied" for d in decisions(db)), 60,
                 f"the agent closing the bank\n{site.logs('agent', 'sim')}")  # fmt: skip
        (applied,) = [d for d in decisions(db) if d["outcome"] == "applied"]
        assert applied["command"]["action"] == "capbank.close" and applied["readback"]["closed"] == 1
        held = query_db(db, "SELECT kind, device FROM control_flags")
        assert held == [("taken", CAP)], "the agent holds the bank in remote while it controls it"
        assert site.stop("agent") == 0, site.logs("agent")
        mode, closed = asyncio.run(read_cap(link, next(d.unit_id for d in cfg.devices if d.name == CAP)))
        assert mode == 1, "the bench's controller is back in local automatic"
        assert closed, "as the agent left it: switching it back is the controller's own decision"
        (hb,) = [d for d in decisions(db) if d["rule"] == "handback:agent_stopping"]
        assert hb["outcome"] == "reverted" and hb["readback"]["mode"] == 1
        assert query_db(db, "SELECT kind FROM control_flags") == []
        log = site.log("agent")
        assert log.index("event=control_handed_back") < log.index("event=agent_stopped")
    finally:
        site.kill_all()
