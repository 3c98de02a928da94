"""The decision records: what a function proposes, what the envelope made of it, what the device did.

One frozen record carries a decision from the pure function that built it (from the snapshot and the clock)
through the safety envelope (its verdict, the readback, the outcome) to the audit stream, the status page and
``control explain``: every reader reads the same record (docs/control.md, "The decision record").

- :class:`Input`: one value a function used, with its time stamp, its age when used and its quality.
- :class:`Command`: what is to be written to one device (``action`` names the actuator's operation).
- :class:`Decision`: the record. A function proposes it (verdict ``proposed``, outcome ``pending``); the
  envelope fills the verdict (``allowed``, ``advise``, ``refused:<reason>``), the readback, the outcome and
  the wear budgets left. A decision without a command (``held``) says why a function holds still.

Every record is JSON-serialisable (:meth:`Decision.to_dict`) and rebuilt by :meth:`Decision.from_dict`; the
audit event is :func:`audit_event`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from agent.points import Event

MODES = ("monitor", "advise", "control")  # in rising order of authority
OUTCOMES = ("pending", "applied", "refused", "advised", "held", "readback_failed", "reverted", "failed")
VERDICTS = ("proposed", "allowed", "advise", "held")  # and "refused:<reason>"
QUALITIES = ("good", "stale", "invalid", "estimated", "flagged", "missing")
AUDIT_KIND = "control_decision"
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")
_REASON_RE = re.compile(r"^[a-z][a-z0-9_]*(:[A-Za-z0-9_.\-]+)?$")

Value = float | int | str | bool | None


def _frozen_map(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _plain(value: Any) -> Any:
    """A JSON-ready copy: mappings -> dicts, sequences -> lists; non-finite floats are refused."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r}: a decision holds finite numbers only (JSON has no NaN)")
    return value


def mode_rank(mode: str) -> int:
    return MODES.index(mode)


def lesser_mode(a: str, b: str) -> str:
    """The mode with less authority (a function's mode is never above the global one)."""
    return a if mode_rank(a) <= mode_rank(b) else b


@dataclass(frozen=True, slots=True)
class Input:
    """One input of a decision: ``point`` (``<device>.<point>``), its value, stamp [s UTC], age [s], quality."""

    point: str
    value: Value
    ts: float | None
    age_s: float | None
    quality: str

    def __post_init__(self) -> None:
        if self.quality not in QUALITIES:
            raise ValueError(f"input {self.point}: quality = {self.quality!r}: one of {', '.join(QUALITIES)}")

    def usable(self, max_age_s: float) -> bool:
        """Good quality, a number or a flag, and no older than ``max_age_s``."""
        return self.quality == "good" and self.value is not None and self.age_s is not None and self.age_s <= max_age_s

    def to_dict(self) -> dict[str, Any]:
        age = None if self.age_s is None else round(self.age_s, 3)
        return {"point": self.point, "value": self.value, "ts": self.ts, "age_s": age, "quality": self.quality}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Input:
        return cls(d["point"], d.get("value"), d.get("ts"), d.get("age_s"), d["quality"])


