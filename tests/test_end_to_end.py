"""The spine end to end, with real parts only: the bench's meters behind real Modbus servers (TCP and
RTU over a socat pty pair), the agent and central as separate `gridedge` processes, and our own
Mosquitto that the test kills and restarts. Central stores in SQLite or in PostgreSQL (each test runs on both)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.broker import Broker
from helpers.db import query_db
from helpers.net import free_port, wait_port
from helpers.processes import Processes
from helpers.stores import BACKENDS, store_target, store_toml
from helpers.stores import query as query_central
from helpers.wait import wait_for

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "config" / "maps" / "sim-meter.toml"


@dataclass
class Site(Processes):
    """A bench, central and an agent on one test's broker, each as its own process."""

    workdir: Path
    broker: Broker
    central_db: Path | str  # central's store: a SQLite file or a PostgreSQL URL
    tcp_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def agent_db(self) -> Path:
        return self.workdir / "agent.db"

    def write_configs(self) -> None:
        (self.workdir / "sim.toml").write_text(
            f"""
[bench]
speed = 1.0
step_s = 0.2
seed = 7

[[buses]]
name = "rtu1"
link = "rtu-bus1"

[[devices]]
name = "sub_meter"
kind = "meter"
map = "{MAP}"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {self.tcp_port}
unit_id = 1
load_kw = 900.0

[[devices]]
name = "fdr_meter_a"
kind = "meter"
map = "{MAP}"
protocol = "modbus-rtu"
bus = "rtu1"
unit_id = 1
load_kw = 300.0

[[devices]]
name = "fdr_meter_b"
kind = "meter"
map = "{MAP}"
protocol = "modbus-rtu"
bus = "rtu1"
unit_id = 2
load_kw = 250.0
"""
        )
        (self.workdir / "central.toml").write_text(
            f"""
[broker]
url = "{self.broker.url}"

{store_toml(self.central_db)}"""
        )
        (self.workdir / "agent.toml").write_text(
            f"""
site_id = "e2e-site"

[store]
path = "agent.db"
batch_size = 50

[uplink]
broker = "{self.broker.url}"
ack_timeout_s = 3
keepalive_s = 5
drain_on_stop_s = 5

[[devices]]
name = "sub_meter"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {self.tcp_port}
unit_id = 1
poll_interval_s = 0.2
timeout_s = 0.5
map = "{MAP}"

[[devices]]
name = "fdr_meter_a"
protocol = "modbus-rtu"
serial_port = "rtu-bus1"
unit_id = 1
poll_interval_s = 0.5
timeout_s = 0.3
map = "{MAP}"

[[devices]]
name = "fdr_meter_b"
protocol = "modbus-rtu"
serial_port = "rtu-bus1"
unit_id = 2
poll_interval_s = 0.5
timeout_s = 0.3
map = "{MAP}"
"""
        )

    def start_sim(self) -> None:
        self.start_gridedge("sim", "sim", "run", "--config", "sim.toml")
        wait_port(self.tcp_port, 15)
        wait_for(lambda: (self.workdir / "rtu-bus1").exists(), 10, "the bench's RTU pty")

    def start_central(self) -> None:
        self.start_gridedge("central", "central", "run", "--config", "central.toml")

    def start_agent(self) -> None:
        """The agent, up: it has written its status file (its signal handlers are in place, so a stop right
        after is a clean SIGTERM even on a loaded machine, where start-up takes seconds)."""
        proc = self.start_gridedge("agent", "run", "--config", "agent.toml")
        wait_for(lambda: self._status_pid() == proc.pid, 30, "the agent's status file")

    def _status_pid(self) -> int | None:
        try:
            return json.loads((self.workdir / "agent.db.status.json").read_text()).get("pid")
        except (OSError, ValueError):
            return None

    def central_rows(self) -> int:
        rows = query_central(self.central_db, "SELECT count(*) FROM readings")
        return rows[0][0] if rows else 0

    def agent_readings(self) -> int:
        rows = query_db(self.agent_db, "SELECT count(*) FROM readings")
        return rows[0][0] if rows else 0

    def agent_backlog(self) -> int:
        status = json.loads((self.workdir / "agent.db.status.json").read_text())
        return status["store"]["unsealed"] + status["store"]["outbox_readings"]


@pytest.fixture(params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path, broker: Broker) -> Iterator[Site]:
    with store_target(request.param, tmp_path) as central_db:
        s = Site(tmp_path, broker, central_db)
        s.write_configs()
        s.start_sim()
        s.start_central()
        try:
            yield s
        finally:
            for name in list(s.procs):
                s.kill(name)


