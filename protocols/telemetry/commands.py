"""The signed downlink: commands central sends a site, and the results the site signs back (docs/telemetry.md,
"Commands" and "Command results").

A command travels on ``gridedge/v1/<site>/cmd`` as

    {"v": 1, "key_id": "ops-1", "payload": "<canonical JSON of the command>", "sig": "<base64 Ed25519>"}

The signature covers the exact bytes of ``payload`` after a domain tag (``CMD_DOMAIN``), so a signature made for
something else (a result, another protocol using the same key) can never pass as a command. The payload must be
the canonical encoding of what it holds (keys sorted, no spaces, ASCII, no NaN): a receiver re-encodes it and
refuses any other spelling, so there is one byte string per command and a signer in another language knows
exactly what to produce. ``key_id`` outside the payload only says which key to try; after the signature checks,
the payload's own ``key_id`` must equal it.

The payload holds the issuer's key id and role, the audience (the site), a target (a device, a function or
``*``), a command id (a UUID), the per-key sequence that only grows, issued-at, not-before, expires-at, the
kind and its body. :func:`check_body` validates each kind's body on both sides: central refuses to sign what the
agent would refuse to read.

A result goes uplink as an event of kind ``command_result`` on the ``results`` stream. Its ``data`` is
``{"key_id": <the agent's key id>, "result": "<canonical JSON>", "sig": "<base64>"}``, signed the same way
under ``RESULT_DOMAIN``. The agent signs with its own key; central holds the agent's public key.

Ed25519 (RFC 8032) through the ``cryptography`` package: 32-byte keys, 64-byte signatures, deterministic.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols.telemetry.schema import INT64_MAX, SCHEMA_VERSION, TS_MAX, SchemaError, valid_site

CMD_DOMAIN = b"gridedge/v1/cmd\n"  # what a command signature covers: this tag, then the payload's bytes
RESULT_DOMAIN = b"gridedge/v1/result\n"
MAX_COMMAND_BYTES = 64 * 1024  # a command is small; a schedule of a day of 5-minute steps is ~4 KiB
ROLES = ("operator", "dispatch")
MODES = ("monitor", "advise", "control")
RESULT_STATUSES = ("applied", "refused", "failed")
RESULT_KIND = "command_result"
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:*-]{0,127}$")
MAX_HOLD_S = 86_400.0  # the longest an override (set point, switch, band centre, curve) may stay in force
SCHEDULE_STEPS_S = (300, 900)  # 5- or 15-minute set points
MAX_SCHEDULE_STEPS = 2 * 96 * 3  # two days of 5-minute steps

# Each kind: what its body holds. A command names a device (or a function) in ``target``; the body the rest.
KINDS = (
    "control.mode",  # a control function's mode, or the site's ("*"): monitor, advise, control
    "der.setpoint",  # an inverter's active-power limit, power factor or var set point, until a time
    "der.curve",  # apply a DER curve (volt-var, volt-watt, frequency-droop) until a time
    "der.curve_revert",  # take an applied curve back (the group's own)
    "capbank.open",
    "capbank.close",
    "regulator.band_center",  # the regulator's band centre [V on 120 V], until a time
    "schedule.load",  # a series of 5- or 15-minute set points with start, end and fallback
    "schedule.cancel",
    "revert.all",  # everything back to autonomous: overrides, schedules and mode changes dropped
    "keys.update",  # add keys (with a role the site file defines) and revoke keys
)
SETPOINT_QUANTITIES = ("p_limit_pct", "pf", "var_pct")
SCHEDULE_QUANTITIES = ("p_limit_pct", "var_pct", "band_center_v")
CURVES = ("volt_var", "volt_watt", "freq_droop")


# ---- keys ------------------------------------------------------------------------------------------------------


class KeyFileError(ValueError):
    """A key file or key text that cannot be used; the text says which and why (never the key itself)."""


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def public_text(key: Ed25519PublicKey) -> str:
    """The public key as 44 characters of base64 (the raw 32 bytes): what a site file or central's config lists."""
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise KeyFileError(f"{path}: cannot read the private key ({err.strerror or err})") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({type(err).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            f"{path}: a {type(key).__name__.removesuffix('PrivateKey')} key; GridEdge signs with Ed25519"
        )
    return key


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key from its base64 text (raw 32 bytes) or a PEM ``PUBLIC KEY`` block."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError:
            raise KeyFileError("not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"a {type(key).__name__.removesuffix('PublicKey')} key; GridEdge verifies Ed25519")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError("not base64") from None
    if len(raw) != 32:
        raise KeyFileError(f"{len(raw)} bytes; an Ed25519 public key is 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def valid_key_id(key_id: Any) -> bool:
    return isinstance(key_id, str) and bool(_KEY_ID_RE.match(key_id))


# ---- canonical encoding and signatures ---------------------------------------------------------------------------


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The one byte string of ``obj``: keys sorted, no whitespace, ASCII only, no NaN or infinity."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _sign(key: Ed25519PrivateKey, domain: bytes, payload: bytes) -> str:
    return _b64(key.sign(domain + payload))


def _signature_ok(key: Ed25519PublicKey, domain: bytes, payload: bytes, sig: str) -> bool:
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) != 64:
        return False
    try:
        key.verify(raw, domain + payload)
    except InvalidSignature:
        return False
    return True


# ---- the command ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """What a signed command says (the payload), once read."""

    key_id: str
    role: str
    audience: str
    target: str
    command_id: str
    seq: int
    issued_at: float
    not_before: float
    expires_at: float
    kind: str
    body: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "role": self.role, "audience": self.audience, "target": self.target,
                "command_id": self.command_id, "seq": self.seq, "issued_at": self.issued_at,
                "not_before": self.not_before, "expires_at": self.expires_at, "kind": self.kind,
                "body": dict(self.body)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Signed:
    """A command as it arrived: the claimed key id, the payload's exact bytes and the signature (not yet checked)."""

    key_id: str
    payload: bytes
    sig: str


def new_command_id() -> str:
    return str(uuid.uuid4())


def sign_command(key: Ed25519PrivateKey, command: Command) -> bytes:
    """The wire message of ``command`` signed with ``key`` (its body checked first: a bad body is a SchemaError)."""
    check_command(command.to_dict())
    payload = canonical(command.to_dict())
    if len(payload) > MAX_COMMAND_BYTES:
        raise SchemaError(f"command of {len(payload)} bytes exceeds {MAX_COMMAND_BYTES}")
    msg = {"v": SCHEMA_VERSION, "key_id": command.key_id, "payload": payload.decode(),
           "sig": _sign(key, CMD_DOMAIN, payload)}  # fmt: skip
    return canonical(msg)


def read_signed(raw: bytes | bytearray | memoryview) -> Signed:
    """The outer message: the size, JSON, version and the three fields. Nothing here is trusted yet."""
    if len(raw) > MAX_COMMAND_BYTES + 1024:
        raise SchemaError(f"command message of {len(raw)} bytes exceeds {MAX_COMMAND_BYTES + 1024}")
    try:
        obj = json.loads(bytes(raw))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as err:
        raise SchemaError(f"not UTF-8 JSON: {type(err).__name__}") from None
    if not isinstance(obj, dict):
        raise SchemaError("a command message is a JSON object")
    if type(obj.get("v")) is not int or obj["v"] != SCHEMA_VERSION:
        raise SchemaError(f"v = {obj.get('v')!r:.20}: this side speaks schema version {SCHEMA_VERSION}")
    extra = sorted(set(obj) - {"v", "key_id", "payload", "sig"})
    if extra:
        raise SchemaError(f"unknown field {extra[0]!r:.40}: a command message has v, key_id, payload, sig")
    for name in ("key_id", "payload", "sig"):
        if not isinstance(obj.get(name), str) or not obj[name]:
            raise SchemaError(f"{name}: missing, or not a non-empty string (unsigned?)")
    if not valid_key_id(obj["key_id"]):
        raise SchemaError(f"key_id = {obj['key_id']!r:.40}: 1-64 letters, digits, '_', '.', ':', '-'")
    try:
        payload = obj["payload"].encode("ascii")
    except UnicodeEncodeError:
        raise SchemaError("payload: not canonical (non-ASCII characters must be \\u escapes)") from None
    return Signed(obj["key_id"], payload, obj["sig"])


def verify_signed(signed: Signed, key: Ed25519PublicKey) -> bool:
    return _signature_ok(key, CMD_DOMAIN, signed.payload, signed.sig)


def read_command(signed: Signed) -> Command:
    """The payload of a command whose signature checked: canonical, every field present and within bounds."""
    try:
        obj = json.loads(signed.payload)
    except (json.JSONDecodeError, RecursionError, ValueError) as err:
        raise SchemaError(f"payload is not JSON: {type(err).__name__}") from None
    if not isinstance(obj, dict):
        raise SchemaError("payload must be a JSON object")
    try:
        again = canonical(obj)
    except ValueError:
        raise SchemaError("payload holds NaN or infinity") from None
    if again != signed.payload:
        raise SchemaError("payload is not in canonical form (keys sorted, no spaces, ASCII)")
    check_command(obj)
    if obj["key_id"] != signed.key_id:
        raise SchemaError(f"key_id = {obj['key_id']!r}: the signed key id differs from the message's")
    return Command(**{k: obj[k] for k in obj})  # type: ignore[arg-type]


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "key_id": str, "role": str, "audience": str, "target": str, "command_id": str, "seq": int,
    "issued_at": (int, float), "not_before": (int, float), "expires_at": (int, float), "kind": str, "body": dict,
}  # fmt: skip


def check_command(obj: Mapping[str, Any]) -> None:
    """Every field of a command payload, and its body for its kind (SchemaError naming the first bad one)."""
    extra = sorted(set(obj) - set(_FIELDS))
    if extra:
        raise SchemaError(f"unknown field {extra[0]!r:.40} in the command")
    for name, kind in _FIELDS.items():
        value = obj.get(name)
        if name not in obj or not isinstance(value, kind) or isinstance(value, bool):
            raise SchemaError(f"{name} = {value!r:.40}: missing or of the wrong type")
    if not valid_key_id(obj["key_id"]):
        raise SchemaError(f"key_id = {obj['key_id']!r:.40}: 1-64 letters, digits, '_', '.', ':', '-'")
    if obj["role"] not in ROLES:
        raise SchemaError(f"role = {obj['role']!r:.40}: one of {', '.join(ROLES)}")
    if not valid_site(obj["audience"]):
        raise SchemaError(f"audience = {obj['audience']!r:.40}: a site id")
    if obj["target"] != "*" and not _NAME_RE.match(obj["target"]):
        raise SchemaError(f"target = {obj['target']!r:.40}: a device or function name, or '*'")
    try:
        if str(uuid.UUID(obj["command_id"])) != obj["command_id"]:
            raise ValueError
    except ValueError:
        raise SchemaError(f"command_id = {obj['command_id']!r:.40}: a UUID in its canonical form") from None
    if not 1 <= obj["seq"] <= INT64_MAX:
        raise SchemaError(f"seq = {obj['seq']}: 1 to 2**63-1")
    for name in ("issued_at", "not_before", "expires_at"):
        _time(name, obj[name])
    if not obj["not_before"] < obj["expires_at"]:
        raise SchemaError("not_before must come before expires_at")
    if obj["kind"] not in KINDS:
        raise SchemaError(f"kind = {obj['kind']!r:.40}: one of {', '.join(KINDS)}")
    check_body(obj["kind"], obj["target"], obj["body"])


def _time(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or \
            not 0 <= value < TS_MAX:  # fmt: skip
        raise SchemaError(f"{where} = {value!r:.40}: seconds since the epoch in [0, 2**33)")
    return float(value)


def _num(body: Mapping[str, Any], name: str, lo: float, hi: float, where: str = "body") -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SchemaError(f"{where}.{name} = {value!r:.40}: a number in [{lo:g}, {hi:g}]")
    if not lo <= value <= hi:
        raise SchemaError(f"{where}.{name} = {value!r}: outside [{lo:g}, {hi:g}]")
    return float(value)


def _only(body: Mapping[str, Any], allowed: set[str], kind: str) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise SchemaError(f"body.{extra[0]}: not a field of {kind} (allowed: {', '.join(sorted(allowed)) or 'none'})")


def _device_target(kind: str, target: str) -> None:
    if target == "*" or "*" in target:
        raise SchemaError(f"target = {target!r}: {kind} names one device")


def check_body(kind: str, target: str, body: Mapping[str, Any]) -> None:
    """The body of ``kind`` (docs/telemetry.md, "Command kinds"); SchemaError naming the first bad field.

    The bounds here are the wire's; the site's safety envelope applies its own, narrower ones."""
    if kind == "control.mode":
        _only(body, {"mode"}, kind)
        if body.get("mode") not in MODES:
            raise SchemaError(f"body.mode = {body.get('mode')!r:.40}: one of {', '.join(MODES)}")
    elif kind == "der.setpoint":
        _device_target(kind, target)
        _only(body, {*SETPOINT_QUANTITIES, "excitation", "until"}, kind)
        given = [q for q in SETPOINT_QUANTITIES if q in body]
        if not given:
            raise SchemaError(f"body: {kind} sets one or more of {', '.join(SETPOINT_QUANTITIES)}")
        if "pf" in body and "var_pct" in body:
            raise SchemaError("body: pf and var_pct are two reactive power modes; one at a time (IEEE 1547-2018 5.3)")
        if "p_limit_pct" in body:
            _num(body, "p_limit_pct", 0.0, 100.0)
        if "pf" in body:
            _num(body, "pf", 0.0, 1.0)
            if body.get("excitation") not in ("injecting", "absorbing"):
                raise SchemaError(f"body.excitation = {body.get('excitation')!r:.20}: injecting or absorbing")
        elif "excitation" in body:
            raise SchemaError("body.excitation: only with pf")
        if "var_pct" in body:
            _num(body, "var_pct", -100.0, 100.0)
        _time("body.until", body.get("until"))
    elif kind == "der.curve":
        _device_target(kind, target)
        _only(body, {"curve", "name", "points", "until"}, kind)
        if body.get("curve") not in CURVES:
            raise SchemaError(f"body.curve = {body.get('curve')!r:.20}: one of {', '.join(CURVES)}")
        if ("name" in body) == ("points" in body):
            raise SchemaError("body: a curve by its standard name (name) or by its points (points), one of the two")
        if "name" in body and not (isinstance(body["name"], str) and _NAME_RE.match(body["name"])):
            raise SchemaError(f"body.name = {body.get('name')!r:.40}: a curve name like 'category-b'")
        if "points" in body:
            pts = body["points"]
            if not isinstance(pts, dict) or not pts or len(pts) > 16:
                raise SchemaError("body.points: an object of 1-16 curve parameters (as in the site file)")
        _time("body.until", body.get("until"))
    elif kind == "der.curve_revert":
        _device_target(kind, target)
        _only(body, {"curve"}, kind)
        if body.get("curve") not in CURVES:
            raise SchemaError(f"body.curve = {body.get('curve')!r:.20}: one of {', '.join(CURVES)}")
    elif kind in ("capbank.open", "capbank.close"):
        _device_target(kind, target)
        _only(body, {"until"}, kind)
        _time("body.until", body.get("until"))
    elif kind == "regulator.band_center":
        _device_target(kind, target)
        _only(body, {"volts", "until"}, kind)
        _num(body, "volts", 100.0, 140.0)
        _time("body.until", body.get("until"))
    elif kind == "schedule.load":
        _device_target(kind, target)
        _check_schedule(body)
    elif kind == "schedule.cancel":
        _only(body, {"schedule_id"}, kind)
        if not isinstance(body.get("schedule_id"), str) or not _NAME_RE.match(body["schedule_id"]):
            raise SchemaError(f"body.schedule_id = {body.get('schedule_id')!r:.40}: the id of a loaded schedule")
    elif kind == "revert.all":
        _only(body, set(), kind)
    elif kind == "keys.update":
        _check_keys_update(body)


def _check_schedule(body: Mapping[str, Any]) -> None:
    _only(body, {"schedule_id", "quantity", "step_s", "start", "values", "fallback"}, "schedule.load")
    if not isinstance(body.get("schedule_id"), str) or not _NAME_RE.match(body["schedule_id"]):
        raise SchemaError(f"body.schedule_id = {body.get('schedule_id')!r:.40}: 1-128 letters, digits, '_.:-'")
    if body.get("quantity") not in SCHEDULE_QUANTITIES:
        raise SchemaError(f"body.quantity = {body.get('quantity')!r:.20}: one of {', '.join(SCHEDULE_QUANTITIES)}")
    step = body.get("step_s")
    if type(step) is not int or step not in SCHEDULE_STEPS_S:
        raise SchemaError(f"body.step_s = {step!r:.20}: 300 or 900 (5- or 15-minute set points)")
    start = _time("body.start", body.get("start"))
    if start % step:
        raise SchemaError(f"body.start = {start}: on a {step // 60}-minute boundary (UTC)")
    values = body.get("values")
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_SCHEDULE_STEPS:
        raise SchemaError(f"body.values: an array of 1-{MAX_SCHEDULE_STEPS} set points (null: the fallback)")
    for i, v in enumerate(values):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            raise SchemaError(f"body.values[{i}] = {v!r:.20}: a number, or null for the fallback")
    fb = body.get("fallback")
    if fb != "autonomous" and (isinstance(fb, bool) or not isinstance(fb, int | float) or not math.isfinite(fb)):
        raise SchemaError(f"body.fallback = {fb!r:.20}: 'autonomous' or a set point held in a null step")


def _check_keys_update(body: Mapping[str, Any]) -> None:
    _only(body, {"add", "revoke"}, "keys.update")
    add, revoke = body.get("add", []), body.get("revoke", [])
    if not isinstance(add, list) or not isinstance(revoke, list) or not (add or revoke):
        raise SchemaError("body: keys.update adds keys (add) or revokes them (revoke), arrays")
    for i, k in enumerate(add):
        if not isinstance(k, dict) or set(k) != {"key_id", "role", "public_key"}:
            raise SchemaError(f"body.add[{i}]: an object of key_id, role and public_key")
        if not valid_key_id(k["key_id"]) or k["role"] not in ROLES:
            raise SchemaError(f"body.add[{i}]: key_id like 'ops-2027', role one of {', '.join(ROLES)}")
        try:
            parse_public_key(k["public_key"]) if isinstance(k["public_key"], str) else None
        except KeyFileError as err:
            raise SchemaError(f"body.add[{i}].public_key: {err}") from None
        if not isinstance(k["public_key"], str):
            raise SchemaError(f"body.add[{i}].public_key: base64 text of a 32-byte Ed25519 key")
    for i, k in enumerate(revoke):
        if not valid_key_id(k):
            raise SchemaError(f"body.revoke[{i}] = {k!r:.40}: a key id")


def until_of(command: Command) -> float | None:
    """When what ``command`` sets stops being in force (its ``until``, or a schedule's end), or None."""
    b = command.body
    if "until" in b:
        return float(b["until"])
    if command.kind == "schedule.load":
        return float(b["start"]) + b["step_s"] * len(b["values"])
    return None


# ---- results ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    """What the agent answers a command it verified: applied, refused (with why) or failed, the values read back."""

    command_id: str
    site: str
    kind: str
    target: str
    key_id: str  # the key that signed the command
    seq: int
    status: str
    reason: str
    ts: float
    readback: Mapping[str, Any]
    decisions: tuple[str, ...] = ()  # the control decisions that carried it out (their ids on the control stream)

    def to_dict(self) -> dict[str, Any]:
        return {"command_id": self.command_id, "site": self.site, "kind": self.kind, "target": self.target,
                "key_id": self.key_id, "seq": self.seq, "status": self.status, "reason": self.reason,
                "ts": self.ts, "readback": dict(self.readback), "decisions": list(self.decisions)}  # fmt: skip


def sign_result(key: Ed25519PrivateKey, key_id: str, result: Result) -> dict[str, Any]:
    """The ``data`` of a ``command_result`` event: the result's canonical JSON, the agent's key id, its signature."""
    payload = canonical(result.to_dict())
    return {"key_id": key_id, "result": payload.decode(), "sig": _sign(key, RESULT_DOMAIN, payload)}


def read_result(data: Mapping[str, Any], key: Ed25519PublicKey | None) -> Result:
    """A result from its event data; with ``key``, its signature checked (SchemaError when it does not)."""
    if not isinstance(data, Mapping) or not all(isinstance(data.get(n), str) for n in ("key_id", "result", "sig")):
        raise SchemaError("command result data: key_id, result and sig, strings")
    payload = data["result"].encode("ascii", "replace")
    if key is not None and not _signature_ok(key, RESULT_DOMAIN, payload, data["sig"]):
        raise SchemaError(f"command result signed by {data['key_id']!r:.40}: the signature does not verify")
    try:
        obj = json.loads(payload)
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise SchemaError("command result: not JSON") from None
    names = set(Result.__slots__)  # type: ignore[attr-defined]
    if not isinstance(obj, dict) or set(obj) != names:
        raise SchemaError(f"command result: the fields {', '.join(sorted(names))}")
    for name, kind in _RESULT_TYPES.items():
        if not isinstance(obj[name], kind) or isinstance(obj[name], bool):
            raise SchemaError(f"command result {name} = {obj[name]!r:.40}: wrong type")
    if obj["status"] not in RESULT_STATUSES:
        raise SchemaError(f"command result status = {obj['status']!r:.20}: one of {', '.join(RESULT_STATUSES)}")
    if not all(isinstance(d, str) for d in obj["decisions"]):
        raise SchemaError("command result decisions: an array of decision ids")
    obj["decisions"] = tuple(obj["decisions"])
    return Result(**obj)


_RESULT_TYPES: dict[str, type | tuple[type, ...]] = {
    "command_id": str, "site": str, "kind": str, "target": str, "key_id": str, "seq": int, "status": str,
    "reason": str, "ts": (int, float), "readback": dict, "decisions": list,
}  # fmt: skip


__all__ = [
    "CMD_DOMAIN",
    "CURVES",
    "KINDS",
    "MAX_COMMAND_BYTES",
    "MAX_HOLD_S",
    "MODES",
    "RESULT_DOMAIN",
    "RESULT_KIND",
    "RESULT_STATUSES",
    "ROLES",
    "SCHEDULE_QUANTITIES",
    "SETPOINT_QUANTITIES",
    "Command",
    "KeyFileError",
    "Result",
    "Signed",
    "canonical",
    "check_body",
    "check_command",
    "generate_key",
    "load_private_key",
    "new_command_id",
    "parse_public_key",
    "private_pem",
    "public_text",
    "read_command",
    "read_result",
    "read_signed",
    "sign_command",
    "sign_result",
    "until_of",
    "valid_key_id",
]
