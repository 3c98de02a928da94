"""The register codec: one table of hand-written register words drives both encode and decode.

Expected words are written from the type definitions (IEEE 754 bit patterns, two's complement,
ASCII), not produced by the code under test. "big/big" = byte_order/word_order.
"""

from __future__ import annotations

import dataclasses
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.modbus.readplan import ReadBlock, decode_block
from protocols.modbus.registermap import (
    DataType,
    DecodeError,
    Order,
    RegisterPoint,
    Table,
    decode_point,
    encode_point,
)

B, L = Order.BIG, Order.LITTLE


def pt(
    dtype: DataType,
    byte_order: Order = B,
    word_order: Order = B,
    *,
    length: int = 0,
    scale: float = 1.0,
    offset: float = 0.0,
) -> RegisterPoint:
    table = Table.COIL if dtype is DataType.BOOL else Table.HOLDING
    return RegisterPoint(
        name="p",
        table=table,
        address=0,
        dtype=dtype,
        length=length,
        byte_order=byte_order,
        word_order=word_order,
        scale=scale,
        offset=offset,
    )


# (point, engineering value, register words)
CASES = [
    # float32 230.5 = 0x4366_8000
    (pt(DataType.FLOAT32), 230.5, [0x4366, 0x8000]),
    (pt(DataType.FLOAT32, B, L), 230.5, [0x8000, 0x4366]),
    (pt(DataType.FLOAT32, L, B), 230.5, [0x6643, 0x0080]),
    (pt(DataType.FLOAT32, L, L), 230.5, [0x0080, 0x6643]),
    (pt(DataType.FLOAT32), -1.0, [0xBF80, 0x0000]),
    # float64 1.0 = 0x3FF0_0000_0000_0000, -2.5 = 0xC004_0000_0000_0000
    (pt(DataType.FLOAT64), 1.0, [0x3FF0, 0, 0, 0]),
    (pt(DataType.FLOAT64, B, L), 1.0, [0, 0, 0, 0x3FF0]),
    (pt(DataType.FLOAT64, L, B), -2.5, [0x04C0, 0, 0, 0]),
    # integers, two's complement
    (pt(DataType.INT16), -1, [0xFFFF]),
    (pt(DataType.INT16), -2, [0xFFFE]),
    (pt(DataType.INT16, L), -2, [0xFEFF]),
    (pt(DataType.INT16, L, L), 0x0102, [0x0201]),  # word order means nothing for one register
    (pt(DataType.INT16), 32767, [0x7FFF]),
    (pt(DataType.INT16), -32768, [0x8000]),
    (pt(DataType.UINT16), 65535, [0xFFFF]),
    (pt(DataType.UINT16, L), 0x1234, [0x3412]),
    (pt(DataType.INT32), -2, [0xFFFF, 0xFFFE]),
    (pt(DataType.INT32, B, L), -2, [0xFFFE, 0xFFFF]),
    (pt(DataType.UINT32), 0x12345678, [0x1234, 0x5678]),
    (pt(DataType.UINT32, B, L), 0x12345678, [0x5678, 0x1234]),
    (pt(DataType.UINT32, L, B), 0x12345678, [0x3412, 0x7856]),
    (pt(DataType.UINT32, L, L), 0x12345678, [0x7856, 0x3412]),
    (pt(DataType.INT64), -1, [0xFFFF] * 4),
    (pt(DataType.INT64), -(1 << 63), [0x8000, 0, 0, 0]),
    (pt(DataType.UINT64), 0x0102030405060708, [0x0102, 0x0304, 0x0506, 0x0708]),
    (pt(DataType.UINT64, B, L), 0x0102030405060708, [0x0708, 0x0506, 0x0304, 0x0102]),
    (pt(DataType.UINT64, L, L), 0x0102030405060708, [0x0807, 0x0605, 0x0403, 0x0201]),
    (pt(DataType.UINT64), (1 << 64) - 1, [0xFFFF] * 4),  # exact: no float on the way
    # scale and offset: engineering = raw * scale + offset
    (pt(DataType.UINT16, scale=0.5), 1152.5, [2305]),
    (pt(DataType.INT16, scale=0.25, offset=-10.0), -10.5, [0xFFFE]),
    (pt(DataType.INT32, scale=2.0, offset=1.0), 201.0, [0, 100]),
    (pt(DataType.FLOAT32, scale=2.0, offset=1.0), 462.0, [0x4366, 0x8000]),
    # strings: 2 ASCII bytes per register, first character in the high byte (big), NUL padded
    (pt(DataType.STRING, length=2), "AB", [0x4142, 0x0000]),
    (pt(DataType.STRING, L, length=2), "AB", [0x4241, 0x0000]),
    (pt(DataType.STRING, length=3), "MTR-1", [0x4D54, 0x522D, 0x3100]),
    (pt(DataType.STRING, B, L, length=2), "ABCD", [0x4142, 0x4344]),  # word order does not apply to text
    (pt(DataType.STRING, length=1), "", [0x0000]),
    # bits
    (pt(DataType.BOOL), True, [True]),
    (pt(DataType.BOOL), False, [False]),
]


