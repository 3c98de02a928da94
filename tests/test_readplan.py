"""Read plans: coalescing, gap bridging, the Modbus quantity limits, the split fallback."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.modbus.readplan import ReadBlock, ReadPlanError, decode_block, extract, plan_reads, split_block
from protocols.modbus.registermap import (
    DataType,
    DecodeError,
    Order,
    RegisterPoint,
    Table,
    decode_point,
    encode_point,
    parse_register_map,
)

H, IN, C, D = Table.HOLDING, Table.INPUT, Table.COIL, Table.DISCRETE


def p(name: str, address: int, dtype: DataType = DataType.UINT16, table: Table = H, length: int = 0) -> RegisterPoint:
    if table.is_bits:
        dtype = DataType.BOOL
    return RegisterPoint(name=name, table=table, address=address, dtype=dtype, length=length)


def shape(blocks: list[ReadBlock]) -> list[tuple]:
    return [(b.table, b.start, b.count, tuple(x.name for x in b.points)) for b in blocks]


def test_adjacent_points_share_one_read() -> None:
    pts = [p("v", 0, DataType.FLOAT32), p("i", 2, DataType.FLOAT32), p("f", 4)]
    assert shape(plan_reads(pts)) == [(H, 0, 5, ("v", "i", "f"))]


def test_order_of_input_does_not_matter() -> None:
    pts = [p("f", 4), p("v", 0, DataType.FLOAT32), p("i", 2, DataType.FLOAT32)]
    assert shape(plan_reads(pts)) == [(H, 0, 5, ("v", "i", "f"))]


def test_gap_up_to_max_gap_is_bridged_and_beyond_is_not() -> None:
    pts = [p("a", 0), p("b", 9), p("c", 19)]  # gaps of 8 (1..8) and 9 (10..18)
    assert shape(plan_reads(pts, max_gap=8)) == [(H, 0, 10, ("a", "b")), (H, 19, 1, ("c",))]
    assert shape(plan_reads(pts, max_gap=9)) == [(H, 0, 20, ("a", "b", "c"))]
    assert shape(plan_reads(pts, max_gap=0)) == [(H, 0, 1, ("a",)), (H, 9, 1, ("b",)), (H, 19, 1, ("c",))]


def test_tables_are_never_mixed() -> None:
    pts = [p("h", 0), p("i", 1, table=IN), p("h2", 1), p("c", 0, table=C), p("d", 0, table=D)]
    assert shape(plan_reads(pts)) == [
        (H, 0, 2, ("h", "h2")),
        (IN, 1, 1, ("i",)),
        (C, 0, 1, ("c",)),
        (D, 0, 1, ("d",)),
    ]


def test_block_never_exceeds_125_registers() -> None:
    pts = [p(f"r{i}", 2 * i, DataType.UINT32) for i in range(100)]  # 200 contiguous registers
    blocks = plan_reads(pts, max_block=500)
    assert [(b.start, b.count) for b in blocks] == [(0, 124), (124, 76)]  # 125 would split r62
    assert sum(len(b.points) for b in blocks) == 100


def test_max_block_below_125_is_honoured() -> None:
    pts = [p(f"r{i}", i) for i in range(10)]
    assert [(b.start, b.count) for b in plan_reads(pts, max_block=4)] == [(0, 4), (4, 4), (8, 2)]


def test_bits_may_span_2000() -> None:
    pts = [p(f"c{i}", i * 10, table=C) for i in range(250)]  # 0..2490
    blocks = plan_reads(pts, max_gap=9)
    assert [(b.start, b.count) for b in blocks] == [(0, 1991), (2000, 491)]


def test_a_point_wider_than_a_read_is_an_error() -> None:
    with pytest.raises(ReadPlanError, match="name"):
        plan_reads([p("name", 0, DataType.STRING, length=20)], max_block=10)


@pytest.mark.parametrize("kw", [{"max_block": 0}, {"max_gap": -1}])
def test_bad_limits_are_errors(kw) -> None:
    with pytest.raises(ReadPlanError):
        plan_reads([p("a", 0)], **kw)


def test_overlapping_points_share_registers() -> None:
    # a 32-bit counter and its low word mapped separately, as some meter maps do
    pts = [p("total", 10, DataType.UINT32), p("low", 11)]
    assert shape(plan_reads(pts)) == [(H, 10, 2, ("total", "low"))]


def test_block_validates_quantity_and_membership() -> None:
    with pytest.raises(ReadPlanError):
        ReadBlock(H, 0, 126, ())
    with pytest.raises(ReadPlanError):
        ReadBlock(C, 0, 2001, ())
    with pytest.raises(ReadPlanError):
        ReadBlock(H, 0, 1, (p("a", 0, DataType.UINT32),))


def test_split_halves_down_to_one_point() -> None:
    (block,) = plan_reads([p("a", 0), p("b", 1), p("c", 5, DataType.FLOAT32), p("d", 7)])
    left, right = split_block(block)
    assert shape([left, right]) == [(H, 0, 2, ("a", "b")), (H, 5, 3, ("c", "d"))]
    assert shape(split_block(left)) == [(H, 0, 1, ("a",)), (H, 1, 1, ("b",))]
    single = split_block(left)[0]
    assert split_block(single) == [single]


def test_extract_slices_each_point() -> None:
    (block,) = plan_reads([p("a", 10), p("b", 12, DataType.UINT32)])
    assert extract(block, [1, 99, 3, 4]) == {"a": [1], "b": [3, 4]}


def test_extract_accepts_padded_bits_and_rejects_short_answers() -> None:
    (block,) = plan_reads([p("x", 0, table=C), p("y", 2, table=C)])
    assert extract(block, [True, False, False, False, False, False, False, False]) == {"x": [True], "y": [False]}
    with pytest.raises(ReadPlanError):
        extract(block, [True, False])


# ---- properties ----------------------------------------------------------------------------


@st.composite
def point_sets(draw):
    n = draw(st.integers(1, 60))
    pts = []
    for i in range(n):
        table = draw(st.sampled_from(list(Table)))
        if table.is_bits:
            pts.append(p(f"p{i}", draw(st.integers(0, 5000)), table=table))
        else:
            dtype = draw(st.sampled_from([DataType.UINT16, DataType.FLOAT32, DataType.UINT64, DataType.STRING]))
            length = draw(st.integers(1, 20)) if dtype is DataType.STRING else 0
            pts.append(p(f"p{i}", draw(st.integers(0, 600)), dtype, table, length))
    return pts


@given(point_sets(), st.integers(20, 125), st.integers(0, 20))
def test_plan_covers_every_point_once_within_limits(pts, max_block, max_gap) -> None:
    blocks = plan_reads(pts, max_block=max_block, max_gap=max_gap)
    names = [x.name for b in blocks for x in b.points]
    assert sorted(names) == sorted(x.name for x in pts)
    for b in blocks:
        assert b.count <= (2000 if b.table.is_bits else max_block)
        assert b.start == min(x.address for x in b.points)
        assert b.end == max(x.end for x in b.points)
        end = b.start
        for x in sorted(b.points, key=lambda x: x.address):
            assert x.table is b.table
            assert x.address - end <= max_gap
            end = max(end, x.end)
    # blocks of one table never leave a bridgeable, mergeable neighbour unmerged
    for a, b in zip(blocks, blocks[1:], strict=False):
        if a.table is b.table:
            limit = 2000 if a.table.is_bits else max_block
            assert b.start - a.end > max_gap or b.end - a.start > limit


@given(point_sets())
def test_repeated_splitting_ends_with_one_point_per_block(pts) -> None:
    work = plan_reads(pts)
    leaves = []
    while work:
        b = work.pop()
        parts = split_block(b)
        if len(parts) == 1:
            assert len(b.points) == 1
            leaves.append(b)
        else:
            assert sum(len(x.points) for x in parts) == len(b.points)
            assert all(x.count <= b.count for x in parts)
            work.extend(parts)
    assert sorted(b.points[0].name for b in leaves) == sorted(x.name for x in pts)
    for b in leaves:
        assert (b.start, b.count) == (b.points[0].address, b.points[0].words)


# ---- the block decoder against the reference, decode_point -------------------------------------


def reference(block: ReadBlock, words: list) -> list[tuple]:
    """Per point, what decode_point says about its words: ("ok", type, repr) or ("error", message)."""
    out = []
    for x, pwords in zip(block.points, extract(block, words).values(), strict=True):
        try:
            v = decode_point(x, pwords)
        except DecodeError as err:
            out.append(("error", str(err)))
        else:
            out.append(("ok", type(v), repr(v)))  # repr: -0.0 and 0.0, 1 and 1.0 differ
    return out


def fast(block: ReadBlock, words: list) -> list[tuple]:
    values, errors = decode_block(block, words)
    assert len(values) == len(block.points)
    assert errors is None or errors  # None, or at least one error
    out = []
    for i, v in enumerate(values):
        if errors is not None and i in errors:
            assert v is None
            assert type(errors[i]) is DecodeError
            out.append(("error", str(errors[i])))
        else:
            out.append(("ok", type(v), repr(v)))
    return out


def rp(name: str, address: int, dtype: DataType, **kw) -> RegisterPoint:
    return RegisterPoint(name=name, table=H, address=address, dtype=dtype, **kw)


def test_block_decoder_gives_each_point_its_value() -> None:
    pts = [
        rp("v", 0, DataType.FLOAT32),
        rp("f", 2, DataType.UINT16, scale=0.01),
        rp("e", 3, DataType.UINT64, word_order=Order.LITTLE),
        rp("t", 10, DataType.STRING, length=2, byte_order=Order.LITTLE),  # after a gap of 3
        rp("s", 12, DataType.INT16, byte_order=Order.LITTLE),
    ]
    (block,) = plan_reads(pts)
    words = [0x4366, 0x8000, 6001, 0x0708, 0x0506, 0x0304, 0x0102, 9, 9, 9, 0x4241, 0x0043, 0xFEFF]
    values, errors = decode_block(block, words)
    assert errors is None
    assert values == [230.5, 60.01, 0x0102030405060708, "ABC", -2]
    assert type(values[2]) is int


def test_block_decoder_isolates_a_nan_to_its_point() -> None:
    pts = [rp("a", 0, DataType.FLOAT32), rp("b", 2, DataType.FLOAT32), rp("c", 4, DataType.UINT16)]
    (block,) = plan_reads(pts)
    values, errors = decode_block(block, [0x4366, 0x8000, 0x7FC0, 0x0000, 7])
    assert values == [230.5, None, 7]
    assert errors is not None and list(errors) == [1]
    assert "non-finite" in str(errors[1])


def test_block_decoder_reports_scaled_float_overflow_and_bad_text() -> None:
    pts = [rp("big", 0, DataType.FLOAT64, scale=1e300), rp("txt", 4, DataType.STRING, length=1)]
    (block,) = plan_reads(pts)
    values, errors = decode_block(block, [0x7FEF, 0xFFFF, 0xFFFF, 0xFFFF, 0xC141])
    assert values == [None, None]
    assert errors is not None
    assert "overflows" in str(errors[0]) and "not printable ASCII" in str(errors[1])


@pytest.mark.parametrize(
    "words",
    [
        [True, 0x4366, 0x8000],  # a bool is not a register
        [70000, 0x4366, 0x8000],  # not a 16-bit word
        [1.0, 0x4366, 0x8000],  # not an int
    ],
)
def test_block_decoder_hands_words_that_are_not_registers_to_the_reference(words) -> None:
    (block,) = plan_reads([rp("a", 0, DataType.UINT16), rp("b", 1, DataType.FLOAT32)])
    values, errors = decode_block(block, words)
    assert values == [None, 230.5]
    assert errors is not None and "16-bit word" in str(errors[0])
    assert fast(block, words) == reference(block, words)


def test_block_decoder_bits_padded_answer_and_non_bits() -> None:
    (block,) = plan_reads([p("x", 0, table=C), p("y", 2, table=C)])
    assert decode_block(block, [True, False, False] + [False] * 5) == ([True, False], None)
    values, errors = decode_block(block, [1, 7, 0])  # ints 0/1 are bits too; 7 is not read
    assert values == [True, False]
    assert errors is None
    values, errors = decode_block(block, [7, 0, True])
    assert values == [None, True] and errors is not None and "not 0/1" in str(errors[0])


def test_block_decoder_rejects_short_answers_and_ignores_extra_words() -> None:
    (block,) = plan_reads([rp("a", 0, DataType.UINT32)])
    with pytest.raises(ReadPlanError, match="returned 1 values, expected 2"):
        decode_block(block, [1])
    assert decode_block(block, [0, 5, 99]) == ([5], None)


def test_block_decoder_of_a_hand_built_mixed_block_follows_the_reference() -> None:
    block = ReadBlock(H, 0, 2, (rp("flag", 0, DataType.BOOL), rp("n", 1, DataType.UINT16)))
    for words in ([1, 5], [True, 5], [3, 5]):
        assert fast(block, words) == reference(block, words)


def test_block_decoder_matches_reference_on_the_sim_meter_map() -> None:
    path = Path(__file__).resolve().parent.parent / "config" / "maps" / "sim-meter.toml"
    rmap = parse_register_map(tomllib.loads(path.read_text()))
    samples = {DataType.STRING: "SIM3P-120", DataType.BOOL: True, DataType.FLOAT32: 119.75}
    for block in plan_reads(rmap.points):
        words: list = [False if block.table.is_bits else 0] * block.count
        for x in block.points:
            at = x.address - block.start
            words[at : x.end - block.start] = encode_point(x, samples.get(x.dtype, 60))
        values, errors = decode_block(block, words)
        assert errors is None
        assert values == [decode_point(x, words[x.address - block.start : x.end - block.start]) for x in block.points]
        assert fast(block, words) == reference(block, words)


# Register contents that hit the special cases: NaN/inf float32 and float64 high words, sign bits,
# non-ASCII and padding bytes.
SPECIAL_WORDS = [0x7FC0, 0x7F80, 0xFF80, 0x7FF0, 0xFFF0, 0x7FF8, 0x7FEF, 0x8000, 0x0000, 0xFFFF, 0x4141, 0x2020, 0x00FF]
REGISTER_TYPES = [d for d in DataType if d is not DataType.BOOL]


@st.composite
def register_maps(draw):
    """Points of every type, order, scale and table, on a small address range so they coalesce and overlap."""
    pts = []
    for i in range(draw(st.integers(1, 25))):
        table = draw(st.sampled_from(list(Table)))
        if table.is_bits:
            pts.append(p(f"p{i}", draw(st.integers(0, 80)), table=table))
            continue
        dtype = draw(st.sampled_from(REGISTER_TYPES))
        scaled = dtype is not DataType.STRING and draw(st.booleans())
        pts.append(
            RegisterPoint(
                name=f"p{i}",
                table=table,
                address=draw(st.integers(0, 80)),
                dtype=dtype,
                length=draw(st.integers(1, 6)) if dtype is DataType.STRING else 0,
                byte_order=draw(st.sampled_from(list(Order))),
                word_order=draw(st.sampled_from(list(Order))),
                scale=draw(st.sampled_from([0.01, -1.0, 2.0, 1e300, 1e-300])) if scaled else 1.0,
                offset=draw(st.sampled_from([0.0, -0.0, -40.0, 1e308])) if scaled else 0.0,
            )
        )
    return pts


@settings(max_examples=300)
@given(register_maps(), st.integers(0, 10), st.data())
def test_block_decoder_gives_exactly_decode_points_results(pts, max_gap, data) -> None:
    for block in plan_reads(pts, max_gap=max_gap):
        if block.table.is_bits:
            words = data.draw(st.lists(st.booleans(), min_size=block.count, max_size=block.count + 7))
        else:
            word = st.one_of(st.integers(0, 0xFFFF), st.sampled_from(SPECIAL_WORDS))
            words = data.draw(st.lists(word, min_size=block.count, max_size=block.count + 2))
        assert fast(block, words) == reference(block, words)


@given(register_maps())
def test_split_blocks_decode_like_their_parent(pts) -> None:
    for block in plan_reads(pts):
        words = (
            [False] * block.count if block.table.is_bits else [(7 * i + 0x4100) & 0xFFFF for i in range(block.count)]
        )
        whole = fast(block, words)
        got = []
        for part in split_block(block):
            got += fast(part, words[part.start - block.start : part.end - block.start])
        assert got == whole
