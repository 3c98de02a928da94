"""The regulator function and CVR in the loop with the real bench: OpenDSS physics, the regulator control
(SIM-REG-1) and the cap bank controller on the RS-485 line over a socat pty, the meters and the relay over Modbus
TCP, the agent's own pollers, store and envelope.

Every outcome is judged at the bench (the regulator model's registers, taps and counters, and the solved
feeder), not by what the agent believes. The bench runs at 20x; the agent's clock is the bench's. At solar noon
(clear sky) the head exports about 1.7 MW; the regulator starts at the published taps (10, 8, 11) on automatic
with its 122 V band centre and lowers to about (5, 4, 6) after its 30 s delay, where bus 675 (the far end) is
about 122..125 V on the 120 V base.
"""

from __future__ import annotations

import pytest
from helpers.aio import async_test, until
from helpers.controlbench import INTERLOCKS, bench_steps, running_agent, running_bench
from helpers.controlbench_reg import REG, reg_model, reg_site_file

from sim_hw.devices.modbus_server import WriteRequest
from sim_hw.devices.regulator import Mode

pytestmark = pytest.mark.integration

MANUAL = """
[control]
mode = "control"
[control.envelope]
readback_timeout_s = {readback}
min_command_interval_s = 0
max_commands_per_hour = 1000
hunting_reversals = {reversals}
{interlocks}
[control.regulator]
device = "reg-ctl"
operation = "manual"
heartbeat_point = "heartbeat"
cadence_s = 5
band_center_v = {centre}
bandwidth_v = {bandwidth}
reverse_power = "allow"
min_dwell_s = 0
settle_s = 0
taps_per_day = {taps}
"""


def manual(*, centre: float = 122.0, bandwidth: float = 2.0, taps: int = 500, reversals: int = 20,
           readback: float = 30) -> str:  # fmt: skip
    return MANUAL.format(centre=centre, bandwidth=bandwidth, taps=taps, reversals=reversals, readback=readback,
                         interlocks=INTERLOCKS)  # fmt: skip


def applied_taps(agent) -> list[dict]:
    return [d for d in agent.decisions() if d["outcome"] == "applied" and d["command"]["action"] == "regulator.taps"]


@async_test
async def test_induced_hunting_a_band_narrower_than_a_tap_step_is_frozen_and_alarmed(tmp_path) -> None:
    """A 0.4 V band is narrower than one tap step (0.625 % of 120 V = 0.75 V, ANSI C57.15): a step out of the band
    on one side lands outside it on the other, so the agent's taps reverse until the detector freezes them. At noon
    each phase's regulated voltage sits on a grid of tap steps, ... 122.34, 123.09, 123.84 ... V (measured on this
    bench: taps (4, 4, 5) give 123.09 / 123.09 / 123.84 V): the band 123.3..123.7 V holds none of them."""
    async with running_bench(tmp_path) as bench:
        model = reg_model(bench)
        site = reg_site_file(bench, tmp_path / "agent", manual(centre=123.5, bandwidth=0.4, reversals=3))
        async with running_agent(bench, site) as agent:
            await until(lambda: any(d["verdict"] == "refused:hunting" for d in agent.decisions()), timeout=45)
            await until(lambda: model.mode is Mode.AUTOMATIC, timeout=10)  # handed back: its own band again
            await until(lambda: any(d["rule"] == "handback:hunting" for d in agent.decisions()), timeout=10)
            ((_, data),) = [e for e in agent.events() if e[0] == "control_hunting"]
            assert data["function"] == "regulator" and data["reversals"] >= 3
            moves = [sum(d["command"]["values"][f"tap_{p}"] - d["inputs"][k]["value"] for k, p in enumerate("abc"))
                     for d in applied_taps(agent)]  # fmt: skip
            assert any(m > 0 for m in moves) and any(m < 0 for m in moves), moves  # it did reverse
            (hb,) = [d for d in agent.decisions() if d["rule"] == "handback:hunting"]
            assert hb["outcome"] == "reverted" and hb["readback"]["mode"] == Mode.AUTOMATIC
            counts = list(model.operation_counts)
            n = len(agent.decisions())
            await bench_steps(bench, 40)
            later = [d["verdict"] for d in agent.decisions()[n:] if d["command"]]
            assert set(later) <= {"refused:suspended"}, later
            assert not applied_taps(agent)[len(moves) :], "frozen: no tap command after the alarm"
        assert model.mode is Mode.AUTOMATIC
        assert model.operation_counts != [0, 0, 0] and counts is not None


