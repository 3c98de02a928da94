"""The agent as its own process in control of the bench's capacitor bank (the bench another process, the broker a
real Mosquitto): on SIGTERM it hands the bank back to local automatic before it lets go of the RS-485 line, and
the bench's controller, read over that line afterwards, says so."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers.bench import ieee13_copy
from helpers.benchsite import BenchSite, decisions, read_cap
from helpers.controlbench import CAP, OPEN_LOCAL_AUTO, capbank_control
from helpers.db import query_db

pytestmark = pytest.mark.integration


def test_sigterm_hands_the_bank_back_to_local_automatic_before_the_agent_exits(tmp_path: Path, broker) -> None:
    bench_path = ieee13_copy(tmp_path, edit=OPEN_LOCAL_AUTO, irradiance="clear")
    site = BenchSite(tmp_path)
    try:
        cfg, link = site.start_bench(bench_path, 20)
        _agent_site, db = site.start_agent(cfg, capbank_control(), speed=20, broker=broker.url)
        site.wait_applied(db, "the agent closing the bank")
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
