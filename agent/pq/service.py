"""Continuous power quality from wave streams: one :class:`PqStream` per ``[[waveforms]]`` entry.

A stream is read with :class:`protocols.wavestream.WaveStreamClient`; its voltage channels go through a
:class:`~agent.pq.processor.PqProcessor` (pure, no I/O: the IEC 61000-4-30 Class A chain and the
IEC 61000-4-15 flickermeters, with the stream's compliance week). Its readings (3-s, 10-s, 10-min and 2-h
values, flagged ones with quality ``flagged``) go through the agent's sink (``AgentService._take``), like
the PMU streams; its events (``pq_dip``, ``pq_swell``, ``pq_interruption``, ``pq_flicker``,
``pq_compliance``) to the store through the event spool (:class:`~agent.events.EventSpool`: in order,
retried while the store fails). docs/pq-service.md lists them all.

Processing runs in a worker thread, a batch of about :data:`BATCH_S` of signal at a time, so the event
loop never waits on numpy. A stream that drops (connection refused or closed, END, silence, a gap, a CRC
or framing error) is logged and counted; a gap or a reconnection restarts the measurement windows; the
client reconnects with an exponential backoff. Data stamped at or before the last sample measured is
skipped (a source that restarts its timeline, such as the bench at ``speed = inf``, is not measured twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from agent.events import EventSpool, EventStore, SpoolStats
from agent.points import Reading
from agent.pq.config import WaveformStreamConfig
from agent.pq.flicker import FlickerError
from agent.pq.harmonics import PqInputError
from agent.pq.processor import MIN_RATE_HZ, ComplianceTracker, PqOutput, PqProcessor, PqStreamError
from protocols import wavestream as ws
from protocols.eventlog import EventLog

log = EventLog("pq")

BATCH_S = 0.5  # signal handed to the worker thread at once
STALE_AFTER_S = 10.0  # no block for this long on an open connection: drop it and reconnect
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0

Sink = Callable[[list[Reading]], None]


# ---- the stream: connection, batching, reconnection -------------------------------------------------------


@dataclass(slots=True)
class PqStreamStats(SpoolStats):  # events_stored, events_refused, events_dropped: counted by the stream's spool
    connected: bool = False
    connects: int = 0
    reconnects: int = 0  # connection attempts after the first
    connect_failures: int = 0
    disconnects: int = 0  # closed by the peer, END, stale, or an error while connected
    blocks: int = 0
    samples: int = 0  # measured
    replayed_samples: int = 0  # skipped: stamped at or before what was already measured
    gaps: int = 0
    missing_samples: int = 0
    bad_frames: int = 0  # CRC, size, malformed
    garbage_bytes: int = 0
    resets: int = 0  # measurement windows restarted (gap, non-finite samples, reconnection)
    nonfinite_blocks: int = 0  # blocks holding NaN or inf samples: dropped like a gap
    nonfinite_samples: int = 0
    config_errors: int = 0  # the stream does not fit the configuration (channels, rate)
    readings: int = 0
    events: int = 0
    cpu_s: float = 0.0  # worker-thread CPU time spent measuring
    signal_s: float = 0.0  # seconds of signal measured


class PqStream:
    """One ``[[waveforms]]`` stream: :meth:`run` until cancelled (a supervisor task of the agent)."""

    def __init__(self, cfg: WaveformStreamConfig, sink: Sink, store: EventStore, *,
                 client_factory: Callable[[str, int], ws.WaveStreamClient] | None = None,
                 backoff_min_s: float = BACKOFF_MIN_S, backoff_max_s: float = BACKOFF_MAX_S,
                 stale_after_s: float = STALE_AFTER_S, batch_s: float = BATCH_S,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:  # fmt: skip
        self.cfg = cfg
        self.name = cfg.name
        self.sink = sink
        self.store = store
        self.client_factory = client_factory or (lambda host, port: ws.WaveStreamClient(host, port))
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self.stale_after_s = stale_after_s
        self.batch_s = batch_s
        self.sleep = sleep
        self.stats = PqStreamStats()
        self.processor: PqProcessor | None = None
        self.measured_until: float | None = None  # UTC time just past the last sample measured
        self.compliance = ComplianceTracker(cfg)  # outlives the processors: a week of statistics
        self.last_error: str | None = None
        # in the PQ worker the "store" is the pipe to the agent, which logs each event it stores
        self.spool = EventSpool(store, name="pq", source_key="stream", logger=log, stats=self.stats,
                                stored_level=logging.DEBUG)  # fmt: skip

    def status(self) -> dict[str, Any]:
        return {**asdict(self.stats), "cpu_s": round(self.stats.cpu_s, 3), "signal_s": round(self.stats.signal_s, 3),
                "events_waiting": self.spool.waiting, "last_error": self.last_error,
                "compliance": self.compliance.status()}  # fmt: skip

    async def run(self) -> None:
        """Read, measure and reconnect until cancelled; on cancel, the events waiting get a final flush."""
        try:
            async with self.spool.retrying():
                await self._run_sessions()
        finally:
            await self.spool.close()

    async def _run_sessions(self) -> None:
        backoff = self.backoff_min_s
        first = True
        while True:
            if not first:
                self.stats.reconnects += 1
            first = False
            measured_before = self.stats.samples
            try:
                await self._session()
            except (OSError, TimeoutError) as err:
                self.stats.connect_failures += int(not self.stats.connected)
                self._down(f"{type(err).__name__}: {err}")
            except ws.WaveStreamError as err:  # no HEADER before the connection closed
                self._down(f"{type(err).__name__}: {err}")
            except PqStreamError as err:
                self.stats.config_errors += 1
                self._down(f"stream does not fit the configuration: {err}", level=logging.ERROR)
            finally:
                self.stats.connected = False
            if self.stats.samples > measured_before:
                backoff = self.backoff_min_s
            log.info("pq_stream_retry", stream=self.name, retry_in_s=round(backoff, 1))
            await self.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)

    def _down(self, why: str, level: int = logging.WARNING) -> None:
        self.last_error = why
        log.log(level, "pq_stream_down", stream=self.name, host=self.cfg.host, port=self.cfg.port, error=why)

    def _reset(self, why: str) -> None:
        if self.processor is not None:
            self.stats.resets += 1
            log.info("pq_windows_reset", stream=self.name, reason=why)
        self.processor = None

    async def _session(self) -> None:
        client = self.client_factory(self.cfg.host, self.cfg.port)
        try:
            header = await client.connect()
            self.stats.connected = True
            self.stats.connects += 1
            idx = self._channel_index(header)
            log.info("pq_stream_connected", stream=self.name, host=self.cfg.host, port=self.cfg.port,
                     rate_hz=header.rate_hz, nominal_hz=header.nominal_hz,
                     channels=",".join(self.cfg.channels))  # fmt: skip
            if header.nominal_hz != self.cfg.nominal_hz:
                log.warning("pq_nominal_mismatch", stream=self.name, header_hz=header.nominal_hz,
                            configured_hz=self.cfg.nominal_hz, measured_as="configured")  # fmt: skip
            self._reset("reconnected")
            await self._read(client, header, idx)
        finally:
            with contextlib.suppress(OSError):
                await client.close()

    def _channel_index(self, header: ws.Header) -> list[int]:
        missing = [ch for ch in self.cfg.channels if ch not in header.channels]
        if missing:
            raise PqStreamError(f"channels {missing} not in the stream's {list(header.channels)}")
        idx = [header.channels.index(ch) for ch in self.cfg.channels]
        units = {header.units[i] for i in idx}
        if units != {"V"}:
            raise PqStreamError(f"channels {list(self.cfg.channels)} are in {sorted(units)}: allowed volts (V)")
        if header.rate_hz < MIN_RATE_HZ:
            raise PqStreamError(f"rate_hz = {header.rate_hz:g}: at least {MIN_RATE_HZ:g} Hz")
        return idx

    async def _read(self, client: ws.WaveStreamClient, header: ws.Header, idx: list[int]) -> None:
        batch: list[np.ndarray] = []
        batch_start: float | None = None
        batch_n = 0
        limit = max(1, round(self.batch_s * header.rate_hz))
        events = client.events()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.stale_after_s):
                        item = await anext(events)
                except StopAsyncIteration:
                    why = "stream ended (END)" if client.end is not None else "closed by the peer"
                    break
                except TimeoutError:
                    why = f"no data for {self.stale_after_s:g} s"
                    break
                if isinstance(item, ws.GapError):
                    self.stats.gaps += 1
                    self.stats.missing_samples += max(0, item.missing_samples)
                    log.warning("pq_stream_gap", stream=self.name, missing_samples=item.missing_samples)
                    await self._measure(batch, batch_start, header.rate_hz)
                    batch, batch_start, batch_n = [], None, 0
                    self._reset("gap")
                    continue
                if isinstance(item, ws.WaveStreamError):
                    if isinstance(item, ws.SyncError):
                        self.stats.garbage_bytes += item.skipped
                    else:
                        self.stats.bad_frames += 1
                    log.warning("pq_stream_bad_frame", stream=self.name, error=type(item).__name__)
                    continue
                self.stats.blocks += 1
                data, start = self._fresh(item, idx)
                if data is None:
                    continue
                bad = data.size - int(np.count_nonzero(np.isfinite(data)))
                if bad:
                    # A recorder glitch (NaN, inf): the chain refuses such samples and its filters would keep them,
                    # so the block is lost like a gap; skipped on a replay, it is not refused again and again.
                    self.stats.nonfinite_blocks += 1
                    self.stats.nonfinite_samples += bad
                    log.warning("pq_stream_nonfinite", stream=self.name, samples=bad, start_ts=f"{start:.6f}")
                    await self._measure(batch, batch_start, header.rate_hz)
                    batch, batch_start, batch_n = [], None, 0
                    self._reset("non-finite samples")
                    self.measured_until = start + data.shape[1] / item.rate_hz
                    continue
                if batch_start is None:
                    batch_start = start
                batch.append(data)
                batch_n += data.shape[1]
                if batch_n >= limit:
                    await self._measure(batch, batch_start, header.rate_hz)
                    batch, batch_start, batch_n = [], None, 0
            await self._measure(batch, batch_start, header.rate_hz)
            self.stats.disconnects += 1
            self._down(why, level=logging.INFO if client.end is not None else logging.WARNING)
        finally:
            with contextlib.suppress(RuntimeError, ws.WaveStreamError, OSError):
                await events.aclose()

    def _fresh(self, block: ws.Block, idx: list[int]) -> tuple[np.ndarray | None, float]:
        """The block's configured channels, without the samples already measured (a replayed timeline)."""
        rate = block.rate_hz
        start = block.start_time
        n = block.n_samples
        skip = 0
        if self.measured_until is not None and start < self.measured_until - 0.5 / rate:
            skip = min(n, math.ceil((self.measured_until - start) * rate - 0.5))
            self.stats.replayed_samples += skip
            if skip >= n:
                return None, start
        return block.data[idx, skip:], start + skip / rate

    async def _measure(self, batch: list[np.ndarray], start: float | None, rate_hz: float) -> None:
        if not batch or start is None:
            return
        x = np.concatenate(batch, axis=1).astype(np.float64)
        if self.processor is None:
            self.processor = PqProcessor(self.cfg, rate_hz, start, self.compliance)
        try:
            out, cpu = await asyncio.to_thread(self._push_timed, self.processor, x)
        except (PqInputError, FlickerError) as err:  # a signal the chain refuses: restart its windows, never crash
            self.processor = None
            raise PqStreamError(f"measurement failed: {err}") from err
        n = x.shape[1]
        self.stats.cpu_s += cpu
        self.stats.samples += n
        self.stats.signal_s += n / rate_hz
        self.measured_until = start + n / rate_hz
        if out.readings:
            self.stats.readings += len(out.readings)
            self.sink(out.readings)
        for ev in out.events:
            self.stats.events += 1
            log.warning("pq_event", kind=ev.kind, stream=ev.source, text=ev.text)
            self.spool.put(ev)
        if out.events:
            await self.spool.flush()

    @staticmethod
    def _push_timed(processor: PqProcessor, x: np.ndarray) -> tuple[PqOutput, float]:
        t0 = time.thread_time()
        out = processor.push(x)
        return out, time.thread_time() - t0


class PqMonitoring:
    """Every configured waveform stream; the agent adds each :meth:`PqStream.run` to its supervisor."""

    def __init__(self, streams: Sequence[WaveformStreamConfig], sink: Sink, store: EventStore, **kw: Any) -> None:
        self.streams = {cfg.name: PqStream(cfg, sink, store, **kw) for cfg in streams}

    def status(self) -> dict[str, Any]:
        return {name: s.status() for name, s in self.streams.items()}


__all__ = ["EventStore", "PqMonitoring", "PqStream", "PqStreamStats"]
