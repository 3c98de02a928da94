"""Power quality in its own process: the agent's ``[[waveforms]]`` streams measured by a child it supervises.

Why a process and not a thread of the agent: the PQ chain needs numpy and scipy, whose import alone costs
about 65 MB of resident memory and whose filters run for seconds of CPU per minute of a 12.8 kHz stream.
In its own process that memory is paid only by sites that measure waveforms, the agent that polls, stores and
uplinks stays small (its target is < 60 MB on a Pi: benchmarks/memory.py), the DSP runs on another core instead of
sharing the agent's GIL, and a fault in it cannot stop acquisition: the agent restarts the child with the
supervisor's backoff.

The wire between the two is one JSON object per line (both ends are this same installed version):

- agent -> child (stdin): one line ``{"version": 1, "streams": [<WaveformStreamConfig as a dict>, ...]}``,
  then nothing; the child stops when its stdin closes (the agent stopped or died) or on SIGTERM.
- child -> agent (stdout): ``{"readings": [[point, ts, value, unit, quality], ...]}``,
  ``{"event": {"ts", "kind", "severity", "source", "text", "data"}}`` and once a second
  ``{"status": {<stream>: {...}}}`` and ``{"worker": {"readings_dropped": n}}``. The child logs on stderr,
  which it shares with the agent (the agent does not pipe it), in the same format at the agent's level
  (``--log-level``): its lines sit in the agent's log on ``gridedge.pq.worker`` and ``gridedge.pq``.

The agent checks every line before it takes it: a line that is not one of these messages is logged and
counted (``bad_lines``); within a readings line each reading is checked on its own (a point, a finite
timestamp, a finite number or null, a known quality) and one that fails is logged and counted
(``readings_refused``) while the others are kept. Nothing unchecked is stored. A child that says nothing
for ``silent_after_s`` (it reports its status every second) is killed and restarted; on a stop it gets
SIGTERM and ``STOP_GRACE_S`` to send its last events, then SIGKILL. The child runs in its own session, so
a Ctrl-C meant for the agent reaches the agent alone. Readings go through the agent's
sink (``AgentService._take``) like any other; events into the store through the agent's event spool
(:class:`~agent.events.EventSpool`), kept in order and retried while the store fails.

What a restart loses: the child's measurement windows (they restart, as after a stream gap) and the rolling
compliance week, which lives in the child's memory (docs/pq-service.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from agent.events import EventSpool, EventStore, SpoolStats
from agent.points import Event, Quality, Reading
from agent.pq.config import WaveformStreamConfig
from agent.store import StoreError
from protocols.eventlog import EventLog, setup_logging

log = EventLog("pq.worker")

WIRE_VERSION = 1
STATUS_INTERVAL_S = 1.0
# SIGTERM -> the child sends its last events and exits; then SIGKILL. Well inside the supervisor's stop wait
# (Supervisor.stop, 10 s): a grace as long as that wait would leave the worker running while the writer stops
# and the store closes.
STOP_GRACE_S = 5.0
SILENT_AFTER_S = 30.0  # the child reports its status every STATUS_INTERVAL_S; this long without a line: hung
LINE_LIMIT = 8 * 1024 * 1024  # one event's data window is at most 64 kB of JSON; a reading batch far less
MAX_UNSENT_BYTES = 4 * 1024 * 1024  # the child's readings waiting in its pipe; past this they are dropped (counted)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

Sink = Callable[[list[Reading]], None]


class PqWorkerError(Exception):
    """The PQ child stopped or said something the agent cannot take (names what)."""


# ---- the configuration on the wire ----------------------------------------------------------------------------


def stream_to_wire(cfg: WaveformStreamConfig) -> dict[str, Any]:
    return asdict(cfg)


def stream_from_wire(data: dict[str, Any]) -> WaveformStreamConfig:
    """Rebuild a stream's configuration from :func:`stream_to_wire`; a field missing or unknown raises."""
    from agent.pq.events import EventConfig

    known = {f.name for f in fields(WaveformStreamConfig)}
    if not isinstance(data, dict) or set(data) - known:
        raise PqWorkerError(
            f"stream configuration keys {sorted(data) if isinstance(data, dict) else data!r}: allowed {sorted(known)}"
        )
    try:
        return WaveformStreamConfig(**{**data, "events": EventConfig(**data["events"]),
                                       "channels": tuple(data["channels"]), "compliance": tuple(data["compliance"])})  # fmt: skip
    except (KeyError, TypeError, ValueError) as err:
        raise PqWorkerError(f"stream configuration {data!r}: {err}") from err


# ---- what the child says, checked by the agent ----------------------------------------------------------------

