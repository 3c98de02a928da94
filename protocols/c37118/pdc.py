"""The PDC side of C37.118.2: an asyncio client over the sans-IO :class:`StreamReader`.

:class:`PdcSession` is one connection: connect, "data off", ask for the configuration (6.6 Table 15),
wait for it, "data on", then frames. :class:`PdcClient` keeps a session alive forever: it follows
configuration changes (STAT bit 10, a new CFGCNT, or data frames that no longer fit the configuration
-> ask again), and reconnects with exponential backoff and jitter after any failure, a stream that
stops (no data frame within ``stale_periods`` frame periods) included. :class:`Aligner` lines up
frames from several PMUs by timestamp within a wait window, as a PDC does.

Commands go over TCP; with ``PmuEndpoint.udp_port`` the data comes as UDP datagrams to that port
(the session names the port to the PMU with the extended command ``b"UDPP" + port``, which a PMU
configured for UDP ignores).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import socket
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from operator import length_hint

from protocols.c37118.codec import encode_frame
from protocols.c37118.errors import ConfigMismatchError, FrameError
from protocols.c37118.frames import (
    Command,
    CommandFrame,
    ConfigFrame,
    DataFrame,
    Frame,
    FrameType,
    HeaderFrame,
    Timestamp,
    pmu_value_count,
)
from protocols.c37118.stream import NEED_DATA, StreamReader
from protocols.eventlog import EventLog

log = EventLog("c37118")

UDP_PORT_COMMAND = b"UDPP"  # extended command (CMD 8) naming the UDP port data should go to
_CFG_COMMAND = {1: Command.SEND_CFG1, 2: Command.SEND_CFG2, 3: Command.SEND_CFG3}
_CFG_TYPE = {1: FrameType.CFG1, 2: FrameType.CFG2, 3: FrameType.CFG3}
STAT_CONFIG_CHANGED = 0x0400  # STAT bit 10: configuration change within a minute (C37.118.2-2011 6.3 Table 7)
HEAD_BYTES = 32  # the first bytes of a connection kept to show what a peer that is not a PMU sent


def stat_word_indices(config: ConfigFrame) -> tuple[int, ...]:
    """Where each PMU's STAT word sits in :attr:`DataFrame.words` for ``config`` (6.3 Table 5 order)."""
    out = []
    i = 5  # SYNC, FRAMESIZE, IDCODE, SOC, FRACSEC
    for pmu in config.pmus:
        out.append(i)
        i += pmu_value_count(pmu)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Received:
    """What the peer sent on the TCP connection before the session failed: a probe says it to the user.

    ``nbytes`` counts every byte, ``head`` holds the first :data:`HEAD_BYTES` of them; ``frames`` counts the
    frames other than the configuration asked for, by kind (``"data"``, ``"command"``, ``"header"``, ``"CFG-1"``,
    ...) and IDCODE (data frames are counted before any configuration could decode them); ``requests`` is how
    many configuration requests had been sent.
    """

    nbytes: int = 0
    head: bytes = b""
    frames: tuple[tuple[str, int, int], ...] = ()  # (kind, IDCODE, count), in the order first seen
    requests: int = 0


class PdcError(Exception):
    """A PMU connection that cannot go on; the client reconnects, a probe reports it.

    Raised by :meth:`PdcSession.open`, it carries :attr:`received`: what the peer had sent by then.
    """

    received: Received = Received()


class PdcConnectError(PdcError):
    """The TCP connection could not be made (refused, unreachable, timed out)."""


class PdcTimeoutError(PdcError):
    """The PMU did not answer in time (no configuration after the request).

    ``frame_errors`` are the bad frames seen meanwhile: a peer that talks garbage, not a silent one.
    """

    def __init__(self, message: str, frame_errors: list[FrameError] | None = None) -> None:
        super().__init__(message)
        self.frame_errors = frame_errors or []


class StaleStreamError(PdcError):
    """No data frame within the stale timeout: the PMU stopped sending while the connection stays up."""


class ConnectionClosedError(PdcError):
    """The PMU closed the connection."""


