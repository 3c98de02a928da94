"""The agent's /metrics, scraped over HTTP from a real `gridedge run` process as Prometheus would: a live Modbus
device and a dead one, a real Mosquitto (killed and started again), no central (so nothing is acknowledged and
the backlog grows). The figures are checked against the agent's own status file."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.broker import Broker
from helpers.metrics import scrape, scrape_when
from helpers.net import free_port, wait_port
from helpers.processes import Processes
from helpers.wait import wait_for

from agent.metrics import SPECS

TESTS = Path(__file__).resolve().parent
MAX_MB = 8

# A pymodbus server (tests/helpers/modbus.py: unit 1 answers holding registers 0..49) in a process of its own.
MODBUS_SERVER = f"""
import asyncio, sys
sys.path.insert(0, {str(TESTS)!r})
from helpers.modbus import modbus_server

async def main():
    async with modbus_server(int(sys.argv[1])):
        await asyncio.Event().wait()

asyncio.run(main())
"""

MAP = """
name = "m"
[[points]]
name = "v"
address = 0
type = "uint16"
"""


@dataclass
class MetricsSite(Processes):
    workdir: Path
    broker: Broker
    modbus_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def write(self) -> None:
        (self.workdir / "m.toml").write_text(MAP)
        (self.workdir / "agent.toml").write_text(
            textwrap.dedent(
                f"""
                site_id = "metrics-site"
                [store]
                path = "agent.db"
                max_mb = {MAX_MB}
                batch_size = 20
                [uplink]
                broker = "{self.broker.url}"
                keepalive_s = 5
                drain_on_stop_s = 0
                [[devices]]
                name = "meter"
                protocol = "modbus-tcp"
                host = "127.0.0.1"
                port = {self.modbus_port}
                poll_interval_s = 0.2
                timeout_s = 0.5
                map = "m.toml"
                [[devices]]
                name = "dead"
                protocol = "modbus-tcp"
                host = "127.0.0.1"
                port = {free_port()}
                poll_interval_s = 0.2
                timeout_s = 0.2
                map = "m.toml"
                [metrics]
                listen = "127.0.0.1:{self.metrics_port}"
                """
            )
        )

    def start_device(self) -> None:
        self.spawn("modbus", [sys.executable, "-c", MODBUS_SERVER, str(self.modbus_port)])
        wait_port(self.modbus_port, 15)

    def start_agent(self) -> subprocess.Popen:
        return self.start_gridedge("agent", "run", "--config", "agent.toml")

    def status(self) -> dict:
        path = self.workdir / "agent.db.status.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}


def _ready(site: MetricsSite) -> bool:
    st = site.status()
    devices = st.get("devices", {})
    store = st.get("store") or {}
    return bool(
        st.get("connected")
        and devices.get("meter", {}).get("polls_ok", 0) >= 3
        and devices.get("dead", {}).get("consecutive_failures", 0) >= 2
        and (store.get("backlog_oldest_s") or {}).get("telemetry", 0) > 0
    )


@pytest.fixture
def site(tmp_path: Path, broker: Broker):
    s = MetricsSite(tmp_path, broker)
    s.write()
    try:
        yield s
    finally:
        s.kill_all()


@pytest.mark.integration
def test_a_running_agent_serves_its_figures_as_its_status_file_gives_them(site: MetricsSite) -> None:
    site.start_device()
    proc = site.start_agent()
    wait_for(lambda: _ready(site) or proc.poll() is not None, 60, "the agent polling, connected, with a backlog")
    assert proc.poll() is None, site.logs("agent")

    before = site.status()["store"]["readings_taken"]
    m = scrape(site.metrics_port)
    after = site.status()["store"]["readings_taken"]
    # the readings counter is the store's, as the status file gives it (both read the same stats once a second)
    taken = m.value("gridedge_agent_readings_taken_total")
    assert 0 < before <= taken <= after, (before, taken, after)
    assert m.families["gridedge_agent_readings_taken"] == "counter"
    assert m.content_type.startswith("text/plain")

    # the backlog per stream: every stream the store reports, and telemetry waiting (no central acknowledges)
    status = site.status()["store"]
    assert set(m.labels("gridedge_agent_backlog_items", "stream")) == set(status["backlog"])
    assert m.value("gridedge_agent_backlog_items", stream="telemetry") > 0
    assert m.value("gridedge_agent_backlog_oldest_age_seconds", stream="telemetry") > 0
    assert m.value("gridedge_agent_acked_readings_total") == 0

    # the live device is up; the dead one fails, and has never answered
    assert m.value("gridedge_agent_device_up", device="meter") == 1
    assert m.value("gridedge_agent_device_polls_ok_total", device="meter") >= 3
    assert m.value("gridedge_agent_device_last_ok_age_seconds", device="meter") >= 0
    assert m.value("gridedge_agent_device_readings_total", device="meter") >= 3
    assert m.value("gridedge_agent_device_up", device="dead") == 0
    assert m.value("gridedge_agent_device_polls_ok_total", device="dead") == 0
    failed = m.value("gridedge_agent_device_polls_failed_total", device="dead")
    assert failed >= 2 and failed == m.value("gridedge_agent_device_polls_total", device="dead")
    assert m.value("gridedge_agent_device_consecutive_failures", device="dead") >= 2
    assert m.value("gridedge_agent_device_connection_errors_total", device="dead") >= 2
    assert not m.has("gridedge_agent_device_last_ok_age_seconds", device="dead")

    # the store's room: the configured bound, the share of it in use, no alarm
    assert m.value("gridedge_agent_store_max_bytes") == MAX_MB * 1024 * 1024
    size, limit = m.value("gridedge_agent_store_size_bytes"), m.value("gridedge_agent_store_limit_bytes")
    assert 0 < size < limit <= MAX_MB * 1024 * 1024
    assert m.value("gridedge_agent_store_used_ratio") == pytest.approx(size / limit)
    assert m.value("gridedge_agent_store_full_alarm") == 0

    assert m.value("gridedge_agent_info", site="metrics-site") == 1
    assert m.value("gridedge_agent_task_running", task="metrics") == 1
    assert m.value("gridedge_agent_mqtt_connected") == 1
    assert m.value("gridedge_agent_mqtt_reconnects_total") == 0
    assert m.has("process_resident_memory_bytes")
    # every family the agent exposes is in its table (and so in docs/metrics.md)
    ours = {name for name in m.families if name.startswith("gridedge_agent_")}
    assert ours <= {n.removesuffix("_total") for n in SPECS}, ours - {n.removesuffix("_total") for n in SPECS}

    # the broker goes away: the link shows down; it comes back: one reconnect
    site.broker.kill()
    down = scrape_when(
        site.metrics_port, lambda s: s.value("gridedge_agent_mqtt_connected") == 0, "the link down in /metrics"
    )
    assert down.value("gridedge_agent_mqtt_disconnects_total") >= 1
    site.broker.start()
    up = scrape_when(
        site.metrics_port, lambda s: s.value("gridedge_agent_mqtt_connected") == 1, "the link up again in /metrics"
    )
    assert up.value("gridedge_agent_mqtt_reconnects_total") >= 1
    assert up.value("gridedge_agent_mqtt_connects_total") == up.value("gridedge_agent_mqtt_reconnects_total") + 1

    assert site.stop("agent") == 0, site.logs("agent")
    with pytest.raises(OSError):
        scrape(site.metrics_port, timeout_s=2)  # the agent stopped: nothing listens there any more


@pytest.mark.integration
def test_a_path_other_than_metrics_is_not_found(site: MetricsSite) -> None:
    site.start_agent()
    scrape_when(site.metrics_port, lambda s: s.has("gridedge_agent_info", site="metrics-site"), "the metrics served")
    with pytest.raises(urllib.error.HTTPError) as info:
        scrape(site.metrics_port, "/favicon.ico")
    assert info.value.code == 404


@pytest.mark.integration
def test_a_metrics_port_held_by_another_program_never_stops_the_agent(site: MetricsSite) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", site.metrics_port))
    holder.listen(1)
    try:
        proc = site.start_agent()
        wait_for(lambda: f"cannot serve the metrics at 127.0.0.1:{site.metrics_port}" in site.log("agent")
                 or proc.poll() is not None, 60, "the agent's log naming the port it cannot have")  # fmt: skip
        assert proc.poll() is None, site.logs("agent")
        polls = site.status()["devices"]["dead"]["polls"]
        wait_for(lambda: site.status()["devices"]["dead"]["polls"] > polls, 30, "polling going on")
        assert site.status()["tasks"]["metrics"] in ("backoff", "running")
    finally:
        holder.close()
    # the port free again: the supervisor's next try serves the metrics
    m = scrape_when(
        site.metrics_port, lambda s: s.has("gridedge_agent_info", site="metrics-site"), "the metrics served"
    )
    assert m.value("gridedge_agent_task_restarts_total", task="metrics") >= 1
    assert "Traceback" not in site.log("agent")
    assert site.stop("agent") == 0, site.logs("agent")
