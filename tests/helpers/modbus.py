"""Modbus peers for the acquisition tests: a pymodbus TCP server, a raw TCP peer that answers what the test says,
a pymodbus RTU server on a pty, and device configurations for the pollers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from agent.config import DeviceConfig, SerialSettings
from protocols.modbus.registermap import parse_register_map


@asynccontextmanager
async def modbus_server(
    port: int, answers: Callable[[bytes], bytes | None] | None = None
) -> AsyncIterator[ModbusTcpServer]:
    """Unit 1: holding 0..49 = 100..149, coils 0..15 alternate; unit 2: holding all 7.

    ``answers`` sees each answer frame pymodbus is about to send and returns what goes on the wire instead
    (b"": nothing, None: nothing and the server closes the connection), for faults on a real server."""
    dev1 = ModbusDeviceContext(
        hr=ModbusSequentialDataBlock(1, list(range(100, 150))),
        ir=ModbusSequentialDataBlock(1, list(range(200, 210))),
        co=ModbusSequentialDataBlock(1, [i % 2 == 0 for i in range(16)]),
        di=ModbusSequentialDataBlock(1, [True] * 4),
    )
    dev2 = ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, [7] * 10))
    server: ModbusTcpServer | None = None

    def trace_packet(sending: bool, data: bytes) -> bytes:
        if not sending or answers is None:
            return data
        out = answers(data)
        if out is None:
            loop = asyncio.get_running_loop()
            assert server is not None
            for conn in list(server.active_connections.values()):
                loop.call_soon(conn.close)
            return b""
        return out

    server = ModbusTcpServer(
        ModbusServerContext(devices={1: dev1, 2: dev2}, single=False),
        address=("127.0.0.1", port),
        trace_packet=trace_packet,
    )
    await server.serve_forever(background=True)
    try:
        yield server
    finally:
        await server.shutdown()


@asynccontextmanager
async def raw_server(port: int, reply: Callable[[bytes], bytes | None]) -> AsyncIterator[None]:
    """A TCP peer that answers each request chunk with ``reply(request)`` (None: stay silent)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1024):
                out = reply(data)
                if out:
                    writer.write(out)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def rtu_server(port: str, units: dict[int, int], baudrate: int = 9600) -> AsyncIterator[list]:
    """Serve ``units`` (unit id -> base value of holding 0..19) on ``port``; every other unit id is
    silent, as an absent device on a real RS-485 line is (pymodbus alone would answer exception 4).
    Yields the server's own log of (direction, monotonic time, unit id)."""
    log: list[tuple[str, float, int]] = []
    ctx = ModbusServerContext(
        devices={u: ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, [base + i for i in range(20)]))
                 for u, base in units.items()},
        single=False,
    )  # fmt: skip

    def trace_pdu(sending: bool, pdu):
        log.append(("tx" if sending else "rx", time.monotonic(), pdu.dev_id))
        if not sending and pdu.dev_id not in units:
            return None  # drop the request: no answer at all
        return pdu

    server = ModbusSerialServer(ctx, framer=FramerType.RTU, port=port, baudrate=baudrate, trace_pdu=trace_pdu)
    await server.serve_forever(background=True)
    try:
        yield log
    finally:
        await server.shutdown()


METER_MAP = parse_register_map(
    {
        "name": "meter",
        "points": [
            {"name": "v", "address": 0, "type": "uint16", "scale": 0.1, "unit": "V"},
            {"name": "i", "address": 1, "type": "uint16", "unit": "A"},
            {"name": "kwh", "address": 2, "type": "uint32", "unit": "kWh", "kind": "energy"},
        ],
    }
)


def rtu_device(name: str, unit: int, port: str, **kw) -> DeviceConfig:
    return DeviceConfig(
        name=name,
        protocol="modbus-rtu",
        unit_id=unit,
        register_map=kw.pop("register_map", METER_MAP),
        serial=SerialSettings(port=port, baudrate=9600),
        **kw,
    )


def tcp_device(name: str, port: int, rmap=METER_MAP, **kw) -> DeviceConfig:
    return DeviceConfig(
        name=name, protocol="modbus-tcp", unit_id=1, register_map=rmap, host="127.0.0.1", port=port, **kw
    )


# A meter with two points, v and w, at holding 0 and 1: what modbus_server's unit 1 holds as 100 and 101.
METER2 = parse_register_map(
    {
        "name": "m",
        "points": [
            {"name": "v", "address": 0, "type": "uint16", "unit": "V"},
            {"name": "w", "address": 1, "type": "int16", "unit": "W"},
        ],
    }
)