@dataclass(frozen=True, slots=True)
class PmuEndpoint:
    """Where a PMU is and how to talk to it.

    ``idcode`` is the PMU's IDCODE, the destination of our commands (6.6); ``cfg_version`` which
    configuration to ask for (2 or 3; 1 is accepted and then used to decode data, as a probe does);
    ``udp_port`` receive data over UDP on that local port (commands stay on TCP).
    """

    host: str
    port: int = 4712
    idcode: int = 1
    cfg_version: int = 2
    udp_port: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port = {self.port!r}: 1..65535")
        if not 0 <= self.idcode < 65536:
            raise ValueError(f"idcode = {self.idcode!r}: 0..65535 (6.2.1 IDCODE)")
        if self.cfg_version not in _CFG_COMMAND:
            raise ValueError(f"cfg_version = {self.cfg_version!r}: 1, 2 or 3")
        if self.udp_port is not None and not 0 < self.udp_port < 65536:
            raise ValueError(f"udp_port = {self.udp_port!r}: 1..65535")


class ReadBatcher:
    """Reads many PMUs' TCP streams in batches: every ``interval_s``, one ``read`` per stream takes what came.

    A PMU sends one small frame per period (80 bytes every 16.7 ms at 60 frames/s). Read as it comes, each
    frame costs one wake-up of the event loop, a ``recv`` and asyncio's bookkeeping, far more than decoding
    it. A stream added here stops being read by its transport (``pause_reading``: the event loop no longer
    watches the socket) and is read by one timer instead: every ``interval_s`` each socket gets one
    non-blocking read, which takes ``interval_s`` x rate frames at once (the kernel holds them meanwhile, about
    a kilobyte of its buffer). Frames wait at most ``interval_s`` longer; an end of stream or a
    socket error is seen at the next read, as the transport would have seen it.
    """

    #: Bytes per read; a full read reads again. Under glibc's mmap threshold (128 KiB): asyncio's own 256 KiB
    #: (selector_events max_size) makes every read map and unmap its buffer, about 12 us here.
    READ_SIZE = 64 * 1024

    def __init__(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s = {interval_s!r}: > 0")
        self.interval_s = interval_s
        self.reads = 0  # reads that returned data (each one batch of frames)
        self._feeds: dict[_Feed, int] = {}  # feed -> its socket's file descriptor
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._feeds)

    def add(self, feed: _Feed) -> None:
        """Read ``feed``'s TCP stream from now on (its transport stops reading)."""
        transport = feed.transport
        assert isinstance(transport, asyncio.Transport)
        if transport.is_closing():
            return
        transport.pause_reading()
        self._feeds[feed] = transport.get_extra_info("socket").fileno()
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._sweep)

    def remove(self, feed: _Feed) -> None:
        """Stop reading ``feed`` (before its socket closes: the descriptor may be reused)."""
        self._feeds.pop(feed, None)

    def _sweep(self) -> None:
        if not self._feeds:
            self._timer = None
            return
        self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._sweep)
        # Every socket is read first, then what came is handed over: the kernel's reads one after the other,
        # then the decoding and the ingest one after the other, each with its code and data warmer in the
        # caches than when they alternate (a few per cent less CPU per frame).
        feeds = self._feeds
        read = [(feed, fd, *self._read(fd)) for feed, fd in list(feeds.items())]
        for feed, fd, chunks, end in read:
            for data in chunks:
                if feeds.get(feed) != fd:  # a delivery removed it (its session closed): nothing more to it
                    break
                self.reads += 1
                feed.data_received(data)
            else:
                if end is not None and feeds.get(feed) == fd:
                    self._end(feed, end)

    def _read(self, fd: int) -> tuple[list[bytes], OSError | bytes | None]:
        """What the socket holds now, and how its stream ended: an OSError, ``b""`` (EOF) or None (it goes on)."""
        size = self.READ_SIZE
        chunks: list[bytes] = []
        while True:
            try:
                data = os.read(fd, size)
            except (BlockingIOError, InterruptedError):
                return chunks, None
            except OSError as exc:
                return chunks, exc
            if not data:
                return chunks, b""
            chunks.append(data)
            if len(data) < size:
                return chunks, None

    def _end(self, feed: _Feed, end: OSError | bytes) -> None:
        self.remove(feed)
        if isinstance(end, OSError):  # what the transport's read would have made of it (_fatal_error)
            feed.connection_lost(end)
            feed.transport.abort()  # type: ignore[union-attr]
        elif not feed.eof_received():  # end of stream: as the transport does on EOF (eof_received False: close)
            feed.transport.close()  # type: ignore[union-attr]


