"""The running agent's live control picture on disk, for ``gridedge control explain`` (agent/control/explain.py).

Every :data:`PUBLISH_S` wall seconds the agent replaces ``<store>.control.json`` whole (a reader never sees half
of one) with what a dry run of its functions needs and nothing else can give from outside the process:

- ``readings``: the snapshot, every point as ``[point, ts, value, unit, quality]`` (what the functions read);
- ``clock_ts``: the agent's clock (``[clock]`` may run a bench day at speed) when the snapshot was taken, so the
  inputs are aged as the agent ages them;
- ``envelope``: the operations within the budget and hunting windows and the flags (suspensions, devices held),
  as the envelope last read them from the store;
- ``functions``: each function's mode and, where a function keeps its memory between cycles in a dataclass
  attribute ``state`` (the cap bank's timer), that memory, so ``explain`` continues from where the agent is;
- ``pid`` and ``ts`` (wall): whose picture it is and how old.

The file is an operator's aid, not state: nothing reads it back into the agent, and losing it loses nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from agent.clock import Clock
from agent.control.view import ReadingSource
from protocols.eventlog import EventLog

log = EventLog("control")

PUBLISH_S = 1.0  # wall seconds between two pictures (the status file's pace)


def live_path(store_path: Path) -> Path:
    """Where the agent with this store writes its live control picture."""
    return store_path.with_name(store_path.name + ".control.json")


def function_state(function: Any) -> dict[str, Any] | None:
    """The function's memory between cycles, when it keeps it in a dataclass ``state`` (else None)."""
    state = getattr(function, "state", None)
    if state is None or not dataclasses.is_dataclass(state) or isinstance(state, type):
        return None
    try:
        out = dataclasses.asdict(state)
        json.dumps(out)
    except (TypeError, ValueError):  # not plain data: explain runs that function from a fresh memory
        return None
    return out


class LivePublisher:
    """Writes the live picture of ``system`` (a ControlSystem) every :data:`PUBLISH_S` until cancelled."""

    def __init__(self, system: Any, snapshot: ReadingSource, clock: Clock, path: Path) -> None:
        self.system = system
        self.snapshot = snapshot
        self.clock = clock
        self.path = path
        self.writes = 0

    def picture(self) -> dict[str, Any]:
        items = self.snapshot.items() if hasattr(self.snapshot, "items") else []
        readings = [[p, r.ts, r.value, r.unit, str(r.quality)] for p, r in items]
        controller = self.system.controller
        functions = {f.name: {"mode": f.policy.mode, "layer": f.layer, "devices": list(f.devices),
                              "state": function_state(f)} for f in controller.functions}  # fmt: skip
        return {"ts": time.time(), "pid": os.getpid(), "clock_ts": self.clock.time(), "mode": self.system.config.mode,
                "readings": readings, "envelope": self.system.envelope.persisted_state(),
                "functions": functions}  # fmt: skip

    def write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.picture(), default=str))
            os.replace(tmp, self.path)
            self.writes += 1
        except OSError as err:  # a full disk must not stop control
            log.warning("control_live_write_failed", path=self.path, error=err)

    async def run(self) -> None:
        while True:
            self.write()
            await asyncio.sleep(PUBLISH_S)


__all__ = ["PUBLISH_S", "LivePublisher", "function_state", "live_path"]
