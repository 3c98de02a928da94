"""Writing SunSpec points, sans-IO: the function-16 requests that carry them, and the readback's verdict.

A write is planned in three pure steps around the I/O of :func:`protocols.sunspec.client.write_points`:

1. :func:`check_points`: every name is a point of the layout the definition marks writable (RW); no register is
   named twice. A caller's mistake, so a :class:`SunSpecWriteError` before anything is sent.
2. :func:`plan_writes` (after the device's current SFs are read): each value encoded with its SF, the points in
   address order joined into as few requests as their registers allow: points that touch form one request, up to
   123 registers (Modbus Application Protocol v1.1b3, 6.12). A curve's points, given together, go in one request,
   which matters: a device checks a curve (monotonic V, enough points) when the write arrives, and a curve sent
   point by point would pass through states it refuses.
3. :func:`compare`: the registers read back after the write against the words written, point by point (equal raw
   values), every mismatch reported.

The outcome is one of four frozen records: :class:`Applied` (with the values read back), :class:`Refused` (the
Modbus exception code and what it means), :class:`Mismatch` (what was wanted and what the device holds) and
:class:`Failed` (the device stopped answering, or answered garbage, at some stage). These are what the agent's
safety envelope reads to decide that a write was carried out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from protocols.modbus.registermap import DecodeError, decode_point
from protocols.sunspec.layout import SunSpecLayout, SunSpecPoint
from protocols.sunspec.values import Raw, SunSpecValueError, encode_value, scaled

# Modbus Application Protocol v1.1b3, 6.12 (Write Multiple registers): quantity of registers 1..123.
MAX_WRITE_REGISTERS = 123


class SunSpecWriteError(ValueError):
    """A write that cannot be sent as asked (unknown or read-only point, a value its point cannot hold)."""


@dataclass(frozen=True, slots=True)
class RegisterWrite:
    """One function-16 request: ``words`` from ``address``, carrying ``points`` whole."""

    address: int
    words: tuple[int, ...]
    points: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.words)

    @property
    def end(self) -> int:
        return self.address + len(self.words)


@dataclass(frozen=True, slots=True)
class PointMismatch:
    """A point whose registers read back differ from what was written."""

    name: str
    wanted: Raw
    wanted_words: tuple[int, ...]
    read_words: tuple[int, ...]
    read: Raw | None  # the value read back, scaled with the SF used to write (None: not a number)


@dataclass(frozen=True, slots=True)
class Applied:
    """The device took every request and reads back exactly what was written."""

    outcome: ClassVar[str] = "applied"
    values: dict[str, Raw]  # what was asked
    readback: dict[str, Raw | None]  # what the device holds now, scaled with its SFs
    requests: int  # function-16 requests sent


@dataclass(frozen=True, slots=True)
class Refused:
    """The device answered a request with a Modbus exception; the requests after it were not sent."""

    outcome: ClassVar[str] = "refused"
    values: dict[str, Raw]
    code: int  # Modbus exception code (Modbus Application Protocol v1.1b3, 7)
    meaning: str  # e.g. "illegal data value"
    address: int  # the refused request
    count: int
    points: tuple[str, ...]  # the points of the refused request
    written: tuple[str, ...]  # points of earlier requests the device took (a partial write)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The device took the requests but reads back something else (it ignored or changed the write)."""

    outcome: ClassVar[str] = "mismatch"
    values: dict[str, Raw]
    readback: dict[str, Raw | None]
    mismatches: tuple[PointMismatch, ...]


@dataclass(frozen=True, slots=True)
class Failed:
    """The device did not answer (or answered garbage) at ``stage``: what it holds is unknown."""

    outcome: ClassVar[str] = "failed"
    values: dict[str, Raw]
    stage: str  # "scale factors", "write" or "readback"
    error: str
    written: tuple[str, ...]  # points of the requests the device acknowledged before the failure


WriteOutcome = Applied | Refused | Mismatch | Failed


