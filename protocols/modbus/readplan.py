"""Read plans: which Modbus requests fetch a device's points with the fewest round trips.

Sans-IO: a plan is plain data computed from a register map. Every request costs a round trip (on a
9600-baud RS-485 line, tens of milliseconds of silence and framing), so neighbouring points of the
same table are coalesced into one read, bridging small gaps of unused registers. Some devices refuse
a read that touches an address they do not implement; :func:`split_block` is the fallback that
narrows a refused block down to one request per point.

Each block also carries a decoder compiled when the block is built (:func:`decode_block`): a whole
fleet is polled on one thread, so what decoding a block costs is paid once per device per cycle.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from protocols.modbus.registermap import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    STRUCT_CODE,
    DataType,
    DecodeError,
    Order,
    RegisterPoint,
    Table,
    decode_point,
    decode_text,
)

Value = float | int | str | bool


class ReadPlanError(ValueError):
    """The points cannot be read within the limits asked for (e.g. a point wider than max_block)."""


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers (or bits) of ``table`` from ``start``, and the points in it."""

    table: Table
    start: int
    count: int
    points: tuple[RegisterPoint, ...]
    # compiled once here, at plan time, so a poll pays only for unpacking (see decode_block)
    _decoder: BlockDecoder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        limit = MAX_READ_BITS if self.table.is_bits else MAX_READ_REGISTERS
        # Modbus Application Protocol v1.1b3, 6.1-6.4: quantity 1..2000 bits or 1..125 registers
        if not 1 <= self.count <= limit:
            raise ReadPlanError(f"a {self.table.value} read of {self.count} is outside 1..{limit}")
        for p in self.points:
            if p.table is not self.table or p.address < self.start or p.end > self.end:
                raise ReadPlanError(f"point {p.name!r} lies outside block {self.table.value}[{self.start}:{self.end}]")
        object.__setattr__(self, "_decoder", BlockDecoder(self))

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
        raise _short_answer(block, len(words))
    return {p.name: list(words[p.address - block.start : p.end - block.start]) for p in block.points}


def _short_answer(block: ReadBlock, got: int) -> ReadPlanError:
    return ReadPlanError(
        f"read of {block.table.value}[{block.start}:{block.end}] returned {got} values, expected {block.count}"
    )


def decode_block(
    block: ReadBlock, words: Sequence[int] | Sequence[bool]
) -> tuple[list[Value | None], dict[int, DecodeError] | None]:
    """Decode every point of a block's read result at once: ``(values, errors)``.

    ``values[i]`` is the value of ``block.points[i]``, exactly what :func:`decode_point` gives for the
    point's words; a point whose words do not decode has ``None`` there and its DecodeError in
    ``errors[i]`` (``errors`` is None when every point decoded), and the other points are unaffected.
    ``words`` may be longer than the block (padded bit reads), never shorter: ReadPlanError, as
    :func:`extract`.
    """
    return block._decoder(words)


_INTS = frozenset({int})
_BOOLS = frozenset({bool})
_MODE_REGISTERS, _MODE_BITS, _MODE_REFERENCE = range(3)


def _field(p: RegisterPoint) -> tuple[bool, str, str]:
    """How one register point is unpacked from the block: (from the byte-swapped copy?, endianness, code).

    The block is packed once as big-endian words (``be``) and, when a point needs it, once with the two
    bytes of every word swapped (``le``). With w0, w1 the point's registers in address order, the value's
    bytes most significant first (registermap._from_words) are, per byte/word order:
    big/big ``be`` read big-endian; little/little ``be`` read little-endian (the whole run reversed);
    little/big ``le`` read big-endian; big/little ``le`` read little-endian. A one-register value has no
    word order, and text keeps its registers in address order, taking ``le`` when its bytes are swapped.
    """
    little_bytes = p.byte_order is Order.LITTLE
    if p.dtype is DataType.STRING:
        return little_bytes, ">", f"{2 * p.length}s"
    code = STRUCT_CODE[p.dtype]
    if p.words == 1:
        return False, "<" if little_bytes else ">", code
    return p.byte_order is not p.word_order, "<" if p.word_order is Order.LITTLE else ">", code


