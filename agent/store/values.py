"""What the store accepts: a reading or an event checked and turned into a row (docs/store.md, "Values").

``value`` is stored as-is (REAL, INTEGER, TEXT or NULL); a bool becomes the INTEGER 0/1. Floats must be
finite (JSON has no NaN), integers fit in 64 bits, strings are valid UTF-8 of at most ``MAX_TEXT`` chars,
and timestamps lie in the range central accepts, so nothing stored can sit in the outbox forever.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any

from agent.points import Quality, Reading, Stream
from agent.store.errors import StoreInputError
from protocols.telemetry.schema import TS_MAX

MAX_TEXT = 65536  # longest string value / event text / event data JSON accepted
_INT64 = 2**63
_QUALITY = {q.value: q.value for q in Quality}
_STREAM = {s.value: s.value for s in Stream}

# A reading's row: (stream, point, ts, value, unit, quality), the column order of ``readings``.
Row = tuple[str, str, float, Any, str, str]
# An event's row: (ts, kind, severity, source, text, data as JSON), the column order of ``events``.
EventRow = tuple[float, str, str, str, str, str | None]


def _bad(i: int, r: Any, what: str) -> StoreInputError:
    point = getattr(r, "point", "?")
    return StoreInputError(f"readings[{i}] point={point!r}: {what}")


def _utf8(text: str) -> bool:
    """True if the text can go on the wire as UTF-8 (no lone surrogates); ASCII, the usual case, is cheap."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def reading_row(i: int, r: Reading) -> Row:
    """Validate one reading (``readings[i]`` of a call) and turn it into a row; exact-type fast paths first
    (this is the hot path)."""
    v = r.value
    t = type(v)
    if t is float:
        if not math.isfinite(v):
            raise _bad(i, r, f"value={v!r}: must be finite (use value=None with quality invalid)")
    elif t is int:
        if not -_INT64 <= v < _INT64:
            raise _bad(i, r, f"value={v!r}: integers must fit in 64 bits")
    elif t is str:
        if len(v) > MAX_TEXT:
            raise _bad(i, r, f"string value of {len(v)} chars: at most {MAX_TEXT}")
    elif v is None:
        pass
    elif isinstance(v, bool):
        v = int(v)  # SQLite has no boolean: stored and sent as 0/1
    elif isinstance(v, numbers.Integral):
        v = int(v)
        if not -_INT64 <= v < _INT64:
            raise _bad(i, r, f"value={v!r}: integers must fit in 64 bits")
    elif isinstance(v, numbers.Real):
        v = float(v)
        if not math.isfinite(v):
            raise _bad(i, r, f"value={v!r}: must be finite (use value=None with quality invalid)")
    else:
        raise _bad(i, r, f"value of type {t.__name__}: must be a number, string, bool or None")
    ts = r.ts
    if type(ts) is not float:
        if isinstance(ts, numbers.Real) and not isinstance(ts, bool):
            ts = float(ts)
        else:
            raise _bad(i, r, f"ts={ts!r}: must be seconds since the epoch")
    if not 0.0 <= ts < TS_MAX:  # what central accepts (protocols/telemetry): else it would sit in the outbox forever
        raise _bad(i, r, f"ts={ts!r}: must be seconds since the epoch in [0, 2**33)")
    point = r.point
    if type(point) is not str or not point or len(point) > MAX_TEXT or not _utf8(point):
        raise _bad(i, r, "point must be a non-empty UTF-8 string")
    if not isinstance(r.unit, str) or not _utf8(r.unit):
        raise _bad(i, r, f"unit={r.unit!r}: must be a UTF-8 string")
    if t is str and not _utf8(v):
        raise _bad(i, r, "string value is not valid UTF-8 (a lone surrogate)")
    try:
        quality = _QUALITY[r.quality]
        stream = _STREAM[r.stream]
    except (KeyError, TypeError) as err:
        raise _bad(
            i,
            r,
            f"quality={r.quality!r} / stream={r.stream!r}: quality one of {', '.join(_QUALITY)}, "
            f"stream one of {', '.join(_STREAM)}",
        ) from err
    return (stream, point, ts, v, str(r.unit), quality)


def event_row(ts: float, kind: str, severity: str, source: str, text: str, data: dict[str, Any] | None) -> EventRow:
    """Validate one event and turn it into a row, its data as compact JSON."""
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not 0 <= ts < TS_MAX:
        raise StoreInputError(f"event ts={ts!r}: must be seconds since the epoch in [0, 2**33)")
    for name, value in (("kind", kind), ("severity", severity), ("source", source), ("text", text)):
        if not isinstance(value, str) or len(value) > MAX_TEXT or not _utf8(value):
            raise StoreInputError(f"event {name}={value!r:.80}: must be a string of at most {MAX_TEXT} chars")
    if data is not None and not isinstance(data, dict):
        raise StoreInputError(f"event data of type {type(data).__name__}: must be a dict or None")
    try:
        data_json = None if data is None else json.dumps(data, separators=(",", ":"), allow_nan=False)
        if data_json is not None and "\\u" in data_json:  # escaped non-ASCII: reject lone surrogates
            json.dumps(data, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError is a ValueError
    except (TypeError, ValueError) as err:
        raise StoreInputError(f"event kind={kind!r}: data is not JSON-serialisable: {err}") from err
    if data_json is not None and len(data_json) > MAX_TEXT:
        raise StoreInputError(f"event kind={kind!r}: data JSON of {len(data_json)} chars, at most {MAX_TEXT}")
    return (float(ts), kind, severity, source, text, data_json)
