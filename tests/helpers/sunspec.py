"""SunSpec devices for the tests: the bench's inverter served on a free loopback port (at any base), hand-built
register images served as they are (chains that break or run off the register space), a device that acknowledges
writes and stores nothing, and an in-memory driver of the sans-IO discovery."""

from __future__ import annotations

import cmath
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.register_message import WriteMultipleRegistersResponse

from agent.config import DeviceConfig, SerialSettings
from helpers.net import free_port
from protocols.modbus.registermap import DataType, RegisterMap, RegisterPoint, Table, encode_point
from protocols.sunspec.discovery import DiscoveredDevice, Refusal, discovery
from sim_hw.devices.inverter import SunSpecInverter
from sim_hw.devices.modbus_server import ModbusDeviceServer
from sim_hw.feeder.solution import Solution

KVA, KW = 500.0, 450.0
V_LN = 4160.0 / math.sqrt(3)  # IEEE 13-node feeder: 4.16 kV line-to-line


def solution(v_pu: float = 1.0, irradiance: float = 1.0, hz: float = 60.0) -> Solution:
    """Bus 675 balanced at ``v_pu`` with ``irradiance``, as the feeder would report it to the inverter."""
    v = {p: V_LN * v_pu * cmath.exp(1j * math.radians(a)) for p, a in zip("abc", (0.0, -120.0, 120.0), strict=True)}
    return Solution(t=0.0, converged=True, bus_v={"675": v}, base_kv_ln={"675": V_LN / 1000.0}, frequency_hz=hz,
                    irradiance_pu=irradiance)  # fmt: skip


def inverter(base: int = 40000, name: str = "inv1", **kw: Any) -> SunSpecInverter:
    """The bench's SunSpec inverter model (500 kVA / 450 kW on bus 675)."""
    return SunSpecInverter(name, site="pv675", bus="675", kva=KVA, kw=KW, base=base, **kw)


class WriteIgnoringServer(ModbusDeviceServer):
    """A Modbus server that acknowledges every function-16 write and stores nothing: a device that ignores writes."""

    def _guard_write(self, pdu: ModbusPDU) -> None:
        async def acknowledge(context: Any, device_id: int) -> ModbusPDU:
            return WriteMultipleRegistersResponse(
                address=pdu.address, count=pdu.count, dev_id=device_id, transaction_id=pdu.transaction_id
            )

        pdu.datastore_update = acknowledge  # type: ignore[method-assign]


@dataclass
class ServedInverter:
    inv: SunSpecInverter
    server: ModbusDeviceServer
    port: int

    t: float = 1_780_000_000.0

    async def push(self) -> None:
        """The inverter's registers as they are now (what a bench step serves)."""
        await self.server.update(1, self.inv.values())

    async def step(self, sol: Solution | None = None, n: int = 1) -> None:
        """``n`` bench steps of 1 s at ``sol`` (default: nominal voltage, full sun), then the registers served."""
        for _ in range(n):
            self.t += 1.0
            self.inv.observe(self.t, sol or solution())
        await self.push()


@asynccontextmanager
async def served_inverter(
    inv: SunSpecInverter | None = None, *, ignore_writes: bool = False, port: int | None = None
) -> AsyncIterator[ServedInverter]:
    """``inv`` (default: :func:`inverter`) served over Modbus TCP on 127.0.0.1, writes through its ``on_write``."""
    inv = inv or inverter()
    port = port or free_port()
    cls = WriteIgnoringServer if ignore_writes else ModbusDeviceServer
    server = cls.tcp("127.0.0.1", port, {1: inv.register_map})
    await server.start()
    server.on_write(1, inv.on_write)
    rig = ServedInverter(inv, server, port)
    try:
        await rig.push()
        yield rig
    finally:
        await server.stop()


def inverter_image(inv: SunSpecInverter) -> dict[int, int]:
    """Every register the inverter serves now, by address (what its server holds after a step)."""
    values = inv.values()
    words: dict[int, int] = {}
    for p in inv.register_map.points:
        for i, w in enumerate(encode_point(p, values[p.name])):
            words[p.address + i] = int(w)
    return words


def image_map(words: Mapping[int, int]) -> RegisterMap:
    """A map with one uint16 point per address of ``words`` (``r<address>``): serves a register image as it is."""
    return RegisterMap("image", tuple(RegisterPoint(f"r{a}", Table.HOLDING, a, DataType.UINT16) for a in sorted(words)))


@asynccontextmanager
async def served_image(words: Mapping[int, int]) -> AsyncIterator[int]:
    """``words`` (address -> register) served over Modbus TCP as unit 1; yields the port. Addresses between the
    lowest and the highest read as 0; outside, the server answers exception 2."""
    port = free_port()
    server = ModbusDeviceServer.tcp("127.0.0.1", port, {1: image_map(words)})
    await server.start()
    try:
        await server.update(1, {f"r{a}": w for a, w in words.items()})
        yield port
    finally:
        await server.stop()


def suns(base: int) -> dict[int, int]:
    """The SunSpec marker at ``base``."""
    return {base: 0x5375, base + 1: 0x6E53}


def text_words(text: str, registers: int) -> list[int]:
    data = text.encode("ascii").ljust(2 * registers, b"\0")
    return [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]


def common_model(address: int, length: int = 66) -> dict[int, int]:
    """Model 1 at ``address`` (ID, L, Mn "Acme", Md "X1", Opt, Vr "1.0", SN "42", DA 1, Pad), ``length`` 65 or 66."""
    regs = [1, length, *text_words("Acme", 16), *text_words("X1", 16), *text_words("", 8), *text_words("1.0", 8)]
    regs += [*text_words("42", 16), 1] + ([0x8000] if length == 66 else [])
    return dict(enumerate(regs, start=address))


def drive(words: Mapping[int, int], **kw: Any) -> tuple[DiscoveredDevice, list[tuple[int, int, str]]]:
    """Run the sans-IO discovery against an in-memory device: ``words`` (address -> register); a read touching an
    address it does not hold is refused with exception 2 (illegal data address). Returns the result and the reads."""
    steps = discovery(**kw)
    reads: list[tuple[int, int, str]] = []
    request = next(steps)
    while True:
        reads.append((request.address, request.count, request.why))
        span = range(request.address, request.address + request.count)
        answer: list[int] | Refusal = [words[a] for a in span] if all(a in words for a in span) else Refusal(2)
        try:
            request = steps.send(answer)
        except StopIteration as done:
            return done.value, reads


def sunspec_device(name: str, port: int | None = None, *, serial_port: str | None = None, **kw: Any) -> DeviceConfig:
    """An agent device config of a SunSpec device over TCP (``port``) or RTU (``serial_port``)."""
    kw.setdefault("models", (701, 704, 705, 706, 711))
    if serial_port is not None:
        return DeviceConfig(name=name, protocol="sunspec", unit_id=1, register_map=RegisterMap("sunspec"),
                            serial=SerialSettings(port=serial_port, baudrate=19200), **kw)  # fmt: skip
    return DeviceConfig(name=name, protocol="sunspec", unit_id=1, register_map=RegisterMap("sunspec"),
                        host="127.0.0.1", port=port, **kw)  # fmt: skip
