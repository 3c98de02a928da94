"""The agent's Prometheus metrics (docs/metrics.md): ``[metrics] listen = "127.0.0.1:9108"`` serves them.

Every figure is read at scrape time, in the event loop, from the stats objects the agent keeps anyway (the
store's last ``StoreStats``, each poller's ``PollerStats``, the MQTT session's and the uplink's counters, the
status views of PMU, PQ and control): nothing on a hot path counts for Prometheus, and a scrape shows what
``gridedge status`` shows. The store's figures are those of its last ``stats()`` (once a second, the status
task): a scrape never queries SQLite.

Counters are the agent's own: those of the store (``readings_taken``, ``acked``, ``dropped``) survive a restart,
the others start at 0 with the process, which PromQL's ``rate()`` and ``increase()`` take as a reset.
Ages are on the agent's clock (agent/clock.py), like the status page's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from protocols.metrics import Families, LoopCollector, MetricsServer, Spec

if TYPE_CHECKING:
    from agent.service import AgentService

P = "gridedge_agent_"

# Decision outcomes that sent a command to a device (agent/control/decision.py OUTCOMES): the others did not
# write (pending, refused, advised, held).
WRITE_OUTCOMES = ("applied", "readback_failed", "reverted", "failed")

SPECS: dict[str, Spec] = {
    # -- the agent
    P + "info": Spec("gauge", "Always 1; the site this agent serves", ("site",)),
    P + "start_time_seconds": Spec("gauge", "When the agent started, seconds since the Unix epoch"),
    P + "task_running": Spec(
        "gauge", "1 while the supervised task runs (0: backoff after a failure, or stopped)", ("task",)
    ),  # fmt: skip
    P + "task_restarts_total": Spec("counter", "Times the supervisor restarted the task after a failure", ("task",)),
    # -- readings and the store
    P + "readings_taken_total": Spec("counter", "Readings committed to the store, ever (survives restarts)"),
    P + "write_queue_readings": Spec("gauge", "Readings waiting in the queue between acquisition and the store"),
    P + "write_queue_dropped_total": Spec("counter", "Telemetry readings dropped because the write queue was full"),
    P + "write_refused_total": Spec("counter", "Readings the store refused as invalid"),
    P + "backlog_items": Spec(
        "gauge", "Items of the stream not yet acknowledged by central (unsealed and in the outbox)", ("stream",)
    ),  # fmt: skip
    P + "backlog_oldest_age_seconds": Spec(
        "gauge", "Age of the stream's oldest unacknowledged outbox message (0: none)", ("stream",)
    ),  # fmt: skip
    P + "acked_messages_total": Spec("counter", "Outbox messages central acknowledged (survives restarts)"),
    P + "acked_readings_total": Spec(
        "counter", "Items in the outbox messages central acknowledged (survives restarts)"
    ),  # fmt: skip
    P + "store_size_bytes": Spec("gauge", "Size of the store's files (database and WAL)"),
    P + "store_max_bytes": Spec("gauge", "The store's configured bound (store.max_mb)"),
    P + "store_limit_bytes": Spec("gauge", "The bound in force: max_bytes, or less when the disk has less room"),
    P + "store_used_ratio": Spec("gauge", "store_size_bytes / store_limit_bytes (the full alarm rises at 0.9)"),
    P + "store_full_alarm": Spec("gauge", "1 while the store's full alarm is raised (latched: 90 % up, 80 % down)"),
    P + "store_disk_free_bytes": Spec("gauge", "What the file system holding the store has left"),
    P + "store_dropped_readings_total": Spec("counter", "Telemetry readings dropped by the full-store policy"),
    P + "store_dropped_messages_total": Spec("counter", "Telemetry outbox messages dropped by the full-store policy"),
    # -- the MQTT link and the uplink
    P + "mqtt_connected": Spec("gauge", "1 while the MQTT session to the broker is up"),
    P + "mqtt_connects_total": Spec("counter", "MQTT sessions established"),
    P + "mqtt_reconnects_total": Spec("counter", "MQTT sessions established after the first"),
    P + "mqtt_disconnects_total": Spec("counter", "MQTT sessions that ended"),
    P + "mqtt_connect_failures_total": Spec("counter", "MQTT connection attempts that failed"),
    P + "uplink_published_total": Spec("counter", "Uplink messages the broker acknowledged (resends included)"),
    P + "uplink_resent_total": Spec("counter", "Uplink messages published again (no ack from central in time)"),
    P + "uplink_ack_timeouts_total": Spec("counter", "Uplink messages central did not acknowledge in ack_timeout_s"),
    P + "uplink_publish_failures_total": Spec("counter", "Publishes lost with the connection (sent again later)"),
    # -- devices
    P + "device_up": Spec("gauge", "1 when the device's last poll succeeded", ("device",)),
    P + "device_polls_total": Spec("counter", "Poll cycles attempted", ("device",)),
    P + "device_polls_ok_total": Spec("counter", "Poll cycles in which the device returned data", ("device",)),
    P + "device_polls_failed_total": Spec("counter", "Poll cycles in which it returned nothing", ("device",)),
    P + "device_timeouts_total": Spec("counter", "Requests the device did not answer in time", ("device",)),
    P + "device_connection_errors_total": Spec("counter", "Link failures (refused, reset, no route)", ("device",)),
    P + "device_exceptions_total": Spec("counter", "Modbus exception answers", ("device",)),
    P + "device_frame_errors_total": Spec("counter", "Malformed answers", ("device",)),
    P + "device_consecutive_failures": Spec("gauge", "Poll cycles failed in a row (0: healthy)", ("device",)),
    P + "device_last_ok_age_seconds": Spec(
        "gauge", "Time since the last poll that returned data (absent: never)", ("device",)
    ),  # fmt: skip
    P + "device_readings_total": Spec("counter", "Readings the device's poller emitted, of any quality", ("device",)),
    # -- PMU streams (C37.118)
    P + "pmu_connected": Spec("gauge", "1 while the PMU stream is connected", ("pmu",)),
    P + "pmu_stale": Spec("gauge", "1 while the PMU's data is stale", ("pmu",)),
    P + "pmu_frames_total": Spec("counter", "Data frames received", ("pmu",)),
    P + "pmu_late_frames_total": Spec("counter", "Frames that arrived late", ("pmu",)),
    P + "pmu_frame_errors_total": Spec("counter", "Frames that could not be decoded", ("pmu",)),
    P + "pmu_readings_total": Spec("counter", "Readings made from the PMU's frames", ("pmu",)),
    P + "pmu_reconnects_total": Spec("counter", "Connections to the PMU after the first", ("pmu",)),
    # -- power quality (waveform streams, measured in the PQ worker process)
    P + "pq_worker_up": Spec("gauge", "1 while the PQ worker process runs"),
    P + "pq_worker_starts_total": Spec("counter", "PQ worker processes started"),
    P + "pq_worker_readings_refused_total": Spec("counter", "Readings from the PQ worker refused as invalid"),
    P + "pq_connected": Spec("gauge", "1 while the waveform stream is connected", ("stream",)),
    P + "pq_signal_seconds_total": Spec("counter", "Seconds of signal measured", ("stream",)),
    P + "pq_samples_total": Spec("counter", "Samples measured", ("stream",)),
    P + "pq_gaps_total": Spec("counter", "Gaps in the stream", ("stream",)),
    P + "pq_missing_samples_total": Spec("counter", "Samples lost in gaps", ("stream",)),
    P + "pq_bad_frames_total": Spec("counter", "Blocks refused (CRC, size, malformed)", ("stream",)),
    P + "pq_readings_total": Spec("counter", "PQ readings made (RMS, harmonics, flicker, unbalance...)", ("stream",)),
    P + "pq_events_total": Spec("counter", "PQ events (dips, swells, interruptions...)", ("stream",)),
    P + "pq_cpu_seconds_total": Spec("counter", "CPU time spent measuring the stream", ("stream",)),
    P + "pq_reconnects_total": Spec("counter", "Connections to the stream after the first", ("stream",)),
    # -- control (agent/control)
    P + "control_cycles_total": Spec("counter", "Control passes run"),
    P + "control_decisions_total": Spec("counter", "Control decisions by outcome", ("outcome",)),
    P + "control_writes_total": Spec("counter", "Control decisions that sent a command to a device"),
    P + "control_suspensions": Spec("gauge", "Control functions suspended on the device now", ("device",)),
    P + "control_held": Spec("gauge", "1 while the envelope holds the device for a function", ("device",)),
    P + "control_budget_left": Spec("gauge", "Wear budget left in its window", ("device", "budget")),
    P + "control_budget_limit": Spec("gauge", "Wear budget per window", ("device", "budget")),
    P + "control_heartbeat_failures_total": Spec("counter", "Heartbeat writes that failed"),
}


def _n(value: Any) -> float | None:
    """A number, or None for what is absent or not a number (a field another version may not have)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def gather(service: AgentService) -> Families:
    """The agent's figures now (in the event loop)."""
    f = Families(SPECS)
    f.add(P + "info", 1, site=service.config.site_id)
    f.add(P + "start_time_seconds", service.started)
    for name, health in service.supervisor.health().items():
        f.add(P + "task_running", health.state == "running", task=name)
        f.add(P + "task_restarts_total", health.restarts, task=name)
    _store(f, service)
    _link(f, service)
    now = service.clock.time()
    for poller in service.pollers:
        _device(f, poller.device.name, poller.stats, now)
    _pmus(f, service.pmus.status() if service.pmus.clients else {})
    if service.pq is not None:
        _pq(f, service.pq.worker_status(), service.pq.status())
    if service.control is not None:
        _control(f, service.control.status())
    return f


