"""The PQ worker process (agent/pq/worker.py): a real child process measuring a real wave stream on 127.0.0.1,
the agent's side checking every line it says, restarts and stops.

Expected values come from the signal's description (120 V, a dip to 70 % for 0.1 s), never from the code under
test.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.aio import async_test, running_tasks, until

from agent.config import load_config
from agent.points import Quality, Reading
from agent.pq.config import WaveformStreamConfig
from agent.pq.events import EventConfig
from agent.pq.worker import (
    MAX_UNSENT_BYTES,
    PqWorker,
    PqWorkerError,
    _PipeOut,
    event_from_wire,
    reading_from_wire,
    stream_from_wire,
    stream_to_wire,
)
from agent.runtime import Supervisor
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


@pytest.mark.integration
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


@pytest.mark.integration
@async_test
async def test_a_child_that_dies_is_reported_with_its_exit_code() -> None:
    worker = PqWorker([stream_config(1)], Collected(), Collected(), argv=fake_child("import os\nos._exit(3)"))
    with pytest.raises(PqWorkerError, match="exited with code 3"):
        await worker.run()
    assert worker.stats.starts == 1 and worker.stats.exits == 1 and worker.stats.last_exit_code == 3


@pytest.mark.integration
@async_test
async def test_a_killed_child_raises_so_the_supervisor_restarts_it() -> None:
    worker = PqWorker([stream_config(1)], Collected(), Collected())
    task = asyncio.create_task(worker.run())
    await until(lambda: worker.status() != {}, 30, 0.05)  # the real child said its first status
    assert worker.pid is not None
    os.kill(worker.pid, 9)
    with pytest.raises(PqWorkerError, match="code -9"):
        await task


@pytest.mark.integration
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


@pytest.mark.integration
def test_the_child_refuses_a_hello_of_another_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "agent.pq.worker"], input=b'{"version": 99, "streams": []}\n',
                          capture_output=True, cwd=ROOT, timeout=30)  # fmt: skip
    assert proc.returncode == 2 and b"pq_worker_bad_hello" in proc.stderr


@pytest.mark.integration
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
    assert worker.stats.bad_lines == 3 and worker.stats.readings_refused == 1  # the bad ts: refused alone


EVENTS = [{"ts": float(i), "kind": "pq_dip", "severity": "warning", "source": "pq1", "text": f"e{i}", "data": None}
          for i in range(4)]  # fmt: skip
SAY_EVENTS = "".join(f"print(json.dumps({{'event': {e!r}}}))\n" for e in EVENTS)


@pytest.mark.integration
@async_test
async def test_events_wait_in_order_while_the_store_fails() -> None:
    out = Collected()
    out.fail_next = [StoreError("disk I/O error"), StoreError("disk I/O error")]  # e0, then e0 again when e1 comes
    worker = PqWorker([stream_config(1)], out, out, argv=fake_child(SAY_EVENTS))
    with pytest.raises(PqWorkerError):
        await worker.run()
    assert [e["text"] for e in out.events] == ["e0", "e1", "e2", "e3"]
    assert worker.stats.events_stored == 4 and worker.stats.events_refused == 0


@pytest.mark.integration
@async_test
async def test_an_event_the_store_refuses_is_dropped_alone() -> None:
    out = Collected()
    out.fail_next = [StoreInputError("text too long")]
    worker = PqWorker([stream_config(1)], out, out, argv=fake_child(SAY_EVENTS))
    with pytest.raises(PqWorkerError):
        await worker.run()
    assert [e["text"] for e in out.events] == ["e1", "e2", "e3"]
    assert worker.stats.events_refused == 1 and worker.stats.events_stored == 3


# ---- the process boundary: events stored once, a silent or babbling child, a stop in the middle --------------


class SlowStore(Collected):
    """An event store whose writes take ``hold_s`` and, like AsyncStore, still land when the caller is cancelled."""

    def __init__(self, hold_s: float) -> None:
        super().__init__()
        self.hold_s = hold_s
        self.calls = 0

    async def add_event(self, ts: float, kind: str, severity: str, source: str, text: str,
                        data: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.calls += 1
        await asyncio.shield(self._write(ts, kind, severity, source, text, data))

    async def _write(self, *args: Any) -> None:
        await asyncio.sleep(self.hold_s)
        await Collected.add_event(self, *args)


@pytest.mark.integration
@async_test
async def test_the_retry_task_never_stores_an_event_the_reader_is_storing(monkeypatch: pytest.MonkeyPatch) -> None:
    # A slow store (an SD card): the retry task woke while the reader's write of e0 was still in the thread.
    monkeypatch.setattr("agent.events.RETRY_S", 0.02)
    store = SlowStore(hold_s=0.5)
    worker = PqWorker(
        [stream_config(1)], store, store, argv=fake_child(f"print(json.dumps({{'event': {EVENTS[0]!r}}}))")
    )
    with pytest.raises(PqWorkerError):
        await worker.run()
    assert [e["text"] for e in store.events] == ["e0"] and store.calls == 1


@pytest.mark.integration
@async_test
async def test_an_event_being_stored_when_the_agent_stops_is_stored_once() -> None:
    # AsyncStore finishes a write whose caller was cancelled; the stop must not write the same event again.
    store = SlowStore(hold_s=0.5)
    script = f"print(json.dumps({{'event': {EVENTS[0]!r}}}), flush=True)\nimport time\ntime.sleep(60)"
    worker = PqWorker([stream_config(1)], store, store, argv=fake_child(script))
    task = asyncio.create_task(worker.run())
    await until(lambda: store.calls == 1, 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [e["text"] for e in store.events] == ["e0"] and store.calls == 1


@pytest.mark.integration
@async_test
async def test_a_child_that_says_nothing_is_killed_and_restarted() -> None:
    # Alive but silent (a blocked loop): the child reports its status every second, so silence is a fault.
    worker = PqWorker([stream_config(1)], Collected(), Collected(), argv=fake_child("import time\ntime.sleep(60)"),
                      silent_after_s=1.0)  # fmt: skip
    with pytest.raises(PqWorkerError, match="said nothing"):
        await worker.run()
    assert worker.stats.exits == 1 and worker.stats.last_exit_code == -9 and worker.pid is None


@pytest.mark.integration
@async_test
async def test_an_over_long_line_is_refused_whole_and_its_tail_is_not_taken() -> None:
    # Over LINE_LIMIT without a newline, StreamReader.readline clears its buffer and the rest of the line came
    # back as the next line: here spaces and a valid message, which the agent took.
    script = (
        "sys.stdout.write(' ' * (8 * 1024 * 1024 + 1_000_000))\n"
        "print(json.dumps({'readings': [['pq1.tail', 1.0, 1.0, 'V', 'good']]}))\n"
        "print(json.dumps({'readings': [['pq1.va.rms', 5.0, 119.5, 'V', 'good']]}))\n"
    )
    out = Collected()
    worker = PqWorker([stream_config(1)], out, out, argv=fake_child(script))
    with pytest.raises(PqWorkerError, match="code 0"):
        await worker.run()
    assert out.readings == [Reading("pq1.va.rms", 5.0, 119.5, "V", Quality.GOOD)]
    assert worker.stats.bad_lines == 1


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_reading_that_is_not_finite_is_refused(value: float) -> None:
    # json.loads takes NaN and Infinity; the store refuses them, and control reads the snapshot.
    with pytest.raises(PqWorkerError, match="finite"):
        reading_from_wire(json.loads(json.dumps(["pq1.va.thd", 1.0, value, "%", "good"])))


@pytest.mark.integration
@async_test
async def test_one_bad_reading_does_not_lose_the_others_of_its_line() -> None:
    script = "print(json.dumps({'readings': [['pq1.va.rms', 5.0, 119.5, 'V', 'good'], ['pq1.va.thd', 5.0, float('nan'), '%', 'good'], ['pq1.vb.rms', 5.0, 120.5, 'V', 'good']]}))\n"  # noqa: E501
    out = Collected()
    worker = PqWorker([stream_config(1)], out, out, argv=fake_child(script))
    with pytest.raises(PqWorkerError):
        await worker.run()
    assert out.readings == [Reading("pq1.va.rms", 5.0, 119.5, "V"), Reading("pq1.vb.rms", 5.0, 120.5, "V")]
    assert worker.stats.readings_refused == 1 and worker.stats.readings == 2


@async_test
async def test_an_event_cancelled_while_waiting_for_the_pipe_is_not_sent() -> None:
    # The child's event store: a cancelled add_event must not have written the event, since the stream keeps it
    # and sends it again on its way out (the agent stored it twice).
    from agent.pq.worker import _PipeOut

    r, w = os.pipe()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(w, "wb"))
    out = _PipeOut(asyncio.StreamWriter(transport, protocol, None, loop))
    out.send({"status": {"pad": "x" * 300_000}})  # the agent reads nothing: pipe full, buffer over its high mark
    task = asyncio.create_task(out.add_event(1.0, "pq_dip", "warning", "pq1", "cancelled-event", None))
    await asyncio.sleep(0.05)
    assert not task.done()  # waiting for room
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    transport.close()  # flushes what was written, then EOF
    said = await asyncio.to_thread(_read_to_eof, r)
    assert b'"pad"' in said and b"cancelled-event" not in said


def _read_to_eof(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
    os.close(fd)
    return b"".join(parts)


@pytest.mark.integration
def test_the_child_sends_everything_before_it_exits(tmp_path: Path) -> None:
    # The agent is slow to read when the child stops (its store thread busy): the child must not exit with
    # lines still in its buffer. The pipe is full from the start (4 kB, filled by the test), so every line the
    # child writes waits in its buffer; the test reads only once the child says it is stopping (or exited).
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(w, False)
    filler = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            filler += os.write(w, b" ")
    d = WaveformDesc.from_dict({"nominal_hz": 60, "rate_hz": 3200.0, "v_rms": [UDIN] * 3, "t0": TICK})
    with _served(d) as port:
        proc = subprocess.Popen([sys.executable, "-m", "agent.pq.worker"], stdin=subprocess.PIPE, stdout=w,
                                stderr=subprocess.PIPE, cwd=ROOT)  # fmt: skip
        os.close(w)
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(json.dumps({"version": 1, "streams": [stream_to_wire(stream_config(port))]}).encode() + b"\n")
        proc.stdin.flush()
        log = _stderr_until(proc, b"pq_stream_connected")
        assert b"pq_stream_connected" in log, log
        proc.send_signal(signal.SIGTERM)
        log += _stderr_until(proc, b"pq_worker_stopping")
        said = _read_to_eof(r)
        assert proc.wait(30) == 0, log
    lines = said[filler:].splitlines()
    assert lines and all(json.loads(line) for line in lines), said[filler:][-300:]
    last = json.loads(lines[-1])
    assert last["status"]["pq1"]["connected"] is False and last["status"]["pq1"]["connects"] == 1, last


def _stderr_until(proc: subprocess.Popen[bytes], marker: bytes) -> bytes:
    assert proc.stderr is not None
    seen = b""
    while marker not in seen:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    return seen


@contextlib.contextmanager
def _served(d: WaveformDesc) -> Iterator[int]:
    """A real wave stream (real time, long) served from a thread's event loop, for a test that blocks."""
    ready: queue.Queue[int] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        async with WaveformStreamServer(d, speed=1.0, duration_s=600.0) as srv:
            ready.put(srv.port)
            while not stop.is_set():
                await asyncio.sleep(0.05)

    t = threading.Thread(target=asyncio.run, args=(serve(),))
    t.start()
    try:
        yield ready.get(timeout=30)
    finally:
        stop.set()
        t.join(30)


