"""``gridedge control explain`` against a running agent (bench, agent and Mosquitto each their own process) in
advise mode: what explain says the cap bank function would do is what the agent then decides (the same command,
rule and envelope answer), and neither writes anything: the bench's controller, read over its RS-485 line
afterwards and by its own log, was never selected, operated or set."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from helpers.bench import ieee13_copy
from helpers.benchsite import BenchSite, decisions, read_cap
from helpers.controlbench import CAP, OPEN_REMOTE, capbank_control
from helpers.processes import run_gridedge
from helpers.wait import wait_for

pytestmark = pytest.mark.integration

SPEED = 5.0
CONTROL = capbank_control("advise", envelope="", cadence_s=20, delay_s=21, more='heartbeat_point = "heartbeat"')


def advised(db: Path) -> list[dict]:
    return [d for d in decisions(db) if d["outcome"] == "advised"]


def explained(site: Path) -> dict | None:
    """The cap bank function's decision as ``control explain --json`` gives it now (None: nothing to do)."""
    proc = run_gridedge("control", "explain", "--config", str(site), "--json")
    assert proc.returncode == 0, proc.stderr
    (fn,) = json.loads(proc.stdout)["functions"]
    return fn["decision"]


def test_explain_foretells_the_agents_advice_and_nothing_reaches_the_bank(tmp_path: Path, broker) -> None:
    bench_path = ieee13_copy(tmp_path, edit=OPEN_REMOTE, irradiance="clear")
    site = BenchSite(tmp_path)
    try:
        cfg, link = site.start_bench(bench_path, SPEED)
        agent_site, db = site.start_agent(cfg, CONTROL, speed=SPEED, broker=broker.url)
        wait_for((tmp_path / "agent" / "agent.db.control.json").exists, 30, site.logs("agent"))
        # the open bank with the head drawing more than 1.5 Mvar at noon: close, once the call has held 21 s. The
        # agent decides every 20 s, so it advises 40 s after the call began; from 21 s on, explain foretells it
        foretold, seen = None, []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not advised(db):
            d = explained(agent_site)  # before: inputs not read yet (held), or the call's delay running (None)
            seen.append(None if d is None else d["rule"])
            if d is not None and d["command"] is not None:
                foretold = d
                break
            time.sleep(0.2)
        assert foretold is not None, f"explain never foretold a command: {seen}\n{site.logs('agent')}"
        assert "inputs_stale" in seen or None in seen, "explain saw the function wait before it acts"
        assert foretold["command"]["action"] == "capbank.close" and foretold["rule"] == "var_lagging"
        assert foretold["detail"]["would"] == "allowed" and foretold["outcome"] == "advised"
        wait_for(lambda: advised(db), 30, f"the agent's advice\n{site.logs('agent')}")
        d = advised(db)[0]
        assert (d["command"]["action"], d["rule"], d["detail"]["would"]) == ("capbank.close", "var_lagging", "allowed")
        assert site.stop("agent") == 0, site.logs("agent")
        unit = next(d.unit_id for d in cfg.devices if d.name == CAP)
        assert asyncio.run(read_cap(link, unit)) == (0, False), "still open, still in remote: nothing written"
        bench_log = site.log("sim")
        assert not any(k in bench_log for k in ("capbank_selected", "capbank_operate", "capbank_settings"))
    finally:
        site.kill_all()
