"""Supervision: failed tasks restart with backoff, shutdown is staged and commits everything the
pollers took, systemd hears READY / WATCHDOG / STOPPING on a real notify socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.broker import Broker
from helpers.net import free_port

from agent.config import load_config
from agent.runtime import Supervisor, SystemdNotifier
from agent.service import AgentService, status_path
from sim_hw.bench import Bench
from sim_hw.config import load_bench_config

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "config" / "maps" / "sim-meter.toml"


def test_supervisor_restarts_a_failing_task_with_growing_backoff() -> None:
    clock_sleeps: list[float] = []
    attempts = 0

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise RuntimeError(f"failure {attempts}")

    async def recording_sleep(delay: float) -> None:
        clock_sleeps.append(delay)
        await asyncio.sleep(0)

    async def main() -> Supervisor:
        sup = Supervisor(backoff_min_s=0.01, backoff_max_s=0.04, rng=random.Random(1), sleep=recording_sleep)
        sup.add("flaky", flaky)
        sup.start()
        for _ in range(100):
            await asyncio.sleep(0.001)
            if sup.health()["flaky"].state == "stopped":
                break
        await sup.stop()
        return sup

    sup = asyncio.run(main())
    health = sup.health()["flaky"]
    assert attempts == 4 and health.restarts == 3 and health.state == "stopped"
    assert health.last_error == "RuntimeError: failure 3"
    # full jitter within [backoff/2, backoff], the backoff doubling up to its cap
    for delay, cap in zip(clock_sleeps, (0.01, 0.02, 0.04), strict=True):
        assert cap / 2 <= delay <= cap


def test_only_a_critical_task_in_backoff_stops_the_watchdog() -> None:
    # The PQ worker is added with critical=False: its child dying again and again must not get polling,
    # the store and the uplink restarted by systemd's watchdog. A critical task in backoff still does.
    gate = asyncio.Event()

    async def failing() -> None:
        raise RuntimeError("child exited with code -9")

    async def held_sleep(delay: float) -> None:
        await gate.wait()  # keep the failed task in backoff while we look

    async def look(critical: bool) -> tuple[bool, str]:
        sup = Supervisor(sleep=held_sleep)
        sup.add("pollers", asyncio.Event().wait)
        sup.add("pq-worker", failing, critical=critical)
        sup.start()
        for _ in range(100):
            await asyncio.sleep(0.001)
            if sup.health()["pq-worker"].state == "backoff":
                break
        result = sup.healthy(), sup.health()["pq-worker"].state
        await sup.stop()
        return result

    assert asyncio.run(look(critical=False)) == (True, "backoff")
    assert asyncio.run(look(critical=True)) == (False, "backoff")


def test_supervisor_stops_producers_before_consumers() -> None:
    order: list[str] = []

    def forever(name: str):  # noqa: ANN202
        async def run() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                order.append(name)

        return run

    async def main() -> None:
        sup = Supervisor()
        sup.add("store", forever("store"), stage=0)
        sup.add("writer", forever("writer"), stage=2)
        sup.add("poller", forever("poller"), stage=3)
        sup.start()
        await asyncio.sleep(0.01)
        await sup.stop(down_to_stage=2)
        assert order == ["poller", "writer"]
        assert sup.health()["store"].state == "running"
        await sup.stop()

    asyncio.run(main())
    assert order == ["poller", "writer", "store"]


def test_notifier_is_silent_without_systemd() -> None:
    n = SystemdNotifier(environ={})
    assert not n.enabled and not n.notify("READY=1")
    assert SystemdNotifier(environ={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000"}).watchdog_interval_s == 2.0


def _bench_and_agent_configs(tmp_path: Path, broker: Broker) -> tuple[Path, Path]:
    tcp_port = free_port()
    sim = tmp_path / "sim.toml"
    sim.write_text(
        f"""
