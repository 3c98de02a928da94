"""Modbus RTU on a shared RS-485 line: one arbiter per serial port.

RS-485 is half duplex with one master: only one request may be on the line at a time, and every
frame must be separated from the next by a silence (Modbus over Serial Line v1.02, 2.5.1.1). All
RTU devices wired to one port therefore share a single :class:`SerialBus`: one pymodbus serial
client, one asyncio.Lock so unit ids take turns (FIFO, so no device starves), and the inter-frame
silence enforced by our own clock. The OS and a USB adapter do not guarantee that silence, and a
pty (used in tests) does not even honour the baud rate, so it cannot come from the driver.

A silent unit holds the line for at most ``timeout_s`` per attempt; between two attempts the other
units get their turn, so a dead meter costs the bus ``timeout_s x (retries + 1)`` per poll.

An RTU frame carries no transaction id: an answer that arrives after its request timed out looks
exactly like the answer to the next request to the same unit, and taking it so shifts every later
answer of that unit by one request (a slow meter's block A read as its block B, for ever). So after
a timeout or a garbled answer the unit is kept off the line for one more ``timeout_s`` (the other
units go on meanwhile): its late frame then arrives while no request to it is pending and is
dropped, by pymodbus when nothing is pending, by unit id when another unit's request is.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from serial import SerialException

from protocols.eventlog import EventLog
from protocols.modbus.client import Operation, RetryingTransport, execute_once, open_client
from protocols.modbus.errors import (
    ModbusConnectionError,
    ModbusDeviceError,
    ModbusFrameError,
    ModbusTimeout,
)

log = EventLog("modbus.rtu")

# Bits per character on the line: start + 8 data + parity-or-second-stop + stop (v1.02, 2.5.1).
CHAR_BITS = 11
# v1.02, 2.5.1.1: "for baud rates greater than 19200 Bps, fixed values ... 1.750 ms for t3.5".
FIXED_SILENCE_S = 0.00175
# pymodbus's own response timeout is set out of the way; each call is bounded by its device's timeout.
_CLIENT_TIMEOUT_S = 60.0


def inter_frame_silence_s(baudrate: int) -> float:
    """t3.5: the silence required between two frames on the line [s].

    3.5 character times of 11 bits at ``baudrate`` [bit/s]; above 19200 bit/s the standard fixes
    it at 1.75 ms (Modbus over Serial Line v1.02, 2.5.1.1).
    """
    if baudrate <= 0:
        raise ValueError(f"baudrate = {baudrate}: must be positive")
    if baudrate > 19200:
        return FIXED_SILENCE_S
    return 3.5 * CHAR_BITS / baudrate


@dataclass(frozen=True, slots=True)
class BusTransaction:
    """One request/answer on the line, timed by the arbiter's clock (monotonic seconds)."""

    unit_id: int
    started: float  # the request was handed to the port
    ended: float  # the answer was complete, or the attempt gave up
    outcome: str  # "ok", or the error type name


class SerialLineSettings(Protocol):
    """What the bus needs to know about a port (the agent's SerialSettings fits)."""

    port: str
    baudrate: int
    parity: str
    bytesize: int
    stopbits: int