def _id(case: tuple) -> str:
    p, v, _ = case
    return f"{p.dtype.value}-{p.byte_order.value}/{p.word_order.value}-{v!r}"


@pytest.mark.parametrize("point,value,words", CASES, ids=[_id(c) for c in CASES])
def test_encode_matches_table(point: RegisterPoint, value, words) -> None:
    assert encode_point(point, value) == words


@pytest.mark.parametrize("point,value,words", CASES, ids=[_id(c) for c in CASES])
def test_decode_matches_table(point: RegisterPoint, value, words) -> None:
    got = decode_point(point, words)
    assert got == value
    assert type(got) is type(value)


@pytest.mark.parametrize("point,value,words", CASES, ids=[_id(c) for c in CASES])
def test_block_decoder_matches_table(point: RegisterPoint, value, words) -> None:
    """The same table through a block's precompiled decoder, the point placed after a register of padding."""
    moved = dataclasses.replace(point, address=1)
    filler = [False] if point.table.is_bits else [0xFFFF]
    block = ReadBlock(point.table, 0, 1 + point.words, (moved,))
    values, errors = decode_block(block, filler + words)
    assert errors is None
    assert values == [value]
    assert type(values[0]) is type(value)


def test_integer_without_scale_decodes_to_int_with_scale_to_float() -> None:
    assert decode_point(pt(DataType.UINT16), [7]) == 7
    assert isinstance(decode_point(pt(DataType.UINT16), [7]), int)
    got = decode_point(pt(DataType.UINT16, scale=0.1), [2305])
    assert isinstance(got, float) and got == pytest.approx(230.5)
    assert isinstance(decode_point(pt(DataType.INT16, offset=1.0), [1]), float)


def test_encode_rounds_scaled_integer_to_nearest() -> None:
    assert encode_point(pt(DataType.UINT16, scale=0.1), 230.46) == [2305]
    assert encode_point(pt(DataType.UINT16, scale=0.1), 230.44) == [2304]
    assert encode_point(pt(DataType.INT16, scale=10.0), -26.0) == [0xFFFD]  # -2.6 -> -3


def test_string_strips_trailing_nul_and_spaces() -> None:
    p = pt(DataType.STRING, length=4)
    assert decode_point(p, [0x4142, 0x2020, 0x0020, 0x0000]) == "AB"
    assert decode_point(p, [0x2041, 0x0000, 0x0000, 0x0000]) == " A"  # leading space kept


def test_string_ends_at_the_first_nul_whatever_follows() -> None:
    # "SN" NUL-terminated, then what the device's buffer held: neither kept nor a decode error
    p = pt(DataType.STRING, length=4)
    assert decode_point(p, [0x534E, 0x00FF, 0xC3A9, 0x4142]) == "SN"
    assert decode_point(p, [0x0041, 0x4243, 0x4445, 0x4647]) == ""  # NUL first: empty text
    assert decode_point(pt(DataType.STRING, L, length=2), [0x4241, 0xFF00]) == "AB"  # little: "AB\0\xff"


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "point,words",
    [
        (pt(DataType.FLOAT32), [0x7FC0, 0x0000]),  # NaN
        (pt(DataType.FLOAT32), [0xFFC0, 0x0001]),  # NaN with payload
        (pt(DataType.FLOAT32), [0x7F80, 0x0000]),  # +inf
        (pt(DataType.FLOAT32, B, L), [0x0000, 0xFF80]),  # -inf, swapped words
        (pt(DataType.FLOAT64), [0x7FF8, 0, 0, 0]),  # NaN
        (pt(DataType.FLOAT64, scale=10.0), [0x7FEF, 0xFFFF, 0xFFFF, 0xFFFF]),  # max * 10 overflows
        (pt(DataType.STRING, length=1), [0xC3A9]),  # "é" in UTF-8: not ASCII
        (pt(DataType.STRING, length=1), [0x41FF]),
        (pt(DataType.STRING, length=2), [0x4101, 0x4200]),  # a control character inside the text
        (pt(DataType.STRING, length=1), [0x411B]),  # ESC
        (pt(DataType.STRING, length=1), [0x417F]),  # DEL
        (pt(DataType.UINT32), [1]),  # too few words
        (pt(DataType.UINT16), [1, 2]),  # too many
        (pt(DataType.UINT16), []),
        (pt(DataType.STRING, length=2), [0x4142]),
        (pt(DataType.BOOL), [True, False]),
        (pt(DataType.BOOL), [2]),
        (pt(DataType.UINT16), [0x10000]),  # not a 16-bit word
        (pt(DataType.UINT16), [-1]),
        (pt(DataType.UINT16), [1.5]),
    ],
)
def test_decode_rejects(point: RegisterPoint, words) -> None:
    with pytest.raises(DecodeError):
        decode_point(point, words)


