"""Interval energy in the agent's store: intervals and their engines' state in one transaction, sealed on their own
stream, checked as central checks them; the billing-grade order of the outbox; the backlog per stream."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.points import Quality, Reading, Stream
from agent.store import Store, StoreInputError
from protocols.telemetry import decode_batch

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 900


def interval(start: float, value: float | None = 1.25, quality: str = "A", **kw) -> dict:
    return {"meter": "m1", "register": "energy_delivered_wh", "channel": "kwh_delivered", "start": start,
            "end": start + 900, "value": value, "unit": "kWh", "quality": quality, "method": None, "version": 1,
            "flags": [], "reads": [[start - 1, 1000], [start + 901, 2250]], "meter_id": "SN1"} | kw  # fmt: skip


def make(tmp_path: Path, **kw) -> Store:
    return Store(tmp_path / "a.db", "sub-1", 16 << 20, max_age_s=0.0, **kw)


def test_intervals_and_their_state_are_stored_together_and_sealed_on_their_own_stream(tmp_path) -> None:
    with make(tmp_path) as s:
        s.add_intervals([interval(T0), interval(T0 + 900, None, "N")], {"m1/energy_delivered_wh": {"last": [T0, 1]}})
        assert s.metering_states() == {"m1/energy_delivered_wh": {"last": [T0, 1]}}
        s.seal(force=True)
        (msg,) = s.pending(10)
        batch = decode_batch(msg.payload)
        assert batch.stream == "intervals" and [i["start"] for i in batch.items] == [T0, T0 + 900]
        assert batch.items[1]["value"] is None and batch.items[0]["reads"] == [[T0 - 1, 1000], [T0 + 901, 2250]]
    with make(tmp_path) as s:  # reopened: the state is what the last stored intervals left
        assert s.metering_states()["m1/energy_delivered_wh"] == {"last": [T0, 1]}


@pytest.mark.parametrize(
    ("bad", "match"),
    [({"start": T0 + 1}, "clock-aligned"), ({"quality": "X"}, "quality"), ({"value": None}, "finite number"),
     ({"method": 99, "quality": "E"}, "method"), ({"unit": "Wh"}, "unit"), ({"flags": ["odd"]}, "flags")],
)  # fmt: skip
def test_an_interval_central_would_refuse_is_refused_here_and_nothing_is_stored(tmp_path, bad, match) -> None:
    with make(tmp_path) as s:
        with pytest.raises(StoreInputError, match=match):
            s.add_intervals([interval(T0), interval(T0 + 900) | bad], {"k": {"x": 1}})
        assert s.conn.execute("SELECT count(*) FROM intervals").fetchone() == (0,)
        assert s.metering_states() == {}, "the state moves only with its intervals"


def test_a_crash_between_the_engine_and_the_commit_leaves_neither(tmp_path, mocker) -> None:
    """The intervals and the state go in one transaction: a failure of the state's write rolls the intervals back."""
    with make(tmp_path) as s:
        real = Store._insert_intervals

        def failing(rows, state_rows, conn):
            real(rows, [], conn)
            raise sqlite3.OperationalError("disk I/O error")

        mocker.patch.object(Store, "_insert_intervals", staticmethod(failing))
        with pytest.raises(Exception, match="disk I/O error"):
            s.add_intervals([interval(T0)], {"k": {"x": 1}})
        assert s.conn.execute("SELECT count(*) FROM intervals").fetchone() == (0,)


def _reading(i: int, stream: Stream) -> Reading:
    return Reading(f"m.{'p' if stream is Stream.TELEMETRY else 'e'}", T0 + i, float(i), "", Quality.GOOD, stream)


def test_the_uplink_order_sends_telemetry_newest_first_and_settlement_streams_oldest_first(tmp_path) -> None:
    with make(tmp_path, batch_size=1) as s:
        for i in range(4):
            s.add_readings([_reading(i, Stream.TELEMETRY), _reading(i, Stream.ENERGY)])
        s.add_intervals([interval(T0), interval(T0 + 900)], {})
        s.seal(force=True)
        got = [(m.stream, m.seq) for m in s.pending(6, billing=True)]
        assert got == [("energy", 1), ("telemetry", 4), ("energy", 2), ("telemetry", 3), ("energy", 3),
                       ("telemetry", 2)]  # fmt: skip
        rest = [(m.stream, m.seq) for m in s.pending(20, billing=True)]
        assert sorted(x for x in rest if x[0] != "telemetry") == [("energy", i) for i in range(1, 5)] + [
            ("intervals", 1), ("intervals", 2)]  # fmt: skip
        assert [m.seq for m in s.pending(20) if m.stream == "telemetry"] == [1, 2, 3, 4], "oldest first otherwise"


def test_the_backlog_per_stream_counts_what_central_has_not_acknowledged(tmp_path) -> None:
    clock = iter([T0 + 100.0 * i for i in range(1000)])
    with Store(tmp_path / "a.db", "sub-1", 16 << 20, max_age_s=0.0, batch_size=2, clock=lambda: next(clock)) as s:
        s.add_readings([_reading(i, Stream.ENERGY) for i in range(5)])
        s.add_intervals([interval(T0)], {})
        s.seal(force=True)
        st = s.stats()
        assert st.backlog["energy"] == 5 and st.backlog["intervals"] == 1 and st.backlog["telemetry"] == 0
        s.ack([m.msg_id for m in s.pending(10) if m.stream == "intervals"])
        st = s.stats()
        assert st.backlog["intervals"] == 0 and st.backlog["energy"] == 5
        assert st.backlog_oldest_s["energy"] > 0 and st.backlog_oldest_s["intervals"] == 0.0


def test_the_backlog_goes_uplink_as_telemetry_per_stream() -> None:
    from types import SimpleNamespace

    from agent.service import backlog_readings

    stats = SimpleNamespace(backlog={"telemetry": 3, "intervals": 12}, backlog_oldest_s={"telemetry": 0.0,
                                                                                         "intervals": 640.5})  # fmt: skip
    got = {(r.point, r.value, r.unit, r.stream) for r in backlog_readings(stats, T0)}
    assert got == {("agent.backlog_intervals", 12, "items", Stream.TELEMETRY),
                   ("agent.backlog_age_intervals", 640.5, "s", Stream.TELEMETRY),
                   ("agent.backlog_telemetry", 3, "items", Stream.TELEMETRY),
                   ("agent.backlog_age_telemetry", 0.0, "s", Stream.TELEMETRY)}  # fmt: skip