def _store(f: Families, service: AgentService) -> None:
    f.add(P + "write_queue_readings", len(service.writer.queue))
    f.add(P + "write_queue_dropped_total", service.writer.queue.dropped)
    f.add(P + "write_refused_total", service.writer.refused)
    s = service.last_stats
    if s is None:  # before the first stats (the first second): the store's figures are not known yet
        return
    f.add(P + "readings_taken_total", s.readings_taken)
    for stream, items in sorted(s.backlog.items()):
        f.add(P + "backlog_items", items, stream=stream)
        f.add(P + "backlog_oldest_age_seconds", s.backlog_oldest_s.get(stream, 0.0), stream=stream)
    f.add(P + "acked_messages_total", s.acked_messages)
    f.add(P + "acked_readings_total", s.acked_readings)
    f.add(P + "store_size_bytes", s.size_bytes)
    f.add(P + "store_max_bytes", s.max_bytes)
    limit = s.limit_bytes or s.max_bytes
    f.add(P + "store_limit_bytes", limit)
    f.add(P + "store_used_ratio", s.size_bytes / limit if limit else None)
    f.add(P + "store_full_alarm", s.full_alarm)
    f.add(P + "store_disk_free_bytes", s.disk_free_bytes if s.disk_free_bytes >= 0 else None)
    f.add(P + "store_dropped_readings_total", s.dropped_readings)
    f.add(P + "store_dropped_messages_total", s.dropped_messages)


