"""GridEdge wave stream: live blocks of sampled waveforms over TCP (our own framing, docs/devices/sim-waveforms.md).

Every frame, all integers big-endian::

    offset size field
    0      2    magic 0x57 0x46 ("WF")
    2      1    version (1)
    3      1    type: 1 HEADER, 2 DATA, 3 END
    4      4    payload length L [bytes], at most max_payload
    8      L    payload
    8+L    4    CRC-32 (IEEE 802.3, zlib.crc32) of bytes 0 .. 8+L-1

HEADER payload: UTF-8 JSON ``{"stream", "channels", "units", "rate_hz", "t0", "nominal_hz"}`` (t0 = UTC epoch
seconds of sample index 0). DATA payload: seq (u32, +1 per block, wraps), first_sample (u64, index of the
block's first sample), n_samples (u32), n_channels (u16), reserved (u16, 0), then n_channels x n_samples
float32, channel after channel. END payload: next seq (u32), end_sample (u64): the stream ended cleanly.

:class:`StreamDecoder` is sans-IO (feed bytes, pull events) and returns errors as values: garbage
(:class:`SyncError`, with the bytes skipped), a damaged frame (:class:`CrcError`), a frame over the bound
(:class:`SizeError`), a frame that passes its CRC but makes no sense (:class:`MalformedError`) and a hole in
the sequence (:class:`GapError`, reported before the block that follows the hole). After a CRC failure it
looks for the next magic one byte further, so it resynchronises on the next good frame. Decisions depend only
on the bytes, never on how they were split. :class:`WaveStreamClient` is the asyncio reader on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import struct
import zlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"WF"
VERSION = 1
HEADER, DATA, END = 1, 2, 3
PREFIX = struct.Struct(">2sBBI")  # magic, version, type, payload length
DATA_HEAD = struct.Struct(">IQIHH")  # seq, first_sample, n_samples, n_channels, reserved
END_BODY = struct.Struct(">IQ")
CRC = struct.Struct(">I")
DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024
SEQ_MOD = 1 << 32


class WaveStreamError(ValueError):
    """Anything wrong on a wave stream."""


class SyncError(WaveStreamError):
    """Bytes that are not a frame: ``skipped`` of them were discarded."""

    def __init__(self, message: str, skipped: int) -> None:
        super().__init__(message)
        self.skipped = skipped


class CrcError(WaveStreamError):
    def __init__(self, message: str, expected: int, actual: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class SizeError(WaveStreamError):
    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class MalformedError(WaveStreamError):
    """A frame whose CRC passes but whose contents are not valid (bad JSON, wrong sizes, data before header)."""


class GapError(WaveStreamError):
    """Blocks are missing: ``expected_seq`` was due, ``seq`` came; ``missing_samples`` were lost."""

    def __init__(self, expected_seq: int, seq: int, missing_samples: int) -> None:
        super().__init__(f"sequence gap: expected seq {expected_seq}, got {seq} ({missing_samples} samples missing)")
        self.expected_seq = expected_seq
        self.seq = seq
        self.missing_samples = missing_samples


@dataclass(frozen=True, slots=True)
class Header:
    channels: tuple[str, ...]
    units: tuple[str, ...]
    rate_hz: float
    t0: float
    nominal_hz: float = 50.0
    stream: str = ""

    def __post_init__(self) -> None:
        if not self.channels or len(self.channels) != len(self.units) or len(self.channels) > 0xFFFF:
            raise MalformedError(f"channels {self.channels} / units {self.units}: same non-zero length expected")
        if not (math.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise MalformedError(f"rate_hz = {self.rate_hz}: expected > 0")
        if not math.isfinite(self.t0):
            raise MalformedError(f"t0 = {self.t0}: expected a finite epoch time")


@dataclass(frozen=True, slots=True)
class Block:
    """``data[c, k]``: channel c at sample ``first_sample + k``, time ``t0 + (first_sample + k) / rate_hz``."""

    seq: int
    first_sample: int
    data: np.ndarray
    rate_hz: float = 0.0
    t0: float = 0.0

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[1])

    @property
    def start_time(self) -> float:
        return self.t0 + self.first_sample / self.rate_hz


@dataclass(frozen=True, slots=True)
class End:
    seq: int
    end_sample: int


@dataclass(frozen=True, slots=True)
class NeedData:
    """No complete frame buffered: feed more bytes."""


NEED_DATA = NeedData()
Event = Header | Block | End | WaveStreamError | NeedData


# ---- encoding ---------------------------------------------------------------------------------------------


def _frame(ftype: int, payload: bytes) -> bytes:
    head = PREFIX.pack(MAGIC, VERSION, ftype, len(payload))
    return head + payload + CRC.pack(zlib.crc32(payload, zlib.crc32(head)))


def encode_header(header: Header) -> bytes:
    body = {
        "stream": header.stream,
        "channels": list(header.channels),
        "units": list(header.units),
        "rate_hz": header.rate_hz,
        "t0": header.t0,
        "nominal_hz": header.nominal_hz,
    }
    return _frame(HEADER, json.dumps(body, separators=(",", ":")).encode())


def encode_block(seq: int, first_sample: int, data: np.ndarray) -> bytes:
    """A DATA frame of ``data[n_channels, n_samples]`` (sent as float32)."""
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[0] > 0xFFFF:
        raise WaveStreamError(f"data shape {data.shape}: expected (1..65535 channels, n samples)")
    head = DATA_HEAD.pack(seq % SEQ_MOD, first_sample, data.shape[1], data.shape[0], 0)
    return _frame(DATA, head + np.ascontiguousarray(data, dtype=">f4").tobytes())


def encode_end(seq: int, end_sample: int) -> bytes:
    return _frame(END, END_BODY.pack(seq % SEQ_MOD, end_sample))


# ---- decoding ---------------------------------------------------------------------------------------------


class StreamDecoder:
    """Sans-IO: ``feed(bytes)``, then ``next_event()`` until it returns :data:`NEED_DATA`."""

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if max_payload < END_BODY.size:
            raise ValueError(f"max_payload = {max_payload}: at least {END_BODY.size}")
        self.max_payload = max_payload
        self.header: Header | None = None
        self._buf = bytearray()
        self._skipped = 0
        self._absorb = 0  # bytes of a frame that failed its CRC: reported by the CrcError, not as garbage
        self._pending: deque[Event] = deque()
        self._next_seq: int | None = None
        self._next_sample: int | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def _plausible(self, i: int) -> bool | None:
        """Whether a frame may start at i: True, False, or None (not enough bytes to tell)."""
        b = self._buf
        for k, want in enumerate(MAGIC):
            if i + k >= len(b):
                return None
            if b[i + k] != want:
                return False
        if i + PREFIX.size > len(b):
            return None
        _, ver, ftype, length = PREFIX.unpack_from(b, i)
        return ver == VERSION and ftype in (HEADER, DATA, END) and length <= self.max_payload

    def _skip(self, n: int) -> None:
        del self._buf[:n]
        absorbed = min(n, self._absorb)
        self._absorb -= absorbed
        self._skipped += n - absorbed

    def _resync(self) -> WaveStreamError | None:
        """Drop bytes up to the next plausible frame start; report skipped garbage once its extent is known."""
        i = 0
        while True:
            p = self._plausible(i)
            if p is None:
                break
            if p:
                break
            nxt = self._buf.find(MAGIC[:1], i + 1)
            i = len(self._buf) if nxt < 0 else nxt
        if i:
            self._skip(i)
        if self._plausible(0):
            self._absorb = 0
        if self._skipped and self._plausible(0):
            n, self._skipped = self._skipped, 0
            return SyncError(f"skipped {n} bytes of garbage before a frame", n)
        return None

    def next_event(self) -> Event:
        if self._pending:
            return self._pending.popleft()
        err = self._resync()
        if err:
            return err
        if not self._buf or not self._plausible(0):
            return NEED_DATA
        _, _, ftype, length = PREFIX.unpack_from(self._buf, 0)
        total = PREFIX.size + length + CRC.size
        if len(self._buf) < total:
            return NEED_DATA
        frame = bytes(self._buf[:total])
        expected = zlib.crc32(frame[:-4])
        (actual,) = CRC.unpack_from(frame, total - 4)
        if expected != actual:
            # the 'frame' may have been a false magic in garbage: look again one byte on; the bytes up to its
            # claimed end are accounted for by this CrcError, not by a later SyncError
            self._absorb = total
            self._skip(1)
            return CrcError(f"CRC-32 {actual:#010x} on the wire, {expected:#010x} computed", expected, actual)
        del self._buf[:total]
        return self._decode(ftype, frame[PREFIX.size : PREFIX.size + length])

    def _decode(self, ftype: int, payload: bytes) -> Event:
        if ftype == HEADER:
            try:
                body = json.loads(payload.decode())
                header = Header(
                    channels=tuple(body["channels"]),
                    units=tuple(body["units"]),
                    rate_hz=float(body["rate_hz"]),
                    t0=float(body["t0"]),
                    nominal_hz=float(body.get("nominal_hz", 50.0)),
                    stream=str(body.get("stream", "")),
                )
            except MalformedError as err:
                return err
            except (ValueError, KeyError, TypeError) as err:
                return MalformedError(f"HEADER payload: {err}")
            self.header = header
            self._next_seq = self._next_sample = None  # a new header starts a new sequence
            return header
        if ftype == END:
            if len(payload) != END_BODY.size:
                return MalformedError(f"END payload of {len(payload)} bytes, expected {END_BODY.size}")
            return End(*END_BODY.unpack(payload))
        if len(payload) < DATA_HEAD.size:
            return MalformedError(f"DATA payload of {len(payload)} bytes, shorter than its {DATA_HEAD.size}-byte head")
        seq, first, n, n_ch, _ = DATA_HEAD.unpack_from(payload)
        if len(payload) != DATA_HEAD.size + 4 * n * n_ch:
            return MalformedError(f"DATA seq {seq}: {len(payload)} bytes for {n_ch} channels x {n} samples")
        if self.header is None:
            return MalformedError(f"DATA seq {seq} before any HEADER")
        if n_ch != len(self.header.channels):
            return MalformedError(f"DATA seq {seq}: {n_ch} channels, the header has {len(self.header.channels)}")
        data = np.frombuffer(payload, dtype=">f4", offset=DATA_HEAD.size).reshape(n_ch, n).astype(np.float64)
        block = Block(seq, first, data, self.header.rate_hz, self.header.t0)
        gap = None
        if self._next_seq is not None and (seq != self._next_seq or first != self._next_sample):
            gap = GapError(self._next_seq, seq, first - (self._next_sample or 0))
        self._next_seq, self._next_sample = (seq + 1) % SEQ_MOD, first + n
        if gap:
            self._pending.append(block)
            return gap
        return block


def decode_all(data: bytes, **kw: int) -> list[Event]:
    """Every event in ``data`` (a test and tooling helper)."""
    dec = StreamDecoder(**kw)
    dec.feed(data)
    out: list[Event] = []
    while not isinstance(ev := dec.next_event(), NeedData):
        out.append(ev)
    return out


# ---- asyncio client ---------------------------------------------------------------------------------------


@dataclass
class ClientStats:
    blocks: int = 0
    samples: int = 0
    gaps: int = 0
    missing_samples: int = 0
    bad_frames: int = 0
    garbage_bytes: int = 0


@dataclass
class WaveStreamClient:
    """Reads a wave stream: ``async with WaveStreamClient(host, port) as c: async for block in c: ...``.

    ``__anext__`` raises the typed error of a gap or a bad frame (GapError, CrcError, SyncError,
    SizeError, MalformedError) and keeps its place: iterating again continues with the next frame.
    Iteration stops at END or when the server closes the connection.
    """

    host: str
    port: int
    max_payload: int = DEFAULT_MAX_PAYLOAD
    read_size: int = 256 * 1024
    connect_timeout_s: float = 5.0
    stats: ClientStats = field(default_factory=ClientStats)
    header: Header | None = None
    end: End | None = None
    _decoder: StreamDecoder = field(init=False)
    _reader: asyncio.StreamReader | None = field(default=None, init=False)
    _writer: asyncio.StreamWriter | None = field(default=None, init=False)
    _eof: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._decoder = StreamDecoder(max_payload=self.max_payload)

    async def connect(self) -> Header:
        """Open the connection and wait for the HEADER frame."""
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.connect_timeout_s
        )
        while self.header is None:
            ev = await self._next()
            if ev is None:
                raise MalformedError("connection closed before a HEADER frame")
        return self.header

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):  # the peer reset the connection: it is closed either way
                await self._writer.wait_closed()
            self._writer = None

    async def __aenter__(self) -> WaveStreamClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> WaveStreamClient:
        return self

    async def __anext__(self) -> Block:
        while True:
            ev = await self._next()
            if ev is None:
                raise StopAsyncIteration
            if isinstance(ev, Block):
                return ev
            if isinstance(ev, WaveStreamError):
                raise ev

    async def events(self) -> AsyncIterator[Block | WaveStreamError]:
        """Blocks and errors as values, for callers that count rather than catch."""
        while (ev := await self._next()) is not None:
            if isinstance(ev, Block | WaveStreamError):
                yield ev

    async def _next(self) -> Header | Block | End | WaveStreamError | None:
        while True:
            ev = self._decoder.next_event()
            if isinstance(ev, NeedData):
                if self._eof or self.end is not None:
                    return None
                if self._reader is None:
                    raise WaveStreamError("not connected: call connect() or use 'async with'")
                data = await self._reader.read(self.read_size)
                if not data:
                    self._eof = True
                else:
                    self._decoder.feed(data)
                continue
            self._count(ev)
            if isinstance(ev, Header):
                self.header = ev
            elif isinstance(ev, End):
                self.end = ev
                return None
            return ev

    def _count(self, ev: Event) -> None:
        s = self.stats
        if isinstance(ev, Block):
            s.blocks += 1
            s.samples += ev.n_samples
        elif isinstance(ev, GapError):
            s.gaps += 1
            s.missing_samples += max(0, ev.missing_samples)
        elif isinstance(ev, SyncError):
            s.garbage_bytes += ev.skipped
        elif isinstance(ev, WaveStreamError):
            s.bad_frames += 1


def concat(blocks: Sequence[Block]) -> np.ndarray:
    """The samples of consecutive blocks side by side: ``[n_channels, sum n_samples]``."""
    return np.concatenate([b.data for b in blocks], axis=1) if blocks else np.empty((0, 0))
