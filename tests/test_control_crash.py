"""The agent SIGKILLed while it holds the bench's capacitor bank in remote (bench, agent and Mosquitto each their own
process): the bank is back on local automatic within the time docs/control.md ("Fallback") gives for a crash, the
controller's ``revert_timeout_s`` after the agent's last write (its heartbeat), plus one controller scan; judged
at the bench (its log and its registers read over the RS-485 line), never from the agent's belief.

While the agent runs, what an operator sees of it is checked on the way: ``gridedge status`` shows the control
section (the bank held, by which function, its wear budget left) and ``gridedge control explain`` answers from
the live snapshot; once the agent is killed, both say it is not running (exit status 3)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from helpers.bench import ieee13_copy
from helpers.benchsite import BenchSite, rtu_client
from helpers.controlbench import CAP, capbank_control
from helpers.db import query_db
from helpers.processes import run_gridedge
from helpers.wait import wait_for

pytestmark = pytest.mark.integration

SPEED = 10.0
REVERT_S = 30  # the controller's communication-loss timer [s]: short, so the proof takes seconds of wall time
HEARTBEAT_S = 5  # the agent's heartbeat while it holds the bank: well below REVERT_S (docs/control.md)
SCAN_S = 1.0  # the controller acts at its next scan, one bench step (docs/devices/sim-capbank.md)
# the bench's cap675: open, in local automatic, with the short communication-loss timer
OPEN_LOCAL_AUTO_SHORT = ('options = { capacitor = "cap675" }',
                         'options = { capacitor = "cap675", closed = false, mode = "local_auto", '
                         f'revert_timeout_s = {REVERT_S} }}')  # fmt: skip

CONTROL = capbank_control(more=f'ops_per_day = 4\nheartbeat_point = "heartbeat"\nheartbeat_s = {HEARTBEAT_S}')


async def read_revert_registers(link: Path, unit: int) -> dict[str, int]:
    """``mode`` (holding 10), ``reverted_count`` and ``last_revert_reason`` (input 14, 15) of the bench's cap bank
    controller, over the RS-485 line as its manual (docs/devices/sim-capbank.md) gives them."""
    async with rtu_client(link) as client:
        mode = await client.read_holding_registers(10, count=1, device_id=unit)
        inputs = await client.read_input_registers(14, count=2, device_id=unit)
        assert not mode.isError() and not inputs.isError()
        return {"mode": mode.registers[0], "reverted_count": inputs.registers[0],
                "last_revert_reason": inputs.registers[1]}  # fmt: skip


def test_sigkill_leaves_the_bank_on_local_automatic_within_its_revert_timeout(tmp_path: Path, broker) -> None:
    bench_path = ieee13_copy(tmp_path, edit=OPEN_LOCAL_AUTO_SHORT, irradiance="clear")
    site = BenchSite(tmp_path)
    try:
        cfg, link = site.start_bench(bench_path, SPEED)
        unit = next(d.unit_id for d in cfg.devices if d.name == CAP)
        agent_site, db = site.start_agent(cfg, CONTROL, speed=SPEED, broker=broker.url)
        site.wait_applied(db, "the agent closing the bank")
        assert query_db(db, "SELECT kind, device FROM control_flags") == [("taken", CAP)]

        # while the agent lives, its heartbeats keep the bank in remote well past the controller's timer
        time.sleep(2 * REVERT_S / SPEED)
        assert "capbank_reverted" not in site.log("sim"), site.logs("sim")

        # what an operator sees of it meanwhile
        status = run_gridedge("status", "--config", str(agent_site))
        assert status.returncode == 0, status.stderr
        assert "control: mode control" in status.stdout
        assert re.search(rf"{CAP}\s+HELD\s+wear left: ops/day 3 of 4", status.stdout), status.stdout
        assert "held out of its autonomous state by capbank" in status.stdout
        assert f"heartbeat every {HEARTBEAT_S:.1f} s" in status.stdout
        assert "capbank.close on cap675-ctl -> applied" in status.stdout, status.stdout
        explain = run_gridedge("control", "explain", "--config", str(agent_site))
        assert explain.returncode == 0, explain.stderr
        assert f"capbank (layer 2 capbank, mode control) on {CAP}:" in explain.stdout, explain.stdout
        assert "wear budgets left: cap_ops_per_day 3" in explain.stdout or "nothing to do now" in explain.stdout

        site.kill("agent")  # SIGKILL: no hand-back, no last status file
        killed = time.monotonic()
        bound_s = REVERT_S + HEARTBEAT_S + SCAN_S  # the last heartbeat is at most HEARTBEAT_S before the kill
        wait_for(lambda: "capbank_reverted" in site.log("sim"), bound_s / SPEED + 10,
                 f"the bench's controller reverting\n{site.logs('sim')}")  # fmt: skip
        wall_s = time.monotonic() - killed
        line = next(x for x in site.log("sim").splitlines() if "capbank_reverted" in x)
        silent_s = float(re.search(r"silent_s=([\d.]+)", line).group(1))  # type: ignore[union-attr]
        assert "reason=communication_loss" in line and "mode=local_auto" in line, line
        # docs/control.md: after a crash the controller's own timer puts it back revert_timeout_s after the last
        # master write, at its next scan
        assert REVERT_S <= silent_s <= REVERT_S + SCAN_S + 0.5, line
        assert wall_s <= bound_s / SPEED + 5, f"{wall_s:.1f} s of wall time after the kill"
        regs = asyncio.run(read_revert_registers(link, unit))
        assert regs == {"mode": 1, "reverted_count": 1, "last_revert_reason": 1}, regs

        # and the operator's tools say the agent is gone
        status = run_gridedge("status", "--config", str(agent_site))
        assert status.returncode == 3 and "NOT RUNNING" in status.stdout, status.stdout
        explain = run_gridedge("control", "explain", "--config", str(agent_site))
        assert explain.returncode == 3, explain.stdout + explain.stderr
        assert "the agent is not running" in explain.stderr, explain.stderr
    finally:
        site.kill_all()