def _link(f: Families, service: AgentService) -> None:
    session = service.session.stats
    f.add(P + "mqtt_connected", service.session.connected.is_set())
    f.add(P + "mqtt_connects_total", session.connects)
    f.add(P + "mqtt_reconnects_total", max(0, session.connects - 1))
    f.add(P + "mqtt_disconnects_total", session.disconnects)
    f.add(P + "mqtt_connect_failures_total", session.connect_failures)
    up = service.uplink.stats
    f.add(P + "uplink_published_total", up.published)
    f.add(P + "uplink_resent_total", up.resent)
    f.add(P + "uplink_ack_timeouts_total", up.ack_timeouts)
    f.add(P + "uplink_publish_failures_total", up.publish_failures)


def _device(f: Families, name: str, st: Any, now: float) -> None:
    polls, ok = getattr(st, "polls", 0), getattr(st, "polls_ok", 0)
    failures = getattr(st, "consecutive_failures", 0)
    last_ok = getattr(st, "last_ok_ts", None)
    f.add(P + "device_up", last_ok is not None and failures == 0, device=name)
    f.add(P + "device_polls_total", polls, device=name)
    f.add(P + "device_polls_ok_total", ok, device=name)
    f.add(P + "device_polls_failed_total", max(0, polls - ok), device=name)
    for field in ("timeouts", "connection_errors", "exceptions", "frame_errors", "readings"):
        f.add(f"{P}device_{field}_total", _n(getattr(st, field, None)), device=name)
    f.add(P + "device_consecutive_failures", failures, device=name)
    f.add(P + "device_last_ok_age_seconds", None if last_ok is None else max(0.0, now - last_ok), device=name)