QUALITIES = {q.value: q for q in Quality}


def _finite_number(x: Any) -> bool:
    """An int or float that is a number (json.loads takes NaN and Infinity; a bool is not a measurement)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def reading_from_wire(item: Any) -> Reading:
    """One ``[point, ts, value, unit, quality]``; anything else raises :class:`PqWorkerError`."""
    if not (isinstance(item, list) and len(item) == 5):
        raise PqWorkerError(f"reading {item!r}: allowed [point, ts, value, unit, quality]")
    point, ts, value, unit, quality = item
    if not (isinstance(point, str) and point and isinstance(unit, str)):
        raise PqWorkerError(f"reading {item!r}: point must be a non-empty string and unit a string")
    if not _finite_number(ts):
        raise PqWorkerError(f"reading {item!r}: ts must be a finite number of seconds (UTC)")
    if value is not None and not _finite_number(value):  # the store refuses NaN and infinities
        raise PqWorkerError(f"reading {item!r}: value must be a finite number or null")
    if quality not in QUALITIES:
        raise PqWorkerError(f"reading {item!r}: quality must be one of {sorted(QUALITIES)}")
    return Reading(point, float(ts), value, unit, QUALITIES[quality])


def event_from_wire(item: Any) -> Event:
    keys = {f.name for f in fields(Event)}
    if not (isinstance(item, dict) and set(item) == keys):
        raise PqWorkerError(f"event {item!r}: allowed an object with exactly {sorted(keys)}")
    ts = item["ts"]
    if not _finite_number(ts):
        raise PqWorkerError(f"event ts {ts!r}: must be a finite number")
    if not all(isinstance(item[k], str) for k in ("kind", "severity", "source", "text")):
        raise PqWorkerError(f"event {item!r}: kind, severity, source and text must be strings")
    if item["data"] is not None and not isinstance(item["data"], dict):
        raise PqWorkerError(f"event data {item['data']!r}: must be an object or null")
    return Event(float(ts), item["kind"], item["severity"], item["source"], item["text"], item["data"])


# ---- the agent's side -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class PqWorkerStats(SpoolStats):  # events_stored, events_refused, events_dropped: counted by the worker's spool
    starts: int = 0
    exits: int = 0
    last_exit_code: int | None = None
    readings: int = 0
    readings_refused: int = 0  # not a reading (not finite, a bad quality...): logged, the rest of its line kept
    events: int = 0
    bad_lines: int = 0


class PqWorker:
    """Runs the PQ child and takes what it measures; :meth:`run` is one supervisor task of the agent.

    ``run`` returns only by cancellation; when the child exits it raises :class:`PqWorkerError`, so the
    supervisor restarts it after its backoff.
    """

    def __init__(self, streams: Sequence[WaveformStreamConfig], sink: Sink, store: EventStore, *,
                 argv: Sequence[str] | None = None, stop_grace_s: float = STOP_GRACE_S,
                 silent_after_s: float = SILENT_AFTER_S) -> None:  # fmt: skip
        self.streams = tuple(streams)
        self.sink = sink
        self.store = store
        if argv is None:  # the child logs at the agent's level (the first standard one at or above it)
            level = next(
                (n for n in LOG_LEVELS if logging.getLevelName(n) >= log.logger.getEffectiveLevel()), "CRITICAL"
            )
            argv = [sys.executable, "-m", "agent.pq.worker", "--log-level", level]
        self.argv = list(argv)
        self.stop_grace_s = stop_grace_s
        self.silent_after_s = silent_after_s
        self.stats = PqWorkerStats()
        self.pid: int | None = None
        self._status: dict[str, Any] = {}
        self._child: dict[str, int] = {}  # the child's own counters (readings it dropped, the agent not reading)
        # Written by the reader as each event comes, by the spool's retry task while the store fails, and at the
        # stop; the spool lets one write at a time, shielded (AsyncStore finishes a write whose caller was
        # cancelled, so the event leaves the spool all the same).
        self.spool = EventSpool(store, name="pq", source_key="stream", logger=log, stats=self.stats)

    def status(self) -> dict[str, Any]:
        """Per stream, as the child last reported it (the shape ``PqMonitoring.status`` had in process)."""
        return dict(self._status)

    def worker_status(self) -> dict[str, Any]:
        return {"pid": self.pid, **asdict(self.stats), "events_waiting": self.spool.waiting, "child": dict(self._child)}

    async def run(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=LINE_LIMIT,
            # its own session: a Ctrl-C at the terminal (or a signal to the agent's process group) reaches the agent
            # alone, which stops the child in order and takes its last events; the child still ends with the agent
            # (its stdin closes)
            start_new_session=True,
        )  # fmt: skip
        self.pid = proc.pid
        self.stats.starts += 1
        assert proc.stdin is not None and proc.stdout is not None
        log.info("pq_worker_started", pid=proc.pid, streams=",".join(s.name for s in self.streams))
        hello = {"version": WIRE_VERSION, "streams": [stream_to_wire(s) for s in self.streams]}
        why = "exited"
        try:
            proc.stdin.write(json.dumps(hello).encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()
            async with self.spool.retrying():
                if not await self._read(proc.stdout, self.silent_after_s):
                    why = f"said nothing for {self.silent_after_s:g} s (hung) and was killed"
                    log.error("pq_worker_silent", pid=proc.pid, silent_s=self.silent_after_s, action="kill")
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await proc.wait()
        except asyncio.CancelledError:
            await self._stop(proc)
            raise
        finally:
            if proc.returncode is None:  # hung, or an error of ours: never leave the child behind
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            self.pid = None
            # what the child last said of its streams is no longer true: none is connected now
            self._status = {name: {**st, "connected": False} if isinstance(st, dict) else st
                            for name, st in self._status.items()}  # fmt: skip
        code = proc.returncode
        self.stats.exits += 1
        self.stats.last_exit_code = code
        raise PqWorkerError(f"the PQ worker (pid {proc.pid}) {why} with code {code}")

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM; take what the child still says (its last events) until it exits; SIGKILL after the grace."""
        assert proc.stdout is not None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.stop_grace_s):
                await self._read(proc.stdout)
                await proc.wait()
        except TimeoutError:
            log.warning("pq_worker_kill", pid=proc.pid, reason="no_exit_after_sigterm", grace_s=self.stop_grace_s)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            with contextlib.suppress(TimeoutError):  # what it said before the kill is still in the pipe
                async with asyncio.timeout(1.0):
                    await self._read(proc.stdout)
        await self.spool.close()

    async def _read(self, stdout: asyncio.StreamReader, silent_after_s: float | None = None) -> bool:
        """Take lines until EOF (True) or until ``silent_after_s`` pass without one (False)."""
        while True:
            try:
                async with asyncio.timeout(silent_after_s):
                    line = await self._next_line(stdout)
            except TimeoutError:
                return False
            if line is None:
                self._bad(b"", f"line over the limit of {LINE_LIMIT} bytes, skipped whole")
                continue
            if not line:
                return True
            await self._take_line(line)

    @staticmethod
    async def _next_line(stdout: asyncio.StreamReader) -> bytes | None:
        """The next line (b"" at EOF), or None for one over the reader's limit, skipped to its newline.

        Not ``readline``: past the limit it clears its buffer and the rest of that line comes back as the next
        one (CPython 3.11 ``StreamReader.readline``). ``readuntil`` keeps the buffer, so the line is dropped whole.
        """
        over = False
        while True:
            try:
                line = await stdout.readuntil(b"\n")
            except asyncio.IncompleteReadError as err:  # EOF; a last line without its newline is still taken
                return None if over else err.partial
            except asyncio.LimitOverrunError as err:
                over = True
                await stdout.readexactly(err.consumed)  # bytes without the newline
                continue
            return None if over else line

    def _bad(self, line: bytes, why: str) -> None:
        self.stats.bad_lines += 1
        log.error("pq_worker_bad_line", error=why, line=line[:200].decode("utf-8", "backslashreplace"))

    async def _take_line(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            self._bad(line, f"not JSON: {err}")
            return
        if not isinstance(msg, dict) or len(msg) != 1:
            self._bad(line, "allowed one of {readings: [...]}, {event: {...}}, {status: {...}}")
            return
        ((kind, body),) = msg.items()
        try:
            if kind == "readings":
                if not isinstance(body, list):
                    raise PqWorkerError("readings must be a list")
                self._take_readings(body)
            elif kind == "event":
                self.spool.put(event_from_wire(body))
                self.stats.events += 1
                await self.spool.flush()
            elif kind == "status":
                if not isinstance(body, dict):
                    raise PqWorkerError("status must be an object")
                self._status = body
            elif kind == "worker":  # the child's own counters
                if not (isinstance(body, dict) and all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in body.values())):  # fmt: skip
                    raise PqWorkerError("worker must be an object of counters")
                self._child = body
            else:
                raise PqWorkerError(f"unknown message {kind!r}")
        except PqWorkerError as err:
            self._bad(line, str(err))

    def _take_readings(self, body: list[Any]) -> None:
        """Each reading checked alone: one the agent cannot take is logged and counted, the others go on."""
        readings = []
        for item in body:
            try:
                readings.append(reading_from_wire(item))
            except PqWorkerError as err:
                self.stats.readings_refused += 1
                log.error("pq_reading_refused", error=err)
        self.stats.readings += len(readings)
        if readings:
            self.sink(readings)


