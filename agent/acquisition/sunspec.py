"""The SunSpec poller and its write link (``protocol = "sunspec"``, docs/sunspec.md).

:class:`SunSpecPoller` discovers the device's models at connect (and again after the device stopped answering),
plans its reads over the discovered layout and decodes every scaled value with the scale factor read in the same
poll; :class:`SunSpecLink` is the one way to write to the device: points with readback, through the poller's own
connection (or line).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agent.acquisition.poller import DevicePoller, Sink
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
from protocols.modbus.readplan import ReadBlock, plan_reads
from protocols.modbus.registermap import PointKind, RegisterPoint, Table
from protocols.sunspec import client as sunspec_client
from protocols.sunspec.discovery import DiscoveredDevice, DiscoveryError
from protocols.sunspec.layout import SunSpecLayout, SunSpecPoint
from protocols.sunspec.values import Raw, scaled
from protocols.sunspec.write import Failed, WriteOutcome

log = EventLog("acquisition")


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
