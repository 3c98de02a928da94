"""``gridedge sim solve``: solve the bench's feeder once at the published loads and print the voltages.

``--config`` is a bench TOML (its ``[feeder] dss`` names the OpenDSS script, relative to the TOML) or an
OpenDSS ``.dss`` script itself. Conditions: the published loads (load scale 1), every PV site at 0, capacitors
in service, no fault. ``--regulator-taps A,B,C`` fixes the regulators' taps (steps -16..16 of 0.625 %);
``--regulator-taps 10,8,11`` (:data:`PUBLISHED_TAPS`) gives the published case. Without it OpenDSS's regulator
controls choose the taps, which settle below the published ones, so the voltages are not the published
solution's; the text output says which taps were used and how to ask for the published ones.

Exit codes: 0 solved (converged), 1 the power flow did not converge, 2 bad command line, missing or
unreadable file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from pathlib import Path

from sim_hw.feeder.model import TAP_MAX, TAP_MIN, Feeder, FeederError
from sim_hw.feeder.solution import PHASES, Solution

# The regulator taps of the published power-flow results: W. H. Kersting, "Radial distribution test feeders",
# IEEE PES Distribution System Analysis Subcommittee, IEEE 13 Node Test Feeder (docs/feeder.md, Sources).
PUBLISHED_TAPS = (10, 8, 11)


class SolveConfigError(ValueError):
    """The file given to ``sim solve --config`` does not lead to a feeder script."""


def parse_taps(text: str) -> tuple[int, int, int]:
    """``"10,8,11"`` -> ``(10, 8, 11)``; for argparse (raises ArgumentTypeError naming the range)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        taps = tuple(int(p) for p in parts)
    except ValueError:
        taps = ()
    if len(taps) != 3 or not all(TAP_MIN <= t <= TAP_MAX for t in taps):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected 3 comma-separated integer tap steps (phases a,b,c) in {TAP_MIN}..{TAP_MAX}, "
            "e.g. 10,8,11"
        )
    return taps  # type: ignore[return-value]


def join_tap_values(argv: list[str]) -> list[str]:
    """``["--regulator-taps", "-1,0,2"]`` -> ``["--regulator-taps=-1,0,2"]``.

    argparse takes a value starting with "-" (a negative first tap) for an option and refuses it.
    """
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--regulator-taps":
            value = next(it, None)
            out.append(arg if value is None else f"{arg}={value}")
        else:
            out.append(arg)
    return out


def feeder_script(config: Path) -> Path:
    """The OpenDSS script a ``--config`` file stands for (a .dss as is; a TOML's ``[feeder] dss``)."""
    if not config.is_file():
        raise SolveConfigError(f"--config {str(config)!r}: no such file")
    if config.suffix.lower() == ".dss":
        return config
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SolveConfigError(f"--config {str(config)!r}: neither a .dss script nor valid TOML ({err})") from err
    dss = data.get("feeder", {}).get("dss") if isinstance(data.get("feeder"), dict) else None
    if not isinstance(dss, str) or not dss:
        raise SolveConfigError(f'{str(config)!r}: key feeder.dss missing (expected e.g. dss = "ieee13/IEEE13.dss")')
    script = (config.parent / dss).resolve()
    if not script.is_file():
        raise SolveConfigError(f"{str(config)!r}: feeder.dss = {dss!r} -> {str(script)!r}: no such file")
    return script


def solve_published(script: Path, taps: tuple[int, int, int] | None) -> tuple[Solution, tuple[int, ...]]:
    """Solve the feeder once at the published loads (PV at 0) with ``taps`` fixed, or OpenDSS's regulator control
    choosing them when None; return the solution and the taps in force."""
    feeder = Feeder.from_file(script)
    feeder.set_load_scale(1.0)
    for name in feeder.pv_sites():
        feeder.set_pv(name, 0.0, 0.0)
    if taps is not None:
        feeder.set_regulator_taps(taps)
    return feeder.solve(), feeder.regulator_taps()


def _taps(taps: tuple[int, ...]) -> str:
    return ",".join(str(t) for t in taps)


def taps_origin(asked: tuple[int, int, int] | None, used: tuple[int, ...]) -> str:
    """Who chose the taps ``used``, and whether they are the published case's (how to get those when not)."""
    how = "fixed by --regulator-taps" if asked is not None else "chosen by OpenDSS regulator control"
    if tuple(used) == PUBLISHED_TAPS:
        return f"{how}: the published case's taps"
    published = _taps(PUBLISHED_TAPS)
    return f"{how}; not the published {published}: --regulator-taps {published} solves the published case"


def voltage_table(solution: Solution) -> str:
    """An aligned table: one row per bus, per phase |V| [pu] and angle [deg]."""
    head = f"{'bus':<10} {'kV LN':>7}" + "".join(f" {f'|V{p}| pu':>9} {f'ang{p} deg':>10}" for p in PHASES)
    lines = [head, "-" * len(head)]
    for bus in sorted(solution.bus_v):
        row = f"{bus:<10} {solution.base_kv_ln[bus]:>7.3f}"
        v = solution.v(bus)
        base = solution.base_kv_ln[bus] * 1000.0
        for p in PHASES:
            if p in v:
                row += f" {abs(v[p]) / base:>9.4f} {math.degrees(math.atan2(v[p].imag, v[p].real)):>10.2f}"
            else:
                row += f" {'':>9} {'':>10}"
        lines.append(row)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """The ``sim solve`` command, given argparse's namespace (config, regulator_taps, json)."""
    try:
        script = feeder_script(Path(args.config))
        solution, taps = solve_published(script, args.regulator_taps)
    except (SolveConfigError, FeederError) as err:
        print(f"sim solve: {err}", flush=True, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(solution.to_json()))
    else:
        print(f"feeder {script}")
        print("conditions: the published loads (load scale 1), PV sites at 0, capacitors in service, no fault")
        print(f"regulator taps a,b,c = {_taps(taps)} ({taps_origin(args.regulator_taps, taps)})")
        print(f"converged = {solution.converged}")
        print(voltage_table(solution))
    return 0 if solution.converged else 1
