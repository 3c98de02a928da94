"""Wave stream: the frame codec (sans-IO, table-driven, fed whole / byte by byte / half a frame first) and the
bench server with the asyncio client over real sockets on 127.0.0.1."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from helpers.aio import async_test

from protocols import wavestream as ws
from sim_hw.waveforms import WaveformDesc, generate
from sim_hw.waveforms.stream import WaveformStreamServer

HDR = ws.Header(("va", "ia"), ("V", "A"), 1000.0, 1_700_000_000.5, 50.0, "t")
D0 = np.array([[1.0, -2.5, 3.25], [0.5, 0.0, -1.0]])


def _events(data: bytes, step: int | None = None) -> list[ws.Event]:
    dec = ws.StreamDecoder(max_payload=4096)
    out: list[ws.Event] = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for c in chunks:
        dec.feed(c)
        while not isinstance(ev := dec.next_event(), ws.NeedData):
            out.append(ev)
    return out


def _kinds(events: list[ws.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_frame_layout_is_as_documented() -> None:
    frame = ws.encode_block(7, 300, D0)
    # magic "WF", version 1, type 2, length 20 + 2 x 3 x 4 = 44
    assert frame[:8] == b"WF\x01\x02" + struct.pack(">I", 44)
    assert struct.unpack(">IQIHH", frame[8:28]) == (7, 300, 3, 2, 0)
    assert np.frombuffer(frame[28:52], ">f4").tolist() == [1.0, -2.5, 3.25, 0.5, 0.0, -1.0]
    assert struct.unpack(">I", frame[52:]) == (zlib.crc32(frame[:52]),)


# one table drives the cases: the wire bytes, the events expected
GOOD = ws.encode_header(HDR) + ws.encode_block(0, 0, D0) + ws.encode_block(1, 3, D0)
CASES = {
    "clean": (GOOD + ws.encode_end(2, 6), ["Header", "Block", "Block", "End"]),
    "garbage_first": (b"\x00junkWF" + GOOD, ["SyncError", "Header", "Block", "Block"]),
    "gap": (GOOD + ws.encode_block(5, 15, D0), ["Header", "Block", "Block", "GapError", "Block"]),
    "crc": (
        GOOD[:-5] + bytes([GOOD[-5] ^ 1]) + GOOD[-4:] + ws.encode_block(2, 6, D0),
        ["Header", "Block", "CrcError", "GapError", "Block"],
    ),
    "data_before_header": (ws.encode_block(0, 0, D0) + GOOD, ["MalformedError", "Header", "Block", "Block"]),
    "bad_json": (ws._frame(ws.HEADER, b"{not json") + GOOD, ["MalformedError", "Header", "Block", "Block"]),
    "channel_count": (GOOD + ws.encode_block(2, 6, D0[:1]), ["Header", "Block", "Block", "MalformedError"]),
    "too_large": (b"WF\x01\x02\x00\x01\x00\x00" + b"\x00" * 8 + GOOD, ["SyncError", "Header", "Block", "Block"]),
}


@pytest.mark.parametrize("step", [None, 1, 13])
@pytest.mark.parametrize("case", sorted(CASES))
def test_decoder_events_do_not_depend_on_how_bytes_arrive(case: str, step: int | None) -> None:
    data, kinds = CASES[case]
    assert _kinds(_events(data, step)) == kinds


def test_block_values_and_times_round_trip_as_float32() -> None:
    ev = _events(GOOD)
    assert ev[0] == HDR
    b = ev[2]
    assert isinstance(b, ws.Block) and b.seq == 1 and b.first_sample == 3
    np.testing.assert_array_equal(b.data, D0)  # these values are exact in float32
    assert b.start_time == HDR.t0 + 3 / 1000.0


def test_gap_counts_the_missing_samples_and_sequence_wraps() -> None:
    wrap = ws.encode_header(HDR) + ws.encode_block(2**32 - 1, 0, D0) + ws.encode_block(0, 3, D0)
    assert _kinds(_events(wrap)) == ["Header", "Block", "Block"]
    gap = _events(GOOD + ws.encode_block(4, 12, D0))[3]
    assert isinstance(gap, ws.GapError) and (gap.expected_seq, gap.seq, gap.missing_samples) == (2, 4, 6)


def test_half_a_frame_is_need_data_not_an_error() -> None:
    dec = ws.StreamDecoder()
    cut = len(ws.encode_header(HDR)) + 30  # the header and half of the first block
    dec.feed(GOOD[:cut])
    assert isinstance(dec.next_event(), ws.Header)
    assert dec.next_event() is ws.NEED_DATA
    dec.feed(GOOD[cut:])
    assert _kinds([dec.next_event(), dec.next_event()]) == ["Block", "Block"]


def test_crc_error_reports_both_checksums() -> None:
    bad = bytearray(ws.encode_header(HDR))
    bad[10] ^= 0x20
    err = _events(bytes(bad))[0]
    assert isinstance(err, ws.CrcError) and err.expected == zlib.crc32(bytes(bad[:-4]))
    assert err.actual == struct.unpack(">I", bytes(bad[-4:]))[0]


def test_encoder_and_header_refuse_bad_input() -> None:
    with pytest.raises(ws.WaveStreamError, match="data shape"):
        ws.encode_block(0, 0, np.zeros(5))
    with pytest.raises(ws.MalformedError, match="rate_hz"):
        ws.Header(("a",), ("V",), 0.0, 0.0)
    with pytest.raises(ws.MalformedError, match="same non-zero length"):
        ws.Header(("a", "b"), ("V",), 1.0, 0.0)


# ---- real sockets ----------------------------------------------------------------------------------------

DESC = WaveformDesc(rate_hz=6400.0, frequency_hz=50.3, v_rms=(230.0, 228.0, 231.0))


@async_test
async def test_full_speed_stream_equals_the_generated_signal_and_ends() -> None:
    async with (
        WaveformStreamServer(DESC, block_s=0.05, speed=math.inf, duration_s=1.01) as srv,
        ws.WaveStreamClient("127.0.0.1", srv.port) as client,
    ):
        assert client.header is not None and client.header.channels == ("va", "vb", "vc", "ia", "ib", "ic")
        assert client.header.rate_hz == 6400.0
        blocks = [b async for b in client]
    got = ws.concat(blocks)
    ref = generate(DESC, 1.01).data
    assert got.shape == ref.shape == (6, 6464)
    # float32 on the wire: relative error below 2^-24 of the peak
    assert np.abs(got - ref).max() <= 330.0 * 2**-23
    assert [b.seq for b in blocks] == list(range(21))
    assert client.end == ws.End(21, 6464) and client.stats.gaps == 0


@async_test
async def test_real_time_client_sees_dropped_corrupted_and_garbage_as_typed_errors_then_resyncs() -> None:
    async with (
        WaveformStreamServer(DESC, block_s=0.01, speed=1.0) as srv,
        ws.WaveStreamClient("127.0.0.1", srv.port) as client,
    ):
        first = await client.__anext__()
        s = first.seq
        srv.drop_blocks(s + 3)  # a few blocks ahead: the server may already have sent the next one or two
        srv.inject(b"noise!!!", before_seq=s + 6)
        srv.corrupt_blocks(s + 6)
        seqs = [(await client.__anext__()).seq, (await client.__anext__()).seq]
        assert seqs == [s + 1, s + 2]
        with pytest.raises(ws.GapError) as gap:
            await client.__anext__()
        assert gap.value.expected_seq == s + 3 and gap.value.seq == s + 4 and gap.value.missing_samples == 64
        after_gap = await client.__anext__()  # the block after the hole is still delivered
        assert after_gap.seq == s + 4
        assert (await client.__anext__()).seq == s + 5
        with pytest.raises(ws.SyncError) as sync:
            await client.__anext__()
        assert sync.value.skipped == 8
        with pytest.raises(ws.CrcError):
            await client.__anext__()
        with pytest.raises(ws.GapError):
            await client.__anext__()
        resumed = await client.__anext__()
        assert resumed.seq == s + 7 and resumed.first_sample == resumed.seq * 64
    assert srv.stats.blocks_dropped == 1 and srv.stats.blocks_corrupted == 1
    assert client.stats.gaps == 2 and client.stats.bad_frames == 1 and client.stats.garbage_bytes == 8


@async_test
async def test_a_late_joiner_starts_at_the_live_point_with_the_same_samples() -> None:
    async with (
        WaveformStreamServer(DESC, block_s=0.01, speed=5.0) as srv,
        ws.WaveStreamClient("127.0.0.1", srv.port) as a,
    ):
        await a.__anext__()
        await a.__anext__()
        async with ws.WaveStreamClient("127.0.0.1", srv.port) as b:
            late = await b.__anext__()
            assert late.seq >= 2 and late.first_sample == late.seq * 64
            while (blk := await a.__anext__()).seq < late.seq:
                pass
            np.testing.assert_array_equal(blk.data, late.data)  # one timeline for every client
            assert srv.stats.clients == 2