[bench]
step_s = 0.1
[[buses]]
name = "bus"
link = "rtu"
[[devices]]
name = "m1"
kind = "meter"
map = "{MAP}"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {tcp_port}
unit_id = 1
load_kw = 100.0
[[devices]]
name = "m2"
kind = "meter"
map = "{MAP}"
protocol = "modbus-rtu"
bus = "bus"
unit_id = 5
load_kw = 50.0
"""
    )
    agent = tmp_path / "agent.toml"
    agent.write_text(
        f"""
site_id = "runtime-test"
[store]
path = "agent.db"
[uplink]
broker = "{broker.url}"
drain_on_stop_s = 0
[[devices]]
name = "m1"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {tcp_port}
poll_interval_s = 0.05
timeout_s = 0.2
map = "{MAP}"
[[devices]]
name = "m2"
protocol = "modbus-rtu"
serial_port = "rtu"
unit_id = 5
poll_interval_s = 0.1
timeout_s = 0.3
map = "{MAP}"
"""
    )
    return sim, agent


def test_shutdown_commits_every_reading_taken_and_notifies_systemd(tmp_path: Path, broker: Broker) -> None:
    sim_path, agent_path = _bench_and_agent_configs(tmp_path, broker)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.5)
    messages: list[str] = []
    listening = threading.Event()
    listening.set()

    def listen() -> None:  # systemd's side: read every datagram as it comes
        while listening.is_set():
            with contextlib.suppress(TimeoutError):
                messages.append(notify.recv(4096).decode())

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "100000"}

    async def main() -> AgentService:
        bench = Bench(load_bench_config(sim_path))
        await bench.start()
        bench_task = asyncio.create_task(bench.run())
        try:
            service = AgentService(load_config(agent_path), notifier=SystemdNotifier(environ=env))
            stop = asyncio.Event()
            run = asyncio.create_task(service.run(stop))
            await asyncio.sleep(1.5)
            stop.set()  # what SIGTERM does
            await run
            return service
        finally:
            bench_task.cancel()
            await bench.stop()

    service = asyncio.run(main())
    time.sleep(0.2)
    listening.clear()
    listener.join(5)
    notify.close()
    assert messages[0] == "READY=1"
    assert "WATCHDOG=1" in messages
    assert any(m.startswith("STATUS=points=") for m in messages)
    assert "STOPPING=1" in messages
    # Every reading a poller produced is committed: nothing was left in the write queue.
    produced = sum(p.stats.readings for p in service.pollers)
    status = json.loads(status_path(service.config).read_text())
    assert produced > 19 * 10
    assert status["store"]["readings_taken"] == produced
    assert status["queued"] == 0
    assert {name for name, d in status["devices"].items() if d["polls_ok"] > 0} == {"m1", "m2"}


def test_run_refuses_a_bad_config_with_its_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('site_id = "x"\n[uplink]\nbroker = "ftp://nowhere"\n[store]\nmax_mb = "lots"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "gridedge", "run", "--config", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "uplink.broker = 'ftp://nowhere': must be a URL mqtt://host[:port]" in proc.stderr
    assert "store.max_mb = 'lots': must be a number" in proc.stderr


def test_gridedge_help_lists_every_subcommand() -> None:
    proc = subprocess.run([sys.executable, "-m", "gridedge", "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    for word in ("run", "check-config", "status", "pmu", "sim", "central", "demo"):
        assert f"    {word}" in proc.stdout, word


@pytest.mark.parametrize("args", [["sim", "--help"], ["central", "--help"], ["demo", "--help"]])
def test_each_part_answers_help_through_the_dispatcher(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "gridedge", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_notifier_never_blocks_when_nobody_reads(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))  # bound, never read: its queue fills up
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    sent = [notifier.notify("WATCHDOG=1") for _ in range(5000)]
    assert sent[0] is True and sent[-1] is False  # later ones are dropped, none blocked
    notifier.close()
    listener.close()