class SerialBus:
    """The arbiter of one serial port, shared by every RTU device on that line."""

    def __init__(
        self,
        port: str,
        baudrate: int = 19200,
        parity: str = "N",
        bytesize: int = 8,
        stopbits: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        history: int = 1024,
    ) -> None:
        if parity not in ("N", "E", "O") or bytesize not in (7, 8) or stopbits not in (1, 2):
            raise ValueError(f"serial {port}: parity={parity!r} bytesize={bytesize} stopbits={stopbits} not supported")
        self.port = port
        self.baudrate = baudrate
        self.parity = parity
        self.bytesize = bytesize
        self.stopbits = stopbits
        self.silence_s = inter_frame_silence_s(baudrate)
        self.device = f"rtu:{port}"
        self.history: deque[BusTransaction] = deque(maxlen=history)
        self.last_started: float | None = None  # when the latest transaction's request went out [bus clock]
        self._clock = clock
        self._lock = asyncio.Lock()
        self._client: AsyncModbusSerialClient | None = None
        self._last_end: float | None = None
        # unit id -> clock time before which no request goes to it (a late answer may still come)
        self._quiet_until: dict[int, float] = {}
        self._users = 0
        self.flushed_bytes = 0  # stray input discarded before requests (late answers, noise)

    @property
    def settings(self) -> tuple[int, str, int, int]:
        return (self.baudrate, self.parity, self.bytesize, self.stopbits)

    async def _connect(self, label: str) -> AsyncModbusSerialClient:
        if self._client is not None and self._client.connected:
            return self._client
        self._drop()
        client = AsyncModbusSerialClient(
            self.port,
            framer=FramerType.RTU,
            baudrate=self.baudrate,
            parity=self.parity,
            bytesize=self.bytesize,
            stopbits=self.stopbits,
            timeout=_CLIENT_TIMEOUT_S,
            retries=0,  # retries are the transport's, one lock turn each
            reconnect_delay=0,  # no background reopen loop: we reopen on the next transaction
            name=self.device,
        )
        await open_client(label, client, f"cannot open {self.port}")
        self._client = client
        return client

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _flush_input(self, client: AsyncModbusSerialClient) -> None:
        """Discard whatever is in the port's input before a request goes out.

        Bytes the event loop has not read yet (it was busy while a late answer or line noise came in)
        would otherwise be put in front of the next answer: a stray header that promises a longer
        frame makes the framer wait out the timeout of a unit that answered correctly.
        """
        port = getattr(getattr(client.ctx, "transport", None), "sync_serial", None)
        if port is None:
            return
        try:
            waiting = port.in_waiting
            if waiting:
                port.reset_input_buffer()
        except (OSError, SerialException):
            return  # the next transaction finds out whether the port is still there
        if waiting:
            self.flushed_bytes += waiting
            log.info("rtu_input_flushed", port=self.port, bytes=waiting)
        client.ctx.recv_buffer = b""

    async def transact(self, unit_id: int, op: Operation, timeout_s: float) -> ModbusPDU:
        """One attempt of one request to ``unit_id``, holding the line for at most ``timeout_s``.

        Waits until a late answer of this unit's previous failed attempt can no longer arrive (see the
        module doc), then its turn, then the inter-frame silence since the previous transaction ended.
        """
        label = f"{self.device}/{unit_id}"
        quiet = self._quiet_until.pop(unit_id, None)
        if quiet is not None and (wait := quiet - self._clock()) > 0:
            await asyncio.sleep(wait)
        async with self._lock:
            if self._last_end is not None:
                wait = self._last_end + self.silence_s - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
            client = await self._connect(label)
            self._flush_input(client)
            started = self.last_started = self._clock()
            outcome = "ok"
            try:
                return await execute_once(label, client, op, timeout_s, guard_s=timeout_s)
            except ModbusDeviceError as err:
                outcome = type(err).__name__
                if isinstance(err, ModbusConnectionError):
                    self._drop()
                elif isinstance(err, ModbusTimeout | ModbusFrameError):
                    self._quiet_until[unit_id] = self._clock() + timeout_s
                raise
            finally:
                self._last_end = self._clock()
                self.history.append(BusTransaction(unit_id, started, self._last_end, outcome))

    def attach(self) -> None:
        self._users += 1

    async def release(self) -> None:
        """A device stops using the bus; the port closes when the last one has gone."""
        self._users = max(0, self._users - 1)
        if self._users == 0:
            await self.close()

    async def close(self) -> None:
        async with self._lock:
            self._drop()


class SerialBusRegistry:
    """One :class:`SerialBus` per port path, however many devices name it."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._buses: dict[str, SerialBus] = {}
        self._clock = clock

    def get(self, settings: SerialLineSettings) -> SerialBus:
        """The bus for ``settings.port`` (symlinks resolved); the line settings must agree."""
        key = os.path.realpath(settings.port)
        wanted = (settings.baudrate, settings.parity, settings.bytesize, settings.stopbits)
        bus = self._buses.get(key)
        if bus is None:
            bus = SerialBus(settings.port, *wanted, clock=self._clock)
            self._buses[key] = bus
        elif bus.settings != wanted:
            raise ValueError(
                f"serial port {settings.port}: settings {wanted} conflict with {bus.settings} "
                "already used by another device on the same line"
            )
        return bus

    @property
    def buses(self) -> list[SerialBus]:
        return list(self._buses.values())

    async def close(self) -> None:
        for bus in self._buses.values():
            await bus.close()


class RtuTransport(RetryingTransport):
    """The transport of the RTU devices on one bus: each attempt is one turn of the bus lock.

    A call holds the line at most ``timeout_s x (retries + 1)``; between two failed attempts the unit
    also waits ``timeout_s`` off the line for a late answer to pass (see the module doc), so a silent
    unit's call takes up to ``timeout_s x (2 x retries + 1)`` of its own time.
    """

    def __init__(self, bus: SerialBus, *, timeout_s: float = 1.0, retries: int = 1) -> None:
        super().__init__(timeout_s=timeout_s, retries=retries)
        self.bus = bus
        self.device = bus.device
        self._closed = False
        self.sent_at: float | None = None
        bus.attach()

    async def _attempt(self, op: Operation, unit_id: int) -> ModbusPDU:
        # The lock is taken per attempt, not per call, so other units get the line between retries.
        try:
            return await self.bus.transact(unit_id, op, self.timeout_s)
        finally:
            # when this attempt's request went out (the bus's clock, monotonic unless injected): the poller
            # stamps the answer's values halfway between that and the answer
            self.sent_at = self.bus.last_started

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.bus.release()
