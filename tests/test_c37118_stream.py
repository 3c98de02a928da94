"""The stream reader: frames out of any split of the bytes, garbage told apart from an incomplete frame.

The frames come from the codec's table of cases (tests/helpers/c37118.py); each input is fed whole,
one byte at a time and half a frame first, and must give the same events.
"""

from __future__ import annotations

import struct

import pytest
from helpers.c37118 import ANNEX_CFG2, ANNEX_DATA, CASES, CFG3, CFG3_DATA, TWO_PMUS, TWO_PMUS_DATA, read_split, recrc

from protocols.c37118 import (
    NEED_DATA,
    CommandFrame,
    ConfigMismatchError,
    CrcError,
    FrameError,
    MalformedFrameError,
    NeedData,
    SizeError,
    StreamReader,
    SyncError,
    encode_frame,
)

# Every case in an order where each data frame follows its configuration.
STREAM_FRAMES = [c.frame for c in CASES if c.config is None] + [c.frame for c in CASES if c.config is not None]
STREAM = b"".join(encode_frame(f) for f in STREAM_FRAMES)


def summary(events: list) -> list:
    """Events made comparable: frames as they are, errors as (class, message)."""
    return [(type(e).__name__, str(e)) if isinstance(e, FrameError) else e for e in events]


@pytest.mark.parametrize("split", ["whole", "bytes", "half"])
def test_every_case_comes_out_of_the_stream_however_it_is_split(split: str) -> None:
    assert read_split(STREAM, split) == STREAM_FRAMES


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_each_case_alone_split_three_ways(case) -> None:
    configs = [case.config] if case.config else []
    data = encode_frame(case.frame)
    for split in ("whole", "bytes", "half"):
        assert read_split(data, split, StreamReader(configs)) == [case.frame]


def test_incomplete_frame_is_need_data_not_an_error() -> None:
    reader = StreamReader([ANNEX_CFG2])
    data = encode_frame(ANNEX_DATA)
    for i in range(len(data) - 1):
        reader.feed(data[i : i + 1])
        assert reader.next_event() is NEED_DATA
    reader.feed(data[-1:])
    assert reader.next_event() == ANNEX_DATA
    assert isinstance(reader.next_event(), NeedData) and reader.buffered == 0


def test_garbage_before_and_between_frames_is_one_sync_error_each() -> None:
    cmd = encode_frame(CommandFrame(idcode=1, command=2))
    # 0xAA 0xFF and 0xAA 0xAA and 0xAA 0x13 (version 3) are not plausible SYNCs: all garbage.
    data = b"\x00\x01garbage\xaa\xff\xaa" + cmd + b"\xaa\xaa\x13" * 5 + cmd
    whole = read_split(data)
    assert [type(e).__name__ for e in whole] == ["SyncError", "CommandFrame", "SyncError", "CommandFrame"]
    assert [e.skipped for e in whole if isinstance(e, SyncError)] == [12, 15]
    assert summary(read_split(data, "bytes")) == summary(read_split(data, "half")) == summary(whole)


def test_damaged_frame_is_crc_error_and_the_next_frame_still_reads() -> None:
    good = encode_frame(ANNEX_CFG2)
    bad = bytearray(good)
    bad[30] ^= 0x01
    events = read_split(bytes(bad) + good)
    assert isinstance(events[0], CrcError)
    assert events[-1] == ANNEX_CFG2
    assert sum(isinstance(e, SyncError) for e in events) == 1  # the rest of the damaged frame, as garbage
    assert events[1].skipped == len(bad) - 1


def test_data_frame_before_its_configuration_is_config_mismatch_then_reads_after() -> None:
    data = encode_frame(ANNEX_DATA)
    events = read_split(data + encode_frame(ANNEX_CFG2) + data)
    assert isinstance(events[0], ConfigMismatchError) and events[0].idcode == 7734
    assert events[1:] == [ANNEX_CFG2, ANNEX_DATA]


def test_supplied_configuration_decodes_data_and_a_new_cfg2_replaces_it() -> None:
    reader = StreamReader([TWO_PMUS, CFG3])
    assert read_split(encode_frame(TWO_PMUS_DATA) + encode_frame(CFG3_DATA), reader=reader) == [
        TWO_PMUS_DATA,
        CFG3_DATA,
    ]
    assert reader.config_for(3) is CFG3 and reader.config_for(99) is None