@async_test
async def test_a_spent_tap_budget_stops_further_operation_with_an_event(tmp_path) -> None:
    """taps_per_day = 4: the first command lowers the three phases a step each (3 taps); the next would cost 3
    more with 1 left, so it is refused, once alarmed, and the regulator's counters stop there."""
    async with running_bench(tmp_path) as bench:
        model = reg_model(bench)
        start_counts = list(model.operation_counts)
        site = reg_site_file(bench, tmp_path / "agent", manual(centre=119.0, taps=4))
        async with running_agent(bench, site) as agent:
            await until(lambda: any(d["verdict"] == "refused:budget:taps_per_day" for d in agent.decisions()),
                        timeout=30)  # fmt: skip
            (d,) = applied_taps(agent)
            assert d["rule"] == "tap_lower" and d["budgets_left"]["taps_per_day"] == 1
            await bench_steps(bench, 40)
            assert [k for k, _ in agent.events()] == ["control_budget_spent"]
            assert len(applied_taps(agent)) == 1
            assert model.mode is Mode.MANUAL, "held where the agent left it, the taps still"
            moved = [c - s for c, s in zip(model.operation_counts, start_counts, strict=True)]
            assert sum(moved) == 3, moved
            assert model.taps == [int(d["command"]["values"][f"tap_{p}"]) for p in "abc"]
        assert model.mode is Mode.AUTOMATIC, "handed back at stop"


@async_test
async def test_a_regulator_that_ignores_the_agent_s_writes_raises_the_alarm_is_suspended_and_back_on_automatic(
    tmp_path,
) -> None:
    """The control's local/remote switch at its panel is on local: it answers the master's writes and acts on
    none of the tap targets (a fault the bench cannot make by itself, so the model's write hook drops them)."""
    async with running_bench(tmp_path) as bench:
        model = reg_model(bench)
        server = bench.server_of(REG)

        def local_panel(req: WriteRequest):
            points = {k: v for k, v in req.points.items() if not k.startswith("tap_target")}
            if not points:
                return None  # accepted, ignored
            return model.on_write(WriteRequest(req.unit_id, req.table, req.address, req.values, points))

        server.on_write(next(d.unit_id for d in bench.config.devices if d.name == REG), local_panel)
        site = reg_site_file(bench, tmp_path / "agent", manual(centre=119.0, readback=10))
        async with running_agent(bench, site) as agent:
            await until(lambda: any(d["outcome"] == "readback_failed" for d in agent.decisions()), timeout=30)
            await until(lambda: model.mode is Mode.AUTOMATIC, timeout=10)
            await until(lambda: any(d["rule"] == "handback:readback_failed" for d in agent.decisions()), timeout=10)
            (failed,) = [d for d in agent.decisions() if d["outcome"] == "readback_failed"]
            assert failed["command"]["action"] == "regulator.taps"
            assert [failed["readback"][f"tap_{p}"] for p in "abc"] != [failed["command"]["values"][f"tap_{p}"]
                                                                     for p in "abc"]  # fmt: skip
            assert [k for k, _ in agent.events()] == ["control_readback_failed"]
            (hb,) = [d for d in agent.decisions() if d["rule"] == "handback:readback_failed"]
            assert hb["outcome"] == "reverted"
            await bench_steps(bench, 30)
            later = [d["verdict"] for d in agent.decisions() if d["ts"] > hb["ts"] and d["command"]
                     and d["command"]["action"] != "handback"]  # fmt: skip
            assert later and set(later) == {"refused:suspended"}
            assert model.mode is Mode.AUTOMATIC and model.settings["band_center_v"] == 122.0


CVR = """
[control]
mode = "control"
[control.envelope]
min_command_interval_s = 0
max_commands_per_hour = 1000
{interlocks}
[control.regulator]
device = "reg-ctl"
heartbeat_point = "heartbeat"
cadence_s = 10
band_center_v = 122.0
band_center_min_v = 118.0
reverse_power = "allow"
min_dwell_s = 0
settle_s = 20
setpoint_changes_per_hour = 50
[control.cvr]
enabled = true
voltage_points = [
  {{ point = "cap675-ctl.v_a", nominal_v = 120.0 }},
  {{ point = "cap675-ctl.v_b", nominal_v = 120.0 }},
  {{ point = "cap675-ctl.v_c", nominal_v = 120.0 }},
]
margin_v = 2.0
step_v = 0.5
period_s = 20
stale_after_s = 30
"""


