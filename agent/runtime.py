"""The asyncio supervisor: owns every long-running task, restarts a failed one with backoff, shuts down
cleanly, and tells systemd it is ready and alive (sd_notify READY / WATCHDOG / STOPPING / STATUS).

sd_notify is a datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by ``$NOTIFY_SOCKET``
(sd_notify(3)); it is a dozen lines, so we write it rather than add a dependency for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from protocols.eventlog import EventLog

log = EventLog("runtime")


class SystemdNotifier:
    """Sends sd_notify messages when run under systemd (Type=notify); does nothing otherwise."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = env.get("NOTIFY_SOCKET") or None
        if self._address and self._address.startswith("@"):  # abstract namespace socket
            self._address = "\0" + self._address[1:]
        usec = env.get("WATCHDOG_USEC", "")
        # systemd.service(5) WatchdogSec=: ping at least every half interval.
        self.watchdog_interval_s: float | None = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> bool:
        if not self._address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # Never block the event loop: if systemd (or whoever listens) is not reading, a full
                # queue drops this message instead; the next watchdog ping is a moment away.
                self._sock.setblocking(False)
            self._sock.sendto(message.encode(), self._address)
            return True
        except BlockingIOError:
            log.warning("sd_notify_dropped", reason="listener_queue_full", message=message.split("=", 1)[0])
            return False
        except OSError as err:
            log.warning("sd_notify_failed", error=err)
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@dataclass
class TaskHealth:
    name: str
    state: str = "starting"  # starting | running | backoff | stopped
    restarts: int = 0
    last_error: str = ""
    started_at: float = 0.0


@dataclass
class _Spec:
    name: str
    factory: Callable[[], Awaitable[None]]
    health: TaskHealth
    task: asyncio.Task[None] | None = None
    stage: int = 0
    critical: bool = True


@dataclass
class Supervisor:
    """Runs named tasks; a task that raises is restarted after an exponential backoff with jitter.

    A task that returns normally is finished and not restarted. Tasks stop in reverse ``stage``
    order on shutdown, so producers (pollers, stage 2) stop before the writers that drain them
    (stage 1) and the store (stage 0) closes last.
    """

    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    healthy_after_s: float = 60.0  # a task that ran this long restarts from the minimum backoff again
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # the backoff's wait (injected by tests)
    _specs: list[_Spec] = field(default_factory=list)

    def add(self, name: str, factory: Callable[[], Awaitable[None]], stage: int = 1, *, critical: bool = True) -> None:
        """``critical=False``: a task whose failures are expected and reported (a child process that may die)
        and must not get the whole agent restarted by systemd's watchdog while it waits to retry."""
        self._specs.append(_Spec(name, factory, TaskHealth(name), stage=stage, critical=critical))

    def health(self) -> dict[str, TaskHealth]:
        return {s.name: s.health for s in self._specs}

    def healthy(self) -> bool:
        """Every critical task running or finished (the watchdog pings only then)."""
        return all(s.health.state in ("running", "stopped") for s in self._specs if s.critical)

    async def _keep(self, spec: _Spec) -> None:
        backoff = self.backoff_min_s
        while True:
            spec.health.state = "running"
            spec.health.started_at = self.clock()
            try:
                await spec.factory()
            except asyncio.CancelledError:
                spec.health.state = "stopped"
                raise
            except Exception as err:  # any failure of a task is contained here and the task restarted
                spec.health.restarts += 1
                spec.health.last_error = f"{type(err).__name__}: {err}"
                if self.clock() - spec.health.started_at >= self.healthy_after_s:
                    backoff = self.backoff_min_s
                delay = self.rng.uniform(backoff / 2, backoff)
                fields = {"task": spec.name, "restarts": spec.health.restarts, "retry_in_s": round(delay, 2),
                          "error": spec.health.last_error}  # fmt: skip
                if isinstance(err, OSError):  # the outside world failed (a socket, a disk): no traceback
                    log.error("task_failed", **fields)
                else:
                    log.exception("task_failed", **fields)
                spec.health.state = "backoff"
                await self.sleep(delay)
                backoff = min(backoff * 2, self.backoff_max_s)
            else:
                spec.health.state = "stopped"
                log.info("task_finished", task=spec.name)
                return

    def start(self) -> None:
        for spec in self._specs:
            if spec.task is None:
                spec.task = asyncio.create_task(self._keep(spec), name=spec.name)

    async def stop(self, timeout_s: float = 10.0, down_to_stage: int = 0) -> None:
        """Cancel the tasks stage by stage, highest stage first, waiting for each stage to finish.

        Stages below ``down_to_stage`` keep running (e.g. the uplink draining the outbox after the
        pollers have stopped); a later call stops them.
        """
        for stage in sorted({s.stage for s in self._specs if s.stage >= down_to_stage}, reverse=True):
            tasks = [s.task for s in self._specs if s.stage == stage and s.task is not None]
            for t in tasks:
                t.cancel()
            if tasks:
                done, pending = await asyncio.wait(tasks, timeout=timeout_s)
                for t in pending:
                    log.error("task_stuck_on_shutdown", task=t.get_name())
                for t in done:
                    with contextlib.suppress(asyncio.CancelledError):
                        exc = t.exception()
                        if exc is not None:
                            log.error("task_error_on_shutdown", task=t.get_name(), error=repr(exc))


async def watchdog(notifier: SystemdNotifier, supervisor: Supervisor, status: Callable[[], str]) -> None:
    """Pings systemd's watchdog while the event loop turns and every task is running or finished.

    A blocked loop or a task stuck in backoff stops the pings, so systemd restarts the agent.
    """
    interval = notifier.watchdog_interval_s or 5.0
    while True:
        if supervisor.healthy():
            notifier.notify("WATCHDOG=1")
        notifier.notify(f"STATUS={status()}")
        await asyncio.sleep(interval)
