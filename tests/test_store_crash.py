"""The store survives SIGKILL mid-write: a child process writes and seals in a loop and is killed, for real."""

from __future__ import annotations

import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.store import Store
from protocols.telemetry import decode_batch

pytestmark = pytest.mark.integration  # a child process killed mid-write

PER_CALL = 200  # telemetry readings per add_readings call; energy: PER_CALL // 10
SITE = "crash-1"

# The child: resumes its value counter from the store, then writes, seals and reports each commit forever.
CHILD = f"""
import sys, itertools
from pathlib import Path
from agent.points import Reading, Stream
from agent.store import Store
store = Store(Path(sys.argv[1]), {SITE!r}, 1 << 30, batch_size=150, max_age_s=3600.0)
n = store.stats().readings_taken // {PER_CALL + PER_CALL // 10}
for k in itertools.count(n):
    batch = [Reading("feeder.v", float(k * {PER_CALL} + i), k * {PER_CALL} + i, "V") for i in range({PER_CALL})]
    batch += [Reading("meter.kwh", float(k), k * {PER_CALL // 10} + j, "kWh", stream=Stream.ENERGY) for j in range({PER_CALL // 10})]
    store.add_readings(batch)
    if k % 7 == 0:
        store.add_event(float(k), "tick", "info", "child", f"call {{k}}")
    store.seal()
    print(k, store.stats().readings_taken, flush=True)
"""


def run_and_kill(db: Path, rng: random.Random, repo_root: Path) -> int:
    """Start the child, let it commit a random number of calls, SIGKILL it; returns the last count it reported."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = rng.randint(15, 60)
        last = 0
        for _ in range(lines):
            line = proc.stdout.readline()
            assert line, f"the child died on its own: {proc.stderr.read()}"
            last = int(line.split()[1])
        time.sleep(rng.uniform(0, 0.005))  # land anywhere in the next call: mid-insert, mid-seal, mid-commit
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        return last
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def check_intact(db: Path, reported: int, scratch: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    store = Store(db, SITE, 1 << 30, batch_size=150)
    try:
        stats = store.stats()
        # nothing the child had seen committed is lost, and no call is half there
        assert stats.readings_taken >= reported  # the child runs on while we read its reports
        assert stats.readings_taken == stats.readings_rows
        assert stats.readings_taken % (PER_CALL + PER_CALL // 10) == 0
        calls = stats.readings_taken // (PER_CALL + PER_CALL // 10)
        counts = dict(store.conn.execute("SELECT stream, count(*) FROM readings GROUP BY stream"))
        assert counts == {"telemetry": calls * PER_CALL, "energy": calls * PER_CALL // 10}
        # every sealed message is whole: its count matches its payload, its id ranges follow each other
        rows = store.conn.execute("SELECT stream, seq, count, first_id, last_id, payload FROM outbox ORDER BY rowid")
        last_id: dict[str, int] = {}
        for stream, seq, count, first_id, last_id_, payload in rows:
            batch = decode_batch(payload)
            assert (batch.stream, batch.seq, len(batch.items)) == (stream, seq, count)
            assert first_id > last_id.get(stream, 0) and last_id_ >= first_id
            last_id[stream] = last_id_
    finally:
        store.close()  # the last connection: checkpoints, so the file alone is the whole database

    # seal the rest in a copy (the original must stay as the kill left it for the next child)
    copy = scratch / f"copy-{time.monotonic_ns()}.db"
    shutil.copyfile(db, copy)
    store = Store(copy, SITE, 1 << 30, batch_size=150)
    try:
        store.seal(force=True)
        pending = store.pending(1_000_000)
        for stream, expected in (("telemetry", calls * PER_CALL), ("energy", calls * PER_CALL // 10)):
            batches = [decode_batch(m.payload) for m in pending if m.stream == stream]
            # seqs resume after the kill: none reused, none skipped
            assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
            # every reading taken is in exactly one message, in order
            assert [item["value"] for b in batches for item in b.items] == list(range(expected))
        event_seqs = [m.seq for m in pending if m.stream == "events"]
        assert event_seqs == list(range(1, len(event_seqs) + 1))
        assert len(event_seqs) >= 1
    finally:
        store.close()


def test_store_survives_sigkill_during_writes(tmp_path: Path, repo_root: Path) -> None:
    db = tmp_path / "agent.db"
    rng = random.Random(20261128)
    for _ in range(6):
        reported = run_and_kill(db, rng, repo_root)
        assert reported > 0
        assert Path(f"{db}-wal").exists()  # killed, not closed: recovery has work to do
        check_intact(db, reported, tmp_path)
