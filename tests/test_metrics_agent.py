"""The agent's /metrics, scraped over HTTP from a real `gridedge run` process as Prometheus would: a live Modbus
device and a dead one, a real Mosquitto (killed and started again), no central (so nothing is acknowledged and
the backlog grows). The figures are checked against the agent's own status file."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.bench import NOON, ieee13_copy
from helpers.benchsite import BenchSite, decisions
from helpers.broker import Broker
from helpers.controlbench import CAP, OPEN_LOCAL_AUTO, capbank_control, site_file
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


# ---- where control and power quality run: their figures, against the status file --------------------------------


def _status_at(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@pytest.mark.integration
def test_control_figures_of_an_agent_in_control_of_the_bench_s_capacitor_bank(tmp_path: Path, broker: Broker) -> None:
    bench_path = ieee13_copy(tmp_path, edit=OPEN_LOCAL_AUTO, irradiance="clear")
    site = BenchSite(tmp_path)
    port = free_port()
    try:
        cfg, _link = site.start_bench(bench_path, 20)
        extra = f'[clock]\nspeed = 20\nstart = "{NOON}"\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
        agent_site = site_file(cfg, tmp_path / "agent", capbank_control(), extra=extra, broker=broker.url)
        site.start_gridedge("agent", "run", "--config", str(agent_site))
        db = tmp_path / "agent" / "agent.db"
        site.wait_applied(db, "the agent closing the bank")

        status_file = tmp_path / "agent" / "agent.db.status.json"

        def cap_status() -> dict | None:
            """The bank in the status file once the agent holds it and the operation counts against a budget."""
            dev = ((_status_at(status_file).get("control") or {}).get("envelope") or {}).get("devices", {}).get(CAP)
            spent = dev and any(b["left"] is not None and b["left"] < b["limit"] for b in dev["budgets"].values())
            return dev if dev and dev["held"] and spent else None

        wait_for(cap_status, 30, "the bank held, a budget spent, in the status file")

        def applied_in_db() -> int:
            return sum(d["outcome"] == "applied" for d in decisions(db))

        m = scrape_when(port, lambda s: s.has("gridedge_agent_control_decisions_total", outcome="applied")
                        and s.value("gridedge_agent_control_decisions_total", outcome="applied") == applied_in_db(),
                        "the applied decisions in /metrics as in the control stream")  # fmt: skip
        status = cap_status()
        assert status is not None
        assert m.value("gridedge_agent_control_writes_total") >= m.value(
            "gridedge_agent_control_decisions_total", outcome="applied"
        )
        assert m.value("gridedge_agent_control_cycles_total") >= 1
        assert m.value("gridedge_agent_control_held", device=CAP) == 1
        assert m.value("gridedge_agent_control_suspensions", device=CAP) == len(status["suspended"]) == 0
        budgets = status["budgets"]
        assert set(m.labels("gridedge_agent_control_budget_limit", "budget")) == set(budgets)
        for name, b in budgets.items():
            assert m.value("gridedge_agent_control_budget_limit", device=CAP, budget=name) == b["limit"]
            left = m.value("gridedge_agent_control_budget_left", device=CAP, budget=name)
            assert left == b["left"] or applied_in_db() > 1, (name, left, b)  # equal unless it operated again since
            assert left <= b["limit"]
        assert any(
            m.value("gridedge_agent_control_budget_left", device=CAP, budget=n) < b["limit"] for n, b in budgets.items()
        ), "the operation spent some of a budget"
        assert site.stop("agent") == 0, site.logs("agent")
    finally:
        site.kill_all()


PQ_STREAM = "feeder-pq"
WAVEFORM = TESTS.parent / "config" / "waveforms" / "flicker-dip.toml"


@pytest.mark.integration
def test_pq_figures_of_an_agent_measuring_the_bench_s_wave_stream(tmp_path: Path, broker: Broker) -> None:
    site = MetricsSite(tmp_path, broker)
    wave_port = free_port()
    (tmp_path / "bench.toml").write_text(
        f'[bench]\nstart = "2026-06-01T00:00:00Z"\n[[waveforms]]\nname = "{PQ_STREAM}"\nport = {wave_port}\n'
        f'description = "{WAVEFORM}"\nspeed = 1.0\nduration_s = 600.0\n'
    )
    (tmp_path / "agent.toml").write_text(
        f'site_id = "pq-metrics"\n[store]\npath = "agent.db"\n[uplink]\nbroker = "{broker.url}"\ndrain_on_stop_s = 0\n'
        f'[[waveforms]]\nname = "{PQ_STREAM}"\nhost = "127.0.0.1"\nport = {wave_port}\nnominal_hz = 60\n'
        f'udin_v = 120.0\n[metrics]\nlisten = "127.0.0.1:{site.metrics_port}"\n'
    )
    try:
        site.start_gridedge("bench", "sim", "run", "--config", "bench.toml")
        wait_port(wave_port, 30)
        proc = site.start_agent()

        def measuring() -> bool:
            return (site.status().get("pq", {}).get(PQ_STREAM, {}).get("signal_s") or 0) >= 3

        wait_for(lambda: measuring() or proc.poll() is not None, 90, "the agent measuring the stream")
        assert proc.poll() is None, site.logs("agent", "bench")
        before = site.status()["pq"][PQ_STREAM]["samples"]
        m = scrape(site.metrics_port)
        scraped = time.time()
        wait_for(lambda: site.status().get("ts", 0) > scraped, 10, "the next status file")  # as new as the scrape
        after = site.status()["pq"][PQ_STREAM]["samples"]
        samples = m.value("gridedge_agent_pq_samples_total", stream=PQ_STREAM)
        assert 0 < before <= samples <= after, (before, samples, after)
        assert m.value("gridedge_agent_pq_connected", stream=PQ_STREAM) == 1
        assert m.value("gridedge_agent_pq_signal_seconds_total", stream=PQ_STREAM) >= 3
        assert m.value("gridedge_agent_pq_readings_total", stream=PQ_STREAM) > 0
        assert m.value("gridedge_agent_pq_gaps_total", stream=PQ_STREAM) == 0
        assert m.value("gridedge_agent_pq_worker_up") == 1 and m.value("gridedge_agent_pq_worker_starts_total") == 1
        assert site.stop("agent") == 0, site.logs("agent")
    finally:
        site.kill_all()


PMU_SERVER = f"""
import asyncio, sys
sys.path.insert(0, {str(TESTS.parent)!r})
from sim_hw.devices.pmu import SimPmu

