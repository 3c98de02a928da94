"""Items of the ``intervals`` stream built the way the wire contract says (protocols/telemetry/intervals.py), for
central's settlement tests: a meter's register reads and the interval energy between them."""

from __future__ import annotations

from typing import Any

DAY0 = 1_764_547_200  # 2025-12-01 00:00 UTC, a Monday
QH = 900


def item(
    start: int,
    value: float | None,
    *,
    meter: str = "meter1",
    register: str = "energy_delivered_wh",
    channel: str = "kwh_delivered",
    quality: str = "A",
    method: int | None = None,
    version: int = 1,
    length: int = QH,
    reads: list[list[float]] | None = None,
    flags: list[str] | None = None,
    reg0: float | None = None,
) -> dict[str, Any]:
    """One interval item; ``reg0`` (the register at ``start``, Wh) makes reads 1 s before start and 1 s after end
    that put the register exactly at reg0 and reg0 + value x 1000 at the interval's edges."""
    if reads is None and reg0 is not None and value is not None:
        rate = value * 1000.0 / length
        reads = [[start - 1.0, reg0 - rate], [start + length + 1.0, reg0 + value * 1000.0 + rate]]
    return {
        "meter": meter, "register": register, "channel": channel, "start": start, "end": start + length,
        "value": value, "unit": "kvarh" if channel.startswith("kvarh") else "kWh", "quality": quality,
        "method": method, "version": version, "flags": flags or [], "reads": reads or [], "meter_id": "SN-1",
    }  # fmt: skip


def day_items(day_start: int, values: list[float | None], *, reg0: float = 1_000_000.0, **kw: Any) -> list[dict]:
    """A day (or any run) of consecutive intervals with reads consistent with the values (nulls carry no reads
    and quality N)."""
    out, reg = [], reg0
    length = kw.get("length", QH)
    for i, v in enumerate(values):
        start = day_start + i * length
        if v is None:
            out.append(item(start, None, quality="N", **kw))
            continue
        out.append(item(start, v, reg0=reg, **kw))
        reg += v * 1000.0
    return out
