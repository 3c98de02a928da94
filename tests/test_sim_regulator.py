"""The simulated regulator control: band, time delay, line-drop compensation, limits, manual taps, over Modbus TCP.

Each test runs the bench step by hand: ``actuate`` against a recording feeder, ``observe`` a Solution built
here (regulator terminal 2 voltages and currents from plain numbers), then ``server.update`` with
``values(t)``; the client reads and writes config/maps/sim-regulator.toml's registers over a socket on
127.0.0.1. Expected numbers are worked out in the comments, not taken from the model.
"""

from __future__ import annotations

import cmath
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers.aio import async_test
from helpers.docmap import doc_mismatches
from helpers.served import ServedModel

from protocols.modbus.registermap import RegisterMap, Table, decode_point, encode_point, parse_register_map
from sim_hw.devices.regulator import RegulatorController, RegulatorError, RevertReason
from sim_hw.feeder.solution import Solution, Terminal

ROOT = Path(__file__).resolve().parent.parent
MAP_FILE = ROOT / "config" / "maps" / "sim-regulator.toml"
DOC_FILE = ROOT / "docs" / "devices" / "sim-regulator.md"
T0 = 1_780_000_000.0
UNIT = 3
ANGLES = (0.0, -120.0, 120.0)


def load_map() -> RegisterMap:
    with MAP_FILE.open("rb") as fh:
        return parse_register_map(tomllib.load(fh), "sim-regulator")


RMAP = load_map()
MODE, BAND_CENTER, BANDWIDTH, TIME_DELAY, LDC_R = 0, 1, 2, 3, 4  # holding addresses (the doc's table)
CT_PRIMARY, TARGET_A = 7, 10


class RecordingFeeder:
    """Stands in for sim_hw.feeder.model.Feeder: records the taps pushed."""

    def __init__(self) -> None:
        self.taps: list[tuple[int, int, int]] = []

    def set_regulator_taps(self, taps: tuple[int, int, int]) -> None:
        self.taps.append(taps)


def reg_solution(
    t: float,
    v_sec: tuple[float, float, float],
    i_load: tuple[complex, complex, complex] = (0j, 0j, 0j),
    *,
    terminals: bool = True,
    line: bool = True,
) -> Solution:
    """Regulated voltages ``v_sec`` x 20 V (PT 20) at 0/-120/+120 deg; ``i_load`` [A] relative to each phase's angle.

    With ``terminals`` the units' terminal 2 carry V and the current INTO the unit (minus the load current);
    without, only bus rg60 and (with ``line``) Line.650632 terminal 1 carrying the load current.
    """
    v = {p: cmath.rect(vs * 20.0, math.radians(a)) for p, vs, a in zip("abc", v_sec, ANGLES, strict=True)}
    i = {p: il * cmath.rect(1.0, math.radians(a)) for p, il, a in zip("abc", i_load, ANGLES, strict=True)}
    terms: dict[str, Terminal] = {}
    if terminals:
        for k, p in enumerate("abc"):
            terms[f"Transformer.Reg{k + 1}/2"] = Terminal(f"Transformer.Reg{k + 1}", "rg60", {p: v[p]}, {p: -i[p]})
    elif line:
        terms["Line.650632/1"] = Terminal("Line.650632", "rg60", dict(v), dict(i))
    return Solution(t=t, converged=True, bus_v={"rg60": v}, base_kv_ln={"rg60": 2.4}, terminals=terms)


