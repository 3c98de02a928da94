"""Register maps for the agent to read the bench's SunSpec inverters, written from the inverters themselves.

A SunSpec device publishes its scale factors in ``*_SF`` registers; the agent's register maps take a fixed
``scale`` per point, as a field engineer commissioning a fixed-SF inverter writes them. The bench's
inverters fix their SFs from their rating (sim_hw/devices/inverter.py), so this module writes, for each
inverter of a bench config, the map of the points a utility polls (model 701 measurements, the 704
controls' readback, the 705 volt-var enable) with the inverter's own addresses, types and scales::

    python -m sim_hw.agent_maps config/sim-ieee13.toml config/maps

tests/test_sim_agent_maps.py keeps the shipped files equal to what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from protocols.modbus.registermap import DataType, RegisterPoint
from sim_hw.config import BenchConfig, BenchConfigError, load_bench_config
from sim_hw.devices.inverter import SunSpecInverter

# agent point name -> SunSpec point (docs/devices/sim-inverter.md)
POLLED: dict[str, str] = {
    "p_w": "DERMeasureAC.W",
    "q_var": "DERMeasureAC.Var",
    "s_va": "DERMeasureAC.VA",
    "pf": "DERMeasureAC.PF",
    "i_a": "DERMeasureAC.A",
    "v_ln": "DERMeasureAC.LNV",
    "frequency": "DERMeasureAC.Hz",
    "inverter_state": "DERMeasureAC.InvSt",
    "connection_state": "DERMeasureAC.ConnSt",
    "w_max_lim_enabled": "DERCtlAC.WMaxLimPctEna",
    "w_max_lim_pct": "DERCtlAC.WMaxLimPct",
    "var_setpoint_enabled": "DERCtlAC.VarSetEna",
    "var_setpoint_mode": "DERCtlAC.VarSetMod",
    "var_setpoint_var": "DERCtlAC.VarSet",
    "volt_var_enabled": "DERVoltVar.Ena",
}
UNITS = {"p_w": "W", "q_var": "var", "s_va": "VA", "i_a": "A", "v_ln": "V", "frequency": "Hz",
         "w_max_lim_pct": "%", "var_setpoint_var": "var"}  # fmt: skip


def map_toml(inverter: SunSpecInverter, device: str) -> str:
    """The agent's register map of one inverter, as TOML text."""
    lines = [
        f"# {device}: SunSpec inverter of the IEEE 13-node bench, the points the agent polls.",
        "# Written by `python -m sim_hw.agent_maps` from the inverter's own layout (scales = 10^SF it serves);",
        "# docs/devices/sim-inverter.md has every register. Do not edit by hand.",
        f'name = "sunspec-{device}"',
        "",
    ]
    for name, ss in POLLED.items():
        p: RegisterPoint = inverter.layout.point(ss).register
        lines += ["[[points]]", f'name = "{name}"', f'table = "{p.table.value}"', f"address = {p.address}"]
        lines.append(f'type = "{p.dtype.value}"')
        if p.dtype is DataType.STRING:
            lines.append(f"length = {p.length}")
        if p.scale != 1.0:
            lines.append(f"scale = {p.scale!r}")
        if name in UNITS:
            lines.append(f'unit = "{UNITS[name]}"')
        lines.append(f"# SunSpec {ss}")
        lines.append("")
    return "\n".join(lines)


def write_maps(config: BenchConfig, out_dir: Path) -> list[Path]:
    written = []
    for d in config.devices:
        if d.kind != "inverter":
            continue
        inv = SunSpecInverter.from_options(d.name, {"step_s": config.bench.step_s, **d.options})
        path = out_dir / f"sunspec-{d.name}.toml"
        path.write_text(map_toml(inv, d.name))
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m sim_hw.agent_maps BENCH.toml OUT_DIR", file=sys.stderr)
        return 2
    try:
        config = load_bench_config(argv[0])
    except BenchConfigError as err:
        print(err, file=sys.stderr)
        return 2
    for path in write_maps(config, Path(argv[1])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