class _Feed(asyncio.Protocol, asyncio.DatagramProtocol):
    """Bytes in (TCP segments or UDP datagrams) -> the sans-IO reader -> every complete event at once.

    Runs in the event loop's read callback, so no task wakes per read and every frame already buffered
    is handed over in one go (several when they arrive together; many with a :class:`ReadBatcher`): the
    data frames one after the other as one list, each other event on its own, in the order read.
    """

    def __init__(self, session: PdcSession, reader: StreamReader, what: str) -> None:
        self.session = session
        self.reader = reader
        self.what = what
        self.nbytes = 0
        self.head = b""
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        reader = self.reader
        reader.feed(data)
        session = self.session
        while True:
            frames: list[DataFrame] = []
            event = reader.data_frames(frames)  # the data frames up to the next other event
            if frames:
                session._deliver_frames(frames)
            if event is NEED_DATA:
                return
            session._deliver(event)  # type: ignore[arg-type]  # not NEED_DATA

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # One datagram, one frame (C37.118.2 Annex on UDP); the reader still resyncs on garbage.
        self.data_received(data)

    def eof_received(self) -> bool:
        return False  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        batcher = self.session._batcher
        if batcher is not None:
            batcher.remove(self)  # its socket closes when this returns
        if exc is None:
            self.session._deliver(ConnectionClosedError(f"the PMU closed the {self.what} connection"))
        else:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            self.session._deliver(ConnectionClosedError(f"{self.what} connection lost: {reason}"))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors on the UDP socket: the TCP side and the stale deadline decide


