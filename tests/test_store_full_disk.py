"""The store on a REAL full disk: a 4 MiB tmpfs mounted for the test (as root; otherwise in a user+mount
namespace through ``unshare``). No mocks: SQLite meets ENOSPC from the kernel.

The store must never jam: a full disk may refuse new telemetry (counted), never loses committed energy or outbox
rows, and recovers by itself. The policy prunes and drops in bounded transactions, so its WAL never outgrows the
margin (one unbounded transaction would leave every later write, delete and ack failing with SQLITE_FULL while
each add_readings redid and rolled back a large prune); events, and calls larger than the room left, recover the
same way.
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from pathlib import Path

import pytest
from helpers.tinydisk import fill, on_tiny_fs

from agent.points import Reading, Stream
from agent.store import Store, StoreFullError
from protocols.telemetry import decode_batch

pytestmark = pytest.mark.integration  # every test mounts a tmpfs

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


def tele(n: int, start: int = 0) -> list[Reading]:
    return [Reading(f"feeder.p{i % 20}", 1.7e9 + start + i, float(start + i), "V") for i in range(n)]


def scenario_event_on_a_full_disk(disk: Path) -> None:
    store = Store(disk / "agent.db", SITE, 1 << 30, batch_size=100)
    store.add_readings(tele(500) + [Reading("m.kwh", 1.7e9, 1, "kWh", stream=Stream.ENERGY)])
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # an empty WAL, as the policy leaves it
    fill(disk / "another-program.log")
    assert shutil.disk_usage(disk).free == 0
    # a PMU or PQ event: the store gives up its reserve for it, as it does for readings and acks
    store.add_event(1.7e9, "pq_dip", "warning", "pq.bus1", "dip to 0.62 pu", {"depth_pu": 0.62})
    assert kinds(store)[-2:] == ["store_reserve_released", "pq_dip"]
    assert store.stats().reserve_released == 1
    store.close()


def store_near_its_disk_bound(disk: Path, fraction: float = 0.85) -> Store:
    """A store bound by its 4 MiB disk, at ``fraction`` of that bound with sealed telemetry (messages of 100)."""
    store = Store(disk / "agent.db", SITE, 1 << 30, batch_size=100)
    k = 0
    while store.stats().size_bytes < fraction * store.stats().limit_bytes:
        store.add_readings(tele(100, start=100 * k))
        store.seal()
        k += 1
    return store


BIG_CALL = 20_000  # ~1.5 MB of rows: more than the disk has left at 85 % of the bound, far less than the bound


def scenario_one_large_call_does_not_jam(disk: Path) -> None:
    one_large_call_then_ordinary_life(store_near_its_disk_bound(disk), BIG_CALL)


def scenario_a_call_that_commits_but_cannot_be_checkpointed_does_not_jam(disk: Path) -> None:
    # below the alarm level: the policy does not run; 12,000 readings (~0.9 MB) fit the WAL and commit, but the
    # file must then grow by as much again for the checkpoint
    one_large_call_then_ordinary_life(store_near_its_disk_bound(disk, 0.7), 12_000)


def one_large_call_then_ordinary_life(store: Store, n: int) -> None:
    meter = Reading("m.kwh", 1.8e9, 7, "kWh", stream=Stream.ENERGY)
    store.add_readings([*tele(n, start=10**7), meter])
    # then the agent's ordinary life: writes, seals and central's acks must all go through again
    for j in range(30):
        store.add_readings(
            [*tele(100, start=2 * 10**7 + 100 * j), Reading("m.kwh", 1.9e9 + j, 8 + j, "kWh", stream=Stream.ENERGY)]
        )
        store.seal()
        for m in store.pending(5):
            assert store.ack([m.msg_id]) == 1
        store.enforce_limit()
    store.seal(force=True)
    energy = [
        item["value"]
        for m in store.pending(1_000_000)
        if m.stream == "energy"
        for item in decode_batch(m.payload).items
    ]
    assert 7 in energy and all(8 + j in energy for j in range(30))
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


def scenario_large_call_drops_the_oldest_telemetry(disk: Path) -> None:
    store = store_near_its_disk_bound(disk)
    before = store.stats()
    store.add_readings([*tele(BIG_CALL, start=10**7), Reading("m.kwh", 1.8e9, 7, "kWh", stream=Stream.ENERGY)])
    after = store.stats()
    assert after.readings_taken == before.readings_taken + BIG_CALL + 1  # the new call is stored whole
    assert after.dropped_messages > 0  # room was made the policy's way: the oldest outbox messages went
    assert after.dropped_readings == 100 * after.dropped_messages  # and only they (100 readings each)
    newest = store.conn.execute("SELECT count(*) FROM readings WHERE value >= ?", (10**7,)).fetchone()[0]
    assert newest == BIG_CALL
    store.close()


def scenario_a_large_energy_call_waits_instead_of_jamming(disk: Path) -> None:
    store = store_near_its_disk_bound(disk, 0.7)
    before = store.stats()
    energy = [Reading("m.kwh", 1.8e9 + i, i, "kWh", stream=Stream.ENERGY) for i in range(12_000)]
    try:
        store.add_readings([*tele(12_000, start=10**7), *energy])
    except StoreFullError as err:
        assert not err.rejected  # nothing stored, nothing counted: the caller keeps the whole call
        assert store.stats().readings_taken == before.readings_taken
    else:  # stored: then it must not have jammed the store either
        assert store.stats().readings_taken > before.readings_taken
    for j in range(30):
        store.add_readings(
            [*tele(100, start=2 * 10**7 + 100 * j), Reading("m.kwh", 1.9e9 + j, j, "kWh", stream=Stream.ENERGY)]
        )
        store.seal()
        for m in store.pending(5):
            assert store.ack([m.msg_id]) == 1
        store.enforce_limit()
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


# ----------------------------------------------------------------------------------------- tests


def test_thousands_of_cycles_on_a_4_mib_disk_never_jam_and_lose_no_energy(tmp_path: Path) -> None:
    on_tiny_fs(tmp_path, scenario_thousands_of_cycles)


def test_acks_still_run_on_a_disk_filled_to_the_last_byte(tmp_path: Path) -> None:
    on_tiny_fs(tmp_path, scenario_acks_free_a_disk_filled_to_the_last_byte)


def test_energy_refused_on_a_full_disk_goes_in_once_there_is_room(tmp_path: Path) -> None:
    on_tiny_fs(tmp_path, scenario_energy_only_store_on_a_full_disk_refuses_and_recovers)


def test_an_event_on_a_disk_filled_to_the_last_byte_is_stored(tmp_path: Path) -> None:
    """add_event recovers from a full disk as add_readings does: it gives up the reserve for the event, rather than
    failing with StoreFullError until some other write does."""
    on_tiny_fs(tmp_path, scenario_event_on_a_full_disk)


def test_one_call_larger_than_the_room_left_does_not_jam_the_store(tmp_path: Path) -> None:
    """A call whose first attempt fills the disk with WAL frames it rolls back: the checkpoint that clears them
    needs room to grow the file, and the retry must not take the room the given-up reserve made, or every later
    write, ack and checkpoint fails with SQLITE_FULL. Writes, seals and acks go on after it."""
    on_tiny_fs(tmp_path, scenario_one_large_call_does_not_jam)


def test_a_call_larger_than_the_room_left_drops_the_oldest_telemetry_not_its_own(tmp_path: Path) -> None:
    """The call's 20,000 readings are stored and room is made the full policy's way, by dropping the oldest
    telemetry in the outbox, not the call's own readings (reason disk_full)."""
    on_tiny_fs(tmp_path, scenario_large_call_drops_the_oldest_telemetry)


def test_a_call_that_fits_the_wal_but_not_the_checkpoint_does_not_jam_the_store(tmp_path: Path) -> None:
    """A call that commits into the WAL but whose checkpoint would need the file to grow by the call's size, more
    than the disk has: the WAL must still be emptied and deletes written, so later writes, acks and checkpoints
    all go through, and the reserve is not given up for nothing."""
    on_tiny_fs(tmp_path, scenario_a_call_that_commits_but_cannot_be_checkpointed_does_not_jam)


def test_a_large_energy_call_that_cannot_fit_waits_with_the_caller_instead_of_jamming(tmp_path: Path) -> None:
    """Energy is never dropped, so a call whose energy alone is larger than the disk's room must not be committed
    (the same uncheckpointable WAL): refused whole, the caller keeps it."""
    on_tiny_fs(tmp_path, scenario_a_large_energy_call_waits_instead_of_jamming)