class Rig(ServedModel):
    """One regulator control served on a free port, its client, and the bench step done by hand."""

    def __init__(self, model: RegulatorController) -> None:
        super().__init__(model, RMAP, UNIT)
        self.feeder = RecordingFeeder()

    async def step(
        self, t: float, v_sec: tuple[float, float, float], i_load: tuple[complex, complex, complex] = (0j, 0j, 0j)
    ) -> None:
        self.model.actuate(t, self.feeder)
        self.model.observe(t, reg_solution(t, v_sec, i_load))
        await self.server.update(UNIT, self.model.values(t))

    async def taps(self) -> tuple[int, int, int]:
        rr = await self.client.read_input_registers(0, count=3, device_id=UNIT)
        assert not rr.isError(), rr
        return tuple(decode_point(RMAP.point(f"tap_{p}"), [w]) for p, w in zip("abc", rr.registers, strict=True))  # type: ignore[return-value]

    async def write(self, name: str, *values: float) -> int:
        """Write ``values`` from point ``name``'s address on (consecutive one-register points); 0 or the exception."""
        first = RMAP.point(name)
        by_address = {p.address: p for p in RMAP.points if p.table is Table.HOLDING}
        words: list[int] = []
        for k, value in enumerate(values):
            words += encode_point(by_address[first.address + k], value)  # type: ignore[arg-type]
        return await self.write_words(first.address, words)


def control(**options: Any) -> RegulatorController:
    return RegulatorController("reg1", {"taps": [0, 0, 0]} | options)


IN_BAND = (122.0, 122.0, 122.0)


# --- automatic: band and time delay ------------------------------------------------------------------------


@async_test
async def test_above_band_for_less_than_the_delay_does_nothing_then_steps_down_and_continues() -> None:
    # band 122 +- 1 V: 124 V on phase a is 1 V above the top (123 V); time delay 30 s, inter-tap 2 s
    async with Rig(control()) as rig:
        for k in range(30):  # above from T0 to T0 + 29: 29 s < 30 s
            await rig.step(T0 + k, (124.0, 122.0, 122.0))
        assert await rig.taps() == (0, 0, 0) and await rig.read("band_a") == 1
        assert set(rig.feeder.taps) == {(0, 0, 0)}
        await rig.step(T0 + 30, (124.0, 122.0, 122.0))  # 30 s out of band: the step is decided...
        assert await rig.taps() == (0, 0, 0)
        await rig.step(T0 + 31, (124.0, 122.0, 122.0))  # ...and made at the next step
        assert await rig.taps() == (-1, 0, 0) and rig.feeder.taps[-1] == (-1, 0, 0)
        assert await rig.read("operation_count_a") == 1
        # still above: one more step every 2 s (decided at T0 + 32 and T0 + 34, made at T0 + 33 and T0 + 35)
        await rig.step(T0 + 32, (124.0, 122.0, 122.0))
        assert await rig.taps() == (-1, 0, 0)
        await rig.step(T0 + 33, (124.0, 122.0, 122.0))
        assert await rig.taps() == (-2, 0, 0)
        await rig.step(T0 + 34, (124.0, 122.0, 122.0))
        await rig.step(T0 + 35, (124.0, 122.0, 122.0))
        assert await rig.taps() == (-3, 0, 0) and await rig.read("operation_count_a") == 3
        assert await rig.read("operation_count_b") == 0


@async_test
async def test_back_in_band_resets_the_timer() -> None:
    async with Rig(control()) as rig:
        for k in range(30):  # below 121 V from T0 to T0 + 29
            await rig.step(T0 + k, (122.0, 120.5, 122.0))
        await rig.step(T0 + 30, IN_BAND)  # inside: the timer resets
        for k in range(31, 61):  # below again from T0 + 31: 29 s at T0 + 60
            await rig.step(T0 + k, (122.0, 120.5, 122.0))
        assert await rig.taps() == (0, 0, 0) and await rig.read("band_b") == -1
        await rig.step(T0 + 61, (122.0, 120.5, 122.0))  # 30 s: raise decided
        await rig.step(T0 + 62, (122.0, 120.5, 122.0))
        assert await rig.taps() == (0, 1, 0)


