"""A CFG-3 sent in several frames (IEEE C37.118.2-2011 6.4 Table 10, CONT_IDX): built, read back, refused when broken.

CONT_IDX is 0 for a CFG-3 in one frame, 1, 2, ... for the pieces of one in several, and 0xFFFF on the
last piece. The expected bytes are cut here with plain slicing from the one-frame CFG-3 (what follows
CONT_IDX, in order), not by the code under test; CHK is checked with binascii.crc_hqx directly.
"""

from __future__ import annotations

import math
import struct
from binascii import crc_hqx
from dataclasses import replace

import pytest
from helpers.c37118 import CFG3, CFG3_DATA, TWO_PMUS, pmu_configs, read_split
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.c37118 import (
    CFG3_LAST_FRAGMENT,
    Cfg3Reassembler,
    Config3Fragment,
    Config3Frame,
    DataFrame,
    FragmentError,
    MalformedFrameError,
    SizeError,
    StreamReader,
    decode_frame,
    encode_config3,
    encode_frame,
    fragment_config3,
)
from protocols.c37118.frames import pmu_value_count

WHOLE = encode_frame(CFG3)
BODY = WHOLE[16:-2]  # after SYNC..FRACSEC (14 bytes) and CONT_IDX (2), before CHK
STEP = math.ceil(len(BODY) / 3)  # bytes of configuration per frame: three frames
MAX = STEP + 18  # + header 14, CONT_IDX 2, CHK 2


def three_pieces() -> list[bytes]:
    frames = encode_config3(CFG3, MAX)
    assert len(frames) == 3
    return frames


def test_a_cfg3_too_long_for_the_frame_size_goes_in_three_frames_1_2_last() -> None:
    frames = three_pieces()
    assert [struct.unpack_from(">H", f, 14)[0] for f in frames] == [1, 2, 0xFFFF]
    for f in frames:
        assert len(f) <= MAX and struct.unpack_from(">H", f, 2)[0] == len(f)
        assert f[:2] == WHOLE[:2] and f[4:14] == WHOLE[4:14]  # SYNC (CFG-3, version 2), IDCODE, SOC, FRACSEC
        assert crc_hqx(f[:-2], 0xFFFF) == struct.unpack_from(">H", f, len(f) - 2)[0]
    assert b"".join(f[16:-2] for f in frames) == BODY
    assert [len(f[16:-2]) for f in frames] == [STEP, STEP, len(BODY) - 2 * STEP]


def test_a_cfg3_that_fits_stays_one_frame_with_cont_idx_0() -> None:
    assert encode_config3(CFG3) == [WHOLE] and fragment_config3(CFG3, len(WHOLE)) == (CFG3,)
    assert len(encode_config3(CFG3, len(WHOLE) - 1)) == 2


@pytest.mark.parametrize("split", ["whole", "bytes", "half"])
def test_the_stream_reader_reassembles_three_frames_into_the_configuration(split: str) -> None:
    reader = StreamReader()
    assert read_split(b"".join(three_pieces()), split, reader) == [CFG3]
    assert reader.config_for(CFG3.idcode) == CFG3  # and data frames of the stream decode with it
    assert read_split(encode_frame(CFG3_DATA), reader=reader) == [replace(CFG3_DATA, config=reader.config_for(3))]


def test_other_frames_may_come_between_the_pieces() -> None:
    one, two, last = three_pieces()
    data = encode_frame(CFG3_DATA)
    reader = StreamReader([CFG3])
    events = read_split(one + data + two + data + last, reader=reader)
    assert events[:2] == [CFG3_DATA, CFG3_DATA] and events[2] == CFG3 and len(events) == 3


def test_pieces_decode_one_by_one_as_fragments() -> None:
    frames = three_pieces()
    frags = [decode_frame(f) for f in frames]
    assert all(isinstance(f, Config3Fragment) for f in frags)
    assert [f.cont_idx for f in frags] == [1, 2, CFG3_LAST_FRAGMENT] and frags[2].last
    assert [encode_frame(f) for f in frags] == frames  # build(parse(x)) == x
    r = Cfg3Reassembler()
    assert r.add(frags[0]) is None and r.pending(3) == 1
    assert r.add(frags[1]) is None and r.pending(3) == 2
    assert r.add(frags[2]) == CFG3 and r.pending(3) == 0


def frags() -> list[Config3Fragment]:
    out = [decode_frame(f) for f in three_pieces()]
    assert all(isinstance(f, Config3Fragment) for f in out)
    return out  # type: ignore[return-value]


def test_a_continuation_with_no_first_piece_is_a_fragment_error() -> None:
    one, two, last = frags()
    for piece in (two, last):
        with pytest.raises(FragmentError, match="no first piece") as err:
            Cfg3Reassembler().add(piece)
        assert (err.value.idcode, err.value.got, err.value.expected) == (3, piece.cont_idx, None)


