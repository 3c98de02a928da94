"""The store writer: commits what the pollers queued, and keeps whatever the store cannot take yet.

Every ``WRITE_INTERVAL_S`` the queue is committed in calls of at most ``STORE_CALL_MAX`` readings. What the
store does not take goes back to the head of the queue, in order: a call refused whole (a full disk) waits
for the next try, only the energy a store full of energy rejects waits (its telemetry was dropped and
counted by the store), and a reading the store refuses as invalid is logged and counted (``refused``)
without holding back the others. A store error pauses the writer for ``STORE_RETRY_S``.

When the writer stops (after the pollers, on shutdown) it commits what is still queued and spills the rest
to a JSON-lines file beside the store, which ``commit_unsaved`` takes back at the next start
(docs/store.md, "In front of the store: the writer").
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from agent.points import Reading
from agent.store import AsyncStore, StoreError, StoreFullError, StoreInputError
from agent.writequeue import WriteQueue
from protocols.eventlog import EventLog

log = EventLog("writer")

# Readings waiting for the store writer. Past this many, the oldest telemetry is dropped (counted);
# energy readings are never dropped here.
MAX_QUEUED_READINGS = 200_000
WRITE_INTERVAL_S = 0.2
STORE_RETRY_S = 5.0
STORE_CALL_MAX = 20_000  # readings per store call (~0.1 s of work; a backlog is committed in several calls)


def spill_path_for(store_path: Path) -> Path:
    """Where readings the store could not take at exit wait for the next start."""
    return store_path.with_name(store_path.name + ".unsaved.jsonl")


class StoreWriter:
    """Owns the write queue between the pollers and the store, its spill file and the writer task."""

    def __init__(self, store: AsyncStore, spill_path: Path, max_queued: int = MAX_QUEUED_READINGS) -> None:
        self.store = store
        self.queue = WriteQueue(max_queued)
        self.spill_path = spill_path
        self.refused = 0  # readings the store refused as invalid (logged one by one)

    def put(self, readings: Iterable[Reading]) -> None:
        """Queue readings for the store (the pollers' side; never blocks)."""
        self.queue.put(readings)

    async def commit_unsaved(self) -> None:
        """Commit what a previous run could not store (spilled beside the store at its exit) before anything
        else, through the writer's own flush, and remove the file only then: a kill in the agent's first seconds
        cannot lose those readings. What the store will not take now waits in the queue like any reading (and is
        spilled again at exit)."""
        readings = WriteQueue.read_spilled(self.spill_path)
        if readings is None:
            return
        self.queue.requeue(readings)  # nothing else is queued yet: the pollers have not started
        try:
            stored = await self.flush()
        except StoreError as err:
            log.error("unsaved_readings_wait", count=len(self.queue), error=err)
        else:
            log.info("unsaved_readings_stored", count=stored, path=self.spill_path)
        self.spill_path.unlink()

    async def flush(self) -> int:
        """Commit everything queued, at most STORE_CALL_MAX readings a call (a store short of room refuses a
        call whole: one that grew with every refusal might never fit again). Whatever the store did not take
        goes back to the queue's head, in order."""
        batch = self.queue.take()
        stored = 0
        for i in range(0, len(batch), STORE_CALL_MAX):
            chunk, rest = batch[i : i + STORE_CALL_MAX], batch[i + STORE_CALL_MAX :]
            try:
                await self.store.add_readings(chunk)
            except StoreInputError:
                # One reading the store refuses must not hold back the others: store them one by one.
                stored += await self._flush_one_by_one(chunk, rest)
                continue
            except StoreFullError as err:
                # Full of energy: the store dropped (and counted) the call's telemetry and refused its energy,
                # which waits here. Disk full (nothing rejected by name): the call was rolled back whole.
                self.queue.requeue([*(err.rejected or chunk), *rest])
                log.error("store_full", readings_waiting=len(self.queue), error=err)
                raise
            except StoreError:
                self.queue.requeue([*chunk, *rest])
                raise
            stored += len(chunk)
        return stored

    async def _flush_one_by_one(self, batch: list[Reading], rest: list[Reading]) -> int:
        stored = 0
        for i, reading in enumerate(batch):
            try:
                await self.store.add_readings([reading])
                stored += 1
            except StoreInputError as err:
                self.refused += 1
                log.error("reading_refused", point=reading.point, value=repr(reading.value), error=err)
            except StoreError as err:
                rejected = err.rejected if isinstance(err, StoreFullError) and err.rejected else [reading]
                self.queue.requeue([*rejected, *batch[i + 1 :], *rest])
                raise
        return stored

    async def run(self) -> None:
        """The writer task: flush every WRITE_INTERVAL_S; when cancelled, a last flush, then spill the rest."""
        try:
            while True:
                await asyncio.sleep(WRITE_INTERVAL_S)
                try:
                    await self.flush()
                except StoreError as err:
                    log.error("store_write_failed", readings_waiting=len(self.queue), error=err)
                    await asyncio.sleep(STORE_RETRY_S)
        finally:
            # Commit what is still queued: the pollers have stopped before the writer on shutdown.
            # What the store cannot take now is spilled beside it and taken back at the next start.
            try:
                await self.flush()
            except StoreError as err:
                log.error("store_write_failed_at_exit", readings_waiting=len(self.queue), error=err)
            self.queue.spill(self.spill_path)
