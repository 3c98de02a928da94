"""The uplink schema's bounds, one table: every field's edge, accepted or refused with the field's path.

Each case is applied to a minimal message and to the matching example of docs/telemetry.md, and decoded by the
decoder that the doc test uses for that kind of message, so the documented messages and the bounds are pinned
together. Raw JSON literals (NaN, Infinity, 1e999, 10**400) are put in the text, as a hostile or buggy
publisher would send them: Python's json writes NaN and reads it back, JSON itself has none.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers.stores import query, target_fixture  # noqa: F401 (the target fixture)
from helpers.telemetry import doc_examples

from central.store import open_store
from protocols.telemetry.schema import (
    MAX_PAYLOAD_BYTES,
    SchemaError,
    decode_ack,
    decode_batch,
    decode_state,
)


@dataclass(frozen=True)
class Raw:
    """A JSON literal written as is into the payload text."""

    text: str


NAN, INF, NINF = Raw("NaN"), Raw("Infinity"), Raw("-Infinity")
HUGE_FLOAT = Raw("1e999")  # Python's json reads it as inf
HUGE_INT = Raw("1" + "0" * 400)  # 10**400: float() of it raises OverflowError


def render(obj: Any) -> bytes:
    """JSON text of ``obj`` with every Raw placed verbatim."""
    raws: list[Raw] = []

    def swap(node: Any) -> Any:
        if isinstance(node, Raw):
            raws.append(node)
            return f"__raw{len(raws) - 1}__"
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    text = json.dumps(swap(obj))
    for n, raw in enumerate(raws):
        text = text.replace(f'"__raw{n}__"', raw.text)
    return text.encode()


MINIMAL = {
    "telemetry": {"v": 1, "site": "s1", "stream": "telemetry", "seq": 1, "msg_id": "m1", "sent": 1_764_300_000.0,
                  "items": [{"point": "p.v", "ts": 1_764_300_000.0, "value": 1.5, "unit": "V", "quality": "good"}]},
    "events": {"v": 1, "site": "s1", "stream": "events", "seq": 1, "msg_id": "m1", "sent": 1_764_300_000.0,
               "items": [{"ts": 1_764_300_000.0, "kind": "limit", "severity": "warning", "source": "p.v", "text": "t",
                          "data": {"value_v": 127.4}}]},
    "online": {"v": 1, "site": "s1", "status": "online", "ts": 1_764_300_000.0, "version": ""},
}  # fmt: skip


def decode_any(raw: bytes) -> object:
    """The doc test's dispatch: a batch has items, an ack has acks, a state has a status."""
    obj = json.loads(raw)  # Python's json reads NaN: the shape is what picks the decoder
    if "items" in obj:
        return decode_batch(raw)
    if "acks" in obj:
        return decode_ack(raw)
    return decode_state(raw)


def doc_example(kind: str) -> dict:
    for _heading, obj in doc_examples(Path(__file__).resolve().parent.parent):
        if obj.get("stream", obj.get("status")) == kind:
            return obj
    raise AssertionError(f"docs/telemetry.md has no {kind} example")


OK = None  # expected error text: None = accepted

