"""The write queue between pollers and store, and the writer's handling of every store failure: nothing
taken is lost, energy is never dropped, and what the store could not take survives the process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers.aio import arun, until

from agent.points import Quality, Reading, Stream
from agent.service import AgentService
from agent.store import AsyncStore, Store, StoreError, StoreFullError, StoreInputError
from agent.writequeue import WriteQueue
from agent.writer import StoreWriter


def tel(i: int) -> Reading:
    return Reading(f"m.v{i}", 1000.0 + i, 120.0 + i, "V")


def nrg(i: int) -> Reading:
    return Reading(f"m.e{i}", 1000.0 + i, 5000 + i, "Wh", Quality.GOOD, Stream.ENERGY)


def test_full_queue_drops_oldest_telemetry_only_and_counts_it() -> None:
    q = WriteQueue(max_readings=5)
    q.put([nrg(0), tel(1), nrg(2), tel(3), tel(4)])
    q.put([tel(5), nrg(6)])
    assert q.dropped == 2
    batch = q.take()
    assert [r.point for r in batch] == ["m.e0", "m.e2", "m.e6", "m.v4", "m.v5"]
    assert len(q) == 0


def test_energy_is_kept_even_past_the_bound() -> None:
    q = WriteQueue(max_readings=2)
    q.put([nrg(i) for i in range(4)])
    assert len(q) == 4 and q.dropped == 0


def test_requeue_puts_readings_back_at_the_head_in_order() -> None:
    q = WriteQueue(max_readings=100)
    q.put([tel(3), nrg(3)])
    q.requeue([nrg(1), tel(1), nrg(2), tel(2)])
    assert [r.point for r in q.take()] == ["m.e1", "m.e2", "m.e3", "m.v1", "m.v2", "m.v3"]


def test_spilled_readings_survive_the_process(tmp_path: Path) -> None:
    path = tmp_path / "agent.db.unsaved.jsonl"
    q = WriteQueue(max_readings=100)
    q.put([nrg(1), tel(2), Reading("m.s", 3.5, None, "V", Quality.STALE)])
    assert q.spill(path) == 3 and len(q) == 0
    path.write_text(path.read_text() + "not json\n")
    # the unreadable line is logged and skipped; the file stays until the agent has committed what it read
    assert WriteQueue.read_spilled(path) == [nrg(1), tel(2), Reading("m.s", 3.5, None, "V", Quality.STALE)]
    assert path.exists() and WriteQueue.read_spilled(tmp_path / "absent.jsonl") is None


class _Harness:
    """The store writer against a real Store, with one store call made to fail as asked."""

    def __init__(self, tmp_path: Path, mocker, fail_with: list[BaseException | None]) -> None:  # noqa: ANN001
        self.store = Store(tmp_path / "agent.db", "s1", 64 * 1024 * 1024)
        real = self.store.add_readings
        outcomes = iter(fail_with)

        def add_readings(readings):  # noqa: ANN001, ANN202
            err = next(outcomes, None)
            if err is not None:
                raise err
            return real(readings)

        mocker.patch.object(self.store, "add_readings", side_effect=add_readings)
        self.writer = StoreWriter(AsyncStore(self.store), tmp_path / "agent.db.unsaved.jsonl", max_queued=1000)
        self.service = AgentService.__new__(AgentService)
        self.service.store = self.writer.store

    def stored(self) -> list[str]:
        return [row[0] for row in self.store.conn.execute("SELECT point FROM readings ORDER BY id")]


def test_disk_full_keeps_the_whole_batch_for_the_next_try(tmp_path: Path, mocker) -> None:  # noqa: ANN001
    # SQLite's "database or disk is full" reaches the writer as a StoreFullError naming no reading:
    # the call was rolled back whole, so the whole batch must wait for the next try.
    h = _Harness(tmp_path, mocker, [StoreFullError("disk full")])
    h.writer.queue.put([tel(1), nrg(2)])
    with pytest.raises(StoreFullError):
        arun(h.writer.flush())
    assert len(h.writer.queue) == 2
    assert arun(h.writer.flush()) == 2
    assert sorted(h.stored()) == ["m.e2", "m.v1"]


def test_store_full_of_energy_keeps_only_the_rejected_energy(tmp_path: Path, mocker) -> None:  # noqa: ANN001
    h = _Harness(tmp_path, mocker, [StoreFullError("full of energy", rejected=[nrg(2)])])
    h.writer.queue.put([tel(1), nrg(2)])
    with pytest.raises(StoreFullError):
        arun(h.writer.flush())
    assert h.writer.queue.take() == [nrg(2)]  # the telemetry was dropped and counted by the store


def test_one_bad_reading_does_not_hold_back_the_others(tmp_path: Path, mocker) -> None:  # noqa: ANN001
    h = _Harness(tmp_path, mocker, [StoreInputError("bad"), None, StoreInputError("bad"), None])
    h.writer.queue.put([tel(1), tel(2), tel(3)])
    assert arun(h.writer.flush()) == 2
    assert h.stored() == ["m.v1", "m.v3"] and h.writer.refused == 1


def test_a_store_error_midway_one_by_one_requeues_the_rest(tmp_path: Path, mocker) -> None:  # noqa: ANN001
    h = _Harness(tmp_path, mocker, [StoreInputError("bad"), None, StoreError("disk I/O error")])
    h.writer.queue.put([tel(1), tel(2), tel(3), tel(4)])
    with pytest.raises(StoreError):
        arun(h.writer.flush())
    assert h.stored() == ["m.v1"]
    assert [r.point for r in h.writer.queue.take()] == ["m.v2", "m.v3", "m.v4"]


def test_a_backlog_goes_to_the_store_in_bounded_calls_and_a_refused_call_waits_in_order(
    tmp_path: Path,
    mocker,  # noqa: ANN001
) -> None:
    # A store short of room refuses a call whole; the writer must not offer the whole (growing) backlog as one
    # call again and again: at most STORE_CALL_MAX readings a call, the refused call and the rest kept in order.
    mocker.patch("agent.writer.STORE_CALL_MAX", 2)
    h = _Harness(tmp_path, mocker, [None, StoreFullError("disk full")])
    sizes: list[int] = []
    inner = h.store.add_readings
    mocker.patch.object(h.store, "add_readings", side_effect=lambda rs: (sizes.append(len(rs)), inner(rs))[1])
    h.writer.queue.put([tel(1), tel(2), nrg(3), tel(4), tel(5)])
    with pytest.raises(StoreFullError):
        arun(h.writer.flush())
    # the queue hands energy first (its own lane), then telemetry in order
    assert h.stored() == ["m.e3", "m.v1"]
    assert [r.point for r in h.writer.queue.take()] == ["m.v2", "m.v4", "m.v5"]
    assert sizes == [2, 2]


def test_what_the_store_refuses_as_the_writer_stops_is_spilled_and_committed_at_the_next_start(
    tmp_path: Path,
    mocker,  # noqa: ANN001
) -> None:
    """The stopped writer's last flush is refused (a full disk): every queued reading goes to the spill file,
    and the next writer commits it before anything else and only then removes the file."""
    h = _Harness(tmp_path, mocker, [StoreFullError("disk full")])
    h.writer.queue.put([tel(1), nrg(2)])

    async def stop_the_writer() -> None:
        task = asyncio.create_task(h.writer.run())
        await asyncio.sleep(0)  # running: waiting for its first flush
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    arun(stop_the_writer())
    assert h.stored() == [] and len(h.writer.queue) == 0
    assert WriteQueue.read_spilled(h.writer.spill_path) == [nrg(2), tel(1)]
    after_restart = StoreWriter(h.writer.store, h.writer.spill_path)
    arun(after_restart.commit_unsaved())
    assert h.stored() == ["m.e2", "m.v1"] and len(after_restart.queue) == 0
    assert not h.writer.spill_path.exists()


def test_cancelled_writer_still_lands_the_batch_it_took(tmp_path: Path) -> None:
    """On shutdown the writer is cancelled while its write may still wait for the store's thread."""
    store = Store(tmp_path / "agent.db", "s1", 64 * 1024 * 1024)
    astore = AsyncStore(store)
    release = asyncio.Event()

    async def go() -> None:
        loop = asyncio.get_running_loop()
        blocker = loop.create_future()

        def hold_the_thread() -> None:
            asyncio.run_coroutine_threadsafe(_wait(release), loop).result()
            loop.call_soon_threadsafe(blocker.set_result, None)

        held = asyncio.ensure_future(astore._run(hold_the_thread))
        await asyncio.sleep(0.05)
        writer = asyncio.ensure_future(astore.add_readings([nrg(1), tel(2)]))
        await asyncio.sleep(0.05)
        writer.cancel()  # the write is queued behind hold_the_thread, not started
        release.set()
        await held
        await astore.aclose()

    async def _wait(event: asyncio.Event) -> None:
        await event.wait()

    arun(go())
    reopened = Store(tmp_path / "agent.db", "s1", 64 * 1024 * 1024)
    assert reopened.stats().readings_taken == 2
    reopened.close()


def test_the_limit_task_outlives_a_store_error(tmp_path: Path, mocker) -> None:  # noqa: ANN001
    # A failing enforce_limit (the disk refused a write) must not end the task: restarted by the supervisor it
    # would sit in backoff and stop the watchdog's pings, so systemd would restart the whole agent.
    mocker.patch("agent.service.LIMIT_CHECK_INTERVAL_S", 0.01)
    h = _Harness(tmp_path, mocker, [])
    calls: list[int] = []

    def enforce_limit() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise StoreError("disk I/O error")

    mocker.patch.object(h.store, "enforce_limit", side_effect=enforce_limit)

    async def go() -> bool:
        task = asyncio.create_task(h.service._limits())
        await until(lambda: len(calls) >= 3 or task.done())
        alive = not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return alive

    assert arun(go()) and len(calls) >= 3
