"""The agent's wiring: pollers -> snapshot and write queue -> store -> uplink, under one supervisor; control
(agent/control/) reads the snapshot and writes through its safety envelope.

Shutdown order (SIGTERM, Ctrl-C): control stops first and hands every device it holds back to its autonomous
state while the pollers and links still run; the pollers stop, the writer then commits every reading still
queued, the uplink and its session stop, and the store closes last, so what was taken is on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agent.acquisition import DevicePoller, Snapshot, build_pollers
from agent.clock import make_clock
from agent.commands.service import CommandService
from agent.config import AgentConfig
from agent.control.wiring import ControlSystem, build_control
from agent.metering.service import MeteringService
from agent.metrics import serve as serve_metrics
from agent.monitoring.service import VoltageMonitoring
from agent.pmu.ingest import PmuMonitoring
from agent.points import Quality, Reading, Stream
from agent.pq.worker import PqWorker
from agent.runtime import Supervisor, SystemdNotifier, watchdog
from agent.store import AsyncStore, Store, StoreError
from agent.uplink import Uplink, session_config_from
from agent.writer import StoreWriter, spill_path_for
from protocols.eventlog import EventLog
from protocols.modbus.serialbus import SerialBusRegistry
from protocols.mqtt.session import MqttSession

log = EventLog("agent")

LIMIT_CHECK_INTERVAL_S = 5.0
STATUS_INTERVAL_S = 1.0
BACKLOG_REPORT_S = 60.0  # how often the backlog per stream goes uplink as telemetry (central sees how far behind)
CONTROL_STAGE = 4  # above the pollers (3): control stops first


def status_path(config: AgentConfig) -> Path:
    """Where the running agent writes its status once a second (read by ``gridedge status``)."""
    return config.store.path.with_name(config.store.path.name + ".status.json")


class AgentService:
    def __init__(self, config: AgentConfig, *, notifier: SystemdNotifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or SystemdNotifier()
        self.snapshot = Snapshot()
        self.started = time.time()
        try:
            config.store.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(
                f"cannot create the store's folder {config.store.path.parent}: {err.strerror or err}"
            ) from err
        self.store = AsyncStore(
            Store(config.store.path, config.site_id, config.store.max_bytes, batch_size=config.store.batch_size)
        )
        # The queue between the pollers and the store, committed by the writer task (agent/writer.py).
        self.writer = StoreWriter(self.store, spill_path_for(config.store.path))
        self.serial_lines = SerialBusRegistry()  # one arbiter per RS-485 port, shared by its devices
        # The agent's clock (agent/clock.py): the system clock, or a bench day at speed ([clock]).
        self.clock = make_clock(config.clock)
        self.pollers: list[DevicePoller] = build_pollers(config.devices, self._take, self.clock.time,
                                                         registry=self.serial_lines, speed=self.clock.speed)  # fmt: skip
        # Control (docs/control.md): its links share the pollers' transports; the envelope holds the actuators.
        self.control: ControlSystem | None = build_control(config, self.snapshot, self.store, self.clock, self.pollers)
        # PMU streams (C37.118.2): readings once a second through _take, events straight to the store.
        self.pmus = PmuMonitoring(config.pmus, config.pmu_monitoring, self._take, self.store)
        # Waveform streams (power quality, docs/pq-service.md): measured in a child process the supervisor
        # owns (numpy and scipy stay out of this one, agent/pq/worker.py says why); its readings come through
        # _take, its events go to the store.
        self.pq: PqWorker | None = PqWorker(config.waveforms, self._take, self.store) if config.waveforms else None
        # Feeder voltages by bus and phase against ANSI C84.1 (docs/monitoring.md): read from the snapshot every
        # second, events to the store.
        self.monitoring: VoltageMonitoring | None = (
            VoltageMonitoring(config.monitoring, self.snapshot, self.store) if config.monitoring.voltages else None
        )
        up = config.uplink
        self.session = MqttSession(session_config_from(config.site_id, up))
        self.uplink = Uplink(
            config.site_id, self.store, self.session, max_inflight=up.max_inflight, ack_timeout_s=up.ack_timeout_s
        )
        # Interval energy (docs/metering.md): every energy read feeds its register's engine; intervals go uplink.
        self.metering = MeteringService(config.metering, self.store, clock=self.clock.time) if config.metering else None
        # Commands from central (docs/commands.md): verified here, carried out through control's envelope.
        self.commands: CommandService | None = None
        if config.commands is not None and self.control is not None:
            self.commands = CommandService(config.site_id, config.commands, self.store, self.session, self.control,
                                           acks=lambda: self.uplink.stats.acks_received,
                                           sent=self.uplink.nudge)  # fmt: skip
        self.supervisor = Supervisor()
        self._last_stats: Any = None

    # -- acquisition -> queue --------------------------------------------------------------------
    def _take(self, readings: list[Reading]) -> None:
        self.snapshot.update(readings)
        self.writer.put(readings)
        if self.metering is not None:
            self.metering.take(readings)

    # -- tasks -----------------------------------------------------------------------------------
    async def _limits(self) -> None:
        while True:
            try:
                await self.store.enforce_limit()
            except StoreError as err:  # a disk that fails now may not later: log, keep the task (and the watchdog)
                log.error("store_limit_failed", error=err)
            await asyncio.sleep(LIMIT_CHECK_INTERVAL_S)

    def status(self, *, running: bool = True) -> dict[str, Any]:
        """What ``gridedge status`` reads. ``pid``, ``started_ts`` and ``running`` (false only in the file the
        clean stop writes last) tell whether the agent runs; a killed agent leaves ``running`` true, a ``ts``
        that ages and a ``pid`` that is gone (agent/statustext.py decides)."""
        s = self._last_stats
        now = time.time()
        return {
            "site": self.config.site_id,
            "ts": now,
            "clock_ts": self.clock.time(),  # the agent's clock (a bench day may run at speed): device times use it
            "pid": os.getpid(),
            "started_ts": self.started,
            "running": running,
            "status_interval_s": STATUS_INTERVAL_S,
            "uptime_s": round(now - self.started, 1),
            "points": len(self.snapshot.items()),
            "broker": self.config.uplink.broker.url,
            "connected": self.session.connected.is_set(),
            "queued": len(self.writer.queue),
            "queue_dropped": self.writer.queue.dropped,
            "refused": self.writer.refused,
            "store": asdict(s) if s is not None else None,
            "uplink": dict(vars(self.uplink.stats)) if hasattr(self.uplink.stats, "__dict__") else None,
            "devices": {p.device.name: asdict(p.stats) for p in self.pollers},
            "serial_lines": {
                bus.port: {
                    "settings": f"{bus.baudrate} {bus.bytesize}{bus.parity}{bus.stopbits}",
                    # bytes found waiting before a request (late answers, noise) and were thrown away
                    "flushed_bytes": bus.flushed_bytes,
                    "last_transactions": dict(Counter(t.outcome for t in bus.history)),
                }
                for bus in self.serial_lines.buses
            },
            "pmus": self.pmus.status(),
            "pq": self.pq.status() if self.pq is not None else {},
            "pq_worker": self.pq.worker_status() if self.pq is not None else None,
            "monitoring": self.monitoring.status() if self.monitoring is not None else None,
            "tasks": {name: h.state for name, h in self.supervisor.health().items()},
            "control": self.control.status() if self.control is not None else None,
            "commands": self.commands.status() if self.commands is not None else None,
            "metering": self.metering.status() if self.metering is not None else None,
        }

    @property
    def last_stats(self) -> Any:
        """The store's figures as the status task last read them (None before the first): agent/metrics.py."""
        return self._last_stats

    def status_line(self) -> str:
        s = self._last_stats
        if s is None:
            return "starting"
        return (
            f"points={len(self.snapshot.items())} taken={s.readings_taken} "
            f"backlog={s.unsealed + s.outbox_readings} acked={s.acked_readings}"
        )

    def _write_status(self, *, running: bool = True) -> None:
        """Replace the status file whole (a reader never sees half of one)."""
        path = status_path(self.config)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.status(running=running), default=str))
            os.replace(tmp, path)
        except OSError as err:  # a full disk must not crash-loop the task and starve the watchdog
            log.warning("status_write_failed", path=path, error=err)

    async def _status(self) -> None:
        next_backlog = time.monotonic() + BACKLOG_REPORT_S
        while True:
            self._last_stats = await self.store.stats()
            self._write_status()
            if time.monotonic() >= next_backlog:
                next_backlog += BACKLOG_REPORT_S
                self._take(backlog_readings(self._last_stats, time.time()))
            await asyncio.sleep(STATUS_INTERVAL_S)

    async def _drain(self, limit_s: float) -> None:
        """Give the uplink up to ``limit_s`` to empty the outbox before stopping; what remains is kept
        on disk and sent at the next start."""
        deadline = time.monotonic() + limit_s
        while True:
            stats = await self.store.stats()
            backlog = stats.unsealed + stats.outbox_readings
            if backlog == 0 or time.monotonic() >= deadline or not self.session.connected.is_set():
                if backlog:
                    log.info("stop_with_backlog", readings=backlog, kept_on_disk=True)
                return
            await asyncio.sleep(0.1)

    # -- lifecycle -------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        await self.writer.commit_unsaved()
        sup = self.supervisor
        for poller in self.pollers:
            sup.add(f"poll:{poller.device.name}", poller.run, stage=3)
        for name, client in self.pmus.clients.items():
            sup.add(f"pmu:{name}", client.run, stage=3)
        if self.pmus.ingests:
            sup.add("pmu-events", self.pmus.run_events, stage=3)
        if self.pq is not None:
            # not critical: a PQ child that keeps dying is reported in the status and retried, and must not get
            # polling, the store and the uplink restarted by the watchdog
            sup.add("pq-worker", self.pq.run, stage=3, critical=False)
        if self.monitoring is not None:
            sup.add("monitoring", self.monitoring.run, stage=3)
        if self.control is not None:
            for name, factory in self.control.tasks():
                sup.add(name, factory, stage=CONTROL_STAGE)
        if self.commands is not None:
            sup.add("commands", self.commands.run, stage=CONTROL_STAGE)
        sup.add("writer", self.writer.run, stage=2)
        if self.metering is not None:
            sup.add("metering", self.metering.run, stage=2)
        sup.add("uplink", self.uplink.run, stage=1)
        sup.add("mqtt", self.session.run, stage=1)
        sup.add("store-limit", self._limits, stage=1)
        sup.add("status", self._status, stage=1)
        sup.add("watchdog", lambda: watchdog(self.notifier, sup, self.status_line), stage=1)
        if self.config.metrics is not None:
            # Prometheus (agent/metrics.py): last to stop, so a scrape sees the drain; not critical, a port taken
            # by another program is retried with the backoff and never gets the agent restarted by the watchdog
            sup.add("metrics", lambda: serve_metrics(self), stage=0, critical=False)
        sup.start()
        self.notifier.notify("READY=1")
        broker = self.config.uplink.broker
        log.info("agent_started", site=self.config.site_id, devices=len(self.pollers), pmus=len(self.pmus.clients),
                 waveforms=len(self.config.waveforms), store=self.config.store.path,
                 broker=f"{broker.host}:{broker.port}")  # fmt: skip
        try:
            await stop.wait()
        finally:
            self.notifier.notify("STOPPING=1")
            log.info("agent_stopping")
            if self.control is not None:
                # control first: its layers stop, and every device it holds goes back to its autonomous state
                # while the pollers and the links still run
                await sup.stop(down_to_stage=CONTROL_STAGE)
                await self.control.stop()
            await sup.stop(down_to_stage=2)  # pollers, then the writer's last commit
            await self._drain(self.config.uplink.drain_on_stop_s)
            await sup.stop()
            self._last_stats = await self.store.stats()
            self._write_status(running=False)
            await self.store.aclose()
            self.notifier.close()
            log.info("agent_stopped", readings_taken=self._last_stats.readings_taken)


def backlog_readings(stats: Any, ts: float) -> list[Reading]:
    """The backlog per stream as telemetry: ``agent.backlog_<stream>`` (items not yet acknowledged by central) and
    ``agent.backlog_age_<stream>`` (the age of the oldest unacknowledged message [s])."""
    out = []
    for stream, n in sorted(stats.backlog.items()):
        out.append(Reading(f"agent.backlog_{stream}", ts, int(n), "items", Quality.GOOD, Stream.TELEMETRY))
        age = float(stats.backlog_oldest_s.get(stream, 0.0))
        out.append(Reading(f"agent.backlog_age_{stream}", ts, age, "s", Quality.GOOD, Stream.TELEMETRY))
    return out


async def run_agent(config: AgentConfig) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await AgentService(config).run(stop)
