"""Device pollers: read each Modbus device on its schedule and turn registers into Readings.

One :class:`DevicePoller` per device, each a task the supervisor owns. A poller never dies of a
device fault: a silent device makes its points STALE, an exception answer or a value that does not
decode makes them INVALID, and a device that fails a whole cycle is polled less often (exponential
backoff with jitter, capped at a minute) until it answers again. RTU devices on one RS-485 line
share a single :class:`~protocols.modbus.serialbus.SerialBus`, so a dead meter slows nobody else
down by more than its own timeout per attempt.

A SunSpec device (``protocol = "sunspec"``) has no register map in the site file: its
:class:`SunSpecPoller` discovers the device's models at connect (and again after the device stopped
answering, since a replaced inverter may differ), plans its reads over the discovered layout, decodes
every scaled value with the scale factor read in the same poll, and names readings
``<device>.<model group>.<point>`` (docs/sunspec.md). Its :class:`SunSpecLink` is the one way to
write to the device: points with readback, through the poller's own connection (or line).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.config import DeviceConfig
from agent.points import Quality, Reading, Stream
from protocols.eventlog import EventLog
from protocols.modbus.client import ModbusTransport, TcpTransport
from protocols.modbus.errors import (
    ModbusConnectionError,
    ModbusDeviceError,
    ModbusExceptionResponse,
    ModbusFrameError,
    ModbusTimeout,
)
from protocols.modbus.readplan import ReadBlock, decode_block, plan_reads, split_block
from protocols.modbus.registermap import PointKind, RegisterPoint, Table
from protocols.modbus.serialbus import RtuTransport, SerialBusRegistry
from protocols.sunspec import client as sunspec_client
from protocols.sunspec.discovery import DiscoveredDevice, DiscoveryError
from protocols.sunspec.layout import SunSpecLayout, SunSpecPoint
from protocols.sunspec.values import Raw, scaled
from protocols.sunspec.write import Failed, WriteOutcome

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
        ts = self.clock()
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
        (wall seconds: the clock's seconds divided by its speed)."""
        interval = self.device.poll_interval_s / self.speed
        n = self.stats.consecutive_failures
        base = min(BACKOFF_CAP_S, interval * 2 ** min(n - 1, 32))
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
                    if self.stats.consecutive_failures == 1 or self.stats.backoff_s >= BACKOFF_CAP_S * JITTER[0]:
                        log.warning("device_failing", device=self.device.name,
                                    consecutive_failures=self.stats.consecutive_failures,
                                    next_attempt_s=round(self.stats.backoff_s, 2))  # fmt: skip
                await asyncio.sleep(max(0.0, next_t - loop.time()))
        finally:
            await self.transport.close()


def _next_slot(now: float, interval: float) -> float:
    """The first multiple of ``interval`` strictly after ``now`` (the pollers' shared schedule grid)."""
    return (math.floor(now / interval) + 1) * interval


def _transport(dev: DeviceConfig, registry: SerialBusRegistry) -> ModbusTransport:
    """The device's link: its own TcpTransport over TCP, its serial line's shared bus over RTU."""
    if dev.serial is not None:
        return RtuTransport(registry.get(dev.serial), timeout_s=dev.timeout_s, retries=dev.retries)
    if dev.host is None:
        raise ValueError(f"device {dev.name}: {dev.protocol} needs a host or a serial port")
    return TcpTransport(dev.host, dev.port or 502, timeout_s=dev.timeout_s, retries=dev.retries)


def build_pollers(
    devices: Sequence[DeviceConfig],
    sink: Sink,
    clock: Callable[[], float] = time.time,
    *,
    registry: SerialBusRegistry | None = None,
    rng: random.Random | None = None,
    speed: float = 1.0,
) -> list[DevicePoller]:
    """A poller per device: its own TcpTransport for TCP, one shared SerialBus per serial port for RTU; a
    :class:`SunSpecPoller` for a SunSpec device (over either).

    ``clock`` and ``speed`` are the agent's clock (agent/clock.py: ``clock.time``, ``clock.speed``)."""
    registry = registry or SerialBusRegistry()
    pollers: list[DevicePoller] = []
    for dev in devices:
        if dev.protocol not in ("modbus-tcp", "modbus-rtu", "sunspec"):
            raise ValueError(f"device {dev.name}: unknown protocol {dev.protocol!r}")
        transport = _transport(dev, registry)
        if dev.protocol == "sunspec":
            pollers.append(SunSpecPoller(dev, transport, sink, clock, rng, speed=speed))
        else:
            pollers.append(DevicePoller(dev, transport, sink, clock, rng, speed=speed))
    return pollers


