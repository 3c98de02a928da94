"""A PMU event end to end, with real parts only: a SimPmu (a real C37.118.2 TCP server) in its own
process, the agent and central as separate `gridedge` processes, and our own Mosquitto.

The PMU streams at 30 frames/s; the agent's once-a-second readings must reach central's readings table,
and a scripted loss of time sync must reach central's events table as exactly one `pmu_time_sync`
event carrying its full-rate window around the trigger and the clause it was judged by.
"""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.broker import Broker
from helpers.db import query_db
from helpers.net import free_port, wait_port
from helpers.processes import Processes
from helpers.wait import wait_for

ROOT = Path(__file__).resolve().parent.parent
PMU = "sub_pmu"
IDCODE = 7
RATE = 30
NOMINAL_V = 7200.0

# The SimPmu runner: one line per command on stdin ("lose_sync", "stop_sending", "stop"); it answers on
# stdout with "listening <port>" once serving and "<what> <wall clock>" when the fault is in place.
RUNNER = f"""
import asyncio, sys, time
sys.path.insert(0, {str(ROOT)!r})
from sim_hw.devices.pmu import SimPmu


async def main(port):
    pmu = await SimPmu({IDCODE}, "E2E PMU", rate={RATE}, nominal_v={NOMINAL_V}, port=port).start()
    print("listening", pmu.port, flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "lose_sync":
            pmu.lose_sync()
            print("sync_lost", repr(time.time()), flush=True)
        elif line == "stop_sending":
            pmu.stop_sending()
            print("stopped_sending", repr(time.time()), flush=True)
        elif line in ("stop", ""):
            break
    await pmu.stop()


asyncio.run(main(int(sys.argv[1])))
"""


