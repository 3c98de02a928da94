"""Simulated Modbus devices served for real: a pymodbus TCP or RTU server holding one or more units.

Each unit is described by the same register map the agent decodes with; values are encoded with
:func:`protocols.modbus.registermap.encode_point` and written into pymodbus's datastore every step.
The datastore is built from ``SimDevice``/``SimData`` (the successor of the deprecated
``ModbusDeviceContext``): one block per table covering the map's lowest to highest address, so the
gaps between points read as 0, as on most meters, and a read plan may bridge them.

Faults, for tests and scenarios, are injected in pymodbus's trace hooks, per unit:

- ``"silent"``: the request is dropped, as a dead RS-485 device would: the client times out.
- ``"exception"``: every answer becomes Modbus exception 4 (server device failure).
- ``"garbage"``: the reply's bytes are replaced by seeded junk. Over TCP the MBAP header (transaction,
  protocol, length, unit) is kept so the frame is still delimited and matched to its request, and the
  PDU becomes junk led by a function code no meter answers with (0x41..0x7E); the pymodbus client
  logs "Unable to decode frame" and its request times out. Over RTU the whole frame is junk, CRC
  included, as line noise would be; a client discards it and times out.

A request for a unit id the server does not hold is dropped as well (pymodbus itself would answer
exception 4, where a real RS-485 line stays silent).

Writes (functions 5, 6, 15, 16, 22, 23) reach a device model through :meth:`ModbusDeviceServer.on_write`:
the handler sees every write before it is stored, decoded into the map's points it covers, and
accepts it (None) or refuses it with a Modbus exception code, which is then the reply and leaves the
registers unchanged. A write covering only part of a multi-register point is refused with
exception 2 (illegal data address) and one that does not decode with exception 3 (illegal data
value) before the handler is asked; a handler that raises is answered with exception 4.

Reads (functions 3, 4 and 23's read) may ask the device model first, through
:meth:`ModbusDeviceServer.on_read`: the unit's provider returns the points whose value depends on the
instant of the read (a revenue meter's energy registers keep counting between two steps of the bench),
and they are encoded before the registers are taken, so the answer holds the value at the read's instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from protocols.eventlog import EventLog
from protocols.modbus.registermap import DecodeError, RegisterMap, Table, decode_point, encode_point

log = EventLog("sim.devices")

Fault = Literal["silent", "exception", "garbage"]
FAULTS: tuple[str, ...] = ("silent", "exception", "garbage")

# Function codes whose datastore block holds each table (what async_setValues expects).
_FC: dict[Table, int] = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}
_TUPLE_ORDER = (Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT)  # SimDevice's tuple layout
_MBAP_LEN = 7
_UNSET = object()
# Write function codes -> the table they write (Modbus Application Protocol v1.1b3, 6.5, 6.6, 6.11, 6.12, 6.17).
_WRITE_TABLE: dict[int, Table] = {5: Table.COIL, 15: Table.COIL, 6: Table.HOLDING, 16: Table.HOLDING, 23: Table.HOLDING}
# 22 mask write (ibid., 6.16): the register becomes (old AND and_mask) OR (or_mask AND NOT and_mask).
_WRITE_TABLE[22] = Table.HOLDING
# Read function codes that a unit's read provider refreshes the registers for (ibid., 6.3, 6.4, 6.17).
_READ_FC: frozenset[int] = frozenset({3, 4, 23})
ILLEGAL_ADDRESS, ILLEGAL_VALUE, DEVICE_FAILURE = 2, 3, 4  # Modbus exception codes (ibid., 7)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """A client's write as a device model sees it, before it is stored.

    ``values`` are the raw registers (or bits) written from ``address`` on; ``points`` holds every point of
    the unit's map the write covers whole, decoded to its engineering value.
    """

    unit_id: int
    table: Table
    address: int
    values: tuple[int, ...] | tuple[bool, ...]
    points: dict[str, float | int | str | bool]


# None accepts the write; an int refuses it with that Modbus exception code (2 address, 3 value, 4 failure...).
WriteHandler = Callable[[WriteRequest], int | None]
ReadProvider = Callable[[], Mapping[str, float | int | str | bool]]


class ModbusServerError(Exception):
    """The simulated device server cannot do what was asked (bad unit, value, fault, address)."""


@dataclass(frozen=True, slots=True)
class _Span:
    """The addresses a map uses in one table: ``start`` .. ``stop - 1``."""

    start: int
    stop: int


def _spans(register_map: RegisterMap) -> dict[Table, _Span]:
    spans: dict[Table, _Span] = {}
    for p in register_map.points:
        s = spans.get(p.table)
        spans[p.table] = _Span(min(s.start, p.address), max(s.stop, p.end)) if s else _Span(p.address, p.end)
    return spans


def _sim_device(unit_id: int, register_map: RegisterMap) -> SimDevice:
    """The unit's datastore: one block per table, separate tables (not pymodbus's shared mode)."""
    spans = _spans(register_map)
    blocks: list[list[SimData]] = []
    for table in _TUPLE_ORDER:
        span = spans.get(table)
        if table.is_bits:
            # SimDevice needs a block in every table; a map without bits gets one unused bit at 0.
            span = span or _Span(0, 1)
            blocks.append([SimData(span.start, values=[False] * (span.stop - span.start), datatype=SimType.BITS)])
        elif span is None:
            blocks.append([SimData(0, count=1, datatype=SimType.INVALID)])  # the whole table is illegal
        else:
            blocks.append([SimData(span.start, values=[0] * (span.stop - span.start), datatype=SimType.REGISTERS)])
    return SimDevice(unit_id, simdata=(blocks[0], blocks[1], blocks[2], blocks[3]))


class ModbusDeviceServer:
    """One pymodbus server (a TCP port or an RTU line) serving one or more units.

    Build it with :meth:`tcp` or :meth:`rtu`, ``await start()``, push values with ``await update()``,
    ``await stop()``. ``units`` maps each unit id to the register map its values are encoded with.
    """

    def __init__(
        self,
        units: Mapping[int, RegisterMap],
        *,
        host: str | None = None,
        port: int | None = None,
        serial_port: str | None = None,
        baudrate: int = 19200,
        parity: str = "N",
        bytesize: int = 8,
        stopbits: int = 1,
        seed: int = 0,
    ) -> None:
        if not units:
            raise ModbusServerError("a server needs at least one unit")
        for unit_id in units:
            if not 0 < unit_id <= 247:
                raise ModbusServerError(f"unit_id = {unit_id!r}: must be in 1..247")
        if (port is None) == (serial_port is None):
            raise ModbusServerError("give either host/port (Modbus TCP) or serial_port (Modbus RTU)")
        self.units: dict[int, RegisterMap] = dict(units)
        self.host = host or "127.0.0.1"
        self.port = port
        self.serial_port = serial_port
        self.baudrate, self.parity, self.bytesize, self.stopbits = baudrate, parity, bytesize, stopbits
        self._faults: dict[int, Fault] = {}
        self._write_handlers: dict[int, WriteHandler] = {}
        self._read_providers: dict[int, ReadProvider] = {}
        self._served: dict[int, dict[str, object]] = {}  # unit -> point -> the value its registers hold
        self._junk = random.Random(seed)
        self._spans = {u: _spans(m) for u, m in self.units.items()}
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    @classmethod
    def tcp(cls, host: str, port: int, units: Mapping[int, RegisterMap], *, seed: int = 0) -> ModbusDeviceServer:
        return cls(units, host=host, port=port, seed=seed)

    @classmethod
    def rtu(
        cls, serial_port: str, units: Mapping[int, RegisterMap], *, baudrate: int = 19200, seed: int = 0
    ) -> ModbusDeviceServer:
        return cls(units, serial_port=serial_port, baudrate=baudrate, seed=seed)

    @property
    def is_tcp(self) -> bool:
        return self.port is not None

    @property
    def address(self) -> str:
        """Where a client finds the server: ``host:port`` or the serial device path."""
        return f"{self.host}:{self.port}" if self.is_tcp else str(self.serial_port)

    # --- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen (TCP) or open the serial line (RTU); returns once the server is up."""
        if self._server is not None:
            raise ModbusServerError(f"server {self.address} is already started")
        devices = [_sim_device(u, m) for u, m in self.units.items()]
        self._served.clear()  # a new datastore holds zeros, not what the last server was given
        server: ModbusTcpServer | ModbusSerialServer
        if self.is_tcp:
            server = ModbusTcpServer(
                devices,
                address=(self.host, self.port),  # type: ignore[arg-type]
                trace_pdu=self._trace_pdu,
                trace_packet=self._trace_packet,
            )
        else:
            server = ModbusSerialServer(
                devices,
                framer=FramerType.RTU,
                port=str(self.serial_port),
                baudrate=self.baudrate,
                parity=self.parity,
                bytesize=self.bytesize,
                stopbits=self.stopbits,
                trace_pdu=self._trace_pdu,
                trace_packet=self._trace_packet,
            )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as err:
            raise ModbusServerError(f"cannot serve Modbus on {self.address}: {err}") from err
        self._server = server
        log.info("modbus_server_up", address=self.address, units=",".join(map(str, sorted(self.units))))

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        await server.shutdown()
        log.info("modbus_server_down", address=self.address)

    # --- values -----------------------------------------------------------------------------------------
    async def update(self, unit_id: int, values: Mapping[str, float | int | str | bool]) -> None:
        """Encode ``values`` (point name -> engineering value) into the unit's registers.

        Points of the map missing from ``values`` keep their registers; a name not in the map or a value
        its point cannot hold raises ModbusServerError.
        """
        if self._server is None:
            raise ModbusServerError(f"server {self.address} is not started")
        register_map = self._map(unit_id)
        served = self._served.setdefault(unit_id, {})
        changed: list[tuple[Any, list[int] | list[bool]]] = []  # (point, its words): only what changed is written
        encoded: dict[str, object] = {}  # entered in the cache once stored: a bad name or value stores nothing
        for name, value in values.items():
            if served.get(name, _UNSET) == value and type(served[name]) is type(value):
                continue  # the registers hold it already (a client write drops the entry: see _guard_write)
            try:
                point = register_map.point(name)
            except KeyError as err:
                raise ModbusServerError(f"unit {unit_id}: {err.args[0]}") from err
            try:
                words = encode_point(point, value)
            except ValueError as err:
                raise ModbusServerError(f"unit {unit_id}: {err}") from err
            changed.append((point, words))
            encoded[name] = value
        # one store per run of adjacent points: the datastore checks every register it is given, so writing a
        # whole table image each step would cost as much as the table is long
        changed.sort(key=lambda pw: (pw[0].table.value, pw[0].address))
        run_table, run_start, run_end, run_words = None, 0, 0, []
        for point, words in changed:
            if point.table is run_table and point.address == run_end:
                run_words += words
                run_end = point.end
                continue
            if run_table is not None:
                await self._server.async_setValues(unit_id, _FC[run_table], run_start, run_words)
            run_table, run_start, run_end, run_words = point.table, point.address, point.end, list(words)
        if run_table is not None:
            await self._server.async_setValues(unit_id, _FC[run_table], run_start, run_words)
        served.update(encoded)

    async def registers(self, unit_id: int, table: Table, address: int, count: int) -> list[int] | list[bool]:
        """What the unit holds now (bypassing faults): for tests and diagnostics."""
        if self._server is None:
            raise ModbusServerError(f"server {self.address} is not started")
        self._map(unit_id)
        return await self._server.async_getValues(unit_id, _FC[table], address, count)

    # --- writes -----------------------------------------------------------------------------------------
    def on_write(self, unit_id: int, handler: WriteHandler | None) -> None:
        """Send every write to ``unit_id`` through ``handler`` first (None: writes are stored as they come)."""
        self._map(unit_id)
        if handler is None:
            self._write_handlers.pop(unit_id, None)
        else:
            self._write_handlers[unit_id] = handler

    # --- reads ------------------------------------------------------------------------------------------
    def on_read(self, unit_id: int, provider: ReadProvider | None) -> None:
        """Before a read of ``unit_id``'s registers, encode what ``provider()`` returns (point -> value at
        the instant of the read); None: reads answer what the last update() stored."""
        self._map(unit_id)
        if provider is None:
            self._read_providers.pop(unit_id, None)
        else:
            self._read_providers[unit_id] = provider

    def _refresh_read(self, pdu: ModbusPDU) -> None:
        """Wrap a read request's datastore step so the unit's provider is asked before the registers are taken."""
        provider = self._read_providers[pdu.dev_id]
        store = pdu.datastore_update

        async def refreshed(context: Any, device_id: int) -> ModbusPDU:
            try:
                values = provider()
                await self.update(device_id, values)
            except Exception as err:  # the last step's registers still answer: a model bug must not kill a read
                log.error("modbus_read_provider_failed", address=self.address, unit=device_id, error=repr(err))
            return await store(context, device_id)

        pdu.datastore_update = refreshed  # type: ignore[method-assign]

    def _check_write(self, unit_id: int, table: Table, address: int, values: list[Any]) -> int | None:
        """The exception code a write gets (None: store it): whole points only, decodable, then the handler."""
        stop = address + len(values)
        points: dict[str, float | int | str | bool] = {}
        for p in self.units[unit_id].points:
            if p.table is not table or p.end <= address or p.address >= stop:
                continue
            if p.address < address or p.end > stop:
                log.info("modbus_write_refused", address=self.address, unit=unit_id, point=p.name, reason="partial")
                return ILLEGAL_ADDRESS
            try:
                points[p.name] = decode_point(p, values[p.address - address : p.end - address])
            except (DecodeError, ValueError) as err:
                log.info("modbus_write_refused", address=self.address, unit=unit_id, point=p.name, reason=err)
                return ILLEGAL_VALUE
        handler = self._write_handlers[unit_id]
        request = WriteRequest(unit_id, table, address, tuple(values), points)
        try:
            return handler(request)
        except Exception as err:  # a model's bug must not kill the server: answer as a failed device would
            log.error("modbus_write_handler_failed", address=self.address, unit=unit_id, error=repr(err))
            return DEVICE_FAILURE

    def _forget(self, unit_id: int, table: Table, start: int, stop: int) -> None:
        """A client wrote these registers: the next update() encodes the points there again."""
        served = self._served.get(unit_id)
        if not served:
            return
        for p in self.units[unit_id].points:
            if p.table is table and p.address < stop and p.end > start:
                served.pop(p.name, None)

    def _guard_write(self, pdu: ModbusPDU) -> None:
        """Wrap a write request's datastore step so the unit's handler decides before anything is stored."""
        fc = pdu.function_code
        table = _WRITE_TABLE[fc]
        if fc == 22:
            address, values = pdu.address, []  # the value written depends on the register's: read when stored
        elif fc == 23:
            address, values = pdu.write_address, list(pdu.write_registers)  # type: ignore[attr-defined]
        elif table is Table.COIL:
            address, values = pdu.address, list(pdu.bits)
        else:
            address, values = pdu.address, list(pdu.registers)
        store = pdu.datastore_update

        async def guarded(context: Any, device_id: int) -> ModbusPDU:
            written = values
            if fc == 22:
                old = await context.async_getValues(device_id, _FC[table], address, 1)
                if not isinstance(old, list):  # an illegal address: pymodbus's own step answers it
                    return await store(context, device_id)
                and_mask, or_mask = pdu.and_mask, pdu.or_mask  # type: ignore[attr-defined]
                written = [(old[0] & and_mask) | (or_mask & ~and_mask & 0xFFFF)]
            if device_id in self._write_handlers:
                code = self._check_write(device_id, table, address, written)
                if code:
                    return ExceptionResponse(fc, code, device_id=device_id, transaction=pdu.transaction_id)
            self._forget(device_id, table, address, address + len(written))
            return await store(context, device_id)

        pdu.datastore_update = guarded  # type: ignore[method-assign]

    # --- faults -----------------------------------------------------------------------------------------
    def set_fault(self, unit_id: int, fault: Fault | None) -> None:
        """Make a unit misbehave (``"silent"``, ``"exception"``, ``"garbage"``) or heal it (None)."""
        self._map(unit_id)
        if fault is None:
            self._faults.pop(unit_id, None)
        elif fault in FAULTS:
            self._faults[unit_id] = fault
        else:
            raise ModbusServerError(f"fault = {fault!r}: must be None or one of {', '.join(map(repr, FAULTS))}")
        log.info("modbus_fault_set", address=self.address, unit=unit_id, fault=fault or "none")

    def fault(self, unit_id: int) -> Fault | None:
        return self._faults.get(unit_id)

    def _map(self, unit_id: int) -> RegisterMap:
        try:
            return self.units[unit_id]
        except KeyError:
            raise ModbusServerError(
                f"unit_id = {unit_id!r}: this server ({self.address}) holds units {sorted(self.units)}"
            ) from None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        """pymodbus hook on every decoded request and every reply before it is framed."""
        fault = self._faults.get(pdu.dev_id)
        if not sending:
            if pdu.dev_id not in self.units or fault == "silent":
                return None  # no last_pdu: pymodbus handles nothing and sends nothing
            if pdu.function_code in _READ_FC and pdu.dev_id in self._read_providers:
                self._refresh_read(pdu)  # 23 writes first: its own datastore step runs inside the refreshed one
            if pdu.function_code in _WRITE_TABLE:
                self._guard_write(pdu)
            return pdu
        if fault == "exception" and not isinstance(pdu, ExceptionResponse):
            return ExceptionResponse(
                pdu.function_code, ExcCodes.DEVICE_FAILURE, device_id=pdu.dev_id, transaction=pdu.transaction_id
            )
        return pdu

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus hook on raw bytes; replaces a garbage unit's replies."""
        if not sending or not data:
            return data
        if self.is_tcp:
            if len(data) <= _MBAP_LEN or self._faults.get(data[6]) != "garbage":
                return data
            # keep the MBAP header so the client matches the reply; junk PDU with an undefined function code
            junk = bytes(self._junk.randrange(256) for _ in range(len(data) - _MBAP_LEN - 1))
            return data[:_MBAP_LEN] + bytes([self._junk.randrange(0x41, 0x7F)]) + junk
        if self._faults.get(data[0]) != "garbage":
            return data
        return bytes(self._junk.randrange(256) for _ in range(len(data)))


def units_of(devices: Iterable[tuple[int, RegisterMap]]) -> dict[int, RegisterMap]:
    """Unit id -> map, refusing a unit id twice on one server."""
    out: dict[int, RegisterMap] = {}
    for unit_id, register_map in devices:
        if unit_id in out:
            raise ModbusServerError(f"unit_id = {unit_id}: used twice on one server")
        out[unit_id] = register_map
    return out
