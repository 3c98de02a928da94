"""The monitoring task: the voltage picture every second, its alarms into the agent's event spool.

:meth:`VoltageMonitoring.evaluate` builds the picture (agent/monitoring/picture.py) from the live snapshot at
the injected clock's time, feeds it to the alarms (agent/monitoring/alarms.py), logs each event and puts it in
the spool; :meth:`VoltageMonitoring.run` does that every ``interval_s`` and stores what it put. The latest
picture stays in :attr:`VoltageMonitoring.picture` for whoever reads it (status, control).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent.events import EventSpool, EventStore
from agent.monitoring.alarms import VoltageAlarms
from agent.monitoring.config import MonitoringConfig
from agent.monitoring.picture import BusPhaseVoltage, Latest, VoltagePicture, voltage_picture
from agent.points import Event
from protocols.eventlog import EventLog

log = EventLog("monitoring")

INTERVAL_S = 1.0  # the picture's refresh: the fastest pollers read once a second


class VoltageMonitoring:
    """The configured voltages of ``latest`` (the agent's snapshot), watched every ``interval_s`` of ``sleep``.

    ``clock`` gives s UTC (the picture's time: ages, stale data); ``sleep`` waits between evaluations.
    """

    def __init__(self, config: MonitoringConfig, latest: Latest, store: EventStore, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 interval_s: float = INTERVAL_S) -> None:  # fmt: skip
        self.config, self.latest, self.clock, self.sleep, self.interval_s = config, latest, clock, sleep, interval_s
        self.alarms = VoltageAlarms(config, clock())
        self.spool = EventSpool(store, name="monitoring", source_key="source", logger=log)
        self.picture: VoltagePicture | None = None
        self.evaluations = 0

    def evaluate(self) -> list[Event]:
        """One picture at the clock's time; its events are logged and put in the spool (and returned)."""
        picture = voltage_picture(self.config, self.latest, self.clock())
        events = self.alarms.update(picture)
        self.picture = picture
        self.evaluations += 1
        for ev in events:
            if ev.cleared:
                log.info("voltage_condition_cleared", kind=ev.kind, source=ev.source, text=ev.text)
            else:
                log.warning("voltage_condition", kind=ev.kind, source=ev.source, text=ev.text)
        self.spool.extend(events)
        return events

    async def run(self) -> None:
        """Evaluate every ``interval_s`` and store the events until cancelled; then the spool's final flush."""
        self.alarms.started = self.clock()  # a point never read goes stale counted from here
        try:
            async with self.spool.retrying():
                while True:
                    if self.evaluate():
                        await self.spool.flush()
                    await self.sleep(self.interval_s)
        finally:
            await self.spool.close()

    def status(self) -> dict[str, Any]:
        """The ``monitoring`` section of the status file: per bus and phase the value used, its age, its range."""
        pic = self.picture
        out: dict[str, Any] = {"range": self.config.range, "evaluated_ts": pic.ts if pic else None,
                               "stale_after_s": self.config.stale_after_s, **self.spool.status()}  # fmt: skip
        if pic is None:
            return out
        active = self.alarms.active()
        out["bus_phases"] = {bp.key: {**_bus_phase(bp), "alarms": active.get(bp.key, [])} for bp in pic.bus_phases}
        out["lowest"] = _brief(pic.lowest())
        out["highest"] = _brief(pic.highest())
        out["lowest_end_of_line"] = _brief(pic.lowest(end_of_line=True))
        out["stale"] = {s.point: {"bus": s.bus, "phase": s.phase, "state": s.state,
                                  "age_s": None if s.age_s is None else round(s.age_s, 2)}
                        for s in pic.stale_sources}  # fmt: skip
        out["stale_events"] = self.alarms.stale_points()
        return out


def _bus_phase(bp: BusPhaseVoltage) -> dict[str, Any]:
    return {"bus": bp.bus, "phase": bp.phase, "end_of_line": bp.end_of_line,
            "value_pu": None if bp.value_pu is None else round(bp.value_pu, 5),
            "value_v": None if bp.value_v is None else round(bp.value_v, 3),
            "age_s": None if bp.age_s is None else round(bp.age_s, 2), "quality": bp.quality, "source": bp.source,
            "sources": list(bp.sources), "range_class": bp.range_class, "stale": bp.stale}  # fmt: skip


def _brief(bp: BusPhaseVoltage | None) -> dict[str, Any] | None:
    if bp is None:
        return None
    return {"bus": bp.bus, "phase": bp.phase, "value_pu": None if bp.value_pu is None else round(bp.value_pu, 5),
            "value_v": None if bp.value_v is None else round(bp.value_v, 3), "source": bp.source}  # fmt: skip


__all__ = ["INTERVAL_S", "VoltageMonitoring"]
