"""The bench's live waveform stream: a TCP server sending a generated waveform as wave-stream frames.

The stream has one timeline that starts when the server starts: block j holds samples
``j * block .. (j + 1) * block - 1`` and carries seq j. A client that connects gets the HEADER, then the
blocks from the current point of the timeline on, each sent when its last sample is due
(``speed`` times faster than real time). With ``speed=math.inf`` there is no pacing and every client
starts at sample 0: TCP flow control is the only limit, nothing is lost.

Backpressure in real-time mode is a decision: a client more than ``max_lag_blocks`` behind (its socket
buffer full) skips ahead to the live point; the blocks skipped are never sent, counted in
``stats.blocks_skipped`` and logged, and the client sees a sequence gap. Fault hooks for tests: drop
blocks, corrupt their CRC, or put garbage on the wire, each at a given sequence number. Frames are built with protocols.wavestream,
the codec the agent reads with. Documented in docs/devices/sim-waveforms.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from protocols import wavestream as ws
from protocols.eventlog import EventLog
from sim_hw.waveforms.generator import CHANNELS, UNITS, WaveformDesc, _Plan, generate_samples

log = EventLog("sim.waveforms")


@dataclass
class StreamStats:
    clients: int = 0
    connections: int = 0
    blocks_sent: int = 0
    blocks_skipped: int = 0
    blocks_dropped: int = 0  # by the drop_blocks fault hook
    blocks_corrupted: int = 0


class WaveformStreamServer:
    """``async with WaveformStreamServer(desc, block_s=0.02) as srv: ... srv.port ...``."""

    def __init__(
        self,
        desc: WaveformDesc,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        block_s: float = 0.02,
        speed: float = 1.0,
        duration_s: float | None = None,
        stream: str = "bench",
        max_lag_blocks: int = 50,
        wall_clock: Callable[[], float] = time.time,
        scale: Callable[[float], tuple[float, float, float]] | None = None,
    ) -> None:
        if not block_s > 0:
            raise ValueError(f"block_s = {block_s}: expected > 0")
        if not speed > 0:
            raise ValueError(f"speed = {speed}: expected > 0 (math.inf: as fast as the client reads)")
        self.desc = desc
        self.host = host
        self.port = port
        self.block = max(1, round(block_s * desc.rate))
        self.speed = speed
        self.end_sample = None if duration_s is None else round(duration_s * desc.rate)
        self.stream = stream
        self.max_lag_blocks = max_lag_blocks
        self.wall_clock = wall_clock
        # scale(t) -> multipliers of va, vb, vc for the block starting at signal time t [s UTC] (the bench's
        # solved bus voltage in per unit): a fault on the feeder then shows in the waveform, to a block's length
        self.scale = scale
        self.stats = StreamStats()
        self._plan = _Plan(desc)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._t_start = 0.0  # loop time of sample 0
        self._t0 = desc.t0
        self._drop_seqs: set[int] = set()
        self._corrupt_seqs: set[int] = set()
        self._garbage: dict[int, bytes] = {}

    @property
    def header(self) -> ws.Header:
        return ws.Header(CHANNELS, UNITS, self.desc.rate, self._t0, self.desc.nominal_hz, self.stream)

    async def start(self) -> WaveformStreamServer:
        loop = asyncio.get_running_loop()
        self._t_start = loop.time()
        if self._t0 == 0.0:
            self._t0 = self.wall_clock()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("waveform_listening", host=self.host, port=self.port, rate_hz=self.desc.rate, block=self.block)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> WaveformStreamServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- fault hooks (by sequence number, so that a test knows which block is hit) ----
    def drop_blocks(self, seq: int, n: int = 1) -> None:
        """Do not send blocks ``seq .. seq + n - 1``: the client sees a gap."""
        self._drop_seqs.update(range(seq, seq + n))

    def corrupt_blocks(self, seq: int, n: int = 1) -> None:
        """Send blocks ``seq .. seq + n - 1`` with one payload byte flipped: their CRC fails."""
        self._corrupt_seqs.update(range(seq, seq + n))

    def inject(self, data: bytes, before_seq: int) -> None:
        """Send ``data`` (garbage) just before block ``before_seq``."""
        self._garbage[before_seq] = self._garbage.get(before_seq, b"") + data

    # ---- serving ----
    def _live_block(self, now: float) -> int:
        """Index of the block being filled at loop time ``now`` on the timeline."""
        if math.isinf(self.speed):
            return 0
        return int((now - self._t_start) * self.speed * self.desc.rate) // self.block

    def _due(self, j: int) -> float:
        """Loop time at which block j's last sample exists."""
        return self._t_start + (j + 1) * self.block / self.desc.rate / self.speed

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.stats.clients += 1
        self.stats.connections += 1
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "unknown"
        try:
            await self._stream_to(writer)
        except (ConnectionError, OSError) as err:
            log.info("waveform_client_gone", peer=peer, error=err)
        except asyncio.CancelledError:
            # stop() cancels the connection tasks; ending normally keeps asyncio's stream callback from
            # logging the cancellation as an error (it calls task.exception() on the handler task)
            log.debug("waveform_client_stopped", peer=peer)
        finally:
            self.stats.clients -= 1
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _stream_to(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        writer.write(ws.encode_header(self.header))
        await writer.drain()
        j = self._live_block(loop.time())
        while True:
            first = j * self.block
            if self.end_sample is not None and first >= self.end_sample:
                writer.write(ws.encode_end(j, self.end_sample))
                await writer.drain()
                return
            if not math.isinf(self.speed):
                now = loop.time()
                delay = self._due(j) - now
                if delay > 0:
                    await asyncio.sleep(delay)
                elif -delay > self.max_lag_blocks * self.block / self.desc.rate / self.speed:
                    live = self._live_block(now)
                    self.stats.blocks_skipped += live - j
                    log.warning("waveform_client_lags", skipped_blocks=live - j, from_seq=j)
                    j = live
                    continue
            n = self.block if self.end_sample is None else min(self.block, self.end_sample - first)
            data = generate_samples(self.desc, first, n, self._plan).data
            if self.scale is not None:
                data[:3] *= np.asarray(self.scale(self._t0 + first / self.desc.rate), dtype=float)[:, None]
            frame = ws.encode_block(j, first, data)
            seq, j = j, j + 1
            if seq in self._garbage:
                writer.write(self._garbage.pop(seq))
            if seq in self._drop_seqs:
                self._drop_seqs.discard(seq)
                self.stats.blocks_dropped += 1
                continue
            if seq in self._corrupt_seqs:
                self._corrupt_seqs.discard(seq)
                self.stats.blocks_corrupted += 1
                frame = frame[:20] + bytes([frame[20] ^ 0xFF]) + frame[21:]
            writer.write(frame)
            await writer.drain()
            self.stats.blocks_sent += 1
