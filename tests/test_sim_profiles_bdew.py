"""The realistic profiles (sim_hw/feeder/bdew.py): BDEW class shapes on local wall time, holidays as Sundays, the
typical year's weather and PV, the temperature factor, the AR(1) noise, and the [profiles] table's checks.

Expected values come from the files in the wheels (demandlib's BDEW table, pvlib's TMY3 file, read here with the
csv module) or from the documented parameters, never from the code under test.
"""

from __future__ import annotations

import csv
import os
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import demandlib
import numpy as np
import pvlib
import pytest

from sim_hw.config import BenchConfigError, parse_bench_config
from sim_hw.feeder.bdew import (
    AR_PHI,
    AR_SIGMA,
    BdewProfiles,
    ProfileError,
    ProfileSettings,
    ar1_noise,
    class_profile,
    temperature_factor,
    weather,
)

ROOT = Path(__file__).resolve().parent.parent
BDEW_TABLE = Path(demandlib.__file__).parent / "bdew" / "bdew_data" / "selp_series.csv"
TMY_FILE = Path(os.path.dirname(pvlib.__file__)) / "data" / "723170TYA.CSV"
NY = ProfileSettings(source="bdew")  # Greensboro NC, America/New_York, US-NC holidays
EST = timedelta(hours=5)  # local standard time is UTC-5 in winter


def published(cls: str, period: str, weekday: int) -> np.ndarray:
    """One day (96 quarter hours from 00:00) of the BDEW table as demandlib ships it; weekday 1 = Monday, 7 = Sunday."""
    with BDEW_TABLE.open() as fh:
        rows = [float(r[cls]) for r in csv.DictReader(fh) if r["period"] == period and r["weekday"] == str(weekday)]
    assert len(rows) == 96
    return np.array(rows)


def local_day(date: str, offset: timedelta = EST) -> np.ndarray:
    """The 96 quarter-hour starts [s UTC] of a local calendar day at a fixed UTC offset."""
    t0 = (datetime.fromisoformat(date).replace(tzinfo=UTC) + offset).timestamp()
    return t0 + 900.0 * np.arange(96)


def test_h0_evening_peak_over_night_minimum_is_the_published_winter_workday_ratio() -> None:
    table = published("h0", "winter", 3)
    shape = class_profile("H0", local_day("2026-01-14"), NY)  # a Wednesday in January, no holiday
    assert max(shape) / min(shape) == pytest.approx(max(table) / min(table), rel=0.005)  # 4.94 in the table
    assert int(np.argmax(shape)) == int(np.argmax(table))  # the evening peak at the same quarter hour (19:30)
    assert int(np.argmin(shape)) == int(np.argmin(table))


def test_g1_weekday_peak_over_sunday_peak_is_the_published_ratio() -> None:
    weekday, sunday = published("g1", "winter", 3), published("g1", "winter", 7)
    wed = class_profile("G1", local_day("2026-01-14"), NY)
    sun = class_profile("G1", local_day("2026-01-18"), NY)
    assert max(wed) / max(sun) == pytest.approx(max(weekday) / max(sunday), rel=1e-6)  # 13.6 in the table


def test_a_public_holiday_loads_as_a_sunday_in_the_configured_country_only() -> None:
    mlk = local_day("2026-01-19")  # Martin Luther King Jr. Day, a Monday: a US holiday, not a German one
    sunday = class_profile("G1", local_day("2026-01-18"), NY)
    assert np.allclose(class_profile("G1", mlk, NY), sunday, rtol=1e-12)
    de = ProfileSettings(source="bdew", country="DE", subdiv=None)
    monday = class_profile("G1", mlk, de)
    assert np.allclose(monday / monday.max(), published("g1", "winter", 1) / max(published("g1", "winter", 1)))


def test_the_profile_follows_the_wall_clock_across_both_daylight_saving_changes() -> None:
    # 8 March 2026, a Sunday in the BDEW winter: at 07:00 UTC the clocks go from 01:59 EST to 03:00 EDT
    utc = datetime(2026, 3, 8, 5, tzinfo=UTC).timestamp() + 900.0 * np.arange(96)  # from 00:00 EST
    shape = class_profile("G0", utc, NY)
    table = published("g0", "winter", 7)
    assert np.allclose(shape[:8] / table[:8], shape[0] / table[0])  # 00:00..01:45 EST: slots 0..7
    assert np.allclose(shape[8:92] / table[12:96] * table[0], shape[0])  # 03:00 EDT on: 02:00..02:45 never happen
    # 1 November 2026, a Sunday: 01:00..01:45 happen twice (EDT, then EST), both on the table's 01:00..01:45
    utc = datetime(2026, 11, 1, 4, tzinfo=UTC).timestamp() + 900.0 * np.arange(100)  # from 00:00 EDT
    shape = class_profile("G0", utc, NY)
    assert np.allclose(shape[4:8], table[4:8] / table[0] * shape[0]) and np.allclose(shape[8:12], shape[4:8])
    assert np.allclose(shape[12:100] / table[8:96] * table[0], shape[0])  # 02:00 EST on: the table from 02:00