def check_points(layout: SunSpecLayout, values: Mapping[str, Raw]) -> list[SunSpecPoint]:
    """The points to write, in address order; SunSpecWriteError listing every name that cannot be written."""
    problems: list[str] = []
    points: list[SunSpecPoint] = []
    if not values:
        raise SunSpecWriteError("nothing to write: give at least one point")
    for name in values:
        p = layout.points.get(name)
        if p is None:
            problems.append(f"{name}: no such point in the device's layout")
        elif not p.writable:
            problems.append(f"{name}: read-only (SunSpec access {p.access})")
        else:
            points.append(p)
    points.sort(key=lambda p: p.register.address)
    for a, b in zip(points, points[1:], strict=False):
        if b.register.address < a.register.end:
            problems.append(f"{b.name}: shares registers with {a.name}")
    if problems:
        raise SunSpecWriteError("cannot write: " + "; ".join(problems))
    return points


def scale_factors_of(points: Sequence[SunSpecPoint]) -> list[str]:
    """The sunssf points the values of ``points`` are scaled by (read them from the device before encoding)."""
    return sorted({p.sf for p in points if isinstance(p.sf, str)})


def plan_writes(
    points: Sequence[SunSpecPoint], values: Mapping[str, Raw], sfs: Mapping[str, int]
) -> list[RegisterWrite]:
    """Encode ``values`` with the SF exponents ``sfs`` and join touching points into function-16 requests.

    ``points`` come in address order (:func:`check_points`). A value its point cannot hold with the device's SF is a
    SunSpecWriteError naming the point (nothing is sent).
    """
    writes: list[RegisterWrite] = []
    problems: list[str] = []
    encoded: list[tuple[SunSpecPoint, list[int]]] = []
    for p in points:
        sf = sfs.get(p.sf) if isinstance(p.sf, str) else None
        try:
            encoded.append((p, encode_value(p, values[p.name], sf)))
        except SunSpecValueError as err:
            problems.append(str(err))
    if problems:
        raise SunSpecWriteError("cannot write: " + "; ".join(problems))
    address, words, names = -1, [], []
    for p, w in encoded:
        if names and p.register.address == address + len(words) and len(words) + len(w) <= MAX_WRITE_REGISTERS:
            words += w
            names.append(p.name)
            continue
        if names:
            writes.append(RegisterWrite(address, tuple(words), tuple(names)))
        address, words, names = p.register.address, list(w), [p.name]
    writes.append(RegisterWrite(address, tuple(words), tuple(names)))
    return writes


def readback_values(
    layout: SunSpecLayout, write: RegisterWrite, words: Sequence[int], sfs: Mapping[str, int]
) -> dict[str, Raw | None]:
    """The values of ``write``'s points in the registers read back, scaled with ``sfs`` (None: not a number)."""
    out: dict[str, Raw | None] = {}
    for name in write.points:
        p = layout.point(name)
        at = p.register.address - write.address
        try:
            raw = decode_point(p.register, words[at : at + p.register.words])
        except DecodeError:
            out[name] = None
            continue
        sf_raw = sfs.get(p.sf) if isinstance(p.sf, str) else None
        out[name] = scaled(p, raw, sf_raw)[0]
    return out


def compare(
    layout: SunSpecLayout, write: RegisterWrite, words: Sequence[int], values: Mapping[str, Raw], sfs: Mapping[str, int]
) -> list[PointMismatch]:
    """Every point of ``write`` whose registers read back (``words``, from ``write.address``) differ from those sent."""
    if len(words) != write.count:
        raise ValueError(f"readback of {write.count} registers at {write.address} has {len(words)}")
    read = readback_values(layout, write, words, sfs)
    out: list[PointMismatch] = []
    for name in write.points:
        p = layout.point(name)
        at = p.register.address - write.address
        sent = tuple(write.words[at : at + p.register.words])
        got = tuple(words[at : at + p.register.words])
        if sent != got:
            out.append(PointMismatch(name, values[name], sent, got, read[name]))
    return out
