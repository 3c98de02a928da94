"""The PQ worker process (agent/pq/worker.py): a real child process measuring a real wave stream on 127.0.0.1,
the agent's side checking every line it says, restarts and stops.

Expected values come from the signal's description (120 V, a dip to 70 % for 0.1 s), never from the code under
test.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import async_test, running_tasks, until

from agent.config import WaveformStreamConfig, load_config
from agent.points import Quality, Reading
from agent.pq.events import EventConfig
from agent.pq.worker import (
    PqWorker,
    PqWorkerError,
    event_from_wire,
    reading_from_wire,
    stream_from_wire,
    stream_to_wire,
)
from agent.store import StoreError, StoreInputError
from sim_hw.waveforms import WaveformDesc
from sim_hw.waveforms.stream import WaveformStreamServer

ROOT = Path(__file__).resolve().parent.parent
TICK = 1_767_225_600.0
UDIN = 120.0


class Collected:
    """The agent's two outlets: the reading sink and the store's add_event (which may be told to fail)."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.events: list[dict[str, Any]] = []
        self.fail_next: list[Exception] = []

    def __call__(self, readings: list[Reading]) -> None:
        self.readings.extend(readings)

    async def add_event(self, ts: float, kind: str, severity: str, source: str, text: str,
                        data: dict[str, Any] | None = None) -> None:  # fmt: skip
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.events.append({"ts": ts, "kind": kind, "severity": severity, "source": source, "text": text, "data": data})

    def points(self, point: str) -> list[Reading]:
        return [r for r in self.readings if r.point == point]


def stream_config(port: int, **kw: Any) -> WaveformStreamConfig:
    return WaveformStreamConfig(name="pq1", host="127.0.0.1", port=port, nominal_hz=60, lamp_v=120,
                                events=EventConfig(udin_v=UDIN), **kw)  # fmt: skip


def fake_child(script: str) -> list[str]:
    """A child that says what the script prints (after reading the agent's hello line)."""
    return [sys.executable, "-c", "import sys, json\nsys.stdin.readline()\n" + script]


# ---- the wire ---------------------------------------------------------------------------------------------------


def test_the_shipped_demo_streams_cross_the_wire_unchanged() -> None:
    config = load_config(ROOT / "config" / "agent-sim.toml")
    assert config.waveforms, "the demo's agent measures a waveform stream"
    for cfg in config.waveforms:
        wire = json.loads(json.dumps(stream_to_wire(cfg)))
        assert stream_from_wire(wire) == cfg


def test_a_stream_configuration_with_an_unknown_key_is_refused() -> None:
    wire = stream_to_wire(stream_config(1))
    with pytest.raises(PqWorkerError, match="allowed"):
        stream_from_wire({**wire, "colour": "red"})
    with pytest.raises(PqWorkerError):
        stream_from_wire({k: v for k, v in wire.items() if k != "events"})


@pytest.mark.parametrize(
    "item",
    [
        ["p", 1.0, 2.0, "V"],  # four fields
        ["", 1.0, 2.0, "V", "good"],  # no point
        ["p", float("nan"), 2.0, "V", "good"],  # a timestamp that is not a time
        ["p", "1.0", 2.0, "V", "good"],
        ["p", 1.0, True, "V", "good"],  # a bool is not a measurement
        ["p", 1.0, "120", "V", "good"],
        ["p", 1.0, 2.0, "V", "great"],  # not a quality
        {"point": "p"},
    ],
)
def test_a_reading_that_is_not_one_is_refused(item: Any) -> None:
    with pytest.raises(PqWorkerError):
        reading_from_wire(item)


def test_a_good_reading_keeps_its_fields_and_quality() -> None:
    r = reading_from_wire(["pq1.va.rms", 1.5, 120.25, "V", "flagged"])
    assert r == Reading("pq1.va.rms", 1.5, 120.25, "V", Quality.FLAGGED)
    assert reading_from_wire(["pq1.va.rms", 2, None, "V", "stale"]).value is None


def test_an_event_with_a_missing_or_extra_field_is_refused() -> None:
    ev = {"ts": 1.0, "kind": "pq_dip", "severity": "warning", "source": "pq1", "text": "t", "data": {"a": 1}}
    assert event_from_wire(ev).data == {"a": 1}
    for bad in ({k: v for k, v in ev.items() if k != "text"}, {**ev, "x": 1}, {**ev, "ts": float("inf")},
                {**ev, "data": [1]}, {**ev, "kind": 3}):  # fmt: skip
        with pytest.raises(PqWorkerError):
            event_from_wire(bad)


# ---- a real child on a real stream ------------------------------------------------------------------------------


