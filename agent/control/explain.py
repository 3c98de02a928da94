"""``gridedge control explain``: what each control function would do now, from the running agent's live picture.

The running agent publishes its snapshot, its clock and its envelope's state (agent/control/live.py). Explain
builds the site's control exactly as the agent does (agent/control/wiring.py ``build_control``, so every function
the site configures is there, whichever it is) over:

- the published readings as the snapshot, aged at the agent's clock when they were published;
- a read-only store holding the published operations and flags (budgets, dwell, suspensions, devices held);
- the site's pollers as the agent builds them, never run, every transport they and their links hold one that
  refuses every request (:class:`NoWire`): nothing can reach a device, whatever a function or an actuator tries;
- the global mode lowered to ``advise``: the envelope runs every check and says what it would answer
  (``detail.would``) and writes nothing.

Then it runs one cycle of every layer, as the controller does, and prints each function's decision: the rule,
the command, what the envelope would answer, the inputs with their ages. A function that keeps its memory in a
dataclass ``state`` continues from the agent's (the cap bank's delay timer); any other starts fresh, which the
output says. Nothing is written: not to a device, not to the store, not to the live picture.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.acquisition import build_pollers
from agent.config import AgentConfig
from agent.control.controller import LAYERS
from agent.control.decision import Decision
from agent.control.live import function_state, live_path
from agent.control.wiring import build_control
from agent.points import Quality, Reading
from agent.store import ControlFlag, ControlOp
from protocols.modbus.serialbus import SerialBusRegistry

STALE_PICTURE_S = 10.0  # a picture older than this (wall) is not the running agent's
SHOWN = 8  # command values and inputs shown per decision in the text (all of them with --json)


class ExplainError(Exception):
    """No live picture to explain from (the message says why)."""


class NoWire:
    """A transport that refuses every request: explain's devices (nothing may reach a device)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.requests = 0

    def _refuse(self) -> None:
        self.requests += 1
        raise RuntimeError(f"control explain: nothing is sent to {self.device} (a dry run)")

    async def read(self, *args: Any) -> list[int]:
        self._refuse()
        return []

    async def write_registers(self, *args: Any) -> None:
        self._refuse()

    async def write_coil(self, *args: Any) -> None:
        self._refuse()

    async def close(self) -> None:
        return None


class FixedClock:
    """The agent's clock frozen at the picture's instant."""

    def __init__(self, ts: float, speed: float = 1.0) -> None:
        self.ts = ts
        self.speed = speed

    def time(self) -> float:
        return self.ts

    def monotonic(self) -> float:
        return self.ts

    async def sleep(self, seconds: float) -> None:
        return None


class PictureSnapshot:
    """The published readings as a snapshot (``get``, ``items``)."""

    def __init__(self, rows: Sequence[Sequence[Any]]) -> None:
        self._latest = {r[0]: Reading(r[0], float(r[1]), r[2], r[3], Quality(r[4])) for r in rows}

    def get(self, point: str) -> Reading | None:
        return self._latest.get(point)

    def items(self) -> list[tuple[str, Reading]]:
        return list(self._latest.items())


class DryStore:
    """The published envelope state, read-only; events are kept in memory (a dry run stores nothing)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.ops = [ControlOp(**o) for o in state.get("ops") or []]
        self.flags = [ControlFlag(**f) for f in state.get("flags") or []]
        self.events: list[tuple[Any, ...]] = []

    async def control_ops(self, since: float, device: str | None = None) -> list[ControlOp]:
        return [o for o in self.ops if o.ts >= since and (device is None or o.device == device)]

    async def control_flags(self, kind: str | None = None) -> list[ControlFlag]:
        return [f for f in self.flags if kind is None or f.kind == kind]

    async def control_record_op(self, *args: Any) -> int:
        raise RuntimeError("control explain records no operation")

    async def control_set_flag(self, *args: Any, **kw: Any) -> None:
        raise RuntimeError("control explain sets no flag")

    async def control_clear_flag(self, *args: Any, **kw: Any) -> bool:
        raise RuntimeError("control explain clears no flag")

    async def add_event(self, *args: Any, **kw: Any) -> None:
        self.events.append(args)


@dataclass(frozen=True)
class Explanation:
    """One function's answer now: its real mode, its decision (None: nothing to do), whether its memory was
    the agent's."""

    function: str
    layer: int
    mode: str
    devices: tuple[str, ...]
    decision: Decision | None
    memory: str  # "agent" (continued from the agent's), "fresh", or "none" (keeps none)
    state: dict[str, Any] | None = None  # its memory after this dry cycle (published form), when it keeps one

    def to_dict(self) -> dict[str, Any]:
        decision = None if self.decision is None else self.decision.to_dict()
        return {"function": self.function, "layer": self.layer, "mode": self.mode, "devices": list(self.devices),
                "memory": self.memory, "state": self.state, "decision": decision}  # fmt: skip


