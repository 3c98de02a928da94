"""Register maps: where each point lives in a Modbus device and how its registers decode.

A map is plain data (built by :func:`parse_register_map` from a TOML table) and a pair of pure
functions, :func:`decode_point` and :func:`encode_point`, that turn register words into values and
back. Addresses are protocol addresses, 0-based, as they go on the wire.
"""

from __future__ import annotations

import difflib
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from protocols.configcheck import MISSING, ConfigIssue


class Table(StrEnum):
    HOLDING = "holding"  # function 3 (read), 6/16 (write): 16-bit registers
    INPUT = "input"  # function 4: 16-bit read-only registers
    COIL = "coil"  # function 1 (read), 5/15 (write): bits
    DISCRETE = "discrete"  # function 2: read-only bits

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)


class DataType(StrEnum):
    BOOL = "bool"  # one coil or discrete input
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"  # ``length`` registers, two ASCII bytes each, NUL/space padded


# Registers (16-bit words) per value; STRING takes its length from the point.
WORDS: dict[DataType, int] = {
    DataType.BOOL: 1,
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
}


class Order(StrEnum):
    BIG = "big"
    LITTLE = "little"


class PointKind(StrEnum):
    TELEMETRY = "telemetry"
    ENERGY = "energy"  # metered energy: stored as settlement-grade, never dropped when the store is full


# Modbus Application Protocol v1.1b3, 6.3/6.4: at most 125 registers per read, 2000 bits per read.
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000
MAX_ADDRESS = 0xFFFF


MAP_KEYS = frozenset({"name", "defaults", "points"})
# What [defaults] may set for every point (a point's own key wins). Identity and layout (name, address,
# type, length) are per point by nature; a default for them could only be a mistake.
DEFAULT_KEYS = frozenset({"table", "byte_order", "word_order"})
POINT_KEYS = frozenset(
    {"name", "table", "address", "type", "length", "byte_order", "word_order", "scale", "offset", "unit", "kind"}
)
_DEFAULT_ENUMS: dict[str, type[StrEnum]] = {"table": Table, "byte_order": Order, "word_order": Order}


class RegisterMapError(ValueError):
    """A register map that cannot be used; ``issues`` lists every problem found, in file order.

    Each issue names the key path of the bad entry, the bad value (``MISSING`` when absent) and what is
    allowed. ``key``, ``value`` and ``allowed`` are those of the first issue, for callers that show one.
    """

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        if not issues:
            raise ValueError("RegisterMapError needs at least one issue")
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        first = self.issues[0]
        self.key = first.key
        self.value = first.value
        self.allowed = first.allowed
        if len(self.issues) == 1:
            text = str(first)
        else:
            text = f"{len(self.issues)} register map errors:\n" + "\n".join(f"  {i}" for i in self.issues)
        super().__init__(text)


class DecodeError(ValueError):
    """Registers that do not decode to a valid value for their point (e.g. a NaN float, bad text)."""


@dataclass(frozen=True, slots=True)
class RegisterPoint:
    name: str
    table: Table
    address: int
    dtype: DataType
    length: int = 0  # registers, for STRING only
    byte_order: Order = Order.BIG  # order of the two bytes inside each register
    word_order: Order = Order.BIG  # order of the registers of a multi-register value
    scale: float = 1.0  # engineering value = raw * scale + offset
    offset: float = 0.0
    unit: str = ""
    kind: PointKind = PointKind.TELEMETRY

    @property
    def words(self) -> int:
        """Registers (or bits, for coil/discrete tables) the point occupies."""
        if self.dtype is DataType.STRING:
            return self.length
        return WORDS[self.dtype]

    @property
    def end(self) -> int:
        """One past the last address the point occupies."""
        return self.address + self.words


@dataclass(frozen=True, slots=True)
class RegisterMap:
    name: str
    points: tuple[RegisterPoint, ...] = field(default_factory=tuple)
    # What parses but is likely a mistake (a point starting inside another); shown by check-config.
    warnings: tuple[ConfigIssue, ...] = field(default=(), compare=False)
    _by_name: dict[str, RegisterPoint] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # name -> point: a simulated device encodes hundreds of points per step (a SunSpec inverter: 335)
        object.__setattr__(self, "_by_name", {p.name: p for p in reversed(self.points)})

    def point(self, name: str) -> RegisterPoint:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"register map {self.name!r} has no point {name!r}") from None