class PdcSession:
    """One connection to one PMU. Build with :meth:`open`; :meth:`close` when done.

    Events are read with :meth:`next_event` (one at a time, as a probe does) or pushed to a callback
    installed with :meth:`deliver_to` (the client's hot path: no task wakes per frame).
    """

    def __init__(self, endpoint: PmuEndpoint) -> None:
        self.endpoint = endpoint
        self.config: ConfigFrame | None = None
        self.early_errors: list[FrameError] = []  # frame errors seen while waiting for the configuration
        self._transport: asyncio.Transport | None = None
        self._tcp = StreamReader()
        self._udp_reader = StreamReader()
        self._udp: asyncio.DatagramTransport | None = None
        self._events: deque[Frame | FrameError | PdcError] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Callable[[Frame | FrameError | PdcError], None] | None = None
        self._frames_sink: Callable[[list[DataFrame]], None] | None = None
        self._want = _CFG_TYPE[endpoint.cfg_version]
        self._ended: PdcError | None = None  # the connection is gone: every later read raises this
        self._tcp_feed: _Feed | None = None
        self._seen: Counter[tuple[str, int]] = Counter()  # frames other than the configuration, while waiting
        self._requests = 0  # configuration requests sent
        self._batcher: ReadBatcher | None = None  # reads the TCP stream instead of its transport (streaming)

    @classmethod
    async def open(
        cls,
        endpoint: PmuEndpoint,
        *,
        connect_timeout_s: float = 5.0,
        config_timeout_s: float = 5.0,
        config_retry_s: float = 1.0,
    ) -> PdcSession:
        """Connect, stop the data, ask for the configuration and wait for it; raises a :class:`PdcError`."""
        session = cls(endpoint)
        try:
            await session._connect(connect_timeout_s)
            await session._handshake(config_timeout_s, config_retry_s)
        except PdcError as err:
            err.received = session.received()
            await session.close()
            raise
        except BaseException:
            await session.close()
            raise
        return session

    def received(self) -> Received:
        """What the peer has sent on the TCP connection so far (see :class:`Received`)."""
        feed = self._tcp_feed
        frames = tuple((kind, idcode, n) for (kind, idcode), n in self._seen.items())
        if feed is None:
            return Received(frames=frames, requests=self._requests)
        return Received(feed.nbytes, feed.head, frames, self._requests)

    def _tcp_protocol(self) -> _Feed:
        self._tcp_feed = _Feed(self, self._tcp, "TCP")
        return self._tcp_feed

    async def _connect(self, timeout_s: float) -> None:
        ep = self.endpoint
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                self._transport, _ = await loop.create_connection(self._tcp_protocol, ep.host, ep.port)
        except TimeoutError as err:
            raise PdcConnectError(f"connect to {ep.host}:{ep.port}: no answer in {timeout_s:g} s") from err
        except socket.gaierror as err:  # its errno is a resolver code (EAI_*), which os.strerror does not know
            raise PdcConnectError(f"cannot resolve host {ep.host!r}: {err.strerror or err}") from err
        except OSError as err:
            # asyncio replaces strerror with "Connect call failed (addr)": say what the errno means.
            reason = os.strerror(err.errno) if err.errno else str(err)
            raise PdcConnectError(f"connect to {ep.host}:{ep.port}: {reason.lower()}") from err
        if ep.udp_port is not None:
            local = self._transport.get_extra_info("sockname")[0]  # the interface the PMU reaches us on
            try:
                self._udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Feed(self, self._udp_reader, "UDP"), local_addr=(local, ep.udp_port)
                )
            except OSError as err:
                raise PdcConnectError(f"bind UDP {local}:{ep.udp_port}: {err.strerror or err}") from err

    def _deliver(self, event: Frame | FrameError | PdcError) -> None:
        if isinstance(event, PdcError):
            if self._ended is not None:
                return  # the first reason the connection ended is the one reported
            self._ended = event
        elif isinstance(event, ConfigFrame) and event.frame_type == self._want:
            self._set_config(event)
        if self._sink is not None:
            self._sink(event)
            return
        self._events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _deliver_frames(self, frames: list[DataFrame]) -> None:
        """The data frames of one read, in order: to the frames sink as they are, else one by one."""
        sink = self._frames_sink
        if sink is not None and self._sink is not None:
            sink(frames)
            return
        for frame in frames:
            self._deliver(frame)

    def batch_reads(self, batcher: ReadBatcher | None) -> None:
        """Have ``batcher`` read the TCP stream from now on; ``None``: back to the transport (every read at once)."""
        feed = self._tcp_feed
        if feed is None or self._transport is None:
            return
        if self._batcher is not None:
            self._batcher.remove(feed)
        self._batcher = batcher
        if batcher is not None:
            batcher.add(feed)
        else:
            self._transport.resume_reading()

    def deliver_to(
        self,
        sink: Callable[[Frame | FrameError | PdcError], None] | None,
        frames: Callable[[list[DataFrame]], None] | None = None,
    ) -> None:
        """Hand every event to ``sink`` as it is read (first those already queued); ``None`` queues again.

        With ``frames``, the data frames that one read brings, one after the other, go to it as one list
        (in order with the other events, which still go to ``sink``). Both run in the event loop's read
        callback: they must not raise, and ``sink`` gets the :class:`PdcError` that ends the connection as
        an event.
        """
        self._sink = sink
        self._frames_sink = frames if sink is not None else None
        while sink is not None and self._events and self._sink is sink:
            sink(self._events.popleft())

    async def _wait_event(self) -> Frame | FrameError:
        """The next queued event; the caller bounds the wait (``asyncio.timeout``: a cancel is never lost)."""
        while not self._events:
            if self._ended is not None:
                raise self._ended
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._events.popleft()
        if isinstance(event, PdcError):
            raise event
        return event

    def send_command_nowait(self, command: int, extended: bytes = b"") -> None:
        """Write a command frame (6.6); commands are a few bytes, so the kernel buffer takes them."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionClosedError(f"send command {command}: not connected")
        now = time.time()
        soc = int(now)
        frame = CommandFrame(
            idcode=self.endpoint.idcode,
            soc=soc,
            fracsec=min(int((now - soc) * 1_000_000), 999_999),  # commands carry no TIME_BASE; µs is usual
            command=command,
            extended=extended,
        )
        self._transport.write(encode_frame(frame))

    async def send_command(self, command: int, extended: bytes = b"") -> None:
        self.send_command_nowait(command, extended)

    async def request_config(self) -> None:
        self.send_command_nowait(_CFG_COMMAND[self.endpoint.cfg_version])
        self._requests += 1

    async def _handshake(self, timeout_s: float, retry_s: float) -> None:
        await self.send_command(Command.DATA_OFF)
        # Some PMUs (pyPMU) drop commands that arrive in one read: wait a little before the next.
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.config is None:
            await self.request_config()
            retry_at = min(deadline, loop.time() + retry_s)
            try:
                async with asyncio.timeout_at(retry_at):
                    while self.config is None:
                        event = await self._wait_event()
                        if isinstance(event, ConfigMismatchError):
                            # data still flowing from before "data off": no configuration for it yet
                            self._seen["data", event.idcode] += 1
                        elif isinstance(event, FrameError):
                            self.early_errors.append(event)
                        elif self.config is None:
                            self._seen[frame_kind(event), event.idcode] += 1
            except TimeoutError:
                pass
            if self.config is None and loop.time() >= deadline:
                ep = self.endpoint
                raise PdcTimeoutError(
                    f"no CFG-{ep.cfg_version} from {ep.host}:{ep.port} in {timeout_s:g} s", list(self.early_errors)
                )

    def _set_config(self, config: ConfigFrame) -> None:
        self.config = config
        # CFG-1 describes capability (6.4); a probe asking for it decodes data with it all the same.
        self._tcp.add_config(config)
        self._udp_reader.add_config(config)

    async def start(self) -> None:
        """Name our UDP port (if any) and turn the data on."""
        if self.endpoint.udp_port is not None:
            await self.send_command(Command.EXTENDED, UDP_PORT_COMMAND + self.endpoint.udp_port.to_bytes(2, "big"))
            await asyncio.sleep(0.05)
        await self.send_command(Command.DATA_ON)

    async def next_event(self, timeout_s: float) -> Frame | FrameError:
        """The next frame or frame error; :class:`StaleStreamError` after ``timeout_s`` without any."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._wait_event()
        except TimeoutError as err:
            raise StaleStreamError(
                f"no frame from {self.endpoint.host}:{self.endpoint.port} in {timeout_s:g} s"
            ) from err

    async def close(self) -> None:
        """Close both sockets now (nothing here waits, so a cancel cannot be held up or lost)."""
        self._sink = self._frames_sink = None
        if self._batcher is not None and self._tcp_feed is not None:
            self._batcher.remove(self._tcp_feed)  # before the socket closes
            self._batcher = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._ended is None:
            self._ended = ConnectionClosedError("the session is closed")


