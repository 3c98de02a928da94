"""Control's part of the composition root: links, actuators, the envelope, the functions and their layers.

:func:`build_control` is called by agent/service.py with the site's configuration, the snapshot, the store, the
clock and the pollers. Each commanded device gets a link over its own poller's transport (shared, so an RS-485
line keeps one arbiter and a TCP device one connection), its actuator is built and handed to the envelope, and
no reference to it is kept here: from then on the envelope is the only way to the device.

:class:`ControlSystem` is what the service runs: the supervised tasks (the envelope's start-up hand-back and
heartbeats, one task per time-scale layer, the spools' retries) and :meth:`ControlSystem.stop`, which hands every
held device back to its autonomous state before the pollers and links stop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.clock import Clock
from agent.config import AgentConfig, DeviceConfig
from agent.control.actuators import Actuator, CapBankActuator, RegulatorActuator
from agent.control.capbank import CapBankFunction
from agent.control.config import ControlConfig
from agent.control.controller import LAYERS, ControlFunction, Controller
from agent.control.cvr import CvrFunction
from agent.control.der import DerFunction
from agent.control.envelope import ControlStore, ControlStream, Envelope
from agent.control.inverter import DerActuator
from agent.control.live import LivePublisher, live_path
from agent.control.regulator import BandCentreOwner, RegulatorFunction
from agent.control.view import ReadingSource
from agent.devicelink import RegisterMapLink, SharedTransport
from agent.events import RECENT_ACTIONS, EventSpool, EventStore
from protocols.eventlog import EventLog
from protocols.modbus.client import ModbusTransport

log = EventLog("control")


class PollerLike(Protocol):
    """What control takes from a device's poller: its configuration and its transport."""

    device: DeviceConfig
    transport: ModbusTransport


class Store(ControlStore, EventStore, Protocol):
    """The agent's store (AsyncStore): the envelope's state and the two spools' events."""


@dataclass
class ControlSystem:
    """What the service runs of control (module docstring)."""

    config: ControlConfig
    envelope: Envelope
    controller: Controller
    links: list[RegisterMapLink] = field(default_factory=list)
    live: LivePublisher | None = None  # the picture `gridedge control explain` reads (agent/control/live.py)

    def tasks(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """(name, factory) of every supervised task of control."""
        out: list[tuple[str, Callable[[], Awaitable[None]]]] = [("control-envelope", self.envelope.run),
                                                                ("control-audit-retry", self.envelope.audit.run),
                                                                ("control-events-retry", self.envelope.events.run)]  # fmt: skip
        for layer in self.controller.layers():
            out.append((f"control:{LAYERS.get(layer, layer)}", _layer(self.controller, layer)))
        if self.live is not None:  # -- operator: the live picture for `control explain`
            out.append(("control-live", self.live.run))
        return out

    async def stop(self) -> None:
        """Hand every held device back (before the pollers and links stop), flush the spools, close the links."""
        await self.envelope.hand_back_all("handback:agent_stopping")
        await self.envelope.audit.close()
        await self.envelope.events.close()
        for link in self.links:
            await link.close()

    def status(self) -> dict[str, Any]:
        # clock_ts: the agent's clock now (a bench day may run at speed), what decision times are judged against
        return {"mode": self.envelope.mode, "clock_ts": self.controller.clock.time(), **self.controller.status()}


def _layer(controller: Controller, layer: int) -> Callable[[], Awaitable[None]]:
    return lambda: controller.run_layer(layer)


def _link(poller: PollerLike) -> RegisterMapLink:
    """A link over the poller's own transport, shared with it from now on."""
    shared = poller.transport if isinstance(poller.transport, SharedTransport) else SharedTransport(poller.transport)
    if shared is not poller.transport:
        poller.transport = shared.attach()
    return RegisterMapLink(poller.device, shared.attach())


def build_control(
    config: AgentConfig, snapshot: ReadingSource, store: Store, clock: Clock, pollers: Sequence[PollerLike]
) -> ControlSystem | None:
    """The control of ``config`` (None without a ``[control]`` section)."""
    ctl = config.control
    if ctl is None:
        return None
    RECENT_ACTIONS.configure(ctl.audit_window_s)
    by_name = {p.device.name: p for p in pollers}
    actuators: list[Actuator] = []
    links: list[RegisterMapLink] = []
    functions: list[ControlFunction] = []
    if ctl.capbank is not None:
        cap = ctl.capbank
        link = _link(by_name[cap.device])
        links.append(link)
        actuators.append(CapBankActuator(link, clock, ops_per_day=cap.ops_per_day, heartbeat_point=cap.heartbeat_point,
                                         heartbeat_s=cap.heartbeat_s))  # fmt: skip
        functions.append(CapBankFunction(cap, ctl.function_mode(cap.mode)))
    if ctl.regulator is not None:
        reg = ctl.regulator
        link = _link(by_name[reg.device])
        links.append(link)
        actuators.append(RegulatorActuator(
            link, clock, band_center_v=(reg.band_center_min_v, reg.band_center_max_v),
            bandwidth_v=(reg.bandwidth_min_v, reg.bandwidth_max_v), max_tap_step=reg.max_tap_step,
            taps_per_day=reg.taps_per_day, setpoint_changes_per_hour=reg.setpoint_changes_per_hour,
            heartbeat_point=reg.heartbeat_point, heartbeat_s=reg.heartbeat_s,
        ))  # fmt: skip
        # -- the regulator function and CVR: one band centre, owned by CVR while it has it lowered (docs/control.md)
        owner = BandCentreOwner()
        functions.append(RegulatorFunction(reg, ctl.function_mode(reg.mode), owner))
        if ctl.cvr is not None and ctl.cvr.enabled:
            functions.append(CvrFunction(ctl.cvr, reg, ctl.function_mode(ctl.cvr.mode), owner))
        # -- end of the regulator function and CVR
    # ---- DER groups (agent/control/der.py, inverter.py): one function per inverter, its SunSpec link ----
    for group in ctl.der:
        for dev in group.devices:
            sunspec = getattr(by_name[dev], "link", None)  # a SunSpecPoller's own link (agent/acquisition/sunspec.py)
            if sunspec is None:
                log.warning("control_der_device_skipped", device=dev, group=group.name, why="not a SunSpec poller")
                continue
            actuators.append(DerActuator(sunspec, clock, category=group.category, reversion_s=group.reversion_s,
                                         setpoint_changes_per_hour=group.setpoint_changes_per_hour))  # fmt: skip
            functions.append(DerFunction(group, dev, ctl.function_mode(group.mode)))
    # ---- end DER groups ----
    audit = EventSpool(ControlStream(store), name="control-audit", source_key="device", logger=log,
                       stored_level=logging.DEBUG, actions=None)  # fmt: skip
    events = EventSpool(store, name="control", source_key="device", logger=log, actions=None)
    envelope = Envelope(config=ctl, store=store, clock=clock, snapshot=snapshot, actuators=actuators,
                        policies=[f.policy for f in functions], audit=audit, events=events)  # fmt: skip
    controller = Controller(functions, envelope, snapshot, clock)
    log.info("control_built", mode=ctl.mode, devices=",".join(a.device for a in actuators),
             functions=",".join(f"{f.name}:{f.policy.mode}" for f in functions))  # fmt: skip
    system = ControlSystem(ctl, envelope, controller, links)
    system.live = LivePublisher(system, snapshot, clock, live_path(config.store.path))  # -- operator: explain
    return system


__all__ = ["ControlSystem", "PollerLike", "build_control"]
