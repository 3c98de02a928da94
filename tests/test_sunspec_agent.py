"""End to end with real processes: the IEEE 13-node bench (`gridedge sim run`) and the agent (`gridedge run`) with the
shipped demo site's SunSpec inverter entries, on free ports. The agent discovers each inverter (no map) and stores its
readings under <device>.<model>.<point>, e.g. pv675.DERMeasureAC.W, with the bench's noon output."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.bench import ieee13_copy
from helpers.broker import Broker
from helpers.db import query_db
from helpers.net import wait_port
from helpers.processes import Processes
from helpers.wait import wait_for

from sim_hw.config import load_bench_config

ROOT = Path(__file__).resolve().parent.parent
INVERTERS = ("pv675", "pv680", "pv634", "pv652")


@dataclass
class Site(Processes):
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)


def agent_site(bench: Path, broker_url: str, out: Path) -> Path:
    """The shipped config/agent-sim.toml's SunSpec inverter entries, verbatim but for the ports of the bench copy."""
    ports = {d.name: d.port for d in load_bench_config(bench).devices}
    shipped = (ROOT / "config" / "agent-sim.toml").read_text()
    blocks = []
    for name in INVERTERS:
        m = re.search(rf'\[\[devices\]\]\nname = "{name}"\nprotocol = "sunspec"\n(?:[a-z_]+ = .*\n)+', shipped)
        assert m, f"the shipped demo site has no SunSpec entry for {name}"
        blocks.append(re.sub(r"(?m)^port = \d+$", f"port = {ports[name]}", m[0]))
    head = f'site_id = "sunspec-e2e"\n[store]\npath = "agent.db"\n[uplink]\nbroker = "{broker_url}"\n\n'
    text = head + "\n".join(blocks)
    out.write_text(text)
    return out


def good_readings(db: Path, point: str) -> list[tuple[float, str]]:
    return [(v, u) for v, u in query_db(db, "SELECT value, unit FROM readings WHERE point = ? AND quality = 'good'",
                                        (point,))]  # fmt: skip


@pytest.mark.integration
def test_a_real_agent_discovers_the_bench_inverters_and_stores_pv675_active_power(
    tmp_path: Path, broker: Broker
) -> None:
    bench = ieee13_copy(tmp_path)  # free ports, solar noon, clear sky
    cfg = load_bench_config(bench)
    agent = agent_site(bench, broker.url, tmp_path / "agent.toml")
    s = Site(tmp_path)
    try:
        s.start_gridedge("sim", "sim", "run", "--config", str(bench))
        for d in cfg.devices:
            if d.name in INVERTERS:
                wait_port(d.port, 120)
        s.start_gridedge("agent", "run", "--config", str(agent))
        db = tmp_path / "agent.db"
        rows = wait_for(lambda: good_readings(db, "pv675.DERMeasureAC.W"), 60, "pv675.DERMeasureAC.W in the store")
        serials = wait_for(lambda: query_db(db, "SELECT point, value FROM readings WHERE point LIKE '%.common.SN'"), 30,
                           "the inverters' serial numbers")  # fmt: skip
        hz = wait_for(lambda: good_readings(db, "pv652.DERMeasureAC.Hz"), 30, "pv652.DERMeasureAC.Hz in the store")
    finally:
        for name in list(s.procs):
            s.stop(name)
    value, unit = rows[-1]
    assert unit == "W"
    # 2500 kW of PV at solar noon under a clear sky: generating, within its rating
    assert 0 < float(value) <= 2_500_000
    assert {p.split(".")[0] for p, _ in serials} == set(INVERTERS)
    assert float(hz[-1][0]) == pytest.approx(60.0, abs=0.05) and hz[-1][1] == "Hz"
    log = (tmp_path / "agent.log").read_text()
    assert log.count("event=sunspec_discovered") >= 4 and "Traceback" not in log
