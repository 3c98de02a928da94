"""Central's MQTT ingest: validate each uplink message, store it durably, then acknowledge it to its agent.

Why this order: the agent deletes an outbox row when our ack arrives, so the ack must never precede the commit.
A duplicate (same msg_id, the agent resent it because an ack was lost) is acknowledged again and stores nothing.
A malformed message is counted and logged with the reason, never stored, never acknowledged, never fatal.

Workers scale out side by side through an MQTT 5 shared subscription (``$share/<group>/...``): the broker
hands each message to one worker of the group. The state topic is subscribed by every worker (not shared):
states are small, retained, and idempotent.

Past one broker (``[broker] kind = "nats"``) the same worker reads from a NATS JetStream cluster instead
(central/source_nats.py): the source is the seam. Both sources hand a message to ``_on_data`` and carry the
agent's ack; the NATS source also takes a receipt with each message, which the worker settles after the commit
(acked to JetStream only then; refused when the message is invalid; handed back when it could not be queued or
stored). Everything between, the store and the ack to the agent, is one path for both.

Backpressure: messages wait in a bounded list between the MQTT handler and the store. Past ``max_queue`` a
new message is dropped (counted, logged, NOT acked): the agent resends it after its ack timeout, so refusing
costs a delay, never data — while an unbounded list could exhaust memory during a store stall.

Command results: a ``results`` message is stored like any event message, and each result in it whose signature
checks with its site's agent key (``[commands.sites]``) is also recorded on its command, in the same transaction
(central/commands.py). A result that does not verify (a bad signature, a site with no key configured) is stored
as an event only, logged and counted (``results_unverified``), so a forged result can never mark a command done.

Failures: a message the store cannot hold is refused alone (counted as invalid, not acked) and the rest of its
flush is stored and acked. When the store fails as a whole (disk full, database locked) nothing is acked and the
flush goes back to the head of the queue, retried with a growing pause; only cancellation ends the flush loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from central.commands import results_of
from central.config import CentralConfig
from central.metrics import IngestTally
from central.metrics import serve as serve_metrics
from central.source_nats import NatsSource
from central.store import CentralStoreError, MessageRefused, Store, VerifiedResult, open_store
from protocols.eventlog import EventLog
from protocols.mqtt.session import ConnectionLost, MqttError, MqttSession
from protocols.telemetry.schema import (
    DATA_STREAMS,
    TOPIC_ROOT,
    Batch,
    SchemaError,
    State,
    decode_batch,
    decode_state,
    encode_ack,
    topic,
)

log = EventLog("central.ingest")
MAX_IDS_PER_ACK = 1000  # keeps an ack message small whatever the burst
RETRY_MAX_S = 5.0  # longest pause between attempts while the store fails as a whole


@dataclass(slots=True)
class IngestStats:
    received: int = 0  # data messages that reached this worker (valid or not)
    stored: int = 0  # new messages committed
    duplicates: int = 0  # messages whose msg_id was already stored (acked again, nothing stored)
    invalid: int = 0  # malformed data or state messages, or refused by the store: logged, not stored, not acked
    acks_sent: int = 0  # ack messages the broker accepted (each may carry many ids)
    acked_ids: int = 0
    ack_failures: int = 0
    dropped: int = 0  # refused because the queue to the store was full (not acked: the agent resends)
    store_errors: int = 0  # messages whose commit failed (not acked; queued again for the next flush)
    flush_errors: int = 0  # flushes ended by an unexpected error (a bug): logged, the worker goes on
    states: int = 0
    results_verified: int = 0  # command results whose signature checked with their site's agent key
    results_unverified: int = 0  # command results that did not (bad signature, no key): stored as events only
    interval_conflicts: int = 0  # interval versions sent again with other content: refused alone, logged


def _split_topic(t: str) -> tuple[str, str] | None:
    """``gridedge/v1/<site>/<stream>`` -> (site, stream)."""
    prefix = TOPIC_ROOT + "/"
    if not t.startswith(prefix):
        return None
    parts = t[len(prefix) :].split("/")
    return (parts[0], parts[1]) if len(parts) == 2 else None


class CentralWorker:
    """One ingest worker: its own MQTT session and store connection, sharing the store with its peers."""

    def __init__(
        self,
        config: CentralConfig,
        worker_name: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.name = worker_name
        self.stats = IngestStats()
        self.tally = IngestTally()  # per stream and site, for the metrics (central/metrics.py)
        self._clock = clock
        self._queue: list[Batch] = []
        self._states: list[State] = []
        self._wake = asyncio.Event()
        self._store: Store | None = None
        # (site, msg_id) of a queued results message -> its results that verified; dropped once it is stored
        self._verified: dict[tuple[str, str], list[VerifiedResult]] = {}
        # (site, msg_id) of a queued message -> the NATS source's receipts for it (empty on MQTT): settled after
        # the flush that stores it. A list: JetStream may deliver it again while a copy is queued.
        self._receipts: dict[tuple[str, str], list[Any]] = {}
        self.session: MqttSession | NatsSource
        if config.nats is not None:
            self.session = NatsSource(config.nats, worker_name, self._on_data, self._on_state, self._room)
            return
        self.session = MqttSession(
            config.broker.session_config(
                client_id=f"{config.broker.client_id}-{worker_name}",
                backoff_max_s=config.backoff_max_s,
                protocol=5,  # shared subscriptions are MQTT 5
            )
        )
        for stream in DATA_STREAMS:
            self.session.subscribe(f"$share/{config.group}/{TOPIC_ROOT}/+/{stream}", 1, self._on_data)
        self.session.subscribe(f"{TOPIC_ROOT}/+/state", 1, self._on_state)

    def _room(self) -> int:
        """How many more messages the queue to the store takes (the NATS source pulls no more than this)."""
        return self.config.max_queue - len(self._queue)

    async def run(self) -> None:
        """Open the store, then run the MQTT session and the store-then-ack loop until cancelled."""
        self._store = await asyncio.to_thread(open_store, self.config.store_target)
        log.info("central_worker_started", worker=self.name, db=self.config.store_name, group=self.config.group)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.session.run(), name=f"central-{self.name}-mqtt")
                tg.create_task(self._flush_forever(), name=f"central-{self.name}-flush")
        finally:
            store, self._store = self._store, None
            store.close()

    @property
    def queued(self) -> int:
        """Messages waiting to be stored."""
        return len(self._queue)

    def stats_dict(self) -> dict[str, int]:
        return {**asdict(self.stats), "connects": self.session.stats.connects}

    # ---- MQTT handlers (event loop) -----------------------------------------------------------------------

    def _on_data(self, t: str, payload: bytes, receipt: Any = None) -> None:
        self.stats.received += 1
        try:
            batch = decode_batch(payload)
            where = _split_topic(t)
            if where != (batch.site, batch.stream):
                raise SchemaError(f"topic {t} does not match site={batch.site!r} stream={batch.stream!r}")
        except SchemaError as err:
            self.stats.invalid += 1
            log.warning("central_invalid_message", worker=self.name, topic=t, bytes=len(payload), reason=err)
            self._settle_receipts([receipt], "refuse")
            return
        if len(self._queue) >= self.config.max_queue:
            self.stats.dropped += 1
            log.warning("central_queue_full", worker=self.name, site=batch.site, msg_id=batch.msg_id,
                        queue=len(self._queue))  # fmt: skip
            self._settle_receipts([receipt], "later")
            return
        if receipt is not None:
            self._receipts.setdefault((batch.site, batch.msg_id), []).append(receipt)
        if batch.stream == "results":
            self._verify_results(batch)
        self._queue.append(batch)
        self._wake.set()

    def _verify_results(self, batch: Batch) -> None:
        """Check each result's signature once, on arrival (a flush that is retried does not count it again);
        what verified waits beside the message until its flush is stored."""
        good, bad = results_of(batch, self.config.commands.agent_keys)
        self._verified[(batch.site, batch.msg_id)] = good
        self.stats.results_verified += len(good)
        self.stats.results_unverified += len(bad)
        for reason in bad:
            log.warning("central_result_unverified", worker=self.name, site=batch.site, msg_id=batch.msg_id,
                        reason=reason)  # fmt: skip

    def _on_state(self, t: str, payload: bytes) -> None:
        try:
            state = decode_state(payload)
            where = _split_topic(t)
            if where is None or where[0] != state.site:
                raise SchemaError(f"topic {t} does not match site={state.site!r}")
        except SchemaError as err:
            self.stats.invalid += 1
            log.warning("central_invalid_state", worker=self.name, topic=t, reason=err)
            return
        self.stats.states += 1
        log.info("central_site_state", site=state.site, status=state.status)
        self._states.append(state)
        self._wake.set()

    # ---- store, then ack ----------------------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        """Store then ack, burst by burst. Only cancellation ends this loop: an error is logged and counted,
        and what was not acked is retried (queued again) or resent by its agent."""
        failures = 0
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.config.ack_interval_s)  # gather a burst into one transaction and few acks
            self._wake.clear()
            batches, self._queue = self._queue, []
            states, self._states = self._states, []
            try:
                stored = await self._flush(batches, states)
            except Exception:  # a bug must not end the worker: nothing unacked is lost, the agent resends it
                self.stats.flush_errors += 1
                log.exception("central_flush_failed", worker=self.name, messages=len(batches), states=len(states))
                for b in batches:
                    self._verified.pop((b.site, b.msg_id), None)
                    self._settle(b, "refuse")  # as on MQTT: its agent resends it
                stored = True  # not retried from here: a bug tied to these messages would repeat at once
            if stored:
                failures = 0
                continue
            failures += 1
            pause = min(RETRY_MAX_S, self.config.ack_interval_s * 2**failures)
            log.warning("central_store_retry", worker=self.name, attempt=failures + 1, in_s=round(pause, 2),
                        queued=len(self._queue))  # fmt: skip
            await asyncio.sleep(pause)

    async def _flush(self, batches: Sequence[Batch], states: Sequence[State]) -> bool:
        """Store, then ack what was stored. False when the store failed as a whole: all of it was queued again."""
        store = self._store
        assert store is not None
        ok = True
        if states:
            try:
                await asyncio.to_thread(store.set_states, states)
            except CentralStoreError as err:
                log.error("central_states_not_stored", worker=self.name, states=len(states), error=err)
                self._states = [*states, *self._states]  # older first: the last state received still wins
                self._wake.set()
                ok = False
        if not batches:
            return ok
        verified = {b.msg_id: self._verified.get((b.site, b.msg_id), []) for b in batches if b.stream == "results"}
        try:
            results = await asyncio.to_thread(store.store_batches, batches, self._clock(), verified)
        except CentralStoreError as err:
            self.stats.store_errors += len(batches)
            log.error("central_store_failed", worker=self.name, messages=len(batches), error=err)
            self._requeue(batches)
            return False
        for b in batches:
            self._verified.pop((b.site, b.msg_id), None)
        for c in store.take_conflicts():
            self.stats.interval_conflicts += 1
            log.warning("central_interval_conflict", worker=self.name, site=c.site, meter=c.meter, register=c.register,
                        start=c.start, version=c.version, msg_id=c.msg_id, differs=",".join(c.differs))  # fmt: skip
        by_site: dict[str, list[str]] = {}
        done: list[Batch] = []
        for batch, result in zip(batches, results, strict=True):
            if isinstance(result, MessageRefused):
                self.stats.invalid += 1
                log.warning("central_message_refused", worker=self.name, site=batch.site, msg_id=batch.msg_id,
                            reason=repr(result.__cause__))  # fmt: skip
                self._settle(batch, "refuse")
                continue
            done.append(batch)
            if result:
                self.stats.stored += 1
                self.tally.stored(batch)
            else:
                self.stats.duplicates += 1
            by_site.setdefault(batch.site, []).append(batch.msg_id)
        sends = [
            self._ack(site, ids[i : i + MAX_IDS_PER_ACK])
            for site, ids in by_site.items()
            for i in range(0, len(ids), MAX_IDS_PER_ACK)
        ]
        await asyncio.gather(*sends)
        for batch in done:  # committed: JetStream may forget it (a crash before this redelivers it, stored once)
            self._settle(batch, "ack")
        return ok

    def _settle(self, batch: Batch, verdict: str) -> None:
        """Settle the source's receipts of one message (none on MQTT)."""
        self._settle_receipts(self._receipts.pop((batch.site, batch.msg_id), ()), verdict)

    def _settle_receipts(self, receipts: Sequence[Any], verdict: str) -> None:
        receipts = [r for r in receipts if r is not None]
        if receipts and isinstance(self.session, NatsSource):
            self.session.settle(receipts, verdict)

    def _requeue(self, batches: Sequence[Batch]) -> None:
        """Put a flush that was not stored back at the head of the queue, within max_queue.

        Past max_queue the newest messages are dropped, counted and not acked (their agents resend them), the
        same decision as for a full queue on arrival.
        """
        queue = [*batches, *self._queue]
        excess = len(queue) - self.config.max_queue
        if excess > 0:
            for b in queue[self.config.max_queue :]:
                self._verified.pop((b.site, b.msg_id), None)
                self._settle(b, "later")
            del queue[self.config.max_queue :]
            self.stats.dropped += excess
            log.warning("central_requeue_full", worker=self.name, dropped=excess)  # fmt: skip
        self._queue = queue
        self._wake.set()

    async def _ack(self, site: str, ids: list[str]) -> None:
        try:
            await self.session.publish(topic(site, "ack"), encode_ack(site, ids), qos=1)
        except MqttError as err:  # ConnectionLost or refused: the agent resends, we store nothing twice
            self.stats.ack_failures += 1
            level = logging.WARNING if isinstance(err, ConnectionLost) else logging.ERROR
            log.log(level, "central_ack_failed", worker=self.name, site=site, ids=len(ids), error=err)
            return
        self.stats.acks_sent += 1
        self.stats.acked_ids += len(ids)