@dataclass
class PmuSite(Processes):
    """A SimPmu, central and an agent on one test's broker, each in its own process group."""

    workdir: Path
    broker: Broker
    pmu_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def central_db(self) -> Path:
        return self.workdir / "central.db"

    def write_configs(self) -> None:
        (self.workdir / "pmu_runner.py").write_text(RUNNER)
        (self.workdir / "central.toml").write_text(
            f'[broker]\nurl = "{self.broker.url}"\n\n[store]\ndb = "central.db"\n'
        )
        # No Modbus devices: a PMU-only site.
        (self.workdir / "agent.toml").write_text(
            f"""
site_id = "pmu-e2e"

[store]
path = "agent.db"
batch_size = 50

[uplink]
broker = "{self.broker.url}"
ack_timeout_s = 3
keepalive_s = 5
drain_on_stop_s = 3

[[pmus]]
name = "{PMU}"
host = "127.0.0.1"
port = {self.pmu_port}
idcode = {IDCODE}
cfg = 2
stale_after_s = 2.0
nominal_v = {NOMINAL_V}
"""
        )

    def start_pmu(self) -> None:
        proc = self.spawn(
            "pmu",
            [sys.executable, "pmu_runner.py", str(self.pmu_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line == ["listening", str(self.pmu_port)], (line, self.log("pmu"))
        wait_port(self.pmu_port, 5)

    def pmu_command(self, command: str) -> str:
        proc = self.procs["pmu"]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        # One reply line per command, so nothing sits in the pipe's read buffer: select() sees it.
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, f"the SimPmu runner did not answer {command!r}\n{self.log('pmu')}"
        return proc.stdout.readline().strip()

    def central_readings(self, point: str) -> list[tuple]:
        sql = "SELECT ts, value, unit, quality FROM readings WHERE point = ? ORDER BY ts"
        return query_db(self.central_db, sql, (point,))

    def events(self) -> list[tuple]:
        return query_db(self.central_db, "SELECT ts, kind, severity, source, text, data FROM events")

    def pmu_status(self) -> dict:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads((self.workdir / "agent.db.status.json").read_text())["pmus"][PMU]
        return {}

    def wait_for_history(self, seconds: float) -> None:
        """Until the agent holds ``seconds`` of the stream: a fault's window then has all its before-part."""
        wait_for(lambda: self.pmu_status().get("frames", 0) >= seconds * RATE, 20, f"{seconds} s of PMU frames", 0.2)

    def logs(self) -> str:  # type: ignore[override]
        return Processes.logs(self, "pmu", "agent", "central")


@pytest.fixture
def site(tmp_path: Path, broker: Broker) -> Iterator[PmuSite]:
    s = PmuSite(tmp_path, broker)
    s.write_configs()
    try:
        s.start_pmu()
        s.start_gridedge("central", "central", "run", "--config", "central.toml")
        yield s
    finally:
        s.kill_all()


def test_pmu_readings_and_time_sync_event_reach_central(site: PmuSite) -> None:
    started = time.time()
    site.start_gridedge("agent", "run", "--config", "agent.toml")

    central_readings = site.central_readings
    events = site.events
    # The PMU's once-a-second readings arrive in central with their units and sane values.
    wait_for(lambda: len(central_readings(f"{PMU}.frequency")) >= 3, 20, "PMU readings in central", 0.2)
    freq = central_readings(f"{PMU}.frequency")
    vmag = central_readings(f"{PMU}.VA.mag")
    assert vmag, site.logs()
    for ts, value, unit, quality in freq:
        assert unit == "Hz" and quality == "good" and 59.5 <= value <= 60.5, (ts, value, unit, quality)
        assert started - 1 <= ts <= time.time() + 1
    for _ts, value, unit, quality in vmag:
        assert unit == "V" and quality == "good" and 0.98 * NOMINAL_V <= value <= 1.02 * NOMINAL_V
    # One reading a second: the first frame of each second (after the first, mid-second at connection).
    stamps = sorted(ts for ts, *_ in freq)
    assert all(abs(ts - round(ts)) < 1e-6 for ts in stamps[1:]), stamps
    assert len(set(map(int, stamps))) == len(stamps), stamps
    site.wait_for_history(3.0)
    status = site.pmu_status()
    assert status["connected"] and status["triggers"] == 0 and status["out_of_order"] == 0, status

    # The GPS goes: exactly one time-sync event, with its full-rate window, reaches central.
    reply = site.pmu_command("lose_sync").split()
    assert reply[0] == "sync_lost", reply
    lost_at = float(reply[1])

    wait_for(events, 15, "the time-sync event in central", 0.2)
    time.sleep(1.5)  # room for a duplicate to show up, were there one
    rows = events()
    assert len(rows) == 1, rows
    ts, kind, severity, source, text, data_json = rows[0]
    assert (kind, severity, source) == ("pmu_time_sync", "error", PMU)
    assert "time synchronisation lost" in text and "STAT bit 13" in text
    # The trigger is the first frame after the fault (a frame is stamped with its grid instant).
    assert lost_at - 2.0 / RATE <= ts <= lost_at + 0.5, (ts, lost_at)
    data = json.loads(data_json)
    assert data["clause"].startswith("IEEE C37.118.2-2011 6.3 Table 7")
    assert data["limit_time_quality_code"] == 4
    assert any(r.startswith("STAT bit 13") for r in data["reasons"])
    win = data["window"]
    assert win["decimation"] == 1 and win["t_ref"] == ts
    assert (win["before_s"], win["after_s"]) == (2.0, 2.0)
    t_ms = win["t_ms"]
    # Full rate, spanning the trigger: ~2 s before and ~2 s after, one sample per 1/30 s, no gap.
    assert t_ms[0] <= -1900 and t_ms[-1] >= 1900, (t_ms[0], t_ms[-1])
    steps = [b - a for a, b in zip(t_ms, t_ms[1:], strict=False)]
    assert all(abs(s - 1000 / RATE) < 0.2 for s in steps), steps
    assert 0.0 in t_ms
    n = len(t_ms)
    assert n >= 4 * RATE
    for channel in ("frequency_hz", "rocof_hz_per_s", "VA_mag_pu", "VA_ang_deg", "IA_mag_a"):
        assert len(win[channel]) == n, channel
    assert all(59.5 <= f <= 60.5 for f in win["frequency_hz"])
    assert all(0.98 <= v <= 1.02 for v in win["VA_mag_pu"])

    # After the loss the angles are flagged INVALID (meaningless without UTC); magnitudes stay good.
    def invalid_angle_after_loss() -> list[tuple]:
        return [r for r in central_readings(f"{PMU}.VA.ang") if r[0] > lost_at and r[3] == "invalid"]

    wait_for(invalid_angle_after_loss, 10, "an INVALID angle reading after the sync loss", 0.2)
    assert not [r for r in central_readings(f"{PMU}.VA.ang") if r[0] < lost_at - 1 and r[3] != "good"]

    # SIGTERM: the PMU client and events tasks stop promptly and the agent exits cleanly.
    t0 = time.monotonic()
    code = site.stop("agent", 10)
    elapsed = time.monotonic() - t0
    assert code == 0, site.logs()
    assert elapsed < 6, elapsed
    assert len(events()) == 1  # nothing more on the way out
    assert "event=agent_stopped" in site.log("agent")


def test_stale_pmu_stream_reaches_central_as_one_event_and_stale_readings(site: PmuSite) -> None:
    site.start_gridedge("agent", "run", "--config", "agent.toml")
    wait_for(lambda: len(site.central_readings(f"{PMU}.frequency")) >= 2, 20, "PMU readings in central", 0.2)
    site.wait_for_history(3.0)

    # The PMU stops sending with its TCP connection up: after stale_after_s (2 s), one pmu_stale event.
    reply = site.pmu_command("stop_sending").split()
    assert reply[0] == "stopped_sending", reply
    stopped_at = float(reply[1])
    wait_for(site.events, 10, "the stale event in central", 0.2)
    time.sleep(1.5)  # room for a duplicate to show up, were there one
    rows = site.events()
    assert len(rows) == 1, rows
    ts, kind, severity, source, text, data_json = rows[0]
    assert (kind, severity, source) == ("pmu_stale", "warning", PMU)
    assert "no data frame for" in text
    assert stopped_at + 2.0 - 0.2 <= ts <= stopped_at + 4.0, (ts, stopped_at)
    data = json.loads(data_json)
    assert data["stale_after_s"] == 2.0 and data["clause"] == "configured stale_after_s"
    last = data["last_frame_ts"]
    assert stopped_at - 0.5 <= last <= stopped_at + 0.1, (last, stopped_at)
    # The window centres on the last frame received: full-rate data before it, none after.
    win = data["window"]
    assert win["t_ref"] == last and win["decimation"] == 1
    assert win["t_ms"][-1] == 0.0 and win["t_ms"][0] <= -1900
    assert all(abs(b - a - 1000 / RATE) < 0.2 for a, b in zip(win["t_ms"], win["t_ms"][1:], strict=False))

    # One set of STALE readings, with no value, reaches central for every PMU point.
    def stale(point: str) -> list[tuple]:
        return [r for r in site.central_readings(point) if r[3] == "stale"]

    wait_for(lambda: stale(f"{PMU}.frequency"), 10, "a STALE frequency reading in central", 0.2)
    for point, unit in ((f"{PMU}.frequency", "Hz"), (f"{PMU}.rocof", "Hz/s"), (f"{PMU}.VA.mag", "V"),
                        (f"{PMU}.IA.mag", "A"), (f"{PMU}.VA.ang", "deg")):  # fmt: skip
        got = stale(point)
        assert len(got) == 1 and got[0][1] is None and got[0][2] == unit, (point, got)
    status = site.pmu_status()
    # The agent's PdcClient ends a silent session and reconnects (protocols/c37118/pdc.py); still one event.
    assert status["stale"] and status["reconnects"] >= 1, status

    t0 = time.monotonic()
    assert site.stop("agent", 10) == 0, site.logs()
    assert time.monotonic() - t0 < 6
    assert len(site.events()) == 1
