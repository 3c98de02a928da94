"""Scenario files: validation (every key named) and playing events at their simulated times."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim_hw.scenarios import ScenarioError, load_scenario, parse_scenario

START = 1_780_000_000.0


class Recorder:
    """Stands in for the bench: records what the scenario asked of it (the bench's own tests run it for real)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.feeder = self
        self.pmus = {"pmu-671": self}

    def set_irradiance_factor(self, f: float) -> None:
        self.calls.append(("irradiance", f))

    def set_fault(self, bus: str, phases: str, r_ohm: float) -> None:
        self.calls.append(("fault", bus, phases, r_ohm))

    def clear_fault(self) -> None:
        self.calls.append(("clear_fault",))

    def silence(self, device: str, silent: bool) -> None:
        self.calls.append(("silence", device, silent))

    def lose_sync(self) -> None:
        self.calls.append(("lose_sync",))

    def regain_sync(self) -> None:
        self.calls.append(("regain_sync",))

    def set_frequency(self, hz: float, rocof: float) -> None:
        self.calls.append(("frequency", hz, rocof))

    def model_of(self, name: str) -> Recorder:
        self.calls.append(("model_of", name))
        return self

    def swap(self, t: float) -> None:
        self.calls.append(("swap", t))


EVENTS = {
    "events": [
        {"at_s": 100, "action": "fault", "bus": "671", "phases": "abc", "r_ohm": 0.05, "duration_s": 0.5},
        {"at_s": 10, "action": "cloud", "factor": 0.2, "duration_s": 60},
        {"at_s": 30, "action": "silence", "device": "cap-ctl", "duration_s": 20},
        {"at_s": 40, "action": "pmu_sync_loss", "pmu": "pmu-671", "duration_s": 5},
        {"at_s": 200, "action": "meter_swap", "device": "sub-meter"},
        {"at_s": 300, "action": "frequency", "hz": 59.8, "rocof_hz_s": -0.5, "duration_s": 10},
    ]
}


def scenario():
    return parse_scenario(EVENTS, Path("s.toml"), start=START, devices=("cap-ctl", "sub-meter"), pmus=("pmu-671",))


def test_events_play_in_time_order_each_once_with_their_end() -> None:
    scn, bench = scenario(), Recorder()
    scn.apply_due(START + 9.9, bench)
    assert bench.calls == []
    scn.apply_due(START + 45, bench)  # the sync loss (40 s) ends at 45 s too: its end waits for the next step
    assert bench.calls == [("irradiance", 0.2), ("silence", "cap-ctl", True), ("lose_sync",)]
    scn.apply_due(START + 45, bench)
    assert bench.calls[3:] == [("regain_sync",)]  # one step later; nothing runs twice
    scn.apply_due(START + 1000, bench)  # a late bench: all that is due, but a fault's end not with its start
    assert bench.calls[4:] == [("silence", "cap-ctl", False), ("irradiance", 1.0), ("fault", "671", "abc", 0.05)]
    scn.apply_due(START + 1001, bench)
    assert bench.calls[7:] == [("clear_fault",), ("model_of", "sub-meter"), ("swap", START + 1001),
                               ("frequency", 59.8, -0.5)]  # fmt: skip
    scn.apply_due(START + 1002, bench)
    assert bench.calls[11:] == [("frequency", 60.0, 0.0)]
    assert scn.pending == 0 and len(scn.played) == 11 and scn.failed == []
    assert scn.fault_buses == {"671"}


def test_a_fault_shorter_than_a_step_is_still_solved_once() -> None:
    """0.5 s on a 1 s bench step: the clear waits for the next step, so the relay sees the fault."""
    scn = parse_scenario({"events": [{"at_s": 3, "action": "fault", "bus": "671", "duration_s": 0.5}]},
                         Path("s.toml"), start=START)  # fmt: skip
    bench = Recorder()
    scn.apply_due(START + 3, bench)
    assert bench.calls == [("fault", "671", "abc", 0.05)]
    scn.apply_due(START + 4, bench)
    assert bench.calls[1:] == [("clear_fault",)]


def test_an_event_that_fails_is_recorded_and_the_others_play() -> None:
    class Broken(Recorder):
        def lose_sync(self) -> None:
            raise RuntimeError("no GPS module")

    scn, bench = scenario(), Broken()
    scn.apply_due(START + 41, bench)
    assert [name for _, name, _ in scn.failed] == ["pmu-671 loses time sync"]
    assert ("silence", "cap-ctl", True) in bench.calls and len(scn.played) == 2


BAD = [
    ({"at_s": 1, "action": "storm"}, "events[0].action = 'storm'"),
    ({"at_s": 1, "action": "cloud", "factor": 1.5, "duration_s": 5}, "events[0].factor = 1.5: must be a number in 0..1"),
    ({"at_s": 1, "action": "cloud", "factor": 0.5}, "events[0].duration_s is required"),
    ({"at_s": 1, "action": "silence", "device": "nope", "duration_s": 5}, "events[0].device = 'nope': must be one of 'cap-ctl'"),
    ({"at_s": 1, "action": "fault", "bus": "671", "phases": "abd", "duration_s": 1}, "events[0].phases = 'abd'"),
    ({"at_s": -5, "action": "meter_swap", "device": "cap-ctl"}, "events[0].at_s = -5"),
    ({"at_s": 1, "action": "meter_swap", "device": "cap-ctl", "speed": 3}, "unknown keys ['speed']"),
    ({"at_s": 1, "action": "frequency", "hz": 70}, "events[0].hz = 70: must be a number in 55..65"),
]  # fmt: skip


@pytest.mark.parametrize(("event", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_a_bad_event_names_key_value_and_allowed(event: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=None) as err:
        parse_scenario({"events": [event]}, Path("s.toml"), start=START, devices=("cap-ctl",))
    assert message in str(err.value)


def test_files_missing_or_malformed_are_scenario_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "none.toml", start=START)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[events]\n")
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(bad, start=START)
    extra = tmp_path / "extra.toml"
    extra.write_text('title = "x"\n')
    with pytest.raises(ScenarioError, match="unknown top-level keys"):
        load_scenario(extra, start=START)


def test_each_step_says_what_happens_and_where_and_is_reported_as_played() -> None:
    scn, bench = scenario(), Recorder()
    seen: list[tuple[str, str, str, bool, str | None]] = []
    scn.on_step = lambda t, step, error: seen.append((step.action, step.where, step.text, step.after is not None,
                                                     error))  # fmt: skip
    for t in range(1000, 1010):  # an end due with its start waits for the next call
        scn.apply_due(START + t, bench)
    assert scn.pending == 0 and len(seen) == len(scn.played) == 11 and scn.events == 6
    assert sorted(seen) == sorted([
        ("cloud", "feeder", "a cloud over every PV site: irradiance x0.2 for 60 s", False, None),
        ("cloud", "feeder", "the cloud clears: full irradiance on every PV site", True, None),
        ("silence", "cap-ctl", "cap-ctl stops answering for 20 s", False, None),
        ("silence", "cap-ctl", "cap-ctl answers again", True, None),
        ("pmu_sync_loss", "pmu-671", "PMU pmu-671 loses time sync for 5 s", False, None),
        ("pmu_sync_loss", "pmu-671", "PMU pmu-671 regains time sync", True, None),
        ("fault", "bus 671", "fault at bus 671, phases abc, 0.05 ohm, for 0.5 s", False, None),
        ("fault", "bus 671", "the fault at bus 671 clears", True, None),
        ("meter_swap", "sub-meter", "meter sub-meter replaced: its energy registers restart at 0", False, None),
        ("frequency", "feeder", "the grid frequency goes to 59.8 Hz (ROCOF -0.5 Hz/s)", False, None),
        ("frequency", "feeder", "the grid frequency goes back to 60 Hz", True, None),
    ])  # fmt: skip


def test_a_failed_step_is_reported_with_its_error() -> None:
    class Broken(Recorder):
        def lose_sync(self) -> None:
            raise RuntimeError("no GPS module")

    scn = scenario()
    errors: list[str | None] = []
    scn.on_step = lambda t, step, error: errors.append(error) if step.action == "pmu_sync_loss" else None
    scn.apply_due(START + 41, Broken())
    assert errors == ["RuntimeError('no GPS module')"]