def sunspec_links(pollers: Iterable[DevicePoller]) -> dict[str, SunSpecLink]:
    """Device name -> the write link of every SunSpec device among ``pollers`` (for the control layer)."""
    return {p.device.name: p.link for p in pollers if isinstance(p, SunSpecPoller)}


# --- SunSpec --------------------------------------------------------------------------------------------------

# Models read at every poll: measurements and the live controls (set points and their enables, which the control
# layer watches); every other model polled (nameplate, settings, curves) is read every settings_poll_interval_s.
# 701 DER AC measurement, 704 DER AC controls, 713 DER storage capacity, 714 DER DC measurement; the older
# inverter (101-103, 111-113), MPPT (160) and meter (201-204, 211-214) measurement models.
EVERY_POLL_MODELS = frozenset({701, 704, 713, 714, 101, 102, 103, 111, 112, 113, 160, 201, 202, 203, 204, 211, 212,
                               213, 214})  # fmt: skip


class _LockedTransport:
    """The poller's side of a SunSpec device's transport: each call waits for the link's lock, so a write with its
    readback (:meth:`SunSpecLink.write_points`) is never interleaved with the poller's reads."""

    def __init__(self, transport: ModbusTransport, lock: asyncio.Lock) -> None:
        self._transport = transport
        self._lock = lock
        self.device = transport.device

    async def read(self, table: Table, start: int, count: int, unit_id: int) -> list[int] | list[bool]:
        async with self._lock:
            return await self._transport.read(table, start, count, unit_id)

    async def write_registers(self, start: int, values: Sequence[int], unit_id: int) -> None:
        async with self._lock:
            await self._transport.write_registers(start, values, unit_id)

    async def write_coil(self, addr: int, value: bool, unit_id: int) -> None:
        async with self._lock:
            await self._transport.write_coil(addr, value, unit_id)

    async def close(self) -> None:
        await self._transport.close()