# ---- the child's side -----------------------------------------------------------------------------------------


class _PipeProtocol(asyncio.streams.FlowControlMixin):
    """The child's stdout protocol; ``closed`` is done once the transport has written its buffer (or failed)."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)


class _PipeOut:
    """The child's outlets: the reading sink and an event store that write lines to the agent."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.readings_dropped = 0  # the agent did not read them in time (MAX_UNSENT_BYTES)

    def send(self, msg: dict[str, Any]) -> None:
        self.writer.write(json.dumps(msg, separators=(",", ":"), default=str).encode() + b"\n")

    def __call__(self, readings: list[Reading]) -> None:
        # Readings are not awaited (the stream's sink is synchronous): if the agent stops reading, they would pile
        # up in the pipe's buffer without bound. Past MAX_UNSENT_BYTES they are dropped here, counted and logged;
        # events wait for room instead (add_event), as they would wait for the store in the agent's process.
        if self.writer.transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            self.readings_dropped += len(readings)
            if self.readings_dropped == len(readings) or self.readings_dropped % 10_000 < len(readings):
                log.error("pq_readings_dropped", count=len(readings), total=self.readings_dropped,
                          reason="agent_not_reading",
                          unsent_bytes=self.writer.transport.get_write_buffer_size())  # fmt: skip
            return
        self.send({"readings": [[r.point, r.ts, r.value, r.unit, str(r.quality)] for r in readings]})

    async def add_event(self, ts: float, kind: str, severity: str, source: str, text: str,
                        data: dict[str, Any] | None = None) -> None:  # fmt: skip
        # Room first, then the write with no await after it: a cancel (SIGTERM) comes either before the event is
        # written (the stream keeps it and sends it on its way out) or not at all, never after a write it would
        # repeat (the agent would store such an event twice).
        try:
            await self.writer.drain()
        except ConnectionError as err:  # the agent is gone: the stream keeps the event and the child stops
            raise StoreError(f"the agent's pipe is closed: {err}") from err
        self.send({"event": {"ts": ts, "kind": kind, "severity": severity, "source": source, "text": text,
                             "data": data}})  # fmt: skip


