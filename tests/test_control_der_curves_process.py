"""The agent as its own process holding an explicit volt-var curve (not the category's default) on a bench inverter
(the bench another process, the broker a real Mosquitto), judged at the bench by pysunspec2's own Modbus client:
on SIGKILL the inverter's own 705 reversion timer puts it back on IEEE 1547-2018's Category B default curve within
``reversion_s``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers.bench import ieee13_copy
from helpers.benchsite import BenchSite, decisions
from helpers.derrig import read_volt_var
from helpers.wait import wait_for

pytestmark = pytest.mark.integration

SPEED = 20
REVERSION_S = 30
# IEEE 1547-2018 clause 5.3.3, Table 8, Category B default volt-var curve: V1..V4 = 0.92, 0.98, 1.02, 1.08 VN
CAT_B_V_PCT = [92.0, 98.0, 102.0, 108.0]
# the explicit curve the agent holds: inside Table 8's ranges, other than the default
MINE_V_PU, MINE_Q_PCT = [0.93, 0.99, 1.01, 1.07], [30.0, 0.0, 0.0, -30.0]
MINE_V_PCT = [93.0, 99.0, 101.0, 107.0]


def v_pct(port: int) -> list[float]:
    return [round(v, 1) for v in read_volt_var(port)["V"]]


def test_sigkill_the_inverter_returns_to_its_default_curve_within_reversion_s(tmp_path: Path, broker) -> None:
    site = BenchSite(tmp_path)
    try:
        group = f"volt_var = {{ v_pu = {MINE_V_PU}, q_pct = {MINE_Q_PCT} }}\nreversion_s = {REVERSION_S}"
        port, db = site.start_der(ieee13_copy(tmp_path, irradiance="clear"), SPEED, group, broker=broker.url,
                                  what="the agent setting its curve")  # fmt: skip
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
