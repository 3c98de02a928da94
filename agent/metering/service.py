"""Metering in the running agent: every energy register read feeds its interval engine; closed intervals and the
engines' states go to the store together, and from there uplink on the ``intervals`` stream (docs/metering.md).

- :meth:`MeteringService.take` gets every batch of readings the pollers make (agent/service.py's ``_take``, on
  the event loop): a dict lookup per reading, and for a metered register one ``add`` to its engine (about 1 us).
  Identity points (serial number, model) are remembered per meter and give each read its ``meter_id``.
- Every ``FLUSH_S`` the task stores what the engines closed, with the states of the engines that closed them, in
  ONE transaction (``Store.add_intervals``); every ``OUTAGE_CHECK_S`` it asks the engines for the intervals an
  outage has made null (``flush``), so central learns of an outage while it lasts.
- States are stored only with intervals (once an interval per register, not every read: an SD card is not
  written every second for this). At start each engine resumes from its stored state and is fed again the energy
  reads the store holds after that state's last read (every energy reading is stored and never dropped), then
  the readings taken meanwhile, so a restart, or a crash between two flushes, makes no interval twice and loses
  none. A register with no state yet is fed the stored reads of the last ``REPLAY_NEW_S``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.metering.config import MeterConfig, MeteringConfig, engines
from agent.metering.intervals import Interval, RegisterIntervals
from agent.points import Reading
from agent.store import AsyncStore, StoreError
from protocols.eventlog import EventLog

log = EventLog("metering")

FLUSH_S = 1.0  # wall seconds between stores of what the engines closed
OUTAGE_CHECK_S = 30.0  # wall seconds between asking the engines for the intervals an outage made null
REPLAY_NEW_S = 86_400.0  # a register with no stored state is fed the stored energy reads of the last day


class MeteringService:
    """The engines of every metered register of the site, keyed by their point ``<device>.<register>``."""

    def __init__(self, config: MeteringConfig, store: AsyncStore, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.engines: dict[str, RegisterIntervals] = engines(config)
        self._meter_of: dict[str, MeterConfig] = {}  # register point -> its meter
        self._identity_points: dict[str, MeterConfig] = {}  # "<device>.<identity point>" -> its meter
        for m in config.meters:
            for r in m.registers:
                self._meter_of[f"{m.device}.{r.point}"] = m
            for p in m.identity:
                self._identity_points[f"{m.device}.{p}"] = m
        self.identity: dict[str, dict[str, Any]] = {m.device: {} for m in config.meters}
        self.closed: list[Interval] = []
        self._dirty: set[str] = set()
        self._early: list[Reading] = []  # readings taken before start() finished
        self.started = False
        self.reads = 0
        self.stored = 0
        self.by_quality: dict[str, int] = {}
        self.flags: dict[str, int] = {}
        self.last: dict[str, dict[str, Any]] = {}  # register point -> its last interval stored (status)

    # ---- the hot path: every batch of readings -----------------------------------------------------------------
    def take(self, readings: Sequence[Reading]) -> None:
        if not self.started:
            self._early.extend(readings)
            return
        for r in readings:
            meter = self._meter_of.get(r.point)
            if meter is None:
                m = self._identity_points.get(r.point)
                if m is not None and r.value is not None:
                    self.identity[m.device][r.point.split(".", 1)[1]] = r.value
                continue
            eng = self.engines[r.point]
            if eng.last_ts is not None and r.ts <= eng.last_ts:
                continue  # fed already (replayed from the store at start)
            self._add(r.point, r.ts, r.value, str(r.quality), meter.meter_id(self.identity[meter.device]))

    def _add(self, key: str, ts: float, value: Any, quality: str, meter_id: str | None) -> None:
        raw = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        self.reads += 1
        out = self.engines[key].add(ts, raw, quality, meter_id)
        if out:
            self.closed.extend(out)
            self._dirty.add(key)

    # ---- the task ------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Resume each engine from its stored state, feed it the energy reads the store holds after that state,
        then the readings taken meanwhile (module docstring)."""
        states = await self.store.metering_states()
        try:
            self.engines = engines(self.config, states)
        except (ValueError, KeyError, TypeError) as err:  # a state this agent cannot read: start those afresh
            log.error("metering_state_unusable", error=err)
            self.engines = engines(self.config, {})
        now = self.clock()
        since = {k: (e.last_ts if e.last_ts is not None else now - REPLAY_NEW_S) for k, e in self.engines.items()}
        ids = {k: (states.get(k) or {}).get("id") for k in self.engines}  # the meter id each state last saw
        replayed, after_id = 0, 0
        while since:
            rows = await self.store.energy_reads(min(since.values()), after_id)
            if not rows:
                break
            for row_id, point, ts, value, quality in rows:
                after_id = row_id
                eng = self.engines.get(point)
                if eng is None or ts <= since[point] or (eng.last_ts is not None and ts <= eng.last_ts):
                    continue
                self._add(point, ts, value, quality, ids[point])
                replayed += 1
        self.started = True
        early, self._early = self._early, []
        self.take(early)
        log.info("metering_started", meters=len(self.config.meters), registers=len(self.engines),
                 resumed=len(states), replayed=replayed, interval_s=self.config.interval_s)  # fmt: skip

    async def run(self) -> None:
        await self.start()
        next_outage = time.monotonic() + OUTAGE_CHECK_S
        while True:
            await asyncio.sleep(FLUSH_S)
            if time.monotonic() >= next_outage:
                next_outage += OUTAGE_CHECK_S
                self.close_outages(self.clock())
            await self.store_closed()

    def close_outages(self, now: float) -> None:
        for key, eng in self.engines.items():
            out = eng.flush(now)
            if out:
                self.closed.extend(out)
                self._dirty.add(key)

    async def store_closed(self) -> int:
        """Store what the engines closed with their states (one transaction); returns the intervals stored. A store
        fault keeps them for the next try (the states stay with them)."""
        if not self.closed:
            return 0
        batch, dirty = self.closed, self._dirty
        self.closed, self._dirty = [], set()
        items = [i.to_item() for i in batch]
        try:
            await self.store.add_intervals(items, {k: self.engines[k].state() for k in dirty})
        except StoreError as err:
            self.closed[:0] = batch
            self._dirty |= dirty
            log.error("metering_store_failed", intervals=len(items), error=err)
            return 0
        self.stored += len(items)
        for it in items:
            self.by_quality[it["quality"]] = self.by_quality.get(it["quality"], 0) + 1
            for f in it["flags"]:
                self.flags[f] = self.flags.get(f, 0) + 1
            self.last[f"{it['meter']}.{it['register']}"] = {k: it[k] for k in ("start", "end", "value", "quality")}
        return len(items)

    def status(self) -> dict[str, Any]:
        return {"interval_s": self.config.interval_s, "registers": len(self.engines), "reads": self.reads,
                "intervals_stored": self.stored, "waiting": len(self.closed), "by_quality": dict(self.by_quality),
                "flags": dict(self.flags), "last": dict(self.last)}  # fmt: skip


__all__ = ["FLUSH_S", "MeteringService"]