def test_out_of_order_pieces_are_a_fragment_error_and_the_series_is_dropped() -> None:
    one, two, last = frags()
    r = Cfg3Reassembler()
    r.add(one)
    with pytest.raises(FragmentError, match="CONT_IDX 3 where 2") as err:
        r.add(replace(two, cont_idx=3))  # piece 2 lost
    assert (err.value.got, err.value.expected) == (3, 2) and r.pending(3) == 0
    with pytest.raises(FragmentError, match="no first piece"):
        r.add(last)  # the series is gone: the last piece alone cannot make a configuration
    r.add(one)
    r.add(two)
    with pytest.raises(FragmentError, match="CONT_IDX 2 where 3"):
        r.add(two)  # repeated


def test_a_new_first_piece_before_the_last_drops_the_older_series_and_keeps_the_new() -> None:
    one, two, last = frags()
    r = Cfg3Reassembler()
    r.add(one)
    r.add(two)
    with pytest.raises(FragmentError, match="new series") as err:
        r.add(one)
    assert err.value.expected == 3 and r.pending(3) == 1
    r.add(two)
    assert r.add(last) == CFG3


def test_a_missing_middle_piece_before_the_last_is_caught_by_the_fields() -> None:
    one, _two, last = frags()  # 1 then 0xFFFF: the index alone cannot tell; the configuration does not parse
    r = Cfg3Reassembler()
    r.add(one)
    with pytest.raises(MalformedFrameError):
        r.add(last)
    assert r.pending(3) == 0


def test_broken_sequences_in_a_stream_are_typed_error_events_and_the_reader_goes_on() -> None:
    one, two, last = three_pieces()
    out = read_split(two + one + last + one + two + WHOLE + encode_frame(CFG3_DATA))
    names = [type(e).__name__ for e in out]
    # 2 alone; 1 then 0xFFFF (piece 2 missing: the fields do not add up); 1, 2 then a whole CFG-3: cut short
    assert names == ["FragmentError", "MalformedFrameError", "Config3Frame", "FragmentError", "DataFrame"]
    assert "pieces 1..2 dropped" in str(out[3])


def test_reassembly_is_bounded() -> None:
    one, two, _ = frags()
    r = Cfg3Reassembler(max_size=len(one.data) + 1)
    r.add(one)
    with pytest.raises(SizeError):
        r.add(two)
    assert r.pending(3) == 0


def test_a_cfg3_longer_than_one_frame_can_hold_goes_out_only_in_pieces() -> None:
    # 40 PMUs of 100 phasors with 200-byte names: about 820 kB, far past FRAMESIZE's 65535 (6.2.1)
    base = CFG3.pmus[0]
    pmus = tuple(
        replace(
            base,
            idcode=i,
            station=f"S{i}",
            phasor_names=tuple(f"{i}-{j}".ljust(200, "x") for j in range(100)),
            phasor_scales=base.phasor_scales * 50,
        )  # fmt: skip
        for i in range(40)
    )
    big = Config3Frame(idcode=9, soc=1, time_base=1_000_000, data_rate=50, pmus=pmus)
    with pytest.raises(SizeError):
        encode_frame(big)
    frames = encode_config3(big)
    assert len(frames) >= 13 and all(len(f) <= 0xFFFF for f in frames)
    reader, events = StreamReader(max_config_size=2 << 20), []
    for f in frames:  # as a socket hands them over: the reader buffers one frame or so at a time
        reader.feed(f)
        events.extend(reader.events())
    assert events == [big]
    with pytest.raises(SizeError, match="over the bound"):  # the default bound (1 MiB) holds it; 800 kB does not
        r = Cfg3Reassembler(max_size=800_000)
        for f in frames:
            r.add(decode_frame(f))  # type: ignore[arg-type]


def test_bad_fragment_values_and_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        fragment_config3(CFG3, 18)
    for bad in ({"cont_idx": 0}, {"data": b""}, {"version": 1}):
        with pytest.raises(MalformedFrameError):
            Config3Fragment(**{"idcode": 1, "cont_idx": 1, "data": b"x", **bad})


@settings(max_examples=60, deadline=None)
@given(pmus=st.lists(pmu_configs(cfg3=True), min_size=1, max_size=3), max_size=st.integers(19, 300))
def test_any_cfg3_cut_at_any_size_comes_back_whole(pmus: list, max_size: int) -> None:
    pmus = [replace(p, idcode=i) for i, p in enumerate(pmus)]
    config = Config3Frame(idcode=77, soc=5, fracsec=6, pmus=tuple(pmus), data_rate=-5)
    frames = encode_config3(config, max_size)
    assert all(len(f) <= max_size for f in frames)
    assert read_split(b"".join(frames)) == [config]


def test_block_offsets_are_where_each_pmu_stat_sits() -> None:
    # TWO_PMUS (test_c37118_codec.py): PMU 0 has 2 phasors, 1 analog, 0 digital words; PMU 1 has 1 phasor.
    # Words: 5 header words, then STAT + 2x2 phasor + FREQ + DFREQ + 1 analog = 8 for PMU 0: PMU 1 at 13.
    assert DataFrame.block_offsets(TWO_PMUS) == (5, 13)
    assert (TWO_PMUS.pmus[0].phnmr, TWO_PMUS.pmus[0].annmr, TWO_PMUS.pmus[0].dgnmr) == (2, 1, 0)
    assert 5 + pmu_value_count(TWO_PMUS.pmus[0]) == 13