@async_test
async def test_the_band_edges_count_as_inside() -> None:
    async with Rig(control(time_delay_s=5)) as rig:
        for k in range(12):
            await rig.step(T0 + k, (123.0, 121.0, 122.0))  # exactly on the top and bottom edges
        assert await rig.taps() == (0, 0, 0)
        assert [await rig.read(f"band_{p}") for p in "abc"] == [0, 0, 0]


@async_test
async def test_taps_stop_at_the_limits() -> None:
    async with Rig(control(taps=[-15, 15, 0], time_delay_s=5)) as rig:
        for k in range(20):
            await rig.step(T0 + k, (130.0, 110.0, 122.0))  # a far above, b far below, for 19 s
        # one step each (decided at T0 + 5, made at T0 + 6), then nothing: the limits are -16 and +16
        assert await rig.taps() == (-16, 16, 0)
        assert await rig.read("operation_count_a") == 1 and await rig.read("operation_count_b") == 1
        assert rig.feeder.taps[-1] == (-16, 16, 0)


@async_test
async def test_ganged_units_follow_the_monitored_phase() -> None:
    async with Rig(control(ganged=True, time_delay_s=5)) as rig:
        for k in range(7):
            await rig.step(T0 + k, (124.0, 122.0, 120.0))  # a above, c below: phase a decides for all
        assert await rig.taps() == (-1, -1, -1)
        assert [await rig.read(f"operation_count_{p}") for p in "abc"] == [1, 1, 1]


# --- line-drop compensation ------------------------------------------------------------------------------


def ldc_hand(v_sec: float, i_a: float, lag_deg: float, r_v: float, x_v: float, ct_a: float) -> float:
    """|V/PT - (R + jX) I/CT| expanded by hand: I/CT = m (cos f - j sin f), f the lag."""
    m, c, s = i_a / ct_a, math.cos(math.radians(lag_deg)), math.sin(math.radians(lag_deg))
    drop_re = m * (r_v * c + x_v * s)  # Re[(R + jX)(c - js)] = Rc + Xs
    drop_im = m * (x_v * c - r_v * s)  # Im[(R + jX)(c - js)] = Xc - Rs
    return math.hypot(v_sec - drop_re, -drop_im)


@async_test
async def test_compensated_voltage_equals_the_hand_calculation() -> None:
    # IEEE 13-node settings: R 3 V, X 9 V, CT 700 A, PT 20. Load 350 A lagging 30 deg at 126 V secondary:
    # I/CT = 0.5; drop = 0.5 (3 cos30 + 9 sin30) + j 0.5 (9 cos30 - 3 sin30) = 3.549 + j3.147 V;
    # |126 - 3.549 - j3.147| = 122.491 V: inside 121..123, so no tap change although 126 V is above the band.
    expected = ldc_hand(126.0, 350.0, 30.0, 3.0, 9.0, 700.0)
    assert expected == pytest.approx(122.491, abs=0.001)
    load = cmath.rect(350.0, math.radians(-30.0))
    async with Rig(RegulatorController("reg1", {})) as rig:  # all defaults: the IEEE 13-node settings
        for k in range(40):
            await rig.step(T0 + k, (126.0, 126.0, 126.0), (load, load, load))
        for p in "abc":
            assert await rig.read(f"v_reg_{p}") == pytest.approx(126.0, abs=0.005)
            assert await rig.read(f"v_comp_{p}") == pytest.approx(expected, abs=0.006)
            assert await rig.read(f"i_load_{p}") == pytest.approx(350.0, rel=1e-6)
            assert await rig.read(f"band_{p}") == 0
        assert await rig.taps() == (10, 8, 11)  # the published IEEE 13-node taps, unchanged
        # the same voltage with no load current is 3 V above the band: the taps go down after 30 s
        for k in range(40, 72):
            await rig.step(T0 + k, (126.0, 126.0, 126.0))
        assert await rig.read("v_comp_a") == pytest.approx(126.0, abs=0.005)
        assert await rig.taps() == (9, 7, 10)


