"""The commands benchmark's site file (benchmarks/commands.py ``agent_site``): commandrig's site text with the
envelope's limits raised still parses, and the raised limits are the ones in force; a change of commandrig's text
that the benchmark's edits no longer find fails here rather than in a benchmark run."""

from __future__ import annotations

from pathlib import Path

from helpers.benchmod import load_benchmark
from helpers.commandrig import make_keys

from agent.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def _benchmark():
    return load_benchmark("commands.py")


def test_the_benchmark_site_raises_the_envelope_limits_so_no_command_is_refused(tmp_path: Path) -> None:
    bench = _benchmark()
    bench_path = bench.bench_copy(tmp_path)
    make_keys(tmp_path / "agent")
    config = load_config(bench.agent_site(bench_path, tmp_path / "agent", "mqtt://127.0.0.1:1"))
    assert config.control is not None and config.commands is not None
    env = config.control.envelope
    assert env.min_command_interval_s == 0
    assert env.max_commands_per_hour == 3600
    (group,) = config.control.der
    assert group.devices == (bench.DEV,) and group.setpoint_changes_per_hour == 3600
    assert len(set(bench.VALUES)) == len(bench.VALUES) >= 40, "no value repeats within a snapshot's lag"