class BlockDecoder:
    """Decodes one ReadBlock's answer with as few Python steps per poll as the block allows.

    Compiled from the block: the points of the same (copy, endianness) that do not overlap are chained
    into one :class:`struct.Struct` with pad bytes between them, so a typical meter block is packed to
    bytes once and unpacked in one call. After that only what is not the identity runs: scale/offset,
    a single finiteness test over all float values, ASCII decoding of text. Anything unusual (a NaN, a
    word that is not a 16-bit int, text that is not ASCII, a block mixing bits and registers) is handed
    to :func:`decode_point`, the reference, for that point or block, so results and errors are its own.
    """

    __slots__ = (
        "_block", "_mode", "_count", "_offsets", "_pack_be", "_pack_le", "_unpack", "_order", "_scaled",
        "_floats", "_strings",
    )  # fmt: skip

    def __init__(self, block: ReadBlock) -> None:
        self._block = block
        self._count = block.count
        pts = block.points
        self._offsets = tuple(p.address - block.start for p in pts)
        self._pack_be: Callable[..., bytes] | None = None
        self._pack_le: Callable[..., bytes] | None = None
        self._unpack: tuple[tuple[Callable[[bytes, int], tuple], bool, int], ...] = ()
        self._order: tuple[int, ...] | None = None
        self._scaled: tuple[tuple[int, float, float], ...] = ()
        self._floats: tuple[int, ...] = ()
        self._strings: tuple[int, ...] = ()
        n_bools = sum(p.dtype is DataType.BOOL for p in pts)
        if pts and n_bools == len(pts):
            self._mode = _MODE_BITS
        elif n_bools:
            self._mode = _MODE_REFERENCE  # only a hand-built block mixes bits and registers
        else:
            self._mode = _MODE_REGISTERS
            self._compile_registers()

    def _compile_registers(self) -> None:
        block = self._block
        # chains[(le, endian)] = [[end address, [(point index, point), ...]], ...]
        chains: dict[tuple[bool, str], list[list]] = {}
        for i, p in sorted(enumerate(block.points), key=lambda ip: (ip[1].address, ip[1].end, ip[0])):
            le, endian, _ = _field(p)
            for chain in chains.setdefault((le, endian), []):
                if chain[0] <= p.address:  # overlapping points go to another chain
                    break
            else:
                chain = [0, []]
                chains[(le, endian)].append(chain)
            chain[0] = p.end
            chain[1].append((i, p))
        unpack = []
        field_points: list[int] = []
        for (le, endian), group in chains.items():
            for _, members in group:
                first = members[0][1].address
                fmt, at = [endian], first
                for i, p in members:
                    if p.address > at:
                        fmt.append(f"{2 * (p.address - at)}x")
                    fmt.append(_field(p)[2])
                    at = p.end
                    field_points.append(i)
                unpack.append((struct.Struct("".join(fmt)).unpack_from, le, 2 * (first - block.start)))
        self._unpack = tuple(unpack)
        position = {i: k for k, i in enumerate(field_points)}
        order = tuple(position[i] for i in range(len(block.points)))
        self._order = None if order == tuple(range(len(order))) else order
        self._pack_be = struct.Struct(f">{block.count}H").pack
        if any(le for _, le, _ in unpack):
            self._pack_le = struct.Struct(f"<{block.count}H").pack
        pts = block.points
        self._scaled = tuple(
            (i, p.scale, p.offset)
            for i, p in enumerate(pts)
            if p.dtype is not DataType.STRING and not (p.scale == 1.0 and p.offset == 0.0)
        )
        self._floats = tuple(i for i, p in enumerate(pts) if p.dtype in (DataType.FLOAT32, DataType.FLOAT64))
        self._strings = tuple(i for i, p in enumerate(pts) if p.dtype is DataType.STRING)

    def __call__(
        self, words: Sequence[int] | Sequence[bool]
    ) -> tuple[list[Value | None], dict[int, DecodeError] | None]:
        if len(words) != self._count:
            if len(words) < self._count:
                raise _short_answer(self._block, len(words))
            words = words[: self._count]
        if self._mode == _MODE_REGISTERS:
            return self._registers(words)
        if self._mode == _MODE_BITS:
            values = [words[o] for o in self._offsets]
            if {*map(type, values)} <= _BOOLS:
                return values, None
        return self._reference(words)

    def _registers(self, words: Sequence[int]) -> tuple[list[Value | None], dict[int, DecodeError] | None]:
        if not {*map(type, words)} <= _INTS:  # a bool or a float is not a register: decode_point says why
            return self._reference(words)
        try:
            be = self._pack_be(*words)  # type: ignore[misc]
            le = self._pack_le(*words) if self._pack_le is not None else b""
        except struct.error:  # a word outside 0..0xFFFF
            return self._reference(words)
        if len(self._unpack) == 1:
            unpack, swapped, at = self._unpack[0]
            raw = unpack(le if swapped else be, at)
        else:
            raw = ()
            for unpack, swapped, at in self._unpack:
                raw += unpack(le if swapped else be, at)
        values: list = list(raw) if self._order is None else [raw[k] for k in self._order]
        for i, scale, offset in self._scaled:
            values[i] = values[i] * scale + offset  # the same expression as decode_point: bit-identical
        errors: dict[int, DecodeError] | None = None
        floats = self._floats
        # one test for all: a sum of floats is finite only if each is (a finite sum may still overflow,
        # which merely sends us to the per-point check)
        if floats and not math.isfinite(sum([values[i] for i in floats])):
            for i in floats:
                if not math.isfinite(values[i]):
                    errors = self._reference_point(i, words, values, errors)
        for i in self._strings:
            try:
                values[i] = decode_text(self._block.points[i], values[i])
            except DecodeError:
                errors = self._reference_point(i, words, values, errors)
        return values, errors

    def _reference_point(
        self, i: int, words: Sequence[int] | Sequence[bool], values: list, errors: dict[int, DecodeError] | None
    ) -> dict[int, DecodeError] | None:
        """Point ``i`` decoded by decode_point into ``values``/``errors``; returns ``errors``."""
        p = self._block.points[i]
        at = self._offsets[i]
        try:
            values[i] = decode_point(p, words[at : at + p.words])
        except DecodeError as err:
            values[i] = None
            errors = {} if errors is None else errors
            errors[i] = err
        return errors

    def _reference(
        self, words: Sequence[int] | Sequence[bool]
    ) -> tuple[list[Value | None], dict[int, DecodeError] | None]:
        values: list[Value | None] = [None] * len(self._block.points)
        errors: dict[int, DecodeError] | None = None
        for i in range(len(values)):
            errors = self._reference_point(i, words, values, errors)
        return values, errors