def test_meter_reading_arrives_in_central_with_value_unit_and_timestamp(site: Site) -> None:
    started = time.time()
    site.start_agent()
    wait_for(lambda: site.central_rows() >= 100, 30, "readings in central's store")
    assert site.stop("agent") == 0, site.log("agent")
    finished = time.time()
    rows = query_central(
        site.central_db,
        "SELECT point, ts, value, unit, quality FROM readings WHERE point IN (?, ?, ?)",
        ("sub_meter.v_a", "fdr_meter_a.frequency", "fdr_meter_b.model"),
    )
    by_point: dict[str, list[tuple]] = {}
    for point, ts, value, unit, quality in rows:
        by_point.setdefault(point, []).append((ts, value, unit, quality))
    # A TCP meter and both RTU meters reached central, with the map's units and UTC timestamps from this run.
    assert set(by_point) == {"sub_meter.v_a", "fdr_meter_a.frequency", "fdr_meter_b.model"}
    for point, readings in by_point.items():
        for ts, _value, _unit, quality in readings:
            assert started - 1 <= ts <= finished + 1, (point, ts)
            assert quality == "good"
    v_a = by_point["sub_meter.v_a"]
    assert all(unit == "V" and 0.9 * 120 <= value <= 1.1 * 120 for _, value, unit, _ in v_a)
    assert all(unit == "Hz" and 59.5 <= value <= 60.5 for _, value, unit, _ in by_point["fdr_meter_a.frequency"])
    # Central's rows are exactly the agent's own: same value, unit and timestamp, reading for reading.
    agent_rows = set(
        query_db(site.agent_db, "SELECT point, ts, value, unit, quality FROM readings WHERE point = 'sub_meter.v_a'")
    )
    central_rows = set(
        query_central(
            site.central_db, "SELECT point, ts, value, unit, quality FROM readings WHERE point = 'sub_meter.v_a'"
        )
    )
    assert central_rows == agent_rows
    # The status file shows the RS-485 line both RTU meters share, with its transactions (no stray bytes here).
    lines = json.loads((site.workdir / "agent.db.status.json").read_text())["serial_lines"]
    assert list(lines) == [str(site.workdir / "rtu-bus1")], lines
    line = lines[str(site.workdir / "rtu-bus1")]
    assert line["settings"] == "19200 8N1" and line["flushed_bytes"] == 0 and line["last_transactions"]["ok"] > 0, line


def test_every_reading_arrives_exactly_once_through_broker_and_agent_kills(site: Site) -> None:
    site.start_agent()
    wait_for(lambda: site.central_rows() > 0, 30, "the first readings in central")
    for _ in range(3):
        time.sleep(1.5)
        site.broker.kill()
        time.sleep(1.5)  # the agent keeps polling and buffering while the broker is gone
        site.broker.start()
    time.sleep(1.0)
    site.kill("agent")  # SIGKILL: whatever was committed must still go, exactly once
    time.sleep(0.5)
    site.start_agent()
    time.sleep(2.0)
    site.broker.kill()
    time.sleep(1.0)
    site.broker.start()
    time.sleep(2.0)
    assert_every_reading_once(site)


def test_every_reading_arrives_exactly_once_through_central_kills(site: Site) -> None:
    """Central SIGKILLed mid-ingest, twice, and started again: a flush it was writing dies with its transaction
    and was never acked, so the agent resends it; what was acked was committed. Nothing lost, nothing twice."""
    site.start_agent()
    wait_for(lambda: site.central_rows() > 0, 30, "the first readings in central")
    for _ in range(2):
        time.sleep(1.5)
        site.kill("central")
        time.sleep(1.5)  # the agent keeps sending into the broker; nothing is acked
        site.start_central()
    time.sleep(2.0)
    assert_every_reading_once(site)


def assert_every_reading_once(site: Site) -> None:
    """Stop the agent, let it drain (restarting it while a backlog is left), then: central holds exactly the
    readings the agent took, each once, and exactly the messages it sealed."""
    assert site.stop("agent") == 0, site.log("agent")
    # Whatever the drain on stop left is on disk: a restart sends it (and takes new readings, which
    # the next stop drains: pollers stop first, then the outbox empties).
    for _ in range(5):
        if site.agent_backlog() == 0:
            break
        site.start_agent()
        time.sleep(2.0)
        assert site.stop("agent") == 0, site.log("agent")
    assert site.agent_backlog() == 0, site.log("agent")
    taken = site.agent_readings()
    assert taken > 200
    # sorted here, not by ORDER BY: PostgreSQL's collation may order the points otherwise than SQLite's bytes
    agent_rows = sorted(query_db(site.agent_db, "SELECT point, ts, value, quality FROM readings"), key=lambda r: r[:2])
    central_rows = sorted(query_central(site.central_db, "SELECT point, ts, value, quality FROM readings"),
                          key=lambda r: r[:2])  # fmt: skip
    assert len(central_rows) == taken  # exactly once: nothing missing, nothing twice
    assert central_rows == agent_rows
    # Sequence numbers against the agent's own record: it sealed messages 1..next-1 on each stream (its
    # store's `seq:<stream>` counter holds the next one); central holds exactly those, each once, and the
    # readings they carry add up to what the agent took.
    sealed = {
        key.removeprefix("seq:"): int(value) - 1
        for key, value in query_db(site.agent_db, "SELECT key, value FROM meta WHERE key LIKE 'seq:%'")
    }
    assert sealed["telemetry"] > 0
    received: dict[str, list[int]] = {}
    for stream, seq in query_central(site.central_db, "SELECT stream, seq FROM messages WHERE site = 'e2e-site'"):
        received.setdefault(stream, []).append(seq)
    for stream, last in sealed.items():
        assert sorted(received.pop(stream, [])) == list(range(1, last + 1)), f"{stream}: not 1..{last} once each"
    assert received == {}, "central holds messages on streams the agent never sealed"
    carried = query_central(
        site.central_db, "SELECT sum(count) FROM messages WHERE stream IN ('telemetry', 'energy') AND site = 'e2e-site'"
    )
    assert carried[0][0] == taken
    stats = json.loads((site.workdir / "agent.db.status.json").read_text())["store"]
    assert stats["readings_taken"] == taken
    assert stats["dropped_readings"] == 0
