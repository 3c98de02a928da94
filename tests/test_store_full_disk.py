"""The store on a REAL full disk: a 4 MiB tmpfs mounted for the test (as root; otherwise in a user+mount
namespace through ``unshare``, as the review's probe did). No mocks: SQLite meets ENOSPC from the kernel.

Before (commit 5b7ae1e): the policy pruned and dropped in one transaction of unbounded size, its WAL
outgrew the margin, and from then on every write, deletes and acks included, failed with SQLITE_FULL while
each add_readings redid and rolled back a large prune (9 minutes of CPU for 3,000 cycles). The store must
never jam: a full disk may refuse new telemetry (counted), never loses committed energy or outbox rows, and
recovers by itself.
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from pathlib import Path

from helpers.tinydisk import fill, on_tiny_fs

from agent.points import Reading, Stream
from agent.store import Store, StoreFullError
from protocols.telemetry import decode_batch

SITE = "sub-1"


def decoded_values(store: Store) -> dict[str, list]:
    out: dict[str, list] = {"telemetry": [], "energy": []}
    for m in store.pending(1_000_000):
        if m.stream in out:
            out[m.stream] += [i["value"] for i in decode_batch(m.payload).items]
    return out


def kinds(store: Store) -> list[str]:
    return [k for (k,) in store.conn.execute("SELECT kind FROM events ORDER BY id")]


# ----------------------------------------------------------------------------------------- scenarios


def scenario_thousands_of_cycles(disk: Path) -> None:
    store = Store(disk / "agent.db", SITE, 1 << 30, batch_size=100)
    reserve = store.stats().reserve_bytes
    assert reserve > 0 and (disk / "agent.db.reserve").stat().st_size == reserve
    tele_values = itertools.count()
    accepted_tele: set[float] = set()
    accepted_energy: list[int] = []
    energy_waiting: list[int] = []  # refused energy, kept by the caller and offered again (as agent/service does)
    next_energy = itertools.count()
    acked: dict[str, list] = {"telemetry": [], "energy": []}
    full_errors = 0
    filler = disk / "another-program.log"
    for k in range(2500):
        if k == 1200:
            fill(filler)  # another program takes every byte left, margin included
        if k == 1800:
            filler.unlink()
        tele = [float(next(tele_values)) for _ in range(100)]
        energy = [*energy_waiting, next(next_energy)]
        batch = [Reading("feeder.v", 1.7e9 + v, v, "V") for v in tele]
        batch += [Reading("meter.kwh", 1.7e9 + e, e, "kWh", stream=Stream.ENERGY) for e in energy]
        try:
            store.add_readings(batch)
        except StoreFullError as err:  # the only exception allowed out
            full_errors += 1
            if err.rejected:  # full of energy: telemetry dropped (counted), energy handed back
                assert [r.value for r in err.rejected] == energy
                accepted_tele.update(tele)
            energy_waiting = energy  # rejected by name, or rolled back whole
        else:
            accepted_tele.update(tele)
            accepted_energy += energy
            energy_waiting = []
        try:
            store.seal()
            if k % 2 == 0:  # central acknowledges one message every other cycle: the outbox grows
                for m in store.pending(1):
                    if store.ack([m.msg_id]) == 1 and m.stream in acked:
                        acked[m.stream] += [i["value"] for i in decode_batch(m.payload).items]
            if k % 10 == 0:
                store.enforce_limit()
        except StoreFullError:
            full_errors += 1
    stats = store.stats()
    assert stats.dropped_readings > 50_000  # acks (1 message in 2 cycles) cannot keep up with 250,000 readings
    assert stats.reserve_released >= 1 and stats.reserve_restored >= 1
    assert "store_reserve_released" in kinds(store) and "store_reserve_restored" in kinds(store)
    store.seal(force=True)
    held = decoded_values(store)
    # every energy reading ever accepted is still in the store or at central, once, in order
    assert sorted(acked["energy"] + held["energy"]) == accepted_energy
    assert len(accepted_energy) + len(energy_waiting) == next(next_energy)
    # telemetry: accepted = held + acked + dropped, exactly; nothing held that was not accepted
    got = acked["telemetry"] + held["telemetry"]
    assert len(got) == len(set(got)) and set(got) <= accepted_tele
    assert len(accepted_tele) - len(got) == store.stats().dropped_readings
    # central acknowledges everything: the store is writable again and keeps its reserve
    for m in store.pending(1_000_000):
        assert store.ack([m.msg_id]) == 1
    store.enforce_limit()
    store.add_readings([Reading("meter.kwh", 1.8e9, -1, "kWh", stream=Stream.ENERGY), Reading("f.v", 1.8e9, 1.0, "V")])
    after = store.stats()
    assert after.readings_taken == stats.readings_taken + 2 and after.outbox_messages == 0
    assert after.reserve_bytes == reserve
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()
    conn = sqlite3.connect(disk / "agent.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def scenario_acks_free_a_disk_filled_to_the_last_byte(disk: Path) -> None:
    store = Store(disk / "agent.db", SITE, 1 << 30, batch_size=100)
    for k in range(40):
        store.add_readings([Reading("feeder.v", 1.7e9 + 100 * k + i, float(i), "V") for i in range(100)])
    store.seal(force=True)
    ids = [m.msg_id for m in store.pending(1000)]
    assert len(ids) == 40
    reserve = store.stats().reserve_bytes
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # an empty WAL, as the policy leaves it
    assert Path(f"{store.path}-wal").stat().st_size == 0
    fill(disk / "another-program.log")
    assert shutil.disk_usage(disk).free == 0
    # every write needs the WAL, a delete too: the reserve is given up so the acks can run
    assert store.ack(ids) == 40
    stats = store.stats()
    assert stats.outbox_messages == 0 and stats.acked_messages == 40
    assert stats.reserve_released == 1 and stats.reserve_bytes == 0
    assert kinds(store)[-1] == "store_reserve_released"
    (disk / "another-program.log").unlink()
    store.enforce_limit()  # room again: the reserve is made again, counted, with its event
    stats = store.stats()
    assert stats.reserve_bytes == reserve and stats.reserve_restored == 1
    assert kinds(store)[-1] == "store_reserve_restored"
    store.close()


def scenario_energy_only_store_on_a_full_disk_refuses_and_recovers(disk: Path) -> None:
    """A disk filled by another program while the store holds only energy: new energy is refused (StoreFullError
    naming it), committed energy stays, and once the disk has room the refused energy goes in."""
    store = Store(disk / "agent.db", SITE, 1 << 30, batch_size=100)
    store.add_readings([Reading("m.kwh", 1.7e9 + i, i, "kWh", stream=Stream.ENERGY) for i in range(500)])
    fill(disk / "another-program.log")
    big = [Reading("m.kwh", 1.8e9 + i, 500 + i, "kWh", stream=Stream.ENERGY) for i in range(20_000)]
    refused = 0
    try:
        store.add_readings(big)
    except StoreFullError as err:
        refused = 1
        assert list(err.rejected) == big  # the bound saw the full disk first: all refused by name, kept by the caller
    assert refused == 1
    assert store.stats().readings_rows == 500
    (disk / "another-program.log").unlink()
    store.add_readings(big)
    store.seal(force=True)
    assert decoded_values(store)["energy"] == list(range(20_500))
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


# ----------------------------------------------------------------------------------------- tests


def test_thousands_of_cycles_on_a_4_mib_disk_never_jam_and_lose_no_energy(tmp_path: Path) -> None:
    on_tiny_fs(tmp_path, scenario_thousands_of_cycles)


def test_acks_still_run_on_a_disk_filled_to_the_last_byte(tmp_path: Path) -> None:
    on_tiny_fs(tmp_path, scenario_acks_free_a_disk_filled_to_the_last_byte)


def test_energy_refused_on_a_full_disk_goes_in_once_there_is_room(tmp_path: Path) -> None:
    on_tiny_fs(tmp_path, scenario_energy_only_store_on_a_full_disk_refuses_and_recovers)