@dataclass(frozen=True, slots=True)
class Command:
    """What to write to ``device``: ``action`` (``capbank.close``, ``regulator.band_center``, ``handback``...)
    with its ``values`` [engineering units, named by the actuator], and why (``reason``)."""

    device: str
    action: str
    values: Mapping[str, float | int] = field(default_factory=dict)
    reason: str = ""

    def __post_init__(self) -> None:
        if not _ACTION_RE.match(self.action):
            raise ValueError(f"command action = {self.action!r}: like 'capbank.close' (lower case, one dot)")
        for k, v in self.values.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"command {self.action} value {k} = {v!r}: a finite number")
        object.__setattr__(self, "values", _frozen_map(self.values))

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "action": self.action, "values": dict(self.values), "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Command:
        return cls(d["device"], d["action"], d.get("values") or {}, d.get("reason", ""))


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision of one function about one device (module docstring)."""

    id: str
    ts: float  # when the function decided [s since the epoch, UTC, the agent's clock]
    function: str
    device: str
    mode: str  # the function's effective mode when it decided
    inputs: tuple[Input, ...]
    rule: str  # the rule that fired (or why the function holds)
    command: Command | None
    verdict: str = "proposed"
    readback: Mapping[str, Any] | None = None
    outcome: str = "pending"
    budgets_left: Mapping[str, int] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"decision mode = {self.mode!r}: one of {', '.join(MODES)}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"decision outcome = {self.outcome!r}: one of {', '.join(OUTCOMES)}")
        if self.verdict not in VERDICTS and not (
            self.verdict.startswith("refused:") and _REASON_RE.match(self.verdict.removeprefix("refused:"))
        ):
            raise ValueError(f"decision verdict = {self.verdict!r}: one of {', '.join(VERDICTS)} or refused:<reason>")
        if self.command is not None and self.command.device != self.device:
            raise ValueError(f"decision for {self.device} carries a command for {self.command.device}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "budgets_left", _frozen_map(self.budgets_left))
        object.__setattr__(self, "detail", _frozen_map(self.detail))
        if self.readback is not None:
            object.__setattr__(self, "readback", _frozen_map(self.readback))

    # -- derived ------------------------------------------------------------------------------------
    @property
    def refused(self) -> bool:
        return self.verdict.startswith("refused:")

    @property
    def reason(self) -> str | None:
        """The refusal reason (``stale_inputs``, ``budget:cap_ops_per_day``...), or None."""
        return self.verdict.removeprefix("refused:") if self.refused else None

    def replace(self, **changes: Any) -> Decision:
        return dataclasses.replace(self, **changes)

    def refuse(self, reason: str, **detail: Any) -> Decision:
        """This decision refused for ``reason``, with ``detail`` added."""
        return self.replace(verdict=f"refused:{reason}", outcome="refused", detail={**self.detail, **detail})

    # -- JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _plain(
            {
                "id": self.id,
                "ts": self.ts,
                "function": self.function,
                "device": self.device,
                "mode": self.mode,
                "inputs": [i.to_dict() for i in self.inputs],
                "rule": self.rule,
                "command": None if self.command is None else self.command.to_dict(),
                "verdict": self.verdict,
                "readback": None if self.readback is None else dict(self.readback),
                "outcome": self.outcome,
                "budgets_left": dict(self.budgets_left),
                "detail": dict(self.detail),
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Decision:
        cmd = d.get("command")
        return cls(
            id=d["id"],
            ts=d["ts"],
            function=d["function"],
            device=d["device"],
            mode=d["mode"],
            inputs=tuple(Input.from_dict(i) for i in d.get("inputs") or ()),
            rule=d["rule"],
            command=None if cmd is None else Command.from_dict(cmd),
            verdict=d.get("verdict", "proposed"),
            readback=d.get("readback"),
            outcome=d.get("outcome", "pending"),
            budgets_left=d.get("budgets_left") or {},
            detail=d.get("detail") or {},
        )


def new_id() -> str:
    return uuid.uuid4().hex


def propose(
    function: str,
    device: str,
    mode: str,
    now: float,
    inputs: Iterable[Input],
    rule: str,
    command: Command | None,
    *,
    detail: Mapping[str, Any] | None = None,
    id_factory: Callable[[], str] = new_id,
) -> Decision:
    """A new decision as a function makes it: ``proposed`` with a command, ``held`` without one."""
    held = command is None
    return Decision(
        id=id_factory(),
        ts=now,
        function=function,
        device=device,
        mode=mode,
        inputs=tuple(inputs),
        rule=rule,
        command=command,
        verdict="held" if held else "proposed",
        outcome="held" if held else "pending",
        detail=detail or {},
    )


# ---- the audit stream ------------------------------------------------------------------------------------

_SEVERITY = {
    "applied": "info",
    "advised": "info",
    "held": "info",
    "reverted": "warning",
    "refused": "warning",
    "pending": "info",
    "readback_failed": "error",
    "failed": "error",
}


def audit_text(d: Decision) -> str:
    """One line for an operator: ``capbank cap675-ctl capbank.close: applied (var_lagging)``."""
    action = d.command.action if d.command is not None else "no command"
    why = d.rule if d.reason is None else f"{d.rule}; refused: {d.reason}"
    return f"{d.function} {d.device} {action}: {d.outcome} ({why})"


def audit_event(d: Decision) -> Event:
    """The ``control_decision`` event of ``d``: source is the device, data the whole record."""
    return Event(d.ts, AUDIT_KIND, _SEVERITY[d.outcome], d.device, audit_text(d), d.to_dict())


__all__ = [
    "AUDIT_KIND",
    "MODES",
    "OUTCOMES",
    "Event",
    "Command",
    "Decision",
    "Input",
    "audit_event",
    "audit_text",
    "lesser_mode",
    "mode_rank",
    "new_id",
    "propose",
]
