"""The device poller: read one Modbus device on its schedule and turn registers into Readings.

A poller never dies of a device fault: a silent device makes its points STALE, an exception answer or a value that
does not decode makes them INVALID, and a device that fails a whole cycle is polled less often (exponential backoff
with jitter, capped at a minute) until it answers again (the package's docstring says more).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.config import DeviceConfig
from agent.points import Quality, Reading, Stream
from protocols.eventlog import EventLog
from protocols.modbus.client import ModbusTransport
from protocols.modbus.errors import (
    ModbusConnectionError,
    ModbusDeviceError,
    ModbusExceptionResponse,
    ModbusFrameError,
    ModbusTimeout,
)
from protocols.modbus.readplan import ReadBlock, decode_block, plan_reads, split_block
from protocols.modbus.registermap import PointKind, RegisterPoint

log = EventLog("acquisition")

BACKOFF_CAP_S = 60.0
# Exception codes that may mean "this block touches an address the device does not implement":
# 2 illegal data address, 3 illegal data value (quantity), 4 device failure (some meters).
SPLIT_CODES = frozenset({2, 3, 4})
# Backoff delays are scaled by a random factor in this range, so a fleet of dead meters does not retry in step.
JITTER = (0.8, 1.0)

Sink = Callable[[list[Reading]], None]


class Snapshot:
    """The latest Reading of every point, by point id. One event loop: no locks."""

    def __init__(self) -> None:
        self._latest: dict[str, Reading] = {}

    def update(self, readings: Iterable[Reading]) -> None:
        for r in readings:
            self._latest[r.point] = r

    def get(self, point: str) -> Reading | None:
        return self._latest.get(point)

    def items(self) -> list[tuple[str, Reading]]:
        return list(self._latest.items())

    def __len__(self) -> int:
        return len(self._latest)


@dataclass(slots=True)
class PollerStats:
    polls: int = 0  # cycles attempted
    polls_ok: int = 0  # cycles in which at least one block returned data
    timeouts: int = 0
    connection_errors: int = 0
    exceptions: int = 0  # Modbus exception answers
    frame_errors: int = 0
    decode_errors: int = 0
    splits: int = 0  # blocks split after the device refused them
    readings: int = 0  # readings emitted, of any quality
    missed_slots: int = 0  # schedule slots skipped because a cycle overran
    consecutive_failures: int = 0
    backoff_s: float = 0.0  # current delay to the next attempt while failing, 0 when healthy
    last_ok_ts: float | None = None
    # the latest fault of any kind (timeout, link down, Modbus exception, bad frame, decode error) and when
    # (s UTC); kept after the device recovers, so an operator sees what went wrong last and how long ago
    last_error: str = ""
    last_error_ts: float | None = None


class _CycleAborted(Exception):
    """The device stopped answering mid-cycle: do not spend more line time on it this cycle."""


class DevicePoller:
    """Polls one device at a fixed rate through a transport and sends Readings to ``sink``.

    ``clock`` stamps the readings (the agent's clock, agent/clock.py); ``speed`` is how many of its seconds
    pass per wall second (a bench day at speed: the poll interval is in the clock's seconds)."""

    def __init__(
        self,
        device: DeviceConfig,
        transport: ModbusTransport,
        sink: Sink,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        *,
        speed: float = 1.0,
    ) -> None:
        self.device = device
        self.transport = transport
        self.sink = sink
        self.clock = clock
        self.speed = speed
        self.rng = rng or random.Random()
        self.stats = PollerStats()
        self.plan: list[ReadBlock] = plan_reads(
            device.register_map.points, max_block=device.max_block, max_gap=device.max_gap
        )
        # Point id and stream of every point, built once: a cycle of a whole fleet runs on one thread,
        # so what each reading costs adds up in the cycle time.
        self._ids: dict[str, tuple[str, Stream]] = {
            p.name: (f"{device.name}.{p.name}", Stream.ENERGY if p.kind is PointKind.ENERGY else Stream.TELEMETRY)
            for p in device.register_map.points
        }
        # this cycle: has the device returned data yet, and has its one tolerated timeout been used
        self._answered = False
        self._timeout_spent = False

    # -- one cycle -------------------------------------------------------------------------------
    def _reading(self, p: RegisterPoint, ts: float, value, quality: Quality) -> Reading:
        point, stream = self._ids[p.name]
        return Reading(point, ts, value, p.unit, quality, stream)

    @staticmethod
    def _detail(err: Exception) -> str:
        """The error's text without the client's device label (the log line and the status name the device)."""
        detail = str(err)
        if isinstance(err, ModbusDeviceError):
            detail = detail.removeprefix(f"device={err.device} ")
        return detail

    def _note_error(self, what: str, err: Exception) -> None:
        """Keep ``what: err`` as the device's last error (for ``gridedge status``), without the device label."""
        self.stats.last_error = f"{what}: {self._detail(err)}"
        self.stats.last_error_ts = self.clock()

    def _fault(self, what: str, block: ReadBlock, err: Exception) -> dict[str, Any]:
        """Note ``what`` as the last error; the fields of the fault's log line."""
        self._note_error(what, err)
        return {"device": self.device.name, "unit": self.device.unit_id, "table": block.table.value,
                "start": block.start, "count": block.count, "points": ",".join(p.name for p in block.points),
                "error": self._detail(err)}  # fmt: skip

    async def _read_block(self, block: ReadBlock, out: list[Reading], plan: list[ReadBlock]) -> bool:
        """Read one block into ``out`` (appending the blocks actually used to ``plan``).

        Returns True when the device returned data. Raises _CycleAborted after a timeout or a lost
        link, once the block's points are marked STALE.

        One timeout per cycle is tolerated once the device has answered another block in the same
        cycle: the device is alive, so the block itself is suspect (some devices stay silent instead
        of answering exception 02 for an address they lack, or answer a big block too slowly). A
        multi-point block is then split as a refused one is; a single point is marked STALE and the
        cycle goes on. A second timeout aborts the cycle, so a device that dies mid-cycle costs the
        line at most two timeouts, and the bisection continues in the cycles that follow.
        """
        asked = (self.clock(), time.monotonic())
        try:
            words = await self.transport.read(block.table, block.start, block.count, self.device.unit_id)
        except ModbusExceptionResponse as err:
            if err.code in SPLIT_CODES and len(block.points) > 1:
                self.stats.splits += 1
                parts = split_block(block)
                log.info("modbus_block_split", device=self.device.name, table=block.table.value, start=block.start,
                         count=block.count, code=err.code,
                         into="+".join(f"{b.start}/{b.count}" for b in parts))  # fmt: skip
                mark = len(plan)
                got = await self._read_parts(parts, out, plan)
                if not got:
                    # Every part was refused too: the split isolated nothing (a meter answering 04
                    # while it boots refuses everything). Keep the whole block for the next cycles,
                    # or one transient refusal would cost a request per point for ever.
                    del plan[mark:]
                    plan.append(block)
                return got
            self.stats.exceptions += 1
            where = f"{block.table.value} {block.start}+{block.count}"
            log.warning("modbus_exception", **self._fault(f"Modbus exception reading {where}", block, err))
            out.extend(self._reading(p, self.clock(), None, Quality.INVALID) for p in block.points)
            plan.append(block)
            return False
        except ModbusTimeout as err:
            if not (self._answered and not self._timeout_spent):
                self._stale(block, out, plan, err)
                raise _CycleAborted from err
            self._timeout_spent = True
            if len(block.points) == 1:
                self._stale(block, out, plan, err)
                return False
            self.stats.timeouts += 1
            self.stats.splits += 1
            parts = split_block(block)
            log.info("modbus_block_split", device=self.device.name, table=block.table.value, start=block.start,
                     count=block.count, timeout_s=self.device.timeout_s,
                     into="+".join(f"{b.start}/{b.count}" for b in parts))  # fmt: skip
            return await self._read_parts(parts, out, plan)
        except ModbusConnectionError as err:
            self._stale(block, out, plan, err)
            raise _CycleAborted from err
        except ModbusFrameError as err:
            self.stats.frame_errors += 1
            where = f"{block.table.value} {block.start}+{block.count}"
            log.warning("modbus_bad_frame", **self._fault(f"bad frame reading {where}", block, err))
            out.extend(self._reading(p, self.clock(), None, Quality.INVALID) for p in block.points)
            plan.append(block)
            return False
        ts = self._answer_ts(asked)
        plan.append(block)
        self._answered = True
        # the block's precompiled decoder: a poll of a whole fleet runs on one thread, so the per-point
        # cost of decoding and of building Readings adds up in the cycle time
        values, errors = decode_block(block, words)
        ids = self._ids
        if errors is None:
            for p, value in zip(block.points, values, strict=True):
                point, stream = ids[p.name]
                out.append(Reading(point, ts, value, p.unit, Quality.GOOD, stream))
            return True
        for i, (p, value) in enumerate(zip(block.points, values, strict=True)):
            err = errors.get(i)
            if err is None:
                out.append(self._reading(p, ts, value, Quality.GOOD))
                continue
            self.stats.decode_errors += 1
            pwords = words[p.address - block.start : p.end - block.start]
            self._note_error(f"cannot decode {p.name} at {p.address}", err)
            log.warning("modbus_decode_error", device=self.device.name, point=p.name, address=p.address,
                        words=",".join(hex(w) for w in pwords), error=err)  # fmt: skip
            out.append(self._reading(p, ts, None, Quality.INVALID))
        return True

    def _answer_ts(self, asked: tuple[float, float]) -> float:
        """The instant a block's values were taken: halfway between the request going out and its answer.

        The device samples its registers between the two; stamping the answer's arrival would date every value
        half a round trip late (hundreds of ms for a long block on a 9600-baud line; on a bench at speed, the
        round trip times the speed). ``asked`` is (this clock, monotonic) when the read was asked for; the request
        went out then, or when the transport says (``sent_at``, monotonic: an RTU request waits for its turn on
        the line). In this poller's clock, so an injected clock stamps as it reads.
        """
        t_asked, m_asked = asked
        t_now, m_now = self.clock(), time.monotonic()
        sent = getattr(self.transport, "sent_at", None)
        share = 0.0  # of the wait, before the request went out
        if isinstance(sent, float) and m_asked <= sent <= m_now and m_now > m_asked:
            share = (sent - m_asked) / (m_now - m_asked)
        t_sent = t_asked + share * (t_now - t_asked)
        return (t_sent + t_now) / 2

    async def _read_parts(self, parts: list[ReadBlock], out: list[Reading], plan: list[ReadBlock]) -> bool:
        """Read the parts of a split block; if the cycle aborts in one, the parts after it are marked
        STALE and stay in the plan (else their points would never be read again)."""
        got = False
        for k, part in enumerate(parts):
            try:
                got = await self._read_block(part, out, plan) or got
            except _CycleAborted:
                ts = self.clock()
                for rest in parts[k + 1 :]:
                    out.extend(self._reading(p, ts, None, Quality.STALE) for p in rest.points)
                    plan.append(rest)
                raise
        return got

    def _stale(self, block: ReadBlock, out: list[Reading], plan: list[ReadBlock], err: Exception) -> None:
        """The device did not answer ``block`` (timeout or link down): count it, mark its points STALE."""
        if isinstance(err, ModbusTimeout):
            self.stats.timeouts += 1
            where = f"{block.table.value} {block.start}+{block.count}"
            log.warning("modbus_timeout", **self._fault(f"timeout reading {where}", block, err))
        else:
            self.stats.connection_errors += 1
            log.warning("modbus_link_down", **self._fault("link down", block, err))
        out.extend(self._reading(p, self.clock(), None, Quality.STALE) for p in block.points)
        plan.append(block)

    async def _read_plan(self, blocks: list[ReadBlock], out: list[Reading]) -> tuple[bool, list[ReadBlock], bool]:
        """Read ``blocks`` into ``out``: (the device returned data, the blocks as used, the cycle was aborted).

        The blocks as used keep a refused block split for the cycles that follow. After an abort (the device
        stopped answering) the blocks not read are marked STALE and kept in the plan.
        """
        plan: list[ReadBlock] = []
        ok = False
        for i, block in enumerate(blocks):
            try:
                ok = await self._read_block(block, out, plan) or ok
            except _CycleAborted:
                ts = self.clock()
                for rest in blocks[i + 1 :]:
                    out.extend(self._reading(p, ts, None, Quality.STALE) for p in rest.points)
                    plan.append(rest)
                return ok, plan, True
        return ok, plan, False

    def _emit(self, ok: bool, out: list[Reading]) -> None:
        """Count the cycle and hand its readings to the sink."""
        if ok:
            self.stats.polls_ok += 1
            self.stats.last_ok_ts = self.clock()
        self.stats.readings += len(out)
        if out:
            self.sink(out)

    async def poll_once(self) -> bool:
        """Read every block of the plan once and emit the readings. True if the device answered."""
        self.stats.polls += 1
        self._answered = self._timeout_spent = False
        out: list[Reading] = []
        ok, self.plan, _ = await self._read_plan(list(self.plan), out)  # split blocks stay split
        self._emit(ok, out)
        return ok

    # -- schedule --------------------------------------------------------------------------------
    def _backoff_s(self) -> float:
        """poll_interval x 2^(n-1) after n failed cycles, jittered, capped at 60 s, never below the interval
        (wall seconds: the clock's seconds divided by its speed, the cap too, so a bench day at speed sees a
        silenced meter again within a minute of its own time, as the field would)."""
        interval = self.device.poll_interval_s / self.speed
        n = self.stats.consecutive_failures
        base = min(BACKOFF_CAP_S / self.speed, interval * 2 ** min(n - 1, 32))
        return max(interval, base * self.rng.uniform(*JITTER))

    async def run(self) -> None:
        """Poll forever on a fixed-rate schedule (loop time, no drift; overrun slots are skipped).

        The first poll runs at once (it also connects); from then on the slots sit on the multiples of
        the interval on the loop clock. Every poller with the same interval then wakes in the same loop
        iteration, whenever its task happened to start, so one cycle reads all devices at the same
        instant instead of staggered by the order in which the tasks connected (a 100-device fleet
        would have its starts spread over ~4 ms that way, all of it added to the cycle time).
        """
        loop = asyncio.get_running_loop()
        interval = self.device.poll_interval_s / self.speed  # wall seconds
        log.info("poller_started", device=self.device.name, protocol=self.device.protocol, unit=self.device.unit_id,
                 interval_s=interval, blocks=len(self.plan), points=len(self._ids))  # fmt: skip
        try:
            next_t: float | None = None  # None: the next slot is the first grid point after now
            task = asyncio.current_task()
            while True:
                ok = await self.poll_once()
                if task is not None and task.cancelling():
                    # A cancel that arrived as a reply did can be swallowed inside the transport
                    # (asyncio.wait_for's race in Python 3.11); honour it, or shutdown would hang.
                    raise asyncio.CancelledError
                now = loop.time()
                if ok:
                    if self.stats.consecutive_failures:
                        log.info("device_recovered", device=self.device.name,
                                 after_failures=self.stats.consecutive_failures)  # fmt: skip
                        next_t = None  # back on the normal rate (and the shared grid) from here
                    self.stats.consecutive_failures = 0
                    self.stats.backoff_s = 0.0
                    next_t = _next_slot(now, interval) if next_t is None else next_t + interval
                    if next_t <= now:
                        skipped = math.floor((now - next_t) / interval) + 1
                        self.stats.missed_slots += skipped
                        next_t += skipped * interval
                else:
                    self.stats.consecutive_failures += 1
                    self.stats.backoff_s = self._backoff_s()
                    next_t = now + self.stats.backoff_s
                    capped = self.stats.backoff_s >= BACKOFF_CAP_S / self.speed * JITTER[0]
                    if self.stats.consecutive_failures == 1 or capped:
                        log.warning("device_failing", device=self.device.name,
                                    consecutive_failures=self.stats.consecutive_failures,
                                    next_attempt_s=round(self.stats.backoff_s, 2))  # fmt: skip
                await asyncio.sleep(max(0.0, next_t - loop.time()))
        finally:
            await self.transport.close()


def _next_slot(now: float, interval: float) -> float:
    """The first multiple of ``interval`` strictly after ``now`` (the pollers' shared schedule grid)."""
    return (math.floor(now / interval) + 1) * interval
