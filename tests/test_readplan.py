"""Read plans: coalescing, gap bridging, the Modbus quantity limits, the split fallback."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.modbus.readplan import ReadBlock, ReadPlanError, extract, plan_reads, split_block
from protocols.modbus.registermap import DataType, RegisterPoint, Table

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