@async_test
async def test_the_child_measures_the_stream_and_the_agent_takes_its_readings_and_events() -> None:
    d = WaveformDesc.from_dict({"nominal_hz": 60, "rate_hz": 3200.0, "v_rms": [UDIN] * 3, "t0": TICK - 30,
                                "events": [{"kind": "dip", "start_s": 2.0, "duration_s": 0.1, "magnitude_pct": 70.0,
                                            "phases": "a"}]})  # fmt: skip
    out = Collected()
    async with WaveformStreamServer(d, speed=math.inf, duration_s=12.0) as srv:
        worker = PqWorker([stream_config(srv.port)], out, out)
        async with running_tasks(worker.run()):
            await until(lambda: worker.status().get("pq1", {}).get("disconnects", 0) >= 1, 40, 0.1)
            pid = worker.pid
        assert pid is not None
        # cancelled: the child got SIGTERM and is gone (no orphan left measuring)
        await until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 10, 0.05)
    dips = [e for e in out.events if e["kind"] == "pq_dip"]
    assert len(dips) == 1, out.events
    assert abs(dips[0]["data"]["residual_pct"] - 70.0) <= 0.7 and abs(dips[0]["data"]["duration_s"] - 0.1) <= 1 / 60
    good = [r for r in out.points("pq1.va.rms") if r.quality == Quality.GOOD]
    assert good and all(abs(r.value - UDIN) < 0.05 and r.unit == "V" for r in good), good
    assert any(r.quality == Quality.FLAGGED for r in out.points("pq1.va.rms"))
    assert worker.stats.bad_lines == 0 and worker.stats.events_stored == 1
    assert worker.stats.readings == len(out.readings) > 0


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


@async_test
async def test_a_child_that_dies_is_reported_with_its_exit_code() -> None:
    worker = PqWorker([stream_config(1)], Collected(), Collected(), argv=fake_child("import os\nos._exit(3)"))
    with pytest.raises(PqWorkerError, match="exited with code 3"):
        await worker.run()
    assert worker.stats.starts == 1 and worker.stats.exits == 1 and worker.stats.last_exit_code == 3


@async_test
async def test_a_killed_child_raises_so_the_supervisor_restarts_it() -> None:
    worker = PqWorker([stream_config(1)], Collected(), Collected())
    task = asyncio.create_task(worker.run())
    await until(lambda: worker.status() != {}, 30, 0.05)  # the real child said its first status
    assert worker.pid is not None
    os.kill(worker.pid, 9)
    with pytest.raises(PqWorkerError, match="code -9"):
        await task


def test_the_child_stops_by_itself_when_the_agent_is_gone() -> None:
    # The agent SIGKILLed: the child's stdin closes, and it must not keep measuring for no one.
    proc = subprocess.Popen([sys.executable, "-m", "agent.pq.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)  # fmt: skip
    hello = {"version": 1, "streams": [stream_to_wire(stream_config(1))]}
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(hello).encode() + b"\n")
    proc.stdin.close()
    assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    assert b"pq_worker_parent_gone" in (proc.stderr.read() if proc.stderr else b"")


def test_the_child_refuses_a_hello_of_another_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "agent.pq.worker"], input=b'{"version": 99, "streams": []}\n',
                          capture_output=True, cwd=ROOT, timeout=30)  # fmt: skip
    assert proc.returncode == 2 and b"pq_worker_bad_hello" in proc.stderr


@async_test
async def test_lines_that_are_not_readings_are_counted_and_never_reach_the_sink() -> None:
    script = (
        "print('garbage')\n"
        "print(json.dumps({'readings': [['p', 'nan', 1.0, 'V', 'good']]}))\n"  # ts a string
        "print(json.dumps({'readings': [['p', 1.0, 1.0, 'V', 'good']], 'event': {}}))\n"  # two messages in one
        "print(json.dumps({'reboot': 1}))\n"
        "print(json.dumps({'readings': [['pq1.va.rms', 5.0, 119.5, 'V', 'good']]}))\n"
        "sys.stdout.flush()\n"
    )
    out = Collected()
    worker = PqWorker([stream_config(1)], out, out, argv=fake_child(script))
    with pytest.raises(PqWorkerError, match="code 0"):
        await worker.run()
    assert out.readings == [Reading("pq1.va.rms", 5.0, 119.5, "V", Quality.GOOD)]
    assert worker.stats.bad_lines == 4


EVENTS = [{"ts": float(i), "kind": "pq_dip", "severity": "warning", "source": "pq1", "text": f"e{i}", "data": None}
          for i in range(4)]  # fmt: skip
SAY_EVENTS = "".join(f"print(json.dumps({{'event': {e!r}}}))\n" for e in EVENTS)


@async_test
async def test_events_wait_in_order_while_the_store_fails() -> None:
    out = Collected()
    out.fail_next = [StoreError("disk I/O error"), StoreError("disk I/O error")]  # e0, then e0 again when e1 comes
    worker = PqWorker([stream_config(1)], out, out, argv=fake_child(SAY_EVENTS))
    with pytest.raises(PqWorkerError):
        await worker.run()
    assert [e["text"] for e in out.events] == ["e0", "e1", "e2", "e3"]
    assert worker.stats.events_stored == 4 and worker.stats.events_refused == 0


@async_test
async def test_an_event_the_store_refuses_is_dropped_alone() -> None:
    out = Collected()
    out.fail_next = [StoreInputError("text too long")]
    worker = PqWorker([stream_config(1)], out, out, argv=fake_child(SAY_EVENTS))
    with pytest.raises(PqWorkerError):
        await worker.run()
    assert [e["text"] for e in out.events] == ["e1", "e2", "e3"]
    assert worker.stats.events_refused == 1 and worker.stats.events_stored == 3
