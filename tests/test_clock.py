"""The injected clock: the system clock in the field, a scaled one anchored on the bench's day for bench runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers.aio import async_test

from agent.clock import ClockConfig, ScaledClock, SystemClock, make_clock, parse_clock
from protocols.configcheck import Checker

START = 1_781_913_600.0  # 2026-06-20T00:00:00Z


class FakeWall:
    def __init__(self, wall: float, mono: float = 100.0) -> None:
        self.wall, self.mono = wall, mono

    def advance(self, s: float) -> None:
        self.wall += s
        self.mono += s


def test_a_scaled_clock_reads_its_start_then_runs_speed_times_faster_than_the_wall() -> None:
    w = FakeWall(1_700_000_000.0)
    clock = ScaledClock(60, START, wall=lambda: w.wall, mono=lambda: w.mono)
    assert clock.time() == START and clock.monotonic() == 0.0
    w.advance(2.5)
    assert clock.time() == START + 150.0
    assert clock.monotonic() == 150.0
    assert clock.speed == 60


def test_a_wall_clock_step_does_not_move_the_scaled_clock() -> None:
    """NTP stepping the wall clock back an hour must not step the bench's day back 60 hours."""
    w = FakeWall(1_700_000_000.0)
    clock = ScaledClock(60, START, wall=lambda: w.wall, mono=lambda: w.mono)
    w.wall -= 3600.0
    assert clock.time() == START


def test_wall_start_puts_an_agent_started_later_on_the_bench_clock() -> None:
    """The bench started 3 wall seconds before the agent: at speed 60 the agent's clock is 180 s into the day."""
    w = FakeWall(1_700_000_003.0)
    clock = ScaledClock(60, START, wall_start=1_700_000_000.0, wall=lambda: w.wall, mono=lambda: w.mono)
    assert clock.time() == START + 180.0


@async_test
async def test_sleep_on_a_scaled_clock_waits_the_scaled_time() -> None:
    clock = ScaledClock(100.0)
    t0 = time.monotonic()
    m0 = clock.monotonic()
    await clock.sleep(20.0)  # 0.2 s of wall time
    wall = time.monotonic() - t0
    assert 0.15 <= wall < 5.0
    assert clock.monotonic() - m0 >= 20.0 * 0.75


def test_make_clock_is_the_system_clock_without_a_clock_section() -> None:
    assert isinstance(make_clock(None), SystemClock)
    assert isinstance(make_clock(ClockConfig()), SystemClock)
    assert isinstance(make_clock(ClockConfig(speed=60.0)), ScaledClock)
    assert abs(SystemClock().time() - time.time()) < 1.0


def _parse(raw: dict) -> tuple[ClockConfig, dict[str, str]]:
    c = Checker(Path("."))
    cfg = parse_clock(c, raw)
    return cfg, {i.key: str(i) for i in c.issues}


def test_the_clock_section_takes_an_rfc3339_start_as_string_or_toml_datetime() -> None:
    import tomllib

    cfg, issues = _parse({"speed": 60, "start": "2026-06-20T00:00:00Z"})
    assert issues == {} and cfg == ClockConfig(speed=60.0, start=START)
    doc = tomllib.loads("speed = 60\nstart = 2026-06-20T02:00:00+02:00\n")
    cfg, issues = _parse(doc)
    assert issues == {} and cfg.start == START


@pytest.mark.parametrize(
    ("raw", "key", "text"),
    [
        ({"speed": 0}, "clock.speed", "must be in 0.001..10000"),
        ({"speed": "fast"}, "clock.speed", "must be a number"),
        ({"start": "2026-06-20T00:00:00"}, "clock.start", "UTC instant with its offset"),
        ({"start": "yesterday"}, "clock.start", "UTC instant with its offset"),
        ({"wall_start": "2026-06-20T00:00:00Z"}, "clock.wall_start", "needs clock.start"),
        ({"sped": 60}, "clock.sped", "unknown key"),
    ],
)
def test_a_bad_clock_section_names_the_key_the_value_and_what_is_allowed(raw: dict, key: str, text: str) -> None:
    _, issues = _parse(raw)
    assert key in issues and text in issues[key], issues