def _pmus(f: Families, status: Mapping[str, Mapping[str, Any]]) -> None:
    for pmu, s in sorted(status.items()):
        f.add(P + "pmu_connected", bool(s.get("connected")), pmu=pmu)
        f.add(P + "pmu_stale", bool(s.get("stale")), pmu=pmu)
        f.add(P + "pmu_frames_total", _n(s.get("frames")), pmu=pmu)
        f.add(P + "pmu_late_frames_total", _n(s.get("late")), pmu=pmu)
        f.add(P + "pmu_frame_errors_total", _n(s.get("frame_errors")), pmu=pmu)
        f.add(P + "pmu_readings_total", _n(s.get("readings")), pmu=pmu)
        f.add(P + "pmu_reconnects_total", _n(s.get("reconnects")), pmu=pmu)


def _pq(f: Families, worker: Mapping[str, Any], streams: Mapping[str, Mapping[str, Any]]) -> None:
    f.add(P + "pq_worker_up", worker.get("pid") is not None and worker.get("starts", 0) > worker.get("exits", 0))
    f.add(P + "pq_worker_starts_total", _n(worker.get("starts")))
    f.add(P + "pq_worker_readings_refused_total", _n(worker.get("readings_refused")))
    for stream, s in sorted(streams.items()):
        if not isinstance(s, Mapping):
            continue
        f.add(P + "pq_connected", bool(s.get("connected")), stream=stream)
        f.add(P + "pq_signal_seconds_total", _n(s.get("signal_s")), stream=stream)
        f.add(P + "pq_cpu_seconds_total", _n(s.get("cpu_s")), stream=stream)
        for field in ("samples", "gaps", "missing_samples", "bad_frames", "readings", "events", "reconnects"):
            f.add(f"{P}pq_{field}_total", _n(s.get(field)), stream=stream)


def _control(f: Families, status: Mapping[str, Any]) -> None:
    f.add(P + "control_cycles_total", _n(status.get("cycles")))
    envelope = status.get("envelope") or {}
    counts = envelope.get("decisions") or {}
    for outcome, n in sorted(counts.items()):
        f.add(P + "control_decisions_total", n, outcome=outcome)
    f.add(P + "control_writes_total", sum(counts.get(o, 0) for o in WRITE_OUTCOMES))
    f.add(P + "control_heartbeat_failures_total", _n(envelope.get("heartbeat_failures")))
    for device, d in sorted((envelope.get("devices") or {}).items()):
        f.add(P + "control_suspensions", len(d.get("suspended") or {}), device=device)
        f.add(P + "control_held", bool(d.get("held")), device=device)
        for budget, b in sorted((d.get("budgets") or {}).items()):
            f.add(P + "control_budget_left", _n(b.get("left")), device=device, budget=budget)
            f.add(P + "control_budget_limit", _n(b.get("limit")), device=device, budget=budget)


async def serve(service: AgentService) -> None:
    """Serve ``service``'s figures at its ``[metrics] listen`` until cancelled (a supervisor task)."""
    assert service.config.metrics is not None
    server = MetricsServer(service.config.metrics, "agent")
    await server.run(lambda loop: [LoopCollector(lambda: gather(service), loop)])


__all__ = ["SPECS", "WRITE_OUTCOMES", "gather", "serve"]
