"""A device link: read named points fresh from one device, write named points, over the poller's own transport.

The safety envelope's actuators (agent/control/actuators.py) command devices through a :class:`DeviceLink`:
they name points as the device's register map names them and never see registers. :class:`RegisterMapLink`
is the link of a register-map device (Modbus TCP or RTU): a read plans the fewest requests for the points
asked (fresh from the device, never the snapshot), a write encodes the points by the map and sends them as ONE
request (function 16 for holding registers: a select-before-operate pair must arrive together), and every
failure is one of :mod:`protocols.modbus.errors` (an exception answer keeps its code) or a
:class:`LinkError` for a request the map cannot make.

The link shares the device's transport with its poller, so an RS-485 line keeps one arbiter and a TCP device
one connection: :class:`SharedTransport` wraps the poller's transport, serialises the two users' requests and
closes the transport when the last of them closes it. A SunSpec device (protocols/sunspec) gets its own link
class with the same three methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Protocol

from agent.config import DeviceConfig
from protocols.modbus.client import ModbusTransport
from protocols.modbus.readplan import decode_block, plan_reads
from protocols.modbus.registermap import RegisterPoint, Table, encode_point

Value = float | int | str | bool


class LinkError(Exception):
    """A request the link cannot make (a point the map lacks, points that are not one request, a bad value)."""


class DeviceLink(Protocol):
    """What an actuator needs from a device: named points read fresh and written in one request."""

    @property
    def device(self) -> str: ...

    async def read(self, names: Sequence[str]) -> dict[str, Value | None]: ...

    async def write(self, values: Mapping[str, Value]) -> None: ...

    async def close(self) -> None: ...


class SharedTransport:
    """A :class:`ModbusTransport` used by a poller and a link: one request at a time, closed by the last user."""

    def __init__(self, inner: ModbusTransport) -> None:
        self.inner = inner
        self.device = inner.device
        self._lock = asyncio.Lock()
        self._users = 0

    def attach(self) -> SharedTransport:
        self._users += 1
        return self

    async def read(self, table: Table, start: int, count: int, unit_id: int) -> list[int] | list[bool]:
        async with self._lock:
            return await self.inner.read(table, start, count, unit_id)

    async def write_registers(self, start: int, values: Sequence[int], unit_id: int) -> None:
        async with self._lock:
            await self.inner.write_registers(start, values, unit_id)

    async def write_coil(self, addr: int, value: bool, unit_id: int) -> None:
        async with self._lock:
            await self.inner.write_coil(addr, value, unit_id)

    async def close(self) -> None:
        self._users -= 1
        if self._users <= 0:
            await self.inner.close()


class RegisterMapLink:
    """The link of a register-map device (module docstring)."""

    def __init__(self, config: DeviceConfig, transport: ModbusTransport) -> None:
        self.config = config
        self.transport = transport
        self.writes = 0  # requests written (status)
        self.reads = 0

    @property
    def device(self) -> str:
        return self.config.name

    def _point(self, name: str) -> RegisterPoint:
        try:
            return self.config.register_map.point(name)
        except KeyError as err:
            raise LinkError(f"device {self.device}: {err.args[0]}") from None

    async def read(self, names: Sequence[str]) -> dict[str, Value | None]:
        """The named points, read from the device now (decoded; a point that does not decode reads None)."""
        points = [self._point(n) for n in dict.fromkeys(names)]
        out: dict[str, Value | None] = {}
        for block in plan_reads(points, max_block=self.config.max_block, max_gap=self.config.max_gap):
            words = await self.transport.read(block.table, block.start, block.count, self.config.unit_id)
            self.reads += 1
            values, _errors = decode_block(block, words)
            for p, v in zip(block.points, values, strict=True):
                out[p.name] = v
        return out

    async def write(self, values: Mapping[str, Value]) -> None:
        """Write the named points as ONE request: holding registers that are contiguous once encoded, or one coil.

        A point the map lacks, points spread over gaps or tables, or a value the point cannot hold is a
        :class:`LinkError` and nothing is sent.
        """
        if not values:
            raise LinkError(f"device {self.device}: nothing to write")
        points = sorted((self._point(n) for n in values), key=lambda p: p.address)
        tables = {p.table for p in points}
        if tables == {Table.COIL} and len(points) == 1:
            p = points[0]
            await self.transport.write_coil(p.address, bool(values[p.name]), self.config.unit_id)
            self.writes += 1
            return
        if tables != {Table.HOLDING}:
            raise LinkError(f"device {self.device}: {', '.join(values)} are not holding registers (or one coil)")
        words: list[int] = []
        for prev, p in zip([None, *points[:-1]], points, strict=True):
            if prev is not None and p.address != prev.end:
                raise LinkError(f"device {self.device}: {prev.name} and {p.name} are not contiguous: one request "
                                "writes one run of registers")  # fmt: skip
            try:
                words += [int(w) for w in encode_point(p, values[p.name])]
            except ValueError as err:
                raise LinkError(f"device {self.device}: {err}") from err
        await self.transport.write_registers(points[0].address, words, self.config.unit_id)
        self.writes += 1

    async def close(self) -> None:
        await self.transport.close()


__all__ = ["DeviceLink", "LinkError", "RegisterMapLink", "SharedTransport", "Value"]