async def child_main() -> int:
    from agent.pq.service import PqMonitoring  # numpy and scipy: only in this process

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(_PipeProtocol, sys.stdout.buffer)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)

    hello_line = await reader.readline()
    try:
        hello = json.loads(hello_line)
        if not isinstance(hello, dict) or hello.get("version") != WIRE_VERSION:
            raise PqWorkerError(f"hello {hello_line[:200]!r}: allowed version {WIRE_VERSION}")
        streams = [stream_from_wire(s) for s in hello["streams"]]
    except (json.JSONDecodeError, KeyError, TypeError, PqWorkerError) as err:
        log.error("pq_worker_bad_hello", error=err)
        return 2

    out = _PipeOut(writer)
    monitoring = PqMonitoring(streams, out, out)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    async def watch_stdin() -> None:
        while await reader.read(4096):  # nothing more is sent; EOF means the agent is gone
            pass
        log.info("pq_worker_parent_gone")
        stop.set()

    async def report() -> None:
        while True:
            out.send({"status": monitoring.status()})
            out.send({"worker": {"readings_dropped": out.readings_dropped}})
            await asyncio.sleep(STATUS_INTERVAL_S)

    tasks = [asyncio.create_task(s.run(), name=f"pq:{n}") for n, s in monitoring.streams.items()]
    tasks += [asyncio.create_task(watch_stdin()), asyncio.create_task(report())]
    log.info("pq_worker_running", pid=os.getpid(), streams=",".join(monitoring.streams))
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for t in done:
        if t is not waiter and not t.cancelled() and t.exception() is not None:
            log.error("pq_worker_task_failed", task=t.get_name(), error=repr(t.exception()))
            code = 1
    for t in [waiter, *tasks]:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)  # each stream stores its last events on the way out
    out.send({"status": monitoring.status()})
    log.info("pq_worker_stopping", pid=os.getpid(), unsent_bytes=transport.get_write_buffer_size())
    # Everything said must reach the agent before the loop closes (it drops a transport's buffer), or an agent slow
    # to read at its stop (its store thread busy) would lose the last events. The agent kills a child stuck here.
    writer.close()
    await protocol.closed
    return code


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.pq.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    return asyncio.run(child_main())


if __name__ == "__main__":
    sys.exit(main())
