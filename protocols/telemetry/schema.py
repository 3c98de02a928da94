"""Topics and message envelopes of the GridEdge uplink, version 1 (see docs/telemetry.md).

Topics: ``gridedge/v1/<site>/<stream>``. Streams that carry data (``telemetry``, ``energy``,
``events``, ``control``, ``results``, ``audit``) are batches; ``state`` is the retained birth/last-will message;
``ack`` goes from central back to the agent; signed commands arrive on ``gridedge/v1/<site>/cmd``
(protocols/telemetry/commands.py).

Payloads are UTF-8 JSON objects. Every batch carries the site, the stream, a sequence number that
increases by one per message of that stream, and a message id unique across the agent's life, so
central can drop duplicates (by id) and find gaps (by sequence).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

SCHEMA_VERSION = 1
TOPIC_ROOT = "gridedge/v1"
DATA_STREAMS = ("telemetry", "energy", "events", "control", "results", "audit", "intervals")
EVENT_STREAMS = ("events", "control", "results", "audit")  # streams whose items are events
RESULT_KIND = "command_result"  # the one kind of item on the results stream (protocols/telemetry/commands.py)
CONTROL_KIND = "control_decision"  # the one kind of item on the control stream
# What a control decision's data holds (docs/telemetry.md, "Control decisions"), and the type of each.
CONTROL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str, "function": str, "device": str, "mode": str, "rule": str, "verdict": str, "outcome": str,
    "inputs": list, "budgets_left": dict, "detail": dict,
}  # fmt: skip
CONTROL_MODES = ("monitor", "advise", "control")
QUALITIES = ("good", "stale", "invalid", "estimated", "flagged")
_SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # refuse to parse anything larger: hostile input has bounds
# Times are seconds since the epoch below 2**33 (year 2242): later is a broken clock or hostile input, and a
# bound keeps float() and SQLite's REAL away from huge integers (float(10**400) raises OverflowError).
TS_MAX = 2**33
# SQLite INTEGER is signed 64-bit: a larger integer cannot be stored (OverflowError when binding it).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class SchemaError(ValueError):
    """A message that does not follow the schema; the text says which field and why."""


def valid_site(site: str) -> bool:
    return isinstance(site, str) and bool(_SITE_RE.match(site))


def topic(site: str, stream: str) -> str:
    """``gridedge/v1/<site>/<stream>``; ``stream`` may be ``cmd/<name>``."""
    if not valid_site(site):
        raise SchemaError(f"site {site!r}: 1-64 characters of letters, digits, '_', '.', '-'")
    return f"{TOPIC_ROOT}/{site}/{stream}"


@dataclass(frozen=True, slots=True)
class Batch:
    """One uplink message of a data stream.

    ``items`` are readings ``{"point", "ts", "value", "unit", "quality"}`` for the telemetry and
    energy streams, and events ``{"ts", "kind", "severity", "source", "text", "data"}`` for ``events`` and
    ``control`` (whose events are control decisions, ``data`` holding the decision record).
    ``ts`` values are seconds since the Unix epoch, UTC.
    """

    site: str
    stream: str
    seq: int
    msg_id: str
    sent: float
    items: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """Central -> agent: these message ids are stored durably; the agent may forget them."""

    site: str
    msg_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class State:
    """Retained on ``gridedge/v1/<site>/state``: ``online`` at connect, ``offline`` as last will."""

    site: str
    status: str  # "online" | "offline"
    ts: float
    version: str = ""


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


class _NonFiniteConstant(Exception):
    """Raised inside json.loads on NaN/Infinity/-Infinity; turned into a SchemaError naming the field."""


def _refuse_constant(name: str) -> NoReturn:
    raise _NonFiniteConstant(name)


class _Constant(str):
    """Stands for a NaN/Infinity literal while locating it in a payload already known to be bad."""


def _nonfinite_path(obj: Any, path: str) -> tuple[str, Any] | None:
    """The path and value of the first NaN/Infinity (a non-finite float or a _Constant) in ``obj``, if any.

    Iterative, so a deeply nested ``data`` object cannot exhaust the stack here.
    """
    stack: list[tuple[str, Any]] = [(path, obj)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, _Constant) or isinstance(node, float) and not math.isfinite(node):
            return where, node
        if isinstance(node, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(node))))
    return None


def _loads(payload: bytes | bytearray | memoryview) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SchemaError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    raw = bytes(payload)
    try:
        # Python's json accepts NaN, Infinity and -Infinity, which JSON has not: refuse them, so no
        # non-finite number reaches a store or an operator's chart.
        obj = json.loads(raw, parse_constant=_refuse_constant)
    except _NonFiniteConstant:
        found = _nonfinite_path(json.loads(raw, parse_constant=_Constant), "")
        where, name = found if found is not None else ("payload", "NaN/Infinity")
        raise SchemaError(f"{where} = {name}: JSON has no NaN or Infinity; numbers must be finite") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SchemaError(f"payload is not UTF-8 JSON: {err}") from err
    except RecursionError as err:  # "[[[[...": nesting deeper than the parser's stack
        raise SchemaError("payload is nested too deeply") from err
    except ValueError as err:  # an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise SchemaError(f"payload has a number that cannot be read: {err}") from err
    if not isinstance(obj, dict):
        raise SchemaError("payload must be a JSON object")
    v = obj.get("v")
    if type(v) is not int or v != SCHEMA_VERSION:  # not True nor 1.0, which compare equal to 1
        raise SchemaError(f"v = {v!r}: this side speaks schema version {SCHEMA_VERSION}")
    return obj


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_time(where: str, value: Any) -> None:
    """Seconds since the epoch: a finite number in [0, TS_MAX).

    0 is allowed: a device whose clock was never set reports the epoch, and the agent stores what it read.
    """
    if not _is_number(value) or not (0 <= value < TS_MAX and math.isfinite(value)):
        raise SchemaError(f"{where} = {value!r:.40}: must be seconds since the epoch in [0, 2**33) (2**33: year 2242)")


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in obj:
        raise SchemaError(f"{name}: missing field")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        kinds = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise SchemaError(f"{name} = {value!r:.40}: wrong type, must be {kinds}")
    return value


def encode_batch(site: str, stream: str, seq: int, msg_id: str, sent: float, items: Sequence[dict[str, Any]]) -> bytes:
    return _dumps(
        {"v": SCHEMA_VERSION, "site": site, "stream": stream, "seq": seq, "msg_id": msg_id, "sent": sent,
         "items": list(items)}
    )  # fmt: skip


def _check_reading(i: int, item: Any) -> None:
    if not isinstance(item, dict):
        raise SchemaError(f"items[{i}] must be an object")
    point = item.get("point")
    if not isinstance(point, str) or not point:
        raise SchemaError(f"items[{i}].point = {point!r:.40}: must be a non-empty string")
    ts = item.get("ts")
    if type(ts) is not float or not 0.0 <= ts < TS_MAX:  # the usual case in one comparison (NaN fails it)
        _check_time(f"items[{i}].ts", ts)
    value = item.get("value")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        pass
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:  # SQLite INTEGER is signed 64-bit
            raise SchemaError(f"items[{i}].value = {value!r:.40}: an integer must fit in 64 bits (-2**63..2**63-1)")
    elif isinstance(value, float):
        if not math.isfinite(value):  # 1e999 parses as inf
            raise SchemaError(f"items[{i}].value = {value!r}: must be finite (null when it cannot be read)")
    else:
        raise SchemaError(f"items[{i}].value = {value!r:.40}: must be a number, string, boolean or null")
    if not isinstance(item.get("unit"), str):
        raise SchemaError(f"items[{i}].unit = {item.get('unit')!r:.40}: must be a string")
    if item.get("quality") not in QUALITIES:
        raise SchemaError(f"items[{i}].quality = {item.get('quality')!r:.40}: must be one of {', '.join(QUALITIES)}")


def _check_event(i: int, item: Any) -> None:
    if not isinstance(item, dict):
        raise SchemaError(f"items[{i}] must be an object")
    _check_time(f"items[{i}].ts", item.get("ts"))
    for name in ("kind", "severity", "source", "text"):
        if not isinstance(item.get(name), str):
            raise SchemaError(f"items[{i}].{name} = {item.get(name)!r:.40}: wrong type, must be a string")
    data = item.get("data")
    if data is not None:
        if not isinstance(data, dict):
            raise SchemaError(f"items[{i}].data = {data!r:.40}: must be an object or null")
        found = _nonfinite_path(data, f"items[{i}].data")  # 1e999 parses as inf
        if found is not None:
            raise SchemaError(f"{found[0]} = {found[1]!r}: numbers must be finite")


def _check_control(i: int, item: Any) -> None:
    """A control decision: an event of kind ``control_decision`` whose data is the decision record."""
    _check_event(i, item)
    if item["kind"] != CONTROL_KIND:
        raise SchemaError(f"items[{i}].kind = {item['kind']!r:.40}: the control stream carries {CONTROL_KIND!r} only")
    data = item.get("data")
    if not isinstance(data, dict):
        raise SchemaError(f"items[{i}].data = {data!r:.40}: a control decision must carry its record")
    for name, kind in CONTROL_FIELDS.items():
        value = data.get(name)
        if not isinstance(value, kind) or (kind is str and not value):
            want = {str: "a non-empty string", list: "an array", dict: "an object"}[kind]  # type: ignore[index]
            raise SchemaError(f"items[{i}].data.{name} = {value!r:.40}: must be {want}")
    if len(data["id"]) > 128:
        raise SchemaError(f"items[{i}].data.id = {data['id']!r:.40}: 1-128 characters")
    if data["mode"] not in CONTROL_MODES:
        raise SchemaError(f"items[{i}].data.mode = {data['mode']!r:.40}: one of {', '.join(CONTROL_MODES)}")
    command = data.get("command")
    if command is not None and not isinstance(command, dict):
        raise SchemaError(f"items[{i}].data.command = {command!r:.40}: an object or null")
    _check_time(f"items[{i}].data.ts", data.get("ts"))


def _check_interval(i: int, item: Any) -> None:
    from protocols.telemetry.intervals import check_interval  # it imports this module's bounds

    check_interval(i, item)


def _check_result(i: int, item: Any) -> None:
    """A command result: an event of kind ``command_result`` whose data holds the signed result (its signature is
    the receiver's to check, with the agent's key: protocols/telemetry/commands.py read_result)."""
    _check_event(i, item)
    if item["kind"] != RESULT_KIND:
        raise SchemaError(f"items[{i}].kind = {item['kind']!r:.40}: the results stream carries {RESULT_KIND!r} only")
    data = item.get("data")
    if not isinstance(data, dict) or not all(isinstance(data.get(n), str) for n in ("key_id", "result", "sig")):
        raise SchemaError(f"items[{i}].data: a command result carries key_id, result and sig (strings)")


def decode_batch(payload: bytes | bytearray | memoryview) -> Batch:
    obj = _loads(payload)
    site = _field(obj, "site", str)
    if not valid_site(site):
        raise SchemaError(f"site = {site!r}: 1-64 characters of letters, digits, '_', '.', '-'")
    stream = _field(obj, "stream", str)
    if stream not in DATA_STREAMS:
        raise SchemaError(f"stream = {stream!r}: must be one of {', '.join(DATA_STREAMS)}")
    seq = _field(obj, "seq", int)
    if not 1 <= seq <= INT64_MAX:  # stored as SQLite INTEGER
        raise SchemaError(f"seq = {seq!r:.40}: sequence numbers run from 1 to 2**63-1")
    msg_id = _field(obj, "msg_id", str)
    if not msg_id or len(msg_id) > 128:
        raise SchemaError(f"msg_id = {msg_id!r}: 1-128 characters")
    sent = _field(obj, "sent", (int, float))
    _check_time("sent", sent)
    items = _field(obj, "items", list)
    check = {"control": _check_control, "results": _check_result, "intervals": _check_interval}.get(stream)
    if check is None:
        check = _check_event if stream in EVENT_STREAMS else _check_reading
    for i, item in enumerate(items):
        check(i, item)
    return Batch(site=site, stream=stream, seq=seq, msg_id=msg_id, sent=float(sent), items=tuple(items))


def encode_ack(site: str, msg_ids: Sequence[str]) -> bytes:
    return _dumps({"v": SCHEMA_VERSION, "site": site, "acks": list(msg_ids)})


def decode_ack(payload: bytes | bytearray | memoryview) -> Ack:
    obj = _loads(payload)
    site = _field(obj, "site", str)
    acks = _field(obj, "acks", list)
    if not all(isinstance(a, str) for a in acks):
        raise SchemaError("acks must be an array of message ids")
    return Ack(site=site, msg_ids=tuple(acks))


def encode_state(site: str, status: str, ts: float, version: str = "") -> bytes:
    return _dumps({"v": SCHEMA_VERSION, "site": site, "status": status, "ts": ts, "version": version})


def decode_state(payload: bytes | bytearray | memoryview) -> State:
    obj = _loads(payload)
    status = _field(obj, "status", str)
    if status not in ("online", "offline"):
        raise SchemaError(f"status = {status!r}: must be 'online' or 'offline'")
    ts = _field(obj, "ts", (int, float))
    _check_time("ts", ts)
    return State(site=_field(obj, "site", str), status=status, ts=float(ts),
                 version=str(obj.get("version", "")))  # fmt: skip