def test_the_temperature_factor_has_the_documented_coefficients() -> None:
    f = temperature_factor(np.array([15.0, 30.0, 2.0, 20.0, 12.0]), NY)
    # 2 % per K above 20 degC, 0.5 % per K below 12 degC (docs/feeder.md, "Profiles")
    assert f == pytest.approx([1.0, 1.2, 1.05, 1.0, 1.0])


def test_the_ar1_noise_has_the_documented_spread_and_memory_and_repeats_with_its_seed() -> None:
    year = datetime(2026, 1, 1, tzinfo=UTC).timestamp() + 900.0 * np.arange(35040)
    x = ar1_noise("671", year, NY, seed=7) - 1.0
    assert np.std(x) == pytest.approx(AR_SIGMA, rel=0.1)  # 5 %
    assert np.corrcoef(x[:-1], x[1:])[0, 1] == pytest.approx(AR_PHI, abs=0.02)  # 0.9 per 15 minutes
    assert np.array_equal(ar1_noise("671", year[1000:1100], NY, seed=7) - 1.0, x[1000:1100])  # any window
    assert not np.allclose(ar1_noise("671", year[:100], NY, seed=8) - 1.0, x[:100])
    assert not np.allclose(ar1_noise("675a", year[:100], NY, seed=7) - 1.0, x[:100])  # one draw per load


def test_each_load_follows_its_class_at_its_own_power_factor_and_repeats_with_its_seed() -> None:
    loads = {"671": (1155.0, 660.0), "652": (128.0, 86.0)}
    start = datetime(2026, 7, 6, tzinfo=UTC).timestamp()
    fr = BdewProfiles(NY, loads).frame(start, 192)
    assert np.allclose(fr.load_q["671"] / fr.load_p["671"], 660 / 1155)
    assert np.allclose(fr.load_q["652"] / fr.load_p["652"], 86 / 128)
    again = BdewProfiles(NY, loads).frame(start + 86400, 96)  # the second day alone: the same numbers
    assert np.array_equal(again.load_p["671"], fr.load_p["671"][96:])
    other = BdewProfiles(NY, loads, seed=2).frame(start, 192)
    assert not np.allclose(other.load_p["671"], fr.load_p["671"])


def test_pv_is_zero_at_night_and_its_yearly_yield_is_plausible_for_greensboro() -> None:
    w = weather(NY, datetime(2026, 1, 1, tzinfo=UTC).timestamp(), 35040)
    assert np.all(w.pv_pu[w.ghi == 0] == 0) and np.count_nonzero(w.ghi == 0) > 15000
    local_midnight = (w.times - 5 * 3600) % 86400 == 0
    assert np.all(w.pv_pu[local_midnight] == 0)
    with TMY_FILE.open() as fh:  # the file's own yearly irradiation, read without pvlib
        rows = list(csv.reader(fh))[2:]
    ghi_file = sum(float(r[4]) for r in rows) / 1000  # column 5: GHI (W/m^2), hourly [kWh/m2/yr]
    # yield [kWh/kWp] = irradiation on the array x performance ratio: PR 0.75..0.90 for systems in service (Reich et
    # al., Prog. Photovolt. 20 (2012) 717), a latitude-tilted array receiving 1.0..1.17 x the horizontal irradiation
    assert 0.75 * ghi_file <= w.pv_pu.sum() / 4 <= 0.90 * 1.17 * ghi_file  # 1175..1649 kWh/kWp here
    assert w.ghi.sum() / 4000 == pytest.approx(ghi_file, rel=0.02)
    # dry bulb of the hour 01:00-02:00 EST (06:00-07:00 UTC): the mean of the intervals either side of its centre
    assert w.temperature[25:27].mean() == pytest.approx(float(rows[1][31]), abs=0.05)


def test_a_time_zone_other_than_the_weather_files_is_refused() -> None:
    bad = ProfileSettings(source="bdew", timezone="Europe/Berlin")
    with pytest.raises(ProfileError, match=r"profiles.timezone='Europe/Berlin'.*UTC-5.*'America/New_York'"):
        BdewProfiles(bad, {"671": (1155.0, 660.0)})


def bench_doc(profiles: str) -> dict:
    import tomllib

    return tomllib.loads(f'[feeder]\ndss = "{ROOT / "config" / "ieee13" / "IEEE13.dss"}"\n[profiles]\n{profiles}\n')