@pytest.mark.integration
@async_test
async def test_the_pq_worker_stops_within_the_supervisors_wait_and_its_last_event_is_stored() -> None:
    # A child that does not exit on SIGTERM (it says one last event): the worker must kill it and store that
    # event inside the supervisor's stop wait; with a grace equal to that wait the stop left it running while
    # the writer stopped and the store closed.
    script = ("import signal, time\n"
              f"signal.signal(signal.SIGTERM, lambda *a: print(json.dumps({{'event': {EVENTS[1]!r}}}), flush=True))\n"
              "print(json.dumps({'status': {'ready': {}}}), flush=True)\n"
              "while True: time.sleep(1)\n")  # fmt: skip
    store = Collected()
    worker = PqWorker([stream_config(1)], store, store, argv=fake_child(script))
    sup = Supervisor()
    sup.add("pq-worker", worker.run, stage=3, critical=False)
    sup.start()
    await until(lambda: worker.status() == {"ready": {}}, 30)  # its SIGTERM handler is in place
    pid = worker.pid
    await sup.stop(down_to_stage=3)  # the agent's first stop: pollers and the PQ worker, before the writer
    (spec,) = sup._specs
    assert spec.task is not None and spec.task.done()
    assert [e["text"] for e in store.events] == ["e1"]
    assert pid is not None and not Path(f"/proc/{pid}").exists()  # killed and reaped


