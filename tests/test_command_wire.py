"""The signed downlink's wire format: what a signature covers, what a reader refuses, each kind's body."""

from __future__ import annotations

import base64
import json
import time

import pytest

from protocols.telemetry.commands import (
    CMD_DOMAIN,
    Command,
    KeyFileError,
    Result,
    SchemaError,
    canonical,
    generate_key,
    load_private_key,
    new_command_id,
    parse_public_key,
    private_pem,
    public_text,
    read_command,
    read_result,
    read_signed,
    sign_command,
    sign_result,
    verify_signed,
)
from protocols.telemetry.schema import decode_batch, encode_batch

NOW = 1_800_000_000.0


def cmd(kind: str = "capbank.close", body: dict | None = None, **kw) -> Command:
    fields = dict(key_id="ops-1", role="operator", audience="site-a", target="cap675", command_id=new_command_id(),
                  seq=7, issued_at=NOW, not_before=NOW - 5, expires_at=NOW + 60, kind=kind,
                  body={"until": NOW + 600} if body is None else body)  # fmt: skip
    fields.update(kw)
    return Command(**fields)  # type: ignore[arg-type]


def test_a_signed_command_reads_back_as_it_was_signed_and_verifies_only_with_its_key() -> None:
    key, other = generate_key(), generate_key()
    c = cmd()
    signed = read_signed(sign_command(key, c))
    assert verify_signed(signed, key.public_key())
    assert not verify_signed(signed, other.public_key())
    assert read_command(signed) == c


def test_any_change_to_the_payload_breaks_the_signature() -> None:
    key = generate_key()
    msg = json.loads(sign_command(key, cmd()))
    for old, new in (('"capbank.close"', '"capbank.open"'), ('"seq":7', '"seq":8'), ('"site-a"', '"site-b"')):
        tampered = dict(msg, payload=msg["payload"].replace(old, new))
        assert tampered["payload"] != msg["payload"]
        assert not verify_signed(read_signed(json.dumps(tampered).encode()), key.public_key())


def test_the_signature_covers_a_domain_tag_so_a_bare_signature_of_the_payload_fails() -> None:
    key = generate_key()
    payload = canonical(cmd().to_dict())
    bare = base64.b64encode(key.sign(payload)).decode()
    msg = json.dumps({"v": 1, "key_id": "ops-1", "payload": payload.decode(), "sig": bare}).encode()
    assert not verify_signed(read_signed(msg), key.public_key())
    tagged = base64.b64encode(key.sign(CMD_DOMAIN + payload)).decode()
    msg = json.dumps({"v": 1, "key_id": "ops-1", "payload": payload.decode(), "sig": tagged}).encode()
    assert verify_signed(read_signed(msg), key.public_key())


