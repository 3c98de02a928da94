"""Topics and message envelopes of the GridEdge uplink, version 1 (see docs/telemetry.md).

Topics: ``gridedge/v1/<site>/<stream>``. Streams that carry data (``telemetry``, ``energy``,
``events``) are batches; ``state`` is the retained birth/last-will message; ``ack`` goes from central
back to the agent; commands arrive on ``gridedge/v1/<site>/cmd/<name>``.

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
from typing import Any

SCHEMA_VERSION = 1
TOPIC_ROOT = "gridedge/v1"
DATA_STREAMS = ("telemetry", "energy", "events")
QUALITIES = ("good", "stale", "invalid", "estimated")
_SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # refuse to parse anything larger: hostile input has bounds


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
    energy streams, and events ``{"ts", "kind", "severity", "source", "text", "data"}`` for ``events``.
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


def _loads(payload: bytes | bytearray | memoryview) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SchemaError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        obj = json.loads(bytes(payload))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SchemaError(f"payload is not UTF-8 JSON: {err}") from err
    if not isinstance(obj, dict):
        raise SchemaError("payload must be a JSON object")
    if obj.get("v") != SCHEMA_VERSION:
        raise SchemaError(f"v = {obj.get('v')!r}: this side speaks schema version {SCHEMA_VERSION}")
    return obj


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in obj:
        raise SchemaError(f"missing field {name!r}")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise SchemaError(f"field {name!r} = {value!r} has the wrong type")
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
        raise SchemaError(f"items[{i}].point = {point!r}: must be a non-empty string")
    ts = item.get("ts")
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts):
        raise SchemaError(f"items[{i}].ts = {ts!r}: must be seconds since the epoch")
    value = item.get("value")
    if value is not None and not isinstance(value, int | float | str | bool):
        raise SchemaError(f"items[{i}].value = {value!r}: must be a number, string, boolean or null")
    if not isinstance(item.get("unit"), str):
        raise SchemaError(f"items[{i}].unit = {item.get('unit')!r}: must be a string")
    if item.get("quality") not in QUALITIES:
        raise SchemaError(f"items[{i}].quality = {item.get('quality')!r}: must be one of {', '.join(QUALITIES)}")


def _check_event(i: int, item: Any) -> None:
    if not isinstance(item, dict):
        raise SchemaError(f"items[{i}] must be an object")
    for name, kind in (("ts", (int, float)), ("kind", str), ("severity", str), ("source", str), ("text", str)):
        if not isinstance(item.get(name), kind):
            raise SchemaError(f"items[{i}].{name} = {item.get(name)!r} has the wrong type")


def decode_batch(payload: bytes | bytearray | memoryview) -> Batch:
    obj = _loads(payload)
    site = _field(obj, "site", str)
    if not valid_site(site):
        raise SchemaError(f"site = {site!r}: 1-64 characters of letters, digits, '_', '.', '-'")
    stream = _field(obj, "stream", str)
    if stream not in DATA_STREAMS:
        raise SchemaError(f"stream = {stream!r}: must be one of {', '.join(DATA_STREAMS)}")
    seq = _field(obj, "seq", int)
    if seq < 1:
        raise SchemaError(f"seq = {seq}: sequence numbers start at 1")
    msg_id = _field(obj, "msg_id", str)
    if not msg_id or len(msg_id) > 128:
        raise SchemaError(f"msg_id = {msg_id!r}: 1-128 characters")
    sent = _field(obj, "sent", (int, float))
    items = _field(obj, "items", list)
    check = _check_event if stream == "events" else _check_reading
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
    return State(site=_field(obj, "site", str), status=status, ts=float(_field(obj, "ts", (int, float))),
                 version=str(obj.get("version", "")))  # fmt: skip