def test_rg60_bus_and_line_current_are_the_fallback_without_regulator_terminals() -> None:
    load = cmath.rect(210.0, math.radians(-25.0))
    model = RegulatorController("reg1", {"ldc_r_v": 5.0, "ldc_x_v": -2.0})
    model.observe(T0, reg_solution(T0, (124.0, 123.0, 122.0), (load, load, load), terminals=False))
    values = model.values(T0)
    for p, v in zip("abc", (124.0, 123.0, 122.0), strict=True):
        assert values[f"v_reg_{p}"] == pytest.approx(v)
        assert values[f"v_comp_{p}"] == pytest.approx(ldc_hand(v, 210.0, 25.0, 5.0, -2.0, 700.0))
    bare = RegulatorController("reg1", {})
    bare.observe(T0, reg_solution(T0, (124.0, 123.0, 122.0), terminals=False, line=False))
    assert bare.values(T0)["v_comp_a"] == pytest.approx(124.0)  # no current known: no compensation


def test_a_solution_without_the_units_or_the_bus_names_the_bus() -> None:
    sol = Solution(t=T0, converged=True, bus_v={"650": {"a": 2400 + 0j}}, base_kv_ln={"650": 2.4})
    with pytest.raises(RegulatorError, match="bus = 'rg60'"):
        RegulatorController("reg1", {}).observe(T0, sol)


# --- manual mode and writes ---------------------------------------------------------------------------------


@async_test
async def test_manual_tap_targets_move_one_step_per_inter_tap_delay() -> None:
    async with Rig(control()) as rig:
        await rig.step(T0, (130.0, 130.0, 130.0))
        assert await rig.write("tap_target_a", 3) == 1  # automatic mode: illegal function
        assert await rig.write("mode", 0) == 0
        assert await rig.write("tap_target_a", 3, 0, -1) == 0
        taps = []
        for k in range(1, 7):
            await rig.step(T0 + k, (130.0, 130.0, 130.0))  # far above the band: manual mode ignores it
            taps.append(await rig.taps())
        # one step per 2 s from T0 + 1: a reaches 3 at T0 + 5, c reaches -1 at T0 + 1
        assert taps == [(1, 0, -1), (1, 0, -1), (2, 0, -1), (2, 0, -1), (3, 0, -1), (3, 0, -1)]
        assert await rig.read("operation_count_a") == 3 and await rig.read("operation_count_c") == 1
        assert await rig.read("tap_target_a") == 3
        assert await rig.write("tap_target_b", -17) == 3
        assert await rig.write("tap_target_b", 17) == 3
        assert await rig.write("tap_target_b", -16) == 0


@async_test
async def test_a_refused_target_in_automatic_mode_changes_nothing() -> None:
    async with Rig(control()) as rig:
        await rig.step(T0, IN_BAND)
        assert await rig.write("tap_target_a", 5) == 1
        for k in range(1, 5):
            await rig.step(T0 + k, IN_BAND)
        assert await rig.taps() == (0, 0, 0) and await rig.read("tap_target_a") == 0


@async_test
async def test_switching_to_manual_and_a_target_in_one_write_is_accepted() -> None:
    async with Rig(control()) as rig:
        await rig.step(T0, IN_BAND)
        rr = await rig.client.write_registers(MODE, [0, 1220, 20, 30, 30, 90, 200, 700, 0, 0, 2], device_id=UNIT)
        assert not rr.isError(), rr
        await rig.step(T0 + 1, IN_BAND)
        assert await rig.taps() == (1, 0, 0) and await rig.read("mode") == 0