def test_a_payload_not_in_canonical_form_is_refused_even_when_signed() -> None:
    key = generate_key()
    loose = json.dumps(cmd().to_dict(), indent=1).encode()  # same content, other spelling
    sig = base64.b64encode(key.sign(CMD_DOMAIN + loose)).decode()
    signed = read_signed(json.dumps({"v": 1, "key_id": "ops-1", "payload": loose.decode(), "sig": sig}).encode())
    assert verify_signed(signed, key.public_key())
    with pytest.raises(SchemaError, match="canonical"):
        read_command(signed)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1,2]", "JSON object"),
        (b'{"v":2,"key_id":"a","payload":"{}","sig":"x"}', "schema version"),
        (b'{"v":1,"key_id":"a","payload":"{}"}', "sig: missing"),
        (b'{"v":1,"payload":"{}","sig":"x"}', "key_id: missing"),
        (b'{"v":1,"key_id":"a","payload":"{}","sig":"x","extra":1}', "unknown field"),
        (b'{"v":1,"key_id":"a b","payload":"{}","sig":"x"}', "key_id"),
        (b"[" * 50_000, "not UTF-8 JSON"),
        (b"x" * 70_000, "exceeds"),
    ],
)
def test_malformed_and_oversized_messages_are_refused_with_their_reason(raw: bytes, match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        read_signed(raw)


@pytest.mark.parametrize(
    ("kind", "target", "body", "match"),
    [
        ("control.mode", "*", {"mode": "auto"}, "body.mode"),
        ("der.setpoint", "pv675", {"until": NOW}, "sets one or more"),
        ("der.setpoint", "pv675", {"pf": 0.9, "var_pct": 10, "until": NOW}, "one at a time"),
        ("der.setpoint", "pv675", {"pf": 0.9, "until": NOW}, "excitation"),
        ("der.setpoint", "pv675", {"p_limit_pct": 120, "until": NOW}, r"outside \[0, 100\]"),
        ("der.setpoint", "pv675", {"p_limit_pct": 50}, "body.until"),
        ("der.setpoint", "*", {"p_limit_pct": 50, "until": NOW}, "one device"),
        ("capbank.close", "cap675", {"until": NOW, "force": True}, "not a field"),
        ("regulator.band_center", "reg650", {"volts": float("nan"), "until": NOW}, "body.volts"),
        (
            "schedule.load",
            "pv675",
            {
                "schedule_id": "s1",
                "quantity": "p_limit_pct",
                "step_s": 600,
                "start": NOW,
                "values": [1],
                "fallback": "autonomous",
            },
            "300 or 900",
        ),
        (
            "schedule.load",
            "pv675",
            {
                "schedule_id": "s1",
                "quantity": "p_limit_pct",
                "step_s": 900,
                "start": NOW + 1,
                "values": [1],
                "fallback": "autonomous",
            },
            "boundary",
        ),
        (
            "schedule.load",
            "pv675",
            {
                "schedule_id": "s1",
                "quantity": "p_limit_pct",
                "step_s": 900,
                "start": NOW,
                "values": [],
                "fallback": "autonomous",
            },
            "array of",
        ),
        ("keys.update", "*", {"add": [{"key_id": "k", "role": "root", "public_key": "x"}]}, "role"),
        ("keys.update", "*", {"add": [{"key_id": "k", "role": "operator", "public_key": "AAAA"}]}, "bytes"),
        ("revert.all", "*", {"now": 1}, "not a field"),
    ],
)
def test_each_kind_checks_its_body(kind: str, target: str, body: dict, match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        sign_command(generate_key(), cmd(kind, body, target=target))


def test_the_envelope_fields_are_checked() -> None:
    key = generate_key()
    for kw, match in (({"command_id": "123"}, "UUID"), ({"seq": 0}, "seq"), ({"role": "root"}, "role"),
                      ({"audience": "a/b"}, "audience"), ({"not_before": NOW + 100}, "before"),
                      ({"expires_at": 2.0**34}, "expires_at"), ({"kind": "shell.exec"}, "kind")):  # fmt: skip
        with pytest.raises(SchemaError, match=match):
            sign_command(key, cmd(**kw))


def test_results_are_signed_by_the_agent_and_travel_as_result_events() -> None:
    key = generate_key()
    r = Result(new_command_id(), "site-a", "capbank.close", "cap675", "ops-1", 7, "applied", "", NOW,
               {"closed": 1}, ("d1",))  # fmt: skip
    data = sign_result(key, "agent-site-a", r)
    assert read_result(data, key.public_key()) == r
    with pytest.raises(SchemaError, match="does not verify"):
        read_result(data, generate_key().public_key())
    forged = dict(data, result=data["result"].replace("applied", "refused"))
    with pytest.raises(SchemaError, match="does not verify"):
        read_result(forged, key.public_key())
    item = {"ts": NOW, "kind": "command_result", "severity": "info", "source": "commands", "text": "", "data": data}
    batch = decode_batch(encode_batch("site-a", "results", 1, "m1", NOW, [item]))
    assert batch.items[0]["data"] == data
    with pytest.raises(SchemaError, match="command_result"):
        decode_batch(encode_batch("site-a", "results", 1, "m1", NOW, [dict(item, kind="x")]))


def test_keys_round_trip_through_their_files_and_text(tmp_path) -> None:
    key = generate_key()
    (tmp_path / "k.pem").write_bytes(private_pem(key))
    again = load_private_key(tmp_path / "k.pem")
    assert public_text(again.public_key()) == public_text(key.public_key())
    assert len(public_text(key.public_key())) == 44
    with pytest.raises(KeyFileError, match="cannot read"):
        load_private_key(tmp_path / "missing.pem")
    (tmp_path / "bad.pem").write_text("hello")
    with pytest.raises(KeyFileError, match="PEM"):
        load_private_key(tmp_path / "bad.pem")
    with pytest.raises(KeyFileError, match="32"):
        parse_public_key(base64.b64encode(b"x" * 31).decode())


def test_time_is_not_needed_to_read_a_command() -> None:
    """Reading checks form only; the window is the agent's verifier's to judge against its clock."""
    c = cmd(not_before=time.time() + 10_000, expires_at=time.time() + 20_000)
    assert read_command(read_signed(sign_command(generate_key(), c))) == c


def test_a_signed_result_of_the_wrong_shape_is_a_schema_error() -> None:
    key = generate_key()
    good = Result(new_command_id(), "site-a", "capbank.close", "cap675", "ops-1", 7, "applied", "", NOW, {}, ())
    for field, bad in (("seq", "7"), ("readback", []), ("decisions", [1]), ("ts", True)):
        obj = good.to_dict() | {field: bad}
        payload = canonical(obj)
        data = {"key_id": "a", "result": payload.decode(),
                "sig": base64.b64encode(key.sign(b"gridedge/v1/result\n" + payload)).decode()}  # fmt: skip
        with pytest.raises(SchemaError, match="wrong type|decision ids"):
            read_result(data, key.public_key())
