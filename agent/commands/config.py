"""The ``[commands]`` section of the site file -> :class:`CommandsConfig` (docs/commands.md, "The site file").

```toml
[commands]
agent_key_file = "keys/agent.key"  # this agent's Ed25519 private key: it signs the results (gridedge keys generate)
agent_key_id = "agent-site-a"      # default: agent-<site_id>
max_skew_s = 30                    # clock difference allowed between central and this agent [s]
link_loss_s = 900                  # central unheard longer than this: overrides and schedules end, devices back
max_hold_s = 86400                 # the longest a command may hold anything in force [s]

[commands.roles]                   # the kinds each role may send; "*" all. Defaults: DEFAULT_ROLES
operator = ["*"]
dispatch = ["der.setpoint", "schedule.load", "schedule.cancel"]

[[commands.keys]]                  # the keys this site trusts
key_id = "ops-1"
role = "operator"
public_key = "base64 of 32 bytes"  # or public_key_file = "keys/ops-1.pub"
```

Commands need a ``[control]`` section: every command ends in its safety envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols.configcheck import Checker
from protocols.telemetry.commands import (
    KINDS,
    ROLES,
    KeyFileError,
    load_private_key,
    parse_public_key,
    valid_key_id,
)

KEYS = frozenset({"agent_key_file", "agent_key_id", "max_skew_s", "link_loss_s", "max_hold_s", "roles", "keys"})
KEY_KEYS = frozenset({"key_id", "role", "public_key", "public_key_file"})
# What each role may send when the site file does not say: dispatch moves set points and schedules; an operator
# may also switch, change modes, revert everything and change the keys.
DEFAULT_ROLES: dict[str, tuple[str, ...]] = {
    "operator": KINDS,
    "dispatch": ("der.setpoint", "der.curve", "der.curve_revert", "capbank.open", "capbank.close",
                 "regulator.band_center", "schedule.load", "schedule.cancel"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TrustedKey:
    key_id: str
    role: str
    public_key: Ed25519PublicKey = field(repr=False)
    text: str = field(repr=False, default="")  # its base64, as the site file or a keys.update gave it


@dataclass(frozen=True, slots=True)
class CommandsConfig:
    agent_key: Ed25519PrivateKey = field(repr=False)  # never in a repr, a log or the status
    agent_key_id: str
    keys: tuple[TrustedKey, ...]
    roles: Mapping[str, frozenset[str]]
    max_skew_s: float = 30.0
    link_loss_s: float = 900.0
    max_hold_s: float = 86_400.0

    def may_send(self, role: str, kind: str) -> bool:
        return kind in self.roles.get(role, frozenset())


def parse_commands(c: Checker, raw: Mapping[str, Any], site: str | None, has_control: bool) -> CommandsConfig | None:
    """Validate ``[commands]``; every problem goes to ``c`` with its key, value and what is allowed."""
    c.unknown(raw, "commands", set(KEYS))
    if not has_control:
        c.fail("commands", "(section)", "needs a [control] section: every command ends in its safety envelope")
    key_path = c.path(c.get(raw, "commands", "agent_key_file", "string"))
    agent_key: Ed25519PrivateKey | None = None
    if key_path is not None:
        try:
            mode = key_path.stat().st_mode & 0o077
        except OSError:
            mode = 0
        if mode:
            c.warn("commands.agent_key_file", str(key_path), f"readable by others (mode {oct(mode)} beyond the owner's): "
                   "chmod 600 it, it signs this site's results")  # fmt: skip
        try:
            agent_key = load_private_key(key_path)
        except KeyFileError as err:
            c.fail("commands.agent_key_file", str(key_path), f"an Ed25519 private key (gridedge keys generate): {err}")
    key_id = c.get(raw, "commands", "agent_key_id", "string", f"agent-{site or 'site'}")
    if key_id is not None and not valid_key_id(key_id):
        c.fail("commands.agent_key_id", key_id, "1-64 letters, digits, '_', '.', ':', '-'")
    skew = c.get(raw, "commands", "max_skew_s", "number", 30.0, lo=0, hi=600)
    link = c.get(raw, "commands", "link_loss_s", "number", 900.0, lo=10, hi=7 * 86_400)
    hold = c.get(raw, "commands", "max_hold_s", "number", 86_400.0, lo=60, hi=7 * 86_400)
    roles = _roles(c, c.get(raw, "commands", "roles", "table", {}) or {})
    keys = _keys(c, raw)
    if agent_key is None or key_id is None or None in (skew, link, hold):
        return None
    return CommandsConfig(agent_key=agent_key, agent_key_id=key_id, keys=tuple(keys), roles=roles,
                          max_skew_s=float(skew), link_loss_s=float(link), max_hold_s=float(hold))  # fmt: skip


def _roles(c: Checker, raw: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    c.unknown(raw, "commands.roles", set(ROLES))
    out = {role: frozenset(kinds) for role, kinds in DEFAULT_ROLES.items()}
    for role in ROLES:
        if role not in raw:
            continue
        kinds = raw[role]
        key = f"commands.roles.{role}"
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            c.fail(key, kinds, 'an array of command kinds, or ["*"] for all')
            continue
        bad = [k for k in kinds if k != "*" and k not in KINDS]
        if bad:
            c.fail(key, bad[0], "a command kind: " + ", ".join(KINDS) + ', or "*"')
            continue
        out[role] = frozenset(KINDS) if "*" in kinds else frozenset(kinds)
    return out


def _keys(c: Checker, raw: Mapping[str, Any]) -> list[TrustedKey]:
    out: list[TrustedKey] = []
    entries = c.tables(raw, "keys", "commands")
    if not entries and "keys" not in raw:
        c.fail("commands.keys", "(none)", "at least one [[commands.keys]] entry: the keys this site trusts")
    seen: set[str] = set()
    for prefix, t in entries:
        c.unknown(t, prefix, set(KEY_KEYS))
        key_id = c.get(t, prefix, "key_id", "string")
        role = c.get(t, prefix, "role", "string", choices=ROLES)
        if key_id is not None and not valid_key_id(key_id):
            c.fail(f"{prefix}.key_id", key_id, "1-64 letters, digits, '_', '.', ':', '-'")
            key_id = None
        if key_id is not None and key_id in seen:
            c.fail(f"{prefix}.key_id", key_id, "listed once (key ids are unique)")
        seen.add(key_id or "")
        text = _public_text(c, t, prefix)
        if key_id is None or role is None or text is None:
            continue
        try:
            out.append(TrustedKey(key_id, role, parse_public_key(text), text.strip()))
        except KeyFileError as err:
            c.fail(f"{prefix}.public_key", "(key)", f"an Ed25519 public key, base64 of 32 bytes or PEM: {err}")
    return out


def _public_text(c: Checker, t: Mapping[str, Any], prefix: str) -> str | None:
    inline = c.get(t, prefix, "public_key", "string", None)
    file = c.path(c.get(t, prefix, "public_key_file", "string", None))
    if (inline is None) == (file is None):
        c.fail(prefix, "(key)", "public_key or public_key_file, one of the two")
        return None
    if file is not None:
        try:
            return Path(file).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as err:
            c.fail(f"{prefix}.public_key_file", str(file), f"a readable file holding the key ({err})")
            return None
    return inline


__all__ = ["DEFAULT_ROLES", "CommandsConfig", "TrustedKey", "parse_commands"]