@pytest.mark.parametrize(
    ("point", "value"),
    [
        ("bandwidth_v", 0.0),  # bandwidth must be > 0 (and at least 1 V)
        ("bandwidth_v", 7.0),
        ("band_center_v", 140.0),
        ("time_delay_s", 0),
        ("ldc_r_v", -25.0),
        ("ldc_x_v", 24.1),
        ("pt_ratio", 0.0),
        ("ct_primary_a", 0),
        ("mode", 2),
    ],
)
@async_test
async def test_bad_settings_are_refused_with_3_and_keep_the_old_ones(point: str, value: float) -> None:
    async with Rig(control()) as rig:
        await rig.step(T0, IN_BAND)
        assert await rig.write(point, value) == 3
        await rig.step(T0 + 1, IN_BAND)
        read = [await rig.read(n) for n in ("mode", "band_center_v", "bandwidth_v", "time_delay_s", "ldc_r_v")]
        assert read == [1, pytest.approx(122.0), pytest.approx(2.0), 30, pytest.approx(3.0)]
        assert [await rig.read(n) for n in ("ldc_x_v", "pt_ratio", "ct_primary_a")] == [
            pytest.approx(9.0),
            pytest.approx(20.0),
            700,
        ]


@async_test
async def test_new_settings_take_effect_at_the_next_step() -> None:
    async with Rig(control(time_delay_s=5)) as rig:
        await rig.step(T0, IN_BAND)
        assert await rig.write("band_center_v", 120.0, 3.0, 5) == 0  # band 118.5..121.5
        for k in range(1, 8):
            await rig.step(T0 + k, IN_BAND)  # 122 V is now above the band: lower after 5 s
        assert await rig.read("band_center_v") == pytest.approx(120.0)
        assert await rig.read("bandwidth_v") == pytest.approx(3.0)
        assert await rig.read("band_a") == 1
        assert await rig.taps() == (-1, -1, -1)


@async_test
async def test_a_write_to_reserved_registers_is_an_illegal_address() -> None:
    async with Rig(control()) as rig:
        await rig.step(T0, IN_BAND)
        rr = await rig.client.write_register(8, 1, device_id=UNIT)
        assert rr.isError() and rr.exception_code == 2


# --- communication-loss fallback ------------------------------------------------------------------------------


@async_test
async def test_manual_mode_without_a_master_write_falls_back_to_automatic_and_stops_the_movement() -> None:
    async with Rig(control(revert_timeout_s=30)) as rig:
        await rig.step(T0, IN_BAND)
        assert await rig.write("mode", 0) == 0
        assert await rig.write("tap_target_a", 16) == 0  # the last master write, at T0
        for k in range(1, 30):
            await rig.step(T0 + k, IN_BAND)
        # one step per 2 s from T0 + 1: tap 15 at T0 + 29, one second before the fallback
        assert await rig.taps() == (15, 0, 0)
        assert await rig.read("mode") == 0 and await rig.read("revert_remaining_s") == 1
        await rig.step(T0 + 30, IN_BAND)
        assert await rig.read("mode") == 1
        assert await rig.read("reverted_count") == 1
        assert await rig.read("last_revert_reason") == RevertReason.COMMUNICATION_LOSS_MANUAL == 1
        assert await rig.read("tap_target_a") == 15  # the movement under way stopped where it was
        for k in range(31, 40):
            await rig.step(T0 + k, IN_BAND)
        assert await rig.taps() == (15, 0, 0)  # and the control, in band, keeps it there
        assert await rig.read("revert_remaining_s") == 0


@async_test
async def test_a_masters_band_centre_falls_back_to_the_panel_band_centre() -> None:
    async with Rig(control(revert_timeout_s=60, band_center_v=121.0)) as rig:
        await rig.step(T0, IN_BAND)
        assert await rig.read("panel_band_center_v") == pytest.approx(121.0)  # the power-up setting
        assert await rig.write("band_center_v", 118.0, 3.0) == 0  # CVR: a lower band, a wider bandwidth
        await rig.step(T0 + 1, IN_BAND)
        assert await rig.read("band_center_v") == pytest.approx(118.0)
        assert await rig.read("revert_remaining_s") == 59
        await rig.step(T0 + 60, IN_BAND)
        assert await rig.read("mode") == 1 and await rig.read("band_center_v") == pytest.approx(121.0)
        assert await rig.read("bandwidth_v") == pytest.approx(3.0)  # the other settings stay as written
        assert await rig.read("last_revert_reason") == RevertReason.COMMUNICATION_LOSS_BAND_CENTER == 2


