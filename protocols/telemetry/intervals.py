"""Interval energy on the wire: the items of the ``intervals`` stream (docs/telemetry.md, "Intervals"; the rules
that make them: docs/metering.md).

One item is the energy of one register of one meter over one clock-aligned interval [start, end) in UTC:

| field | type | meaning |
|---|---|---|
| ``meter`` | string | the device (the agent's device name) |
| ``register`` | string | the register's point name (``energy_delivered_wh``) |
| ``channel`` | string | what it measures: one of ``CHANNELS`` (``kwh_delivered``, ``kwh_received``, ``kvarh_delivered``, ``kvarh_received``) |
| ``start``, ``end`` | number | seconds since the epoch, UTC, on a multiple of the interval length; ``end - start`` is 300, 900, 1800 or 3600 |
| ``value`` | number or null | the energy in ``unit`` (kWh or kvarh); null when the interval could not be given a value (quality ``N``) |
| ``unit`` | string | ``kWh`` or ``kvarh`` |
| ``quality`` | string | ``A`` actual, ``E`` estimated, ``S`` substituted, ``F`` final substituted, ``N`` null (AEMO NEM12 quality flags) |
| ``method`` | integer or null | how a value that is not actual was made: a NEM12 method code (``METHODS``); null for ``A`` and ``N`` |
| ``version`` | integer >= 1 | 1 first; a correction of the same meter, register and interval is a new item with a higher version |
| ``flags`` | array of strings | what the edge saw (``FLAGS``): ``rollover``, ``backward``, ``spike``, ``meter_swap``, ``clock_step``, ``gap`` |
| ``reads`` | array | the raw register reads it came from, each ``[ts, raw]``: the read before ``start``, the reads inside, the read after ``end`` |
| ``meter_id`` | string or null | the meter's identity (serial number, model) when the interval's reads came from one meter |
| ``read_scale`` | number > 0, optional | kWh (kvarh) per unit of the raw reads (0.001 for a Wh register); absent: the receiver infers it from the register's name |
| ``modulus`` | number > 0 or null, optional | where the raw register wraps to 0 (4294967296 for a uint32 Wh counter); null: it does not wrap; absent: unknown |

Quality flags and method codes follow AEMO's NEM12 file format (MDFF Specification NEM12 & NEM13, v2.x, and the
Metrology Procedure Part B for the method codes): 11-19 substitution types, 51-59 estimation types.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from protocols.telemetry.schema import INT64_MAX, TS_MAX, SchemaError

INTERVAL_LENGTHS_S = (300, 900, 1800, 3600)  # 5, 15, 30 and 60 minutes (NEM12 IntervalLength: 5, 15, 30)
QUALITIES = ("A", "E", "S", "F", "N")  # actual, estimated, substituted, final substituted, null (NEM12 QualityMethod)
CHANNELS = ("kwh_delivered", "kwh_received", "kvarh_delivered", "kvarh_received")
UNITS = {"kwh_delivered": "kWh", "kwh_received": "kWh", "kvarh_delivered": "kvarh", "kvarh_received": "kvarh"}
FLAGS = ("rollover", "backward", "spike", "meter_swap", "clock_step", "gap")
# NEM12 method codes (AEMO Metrology Procedure Part B): substitution types 11-19, estimation types 51-59.
METHODS: dict[int, str] = {
    11: "check meter", 12: "calculated", 13: "SCADA", 14: "like day", 15: "average like day", 16: "agreed",
    17: "linear interpolation", 18: "alternate", 19: "zero",
    51: "previous year", 52: "previous read", 53: "revision", 54: "linear interpolation", 55: "agreed",
    56: "prior to first read (like day)", 57: "customer class", 58: "zero", 59: "user defined",
}  # fmt: skip
MAX_READS = 64  # raw reads an item may carry (one a second over a 60-minute interval is thinned to these)

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "meter": str, "register": str, "channel": str, "start": (int, float), "end": (int, float), "unit": str,
    "quality": str, "version": int, "flags": list, "reads": list,
}  # fmt: skip


def check_interval(i: int, item: Any) -> None:
    """One item of the ``intervals`` stream (module docstring); SchemaError naming the first bad field."""
    if not isinstance(item, Mapping):
        raise SchemaError(f"items[{i}] must be an object")
    for name, kind in _FIELDS.items():
        value = item.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SchemaError(f"items[{i}].{name} = {value!r:.40}: missing or of the wrong type")
    if not item["meter"] or not item["register"]:
        raise SchemaError(f"items[{i}]: meter and register are non-empty")
    if item["channel"] not in CHANNELS:
        raise SchemaError(f"items[{i}].channel = {item['channel']!r:.30}: one of {', '.join(CHANNELS)}")
    if item["unit"] != UNITS[item["channel"]]:
        raise SchemaError(f"items[{i}].unit = {item['unit']!r:.20}: {UNITS[item['channel']]} for {item['channel']}")
    start, end = item["start"], item["end"]
    for name, t in (("start", start), ("end", end)):
        if not (math.isfinite(t) and 0 <= t < TS_MAX):
            raise SchemaError(f"items[{i}].{name} = {t!r}: seconds since the epoch in [0, 2**33)")
    length = end - start
    if length not in INTERVAL_LENGTHS_S or start % length:
        raise SchemaError(f"items[{i}]: [{start}, {end}) is not a clock-aligned interval of 300, 900, 1800 or 3600 s")
    if item["quality"] not in QUALITIES:
        raise SchemaError(f"items[{i}].quality = {item['quality']!r:.10}: one of {', '.join(QUALITIES)}")
    value = item.get("value")
    if item["quality"] == "N":
        if value is not None:
            raise SchemaError(f"items[{i}].value: null for quality N")
    elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SchemaError(f"items[{i}].value = {value!r:.30}: a finite number (null only for quality N)")
    method = item.get("method")
    if item["quality"] in ("A", "N"):
        if method is not None:
            raise SchemaError(f"items[{i}].method: null for quality {item['quality']}")
    elif type(method) is not int or method not in METHODS:
        raise SchemaError(f"items[{i}].method = {method!r:.20}: a NEM12 method code ({', '.join(map(str, METHODS))})")
    if not 1 <= item["version"] <= INT64_MAX:
        raise SchemaError(f"items[{i}].version = {item['version']}: 1 or more")
    bad = [f for f in item["flags"] if f not in FLAGS]
    if bad:
        raise SchemaError(f"items[{i}].flags: {bad[0]!r:.30} is not one of {', '.join(FLAGS)}")
    reads = item["reads"]
    if len(reads) > MAX_READS:
        raise SchemaError(f"items[{i}].reads: at most {MAX_READS}")
    for j, r in enumerate(reads):
        ok = (
            isinstance(r, list)
            and len(r) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in r)
        )
        if not ok:
            raise SchemaError(f"items[{i}].reads[{j}] = {r!r:.40}: [ts, raw value], two finite numbers")
    meter_id = item.get("meter_id")
    if meter_id is not None and not isinstance(meter_id, str):
        raise SchemaError(f"items[{i}].meter_id = {meter_id!r:.30}: a string or null")
    for name, nullable in (("read_scale", False), ("modulus", True)):
        if name not in item or (nullable and item[name] is None):
            continue
        x = item[name]
        if isinstance(x, bool) or not isinstance(x, int | float) or not (math.isfinite(x) and x > 0):
            allowed = "a finite number > 0" + (" or null" if nullable else "")
            raise SchemaError(f"items[{i}].{name} = {x!r:.30}: {allowed}")


__all__ = ["CHANNELS", "FLAGS", "INTERVAL_LENGTHS_S", "MAX_READS", "METHODS", "QUALITIES", "UNITS", "check_interval"]