def test_data_frame_of_the_wrong_size_for_the_configuration_is_consumed_as_config_mismatch() -> None:
    data = encode_frame(ANNEX_DATA)
    short = bytearray(data[:-4] + data[-2:])
    short[2:4] = struct.pack(">H", len(short))
    events = read_split(recrc(short) + data, reader=StreamReader([ANNEX_CFG2]))
    assert isinstance(events[0], ConfigMismatchError)
    assert events[1:] == [ANNEX_DATA]


def test_bad_fields_behind_a_good_chk_are_malformed_and_consumed() -> None:
    cfg = bytearray(encode_frame(ANNEX_CFG2))
    cfg[-4:-2] = b"\x00\x00"  # DATA_RATE 0
    events = read_split(recrc(cfg) + encode_frame(ANNEX_CFG2))
    assert isinstance(events[0], MalformedFrameError)
    assert events[1:] == [ANNEX_CFG2]


def test_framesize_over_the_reader_bound_is_size_error_and_resyncs() -> None:
    big = encode_frame(ANNEX_CFG2)
    cmd = encode_frame(CommandFrame(idcode=1))
    events = read_split(big + cmd, reader=StreamReader(max_frame_size=100))
    assert isinstance(events[0], SizeError) and events[0].size == len(big)
    assert events[-1] == CommandFrame(idcode=1)


def test_framesize_below_the_minimum_is_size_error() -> None:
    cmd = encode_frame(CommandFrame(idcode=1))
    events = read_split(b"\xaa\x42\x00\x05" + cmd)
    assert isinstance(events[0], SizeError) and events[0].size == 5
    assert events[-1] == CommandFrame(idcode=1)


def test_buffer_bound_drops_a_feed_and_says_so() -> None:
    reader = StreamReader(max_buffer=70000)
    reader.feed(b"\xaa\x02\xff\xff" + bytes(60000))  # a frame claiming 65535 bytes, not complete
    assert reader.next_event() is NEED_DATA
    reader.feed(bytes(20000))  # would pass the bound
    event = reader.next_event()
    assert isinstance(event, SizeError) and event.size == 20000
    assert reader.buffered <= 70000


def test_reader_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        StreamReader(max_frame_size=70000)
    with pytest.raises(ValueError):
        StreamReader(max_buffer=10)


def _by_data_frames(data: bytes, split: str, configs: list) -> list:
    """What ``read_split`` gives, read with data_frames: each run of data frames as a list, then the event."""
    reader = StreamReader(configs)
    chunks = [data] if split == "whole" else [data[i : i + 1] for i in range(len(data))]
    out: list = []
    for chunk in chunks:
        reader.feed(chunk)
        while True:
            frames: list = []
            event = reader.data_frames(frames)
            out.extend(frames)
            if event is NEED_DATA:
                break
            out.append(event)
    return out


@pytest.mark.parametrize("split", ["whole", "bytes"])
def test_data_frames_gives_the_events_next_event_gives_around_bad_frames(split: str) -> None:
    # Data frames in a row with a damaged one, garbage, a frame of the wrong size, an unknown IDCODE and a
    # configuration between them: the batch stops at each and the events are those of next_event, in order.
    data = encode_frame(ANNEX_DATA)
    bad = bytearray(data)
    bad[20] ^= 0x01
    short = bytearray(data[:-4] + data[-2:])
    short[2:4] = struct.pack(">H", len(short))
    other = bytearray(data)
    other[4:6] = struct.pack(">H", 99)
    stream = (data * 3 + bytes(bad) + data * 2 + b"junk" + data + recrc(short) + data + recrc(other) + data
              + encode_frame(ANNEX_CFG2) + data * 2)  # fmt: skip
    expected = read_split(stream, split, StreamReader([ANNEX_CFG2]))
    got = _by_data_frames(stream, split, [ANNEX_CFG2])
    assert summary(got) == summary(expected)
    kinds = [type(e).__name__ for e in got]
    assert kinds.count("DataFrame") == 10 and "CrcError" in kinds and "SyncError" in kinds
    assert kinds.count("ConfigMismatchError") == 2 and kinds[-3:] == ["ConfigFrame", "DataFrame", "DataFrame"]
