"""Device pollers: read each Modbus device on its schedule and turn registers into Readings.

One :class:`DevicePoller` per device, each a task the supervisor owns. A poller never dies of a
device fault: a silent device makes its points STALE, an exception answer or a value that does not
decode makes them INVALID, and a device that fails a whole cycle is polled less often (exponential
backoff with jitter, capped at a minute) until it answers again. RTU devices on one RS-485 line
share a single :class:`~protocols.modbus.serialbus.SerialBus`, so a dead meter slows nobody else
down by more than its own timeout per attempt.

A SunSpec device (``protocol = "sunspec"``) has no register map in the site file: its
:class:`SunSpecPoller` discovers the device's models at connect (and again after the device stopped
answering, since a replaced inverter may differ), plans its reads over the discovered layout, decodes
every scaled value with the scale factor read in the same poll, and names readings
``<device>.<model group>.<point>`` (docs/sunspec.md). Its :class:`SunSpecLink` is the one way to
write to the device: points with readback, through the poller's own connection (or line).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence

from agent.acquisition.poller import BACKOFF_CAP_S, DevicePoller, PollerStats, Sink, Snapshot
from agent.acquisition.sunspec import EVERY_POLL_MODELS, SunSpecLink, SunSpecPoller
from agent.config import DeviceConfig
from protocols.modbus.client import ModbusTransport, TcpTransport
from protocols.modbus.serialbus import RtuTransport, SerialBusRegistry


def _transport(dev: DeviceConfig, registry: SerialBusRegistry) -> ModbusTransport:
    """The device's link: its own TcpTransport over TCP, its serial line's shared bus over RTU."""
    if dev.serial is not None:
        return RtuTransport(registry.get(dev.serial), timeout_s=dev.timeout_s, retries=dev.retries)
    if dev.host is None:
        raise ValueError(f"device {dev.name}: {dev.protocol} needs a host or a serial port")
    return TcpTransport(dev.host, dev.port or 502, timeout_s=dev.timeout_s, retries=dev.retries)


def build_pollers(
    devices: Sequence[DeviceConfig],
    sink: Sink,
    clock: Callable[[], float] = time.time,
    *,
    registry: SerialBusRegistry | None = None,
    rng: random.Random | None = None,
    speed: float = 1.0,
) -> list[DevicePoller]:
    """A poller per device: its own TcpTransport for TCP, one shared SerialBus per serial port for RTU; a
    :class:`SunSpecPoller` for a SunSpec device (over either).

    ``clock`` and ``speed`` are the agent's clock (agent/clock.py: ``clock.time``, ``clock.speed``)."""
    registry = registry or SerialBusRegistry()
    pollers: list[DevicePoller] = []
    for dev in devices:
        if dev.protocol not in ("modbus-tcp", "modbus-rtu", "sunspec"):
            raise ValueError(f"device {dev.name}: unknown protocol {dev.protocol!r}")
        transport = _transport(dev, registry)
        if dev.protocol == "sunspec":
            pollers.append(SunSpecPoller(dev, transport, sink, clock, rng, speed=speed))
        else:
            pollers.append(DevicePoller(dev, transport, sink, clock, rng, speed=speed))
    return pollers


def sunspec_links(pollers: Iterable[DevicePoller]) -> dict[str, SunSpecLink]:
    """Device name -> the write link of every SunSpec device among ``pollers`` (for the control layer)."""
    return {p.device.name: p.link for p in pollers if isinstance(p, SunSpecPoller)}


__all__ = [
    "BACKOFF_CAP_S",
    "EVERY_POLL_MODELS",
    "DevicePoller",
    "PollerStats",
    "Sink",
    "Snapshot",
    "SunSpecLink",
    "SunSpecPoller",
    "build_pollers",
    "sunspec_links",
]