def _unknown(issues: list[ConfigIssue], table: Mapping[str, Any], prefix: str, known: frozenset[str]) -> None:
    """An issue per key of ``table`` not in ``known``: a misspelled ``[default]`` or ``wordorder`` would
    otherwise fall back to big-endian without a word and decode wrong values."""
    allowed = ", ".join(sorted(known))
    for name in sorted(set(table) - known, key=str):
        close = difflib.get_close_matches(str(name), sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        issues.append(ConfigIssue(f"{prefix}.{name}", table[name], f"unknown key; allowed: {allowed}{hint}"))


def _enum(issues: list[ConfigIssue], key: str, value: Any, enum: type[StrEnum]) -> Any:
    """``enum(value)``, or None after recording an issue listing the allowed values."""
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        issues.append(ConfigIssue(key, value, f"must be one of {allowed}"))
        return None


def _finite(value: Any) -> bool:
    """A TOML number that is neither inf nor nan (``scale = inf`` parses as a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past the float range (only from Python, TOML integers are 64-bit)
        return False


def _int_in(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _defaults(issues: list[ConfigIssue], raw: Any, key: str) -> dict[str, Any]:
    """``[defaults]`` checked once, under its own key path; a bad entry is left out so that the points
    relying on it do not each repeat the same issue."""
    if raw is MISSING:
        return {}
    if not isinstance(raw, Mapping):
        issues.append(ConfigIssue(key, raw, "must be a table of " + ", ".join(sorted(DEFAULT_KEYS))))
        return {}
    _unknown(issues, raw, key, DEFAULT_KEYS)
    out: dict[str, Any] = {}
    for name, enum in _DEFAULT_ENUMS.items():
        if name in raw:
            value = _enum(issues, f"{key}.{name}", raw[name], enum)
            if value is not None:
                out[name] = value
    return out


def _point(
    issues: list[ConfigIssue], raw: Any, key: str, defaults: Mapping[str, Any], names: dict[str, str]
) -> RegisterPoint | None:
    """One ``[[points]]`` table -> a point, or None after recording every issue it has.

    ``names`` maps each point name seen so far to its ``points[i]``, to refuse a second point of that name.
    """
    start = len(issues)

    def fail(name: str, value: Any, allowed: str) -> None:
        issues.append(ConfigIssue(f"{key}.{name}", value, allowed))

    if not isinstance(raw, Mapping):
        issues.append(ConfigIssue(key, raw, "must be a table"))
        return None
    _unknown(issues, raw, key, POINT_KEYS)
    merged = {**defaults, **raw}
    pname = raw.get("name", MISSING)
    if not isinstance(pname, str) or not pname or not pname.replace("_", "").isalnum():
        fail("name", pname, "must be a non-empty name of letters, digits and _")
    elif pname in names:
        fail("name", pname, f"must be unique within the map ({names[pname]} has it already)")
    else:
        names[pname] = key.rsplit(".", 1)[-1]  # "points[3]": the prefix is in the key path already
    table = _enum(issues, f"{key}.table", merged.get("table", "holding"), Table)
    dtype = None
    if "type" not in raw:
        fail("type", MISSING, "is required: " + ", ".join(t.value for t in DataType))
    else:
        dtype = _enum(issues, f"{key}.type", raw["type"], DataType)
    if table is not None and dtype is not None and table.is_bits != (dtype is DataType.BOOL):
        fail("type", dtype.value, "coil and discrete points must be 'bool', and only they may be")
    address = raw.get("address", MISSING)
    address_ok = _int_in(address, 0, MAX_ADDRESS)
    if not address_ok:
        fail("address", address, f"must be an integer 0..{MAX_ADDRESS}")
    length = raw.get("length", 0)
    length_ok = dtype is not None
    if dtype is DataType.STRING:
        length_ok = _int_in(length, 1, MAX_READ_REGISTERS)
        if not length_ok:
            fail("length", length, f"a string needs a length of 1..{MAX_READ_REGISTERS} registers")
    elif dtype is not None and "length" in raw:
        fail("length", length, "is only for type 'string'")
    scale = raw.get("scale", 1.0)
    offset = raw.get("offset", 0.0)
    for name, value in (("scale", scale), ("offset", offset)):
        if not _finite(value):
            fail(name, value, "must be a finite number")
    if _finite(scale) and scale == 0:
        fail("scale", scale, "must not be 0")
    unit = raw.get("unit", "")
    if not isinstance(unit, str):
        fail("unit", unit, "must be a string")
    byte_order = _enum(issues, f"{key}.byte_order", merged.get("byte_order", "big"), Order)
    word_order = _enum(issues, f"{key}.word_order", merged.get("word_order", "big"), Order)
    kind = _enum(issues, f"{key}.kind", raw.get("kind", "telemetry"), PointKind)
    if address_ok and length_ok and dtype is not None:
        words = length if dtype is DataType.STRING else WORDS[dtype]
        if address + words - 1 > MAX_ADDRESS:
            fail("address", address, f"the point ({words} registers) runs past address {MAX_ADDRESS}")
    if len(issues) > start:
        return None
    return RegisterPoint(
        name=pname,
        table=table,
        address=address,
        dtype=dtype,
        length=length if dtype is DataType.STRING else 0,
        byte_order=byte_order,
        word_order=word_order,
        scale=float(scale),
        offset=float(offset),
        unit=unit,
        kind=kind,
    )


def parse_register_map(data: Mapping[str, Any], where: str = "map") -> RegisterMap:
    """Build a map from its TOML form: ``{"name": ..., "defaults": {...}, "points": [{...}, ...]}``.

    ``defaults`` may give table, byte_order, word_order for every point. Each point needs
    ``name``, ``address`` and ``type``; ``table`` defaults to ``holding``. ``where`` prefixes every
    error's key path (e.g. ``devices[2].map``).

    Every problem is collected, not just the first: a RegisterMapError lists them all in ``issues``.
    An unknown key (at the top, in ``defaults`` or in a point) is an issue, never silently ignored.
    Point names must be unique. Points may overlap (share registers): a vendor may document one
    quantity both as a float32 and as two uint16 words, and the map may name both views. A multi-register
    point that starts inside another multi-register point is kept but warned about in ``warnings``
    (:func:`misaligned_points`).
    """
    if not isinstance(data, Mapping):
        raise RegisterMapError([ConfigIssue(where, data, "must be a table")])
    issues: list[ConfigIssue] = []
    _unknown(issues, data, where, MAP_KEYS)
    name = data.get("name", where)
    if not isinstance(name, str):
        issues.append(ConfigIssue(f"{where}.name", name, "must be a string"))
    defaults = _defaults(issues, data.get("defaults", MISSING), f"{where}.defaults")
    raw_points = data.get("points", MISSING)
    if not isinstance(raw_points, list) or not raw_points:
        issues.append(ConfigIssue(f"{where}.points", raw_points, "must be a non-empty array of tables"))
        raw_points = []
    names: dict[str, str] = {}
    points = [_point(issues, raw, f"{where}.points[{i}]", defaults, names) for i, raw in enumerate(raw_points)]
    if issues:
        raise RegisterMapError(issues)
    placed = [(f"{where}.points[{i}]", p) for i, p in enumerate(points) if p is not None]
    return RegisterMap(name=name, points=tuple(p for _, p in placed), warnings=misaligned_points(placed))


def misaligned_points(placed: Sequence[tuple[str, RegisterPoint]]) -> tuple[ConfigIssue, ...]:
    """A warning for each multi-register point that starts inside another multi-register point.

    ``placed`` pairs each point with its key path. Two views of the same registers start at the same address
    (a float32 and its two uint16 words, an int32 and a uint32): those are aliases and pass. A float32 at 101
    beside one at 100..101 decodes the low word of one value with the high word of the next, which is a
    typo far more often than a vendor's layout; it is kept (a vendor may really document it) and warned
    about under the later point's ``address``, naming the point it starts inside. Coils and discrete inputs
    are single bits and never warned about; each table is its own address space.
    """
    out: list[ConfigIssue] = []
    wide = sorted(
        ((key, p) for key, p in placed if p.words > 1 and not p.table.is_bits),
        key=lambda kp: (kp[1].table, kp[1].address, -kp[1].end),
    )
    covering: tuple[str, RegisterPoint] | None = None  # the point reaching furthest so far in this table
    for key, p in wide:
        if covering is not None and covering[1].table is p.table:
            ckey, c = covering
            if c.address < p.address < c.end:
                out.append(ConfigIssue(f"{key}.address", p.address,
                    f"point {p.name!r} ({p.dtype.value}, {p.words} registers) starts inside point {c.name!r} "
                    f"({c.dtype.value} at {c.address}..{c.end - 1}, {ckey.rsplit('.', 1)[-1]}): it would decode "
                    f"part of one value with part of the next; an alias of the same value starts at {c.address} "
                    "(docs/registermap.md)"))  # fmt: skip
            if p.end <= c.end:
                continue
        covering = (key, p)
    return tuple(out)


# struct format characters of the numeric types (standard sizes): decode_point lays the bytes out
# most significant first (_from_words) and unpacks them big-endian; block decoders
# (protocols.modbus.readplan) build one struct per block from the same characters.
STRUCT_CODE: dict[DataType, str] = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}
_STRUCT: dict[DataType, str] = {t: ">" + c for t, c in STRUCT_CODE.items()}
_INT_RANGE: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(1 << 15), (1 << 15) - 1),
    DataType.UINT16: (0, (1 << 16) - 1),
    DataType.INT32: (-(1 << 31), (1 << 31) - 1),
    DataType.UINT32: (0, (1 << 32) - 1),
    DataType.INT64: (-(1 << 63), (1 << 63) - 1),
    DataType.UINT64: (0, (1 << 64) - 1),
}
_FLOATS = (DataType.FLOAT32, DataType.FLOAT64)


def _from_words(point: RegisterPoint, words: Sequence[int]) -> bytes:
    """Register words in address order -> the value's bytes, most significant first."""
    if point.word_order is Order.LITTLE and point.dtype is not DataType.STRING:
        words = list(reversed(words))
    out = bytearray()
    for w in words:
        if point.byte_order is Order.LITTLE:
            out += bytes((w & 0xFF, w >> 8))
        else:
            out += bytes((w >> 8, w & 0xFF))
    return bytes(out)


def _to_words(point: RegisterPoint, data: bytes) -> list[int]:
    """Inverse of _from_words."""
    if point.byte_order is Order.LITTLE:
        words = [data[i] | data[i + 1] << 8 for i in range(0, len(data), 2)]
    else:
        words = [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]
    if point.word_order is Order.LITTLE and point.dtype is not DataType.STRING:
        words.reverse()
    return words


def _check_words(point: RegisterPoint, words: Sequence[int] | Sequence[bool]) -> None:
    if len(words) != point.words:
        raise DecodeError(f"point {point.name!r} ({point.dtype.value}) needs {point.words} words, got {len(words)}")
    if point.dtype is DataType.BOOL:
        if words[0] not in (0, 1):  # True/False are 1/0
            raise DecodeError(f"point {point.name!r}: bit value {words[0]!r} is not 0/1")
        return
    for w in words:
        if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 0xFFFF:
            raise DecodeError(f"point {point.name!r}: register value {w!r} is not a 16-bit word")


_PRINTABLE = frozenset(range(0x20, 0x7F))


def decode_text(point: RegisterPoint, data: bytes) -> str:
    """A string point's bytes -> its text: up to the first NUL, trailing spaces stripped.

    The first NUL ends the text (SunSpec and most meters NUL-terminate, and what follows the NUL is
    whatever the buffer held). Before it, only printable ASCII (0x20..0x7E) is text: a control
    character or a byte >= 0x80 (UTF-8, Latin-1, noise) is a DecodeError, so no NUL, escape or
    undecodable byte ever reaches the store or the uplink.
    """
    nul = data.find(0)
    text = data if nul < 0 else data[:nul]
    if not _PRINTABLE.issuperset(text):
        raise DecodeError(f"point {point.name!r}: registers are not printable ASCII text ({data!r})")
    return text.decode("ascii").rstrip(" ")


def decode_point(point: RegisterPoint, words: Sequence[int] | Sequence[bool]) -> float | int | str | bool:
    """Registers (or bits) of one point -> its engineering value. Raises DecodeError.

    Integers decode to ``int`` when the point has no scale/offset (so 64-bit counters stay exact),
    to ``float`` otherwise. A NaN or infinite float is a device fault, not a measurement: DecodeError.
    Strings are 2 ASCII bytes per register in address order (``word_order`` does not apply; the
    ``byte_order`` says which byte holds the first character), ending at the first NUL, trailing
    spaces stripped (:func:`decode_text`).
    """
    _check_words(point, words)
    if point.dtype is DataType.BOOL:
        return bool(words[0])
    data = _from_words(point, words)  # type: ignore[arg-type]
    if point.dtype is DataType.STRING:
        return decode_text(point, data)
    (raw,) = struct.unpack(_STRUCT[point.dtype], data)
    if point.dtype in _FLOATS:
        if not math.isfinite(raw):
            raise DecodeError(f"point {point.name!r}: device sent a non-finite float ({raw})")
        if point.scale == 1.0 and point.offset == 0.0:
            return raw  # bit exact (-0.0 + 0.0 would lose the sign)
        value = raw * point.scale + point.offset
        if not math.isfinite(value):
            raise DecodeError(f"point {point.name!r}: {raw} x {point.scale} + {point.offset} overflows")
        return value
    if point.scale == 1.0 and point.offset == 0.0:
        return raw
    return raw * point.scale + point.offset


def encode_point(point: RegisterPoint, value: float | int | str | bool) -> list[int] | list[bool]:
    """Engineering value -> the registers (or bits) a device would hold. Inverse of decode_point.

    Integer types invert the scale and round to the nearest integer; a value out of the type's
    range, a non-finite float, a string too long or not ASCII, or a value of the wrong kind raises
    ValueError.
    """
    if point.dtype is DataType.BOOL:
        if not isinstance(value, bool | int) or value not in (0, 1):
            raise ValueError(f"point {point.name!r} (bool): {value!r} is not a boolean")
        return [bool(value)]
    if point.dtype is DataType.STRING:
        if not isinstance(value, str):
            raise ValueError(f"point {point.name!r} (string): {value!r} is not a string")
        data = value.encode("ascii") if value.isascii() else b"\x80"
        if not _PRINTABLE.issuperset(data):
            raise ValueError(f"point {point.name!r}: {value!r} is not printable ASCII")
        if len(data) > 2 * point.length:
            raise ValueError(f"point {point.name!r}: {value!r} is longer than {2 * point.length} characters")
        return _to_words(point, data.ljust(2 * point.length, b"\x00"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"point {point.name!r} ({point.dtype.value}): {value!r} is not a number")
    if point.dtype in _FLOATS:
        unscaled = point.scale == 1.0 and point.offset == 0.0
        raw_f = float(value) if unscaled else (value - point.offset) / point.scale
        if not math.isfinite(raw_f):
            raise ValueError(f"point {point.name!r}: {value!r} is not a finite number")
        try:
            data = struct.pack(_STRUCT[point.dtype], raw_f)
        except OverflowError as err:
            raise ValueError(f"point {point.name!r}: {value!r} is out of range of {point.dtype.value}") from err
        return _to_words(point, data)
    if isinstance(value, int) and point.scale == 1.0 and point.offset == 0.0:
        raw = value  # exact: a 64-bit counter must not pass through a float
    else:
        scaled = (value - point.offset) / point.scale
        if not math.isfinite(scaled):
            raise ValueError(f"point {point.name!r}: {value!r} is not a finite number")
        raw = round(scaled)
    lo, hi = _INT_RANGE[point.dtype]
    if not lo <= raw <= hi:
        raise ValueError(f"point {point.name!r}: raw value {raw} of {value!r} is out of range {lo}..{hi}")
    return _to_words(point, struct.pack(_STRUCT[point.dtype], raw))