def dry_pollers(config: AgentConfig, clock: FixedClock) -> list[Any]:
    """The site's pollers as the agent builds them (a SunSpec device's poller carries its write link), never run,
    every transport they and their links hold replaced by a :class:`NoWire`."""
    pollers = build_pollers(config.devices, lambda readings: None, clock.time, registry=SerialBusRegistry())
    for p in pollers:
        p.transport = NoWire(p.device.name)  # type: ignore[assignment]
        link = getattr(p, "link", None)
        if link is not None and hasattr(link, "transport"):
            link.transport = NoWire(p.device.name)
    return pollers


def load_picture(config: AgentConfig, now: float | None = None) -> dict[str, Any]:
    """The running agent's live picture, or ExplainError saying why there is none to use."""
    path = live_path(config.store.path)
    try:
        picture = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExplainError(f"no live control picture {path}: the agent has not run control with this store") from None
    except (OSError, ValueError) as err:
        raise ExplainError(f"cannot read the live control picture {path}: {err}") from err
    age = (time.time() if now is None else now) - float(picture.get("ts") or 0.0)
    if age > STALE_PICTURE_S:
        raise ExplainError(f"the live control picture {path} is {age:.0f} s old: the agent is not running control")
    return picture


async def explain(config: AgentConfig, picture: dict[str, Any]) -> tuple[str, list[Explanation]]:
    """(the global mode, each function's explanation) from ``picture`` (module docstring)."""
    ctl = config.control
    if ctl is None:
        raise ExplainError("the site file has no [control] section: nothing to explain")
    dry = dataclasses.replace(config, control=dataclasses.replace(ctl, mode="advise"))
    snapshot = PictureSnapshot(picture.get("readings") or [])
    clock = FixedClock(float(picture["clock_ts"]))
    store = DryStore(picture.get("envelope") or {})
    pollers = dry_pollers(config, clock)
    system = build_control(dry, snapshot, store, clock, pollers)  # type: ignore[arg-type]
    assert system is not None
    live_functions: dict[str, Any] = picture.get("functions") or {}
    memory: dict[str, str] = {}
    for f in system.controller.functions:
        published = (live_functions.get(f.name) or {}).get("state")
        current = getattr(f, "state", None)
        if function_state(f) is None:
            memory[f.name] = "none"
        elif published is not None:
            try:
                f.state = type(current)(**published)  # type: ignore[attr-defined]
                memory[f.name] = "agent"
            except TypeError:
                memory[f.name] = "fresh"
        else:
            memory[f.name] = "fresh"
    await system.envelope.refresh()
    decided: dict[str, Decision] = {}
    for layer in system.controller.layers():
        for d in await system.controller.cycle(layer):
            decided[d.function] = d
    out: list[Explanation] = []
    for name, policy in system.envelope.policies.items():
        fn = next((f for f in system.controller.functions if f.name == name), None)
        mode = (live_functions.get(name) or {}).get("mode") or ("monitor" if fn is None else policy.mode)
        if fn is None:
            out.append(Explanation(name, -1, mode, (), None, "none"))
            continue
        out.append(Explanation(name, fn.layer, mode, tuple(fn.devices), decided.get(name), memory[name],
                               function_state(fn)))  # fmt: skip
    return str(picture.get("mode") or ctl.mode), out