@async_test
async def test_every_master_write_restarts_the_timer_a_heartbeat_and_a_refused_one_too() -> None:
    async with Rig(control(revert_timeout_s=30)) as rig:
        await rig.step(T0, IN_BAND)
        assert await rig.write("mode", 0) == 0
        await rig.step(T0 + 20, IN_BAND)
        assert await rig.write("heartbeat", 1) == 0
        await rig.step(T0 + 45, IN_BAND)
        assert await rig.read("mode") == 0 and await rig.read("heartbeat") == 1
        assert await rig.write("tap_target_a", 17) == 3  # refused, but the master spoke at T0 + 45
        await rig.step(T0 + 74, IN_BAND)
        assert await rig.read("mode") == 0 and await rig.read("revert_remaining_s") == 1
        await rig.step(T0 + 75, IN_BAND)
        assert await rig.read("mode") == 1 and await rig.read("reverted_count") == 1


@async_test
async def test_a_panel_band_centre_is_not_an_override_and_sets_the_band_centre() -> None:
    async with Rig(control(revert_timeout_s=30)) as rig:
        await rig.step(T0, IN_BAND)
        assert await rig.write("panel_band_center_v", 120.0) == 0
        for k in range(1, 200, 20):
            await rig.step(T0 + k, IN_BAND)
        assert await rig.read("band_center_v") == pytest.approx(120.0)
        assert await rig.read("panel_band_center_v") == pytest.approx(120.0)
        assert await rig.read("reverted_count") == 0 and await rig.read("revert_remaining_s") == 0


@async_test
async def test_automatic_with_the_panel_band_centre_and_a_zero_timeout_never_revert() -> None:
    async with Rig(control(revert_timeout_s=10)) as rig:
        for k in range(0, 100, 10):
            await rig.step(T0 + k, IN_BAND)
        assert await rig.read("reverted_count") == 0
    async with Rig(control(revert_timeout_s=0, mode="manual")) as rig:
        for k in range(0, 1000, 100):
            await rig.step(T0 + k, IN_BAND)
        assert await rig.read("mode") == 0 and await rig.read("reverted_count") == 0


@async_test
async def test_a_control_powered_up_in_manual_mode_times_from_its_first_scan() -> None:
    async with Rig(control(mode="manual")) as rig:  # the default timeout, 300 s
        await rig.step(T0, IN_BAND)
        assert await rig.read("revert_timeout_s") == 300 and await rig.read("revert_remaining_s") == 300
        await rig.step(T0 + 300, IN_BAND)
        assert await rig.read("mode") == 1 and await rig.read("last_revert_reason") == 1


@pytest.mark.parametrize(("point", "value"), [("revert_timeout_s", 9), ("revert_timeout_s", 7201),
                                              ("panel_band_center_v", 99.0), ("panel_band_center_v", 135.1)])  # fmt: skip
@async_test
async def test_fallback_settings_out_of_range_are_refused_with_3(point: str, value: float) -> None:
    async with Rig(control()) as rig:
        await rig.step(T0, IN_BAND)
        assert await rig.write(point, value) == 3
        await rig.step(T0 + 1, IN_BAND)
        assert await rig.read("revert_timeout_s") == 300
        assert await rig.read("panel_band_center_v") == pytest.approx(122.0)