# ---- what the agent shows when the child is gone, and the child's own counters ----------------------------------


@pytest.mark.integration
@async_test
async def test_after_the_child_exits_no_stream_is_shown_connected() -> None:
    script = (
        "print(json.dumps({'status': {'pq1': {'connected': True, 'samples': 5}}}))\n"
        "print(json.dumps({'worker': {'readings_dropped': 7}}))\n"
        "print(json.dumps({'worker': {'readings_dropped': 'many'}}))\n"  # not a counter: refused, the 7 stays
    )
    worker = PqWorker([stream_config(1)], Collected(), Collected(), argv=fake_child(script))
    with pytest.raises(PqWorkerError):
        await worker.run()
    assert worker.status() == {"pq1": {"connected": False, "samples": 5}}
    assert worker.worker_status()["child"] == {"readings_dropped": 7} and worker.stats.bad_lines == 1


@async_test
async def test_readings_the_agent_does_not_read_are_dropped_and_counted_past_the_limit() -> None:
    # A real pipe nobody reads: the child's readings must not pile up in its memory without bound.
    r_fd, w_fd = os.pipe()
    loop = asyncio.get_running_loop()
    try:
        with open(w_fd, "wb", buffering=0, closefd=False) as w_file:
            transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, w_file)
            out = _PipeOut(asyncio.StreamWriter(transport, protocol, None, loop))
            batch = [Reading(f"pq1.va.h{i}", 1.0, 1.0, "%", Quality.GOOD) for i in range(2000)]
            calls = 0
            while transport.get_write_buffer_size() <= MAX_UNSENT_BYTES:
                out(batch)
                calls += 1
                assert calls < 10_000
            held = transport.get_write_buffer_size()
            assert out.readings_dropped == 0
            out(batch)
            out(batch)
            assert out.readings_dropped == 2 * len(batch) and transport.get_write_buffer_size() == held
            transport.abort()
    finally:
        os.close(r_fd)
        os.close(w_fd)
