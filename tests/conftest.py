"""Real parts for the tests: a Mosquitto of our own on a free loopback port, socat pty pairs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


# ---- async helpers: no pytest asyncio plugin is installed, so each test runs its own event loop ----------


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


@dataclass
class Broker:
    """A Mosquitto that the test owns: it can be killed and started again on the same port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            # central and the tests must never lose a QoS 1 message to the broker's queue bound
            "max_queued_messages 100000\n"
            "max_inflight_messages 100\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n"
        )
        with open(self.workdir / "mosquitto.log", "ab") as log:  # Popen keeps its own copy of the descriptor
            self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log)
        wait_port(self.port)

    def kill(self) -> None:
        """SIGKILL, as a crashed broker or a pulled cable would look to the clients."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: run scripts/install-system-packages.sh (make test does)")
    b = Broker(workdir=tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@dataclass
class PtyPair:
    """Two linked pseudo-terminals, like the two ends of an RS-485 cable."""

    a: str
    b: str
    proc: subprocess.Popen


def open_pty_pair(workdir: Path, name: str = "bus") -> PtyPair:
    a, b = workdir / f"{name}-a", workdir / f"{name}-b"
    proc = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while not (a.exists() and b.exists()):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("socat did not create the pty pair")
        time.sleep(0.01)
    return PtyPair(str(a), str(b), proc)


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[PtyPair]:
    if shutil.which("socat") is None:
        pytest.fail("socat is not installed: run scripts/install-system-packages.sh (make test does)")
    pair = open_pty_pair(tmp_path)
    try:
        yield pair
    finally:
        pair.proc.terminate()
        pair.proc.wait(5)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


os.environ.setdefault("PYTHONUNBUFFERED", "1")


def query_db(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows from a SQLite file another process writes; [] while the file or the table is not there yet."""
    if not db.exists():
        return []
    with contextlib.suppress(sqlite3.OperationalError), contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return conn.execute(sql, args).fetchall()
    return []


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.1) -> Any:
    """Poll a blocking predicate until it returns something truthy (and return it); fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
