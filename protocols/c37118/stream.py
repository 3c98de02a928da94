"""Frames out of a byte stream, sans-IO: the caller feeds bytes in and pulls events out (like h11).

``reader.feed(data)`` buffers bytes; ``reader.next_event()`` returns a frame, a typed
:class:`~protocols.c37118.errors.FrameError` *as a value*, or :data:`NEED_DATA`. The reader tells an
incomplete frame (NEED_DATA: wait for more) from garbage (a SyncError saying how many bytes it
skipped) and from a damaged frame (CrcError, SizeError), and resynchronises on the next 0xAA whose
following byte is a plausible SYNC (bit 7 zero, frame type 0-5, version 1 or 2).

Decisions depend only on the bytes, never on how they were split over reads: the same input gives
the same events fed whole or one byte at a time (garbage is reported once its extent is known, i.e.
when the next plausible SYNC arrives). A candidate whose CHK fails costs one byte (the reader looks
for the next SYNC inside it, as it may have been a false 0xAA in garbage); a frame whose CHK passes is
consumed even if its fields are bad (MalformedFrameError, ConfigMismatchError).

Data frames are decoded with the latest CFG-2 or CFG-3 seen on the stream for their IDCODE, or one
given to the constructor / :meth:`StreamReader.add_config`; without one they give ConfigMismatchError.

A CFG-3 sent in several frames (6.4 Table 10, CONT_IDX 1, 2, ..., 0xFFFF) comes out as one
:class:`Config3Frame` when its last piece arrives (other frames may come between the pieces); the pieces
themselves are not events. A broken sequence is a :class:`FragmentError` event (see
:class:`~protocols.c37118.codec.Cfg3Reassembler`), as is a series cut short by a whole CFG-3.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from protocols.c37118.codec import (
    DEFAULT_MAX_CONFIG_SIZE,
    MIN_FRAME_SIZES,
    Cfg3Reassembler,
    DataCodec,
    decode_frame,
)
from protocols.c37118.errors import CrcError, FrameError, SizeError, SyncError
from protocols.c37118.frames import (
    MAX_FRAME_SIZE,
    VERSIONS,
    Config3Fragment,
    Config3Frame,
    ConfigFrame,
    DataFrame,
    Frame,
    FrameType,
)


@dataclass(frozen=True, slots=True)
class NeedData:
    """No complete frame is buffered: feed more bytes."""


NEED_DATA = NeedData()
#: The second SYNC byte of a data frame (type 0 in bits 6-4) of each known version (bits 3-0): 6.2.1 Table 2.
_DATA_SYNC_SECOND = frozenset(FrameType.DATA << 4 | v for v in VERSIONS)
Event = Frame | FrameError | NeedData


class StreamReader:
    """Sans-IO reader of C37.118 frames from an arbitrary byte stream (TCP or a file)."""

    def __init__(
        self,
        configs: Iterable[ConfigFrame] = (),
        *,
        max_buffer: int = 4 * (MAX_FRAME_SIZE + 1),
        max_frame_size: int = MAX_FRAME_SIZE,
        max_config_size: int = DEFAULT_MAX_CONFIG_SIZE,
    ) -> None:
        if not MAX_FRAME_SIZE >= max_frame_size >= MIN_FRAME_SIZES[FrameType.HEADER]:
            raise ValueError(f"max_frame_size = {max_frame_size}: 16..{MAX_FRAME_SIZE}")
        if max_buffer < max_frame_size:
            raise ValueError(f"max_buffer = {max_buffer}: at least max_frame_size ({max_frame_size})")
        self.max_buffer = max_buffer
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._pos = 0  # bytes before this are consumed
        self._skipped = 0  # garbage skipped and not yet reported
        self._dropped = 0  # bytes refused by feed() because the buffer was full, not yet reported
        self._codecs: dict[int, DataCodec] = {}
        self._cfg3 = Cfg3Reassembler(max_config_size)
        self._queued: list[FrameError] = []  # events due before the next frame (a CFG-3 series cut short)
        for config in configs:
            self.add_config(config)

    def add_config(self, config: ConfigFrame) -> None:
        """Decode data frames of ``config.idcode`` with ``config`` from now on."""
        self._codecs[config.idcode] = DataCodec(config)

    def config_for(self, idcode: int) -> ConfigFrame | None:
        codec = self._codecs.get(idcode)
        return codec.config if codec else None

    @property
    def buffered(self) -> int:
        """Bytes held: at most ``max_buffer``."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data``; if that would pass ``max_buffer`` it is dropped and reported as a SizeError event."""
        if len(self._buf) - self._pos + len(data) > self.max_buffer:
            self._compact()
            if len(self._buf) + len(data) > self.max_buffer:
                self._dropped += len(data)
                return
        self._buf += data

    def events(self) -> Iterator[Frame | FrameError]:
        """Every event available now (stops at NEED_DATA)."""
        while not isinstance(event := self.next_event(), NeedData):
            yield event

    def next_event(self) -> Event:
        if self._queued:
            return self._queued.pop(0)
        if self._dropped:
            n, self._dropped = self._dropped, 0
            return SizeError(f"reader buffer full ({self.max_buffer} bytes): {n} bytes dropped", n)
        buf = self._buf
        while True:
            start = self._pos
            i = buf.find(0xAA, start)
            if i < 0:
                self._skipped += len(buf) - start
                self._pos = len(buf)
                return self._need_data()
            if i > start:
                self._skipped += i - start
                self._pos = start = i
            if len(buf) - i < 2:
                return self._need_data()
            second = buf[i + 1]
            if not (second < 0x60 and (second & 0x0F) in VERSIONS):  # sync_plausible(), inlined: every frame
                self._skipped += 1
                self._pos = i + 1
                continue
            if self._skipped:
                n, self._skipped = self._skipped, 0
                return SyncError(f"{n} bytes that are not a frame skipped", n)
            if len(buf) - i < 4:
                return self._need_data()
            ftype = second >> 4
            size = (buf[i + 2] << 8) | buf[i + 3]
            if size < MIN_FRAME_SIZES[ftype] or size > self.max_frame_size:
                self._pos = i + 1
                return SizeError(
                    f"FRAMESIZE {size} for a {FrameType(ftype).name} frame: allowed {MIN_FRAME_SIZES[ftype]}.."
                    f"{self.max_frame_size}; resynchronising",
                    size,
                )
            if len(buf) - i < size:
                return self._need_data()
            if ftype == FrameType.DATA and (codec := self._codecs.get((buf[i + 4] << 8) | buf[i + 5])) is not None:
                # The hot path: what _frame does with a data frame whose configuration is known, without a copy
                # of the frame as bytes (the codec reads the bytearray slice) or the checks for configurations.
                try:
                    frame = codec.decode(buf[i : i + size])
                except CrcError as err:
                    self._pos = i + 1
                    return err
                except FrameError as err:
                    self._pos = i + size
                    return err
                self._pos = i + size
                return frame
            event = self._frame(bytes(buf[i : i + size]), i, ftype)
            if event is not None:
                return event
            # a CFG-3 piece held for reassembly: on to the next frame

    def data_frames(self, out: list[DataFrame]) -> Event:
        """Append to ``out`` every data frame available now, up to the first other event, and return that event.

        The same events as :meth:`next_event` called until it returns something other than a data frame (or
        :data:`NEED_DATA`): the data frames of a read in one call. Only well-formed data frames of a known
        configuration, one after the other from the current position, are taken here; anything else (garbage,
        a bad frame, another kind of frame) is left to :meth:`next_event`, which decides it as always.
        """
        if not (self._queued or self._dropped or self._skipped):
            buf, codecs, pos, end = self._buf, self._codecs, self._pos, len(self._buf)
            smallest, largest = MIN_FRAME_SIZES[FrameType.DATA], self.max_frame_size
            # A data frame starts with SYNC 0xAA, then type 0 (bits 6-4) of a known version (bits 3-0), and its
            # IDCODE names the codec (6.2 Table 2); the codec decodes the run of its frames that follow.
            while end - pos >= 6 and buf[pos] == 0xAA and buf[pos + 1] in _DATA_SYNC_SECOND:
                codec = codecs.get((buf[pos + 4] << 8) | buf[pos + 5])
                if codec is None or not smallest <= codec.size <= largest:
                    break
                after = codec.decode_run(buf, pos, out)
                if after == pos:
                    break  # not one of its frames, or a bad one: next_event says what it is
                pos = after
            self._pos = pos
        return self.next_event()

    def _frame(self, chunk: bytes, at: int, ftype: int) -> Frame | FrameError | None:
        try:
            codec = self._codecs.get((chunk[4] << 8) | chunk[5]) if ftype == FrameType.DATA else None
            frame = codec.decode(chunk) if codec else decode_frame(chunk)
        except CrcError as err:
            self._pos = at + 1  # maybe a false 0xAA in garbage: look for a SYNC inside it
            return err
        except FrameError as err:  # CHK passed: a real frame with bad content (or no configuration), consumed
            self._pos = at + len(chunk)
            return err
        self._pos = at + len(chunk)
        if isinstance(frame, Config3Fragment):
            try:
                whole = self._cfg3.add(frame)
            except FrameError as err:
                return err
            if whole is None:
                return None
            frame = whole
        elif isinstance(frame, Config3Frame) and (cut := self._cfg3.abandon(frame.idcode, "a whole CFG-3 came")):
            self._queued.append(cut)  # reported right after the CFG-3 that replaced the series
        if isinstance(frame, ConfigFrame) and frame.frame_type != FrameType.CFG1:
            self.add_config(frame)
        return frame

    def _need_data(self) -> NeedData:
        self._compact()
        return NEED_DATA

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0


__all__ = ["NEED_DATA", "Event", "NeedData", "StreamReader"]
