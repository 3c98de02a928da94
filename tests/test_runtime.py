"""Supervision: failed tasks restart with capped backoff, shutdown is staged and commits everything the pollers took
(also right after a heavy start, in a real agent process), systemd hears READY / WATCHDOG / STOPPING on a real
notify socket and no WATCHDOG while the event loop is blocked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.aio import arun, until
from helpers.broker import Broker
from helpers.net import free_port
from helpers.processes import Processes
from helpers.wait import wait_for

from agent.config import load_config
from agent.runtime import Supervisor, SystemdNotifier, watchdog
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
        await until(lambda: sup.health()["flaky"].state == "stopped")
        await sup.stop()
        return sup

    sup = asyncio.run(main())
    health = sup.health()["flaky"]
    assert attempts == 4 and health.restarts == 3 and health.state == "stopped"
    assert health.last_error == "RuntimeError: failure 3"
    # full jitter within [backoff/2, backoff], the backoff doubling up to its cap
    for delay, cap in zip(clock_sleeps, (0.01, 0.02, 0.04), strict=True):
        assert cap / 2 <= delay <= cap


def test_backoff_grows_stays_capped_and_resets_after_a_healthy_run() -> None:
    now = [1000.0]
    delays: list[float] = []
    attempt = 0
    # attempt n -> how long it runs before failing (s); None: it returns normally (finished)
    plan = {**{n: 0.0 for n in range(1, 9)}, 9: 61.0, 10: 0.0, 11: None}

    async def flaky() -> None:
        nonlocal attempt
        attempt += 1
        ran_s = plan[attempt]
        if ran_s is None:
            return
        now[0] += ran_s
        raise RuntimeError(f"failure {attempt}")

    async def record(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0)

    async def main() -> Supervisor:
        sup = Supervisor(
            backoff_min_s=1.0, backoff_max_s=8.0, healthy_after_s=60.0, clock=lambda: now[0], rng=random.Random(3),
            sleep=record,
        )  # fmt: skip
        sup.add("flaky", flaky)
        sup.start()
        await until(lambda: sup.health()["flaky"].state == "stopped", timeout=5)
        await sup.stop()
        return sup

    sup = arun(main())
    assert attempt == 11 and sup.health()["flaky"].restarts == 10
    # Ceilings by hand: doubling from 1 s to the 8 s cap, held there; attempt 9 ran 61 s (>= 60 s healthy),
    # so its failure starts again from 1 s, and the next one doubles to 2 s.
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8, 1, 2]
    assert len(delays) == len(ceilings)
    for n, (delay, cap) in enumerate(zip(delays, ceilings, strict=True), start=1):
        assert cap / 2 <= delay <= cap, (n, delay, cap)


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
        await until(lambda: sup.health()["pq-worker"].state == "backoff")
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
            # run until what is asserted below has happened (a fixed time polls less on a loaded machine)
            await until(lambda: sum(p.stats.readings for p in service.pollers) > 19 * 10
                        and all(p.stats.polls_ok > 0 for p in service.pollers)
                        and "WATCHDOG=1" in messages and any(m.startswith("STATUS=points=") for m in messages),
                        timeout=20)  # fmt: skip
            stop.set()  # what SIGTERM does
            await run
            return service
        finally:
            bench_task.cancel()
            await bench.stop()

    service = asyncio.run(main())
    wait_for(lambda: "STOPPING=1" in messages, 10, "STOPPING=1 read by the listener thread")
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


@pytest.mark.integration
def test_run_refuses_a_bad_config_with_its_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('site_id = "x"\n[uplink]\nbroker = "ftp://nowhere"\n[store]\nmax_mb = "lots"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "gridedge", "run", "--config", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "uplink.broker = 'ftp://nowhere': must be a URL mqtt://host[:port]" in proc.stderr
    assert "store.max_mb = 'lots': must be a number" in proc.stderr


@pytest.mark.integration
def test_gridedge_help_lists_every_subcommand() -> None:
    proc = subprocess.run([sys.executable, "-m", "gridedge", "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    for word in ("run", "check-config", "status", "pmu", "sim", "central", "demo"):
        assert f"    {word}" in proc.stdout, word


@pytest.mark.integration
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


# ---- the watchdog against a blocked loop -------------------------------------------------------------------


class NotifyListener:
    """systemd's side of NOTIFY_SOCKET: a bound AF_UNIX datagram socket read by a thread, in arrival order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._on = True
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while self._on:
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())

    def close(self) -> None:
        self._on = False
        self._thread.join(5)
        self.sock.close()


