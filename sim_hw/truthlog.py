"""The bench's truth log: what the bench itself did, one JSON object per line, written as it happens, for a
program that checks an agent against it (``gridedge demo`` shows each scenario step from it).

``gridedge sim run --truth-log FILE`` writes it (the file is replaced when the bench is up). Records, each with
``record`` and ``ts`` (the simulated clock [s since the epoch, UTC]):

- ``bench_up``: ``pid``, ``speed``, ``step_s``, ``sim_start`` (the simulated clock at step 0), ``wall`` (the
  wall clock then: the simulated clock runs ``speed`` times as fast from there), ``devices``,
  ``scenario`` (null, or ``source``, ``description``, ``events`` and ``steps``: the [[events]] entries and the
  steps they make, a start and an end for an event with a duration);
- ``scenario_step``: ``elapsed_s`` (simulated seconds since step 0), ``action``, ``where`` (the PMU, device or
  bus; ``feeder`` for all of it), ``text`` (what happened, for people), ``end`` (true for an event's end) and,
  when the step failed, ``error``;
- ``bench_down``: ``steps``.

A line is flushed as it is written, so a reader following the file sees each record at once. A log that cannot
be written is reported once and dropped; the bench goes on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from protocols.eventlog import EventLog

log = EventLog("sim.bench")


class TruthLog:
    """Appends records to ``path`` (replacing what a previous run left there on the first record)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._broken = False

    def write(self, record: str, ts: float, **fields: Any) -> None:
        if self._broken:
            return
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("w", encoding="utf-8")
            self._file.write(json.dumps({"record": record, "ts": ts, **fields}, sort_keys=True) + "\n")
            self._file.flush()
        except OSError as err:
            self._broken = True
            log.error("truth_log_failed", path=self.path, error=err)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
