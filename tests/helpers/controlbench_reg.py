"""The regulator's part of the control bench: the site file's regulator control device (SIM-REG-1 on the bench's
RS-485 line) and the bench's regulator model, read where the tests judge (docs/devices/sim-regulator.md)."""

from __future__ import annotations

from pathlib import Path

from helpers.controlbench import MAPS, site_file
from sim_hw.bench import Bench
from sim_hw.config import BenchConfig
from sim_hw.devices.regulator import RegulatorController

REG = "reg-ctl"


def reg_model(bench: Bench) -> RegulatorController:
    model = bench.model_of(REG)
    assert isinstance(model, RegulatorController)
    return model


def reg_device(bench: Bench | BenchConfig, poll_s: float = 2.0) -> str:
    """The regulator control as a ``[[devices]]`` entry of the site file, on the bench's RS-485 line (``bench``:
    the running bench, or its config when the bench is another process)."""
    cfg = bench.config if isinstance(bench, Bench) else bench
    dev = {d.name: d for d in cfg.devices}
    return f"""
[[devices]]
name = "{REG}"
protocol = "modbus-rtu"
serial_port = "{cfg.bus("bus1").link}"
baudrate = 19200
unit_id = {dev[REG].unit_id}
poll_interval_s = {poll_s}
timeout_s = 0.3
map = "{MAPS / "sim-regulator.toml"}"
"""


def reg_site_file(bench: Bench, folder: Path, control: str, **kw: object) -> Path:
    """:func:`helpers.controlbench.site_file` with the regulator control among the devices."""
    return site_file(bench, folder, reg_device(bench) + control, **kw)  # type: ignore[arg-type]