def test_watchdog_pings_stop_while_the_event_loop_is_blocked(tmp_path: Path) -> None:
    listener = NotifyListener(tmp_path / "notify.sock")
    # The test's own markers go to the same socket, so their place among the pings is their order of arrival.
    marker = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    env = {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "40000"}  # a ping every 20 ms

    def pings(messages: list[str]) -> int:
        return messages.count("WATCHDOG=1")

    async def main() -> None:
        notifier = SystemdNotifier(environ=env)
        sup = Supervisor()
        sup.add("idle", lambda: asyncio.Event().wait())
        sup.add("watchdog", lambda: watchdog(notifier, sup, lambda: "ok"))
        sup.start()
        await until(lambda: pings(listener.messages) >= 2, timeout=10)
        marker.sendto(b"BLOCK_START", str(listener.path))
        time.sleep(0.5)  # the loop is stuck: 25 ping intervals pass without it turning
        marker.sendto(b"BLOCK_END", str(listener.path))
        await until(lambda: "BLOCK_END" in listener.messages, timeout=10)
        end = listener.messages.index("BLOCK_END")
        await until(lambda: pings(listener.messages[end:]) >= 1, timeout=10)  # the loop turns: pings resume
        await sup.stop()
        notifier.close()

    try:
        arun(main())
    finally:
        marker.close()
        listener.close()
    got = listener.messages
    start, end = got.index("BLOCK_START"), got.index("BLOCK_END")
    assert pings(got[:start]) >= 2
    assert got[start + 1 : end] == []  # nothing at all while the loop was stuck
    assert pings(got[end:]) >= 1


# ---- SIGTERM during a heavy write, in a real agent process ---------------------------------------------------


def _spill(tmp_path: Path, spilled: int) -> None:
    t0 = 1_700_000_000.0
    with open(tmp_path / "agent.db.unsaved.jsonl", "w", encoding="utf-8") as f:
        for i in range(spilled):
            f.write(json.dumps([f"old.p{i % 100}", t0 + i // 100, float(i), "V", "good", "telemetry"]) + "\n")


@dataclass
class _Agent(Processes):
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)


def _started_agent(tmp_path: Path, spilled: int) -> _Agent:
    """A real `gridedge run` over ``spilled`` readings a previous run left, once it has said it started."""
    _spill(tmp_path, spilled)
    _agent_config(tmp_path)
    site = _Agent(tmp_path)
    proc = site.start_gridedge("agent", "run", "--config", "agent.toml")
    wait_for(lambda: "event=agent_started" in site.log("agent") or proc.poll() is not None, 60, "the agent")
    assert proc.poll() is None, site.logs("agent")
    return site


@pytest.mark.integration
def test_sigterm_right_after_a_heavy_start_commits_every_reading(tmp_path: Path) -> None:
    """150,000 readings spilled by a previous run are committed as the agent starts; SIGTERM lands 0.3 s
    after it said it started. Every one of them, and every reading the poller took, is in the store."""
    spilled = 150_000
    site = _started_agent(tmp_path, spilled)
    try:
        time.sleep(0.3)
        assert site.stop("agent", 60) == 0, site.logs("agent")
    finally:
        site.kill_all()
    status = json.loads((tmp_path / "agent.db.status.json").read_text())
    polled = status["devices"]["m1"]["readings"]
    with contextlib.closing(sqlite3.connect(tmp_path / "agent.db")) as conn:
        stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        old = conn.execute("SELECT count(*), sum(value) FROM readings WHERE point LIKE 'old.%'").fetchone()
    assert old == (spilled, float(sum(range(spilled))))  # each spilled reading once, with its own value
    assert stored == spilled + polled
    assert status["store"]["readings_taken"] == stored and status["queued"] == 0
    assert not (tmp_path / "agent.db.unsaved.jsonl").exists()  # nothing had to be spilled again


@pytest.mark.integration
def test_sigkill_as_soon_as_the_agent_started_loses_no_spilled_reading(tmp_path: Path) -> None:
    """The spilled readings are committed before the file is removed: a SIGKILL the moment the agent says it
    started (before its writer's first flush) leaves them in the store, or still in the file, never nowhere."""
    spilled = 20_000
    site = _started_agent(tmp_path, spilled)
    site.kill("agent")
    with contextlib.closing(sqlite3.connect(tmp_path / "agent.db")) as conn:
        old = conn.execute("SELECT count(*), sum(value) FROM readings WHERE point LIKE 'old.%'").fetchone()
    assert old == (spilled, float(sum(range(spilled))))
    assert not (tmp_path / "agent.db.unsaved.jsonl").exists()


def _agent_config(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text(
        textwrap.dedent(
            f"""
            site_id = "heavy-write"
            [store]
            path = "agent.db"
            [uplink]
            broker = "mqtt://127.0.0.1:{free_port()}"
            drain_on_stop_s = 0
            [[devices]]
            name = "m1"
            protocol = "modbus-tcp"
            host = "127.0.0.1"
            port = {free_port()}
            poll_interval_s = 0.05
            timeout_s = 0.1
            map = "{MAP}"
            """
        )
    )