class SunSpecLink:
    """One SunSpec device as the control layer reaches it: its discovered layout and writes with readback.

    It shares the poller's transport (the same TCP connection; on RS-485 the line's arbiter) behind one lock.
    ``write_points`` is the building block the safety envelope calls for "every write read back"; nothing else in
    the agent writes to a SunSpec device.
    """

    def __init__(self, device: DeviceConfig, transport: ModbusTransport) -> None:
        self.device = device
        self.transport = transport
        self.lock = asyncio.Lock()
        self.discovered: DiscoveredDevice | None = None
        self.discoveries = 0  # how many times the device was discovered (a new layout each time)
        self._due: set[int] = set()

    @property
    def layout(self) -> SunSpecLayout | None:
        """The device's layout as last discovered (None before the first discovery or after the device went away)."""
        return self.discovered.layout if self.discovered is not None else None

    async def discover(self) -> DiscoveredDevice:
        """The device's layout: discovered now unless it is known (DiscoveryError, or the transport's
        ModbusDeviceError). Waits for a write in progress, which may have discovered it already."""
        async with self.lock:
            return await self._discover()

    async def _discover(self) -> DiscoveredDevice:
        if self.discovered is None:
            self.discovered = await sunspec_client.discover(self.transport, self.device.unit_id)
            self.discoveries += 1
        return self.discovered

    def forget(self) -> None:
        """The device went away: it is discovered again before anything else is read or written."""
        self.discovered = None

    def refresh(self, model_ids: Iterable[int]) -> None:
        """Read these models (among the polled ones) at the next poll, whatever their schedule."""
        self._due.update(model_ids)

    def take_due(self) -> set[int]:
        due, self._due = self._due, set()
        return due

    async def read_points(self, names: Iterable[str]) -> dict[str, tuple[Raw | None, str]]:
        """Points read now, each with the SF read in the same call: name -> (value, "") or (None, why not).

        The device is discovered first if it is not. Raises the transport's ModbusDeviceError, DiscoveryError, or
        KeyError for a name the layout does not have.
        """
        async with self.lock:
            layout = (await self._discover()).layout
            return await sunspec_client.read_points(self.transport, self.device.unit_id, layout, names)

    async def write_points(self, values: dict[str, Raw]) -> WriteOutcome:
        """Write SunSpec points (engineering values, by layout name) and read them back.

        The device's SFs are read first and each value encoded with them; touching points go in one function-16
        request (a curve in one); the written registers are read back and compared. The outcome is a record:
        Applied (with the values read back), Refused (the exception code and its meaning), Mismatch (wanted and
        read back), Failed (no answer, with the stage; also when the device cannot be discovered). An unknown or
        read-only point, or a value its point cannot hold, raises SunSpecWriteError before anything is written.
        The models written are read again at the next poll. One outcome line is logged (``sunspec_write``).
        """
        async with self.lock:
            try:
                layout = (await self._discover()).layout
            except (ModbusDeviceError, DiscoveryError) as err:
                outcome: WriteOutcome = Failed(dict(values), "discovery", _text(err), ())
                self._log(outcome)
                return outcome
            outcome = await sunspec_client.write_points(self.transport, self.device.unit_id, layout, values)
        self.refresh({layout.model_of(name).model_id for name in values})
        self._log(outcome)
        return outcome

    def _log(self, o: WriteOutcome) -> None:
        points = ",".join(o.values)
        if o.outcome == "applied":
            log.info("sunspec_write", device=self.device.name, outcome=o.outcome, points=points)
        elif o.outcome == "refused":
            log.warning("sunspec_write", device=self.device.name, outcome=o.outcome, points=points,
                        code=o.code, error=o.meaning, address=o.address,  # type: ignore[union-attr]
                        count=o.count)  # type: ignore[union-attr]  # fmt: skip
        elif o.outcome == "mismatch":
            bad = ",".join(f"{m.name}:{m.wanted}->{m.read}" for m in o.mismatches)  # type: ignore[union-attr]
            log.warning("sunspec_write", device=self.device.name, outcome=o.outcome, points=points, error=bad)
        else:
            log.warning("sunspec_write", device=self.device.name, outcome=o.outcome, points=points,
                        stage=o.stage, error=o.error)  # type: ignore[union-attr]  # fmt: skip


def _text(err: Exception) -> str:
    text = str(err)
    return text.removeprefix(f"device={err.device} ") if isinstance(err, ModbusDeviceError) else text


# What a polled register is to the SunSpec poller.
_VALUE, _SF, _HEADER, _HIDDEN = range(4)


@dataclass(frozen=True, slots=True)
class _PointRole:
    role: int
    point: SunSpecPoint
    sf_id: str | None  # the point id of its scale factor (a named SF), read in the same poll
    expected: int | None  # a model header's ID or L as discovered


