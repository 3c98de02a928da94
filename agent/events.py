"""One event spool every producer uses (PMU and PQ monitoring, control; metering next).

An event is made where nothing may wait (a PMU frame callback, a PQ measurement batch, a line from the PQ
worker) but is stored with an ``await``: it waits in an :class:`EventSpool` until the store has it.

- Order: events reach the store in the order they were put; a later one never passes one still waiting.
- A refused event: the store raises :class:`~agent.store.StoreInputError` for an event it can never store
  (a text too long, data that is not JSON). It is logged, counted (``events_refused``) and dropped; the
  events after it go on.
- A failing store: any other :class:`~agent.store.StoreError` (a full disk, a closed store, a closed pipe)
  keeps that event and the rest waiting. They are tried again by the producer's next :meth:`EventSpool.flush`
  and every ``retry_s`` by :meth:`EventSpool.run` (:meth:`EventSpool.retrying` runs it for a block).
- Bounded: at most ``max_waiting`` events wait (plus the one being written). Past that the oldest waiting
  one is dropped, counted (``events_dropped``) and logged: memory is the limit, and a store that refuses
  writes for that long has been logged as failing at every try.
- One writer at a time, each write shielded. The producer's flush, the retry task and the final flush at
  stop may all want to write; a lock lets one write at a time. :class:`~agent.store.AsyncStore` finishes a
  write whose caller was cancelled (the call runs in the store's thread), so the write and the bookkeeping
  after it run together in a shielded task: a cancel reaches the waiting caller only, the event leaves the
  spool once it is stored (never written twice) and goes back to the head of the spool if the write failed
  (never lost). The event being written is out of the queue, so the bound never drops it.
- Stop: :meth:`EventSpool.close` is the final flush; what a failing store still does not take is logged
  as lost (``events_lost_at_stop``).
- Control actions: an event that starts within a window after a control action (a capacitor switched, a tap
  moved) carries that action's id, so an operator sees which switching caused which dip. Control notes each
  action it carries out in :data:`RECENT_ACTIONS`; every spool, whichever producer owns it, adds
  ``control_action_id`` (and ``control_action`` = ``<function>:<device>``, ``control_action_s`` = seconds
  after the action) to the ``data`` of an event put within ``window_s`` after one (:class:`RecentActions`).
  The control audit spool itself is built with ``actions=None``.

The counters (:class:`SpoolStats`) are the producers' status keys: a producer's stats class derives from
:class:`SpoolStats` and hands its instance to the spool, so ``events_stored``, ``events_refused`` and
``events_dropped`` stay where its status output reads them; ``events_waiting`` is :attr:`EventSpool.waiting`.
Log lines are ``event=event_stored`` (``event_refused``, ``event_store_failed``, ``event_dropped``) with the
event's kind and its source under the producer's key (``pmu=``, ``stream=``), on the producer's logger
(``gridedge.pmu``, ``gridedge.pq.worker``...): one set of names for every producer, so one grep finds them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.points import Event
from agent.store import StoreError, StoreInputError
from protocols.eventlog import EventLog

log = EventLog("events")

#: Events waiting for the store, per spool. Memory bounds it: a PQ event is 1-3 kB of JSON; a PMU event with
#: its full-rate window up to 48 kB (agent/pmu/monitor.py MAX_WINDOW_JSON), about 190 kB as Python objects
#: (tracemalloc, 14 channels x 240 samples). PMU monitoring keeps a smaller bound of its own for that reason.
MAX_WAITING = 1000
RETRY_S = 5.0  # a failing store is tried again this often while events wait
# the spool's own keys in its log lines: the producer's source_key must be another
_LOG_KEYS = frozenset({"event", "kind", "ts", "reason", "max_waiting", "dropped", "waiting", "error"})


class SpoolEvent(Protocol):
    """What the spool stores: any event with the six fields of ``store.add_event``."""

    @property
    def ts(self) -> float: ...
    @property
    def kind(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def data(self) -> dict[str, Any] | None: ...


class EventStore(Protocol):
    """Where events go: the agent's store (:class:`~agent.store.AsyncStore`) or the PQ worker's pipe."""

    async def add_event(self, ts: float, kind: str, severity: str, source: str, text: str,
                        data: dict[str, Any] | None = None) -> None: ...  # fmt: skip


@dataclass(frozen=True, slots=True)
class RecentAction:
    """A control action: its decision id, when it was carried out [s UTC, the agent's clock], where."""

    id: str
    ts: float
    function: str
    device: str


class RecentActions:
    """The control actions of the last ``window_s`` seconds, for the spools to annotate events with.

    ``window_s`` = 0 annotates nothing (no control configured). Bounded: at most ``max_kept`` actions are
    kept, and those older than the window behind the newest are forgotten as new ones come.
    """

    def __init__(self, window_s: float = 0.0, max_kept: int = 256) -> None:
        self.window_s = float(window_s)
        self._actions: deque[RecentAction] = deque(maxlen=max_kept)

    def configure(self, window_s: float) -> None:
        if not window_s >= 0:
            raise ValueError(f"window_s = {window_s!r}: a number of seconds >= 0")
        self.window_s = float(window_s)

    def note(self, action_id: str, ts: float, function: str, device: str) -> None:
        self._actions.append(RecentAction(action_id, ts, function, device))
        while self._actions and self._actions[0].ts < ts - self.window_s:
            self._actions.popleft()

    def match(self, ts: float) -> RecentAction | None:
        """The latest action at or before ``ts`` that ``ts`` is within the window after, or None."""
        if self.window_s <= 0:
            return None
        for action in reversed(self._actions):
            if action.ts <= ts <= action.ts + self.window_s:
                return action
        return None

    def clear(self) -> None:
        self._actions.clear()


#: The agent's one registry: control notes its actions here, every EventSpool reads it (module docstring).
RECENT_ACTIONS = RecentActions()


def annotate(event: SpoolEvent, actions: RecentActions | None) -> SpoolEvent:
    """``event`` with the control action it follows added to its data, or ``event`` itself."""
    hit = None if actions is None else actions.match(event.ts)
    if hit is None:
        return event
    data = dict(event.data or {})
    data.setdefault("control_action_id", hit.id)
    data.setdefault("control_action", f"{hit.function}:{hit.device}")
    data.setdefault("control_action_s", round(event.ts - hit.ts, 3))
    return Event(event.ts, event.kind, event.severity, event.source, event.text, data)


@dataclass(slots=True)
class SpoolStats:
    """A spool's counters, under the names the producers' status output uses."""

    events_stored: int = 0
    events_refused: int = 0  # the store refused them as invalid: logged one by one, dropped
    events_dropped: int = 0  # the oldest waiting, dropped past the bound while the store failed


class EventSpool:
    """Events waiting for the store, stored in order by :meth:`flush` (see the module docstring).

    ``name`` names the spool's retry task (``pmu`` -> ``pmu-event-retry``); ``logger`` is the producer's
    :class:`~protocols.eventlog.EventLog`; ``source_key`` names the event's source in the log line (``pmu=``,
    ``stream=``); ``stats`` is the producer's own counters
    object (a :class:`SpoolStats`), or a new one. ``stored_level`` is the level of the line logged for each
    stored event (DEBUG where the "store" only forwards to another process that logs its own). ``actions`` is
    the registry of recent control actions events are annotated from (None: never annotate).
    """

    def __init__(self, store: EventStore, *, name: str, source_key: str = "source",
                 logger: EventLog = log, max_waiting: int = MAX_WAITING, retry_s: float | None = None,
                 stats: SpoolStats | None = None, stored_level: int = logging.INFO,
                 actions: RecentActions | None = RECENT_ACTIONS) -> None:  # fmt: skip
        if not (isinstance(max_waiting, int) and max_waiting >= 1):
            raise ValueError(f"max_waiting = {max_waiting!r}: an integer >= 1")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", source_key) or source_key in _LOG_KEYS:
            raise ValueError(f"source_key = {source_key!r}: a lower-case log key not among {sorted(_LOG_KEYS)}")
        retry_s = RETRY_S if retry_s is None else retry_s
        if not retry_s > 0:
            raise ValueError(f"retry_s = {retry_s!r}: a number of seconds > 0")
        self.store = store
        self.name = name
        self.source_key = source_key
        self.log = logger
        self.max_waiting = max_waiting
        self.retry_s = float(retry_s)
        self.stats = stats if stats is not None else SpoolStats()
        self.stored_level = stored_level
        self.actions = actions  # control actions whose id an event put within their window carries
        self._waiting: deque[SpoolEvent] = deque()
        self._writing: SpoolEvent | None = None  # out of the queue while its write runs
        self._lock = asyncio.Lock()

    @property
    def waiting(self) -> int:
        """Events not stored yet: those queued and the one being written."""
        return len(self._waiting) + (self._writing is not None)

    @property
    def writing(self) -> SpoolEvent | None:
        """The event whose write is in progress (out of the queue until the store answers), or None."""
        return self._writing

    def status(self) -> dict[str, int]:
        return {"events_stored": self.stats.events_stored, "events_refused": self.stats.events_refused,
                "events_dropped": self.stats.events_dropped, "events_waiting": self.waiting}  # fmt: skip

    # ---- queueing (synchronous: callable from frame callbacks) ------------------------------------------

    def put(self, event: SpoolEvent) -> None:
        """Queue ``event`` after those waiting; past ``max_waiting`` the oldest waiting one is dropped.

        An event within the window after a control action is queued with that action's id in its data."""
        self._waiting.append(annotate(event, self.actions))
        self._bound()

    def extend(self, events: Iterable[SpoolEvent]) -> None:
        for event in events:
            self.put(event)

    def _bound(self) -> None:
        while len(self._waiting) > self.max_waiting:
            lost = self._waiting.popleft()
            self.stats.events_dropped += 1
            self.log.error("event_dropped", kind=lost.kind, **{self.source_key: lost.source}, ts=f"{lost.ts:.3f}",
                           reason="store_failing", max_waiting=self.max_waiting,
                           dropped=self.stats.events_dropped)  # fmt: skip

    # ---- storing ----------------------------------------------------------------------------------------

    async def flush(self) -> bool:
        """Store what waits, in order; True if nothing waits after it, False if the store failed.

        Waits for a write another caller has in progress (its outcome decides what still waits). Cancelling
        this call stops it between events; the write in progress finishes on its own (shielded).
        """
        while self.waiting:
            if not await asyncio.shield(self._store_first()):
                return False
        return True

    async def _store_first(self) -> bool:
        """Write the first waiting event; False if the store failed (it waits again, at the head). Shielded."""
        async with self._lock:
            if not self._waiting:
                return True
            ev = self._writing = self._waiting.popleft()
            try:
                await self.store.add_event(ev.ts, ev.kind, ev.severity, ev.source, ev.text, ev.data)
            except StoreInputError as err:
                self.stats.events_refused += 1
                self.log.error("event_refused", kind=ev.kind, **{self.source_key: ev.source}, error=err)
                return True
            except StoreError as err:
                self._waiting.appendleft(ev)
                self.log.error("event_store_failed", kind=ev.kind, **{self.source_key: ev.source},
                               waiting=len(self._waiting), error=err)  # fmt: skip
                self._bound()
                return False
            except BaseException:  # not the store's refusal: keep the event, let the error through
                self._waiting.appendleft(ev)
                self._bound()
                raise
            finally:
                self._writing = None
            self.stats.events_stored += 1
            self.log.log(self.stored_level, "event_stored", kind=ev.kind, **{self.source_key: ev.source})
            return True

    async def run(self) -> None:
        """Until cancelled: every ``retry_s``, flush what a failing store left waiting."""
        while True:
            await asyncio.sleep(self.retry_s)
            if self.waiting:
                await self.flush()

    @contextlib.asynccontextmanager
    async def retrying(self) -> AsyncIterator[EventSpool]:
        """Run :meth:`run` as a task for the body of the block; a write it started finishes on its own."""
        task = asyncio.create_task(self.run(), name=f"{self.name}-event-retry")
        task.add_done_callback(self._retry_ended)
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and (err := task.exception()) is not None:
                raise err

    def _retry_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (err := task.exception()) is not None:
            self.log.error("event_retry_failed", waiting=self.waiting, error=repr(err))

    async def close(self) -> None:
        """The final flush, as the producer stops: what the store still does not take is logged as lost."""
        await asyncio.shield(self.flush())
        if self.waiting:
            self.log.error("events_lost_at_stop", count=self.waiting, reason="store_failing")


__all__ = ["MAX_WAITING", "RECENT_ACTIONS", "RETRY_S", "Event", "EventSpool", "EventStore", "RecentAction",
           "RecentActions", "SpoolEvent", "SpoolStats", "annotate"]  # fmt: skip
