"""Async Modbus transports: Modbus TCP over our own MBAP codec, and the typed layer over pymodbus for RTU.

The poller needs four things from a device link (read a block, write registers, write a coil,
close) and one promise: every failure comes out as a :mod:`protocols.modbus.errors` type, and a call
costs at most ``timeout_s x (retries + 1)``.

TCP (:class:`TcpTransport`): a thin asyncio client over protocols/modbus/mbap.py (sans-IO framing and
PDUs), the hot path of a fleet's poll cycle. RTU (protocols/modbus/serialbus.py): pymodbus's serial
client behind :class:`RetryingTransport` and :func:`execute_once`. pymodbus has its own retry and
reconnect loops that hide time (a silent device costs ``timeout x retries`` inside one call); they are
switched off there (``retries=0``, ``reconnect_delay=0``) and replaced by our own bounded retry count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from protocols.modbus.errors import (
    ModbusConnectionError,
    ModbusDeviceError,
    ModbusExceptionResponse,
    ModbusFrameError,
    ModbusTimeout,
)
from protocols.modbus.mbap import (
    AnswerError,
    ExceptionAnswer,
    Frame,
    FrameReader,
    FramingError,
    encode_frame,
    read_answer,
    read_request,
    write_answer,
    write_coil_request,
    write_registers_request,
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


class _LinkEnded(Exception):
    """The connection ended under a pending request; ``bad_frame``: because the peer sent what is not MBAP."""

    def __init__(self, message: str, *, bad_frame: bool) -> None:
        super().__init__(message)
        self.bad_frame = bad_frame


class _NoAnswer(Exception):
    """A pending request's timer fired."""