async def main(port):
    await SimPmu(7, "METRICS PMU", rate=30, nominal_v=7200.0, port=port).start()
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
"""


@pytest.mark.integration
def test_pmu_figures_of_an_agent_reading_a_pmu_and_losing_it(tmp_path: Path, broker: Broker) -> None:
    site = MetricsSite(tmp_path, broker)
    pmu_port = free_port()
    (tmp_path / "agent.toml").write_text(
        f'site_id = "pmu-metrics"\n[store]\npath = "agent.db"\n[uplink]\nbroker = "{broker.url}"\ndrain_on_stop_s = 0\n'
        f'[[pmus]]\nname = "pmu1"\nhost = "127.0.0.1"\nport = {pmu_port}\nidcode = 7\ncfg = 2\nstale_after_s = 2.0\n'
        f'nominal_v = 7200.0\n[metrics]\nlisten = "127.0.0.1:{site.metrics_port}"\n'
    )
    try:
        site.spawn("pmu", [sys.executable, "-c", PMU_SERVER, str(pmu_port)])
        wait_port(pmu_port, 15)
        proc = site.start_agent()

        def frames() -> int:
            return site.status().get("pmus", {}).get("pmu1", {}).get("frames", 0)

        wait_for(lambda: frames() >= 60 or proc.poll() is not None, 60, "the agent reading the PMU")
        assert proc.poll() is None, site.logs("agent")
        before = frames()
        m = scrape(site.metrics_port)
        scraped = time.time()
        # a scrape reads the live counters; the status file is written once a second: the next one has at least as many
        wait_for(lambda: site.status().get("ts", 0) > scraped, 10, "the next status file")
        after = frames()
        assert 0 < before <= m.value("gridedge_agent_pmu_frames_total", pmu="pmu1") <= after
        assert m.value("gridedge_agent_pmu_connected", pmu="pmu1") == 1
        assert m.value("gridedge_agent_pmu_stale", pmu="pmu1") == 0
        assert m.value("gridedge_agent_pmu_readings_total", pmu="pmu1") > 0
        assert m.value("gridedge_agent_pmu_frame_errors_total", pmu="pmu1") == 0
        site.kill("pmu")  # the PMU goes away: its stream shows down and stale
        lost = scrape_when(site.metrics_port, lambda s: s.value("gridedge_agent_pmu_connected", pmu="pmu1") == 0
                           and s.value("gridedge_agent_pmu_stale", pmu="pmu1") == 1, "the PMU down and stale")  # fmt: skip
        assert lost.value("gridedge_agent_pmu_frames_total", pmu="pmu1") >= m.value("gridedge_agent_pmu_frames_total",
                                                                                    pmu="pmu1")  # fmt: skip
        assert site.stop("agent") == 0, site.logs("agent")
    finally:
        site.kill_all()