# ---- text ------------------------------------------------------------------------------------------------------


def _would(d: Decision, mode: str) -> str:
    """What the envelope would answer and what the agent does with it in its mode."""
    would = str(d.detail.get("would", "allowed"))
    if would != "allowed":
        detail = d.detail.get("would_detail") or {}
        why = ", ".join(f"{k}={v}" for k, v in detail.items())
        return f"the envelope would refuse it: {would}" + (f" ({why})" if why else "")
    if mode == "control":
        return "the envelope would allow it: the agent writes it at this decision"
    return f"the envelope would allow it; mode {mode}: logged and sent uplink, nothing written"


def _input(i: dict[str, Any]) -> str:
    age = "never read" if i.get("age_s") is None else f"{i['age_s']:.1f} s old"
    value = i.get("value")
    shown = f"{value:.7g}" if isinstance(value, float) else value
    return f"{i['point']}={shown} ({age}, {i.get('quality')})"


def explain_text(global_mode: str, items: Sequence[Explanation], picture: dict[str, Any], now: float) -> str:
    age = now - float(picture.get("ts") or now)
    lines = [f"control explain: agent pid {picture.get('pid')}, picture {age:.1f} s old, global mode {global_mode}"
             " (a dry run: nothing is written)"]  # fmt: skip
    if global_mode == "monitor":
        lines.append("  global mode monitor: the agent makes no decisions; below, what its functions would decide")
    for e in items:
        where = f" on {', '.join(e.devices)}" if e.devices else ""
        layer = f"layer {e.layer} {LAYERS.get(e.layer, '')}".rstrip() if e.layer >= 0 else "not run"
        lines.append(f"{e.function} ({layer}, mode {e.mode}){where}:")
        if e.layer < 0:
            lines.append("  mode monitor: makes no decisions")
            continue
        d = e.decision
        if d is None:
            lines.append("  nothing to do now (no rule calls for a command, or a rule's delay is still running)")
            state = e.state or {}
            if any(v is not None for v in state.values()):
                lines.append("  its memory: " + ", ".join(f"{k}={v}" for k, v in state.items()))
        elif d.command is None:
            lines.append(f"  holds: {d.rule}" + _detail(d.detail))
        else:
            lines.append(f"  would: {d.command.action} {_some(dict(d.command.values))} on {d.device}, rule {d.rule}"
                         + (f" ({d.command.reason})" if d.command.reason else ""))  # fmt: skip
            if d.outcome == "held":
                lines.append(f"  held: waiting for faster layers ({d.detail.get('waiting_for_faster_layers')})")
            else:
                lines.append(f"  {_would(d, e.mode)}")
        if d is not None:
            shown = [_input(i.to_dict()) for i in d.inputs[:SHOWN]]
            more = f"; and {len(d.inputs) - SHOWN} more (--json)" if len(d.inputs) > SHOWN else ""
            lines.append("  inputs: " + "; ".join(shown) + more)
            if d.budgets_left:
                lines.append("  wear budgets left: " + ", ".join(f"{k} {v}" for k, v in d.budgets_left.items()))
        if e.memory == "fresh":
            lines.append("  (its memory between cycles was not published: judged from a fresh start)")
    return "\n".join(lines)


def _some(values: dict[str, Any]) -> str:
    """The command's values, the first :data:`SHOWN` of them (a DER configuration writes dozens)."""
    if len(values) <= SHOWN:
        return str(values)
    head = ", ".join(f"{k}: {v}" for k, v in list(values.items())[:SHOWN])
    return f"{{{head}, ... {len(values)} values (--json)}}"


def _detail(detail: Any) -> str:
    shown = {k: v for k, v in dict(detail).items() if k not in ("would", "would_detail")}
    return f" ({', '.join(f'{k}={v}' for k, v in shown.items())})" if shown else ""


__all__ = ["DryStore", "ExplainError", "Explanation", "NoWire", "explain", "explain_text", "load_picture"]
