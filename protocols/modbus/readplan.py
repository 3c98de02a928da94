"""Read plans: which Modbus requests fetch a device's points with the fewest round trips.

Sans-IO: a plan is plain data computed from a register map. Every request costs a round trip (on a
9600-baud RS-485 line, tens of milliseconds of silence and framing), so neighbouring points of the
same table are coalesced into one read, bridging small gaps of unused registers. Some devices refuse
a read that touches an address they do not implement; :func:`split_block` is the fallback that
narrows a refused block down to one request per point.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from protocols.modbus.registermap import MAX_READ_BITS, MAX_READ_REGISTERS, RegisterPoint, Table


class ReadPlanError(ValueError):
    """The points cannot be read within the limits asked for (e.g. a point wider than max_block)."""


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers (or bits) of ``table`` from ``start``, and the points in it."""

    table: Table
    start: int
    count: int
    points: tuple[RegisterPoint, ...]

    def __post_init__(self) -> None:
        limit = MAX_READ_BITS if self.table.is_bits else MAX_READ_REGISTERS
        # Modbus Application Protocol v1.1b3, 6.1-6.4: quantity 1..2000 bits or 1..125 registers
        if not 1 <= self.count <= limit:
            raise ReadPlanError(f"a {self.table.value} read of {self.count} is outside 1..{limit}")
        for p in self.points:
            if p.table is not self.table or p.address < self.start or p.end > self.end:
                raise ReadPlanError(f"point {p.name!r} lies outside block {self.table.value}[{self.start}:{self.end}]")

    @property
    def end(self) -> int:
        """One past the last address read."""
        return self.start + self.count


def _limit(table: Table, max_block: int) -> int:
    return MAX_READ_BITS if table.is_bits else min(max_block, MAX_READ_REGISTERS)


def _block(table: Table, points: Sequence[RegisterPoint]) -> ReadBlock:
    start = min(p.address for p in points)
    end = max(p.end for p in points)
    return ReadBlock(table, start, end - start, tuple(points))


def plan_reads(points: Iterable[RegisterPoint], *, max_block: int = 125, max_gap: int = 8) -> list[ReadBlock]:
    """Coalesce points into as few reads as possible.

    A block holds points of one table, spans at most ``max_block`` registers (capped at 125; bit
    tables at 2000 bits), bridges at most ``max_gap`` unused registers (bits) between neighbours
    and never splits a point. Blocks come out by table, then address. Greedy left-to-right
    extension is optimal here: any sub-run of a valid block is itself a valid block.
    """
    if max_block < 1:
        raise ReadPlanError(f"max_block = {max_block}: must be at least 1")
    if max_gap < 0:
        raise ReadPlanError(f"max_gap = {max_gap}: must be at least 0")
    by_table: dict[Table, list[RegisterPoint]] = {}
    for p in points:
        by_table.setdefault(p.table, []).append(p)
    blocks: list[ReadBlock] = []
    for table in Table:
        pts = sorted(by_table.get(table, ()), key=lambda p: (p.address, p.end, p.name))
        if not pts:
            continue
        limit = _limit(table, max_block)
        run: list[RegisterPoint] = []
        start = end = 0
        for p in pts:
            if p.words > limit:
                raise ReadPlanError(
                    f"point {p.name!r} needs {p.words} {'bits' if table.is_bits else 'registers'}, "
                    f"more than one read may fetch ({limit})"
                )
            if run and p.address - end <= max_gap and max(end, p.end) - start <= limit:
                run.append(p)
                end = max(end, p.end)
                continue
            if run:
                blocks.append(ReadBlock(table, start, end - start, tuple(run)))
            run, start, end = [p], p.address, p.end
        blocks.append(ReadBlock(table, start, end - start, tuple(run)))
    return blocks


def split_block(block: ReadBlock) -> list[ReadBlock]:
    """Split a block the device refused into two tighter halves (by points).

    Called again on a half that is still refused, this isolates the offending address in
    log2(points) steps instead of one request per point up front. A single-point block cannot be
    split and comes back unchanged.
    """
    pts = block.points
    if len(pts) <= 1:
        return [block]
    half = len(pts) // 2
    return [_block(block.table, pts[:half]), _block(block.table, pts[half:])]


def extract(block: ReadBlock, words: Sequence[int] | Sequence[bool]) -> dict[str, list]:
    """Slice each point's words out of the block's read result, by point name.

    ``words`` may be longer than the block (bit reads come back padded to a whole byte), never
    shorter: that is a malformed answer, ReadPlanError.
    """
    if len(words) < block.count:
        raise ReadPlanError(
            f"read of {block.table.value}[{block.start}:{block.end}] returned {len(words)} values, "
            f"expected {block.count}"
        )
    return {p.name: list(words[p.address - block.start : p.end - block.start]) for p in block.points}