@async_test
async def test_writes_between_steps_are_timed_by_the_injected_clock() -> None:
    now = [T0]
    model = RegulatorController("reg1", {"taps": [0, 0, 0], "revert_timeout_s": 10}, clock=lambda: now[0])
    async with Rig(model) as rig:
        await rig.step(T0, IN_BAND)
        now[0] = T0 + 4.5
        assert await rig.write("mode", 0) == 0  # between two scans
        now[0] = T0 + 14
        await rig.step(T0 + 14, IN_BAND)
        assert await rig.read("mode") == 0 and await rig.read("revert_remaining_s") == 1  # 0.5 s, rounded up
        now[0] = T0 + 15
        await rig.step(T0 + 15, IN_BAND)
        assert await rig.read("mode") == 1


# --- options ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"bandwidth_v": 0}, "bandwidth_v"),
        ({"taps": [0, 0, 17]}, "taps"),
        ({"taps": [0, 0]}, "taps"),
        ({"mode": "remote"}, "mode"),
        ({"regulators": "Transformer.Reg1"}, "regulators"),
        ({"ganged": 1}, "ganged"),
        ({"ganged_phase": "d"}, "ganged_phase"),
        ({"operation_counts": [0, -1, 0]}, "operation_counts"),
        ({"ct_primary_a": math.nan}, "ct_primary_a"),
        ({"revert_timeout_s": 3}, "revert_timeout_s"),
        ({"revert_timeout_s": True}, "revert_timeout_s"),
        ({"band_centre_v": 120}, "band_centre_v"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(RegulatorError, match=f"{key} = "):
        RegulatorController("reg1", options)


def test_model_produces_exactly_the_maps_points_and_they_encode() -> None:
    model = RegulatorController("reg1", {})
    model.actuate(T0, RecordingFeeder())
    model.observe(T0, reg_solution(T0, IN_BAND, (300j, 300j, 300j)))
    values = model.values(T0)
    assert set(values) == {p.name for p in RMAP.points}
    for p in RMAP.points:
        encode_point(p, values[p.name])


# --- map and doc ---------------------------------------------------------------------------------------


def test_doc_register_table_matches_the_map() -> None:
    assert doc_mismatches(DOC_FILE.read_text(), RMAP, check_access=True) == []


def test_doc_check_catches_a_drifted_scale() -> None:
    text = DOC_FILE.read_text()
    drifted = text.replace(
        "| bandwidth_v | holding | 2 | uint16 | 1 | 0.1 |", "| bandwidth_v | holding | 2 | uint16 | 1 | 0.01 |"
    )
    assert drifted != text
    assert doc_mismatches(drifted, RMAP, check_access=True) == ["bandwidth_v.scale: doc '0.01', map '0.1'"]


# --- against the real IEEE 13-node feeder -------------------------------------------------------------------


def test_automatic_control_on_the_real_feeder_raises_the_taps_into_the_band() -> None:
    from sim_hw.feeder.model import Feeder

    feeder = Feeder.from_file(ROOT / "config" / "ieee13" / "IEEE13.dss")
    model = RegulatorController("reg1", {"taps": [0, 0, 0]})  # IEEE 13-node settings, taps from neutral
    for k in range(120):
        model.actuate(T0 + k, feeder)
        sol = feeder.solve(T0 + k)
        model.observe(T0 + k, sol)
        values = model.values(T0 + k)
        if k == 0:  # 1.0 pu at the source with neutral taps: the compensated voltages sit below 121 V
            assert all(values[f"band_{p}"] == -1 for p in "abc")
    assert feeder.regulator_taps() == tuple(model.taps)
    assert all(0 < tap <= 16 for tap in model.taps)
    for p in "abc":
        assert values[f"v_reg_{p}"] == pytest.approx(abs(sol.v("rg60")[p]) / 20.0)
        # raising stops at the first tap inside 121..123 V: one step (0.625 % of ~120 V = 0.75 V) above the edge
        assert 121.0 <= values[f"v_comp_{p}"] < 121.0 + 0.8
    assert [values[f"operation_count_{p}"] for p in "abc"] == model.taps
