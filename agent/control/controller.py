"""The control layers: each function run at its cadence, its decisions handed to the safety envelope.

Time scales are kept apart so the controllers never fight (docs/control.md, "Time scales"):

| layer | what | cadence |
|---|---|---|
| 0 | DER curves and set points (the inverters act in seconds; the agent configures and verifies) | seconds |
| 1 | the regulator (band centre, or taps in manual) | tens of seconds |
| 2 | the capacitor bank | minutes, with its lockout |
| 3 | CVR | every few minutes |

A slower layer moves only once the faster ones have settled: a function of layer L proposing a command while
a device of a faster layer was operated less than that function's ``settle_s`` ago gets a held decision
(``waiting_for_faster_layers``) instead; a decision marked ``detail.give_back`` (CVR giving the band centre back)
is never held so. The controller reads the snapshot once per cycle (a
:class:`~agent.control.view.View` at one instant), calls each due function's pure ``decide`` through its
``step``, and awaits the envelope; it writes nothing itself. Held decisions (no command: stale inputs, waiting)
go on the audit stream when their rule changes, not every cycle; so does a refusal the envelope repeats for
the same reason and action (a suspended function proposing every cycle): the repeats are counted, and the next
decision recorded says how many (``detail.repeats``).

Functions of mode ``monitor`` are not run: monitor mode makes no decisions. A central command may change a
function's mode while the agent runs (:meth:`Controller.set_mode`), so every function is kept and its layer runs.

A device a central command holds (a switched cap bank, a commanded band centre: ``commanded``, kept by
agent/commands) is left alone by the local functions until the command's time runs out: their decisions about it
are held (``central_command``). DER functions take commands into their own target instead (``takes_commands``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

from agent.clock import Clock
from agent.control.config import FunctionPolicy
from agent.control.decision import Decision
from agent.control.envelope import Envelope
from agent.control.view import ReadingSource, View
from protocols.eventlog import EventLog

log = EventLog("control")

LAYERS = {0: "der", 1: "regulator", 2: "capbank", 3: "cvr"}


class ControlFunction(Protocol):
    """What the controller runs: a pure decision wrapped with the state it carries between cycles."""

    name: str
    layer: int
    mode: str
    policy: FunctionPolicy

    @property
    def cadence_s(self) -> float: ...

    @property
    def settle_s(self) -> float: ...

    @property
    def devices(self) -> tuple[str, ...]: ...

    def step(self, view: View, now: float) -> Decision | None: ...

    def after(self, decision: Decision) -> None: ...


class Controller:
    """Runs the functions layer by layer (module docstring)."""

    def __init__(
        self, functions: Sequence[ControlFunction], envelope: Envelope, snapshot: ReadingSource, clock: Clock
    ) -> None:
        self.functions = list(functions)
        self.commanded: dict[str, str] = {}  # device -> id of the central command holding it (agent/commands)
        self.envelope = envelope
        self.snapshot = snapshot
        self.clock = clock
        self._due: dict[str, float] = {}
        self._held_rule: dict[str, str | None] = {}  # function -> rule of the last held decision recorded
        self._refusal: dict[str, tuple[str, str]] = {}  # function -> (action, reason) of its last refusal recorded
        self._repeats: dict[str, int] = {}  # function -> refusals not recorded since
        self.cycles = 0

    def layers(self) -> list[int]:
        return sorted({f.layer for f in self.functions})

    def find(self, target: str) -> list[ControlFunction]:
        """The functions a command's target names: a function's name, or a prefix ending in ``*`` (``der:*``)."""
        if target.endswith("*"):
            return [f for f in self.functions if f.name.startswith(target[:-1])]
        return [f for f in self.functions if f.name == target]

    def set_mode(self, f: ControlFunction, mode: str) -> None:
        """Change ``f``'s mode now (a central command); the envelope judges its decisions by the new policy."""
        f.mode = mode
        f.policy = dataclasses.replace(f.policy, mode=mode)
        self.envelope.policies[f.policy.name] = f.policy

    def settled(self, layer: int, now: float) -> tuple[bool, str | None]:
        """Whether every function of a faster layer has let its devices settle (and which has not)."""
        for f in self.functions:
            if f.layer >= layer:
                continue
            last = self.envelope.last_operation(f.devices)
            if last is not None and now - last < f.settle_s:
                return False, f.name
        return True, None

    async def cycle(self, layer: int) -> list[Decision]:
        """One pass over the due functions of ``layer``: their decisions as the envelope left them."""
        now = self.clock.time()
        view = View(self.snapshot, now)
        out: list[Decision] = []
        for f in self.functions:
            if f.layer != layer or now < self._due.get(f.name, float("-inf")):
                continue
            if f.policy.mode == "monitor" and getattr(f, "commanded", None) is None:
                continue  # monitor mode decides nothing, unless a central command gave the function a target
            self._due[f.name] = now + f.cadence_s
            d = f.step(view, now)
            if d is None:
                self._held_rule[f.name] = None
                continue
            held_by = self.commanded.get(d.device)
            if d.command is not None and held_by is not None and not getattr(f, "takes_commands", False):
                d = d.replace(verdict="held", outcome="held", rule="central_command",
                              detail={**d.detail, "command_id": held_by, "would": d.command.action})  # fmt: skip
            # a give-back (CVR restoring the band centre) returns a device toward its normal state: never held
            elif d.command is not None and not d.detail.get("give_back"):
                ok, waiting_for = self.settled(layer, now)
                if not ok:
                    d = d.replace(verdict="held", outcome="held",
                                  detail={**d.detail, "waiting_for_faster_layers": waiting_for})  # fmt: skip
            if d.outcome == "held":
                key = d.rule if d.command is None else f"{d.rule}:waiting"
                if self._held_rule.get(f.name) != key:
                    self._held_rule[f.name] = key
                    await self.envelope.record(d)
                out.append(d)
                continue
            self._held_rule[f.name] = None
            done = await self.envelope.submit(d, record=False)
            f.after(done)
            out.append(done)
            await self._record(f.name, done)
        self.cycles += 1
        return out

    async def _record(self, name: str, d: Decision) -> None:
        """Record ``d`` unless it repeats the function's last refusal (envelope checks only: a decision that
        reached the device is recorded by the envelope itself)."""
        if d.verdict == "allowed" or (d.reason or "").startswith("device_refused"):
            self._refusal.pop(name, None)
            return
        if d.outcome == "refused" and d.command is not None:
            key = (d.command.action, d.reason or "")
            if self._refusal.get(name) == key:
                self._repeats[name] = self._repeats.get(name, 0) + 1
                return
            self._refusal[name] = key
        else:
            self._refusal.pop(name, None)
        repeats = self._repeats.pop(name, 0)
        if repeats:
            d = d.replace(detail={**d.detail, "repeats": repeats})
        await self.envelope.record(d)

    async def run_layer(self, layer: int) -> None:
        """Until cancelled: a cycle of ``layer`` at the shortest cadence of its functions, the first one a cadence
        after the start (the pollers have read every device by then)."""
        cadence = min(f.cadence_s for f in self.functions if f.layer == layer)
        log.info("control_layer_started", layer=layer, name=LAYERS.get(layer, str(layer)), cadence_s=cadence,
                 functions=",".join(f.name for f in self.functions if f.layer == layer))  # fmt: skip
        while True:
            await self.clock.sleep(cadence)
            await self.cycle(layer)

    def status(self) -> dict[str, Any]:
        return {
            "functions": {f.name: {"mode": f.policy.mode, "layer": f.layer, "cadence_s": f.cadence_s,
                                   "devices": list(f.devices)} for f in self.functions},
            "cycles": self.cycles,
            "refusals_not_recorded": dict(self._repeats),
            "envelope": self.envelope.status(),
        }  # fmt: skip


__all__ = ["LAYERS", "ControlFunction", "Controller"]
