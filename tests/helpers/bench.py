"""A private copy of the shipped IEEE 13-node bench (config/sim-ieee13.toml) for a test: free ports (never the
demo's), the pty link in the test's folder, absolute paths, a fixed start time."""

from __future__ import annotations

import re
from pathlib import Path

from helpers.net import free_port
from sim_hw.config import BenchConfig, load_bench_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "sim-ieee13.toml"
NOON = "2026-06-21T12:00:00Z"  # solar noon (the bench's UTC is solar time): clear-sky irradiance 1.0 pu


def _sub(pattern: str, repl: str, text: str, count: int) -> str:
    out, n = re.subn(pattern, repl, text)
    assert n == count, f"the shipped config changed: {pattern!r} matched {n} times, expected {count}"
    return out


def _free_ports(text: str) -> tuple[str, set[int]]:
    """``text`` with every ``port = N`` line on its own free loopback port, and the ports given."""
    used: set[int] = set()

    def port(_: re.Match[str]) -> str:
        p = free_port()
        while p in used:
            p = free_port()
        used.add(p)
        return f"port = {p}"

    return re.sub(r"(?m)^port = \d+", port, text), used


def free_ports_in(path: Path) -> None:
    """Give every ``port = N`` line of a bench copy a new free loopback port (a bench whose port was taken)."""
    path.write_text(_free_ports(path.read_text())[0])


def ieee13_copy(
    tmp_path: Path,
    *,
    scenario: str | None = None,
    start: str = NOON,
    irradiance: str = "clear",
    edit: tuple[str, str] | None = None,
) -> Path:
    """config/sim-ieee13.toml with free ports, a tmp pty link, absolute paths, a fixed start, the daily profiles'
    ``irradiance`` day, optionally a scenario and one text ``edit`` (old, new) of the shipped file (old must be in
    it)."""
    text = SHIPPED.read_text()
    if edit is not None:
        assert edit[0] in text, f"the shipped config has no {edit[0]!r}"
        text = text.replace(*edit)
    text, used = _free_ports(text)
    assert len(used) == 11, "the shipped bench has 8 TCP devices, 2 PMUs and a waveform stream"
    text = _sub(r'map = "maps/', f'map = "{ROOT / "config" / "maps"}/', text, 7)
    text = _sub(r'dss = "ieee13/IEEE13.dss"',
                f'dss = "{ROOT / "config" / "ieee13" / "IEEE13.dss"}"\nirradiance = "{irradiance}"\nload = "default"',
                text, 1)  # fmt: skip
    text = _sub(r'link = "\.\./run/rtu-bus1"', f'link = "{tmp_path / "rtu-bus1"}"', text, 1)
    text = _sub(r'description = "waveforms/', f'description = "{ROOT / "config" / "waveforms"}/', text, 1)
    # the devices' tests need a sun they know: the daily shapes' clear bell (1.0 pu at solar noon) or none, and
    # the load multiplier of the hour (docs/feeder.md, "Profiles"); the shipped bench's realistic profiles are
    # tested on their own (tests/test_sim_profiles_bdew.py) and by the demo
    text = _sub(r'(?m)^source = "bdew"', 'source = "daily"', text, 1)
    text = _sub(r"(?m)^seed = 1$", f'seed = 1\nstart = "{start}"', text, 1)
    if scenario is not None:
        (tmp_path / "scenario.toml").write_text(scenario)
        text = 'scenario = "scenario.toml"\n' + text  # a top-level key must come before the first table
    path = tmp_path / "sim-ieee13.toml"
    path.write_text(text)
    return path


def bench_config(tmp_path: Path, edit: tuple[str, str] | None = None, *, irradiance: str = "clear") -> BenchConfig:
    """The shipped IEEE 13-node bench, privately copied (:func:`ieee13_copy`), starting at solar noon."""
    return load_bench_config(ieee13_copy(tmp_path, edit=edit, irradiance=irradiance))


DAY = ROOT / "config" / "sim-ieee13-day.toml"
DAY_START = "2026-04-05T04:00:00Z"


def day_copy(tmp_path: Path, *, start: str | None = None, edit: tuple[str, str] | None = None) -> Path:
    """config/sim-ieee13-day.toml with free ports, a tmp pty link and absolute paths; optionally another ``start``
    (the day's profiles follow the time of day) and one text ``edit`` (old, new) of the shipped file."""
    text = DAY.read_text()
    if edit is not None:
        assert edit[0] in text, f"the shipped day has no {edit[0]!r}"
        text = text.replace(*edit)
    text, used = _free_ports(text)
    assert len(used) == 12, "the shipped day has 11 TCP devices and a PMU"
    text = _sub(r'map = "maps/', f'map = "{ROOT / "config" / "maps"}/', text, 10)
    text = _sub(r'dss = "ieee13/IEEE13.dss"', f'dss = "{ROOT / "config" / "ieee13" / "IEEE13.dss"}"', text, 1)
    text = _sub(r'link = "\.\./run/rtu-day-bus1"', f'link = "{tmp_path / "rtu-day-bus1"}"', text, 1)
    if start is not None:
        text = _sub(f'start = "{DAY_START}"', f'start = "{start}"', text, 1)
    path = tmp_path / "sim-ieee13-day.toml"
    path.write_text(text)
    return path