# (kind, path to the field, value, None or the field path the SchemaError must name)
CASES: list[tuple[str, tuple[str | int, ...], Any, str | None]] = [
    # reading values: SQLite INTEGER is signed 64-bit; floats finite
    ("telemetry", ("items", 0, "value"), 2**63 - 1, OK),
    ("telemetry", ("items", 0, "value"), -(2**63), OK),
    ("telemetry", ("items", 0, "value"), 2**63, "items[0].value"),
    ("telemetry", ("items", 0, "value"), -(2**63) - 1, "items[0].value"),
    ("telemetry", ("items", 0, "value"), 2**64, "items[0].value"),
    ("telemetry", ("items", 0, "value"), HUGE_INT, "items[0].value"),
    ("telemetry", ("items", 0, "value"), 1.7e308, OK),
    ("telemetry", ("items", 0, "value"), HUGE_FLOAT, "items[0].value"),
    ("telemetry", ("items", 0, "value"), NAN, "items[0].value"),
    ("telemetry", ("items", 0, "value"), INF, "items[0].value"),
    ("telemetry", ("items", 0, "value"), NINF, "items[0].value"),
    ("telemetry", ("items", 0, "value"), None, OK),
    ("telemetry", ("items", 0, "value"), True, OK),
    ("telemetry", ("items", 0, "value"), "closed", OK),
    ("telemetry", ("items", 0, "value"), [1], "items[0].value"),
    ("telemetry", ("items", 0, "value"), {"a": 1}, "items[0].value"),
    ("telemetry", ("items", 0, "point"), "", "items[0].point"),
    ("telemetry", ("items", 0, "unit"), 1, "items[0].unit"),
    ("telemetry", ("items", 0, "quality"), "superb", "items[0].quality"),
    # reading ts: seconds since the epoch in [0, 2**33)
    ("telemetry", ("items", 0, "ts"), 0, OK),
    ("telemetry", ("items", 0, "ts"), 0.0, OK),
    ("telemetry", ("items", 0, "ts"), -0.001, "items[0].ts"),
    ("telemetry", ("items", 0, "ts"), 2**33 - 0.5, OK),
    ("telemetry", ("items", 0, "ts"), 2**33, "items[0].ts"),
    ("telemetry", ("items", 0, "ts"), HUGE_INT, "items[0].ts"),
    ("telemetry", ("items", 0, "ts"), HUGE_FLOAT, "items[0].ts"),
    ("telemetry", ("items", 0, "ts"), NAN, "items[0].ts"),
    ("telemetry", ("items", 0, "ts"), INF, "items[0].ts"),
    ("telemetry", ("items", 0, "ts"), "1764300000", "items[0].ts"),
    ("telemetry", ("items", 0, "ts"), True, "items[0].ts"),
    ("telemetry", ("items", 0, "ts"), None, "items[0].ts"),
    # envelope: seq 1..2**63-1, sent a time, v the integer 1
    ("telemetry", ("seq",), 1, OK),
    ("telemetry", ("seq",), 0, "seq"),
    ("telemetry", ("seq",), 2**63 - 1, OK),
    ("telemetry", ("seq",), 2**63, "seq"),
    ("telemetry", ("seq",), HUGE_INT, "seq"),
    ("telemetry", ("seq",), 1.0, "seq"),
    ("telemetry", ("seq",), True, "seq"),
    ("telemetry", ("sent",), 0, OK),
    ("telemetry", ("sent",), 2**33 - 0.5, OK),
    ("telemetry", ("sent",), 2**33, "sent"),
    ("telemetry", ("sent",), -1, "sent"),
    ("telemetry", ("sent",), NAN, "sent"),
    ("telemetry", ("sent",), NINF, "sent"),
    ("telemetry", ("sent",), HUGE_FLOAT, "sent"),
    ("telemetry", ("sent",), HUGE_INT, "sent"),
    ("telemetry", ("v",), True, "v"),
    ("telemetry", ("v",), 1.0, "v"),
    ("telemetry", ("v",), 2, "v"),
    # events: ts as readings; data an object or null, with finite numbers
    ("events", ("items", 0, "ts"), 0, OK),
    ("events", ("items", 0, "ts"), 2**33, "items[0].ts"),
    ("events", ("items", 0, "ts"), HUGE_INT, "items[0].ts"),
    ("events", ("items", 0, "ts"), NAN, "items[0].ts"),
    ("events", ("items", 0, "ts"), INF, "items[0].ts"),
    ("events", ("items", 0, "data"), None, OK),
    ("events", ("items", 0, "data"), {}, OK),
    ("events", ("items", 0, "data"), {"a": {"b": [1, 2.5, None, "x"]}, "n": 10**30}, OK),
    ("events", ("items", 0, "data"), [], "items[0].data"),
    ("events", ("items", 0, "data"), "text", "items[0].data"),
    ("events", ("items", 0, "data"), 1, "items[0].data"),
    ("events", ("items", 0, "data"), {"a": [1, NAN]}, "items[0].data.a[1]"),
    ("events", ("items", 0, "data"), {"a": {"b": HUGE_FLOAT}}, "items[0].data.a.b"),
    ("events", ("items", 0, "kind"), 3, "items[0].kind"),
    # state: ts a time
    ("online", ("ts",), 0, OK),
    ("online", ("ts",), -1, "ts"),
    ("online", ("ts",), 2**33, "ts"),
    ("online", ("ts",), HUGE_INT, "ts"),
    ("online", ("ts",), NAN, "ts"),
    ("online", ("ts",), INF, "ts"),
]


def with_field(base: dict, path: tuple[str | int, ...], value: Any) -> dict:
    obj = copy.deepcopy(base)
    node: Any = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return obj


def case_id(case: tuple) -> str:
    kind, path, value, expect = case
    shown = value.text[:12] if isinstance(value, Raw) else repr(value)[:12]
    return f"{kind}-{'.'.join(map(str, path))}={shown}-{'ok' if expect is None else 'refused'}"


@pytest.mark.parametrize("base", ["minimal", "doc"])
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_field_bounds(case: tuple, base: str) -> None:
    kind, path, value, expect = case
    start = MINIMAL[kind] if base == "minimal" else doc_example(kind)
    raw = render(with_field(start, path, value))
    if expect is None:
        decoded = decode_any(raw)
        assert decoded is not None
        if path[0] == "items":  # the value reaches the caller unchanged
            assert decoded.items[path[1]][path[2]] == value  # type: ignore[attr-defined]
        return
    with pytest.raises(SchemaError) as info:
        decode_any(raw)
    assert str(info.value).startswith(f"{expect} = "), str(info.value)


def test_every_accepted_batch_case_is_stored_by_central(target: Path | str) -> None:
    """What the schema lets through, central's store can hold, on SQLite and on PostgreSQL: no accepted message is
    refused downstream."""
    store = open_store(target)
    accepted = [c for c in CASES if c[3] is None and c[0] != "online"]
    batches = []
    for n, (kind, path, value, _expect) in enumerate(accepted):
        obj = with_field(MINIMAL[kind], path, value)
        if path != ("seq",):
            obj["seq"] = n + 1
        obj["msg_id"] = f"m{n}"
        batches.append(decode_batch(render(obj)))
    assert store.store_batches(batches, 1.0) == [True] * len(batches)
    assert store.count("messages") == len(batches)
    store.close()
    stored = {row[1] for row in query(target, "SELECT point, value, unit FROM readings")}
    assert {2**63 - 1, -(2**63), 1.7e308, None, 1, "closed"} <= stored  # True is stored as 1


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"[" * 100_000, "nested too deeply"),  # json.loads raises RecursionError
        (b'{"v": 1, "n": ' + b"1" * 5000 + b"}", "cannot be read"),  # past the int digits limit: ValueError
        (b'{"v": 1, "site": NaN}', "site = NaN"),
        (b'{"v": Infinity}', "v = Infinity"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1]", "must be a JSON object"),
        (b" " * (MAX_PAYLOAD_BYTES + 1), "exceeds"),
    ],
)
def test_hostile_payloads_are_schema_errors(raw: bytes, text: str) -> None:
    for decode in (decode_batch, decode_state, decode_ack):
        with pytest.raises(SchemaError, match=text):
            decode(raw)