class _MbapConnection(asyncio.Protocol):
    """One TCP connection to a Modbus TCP server: requests by transaction id, answers matched to them.

    Every pending request's future is completed exactly once: with its answer frame, by its timer, or with the
    error that ended the connection (a stream that is not MBAP, an answer to no pending request, the peer
    closing). The transport turns these into the typed errors, named by the unit asked.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader()
        self.pending: dict[int, asyncio.Future[Frame]] = {}
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader, pending = self.reader, self.pending
        try:
            reader.feed(data)
            while (frame := reader.next_frame()) is not None:
                waiter = pending.pop(frame.tid, None)
                if waiter is None:
                    raise FramingError(f"an answer with transaction id {frame.tid}, which no pending request has")
                if not waiter.done():
                    waiter.set_result(frame)
        except FramingError as err:
            self.end(_LinkEnded(f"unusable answer: {err}", bad_frame=True))

    def connection_lost(self, exc: Exception | None) -> None:
        why = f": {exc}" if exc is not None else ""
        self.end(_LinkEnded(f"the peer closed the connection{why}", bad_frame=False))

    def end(self, err: _LinkEnded) -> None:
        """Close the connection: every pending request fails with ``err``."""
        self.closed = True
        pending, self.pending = self.pending, {}
        for waiter in pending.values():
            if not waiter.done():
                waiter.set_exception(err)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def _expire(waiter: asyncio.Future[Frame]) -> None:
    if not waiter.done():
        waiter.set_exception(_NoAnswer())


class TcpTransport:
    """Modbus TCP to one host:port (one or more unit ids behind it, e.g. a gateway).

    A thin asyncio client over our own MBAP codec (protocols/modbus/mbap.py) rather than pymodbus's client: on
    a cycle that polls a fleet from one event loop, what each request costs in Python adds up in the cycle
    time, and pymodbus's transaction layer (framer, PDU classes, trace hooks, its own locking) costs about as
    much again as the socket work itself (benchmarks/polling.py; docs/modbus-tcp.md). RTU stays on pymodbus
    (protocols/modbus/serialbus.py).

    Connects lazily on the first call; after a timeout, a frame error or a lost link the socket is dropped, so
    the next attempt starts on a fresh connection with no stale answer in flight. A peer that closes the
    connection fails the pending request at once (ModbusConnectionError). Each call costs at most
    ``timeout_s x (retries + 1)`` (plus the connect, bounded by ``timeout_s`` too); a Modbus exception answer
    is not retried (the device answered) and keeps the link.
    """

    def __init__(self, host: str, port: int = 502, *, timeout_s: float = 1.0, retries: int = 1) -> None:
        if timeout_s <= 0 or retries < 0:
            raise ValueError(f"timeout_s={timeout_s} must be > 0 and retries={retries} >= 0")
        self.timeout_s = timeout_s
        self.retries = retries
        self.host = host
        self.port = port
        self.device = f"tcp:{host}:{port}"
        self._conn: _MbapConnection | None = None
        self._one_at_a_time = asyncio.Lock()
        self._tid = 0

    async def _open(self, unit_id: int) -> _MbapConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                _, conn = await loop.create_connection(_MbapConnection, self.host, self.port)
        except TimeoutError as err:
            raise ModbusConnectionError(
                f"{self.device}/{unit_id}", f"cannot connect: no answer within {self.timeout_s} s"
            ) from err
        except OSError as err:
            raise ModbusConnectionError(
                f"{self.device}/{unit_id}", f"cannot connect (refused or no route): {err}"
            ) from err
        return conn

    async def _transact(self, unit_id: int, pdu: bytes) -> bytes:
        """One attempt: send ``pdu`` to ``unit_id``, return the answer's PDU (any function code).

        One request in flight at a time: many devices and gateways (pymodbus's server too) answer pipelined
        requests out of order or under the wrong transaction id."""
        async with self._one_at_a_time:
            conn = self._conn
            if conn is None or conn.closed:
                conn = self._conn = await self._open(unit_id)
            return await self._exchange(conn, unit_id, pdu)

    async def _exchange(self, conn: _MbapConnection, unit_id: int, pdu: bytes) -> bytes:
        self._tid = tid = self._tid % 0xFFFF + 1  # 1..65535: a zeroed answer never matches
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Frame] = loop.create_future()
        conn.pending[tid] = waiter
        timer = loop.call_later(self.timeout_s, _expire, waiter)
        answered = False
        try:
            assert conn.transport is not None
            conn.transport.write(encode_frame(tid, unit_id, pdu))
            frame = await waiter
            answered = True
        except _NoAnswer as err:
            raise ModbusTimeout(f"{self.device}/{unit_id}", f"no answer within {self.timeout_s} s") from err
        except _LinkEnded as err:
            kind = ModbusFrameError if err.bad_frame else ModbusConnectionError
            raise kind(f"{self.device}/{unit_id}", str(err)) from err
        finally:
            timer.cancel()
            if not answered:  # timed out, failed or cancelled: a late answer must not meet the next request
                conn.pending.pop(tid, None)
                self._drop()
        if frame.unit != unit_id:
            raise ModbusFrameError(f"{self.device}/{unit_id}", f"an answer from unit {frame.unit}")
        return frame.pdu

    async def _call(self, unit_id: int, pdu: bytes, check: Callable[[bytes], Any]) -> Any:
        """``check`` of the answer to ``pdu``, with the bounded retry of :class:`RetryingTransport`."""
        last: ModbusDeviceError | None = None
        for _attempt in range(self.retries + 1):
            try:
                answer = await self._transact(unit_id, pdu)
                return check(answer)
            except ExceptionAnswer as err:
                raise ModbusExceptionResponse(f"{self.device}/{unit_id}", err.code, err.function) from err
            except AnswerError as err:
                last = ModbusFrameError(f"{self.device}/{unit_id}", f"unusable answer: {err}")
                last.__cause__ = err
                self._drop()
            except (ModbusTimeout, ModbusConnectionError, ModbusFrameError) as err:
                last = err
                self._drop()
        assert last is not None
        raise last

    async def read(self, table: Table, start: int, count: int, unit_id: int) -> list[int] | list[bool]:
        fc = READ_FUNCTION[table]
        pdu = read_request(fc, start, count)
        return await self._call(unit_id, pdu, lambda answer: read_answer(fc, count, answer))

    async def write_registers(self, start: int, values: Sequence[int], unit_id: int) -> None:
        pdu = write_registers_request(start, list(values))
        await self._call(unit_id, pdu, lambda answer: write_answer(pdu, answer))

    async def write_coil(self, addr: int, value: bool, unit_id: int) -> None:
        pdu = write_coil_request(addr, bool(value))
        await self._call(unit_id, pdu, lambda answer: write_answer(pdu, answer))

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.end(_LinkEnded("the link was closed", bad_frame=False))
            self._conn = None

    async def close(self) -> None:
        self._drop()
