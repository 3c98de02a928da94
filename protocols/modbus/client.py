"""Async Modbus transports: a thin, typed layer over pymodbus.

The poller needs four things from a device link (read a block, write registers, write a coil,
close) and one promise: every failure comes out as a :mod:`protocols.modbus.errors` type. pymodbus
has its own retry and reconnect loops that hide time (a silent device costs ``timeout x retries``
inside one call, a dead host reconnects in a background task); they are switched off here
(``retries=0``, ``reconnect_delay=0``) and replaced by our own bounded retry count, so the caller
knows the worst-case cost of a call: ``timeout_s x (retries + 1)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from protocols.modbus.errors import (
    ModbusConnectionError,
    ModbusDeviceError,
    ModbusExceptionResponse,
    ModbusFrameError,
    ModbusTimeout,
)
from protocols.modbus.registermap import MAX_READ_BITS, MAX_READ_REGISTERS, Table


class ModbusTransport(Protocol):
    """What a poller needs from a link to one or more Modbus devices."""

    device: str

    async def read(self, table: Table, start: int, count: int, unit_id: int) -> list[int] | list[bool]: ...

    async def write_registers(self, start: int, values: Sequence[int], unit_id: int) -> None: ...

    async def write_coil(self, addr: int, value: bool, unit_id: int) -> None: ...

    async def close(self) -> None: ...


# Modbus Application Protocol v1.1b3, 6.1-6.4: the read function of each table.
READ_FUNCTION: dict[Table, int] = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}

# One pymodbus call on a connected client.
Operation = Callable[[Any], Awaitable[ModbusPDU]]


def read_operation(table: Table, start: int, count: int, unit_id: int) -> Operation:
    """The pymodbus call for a read of ``count`` registers/bits of ``table`` (validated first)."""
    limit = MAX_READ_BITS if table.is_bits else MAX_READ_REGISTERS
    if not 1 <= count <= limit or start < 0 or start + count > 0x10000:
        raise ValueError(f"read of {table.value}[{start}:{start + count}]: quantity 1..{limit} within 0..65535")
    method = {
        Table.HOLDING: "read_holding_registers",
        Table.INPUT: "read_input_registers",
        Table.COIL: "read_coils",
        Table.DISCRETE: "read_discrete_inputs",
    }[table]
    return lambda client: getattr(client, method)(start, count=count, device_id=unit_id)


def read_result(device: str, table: Table, count: int, pdu: ModbusPDU) -> list[int] | list[bool]:
    """The values of a read answer, checked for function and length (else a frame error)."""
    fc = getattr(pdu, "function_code", None)
    if fc != READ_FUNCTION[table]:
        raise ModbusFrameError(
            device, f"read of {table.value} (function {READ_FUNCTION[table]}) answered by function {fc}"
        )
    if table.is_bits:
        bits = getattr(pdu, "bits", None)
        if not isinstance(bits, list) or len(bits) < count:
            raise ModbusFrameError(device, f"read of {count} bits answered with {bits!r}")
        return [bool(b) for b in bits[:count]]  # bit answers are padded to a whole byte
    regs = getattr(pdu, "registers", None)
    if not isinstance(regs, list) or len(regs) != count:
        n = len(regs) if isinstance(regs, list) else regs
        raise ModbusFrameError(device, f"read of {count} registers answered with {n} registers")
    return list(regs)


async def execute_once(
    device: str, client: Any, op: Operation, timeout_s: float, guard_s: float | None = None
) -> ModbusPDU:
    """Run one pymodbus call and translate every outcome into a value or one of our errors.

    pymodbus signals a silent device with ModbusIOException, a closed link with
    ConnectionException, and a Modbus exception answer with a PDU whose ``isError()`` is true.
    ``guard_s`` (default ``2 x timeout_s``) bounds the whole call in case pymodbus's own timeout does
    not fire; a shared serial bus passes ``timeout_s`` itself, because its one pymodbus client
    serves devices with different timeouts.
    """
    try:
        async with asyncio.timeout(guard_s if guard_s is not None else timeout_s * 2 + 0.1):
            pdu = await op(client)
    except TimeoutError as err:
        raise ModbusTimeout(device, f"no answer within {timeout_s} s") from err
    except ConnectionException as err:
        raise ModbusConnectionError(device, f"link down: {err}") from err
    except ModbusIOException as err:
        if "No response" in str(err):
            raise ModbusTimeout(device, f"no answer within {timeout_s} s") from err
        raise ModbusFrameError(device, f"unusable answer: {err}") from err
    except ModbusException as err:
        raise ModbusFrameError(device, f"unusable answer: {err}") from err
    except OSError as err:
        raise ModbusConnectionError(device, f"link error: {err}") from err
    except Exception as err:  # noqa: BLE001 - hostile bytes may trip anything inside pymodbus's decoders
        raise ModbusFrameError(device, f"unusable answer: {type(err).__name__}: {err}") from err
    if pdu is None:
        raise ModbusFrameError(device, "no PDU in the answer")
    if isinstance(pdu, ExceptionResponse):
        raise ModbusExceptionResponse(device, pdu.exception_code, pdu.function_code & 0x7F)
    if pdu.isError():
        raise ModbusFrameError(device, f"error answer {pdu}")
    return pdu


async def open_client(label: str, client: Any, failure: str, *, refused_hint: str = "") -> None:
    """Open a fresh pymodbus client, or close it again and raise :class:`ModbusConnectionError`.

    Closing on failure matters: a client left half-open keeps its socket or port handle, and the
    next attempt builds a new one. ``failure`` starts the message (``"cannot connect"``);
    ``refused_hint`` is added when pymodbus only says "not connected" without a reason.
    """
    try:
        ok = await client.connect()
    except (OSError, ModbusException) as err:
        client.close()
        raise ModbusConnectionError(label, f"{failure}: {err}") from err
    if not ok:
        client.close()
        raise ModbusConnectionError(label, f"{failure}{refused_hint}")


class RetryingTransport:
    """The part of a :class:`ModbusTransport` that TCP and RTU share: a bounded retry of attempts.

    A subclass says what one attempt is (:meth:`_attempt`) and how it closes; this class owns the
    retry count and the rule for which errors are worth another attempt, so both links cost at most
    ``timeout_s x (retries + 1)`` per call and fail with the same typed errors.
    """

    device: str

    def __init__(self, *, timeout_s: float, retries: int) -> None:
        if timeout_s <= 0 or retries < 0:
            raise ValueError(f"timeout_s={timeout_s} must be > 0 and retries={retries} >= 0")
        self.timeout_s = timeout_s
        self.retries = retries

    async def _attempt(self, op: Operation, unit_id: int) -> ModbusPDU:
        """One try of ``op`` on ``unit_id``, failing only with a :class:`ModbusDeviceError`."""
        raise NotImplementedError

    def _attempt_failed(self) -> None:
        """Called after an attempt failed in a way worth retrying (e.g. to drop a stale link)."""

    async def _run(self, op: Operation, unit_id: int) -> ModbusPDU:
        last: ModbusDeviceError | None = None
        for _attempt in range(self.retries + 1):
            try:
                return await self._attempt(op, unit_id)
            except ModbusExceptionResponse:
                raise  # the device answered: asking again changes nothing
            except (ModbusTimeout, ModbusConnectionError, ModbusFrameError) as err:
                last = err
                self._attempt_failed()
        assert last is not None
        raise last

    async def read(self, table: Table, start: int, count: int, unit_id: int) -> list[int] | list[bool]:
        pdu = await self._run(read_operation(table, start, count, unit_id), unit_id)
        return read_result(f"{self.device}/{unit_id}", table, count, pdu)

    async def write_registers(self, start: int, values: Sequence[int], unit_id: int) -> None:
        vals = list(values)
        await self._run(lambda c: c.write_registers(start, vals, device_id=unit_id), unit_id)

    async def write_coil(self, addr: int, value: bool, unit_id: int) -> None:
        await self._run(lambda c: c.write_coil(addr, bool(value), device_id=unit_id), unit_id)

    async def close(self) -> None:
        raise NotImplementedError


class TcpTransport(RetryingTransport):
    """Modbus TCP to one host:port (one or more unit ids behind it, e.g. a gateway).

    Connects lazily on the first call; after a timeout, a frame error or a lost link the socket is
    dropped, so the next attempt starts on a fresh connection with no stale answer in flight. A peer
    that closes the connection fails the pending request at once (ModbusConnectionError): pymodbus
    alone would leave it waiting for the whole timeout.
    """

    def __init__(self, host: str, port: int = 502, *, timeout_s: float = 1.0, retries: int = 1) -> None:
        super().__init__(timeout_s=timeout_s, retries=retries)
        self.host = host
        self.port = port
        self.device = f"tcp:{host}:{port}"
        self._client: AsyncModbusTcpClient | None = None
        self._received = False  # bytes came in since the current attempt sent its request
        self._in_flight = False  # an attempt is waiting for its answer

    async def _connect(self, label: str) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        self._drop()
        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            timeout=self.timeout_s,
            retries=0,  # our own retry loop, so the cost of a call is bounded and visible
            reconnect_delay=0,  # no background reconnect task: we reconnect on the next call
            name=self.device,
            trace_connect=lambda up: None if up else self._link_lost(client),
            trace_packet=self._trace_packet,
        )
        await open_client(label, client, "cannot connect", refused_hint=" (refused or no route)")
        self._client = client
        return client

    def _link_lost(self, client: AsyncModbusTcpClient) -> None:
        """The connection went down: fail the pending request now instead of at its timeout."""
        pending = client.ctx.response_future
        if not self._in_flight or pending.done():
            return
        if self._received:  # pymodbus closes the link itself on an answer it cannot decode
            pending.set_exception(ModbusIOException("undecodable answer, connection closed"))
        else:
            pending.set_exception(ConnectionException("the peer closed the connection"))

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._received = True
        return data

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _attempt(self, op: Operation, unit_id: int) -> ModbusPDU:
        label = f"{self.device}/{unit_id}"
        client = await self._connect(label)
        self._received = False
        self._in_flight = True
        try:
            return await execute_once(label, client, op, self.timeout_s)
        finally:
            self._in_flight = False

    def _attempt_failed(self) -> None:
        self._drop()

    async def close(self) -> None:
        self._drop()