def write_status(path: Path, workers: Sequence[CentralWorker], now: float) -> None:
    """Write the stats atomically (a reader never sees half a file)."""
    per_worker = {w.name: w.stats_dict() for w in workers}
    total: dict[str, int] = {}
    for stats in per_worker.values():
        for key, value in stats.items():
            total[key] = total.get(key, 0) + value
    doc = {"ts": now, "pid": os.getpid(), "workers": per_worker, "total": total}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)


async def _status_forever(path: Path, workers: Sequence[CentralWorker], clock: Callable[[], float]) -> None:
    while True:
        try:
            write_status(path, workers, clock())
        except OSError as err:
            log.error("central_status_write_failed", path=path, error=err)
        await asyncio.sleep(1.0)


async def run_workers(config: CentralConfig, n_workers: int = 1, *, clock: Callable[[], float] = time.time) -> None:
    """N workers as tasks of one process sharing the db file, plus the status file writer; until cancelled."""
    if n_workers < 1:
        raise ValueError(f"n_workers = {n_workers}: must be at least 1")
    workers = [CentralWorker(config, f"w{i + 1}", clock=clock) for i in range(n_workers)]
    try:
        async with asyncio.TaskGroup() as tg:
            for w in workers:
                tg.create_task(w.run(), name=f"central-{w.name}")
            if config.status_file is not None:
                tg.create_task(_status_forever(config.status_file, workers, clock), name="central-status")
            if config.metrics is not None:
                tg.create_task(
                    serve_metrics(config.metrics, workers, config.store_target, clock), name="central-metrics"
                )
    finally:
        if config.status_file is not None:
            try:
                write_status(config.status_file, workers, clock())
            except OSError as err:
                log.error("central_status_write_failed", path=config.status_file, error=err)
