"""Modbus TCP framing (the MBAP header) and the request and answer PDUs the agent uses, sans-IO.

No socket here: :class:`FrameReader` takes bytes in and gives whole frames out (or "need more"); the request
builders return bytes; the answer checkers take the PDU of a frame and return values or raise. The asyncio
client (protocols/modbus/client.py, ``TcpTransport``) is a thin layer over this module.

References:
- [MB-TCP] Modbus Messaging on TCP/IP Implementation Guide V1.0b, 3.1.3 (MBAP header: transaction id 2 bytes,
  protocol id 2 bytes = 0 for Modbus, length 2 bytes counting the unit id and the PDU, unit id 1 byte).
- [MB-AP] Modbus Application Protocol Specification V1.1b3: 4.1 (a PDU is at most 253 bytes), 6.1-6.4 (read
  coils, discrete inputs, holding and input registers), 6.5 (write single coil), 6.12 (write multiple
  registers), 7 (exception responses: function code + 0x80, one exception code byte).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MBAP_SIZE = 7  # [MB-TCP] 3.1.3: transaction id, protocol id, length, unit id
MAX_PDU = 253  # [MB-AP] 4.1
MAX_READ_REGISTERS = 125  # [MB-AP] 6.3, 6.4: quantity 1..125
MAX_READ_BITS = 2000  # [MB-AP] 6.1, 6.2: quantity 1..2000
MAX_WRITE_REGISTERS = 123  # [MB-AP] 6.12: quantity 1..123
EXCEPTION_BIT = 0x80  # [MB-AP] 7: an exception answer's function code is the request's + 0x80
COIL_ON, COIL_OFF = 0xFF00, 0x0000  # [MB-AP] 6.5: the only two values of a single coil write

READ_COILS, READ_DISCRETE, READ_HOLDING, READ_INPUT = 1, 2, 3, 4
WRITE_COIL, WRITE_REGISTERS = 5, 16

_HEADER = struct.Struct(">HHHB")
_REGISTERS = [struct.Struct(f">{n}H") for n in range(MAX_READ_REGISTERS + 1)]  # by count: built once
_READ = struct.Struct(">BHH")
_WRITE_COIL = struct.Struct(">BHH")


class MbapError(Exception):
    """Bytes from a Modbus TCP peer that are not what the protocol allows."""


class FramingError(MbapError):
    """The byte stream is not MBAP frames (protocol id not 0, length out of range): the connection is unusable."""


class AnswerError(MbapError):
    """A well-framed answer that does not fit its request (function, byte count, echo)."""


class ExceptionAnswer(MbapError):
    """The device answered with a Modbus exception ([MB-AP] 7)."""

    def __init__(self, function: int, code: int) -> None:
        self.function = function
        self.code = code
        super().__init__(f"exception {code} to function {function}")


@dataclass(frozen=True, slots=True)
class Frame:
    """One MBAP frame: the transaction id, the unit id and the PDU (function code first)."""

    tid: int
    unit: int
    pdu: bytes


def encode_frame(tid: int, unit: int, pdu: bytes) -> bytes:
    """The frame of ``pdu`` for ``unit`` under transaction id ``tid`` ([MB-TCP] 3.1.3)."""
    if not 0 <= tid <= 0xFFFF or not 0 <= unit <= 0xFF or not 1 <= len(pdu) <= MAX_PDU:
        raise ValueError(f"MBAP frame: tid {tid} (0..65535), unit {unit} (0..255), PDU of {len(pdu)} B (1..253)")
    return _HEADER.pack(tid, 0, len(pdu) + 1, unit) + pdu


class FrameReader:
    """Whole MBAP frames out of a byte stream fed in pieces.

    :meth:`feed` takes bytes as they come; :meth:`next_frame` returns the next whole frame or None when more
    bytes are needed. A header that no MBAP frame can have (protocol id not 0, a length that leaves no PDU or
    one longer than 253 bytes) raises :class:`FramingError`, and so does every call after it: there is no way
    to find the next frame boundary in such a stream, so the connection must be dropped. What is buffered is
    bounded by one frame (260 bytes) plus what the last ``feed`` brought.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._error: FramingError | None = None

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._buf += data

    def next_frame(self) -> Frame | None:
        if self._error is not None:
            raise self._error
        buf = self._buf
        if len(buf) < MBAP_SIZE:
            return None
        tid, proto, length, unit = _HEADER.unpack_from(buf)
        if proto != 0 or not 2 <= length <= MAX_PDU + 1:
            self._error = FramingError(
                f"not an MBAP header: {bytes(buf[:MBAP_SIZE]).hex()} (protocol id {proto}, must be 0; "
                f"length {length}, must be 2..254)"
            )
            self._buf = bytearray()
            raise self._error
        end = 6 + length
        if len(buf) < end:
            return None
        pdu = bytes(buf[MBAP_SIZE:end])
        del buf[:end]
        return Frame(tid, unit, pdu)

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet a whole frame."""
        return len(self._buf)


# ---- requests ---------------------------------------------------------------------------------------------------


def read_request(function: int, start: int, count: int) -> bytes:
    """The PDU reading ``count`` registers or bits from ``start`` ([MB-AP] 6.1-6.4)."""
    if function not in (READ_COILS, READ_DISCRETE, READ_HOLDING, READ_INPUT):
        raise ValueError(f"function {function} is not a read (1..4)")
    limit = MAX_READ_BITS if function <= READ_DISCRETE else MAX_READ_REGISTERS
    if not 1 <= count <= limit or start < 0 or start + count > 0x10000:
        raise ValueError(f"read of [{start}:{start + count}]: quantity 1..{limit} within 0..65535")
    return _READ.pack(function, start, count)


def write_registers_request(start: int, values: list[int] | tuple[int, ...]) -> bytes:
    """The PDU writing ``values`` to holding registers from ``start`` ([MB-AP] 6.12)."""
    n = len(values)
    if not 1 <= n <= MAX_WRITE_REGISTERS or start < 0 or start + n > 0x10000:
        raise ValueError(f"write of [{start}:{start + n}]: quantity 1..{MAX_WRITE_REGISTERS} within 0..65535")
    try:
        body = struct.pack(f">{n}H", *values)
    except struct.error as err:
        raise ValueError(f"write of [{start}:{start + n}]: every value must be 0..65535 ({err})") from err
    return struct.pack(">BHHB", WRITE_REGISTERS, start, n, 2 * n) + body


def write_coil_request(addr: int, value: bool) -> bytes:
    """The PDU writing one coil ([MB-AP] 6.5: 0xFF00 on, 0x0000 off)."""
    if not 0 <= addr <= 0xFFFF:
        raise ValueError(f"coil address {addr}: must be 0..65535")
    return _WRITE_COIL.pack(WRITE_COIL, addr, COIL_ON if value else COIL_OFF)


# ---- answers ----------------------------------------------------------------------------------------------------


def _check_function(request_fc: int, pdu: bytes) -> None:
    """Raise :class:`ExceptionAnswer` for an exception answer to ``request_fc``, :class:`AnswerError` for
    an answer to another function."""
    fc = pdu[0]
    if fc == request_fc:
        return
    if fc == request_fc | EXCEPTION_BIT:
        if len(pdu) != 2:
            raise AnswerError(f"exception answer to function {request_fc} of {len(pdu)} bytes (2 expected)")
        raise ExceptionAnswer(request_fc, pdu[1])
    raise AnswerError(f"function {request_fc} answered by function {fc}")


def read_answer(function: int, count: int, pdu: bytes) -> list[int] | list[bool]:
    """The values of the answer to a read of ``count`` registers or bits ([MB-AP] 6.1-6.4)."""
    _check_function(function, pdu)
    if function <= READ_DISCRETE:
        nbytes = (count + 7) // 8
        if len(pdu) != 2 + nbytes or pdu[1] != nbytes:
            raise AnswerError(
                f"read of {count} bits answered with {len(pdu) - 2} data bytes (byte count {pdu[1:2].hex()})"
            )
        return [bool(pdu[2 + i // 8] >> (i % 8) & 1) for i in range(count)]  # LSB first; padding dropped
    if len(pdu) != 2 + 2 * count or pdu[1] != 2 * count:
        n = (len(pdu) - 2) // 2 if len(pdu) >= 2 else 0
        raise AnswerError(f"read of {count} registers answered with {n} registers")
    return list(_REGISTERS[count].unpack_from(pdu, 2))


def write_answer(request: bytes, pdu: bytes) -> None:
    """Check the answer to a write request: both writes echo the request's first 5 bytes ([MB-AP] 6.5, 6.12)."""
    _check_function(request[0], pdu)
    if len(pdu) != 5 or pdu != request[:5]:
        raise AnswerError(f"write answered with {pdu.hex()}, not the echo of {request[:5].hex()}")
