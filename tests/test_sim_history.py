"""``gridedge sim history`` (sim_hw/history.py): the CSV format of docs/forecast.md "History files", determinism,
the physics behind the rows, no network, the command line's errors; and ``sim run`` following the same profiles.
"""

from __future__ import annotations

import csv
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.aio import async_test
from helpers.bench import day_copy

from sim_hw.cli import main

ROOT = Path(__file__).resolve().parent.parent
DAY = ROOT / "config" / "sim-ieee13-day.toml"
COLUMNS = ["timestamp", "head_p_kw", "head_q_kvar", "load_p_kw", "load_q_kvar", "pv_p_kw", "losses_kw", "temperature",
           "irradiance", "pv_pv675_kw", "pv_pv680_kw", "pv_pv634_kw", "pv_pv652_kw", "sub-meter_p_kw",
           "sub-meter_q_kvar"]  # fmt: skip


def history(tmp_path: Path, name: str, *args: str, config: Path = DAY) -> list[dict[str, str]]:
    out = tmp_path / name
    assert main(["history", "--config", str(config), "--out", str(out), *args]) == 0
    with out.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def dst_days(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """8 March 2026 (UTC): the clocks of the profiles' time zone spring forward at 07:00 UTC."""
    return history(tmp_path_factory.mktemp("hist"), "march.csv", "--start", "2026-03-08", "--days", "1", "--seed", "3")


def test_the_file_has_the_documented_columns_and_one_row_per_quarter_hour_in_utc(dst_days: list[dict]) -> None:
    assert list(dst_days[0])[: len(COLUMNS)] == COLUMNS
    stamps = [datetime.strptime(r["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) for r in dst_days]
    assert stamps[0] == datetime(2026, 3, 8, tzinfo=UTC) and len(stamps) == 96  # a DST day is complete
    assert all((b - a).total_seconds() == 900 for a, b in zip(stamps, stamps[1:], strict=False))
    assert all(float(v) == float(v) for r in dst_days for v in list(r.values())[1:])  # every value a number


def test_the_rows_obey_the_feeders_power_balance_and_pv_sleeps_at_night(dst_days: list[dict]) -> None:
    for r in dst_days:
        p = {k: float(v) for k, v in list(r.items())[1:]}
        assert p["pv_p_kw"] == pytest.approx(
            sum(p[f"pv_{s}_kw"] for s in ("pv675", "pv680", "pv634", "pv652")), abs=0.01
        )
        assert p["head_p_kw"] == pytest.approx(p["sub-meter_p_kw"], abs=0.01)  # the meter on the head's terminal
        # head = loads (at their solved voltages: CVR 0.8 %/% over a few % of voltage) - PV + losses
        assert p["head_p_kw"] == pytest.approx(
            p["load_p_kw"] - p["pv_p_kw"] + p["losses_kw"], abs=0.06 * p["load_p_kw"]
        )
        if p["irradiance"] == 0:
            assert p["pv_p_kw"] == 0
    night = [r for r in dst_days if r["timestamp"][11:13] in ("03", "04", "05", "06")]  # 22:00-02:00 EST
    assert night and all(float(r["pv_p_kw"]) == 0 for r in night)
    assert max(float(r["pv_p_kw"]) for r in dst_days) > 500  # 6.85 MW of PV in March


def test_the_same_seed_gives_the_same_file_and_another_seed_other_loads(tmp_path: Path, dst_days: list[dict]) -> None:
    again = history(tmp_path, "again.csv", "--start", "2026-03-08", "--days", "1", "--seed", "3")
    assert again == dst_days
    other = history(tmp_path, "other.csv", "--start", "2026-03-08", "--days", "1", "--seed", "4")
    assert [r["load_p_kw"] for r in other] != [r["load_p_kw"] for r in again]
    assert [r["irradiance"] for r in other] == [r["irradiance"] for r in again]  # the weather does not depend on it


def test_the_history_uses_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network use: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    rows = history(tmp_path, "offline.csv", "--start", "2027-02-28", "--days", "1")  # a year no test built before
    assert len(rows) == 96


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--days", "0"], "--days: '0': allowed an integer 1..3660"),
        (["--days", "two"], "--days: 'two': allowed an integer 1..3660"),
        (["--days", "1", "--start", "2026-13-01"], "--start: '2026-13-01': allowed a date YYYY-MM-DD"),
    ],
)
def test_bad_arguments_name_the_option_and_what_is_allowed(
    tmp_path: Path, capsys, args: list[str], needle: str
) -> None:
    assert main(["history", "--config", str(DAY), "--out", str(tmp_path / "h.csv"), *args]) == 2
    assert needle in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_out_names_it_and_leaves_nothing(tmp_path: Path, capsys) -> None:
    assert main(["history", "--config", str(DAY), "--days", "1", "--out", str(tmp_path / "no" / "h.csv")]) == 2
    assert f"--out {tmp_path / 'no' / 'h.csv'}: folder {tmp_path / 'no'} does not exist" in capsys.readouterr().err
    assert main(["history", "--config", str(DAY), "--days", "1", "--out", str(tmp_path)]) == 2
    assert "is a folder: allowed a file path in a writable folder" in capsys.readouterr().err
    assert main(["history", "--config", str(DAY), "--days", "1", "--out", "/proc/history.csv"]) == 1  # even root
    assert "--out /proc/history.csv: cannot write" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_class_names_the_load_key_and_the_classes(tmp_path: Path, capsys) -> None:
    config = tmp_path / "day.toml"
    config.write_text(DAY.read_text().replace('"671" = "G0"', '"671" = "G9"').replace(
        'dss = "ieee13/IEEE13.dss"', f'dss = "{ROOT / "config" / "ieee13" / "IEEE13.dss"}"').replace(
        'map = "maps/', f'map = "{ROOT / "config" / "maps"}/'))  # fmt: skip
    assert main(["history", "--config", str(config), "--days", "1", "--out", str(tmp_path / "h.csv")]) == 2
    err = capsys.readouterr().err
    assert "profiles.classes.671 = 'G9': must be one of H0, G0, G1, G2, G3, G4, G5, G6, L0, L1, L2" in err
    assert not (tmp_path / "h.csv").exists()


@pytest.mark.integration  # starts the simulated bench
@async_test
async def test_sim_run_with_the_bdew_source_follows_the_histories_profiles(tmp_path: Path) -> None:
    """The running bench at 02:00 EDT (no sun: the inverters' dynamics play no part) against the history's row."""
    from sim_hw.bench import Bench
    from sim_hw.config import load_bench_config

    rows = history(tmp_path, "june.csv", "--start", "2026-06-15", "--days", "1")
    row = next(r for r in rows if r["timestamp"] == "2026-06-15T06:00:00Z")
    noon = next(r for r in rows if r["timestamp"] == "2026-06-15T16:00:00Z")
    # the history's 15-minute points carry no 1 s cloud transients: the bench without them
    path = day_copy(tmp_path, start="2026-06-15T06:00:00Z", edit=('clouds = "seeded"', 'clouds = "none"'))
    bench = Bench(load_bench_config(path))
    await bench.start()
    try:
        head = bench.solution.terminal("Line.650632", 1)
        p_kw = head.s_total_va.real / 1000
        # the bench's regulator holds its own taps and its cap bank decides alone: a voltage apart, CVR loads
        assert p_kw == pytest.approx(float(row["head_p_kw"]), rel=0.05)
        assert p_kw != pytest.approx(float(rows[0]["head_p_kw"]), rel=0.05)  # not any hour's: this one's
        # the inverters' available power: a point at its interval's middle, where the history evaluated it, and an
        # interval's mean on the bench is its point (half way to the next one at the interval's end)
        at = datetime(2026, 6, 15, 16, 7, 30, tzinfo=UTC).timestamp()
        pv_pu = bench._bdew.values(at)[1]
        assert pv_pu * 3500 == pytest.approx(float(noon["pv_pv675_kw"]), abs=0.01)
        after = next(r for r in rows if r["timestamp"] == "2026-06-15T16:15:00Z")
        end = bench._bdew.values(at + 450)[1] * 3500
        assert end == pytest.approx((float(noon["pv_pv675_kw"]) + float(after["pv_pv675_kw"])) / 2, abs=0.01)
    finally:
        await bench.stop()


def test_the_feeders_per_load_api_refuses_what_it_cannot_set() -> None:
    from sim_hw.feeder.model import Feeder, FeederError

    feeder = Feeder.from_file(ROOT / "config" / "ieee13" / "IEEE13.dss")
    assert feeder.load_ratings()["671"] == (1155.0, 660.0)  # the published spot load (IEEE 13-node "Spot Loads")
    with pytest.raises(FeederError, match=r"load 'x1': no such load \(loads: 634a, 634b"):
        feeder.set_load("x1", 1.0, 0.0)
    with pytest.raises(FeederError, match=r"load 671: p_kw=-1.0: allowed >= 0"):
        feeder.set_load("671", -1.0, 0.0)
    with pytest.raises(FeederError, match=r"load 671 q_kvar=nan: expected a finite number"):
        feeder.set_load("671", 1.0, float("nan"))
    with pytest.raises(FeederError, match=r"element 'Line.650632' terminal 3: no such element terminal"):
        feeder.terminal_power("Line.650632", 3)
    with pytest.raises(FeederError, match=r"element 'Line.nope' terminal 1: no such element terminal"):
        feeder.terminal_power("Line.nope", 1)
    feeder.set_load("671", 0.0, 0.0)
    assert feeder.solve_lean()
    before = feeder.terminal_power("Line.650632", 1).real
    feeder.set_load("671", 1155.0, 660.0)
    assert feeder.solve_lean()
    assert feeder.terminal_power("Line.650632", 1).real - before == pytest.approx(1155.0, rel=0.1)  # + its losses
