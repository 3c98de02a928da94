"""Async tests without a pytest asyncio plugin: each test runs its own event loop, with a timeout."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

T = TypeVar("T")


def arun(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run ``coro`` in a fresh event loop and return its value; a hang fails after ``timeout`` s.

    A fresh loop per test means nothing (tasks, transports, paho sockets) leaks into the next test.
    """

    async def guarded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(guarded())


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Decorate an ``async def test_...``: pytest calls it (fixtures and all) and :func:`arun` runs it."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> None:
        arun(fn(*args, **kwargs), timeout=60.0)

    return wrapper


async def until(cond: Callable[[], bool | Awaitable[bool]], timeout: float = 15.0, interval: float = 0.02) -> None:
    """Poll ``cond`` (sync or async) until it holds; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        ok = cond()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running_tasks(*coros: Coroutine[Any, Any, None]) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run ``coros`` as tasks for the body of the block, then cancel them and wait for them to end."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with suppress(asyncio.CancelledError):
                await t