@async_test
async def test_cvr_lowers_the_band_centre_above_the_floor_and_restores_it_at_once_when_the_far_end_goes_stale(
    tmp_path,
) -> None:
    """CVR's floor: ANSI C84.1 Range A's 114 V + 2 V margin = 116 V at bus 675. The band centre goes down in
    0.5 V steps, the regulator's own control follows with its taps, and the moment the far end's data goes stale
    the band centre is back at 122 V at the bench."""
    async with running_bench(tmp_path) as bench:
        model = reg_model(bench)
        cap = bench.model_of("cap675-ctl")
        site = reg_site_file(bench, tmp_path / "agent", CVR.format(interlocks=INTERLOCKS))
        eol_min: list[float] = []
        async with running_agent(bench, site) as agent:
            await until(lambda: model.taps == [5, 4, 6] or sum(model.taps) <= 15, timeout=20)  # its own band first
            taps_before = sum(model.taps)

            async def lowered() -> bool:
                eol_min.append(min(cap.values(bench.sim_time)[f"v_{p}"] for p in "abc"))
                done = [d for d in agent.decisions() if d["rule"] == "cvr_lower" and d["outcome"] == "applied"]
                return len(done) >= 3

            await until(lowered, timeout=40)
            lowers = [d for d in agent.decisions() if d["rule"] == "cvr_lower" and d["outcome"] == "applied"]
            assert [d["command"]["values"]["band_center_v"] for d in lowers[:3]] == [121.5, 121.0, 120.5]
            assert all(d["detail"]["v_min_v"] >= 116.5 for d in lowers), "each lower a step above the 116 V floor"
            await until(lambda: sum(model.taps) < taps_before, timeout=20)  # the physics follows the band
            assert min(eol_min) >= 116.0, "the far end stayed above the floor at the bench"
            # the far end's data goes stale: the capacitor controller (its PT) stops answering
            bench.silence("cap675-ctl", True)
            silenced = bench.sim_time
            await until(lambda: model.settings["band_center_v"] == 122.0, timeout=20)
            restored_after_s = bench.sim_time - silenced
            # the decision is stored once its readback is in (the device shows the write a moment before)
            await until(lambda: any(d["rule"] == "restore_stale" for d in agent.decisions()), timeout=10)
            (r,) = [d for d in agent.decisions() if d["rule"] == "restore_stale"]
            assert r["outcome"] == "applied" and r["command"]["values"]["band_center_v"] == 122.0
            assert "cap675-ctl.v_a" in r["detail"]["points"]
            # stale after 30 s + one 10 s look + the write and its readback (a few RTU exchanges)
            assert restored_after_s <= 30 + 10 + 15, restored_after_s
            await bench_steps(bench, 40)
            assert model.settings["band_center_v"] == 122.0, "no further lowering on stale data"
            assert not [d for d in agent.decisions() if d["rule"] == "cvr_lower" and d["ts"] > r["ts"]]


SUPERVISE = """
[control]
mode = "control"
[control.envelope]
min_command_interval_s = 0
{interlocks}
[control.regulator]
device = "reg-ctl"
heartbeat_point = "heartbeat"
cadence_s = 5
band_center_v = 121.0
band_center_max_v = 121.5
min_dwell_s = 0
reverse_power = "hold"
head_power_point = "sub-meter.p_total"
voltage_points = [
  {{ point = "reg-ctl.v_reg_a", nominal_v = 120.0 }},
  {{ point = "reg-ctl.v_reg_b", nominal_v = 120.0 }},
  {{ point = "reg-ctl.v_reg_c", nominal_v = 120.0 }},
]
"""


@async_test
async def test_supervise_keeps_the_band_centre_within_its_limits_and_holds_while_the_head_exports(tmp_path) -> None:
    """At noon the head exports about 1.7 MW and the regulated voltages start above Range A (127.6 / 126.1 /
    128.3 V at the published taps): the band centre is brought within its 121.5 V limit even so, and the Range A
    move is held for the reverse power; at stop the control is back on its panel's 122 V."""
    async with running_bench(tmp_path) as bench:
        model = reg_model(bench)
        site = reg_site_file(bench, tmp_path / "agent", SUPERVISE.format(interlocks=INTERLOCKS))
        async with running_agent(bench, site) as agent:
            await until(lambda: any(d["rule"] == "reverse_power" for d in agent.decisions()), timeout=30)
            (limit,) = [d for d in agent.decisions() if d["outcome"] == "applied"]
            assert (limit["rule"], limit["command"]["values"]) == ("band_center_limit", {"band_center_v": 121.5})
            assert model.settings["band_center_v"] == 121.5 and model.mode is Mode.AUTOMATIC
            (held,) = [d for d in agent.decisions() if d["rule"] == "reverse_power"]
            assert held["command"] is None and held["detail"]["head_power"] < 0
            assert bench.model_of("sub-meter").values(bench.sim_time)["p_total"] < 0, "the head exports, truly"
            assert held["detail"]["v_max_v"] > 126.0, "a Range A move was called for, and held"
            await bench_steps(bench, 30)
            assert [d["rule"] for d in agent.decisions() if d["outcome"] == "applied"] == ["band_center_limit"]
            assert model.settings["band_center_v"] == 121.5
        assert model.settings["band_center_v"] == 122.0 and model.mode is Mode.AUTOMATIC, "handed back at stop"