@pytest.mark.parametrize(
    ("profiles", "key", "allowed"),
    [
        ('classes = { "671" = "X9" }', "profiles.classes.671", "must be one of H0, G0, G1"),
        ('default_class = "h1"', "profiles.default_class", "must be one of 'H0', 'G0'"),
        ('source = "csv"', "profiles.source", "must be one of 'daily', 'bdew'"),
        ('tmy = "mine.csv"', "profiles.tmy", "must be one of '723170TYA.CSV', '703165TY.csv'"),
        ('country = "XX"', "profiles.country", "ISO 3166"),
        ('subdiv = "ZZ"', "profiles.subdiv", "a subdivision of US: AK, AL"),
        ('timezone = "Mars/Base"', "profiles.timezone", "an IANA time zone"),
        ("noise_sigma = 2.0", "profiles.noise_sigma", "0.0..0.5"),
        ("colour = 1", "profiles.colour", "unknown key"),
        ('clouds = "fog"', "profiles.clouds", "must be one of 'none', 'seeded'"),
        ('start = "noon"', "profiles.start", "a date-time with its UTC offset"),
    ],
)
def test_bad_profile_keys_name_the_key_and_what_is_allowed(profiles: str, key: str, allowed: str) -> None:
    with pytest.raises(BenchConfigError) as err:
        parse_bench_config({"devices": [], **bench_doc(profiles)}, ROOT / "config" / "x.toml")
    text = str(err.value)
    assert key in text
    assert any(a in text for a in allowed.split("|")), text


# --- the seeded cloud transients over the typical-year PV (the running bench's 1 s weather) ------------------------
SEEDED = ProfileSettings(source="bdew", clouds="seeded", cloud_seed=13)
DAY_LOADS = {"671": (1155.0, 660.0)}


def test_seeded_clouds_dim_the_tmy_pv_by_each_transients_depth_and_leave_it_alone_outside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network use: {args!r}")

    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    with TMY_FILE.open() as fh:  # the station's longitude, read without pvlib: line 1, field 6 [deg east]
        longitude = float(next(csv.reader(fh))[5])
    clear, cloudy = BdewProfiles(NY, DAY_LOADS), BdewProfiles(SEEDED, DAY_LOADS)
    day = datetime(2026, 4, 5, tzinfo=UTC).timestamp()  # a clear Sunday of the typical year

    def utc(solar_s: float) -> float:  # local mean solar time of day -> UTC: 4 minutes per degree of longitude
        return day + solar_s - longitude * 240.0

    events = cloudy.clouds.events
    assert len(events) == 24  # seed 13 (docs/feeder.md, "Profiles")
    for ev in events:  # the middle of each transient's hold: the clear-sky PV times 1 - depth
        t = utc(ev.start_s + ev.ramp_s + ev.hold_s / 2)
        pv = clear.values(t)[1]
        assert pv > 0.1 and cloudy.values(t)[1] == pytest.approx(pv * (1 - ev.depth), rel=1e-12)
    outside = [8 * 3600.0, 16.5 * 3600.0] + [(a.end_s + b.start_s) / 2 for a, b in pairwise(events)]
    for solar_s in outside:  # before, after and between the transients the factor is exactly 1
        assert cloudy.values(utc(solar_s)) == clear.values(utc(solar_s))


def test_a_seeded_cloud_edge_moves_the_pv_no_faster_than_its_deepest_shortest_ramp() -> None:
    from sim_hw.feeder.profiles import CLOUD_DEPTH, CLOUD_RAMP_S

    cloudy = BdewProfiles(SEEDED, DAY_LOADS)
    first = cloudy.clouds.events[0]
    t0 = datetime(2026, 4, 5, tzinfo=UTC).timestamp() + first.start_s - cloudy.clouds.offset_s - 30
    pv = np.array([cloudy.values(t0 + k)[1] for k in range(int(first.end_s - first.start_s) + 60)])  # 1 s steps
    steps = np.abs(np.diff(pv))
    # the steepest edge: the deepest cloud over the shortest ramp, on the highest PV of the window; the typical
    # year's own change over a second (its 15-minute points) is far below 1e-3
    bound = CLOUD_DEPTH[1] / CLOUD_RAMP_S[0] * pv.max() + 1e-3
    assert steps.max() <= bound
    assert steps.max() > 10 * np.median(steps)  # the edge is there: a ramp, not the slow sky


def test_the_bench_reads_the_profiles_at_their_own_start_plus_the_time_elapsed() -> None:
    from sim_hw.bench import Bench

    doc = bench_doc('source = "bdew"\nstart = 2026-04-05T16:00:00Z')
    cfg = parse_bench_config({"devices": [], **doc}, ROOT / "config" / "x.toml")
    bench = Bench(cfg, wall_clock=lambda: 1_800_000_000.0)  # the bench on the wall clock, any date and hour
    at = datetime(2026, 4, 5, 16, tzinfo=UTC).timestamp()
    assert cfg.profiles is not None and cfg.profiles.start == at
    assert bench.profile_time(1_800_000_000.0) == at
    assert bench.profile_time(1_800_000_090.5) == at + 90.5
