"""SunSpec over a Modbus transport: the thin async layer over discovery, live-SF reads and writes with readback.

Every function takes a :class:`protocols.modbus.client.ModbusTransport` (TCP, or RTU through the serial line's
arbiter) and a unit id, and does its I/O there; what to read and what it means comes from the sans-IO modules
(:mod:`~protocols.sunspec.discovery`, :mod:`~protocols.sunspec.values`, :mod:`~protocols.sunspec.write`).
Transport failures come out as the Modbus layer's typed errors (:mod:`protocols.modbus.errors`), except in
:func:`write_points`, whose every outcome is a record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from protocols.modbus.client import ModbusTransport
from protocols.modbus.errors import ModbusDeviceError, ModbusExceptionResponse
from protocols.modbus.readplan import decode_block, plan_reads
from protocols.modbus.registermap import Table
from protocols.sunspec.discovery import DiscoveredDevice, Refusal, discovery
from protocols.sunspec.layout import BASE_ADDRESSES, SunSpecLayout
from protocols.sunspec.values import Raw, decode_values, sf_problem
from protocols.sunspec.write import (
    Applied,
    Failed,
    Mismatch,
    PointMismatch,
    Refused,
    WriteOutcome,
    check_points,
    compare,
    plan_writes,
    readback_values,
    scale_factors_of,
)

SF_MAX_GAP = 16  # registers a scale-factor read may bridge (inside one model every address is implemented)


async def discover(
    transport: ModbusTransport, unit_id: int, bases: tuple[int, ...] = BASE_ADDRESSES
) -> DiscoveredDevice:
    """Find the device's SunSpec map and lay out its models (:func:`protocols.sunspec.discovery.discovery`).

    Raises DiscoveryError for a device without a usable map, or the transport's ModbusDeviceError when the device
    does not answer. A Modbus exception answer is part of discovery (no marker at that base, a broken chain).
    """
    steps = discovery(bases)
    request = next(steps)
    while True:
        answer: list[int] | Refusal
        try:
            words = await transport.read(Table.HOLDING, request.address, request.count, unit_id)
            answer = [int(w) for w in words]
        except ModbusExceptionResponse as err:
            answer = Refusal(err.code)
        try:
            request = steps.send(answer)
        except StopIteration as done:
            return done.value


async def read_raw(
    transport: ModbusTransport, unit_id: int, layout: SunSpecLayout, names: Iterable[str], *, max_gap: int = SF_MAX_GAP
) -> dict[str, Raw | None]:
    """The raw values (scale 1) of ``names``, read in as few requests as the plan allows (None: did not decode)."""
    blocks = plan_reads([layout.point(n).register for n in names], max_gap=max_gap)
    out: dict[str, Raw | None] = {}
    for block in blocks:
        words = await transport.read(block.table, block.start, block.count, unit_id)
        values, _errors = decode_block(block, words)
        for p, v in zip(block.points, values, strict=True):
            out[p.name] = v
    return out


async def read_points(
    transport: ModbusTransport, unit_id: int, layout: SunSpecLayout, names: Iterable[str]
) -> dict[str, tuple[Raw | None, str]]:
    """Points read now with their SFs (read in the same call): name -> (value, "") or (None, why not a number)."""
    wanted = list(names)
    sfs = {p.sf for p in (layout.point(n) for n in wanted) if isinstance(p.sf, str)}
    raw = await read_raw(transport, unit_id, layout, [*wanted, *sorted(sfs - set(wanted))])
    decoded = decode_values(layout.points, raw)
    return {n: decoded[n] for n in wanted}


def _detail(err: ModbusDeviceError) -> str:
    return str(err).removeprefix(f"device={err.device} ")


async def write_points(
    transport: ModbusTransport, unit_id: int, layout: SunSpecLayout, values: Mapping[str, Raw]
) -> WriteOutcome:
    """Write SunSpec points (engineering values) and read them back (:mod:`protocols.sunspec.write`).

    1. The SFs of the points are read from the device; each value is encoded with the SF the device holds now.
    2. Touching points go in one function-16 request each (a curve in one request), in address order; the first
       refused request ends the write (:class:`Refused`, with the points earlier requests wrote).
    3. The written registers are read back and compared word for word: :class:`Applied` with the values read
       back, or :class:`Mismatch` naming every point that differs.

    A device that stops answering gives :class:`Failed` naming the stage. An unknown or read-only point, or a
    value its point cannot hold with the device's SF, raises SunSpecWriteError before anything is written.
    """
    asked = dict(values)
    points = check_points(layout, asked)
    sf_names = scale_factors_of(points)
    sfs: dict[str, int] = {}
    if sf_names:
        try:
            raw = await read_raw(transport, unit_id, layout, sf_names)
        except ModbusExceptionResponse as err:
            return Failed(asked, "scale factors", _detail(err), ())
        except ModbusDeviceError as err:
            return Failed(asked, "scale factors", _detail(err), ())
        for name in sf_names:
            why = sf_problem(raw.get(name), name)
            if why:
                return Failed(asked, "scale factors", why, ())
            sfs[name] = int(raw[name])  # type: ignore[arg-type]
    writes = plan_writes(points, asked, sfs)
    written: list[str] = []
    for w in writes:
        try:
            await transport.write_registers(w.address, list(w.words), unit_id)
        except ModbusExceptionResponse as err:
            return Refused(asked, err.code, err.name, w.address, w.count, w.points, tuple(written))
        except ModbusDeviceError as err:
            return Failed(asked, "write", _detail(err), tuple(written))
        written += w.points
    readback: dict[str, Raw | None] = {}
    mismatches: list[PointMismatch] = []
    for w in writes:
        try:
            words = list(await transport.read(Table.HOLDING, w.address, w.count, unit_id))
        except ModbusDeviceError as err:
            return Failed(asked, "readback", _detail(err), tuple(written))
        mismatches += compare(layout, w, words, asked, sfs)  # type: ignore[arg-type]
        readback.update(readback_values(layout, w, words, sfs))  # type: ignore[arg-type]
    if mismatches:
        return Mismatch(asked, readback, tuple(mismatches))
    return Applied(asked, readback, len(writes))
