"""The agent as its own process holding an explicit volt-var curve (not the category's default) on a bench inverter
(the bench another process, the broker a real Mosquitto), judged at the bench by pysunspec2's own Modbus client:
on SIGKILL the inverter's own 705 reversion timer puts it back on IEEE 1547-2018's Category B default curve within
``reversion_s``."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.bench import NOON, ieee13_copy
from helpers.controlbench import INTERLOCKS, site_file
from helpers.db import query_db
from helpers.derrig import read_volt_var
from helpers.net import wait_port
from helpers.processes import Processes
from helpers.wait import wait_for

from sim_hw.config import load_bench_config

pytestmark = pytest.mark.integration

PV = "pv675"
SPEED = 20
REVERSION_S = 30
# IEEE 1547-2018 clause 5.3.3, Table 8, Category B default volt-var curve: V1..V4 = 0.92, 0.98, 1.02, 1.08 VN
CAT_B_V_PCT = [92.0, 98.0, 102.0, 108.0]
# the explicit curve the agent holds: inside Table 8's ranges, other than the default
MINE_V_PU, MINE_Q_PCT = [0.93, 0.99, 1.01, 1.07], [30.0, 0.0, 0.0, -30.0]
MINE_V_PCT = [93.0, 99.0, 101.0, 107.0]


@dataclass
class BenchSite(Processes):
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)


def decisions(db: Path) -> list[dict]:
    if not db.exists():
        return []
    return [json.loads(r[0]) for r in query_db(db, "SELECT data FROM events WHERE stream='control' ORDER BY id")]


def v_pct(port: int) -> list[float]:
    return [round(v, 1) for v in read_volt_var(port)["V"]]


def test_sigkill_the_inverter_returns_to_its_default_curve_within_reversion_s(tmp_path: Path, broker) -> None:
    bench_path = ieee13_copy(tmp_path, irradiance="clear")
    cfg = load_bench_config(bench_path)
    port = next(d.port for d in cfg.devices if d.name == PV)
    site = BenchSite(tmp_path)
    try:
        site.start_gridedge("sim", "sim", "run", "--config", str(bench_path), "--speed", str(SPEED))
        wait_port(port, 30)
        link = cfg.bus("bus1").link
        wait_for(link.exists, 15, "the bench's RTU pty")
        control = f"""
[[devices]]
name = "{PV}"
protocol = "sunspec"
host = "127.0.0.1"
port = {port}
unit_id = 1
poll_interval_s = 2.0
timeout_s = 0.5
settings_poll_interval_s = 5

[control]
mode = "control"
[control.envelope]
min_command_interval_s = 0
{INTERLOCKS}
[[control.der]]
name = "pv"
devices = ["{PV}"]
cadence_s = 5
stale_after_s = 30
volt_var = {{ v_pu = {MINE_V_PU}, q_pct = {MINE_Q_PCT} }}
reversion_s = {REVERSION_S}
"""
        clock = f'[clock]\nspeed = {SPEED}\nstart = "{NOON}"\n'
        agent_site = site_file(cfg, tmp_path / "agent", control, extra=clock, broker=broker.url)
        db = tmp_path / "agent" / "agent.db"
        site.start_gridedge("agent", "run", "--config", str(agent_site))
        wait_for(lambda: any(d["outcome"] == "applied" for d in decisions(db)), 60,
                 f"the agent setting its curve\n{site.logs('agent', 'sim')}")  # fmt: skip
        # held past one reversion time: the agent's refreshes keep it
        wait_for(lambda: any(d["rule"] == "reversion_refresh" and d["outcome"] == "applied" for d in decisions(db)),
                 2 * REVERSION_S / SPEED + 10, f"a refresh of the curve's timer\n{site.logs('agent')}")  # fmt: skip
        on = read_volt_var(port)
        assert on["V"] == pytest.approx(MINE_V_PCT, abs=0.05) and on["Ena"] == 1
        assert on["RvrtTms"] == REVERSION_S and 0 < on["RvrtRem"] <= REVERSION_S
        site.kill("agent")
        killed = time.monotonic()
        wait_for(lambda: v_pct(port) == CAT_B_V_PCT, REVERSION_S / SPEED + 10,
                 f"the inverter's own 705 timer restoring the default curve\n{site.logs('sim')}")  # fmt: skip
        sim_s = (time.monotonic() - killed) * SPEED
        assert sim_s <= REVERSION_S + 5, f"reverted {sim_s:.1f} simulated s after the kill"
        print(f"volt-var back on the Category B default {sim_s:.1f} simulated s after SIGKILL "
              f"(reversion_s = {REVERSION_S})")  # fmt: skip
    finally:
        site.kill_all()