class SunSpecPoller(DevicePoller):
    """Polls one SunSpec device: discovery at connect, reads planned over the discovered layout, live SFs.

    The models to poll are the device config's ``models``: those in :data:`EVERY_POLL_MODELS` at every poll, the
    others every ``settings_poll_interval_s`` (and at the next poll after :meth:`SunSpecLink.refresh` or a write).
    Each model is read whole with its ID and L: a header that no longer matches the discovered layout (the device
    changed under the agent) makes the poll's readings INVALID and the device is discovered again, as it is after
    a poll in which it stopped answering. Scale factors, model headers and pad registers are read, never emitted.
    A point that reads "not implemented" (or whose SF does) is emitted INVALID once, not at every poll, until it
    reads a value again.
    """

    def __init__(
        self,
        device: DeviceConfig,
        transport: ModbusTransport,
        sink: Sink,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        speed: float = 1.0,
    ) -> None:
        self.link = SunSpecLink(device, transport)
        super().__init__(device, _LockedTransport(transport, self.link.lock), sink, clock, rng, speed=speed)
        self.monotonic = monotonic
        self.fast_plan: list[ReadBlock] = []
        self.slow_plan: list[ReadBlock] = []
        self._slow_next = 0.0  # monotonic time the settings models are due
        self._slow_models: frozenset[int] = frozenset()
        self._roles: dict[str, _PointRole] = {}  # point id -> role
        self._shown: list[tuple[str, str, Stream]] = []  # (point id, unit, stream) of the every-poll values
        self._absent: set[str] = set()  # point ids reported INVALID as "not implemented" (not repeated each poll)
        self._planned = 0  # the link's discovery the plans were made for

    # -- discovery -------------------------------------------------------------------------------------------
    async def _discover(self) -> list[Reading] | None:
        """Discover the device (unless a write just did) and plan for its layout: model 1's readings, or None."""
        try:
            found = await self.link.discover()
        except (ModbusDeviceError, DiscoveryError) as err:
            answered = isinstance(err, DiscoveryError | ModbusExceptionResponse | ModbusFrameError)
            if isinstance(err, ModbusTimeout):
                self.stats.timeouts += 1
            elif isinstance(err, ModbusConnectionError):
                self.stats.connection_errors += 1
            self._note_error("SunSpec discovery", err)
            log.warning("sunspec_discovery_failed", device=self.device.name, unit=self.device.unit_id,
                        error=self._detail(err))  # fmt: skip
            if self._shown:  # the points the agent knew: the device no longer gives them
                ts = self.clock()
                quality = Quality.INVALID if answered else Quality.STALE
                self._emit(False, [Reading(pid, ts, None, unit, quality, stream) for pid, unit, stream in self._shown])
            return None
        self._plan_for(found)
        self._planned = self.link.discoveries
        layout = found.layout
        c = found.common
        log.info("sunspec_discovered", device=self.device.name, unit=self.device.unit_id, base=found.base,
                 models=",".join(map(str, found.model_ids)), polled=",".join(map(str, self._polled(found))),
                 points=len(self._roles), manufacturer=c.get("Mn"), model=c.get("Md"), serial=c.get("SN"),
                 version=c.get("Vr"))  # fmt: skip
        for sk in found.skipped:
            log.warning("sunspec_model_skipped", device=self.device.name, model=sk.model_id, address=sk.address,
                        length=sk.length, reason=sk.reason)  # fmt: skip
        missing = [m for m in self.device.models if m not in found.model_ids]
        if missing:
            log.warning("sunspec_model_missing", device=self.device.name, models=",".join(map(str, missing)),
                        found=",".join(map(str, found.model_ids)))  # fmt: skip
        ts = self.clock()
        common = layout.models[0].name if layout.models and layout.models[0].model_id == 1 else "common"
        good, bad = Quality.GOOD, Quality.INVALID
        return [Reading(f"{self.device.name}.{common}.{k}", ts, v, "", good if v is not None else bad)
                for k, v in found.common.items()]  # fmt: skip

    def _polled(self, found: DiscoveredDevice) -> list[int]:
        return [m for m in found.model_ids if m in self.device.models]

    def _plan_for(self, found: DiscoveredDevice) -> None:
        """The read plans (every poll, settings) and each polled register's role, from the discovered layout."""
        layout = found.layout
        name = self.device.name
        fast: list[RegisterPoint] = []
        slow: list[RegisterPoint] = []
        roles: dict[str, _PointRole] = {}
        ids: dict[str, tuple[str, Stream]] = {}
        shown: list[tuple[str, str, Stream]] = []
        by_model: dict[int, list[SunSpecPoint]] = {}
        blocks = [m for m in layout.models if m.model_id in self.device.models]
        for p in layout.points.values():
            for m in blocks:
                if m.address <= p.register.address < m.end:
                    by_model.setdefault(m.address, []).append(p)
                    break
        for m in blocks:
            every = m.model_id in EVERY_POLL_MODELS
            for p in by_model.get(m.address, ()):
                (fast if every else slow).append(p.register)
                pid = f"{name}.{p.name}"
                stream = Stream.ENERGY if p.register.kind is PointKind.ENERGY else Stream.TELEMETRY
                ids[p.name] = (pid, stream)
                short = p.name.rsplit(".", 1)[1]
                if p.register.address in (m.address, m.address + 1) and short in ("ID", "L"):
                    expected = m.model_id if short == "ID" else m.length
                    roles[pid] = _PointRole(_HEADER, p, None, expected)
                elif p.sunspec_type == "sunssf":
                    roles[pid] = _PointRole(_SF, p, None, None)
                elif p.sunspec_type == "pad":
                    roles[pid] = _PointRole(_HIDDEN, p, None, None)
                else:
                    sf_id = f"{name}.{p.sf}" if isinstance(p.sf, str) else None
                    roles[pid] = _PointRole(_VALUE, p, sf_id, None)
                    if every:
                        shown.append((pid, p.units, stream))
        dev = self.device
        self.fast_plan = plan_reads(fast, max_block=dev.max_block, max_gap=dev.max_gap) if fast else []
        self.slow_plan = plan_reads(slow, max_block=dev.max_block, max_gap=dev.max_gap) if slow else []
        self.plan = self.fast_plan + self.slow_plan
        self._roles, self._ids, self._shown = roles, ids, shown
        self._absent = set()
        self._slow_models = frozenset(m.model_id for m in blocks if m.model_id not in EVERY_POLL_MODELS)
        self._slow_next = 0.0

    # -- one cycle -------------------------------------------------------------------------------------------
    async def poll_once(self) -> bool:
        """Discover the device if it is not (yet, or any more), then read its polled models; True if it answered."""
        self.stats.polls += 1
        self._answered = self._timeout_spent = False
        out: list[Reading] = []
        if self.link.discovered is None or self._planned != self.link.discoveries:
            common = await self._discover()
            if common is None:
                return False
            out += common
        ok, self.fast_plan, aborted = await self._read_plan(self.fast_plan, out)
        now = self.monotonic()
        due = self.link.take_due() & self._slow_models
        if self.slow_plan and not aborted and (now >= self._slow_next or due):
            got, self.slow_plan, aborted = await self._read_plan(self.slow_plan, out)
            ok = ok or got
            if not aborted:
                self._slow_next = now + self.device.settings_poll_interval_s / self.speed  # wall seconds
        self.plan = self.fast_plan + self.slow_plan
        out = self._scale(out)
        if aborted:
            self.link.forget()  # it stopped answering: it may come back as another device
        self._emit(ok, out)
        return ok

    def _scale(self, out: list[Reading]) -> list[Reading]:
        """Raw readings -> engineering values with the SFs of the same poll; headers checked, SFs and pads dropped."""
        by_id = {r.point: r for r in out}
        result: list[Reading] = []
        changed: tuple[_PointRole, Raw | None] | None = None
        good = Quality.GOOD
        for r in out:
            role = self._roles.get(r.point)
            if role is None:
                result.append(r)
                continue
            if role.role == _HEADER:
                if r.quality is good and r.value != role.expected and changed is None:
                    changed = (role, r.value)
                continue
            if role.role != _VALUE:
                continue
            if r.quality is not good:
                result.append(r)
                continue
            sf_raw = None
            if role.sf_id is not None:
                sf = by_id.get(role.sf_id)
                if sf is None or sf.quality is not good:
                    result.append(r._replace(value=None, quality=sf.quality if sf is not None else Quality.INVALID))
                    continue
                sf_raw = sf.value
            value, why = scaled(role.point, r.value, sf_raw)  # type: ignore[arg-type]
            if why:
                if why.endswith("not implemented"):
                    if r.point in self._absent:
                        continue  # reported once: what a device does not implement is nameplate, not news
                    self._absent.add(r.point)
                result.append(r._replace(value=None, quality=Quality.INVALID))
                continue
            self._absent.discard(r.point)
            result.append(r._replace(value=value) if value is not r.value else r)
        if changed is not None:
            role, found = changed
            what = role.point.name.rsplit(".", 1)[1]
            log.warning("sunspec_layout_changed", device=self.device.name, point=role.point.name,
                        address=role.point.register.address, expected=role.expected, found=found,
                        error=f"model header {what} changed: the device is discovered again")  # fmt: skip
            self._note_error("SunSpec layout changed", ValueError(f"{role.point.name} = {found}, was {role.expected}"))
            self.link.forget()
            result = [r._replace(value=None, quality=Quality.INVALID) for r in result]
        return result
