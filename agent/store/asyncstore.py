"""The Store for the event loop (docs/store.md, "Threads")."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from agent.points import Reading
from agent.store.controlstate import ControlFlag, ControlOp, FlagEvent
from agent.store.errors import StoreError
from agent.store.outbox import OutboxMessage
from agent.store.store import Store, StoreStats

T = TypeVar("T")


class AsyncStore:
    """The Store for the event loop: every call runs in ONE dedicated worker thread.

    One thread serialises the calls (the connection is used by nothing else), and the loop never waits
    on SQLite. Cancelling an awaiting coroutine stops neither a call running in the thread nor one queued
    for it: each completes (or rolls back) on its own, so the store is never left half-written and a write
    a cancelled caller had handed over still lands.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    @classmethod
    async def open(cls, *args: Any, **kwargs: Any) -> AsyncStore:
        """Open a Store (same arguments) in the worker thread: opening may migrate and must not block the loop."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        try:
            store = await asyncio.get_running_loop().run_in_executor(
                executor, functools.partial(Store, *args, **kwargs)
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self = cls.__new__(cls)
        self.store = store
        self._executor = executor
        return self

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError(f"store {self.store.path} is closed")
        # Shielded: cancelling the caller must not cancel a call still queued for the thread, or a writer
        # stopped on shutdown would lose the batch it had already taken off its queue. Queued calls run in
        # order, so such a write still lands before the final flush and before close.
        call = self._executor.submit(functools.partial(fn, *args))
        return await asyncio.shield(asyncio.wrap_future(call))

    async def add_readings(self, readings: Sequence[Reading]) -> None:
        await self._run(self.store.add_readings, list(readings))

    async def add_event(
        self,
        ts: float,
        kind: str,
        severity: str,
        source: str,
        text: str,
        data: dict[str, Any] | None = None,
        stream: str = "events",
    ) -> None:
        await self._run(self.store.add_event, ts, kind, severity, source, text, data, stream)

    async def control_record_op(
        self,
        ts: float,
        device: str,
        function: str,
        action: str,
        direction: int,
        costs: dict[str, int],
        decision_id: str,
        keep_s: float,
    ) -> int:
        return await self._run(
            self.store.control_record_op, ts, device, function, action, direction, costs, decision_id, keep_s
        )

    async def control_ops(self, since: float, device: str | None = None) -> list[ControlOp]:
        return await self._run(self.store.control_ops, since, device)

    async def control_set_flag(self, flag: ControlFlag, event: FlagEvent | None = None) -> None:
        await self._run(self.store.control_set_flag, flag, event)

    async def control_clear_flag(self, kind: str, function: str, device: str, event: FlagEvent | None = None) -> bool:
        return await self._run(self.store.control_clear_flag, kind, function, device, event)

    async def control_flags(self, kind: str | None = None) -> list[ControlFlag]:
        return await self._run(self.store.control_flags, kind)

    async def add_intervals(self, items: Sequence[dict[str, Any]], states: dict[str, dict[str, Any]]) -> None:
        await self._run(self.store.add_intervals, list(items), dict(states))

    async def energy_reads(self, since_ts: float, after_id: int = 0, limit: int = 20_000) -> list[tuple[Any, ...]]:
        return await self._run(self.store.energy_reads, since_ts, after_id, limit)

    async def metering_states(self) -> dict[str, dict[str, Any]]:
        return await self._run(self.store.metering_states)

    @property
    def commands(self) -> _AsyncCommands:
        """The command state (agent/store/commandstate.py) on the store's thread: ``await store.commands.take(...)``."""
        return _AsyncCommands(self)

    async def seal(self, force: bool = False) -> int:
        return await self._run(self.store.seal, force)

    async def pending(self, limit: int, exclude: Collection[str] = (), *, billing: bool = False) -> list[OutboxMessage]:
        return await self._run(functools.partial(self.store.pending, limit, tuple(exclude), billing=billing))

    async def ack(self, msg_ids: Iterable[str]) -> int:
        return await self._run(self.store.ack, list(msg_ids))

    async def stats(self) -> StoreStats:
        return await self._run(self.store.stats)

    async def enforce_limit(self) -> list[dict[str, Any]]:
        return await self._run(self.store.enforce_limit)

    async def aclose(self) -> None:
        """Close the store in its thread (after every call already queued), then stop the thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self.store.close)
        finally:
            executor.shutdown(wait=False)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _AsyncCommands:
    """Each method of :class:`~agent.store.commandstate.CommandState`, awaited on the store's one thread."""

    def __init__(self, store: AsyncStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._store.store.commands, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._store._run(functools.partial(method, *args, **kwargs))

        return call