@pytest.mark.parametrize(
    "point,value",
    [
        (pt(DataType.INT16), 32768),
        (pt(DataType.INT16), -32769),
        (pt(DataType.UINT16), -1),
        (pt(DataType.UINT16, scale=0.1), 6553.6),  # raw 65536
        (pt(DataType.UINT32), 1 << 32),
        (pt(DataType.INT64), 1 << 63),
        (pt(DataType.UINT64), -1),
        (pt(DataType.INT32), math.nan),
        (pt(DataType.INT32), math.inf),
        (pt(DataType.FLOAT32), math.nan),
        (pt(DataType.FLOAT64), -math.inf),
        (pt(DataType.FLOAT32), 1e39),  # beyond float32
        (pt(DataType.UINT16), True),  # a bool is not a number here
        (pt(DataType.UINT16), "5"),
        (pt(DataType.STRING, length=1), "ABC"),  # too long for 1 register
        (pt(DataType.STRING, length=2), "é"),
        (pt(DataType.STRING, length=2), "A\x00B"),  # a NUL would end the text on the device
        (pt(DataType.STRING, length=2), "A\nB"),
        (pt(DataType.STRING, length=2), 5),
        (pt(DataType.BOOL), 2),
        (pt(DataType.BOOL), "on"),
    ],
)
def test_encode_rejects(point: RegisterPoint, value) -> None:
    with pytest.raises(ValueError):
        encode_point(point, value)


# ---- round trips ---------------------------------------------------------------------------

ORDERS = st.sampled_from([B, L])
INT_BITS = {
    DataType.INT16: (16, True),
    DataType.UINT16: (16, False),
    DataType.INT32: (32, True),
    DataType.UINT32: (32, False),
    DataType.INT64: (64, True),
    DataType.UINT64: (64, False),
}


@st.composite
def int_point_and_value(draw):
    dtype = draw(st.sampled_from(list(INT_BITS)))
    bits, signed = INT_BITS[dtype]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return pt(dtype, draw(ORDERS), draw(ORDERS)), draw(st.integers(lo, hi))


@given(int_point_and_value())
def test_integer_round_trip(case) -> None:
    point, value = case
    words = encode_point(point, value)
    assert len(words) == point.words and all(0 <= w <= 0xFFFF for w in words)
    assert decode_point(point, words) == value


@given(ORDERS, ORDERS, st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_round_trip(bo: Order, wo: Order, value: float) -> None:
    p = pt(DataType.FLOAT32, bo, wo)
    got = decode_point(p, encode_point(p, value))
    assert struct.pack(">f", got) == struct.pack(">f", value)  # bit exact, -0.0 included


@given(ORDERS, ORDERS, st.floats(allow_nan=False, allow_infinity=False))
def test_float64_round_trip(bo: Order, wo: Order, value: float) -> None:
    p = pt(DataType.FLOAT64, bo, wo)
    got = decode_point(p, encode_point(p, value))
    assert struct.pack(">d", got) == struct.pack(">d", value)


@given(
    ORDERS,
    st.integers(1, 8).flatmap(
        lambda n: st.tuples(
            st.just(n), st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=2 * n)
        )
    ),
)
def test_string_round_trip(bo: Order, case) -> None:  # fmt: skip
    length, text = case
    p = pt(DataType.STRING, bo, length=length)
    assert decode_point(p, encode_point(p, text)) == text


@st.composite
def any_point_and_words(draw):
    dtype = draw(st.sampled_from([d for d in DataType if d is not DataType.BOOL]))
    length = draw(st.integers(1, 4)) if dtype is DataType.STRING else 0
    p = pt(dtype, draw(ORDERS), draw(ORDERS), length=length)
    return p, draw(st.lists(st.integers(0, 0xFFFF), min_size=p.words, max_size=p.words))


@given(any_point_and_words())
def test_any_words_decode_then_encode_back_or_raise_decode_error(case) -> None:
    """Whatever a device sends either decodes and re-encodes to the same words, or is a DecodeError."""
    point, words = case
    try:
        value = decode_point(point, words)
    except DecodeError:
        return
    if point.dtype is DataType.STRING:
        # trailing NUL/space padding is not kept, so compare the re-encoded text instead
        assert decode_point(point, encode_point(point, value)) == value
    else:
        assert encode_point(point, value) == words


@given(
    st.sampled_from([DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32]),
    st.sampled_from([0.1, 0.01, 0.5, 2.0, -1.0]),
    st.sampled_from([0.0, -40.0, 1000.0]),
    st.integers(0, 0x7FFF),
)
def test_scaled_integer_round_trip(dtype: DataType, scale: float, offset: float, raw: int) -> None:
    p = pt(dtype, scale=scale, offset=offset)
    words = [0] * (p.words - 1) + [raw]
    assert encode_point(p, decode_point(p, words)) == words
