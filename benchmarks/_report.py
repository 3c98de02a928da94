"""One machine-readable line per judged target, for ``benchmarks/summary.py`` to collect.

Every benchmark prints its human-readable rows first and then, for each target it judges, one line::

    BENCH {"name": ..., "ours": ..., "peer": ..., "ratio": ..., "unit": ..., "target": ..., "met": ...}

(JSON on one line after the literal prefix ``BENCH ``). ``peer`` and ``ratio`` are null when the target has no
peer (an absolute budget such as "< 60 s").
"""

from __future__ import annotations

import json
import math

PREFIX = "BENCH "


def _number(x: float | int | None) -> float | int | None:
    if x is None:
        return None
    if isinstance(x, bool):
        raise TypeError(f"a figure is a number, not a bool: {x!r}")
    if isinstance(x, int):
        return x
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, 6)


def line(
    name: str,
    ours: float | int | None,
    peer: float | int | None,
    ratio: float | int | None,
    unit: str,
    target: str,
    met: bool,
) -> str:
    """The ``BENCH {json}`` line for one judged target (see the module docstring)."""
    record = {
        "name": name,
        "ours": _number(ours),
        "peer": _number(peer),
        "ratio": _number(ratio),
        "unit": unit,
        "target": target,
        "met": bool(met),
    }
    return PREFIX + json.dumps(record)


def emit(
    name: str,
    ours: float | int | None,
    peer: float | int | None,
    ratio: float | int | None,
    unit: str,
    target: str,
    met: bool,
) -> None:
    """Print one ``BENCH {json}`` line to stdout (flushed, so a streaming reader sees it at once)."""
    print(line(name, ours, peer, ratio, unit, target, met), flush=True)


def parse(text: str) -> dict | None:
    """The record of one output line if it is a BENCH line, else None."""
    if not text.startswith(PREFIX):
        return None
    try:
        record = json.loads(text[len(PREFIX) :])
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None
