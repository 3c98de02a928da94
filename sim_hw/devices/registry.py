"""Device kind (the bench TOML's ``kind``) -> the model that simulates it.

Every model has ``values(t) -> {point: value}``; physics-driven ones also ``actuate(t, feeder)``,
``observe(t, solution)`` and ``on_write(request)`` (sim_hw/feeder/solution.py, modbus_server.py). A model's
constructor validates its own ``options`` and raises a ValueError subclass naming key, value and allowed
values; :func:`build_model` turns that into :class:`DeviceOptionsError` for the bench config's key path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from protocols.modbus.registermap import RegisterMap


class DeviceModel(Protocol):
    def values(self, t: float) -> Mapping[str, float | int | str | bool]: ...


class DeviceOptionsError(ValueError):
    """A device's options cannot be used: ``key`` names the option."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


Factory = Callable[[str, Mapping[str, Any], "BuildContext"], DeviceModel]


class BuildContext:
    """What a factory may need beside the options: the seed, the simulated clock, the device's map."""

    def __init__(
        self,
        *,
        seed: int,
        clock: Callable[[], float],
        load_kw: float,
        register_map: RegisterMap | None,
        step_s: float = 1.0,
    ) -> None:
        self.step_s = step_s
        self.seed = seed
        self.clock = clock
        self.load_kw = load_kw
        self.register_map = register_map


def _meter(name: str, options: Mapping[str, Any], ctx: BuildContext) -> DeviceModel:
    from sim_hw.devices.meter import ThreePhaseMeter

    if options:
        raise DeviceOptionsError("options", f"options = {dict(options)!r}: the synthetic meter takes none")
    return ThreePhaseMeter(name, load_kw=ctx.load_kw, seed=ctx.seed, clock=ctx.clock)


def _inverter(name: str, options: Mapping[str, Any], ctx: BuildContext) -> DeviceModel:
    from sim_hw.devices.inverter import SunSpecInverter

    return SunSpecInverter.from_options(name, {"step_s": ctx.step_s, **options})


def _feeder_meter(name: str, options: Mapping[str, Any], ctx: BuildContext) -> DeviceModel:
    from sim_hw.devices.feeder_meter import FeederMeter

    return FeederMeter.from_options(name, options)


def _relay(name: str, options: Mapping[str, Any], ctx: BuildContext) -> DeviceModel:
    from sim_hw.devices.relay import FeederRelay

    return FeederRelay.from_options(name, options)


def _capbank(name: str, options: Mapping[str, Any], ctx: BuildContext) -> DeviceModel:
    from sim_hw.devices.capbank import CapBankController

    return CapBankController(name, options, clock=ctx.clock)


def _regulator(name: str, options: Mapping[str, Any], ctx: BuildContext) -> DeviceModel:
    from sim_hw.devices.regulator import RegulatorController

    return RegulatorController(name, options, clock=ctx.clock)


FACTORIES: dict[str, Factory] = {
    "capbank": _capbank,
    "regulator": _regulator,
    "meter": _meter,
    "inverter": _inverter,
    "feeder-meter": _feeder_meter,
    "relay": _relay,
}


def build_model(kind: str, name: str, options: Mapping[str, Any], ctx: BuildContext) -> DeviceModel:
    """The model of one device; DeviceOptionsError when its options are wrong."""
    try:
        factory = FACTORIES[kind]
    except KeyError:
        raise DeviceOptionsError("kind", f"kind = {kind!r}: no model (known: {', '.join(FACTORIES)})") from None
    try:
        return factory(name, options, ctx)
    except DeviceOptionsError:
        raise
    except (ValueError, TypeError) as err:
        raise DeviceOptionsError("options", str(err)) from err


def model_register_map(model: DeviceModel, spec_map: RegisterMap | None) -> RegisterMap:
    """The map a device is served with: its config's, else the one the model builds (SunSpec)."""
    if spec_map is not None:
        return spec_map
    built = getattr(model, "register_map", None)
    if not isinstance(built, RegisterMap):
        raise DeviceOptionsError("map", "this device kind needs a register map file (map = ...)")
    return built
