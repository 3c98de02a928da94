"""The agent as its own process controlling a bench inverter (the bench another process, the broker a real
Mosquitto), judged at the bench by pysunspec2's own Modbus client: on SIGKILL the inverter's own SunSpec 704
reversion timer turns the agent's set point off within ``reversion_s``; on SIGTERM the agent hands it back first."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers.bench import ieee13_copy
from helpers.benchsite import BenchSite, decisions
from helpers.db import query_db
from helpers.wait import wait_for

pytestmark = pytest.mark.integration

SPEED = 20
REVERSION_S = 30


def read_704(port: int) -> dict:
    """Model 704 of the bench inverter as pysunspec2's SunSpecModbusClientDeviceTCP reads it."""
    import sunspec2.modbus.client as client

    d = client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port)
    try:
        d.scan()
        m = d.models[704][0]
        m.read()
        return {"ena": m.PFWInjEna.value, "pf": m.PFWInj.PF.cvalue, "ext": m.PFWInj.Ext.value,
                "tms": m.PFWInjRvrtTms.value, "rem": m.PFWInjRvrtRem.value}  # fmt: skip
    finally:
        d.close()


def start(tmp_path: Path, broker) -> tuple[BenchSite, int, Path]:
    site = BenchSite(tmp_path)
    try:
        group = f'constant_pf = {{ pf = 0.95, excitation = "absorbing" }}\nreversion_s = {REVERSION_S}'
        port, db = site.start_der(ieee13_copy(tmp_path, irradiance="clear"), SPEED, group, broker=broker.url,
                                  what="the agent setting constant PF")  # fmt: skip
    except BaseException:
        site.kill_all()
        raise
    return site, port, db


def test_sigkill_the_inverter_reverts_the_agents_set_point_within_reversion_s(tmp_path: Path, broker) -> None:
    site, port, _db = start(tmp_path, broker)
    try:
        on = read_704(port)
        assert (on["ena"], on["ext"], on["tms"]) == (1, 1, REVERSION_S) and on["pf"] == pytest.approx(0.95, abs=1e-3)
        site.kill("agent")
        killed = time.monotonic()
        wait_for(lambda: read_704(port)["ena"] == 0, REVERSION_S / SPEED + 10,
                 f"the inverter's own timer turning constant PF off\n{site.logs('sim')}")  # fmt: skip
        sim_s = (time.monotonic() - killed) * SPEED
        assert sim_s <= REVERSION_S + 5, f"reverted {sim_s:.1f} simulated s after the kill"
        print(f"constant PF off {sim_s:.1f} simulated s after SIGKILL (reversion_s = {REVERSION_S})")
    finally:
        site.kill_all()


def test_sigterm_hands_the_inverter_back_before_the_agent_exits(tmp_path: Path, broker) -> None:
    site, port, db = start(tmp_path, broker)
    try:
        assert site.stop("agent") == 0, site.logs("agent")
        off = read_704(port)
        assert off["ena"] == 0 and off["tms"] == 0, "set point off, no timer running: the autonomous state"
        (hb,) = [d for d in decisions(db) if d["rule"] == "handback:agent_stopping"]
        assert hb["outcome"] == "reverted"
        assert query_db(db, "SELECT kind FROM control_flags") == []
    finally:
        site.kill_all()
