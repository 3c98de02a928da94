"""Events that start within the audit window after a control action carry that action's id, whoever made them.

The annotation lives in the one event spool every producer passes (agent/events.py): the test makes a real
power-quality dip with a real wave stream and the agent's own PQ stream reader, which knows nothing of control,
and finds the action's id in the dip stored in a real SQLite store.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from helpers.aio import async_test, running_tasks, until

from agent.events import RECENT_ACTIONS, EventSpool, RecentActions, annotate
from agent.pq.config import WaveformStreamConfig
from agent.pq.events import EventConfig
from agent.pq.service import PqStream
from agent.store import AsyncStore
from sim_hw.waveforms import WaveformDesc
from sim_hw.waveforms.stream import WaveformStreamServer

T0 = 1_767_225_570.0  # the signal's sample 0 [s UTC]


@async_test
async def test_a_real_dip_after_a_capacitor_switching_carries_the_switchings_id(tmp_path: Path) -> None:
    # a dip on phase a at +2.0 s and a swell on phase b at +6.0 s; the action at +1.0 s, window 3 s
    d = WaveformDesc.from_dict({"nominal_hz": 60, "rate_hz": 3200.0, "v_rms": [120.0] * 3, "t0": T0, "events": [
        {"kind": "dip", "start_s": 2.0, "duration_s": 0.1, "magnitude_pct": 70.0, "phases": "a"},
        {"kind": "swell", "start_s": 6.0, "duration_s": 0.05, "magnitude_pct": 120.0, "phases": "b"},
    ]})  # fmt: skip
    store = await AsyncStore.open(tmp_path / "agent.db", "sub-1", 16 << 20)
    RECENT_ACTIONS.configure(3.0)
    RECENT_ACTIONS.note("dec-42", T0 + 1.0, "capbank", "cap675-ctl")
    try:
        async with WaveformStreamServer(d, speed=math.inf, duration_s=10.0) as srv:
            cfg = WaveformStreamConfig(name="pq1", host="127.0.0.1", port=srv.port, nominal_hz=60, lamp_v=120,
                                       events=EventConfig(udin_v=120.0))  # fmt: skip
            pq = PqStream(cfg, lambda readings: None, store, backoff_min_s=5.0, backoff_max_s=5.0)
            async with running_tasks(pq.run()):
                await until(lambda: pq.stats.events_stored == 2, 20)
        rows = store.store.conn.execute("SELECT kind, data FROM events WHERE stream='events' ORDER BY ts").fetchall()
    finally:
        RECENT_ACTIONS.clear()
        RECENT_ACTIONS.configure(0.0)
        await store.aclose()
    (dip_kind, dip_data), (swell_kind, swell_data) = [(k, json.loads(d)) for k, d in rows]
    assert (dip_kind, swell_kind) == ("pq_dip", "pq_swell")
    assert dip_data["control_action_id"] == "dec-42" and dip_data["control_action"] == "capbank:cap675-ctl"
    assert 0.9 <= dip_data["control_action_s"] <= 1.1
    assert abs(dip_data["residual_pct"] - 70.0) <= 0.7, "the producer's own data is kept"
    assert "control_action_id" not in swell_data, "the swell starts 5 s after the action, past the 3 s window"


class Ev:
    def __init__(self, ts: float, data: dict | None = None) -> None:
        self.ts, self.kind, self.severity, self.source, self.text, self.data = ts, "pq_dip", "warning", "pq1", "t", data


def test_the_latest_action_before_the_event_is_the_one_it_carries() -> None:
    acts = RecentActions(window_s=60.0)
    acts.note("a", 100.0, "capbank", "cap")
    acts.note("b", 130.0, "regulator", "reg")
    assert annotate(Ev(120.0), acts).data["control_action_id"] == "a"
    assert annotate(Ev(131.0), acts).data["control_action_id"] == "b"
    assert annotate(Ev(99.0), acts).data is None, "an event before any action carries nothing"
    assert annotate(Ev(191.0), acts).data is None, "past the window of the latest"
    original = Ev(120.0, {"v": 1})
    assert annotate(original, acts).data == {"v": 1, "control_action_id": "a", "control_action": "capbank:cap",
                                              "control_action_s": 20.0}  # fmt: skip
    assert original.data == {"v": 1}, "the producer's event is not changed"


def test_no_window_or_no_registry_annotates_nothing() -> None:
    acts = RecentActions(window_s=0.0)
    acts.note("a", 100.0, "capbank", "cap")
    assert annotate(Ev(100.0), acts).data is None
    assert annotate(Ev(100.0), None).data is None


def test_a_spool_built_without_actions_leaves_its_events_alone() -> None:
    acts = RecentActions(window_s=60.0)
    acts.note("a", 100.0, "capbank", "cap")
    plain = EventSpool(store=None, name="audit", actions=None)  # type: ignore[arg-type]
    plain.put(Ev(120.0))
    annotated = EventSpool(store=None, name="pq", actions=acts)  # type: ignore[arg-type]
    annotated.put(Ev(120.0))
    assert plain._waiting[0].data is None and annotated._waiting[0].data["control_action_id"] == "a"