class _Watched:
    """One streaming session for a :class:`StaleWatch`: when it last had data, its timeout and what ends it."""

    __slots__ = ("last", "timeout_s", "on_stale")

    def __init__(self, last: float, timeout_s: Callable[[], float], on_stale: Callable[[float], None]) -> None:
        self.last = last  # clock s of the latest data frame (or of the start)
        self.timeout_s = timeout_s
        self.on_stale = on_stale  # called once with the timeout that passed


class StaleWatch:
    """The stale deadlines of many streaming sessions on one timer of the event loop.

    Each session's deadline is its latest data frame plus its timeout. One timer is armed at the earliest
    deadline; when it fires, every session past its deadline is ended and the timer is armed at the next
    deadline. Data only moves a deadline later, so none is missed, and sessions read together (a
    :class:`ReadBatcher`) cost one wake-up of the loop for all of them instead of a timer each. ``clock`` is the
    sessions' clock (monotonic s, as the loop's).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._watched: set[_Watched] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._at = math.inf  # when the timer fires (clock s)

    def __len__(self) -> int:
        return len(self._watched)

    def add(self, watched: _Watched) -> None:
        self._watched.add(watched)
        self._arm(watched.last + watched.timeout_s())

    def remove(self, watched: _Watched) -> None:
        self._watched.discard(watched)
        if not self._watched and self._timer is not None:
            self._timer.cancel()
            self._timer, self._at = None, math.inf

    def _arm(self, at: float) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None and self._loop is loop and self._at <= at:
            return  # it fires first, and arms again for what is left
        if self._timer is not None:
            self._timer.cancel()
        self._loop, self._at = loop, at
        self._timer = loop.call_later(max(0.0, at - self.clock()), self._check)

    def _check(self) -> None:
        self._timer, self._at = None, math.inf
        now = self.clock()
        first = math.inf
        for watched in list(self._watched):
            timeout = watched.timeout_s()
            due = watched.last + timeout
            if now >= due:
                self._watched.discard(watched)
                watched.on_stale(timeout)
            elif due < first:
                first = due
        if first < math.inf and self._watched:
            self._arm(first)


_CFG_NAME = {FrameType.CFG1: "CFG-1", FrameType.CFG2: "CFG-2", FrameType.CFG3: "CFG-3"}


def frame_kind(frame: Frame) -> str:
    """``"data"``, ``"header"``, ``"command"``, ``"CFG-1"``, ``"CFG-2"`` or ``"CFG-3"`` (6.2 Table 2)."""
    if isinstance(frame, DataFrame):
        return "data"
    if isinstance(frame, HeaderFrame):
        return "header"
    if isinstance(frame, CommandFrame):
        return "command"
    if isinstance(frame, ConfigFrame):
        return _CFG_NAME[frame.frame_type]
    return "CFG-3 fragment"  # the reader reassembles fragments; a caller's own reader may not


@dataclass
class PdcStats:
    """What the client saw, for operators and tests."""

    frames: int = 0
    frame_errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reconnects: int = 0
    config_changes: int = 0
    stale: int = 0
    callback_errors: int = 0
    connected: bool = False
    last_frame_monotonic: float | None = None
    last_error: str = ""  # why the latest session ended (refused, closed, no configuration, stale...)
    last_error_ts: float | None = None  # when, s UTC


class PdcClient:
    """Reads one PMU forever: ``await client.run()`` until cancelled.

    ``on_frame`` gets every data frame, ``on_config`` every configuration (the first one and each
    change), ``on_error`` every typed frame error (garbage, CRC, size...). With ``on_frames``, the data
    frames that one read brings go to it instead, in one call: an iterator over them, to be consumed in
    order; a frame whose handling raises is counted in ``callback_errors`` and the iterator is handed
    again, so the frames after it are handled as well. Failures (refused, closed,
    config timeout, stale stream) end the session; the next starts after a backoff of
    ``backoff_min_s`` doubling to ``backoff_max_s``, times a jitter in [0.5, 1] from ``rng``; a session
    that delivered data resets the backoff. With ``batcher`` the TCP stream is read in batches once
    streaming (see :class:`ReadBatcher`), which many PMUs share; ``stale_watch`` keeps the stale deadline
    (one :class:`StaleWatch` may serve many clients; by default each has its own).
    """

    def __init__(
        self,
        endpoint: PmuEndpoint,
        *,
        on_frame: Callable[[DataFrame], None],
        on_frames: Callable[[Iterator[DataFrame]], None] | None = None,
        on_config: Callable[[ConfigFrame], None] | None = None,
        on_error: Callable[[FrameError], None] | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        rng: random.Random | None = None,
        connect_timeout_s: float = 5.0,
        config_timeout_s: float = 5.0,
        stale_periods: float = 10.0,
        stale_min_s: float = 0.5,
        config_request_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        batcher: ReadBatcher | None = None,
        stale_watch: StaleWatch | None = None,
    ) -> None:
        if not 0 < backoff_min_s <= backoff_max_s:
            raise ValueError(f"backoff {backoff_min_s!r}..{backoff_max_s!r} s: 0 < min <= max")
        self.endpoint = endpoint
        self.on_frame = on_frame
        self.on_frames = on_frames
        self.on_config = on_config
        self.on_error = on_error
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.rng = rng or random.Random()
        self.connect_timeout_s = connect_timeout_s
        self.config_timeout_s = config_timeout_s
        self.stale_periods = stale_periods
        self.stale_min_s = stale_min_s
        self.config_request_interval_s = config_request_interval_s
        self.clock = clock
        self.batcher = batcher
        self.stale_watch = StaleWatch(clock) if stale_watch is None else stale_watch
        self.stats = PdcStats()
        self.config: ConfigFrame | None = None
        self._attempt = 0
        self._delivered = False
        self._name = f"{endpoint.host}:{endpoint.port}/{endpoint.idcode}"

    def backoff_s(self, attempt: int) -> float:
        """Delay before reconnect ``attempt`` (1, 2, ...): exponential, capped, with jitter in [0.5, 1]."""
        base = min(self.backoff_max_s, self.backoff_min_s * 2 ** max(0, attempt - 1))
        return base * self.rng.uniform(0.5, 1.0)

    async def run(self) -> None:
        while True:
            self._delivered = False
            try:
                await self._session()
            except PdcError as err:
                self.stats.last_error = str(err)
                self.stats.last_error_ts = time.time()
                if isinstance(err, StaleStreamError):
                    self.stats.stale += 1
                log.warning("pmu_session_failed", pmu=self._name, error=err)
            finally:
                self.stats.connected = False
            self._attempt = 1 if self._delivered else self._attempt + 1
            delay = self.backoff_s(self._attempt)
            log.info("pmu_reconnect", pmu=self._name, in_s=round(delay, 2), attempt=self._attempt)
            await asyncio.sleep(delay)
            self.stats.reconnects += 1

    def _stale_timeout(self) -> float:
        fps = self.config.frames_per_second if self.config else 1.0
        return max(self.stale_periods / fps, self.stale_min_s)

    async def _session(self) -> None:
        session = await PdcSession.open(
            self.endpoint, connect_timeout_s=self.connect_timeout_s, config_timeout_s=self.config_timeout_s
        )
        end: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        watched: _Watched | None = None
        try:
            for err in session.early_errors:
                self._error(err)
            assert session.config is not None
            self._config(session.config)
            await session.start()
            self.stats.connected = True
            log.info("pmu_streaming", pmu=self._name, rate=session.config.data_rate)
            last_request = -1e18
            clock, stats, want_type = self.clock, self.stats, _CFG_TYPE[self.endpoint.cfg_version]
            stat_of: ConfigFrame | None = None
            stat_idx: tuple[int, ...] = ()

            def finish(err: PdcError) -> None:
                if not end.done():
                    end.set_exception(err)
                    end.exception()  # retrieved: a session cancelled meanwhile logs nothing

            def on_frames(frames: list[DataFrame]) -> None:
                # Runs in the socket's read callback with the data frames of one read: the hot path. Nothing
                # may escape it.
                nonlocal stat_of, stat_idx
                if end.done():
                    return
                watched.last = stats.last_frame_monotonic = clock()  # type: ignore[union-attr]  # set below
                stats.frames += len(frames)
                self._delivered = True
                want_config = False
                for frame in frames:
                    if frame.config is not stat_of:
                        stat_of, stat_idx = frame.config, stat_word_indices(frame.config)
                    words = frame.words
                    for i in stat_idx:
                        if words[i] & STAT_CONFIG_CHANGED:
                            want_config = True
                self._frames(frames)
                if want_config:
                    ask_config()

            def ask_config() -> None:
                nonlocal last_request
                if clock() - last_request >= self.config_request_interval_s:
                    last_request = clock()
                    try:
                        session.send_command_nowait(_CFG_COMMAND[self.endpoint.cfg_version])
                    except PdcError as err:
                        finish(err)

            def on_event(event: Frame | FrameError | PdcError) -> None:
                # Every event but the data frames of a read (on_frames); nothing may escape it.
                if end.done():
                    return
                want_config = False
                if type(event) is DataFrame:
                    on_frames([event])  # one queued before the session streamed
                    return
                if isinstance(event, PdcError):
                    finish(event)
                    return
                if isinstance(event, ConfigFrame):
                    if event.frame_type == want_type:
                        self._config(event)
                elif isinstance(event, FrameError):
                    self._error(event)
                    want_config = isinstance(event, ConfigMismatchError)
                if want_config:
                    ask_config()

            def stale(timeout_s: float) -> None:
                finish(StaleStreamError(f"no data frame from {self._name} in {timeout_s:g} s"))

            watched = _Watched(clock(), self._stale_timeout, stale)
            self.stale_watch.add(watched)
            session.deliver_to(on_event, on_frames)
            session.batch_reads(self.batcher)
            await end  # a cancel ends this await at once; a PdcError ending the stream is raised here
        finally:
            if watched is not None:
                self.stale_watch.remove(watched)
            await session.close()

    def _frames(self, frames: list[DataFrame]) -> None:
        """Hand ``frames`` on: to ``on_frames`` as one iterator, else to ``on_frame`` one by one."""
        it = iter(frames)
        on_frames = self.on_frames
        if on_frames is not None:
            left = len(frames)
            while left:
                try:
                    on_frames(it)
                    return
                except Exception as err:  # the frame that raised is consumed: go on with the next
                    self._callback_failed(err)
                took, left = left - length_hint(it), length_hint(it)
                if not took:  # it raised before taking a frame: the rest go to on_frame
                    break
        on_frame = self.on_frame
        for frame in it:
            try:  # self._call(on_frame, frame), inlined: every frame
                on_frame(frame)
            except Exception as err:
                self._callback_failed(err)

    def _callback_failed(self, err: Exception) -> None:
        self.stats.callback_errors += 1
        log.error("pmu_callback_failed", pmu=self._name, error=repr(err))

    def _config(self, config: ConfigFrame) -> None:
        old = self.config
        if old is not None and (old.pmus, old.data_rate, old.time_base) != (
            config.pmus,
            config.data_rate,
            config.time_base,
        ):
            self.stats.config_changes += 1
            cfgcnts = ",".join(str(p.cfgcnt) for p in config.pmus)
            log.info("pmu_config_changed", pmu=self._name, cfgcnt=cfgcnts, rate=config.data_rate)
        elif old is not None:
            return  # the same configuration again (asked because of STAT bit 10 before the change)
        self.config = config
        if self.on_config is not None:
            self._call(self.on_config, config)

    def _error(self, err: FrameError) -> None:
        self.stats.frame_errors[type(err).__name__] += 1
        log.warning("pmu_frame_error", pmu=self._name, type=type(err).__name__, error=err)
        if self.on_error is not None:
            self._call(self.on_error, err)

    def _call(self, fn: Callable, arg: object) -> None:
        try:
            fn(arg)
        except Exception as err:  # a consumer's bug must not end the stream; counted and logged
            self._callback_failed(err)


# ---- alignment ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlignedFrames:
    """Frames of several PMUs for one timestamp; ``missing`` lists the IDCODEs that did not come in time."""

    timestamp: Timestamp
    frames: dict[int, DataFrame]
    missing: tuple[int, ...]


@dataclass
class AlignerStats:
    aligned: int = 0
    complete: int = 0
    late: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    missing: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    unknown: int = 0  # frames from IDCODEs not in the set


class Aligner:
    """Lines up data frames from ``idcodes`` by timestamp, as a PDC does.

    A timestamp's set is delivered to ``on_aligned`` as soon as every PMU's frame is in, or
    ``wait_window_s`` after its first frame arrived with the absent ones counted as missing. A frame
    for a timestamp already delivered (or older than one delivered) is late: counted and dropped.
    Call :meth:`poll` (or run :meth:`run`) so that incomplete sets are released without new frames.
    """

    def __init__(
        self,
        idcodes: tuple[int, ...] | list[int],
        wait_window_s: float,
        on_aligned: Callable[[AlignedFrames], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not idcodes:
            raise ValueError("idcodes = (): align at least one PMU")
        if wait_window_s <= 0:
            raise ValueError(f"wait_window_s = {wait_window_s!r}: > 0")
        self.idcodes = tuple(idcodes)
        self.wait_window_s = wait_window_s
        self.on_aligned = on_aligned
        self.clock = clock
        self.stats = AlignerStats()
        self._pending: dict[Fraction, tuple[float, Timestamp, dict[int, DataFrame]]] = {}
        self._watermark: Fraction | None = None  # newest timestamp delivered

    def add(self, frame: DataFrame) -> None:
        if frame.idcode not in self.idcodes:
            self.stats.unknown += 1
            return
        self.poll()
        ts = frame.timestamp
        key = ts.as_fraction()
        entry = self._pending.get(key)
        if entry is None:
            if self._watermark is not None and key <= self._watermark:
                self.stats.late[frame.idcode] += 1
                return
            entry = self._pending[key] = (self.clock(), ts, {})
        frames = entry[2]
        if frame.idcode in frames:
            return  # a duplicate: the first one stands
        frames[frame.idcode] = frame
        if len(frames) == len(self.idcodes):
            del self._pending[key]
            self._emit(key, ts, frames)

    def poll(self) -> None:
        """Release every set whose wait window has passed, oldest first."""
        now = self.clock()
        expired = sorted(k for k, (t0, _, _) in self._pending.items() if now - t0 >= self.wait_window_s)
        for key in expired:
            _, ts, frames = self._pending.pop(key)
            self._emit(key, ts, frames)

    def _emit(self, key: Fraction, ts: Timestamp, frames: dict[int, DataFrame]) -> None:
        missing = tuple(i for i in self.idcodes if i not in frames)
        for i in missing:
            self.stats.missing[i] += 1
        self.stats.aligned += 1
        if not missing:
            self.stats.complete += 1
        if self._watermark is None or key > self._watermark:
            self._watermark = key
        self.on_aligned(AlignedFrames(ts, frames, missing))

    async def run(self) -> None:
        """Poll four times per wait window until cancelled."""
        while True:
            await asyncio.sleep(self.wait_window_s / 4)
            self.poll()


__all__ = [
    "AlignedFrames",
    "Aligner",
    "AlignerStats",
    "ConnectionClosedError",
    "PdcClient",
    "PdcConnectError",
    "PdcError",
    "PdcSession",
    "PdcStats",
    "PdcTimeoutError",
    "PmuEndpoint",
    "ReadBatcher",
    "Received",
    "STAT_CONFIG_CHANGED",
    "StaleStreamError",
    "StaleWatch",
    "frame_kind",
    "stat_word_indices",
]
