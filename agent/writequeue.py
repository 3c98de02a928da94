"""The readings waiting between the pollers and the store writer.

Bounded: past ``max_readings`` the oldest telemetry is dropped and counted; energy is never dropped.
Telemetry and energy wait in separate deques, so dropping is O(1) however much energy is queued, and
readings that could not be stored go back to the head of their deque, in order, to be retried first.

On exit, readings that could not be committed (the store full of energy, the disk full) are spilled to
a JSON-lines file beside the store and taken back at the next start, so they are not lost with the
process either.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from agent.points import Quality, Reading, Stream
from protocols.eventlog import EventLog

log = EventLog("writer")


class WriteQueue:
    def __init__(self, max_readings: int) -> None:
        if max_readings < 1:
            raise ValueError(f"max_readings = {max_readings}: must be at least 1")
        self.max_readings = max_readings
        self._telemetry: deque[Reading] = deque()
        self._energy: deque[Reading] = deque()
        self.dropped = 0  # telemetry dropped because the queue was full

    def __len__(self) -> int:
        return len(self._telemetry) + len(self._energy)

    def _lane(self, r: Reading) -> deque[Reading]:
        return self._energy if r.stream is Stream.ENERGY else self._telemetry

    def put(self, readings: Iterable[Reading]) -> None:
        for r in readings:
            self._lane(r).append(r)
        excess = len(self) - self.max_readings
        if excess > 0:
            n = min(excess, len(self._telemetry))
            for _ in range(n):
                self._telemetry.popleft()
            self.dropped += n
            if n:
                log.warning("write_queue_full", dropped_telemetry=n, total_dropped=self.dropped)

    def take(self) -> list[Reading]:
        """Everything queued, energy first, each lane in arrival order; the queue is left empty."""
        batch = [*self._energy, *self._telemetry]
        self._energy.clear()
        self._telemetry.clear()
        return batch

    def requeue(self, readings: Iterable[Reading]) -> None:
        """Put readings that could not be stored back at the head of their lane, in their order."""
        telemetry: list[Reading] = []
        energy: list[Reading] = []
        for r in readings:
            (energy if r.stream is Stream.ENERGY else telemetry).append(r)
        self._energy.extendleft(reversed(energy))
        self._telemetry.extendleft(reversed(telemetry))

    # -- surviving the process ---------------------------------------------------------------------
    def spill(self, path: Path) -> int:
        """Append what is still queued to ``path`` (fsynced); returns how many readings were written."""
        batch = self.take()
        if not batch:
            return 0
        lines = "".join(
            json.dumps([r.point, r.ts, r.value, r.unit, r.quality.value, r.stream.value]) + "\n" for r in batch
        )
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(lines)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:
            log.error("unsaved_readings_lost", count=len(batch), path=path, error=err)
            return 0
        log.warning("unsaved_readings_spilled", count=len(batch), path=path)
        return len(batch)

    @staticmethod
    def read_spilled(path: Path) -> list[Reading] | None:
        """The readings a previous run spilled (None: no file); bad lines are logged and skipped."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        loaded: list[Reading] = []
        for n, line in enumerate(text.splitlines(), start=1):
            try:
                point, ts, value, unit, quality, stream = json.loads(line)
                loaded.append(Reading(point, float(ts), value, unit, Quality(quality), Stream(stream)))
            except (ValueError, TypeError) as err:
                log.error("unsaved_reading_unreadable", path=path, line=n, error=err)
        return loaded
