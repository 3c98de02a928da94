"""The simulated capacitor bank controller: SBO, lockout, local control, served over real Modbus TCP.

Each test runs the bench step by hand: ``actuate`` against a recording feeder, ``observe`` a Solution built
here from plain numbers, then ``server.update`` with ``values(t)``; the client writes and reads the
registers of config/maps/sim-capbank.toml over a socket on 127.0.0.1. Expected numbers are worked out
in the comments, not taken from the model.
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

from protocols.modbus.registermap import RegisterMap, Table, encode_point, parse_register_map
from sim_hw.devices.capbank import CapBankController, CapBankError, Result, RevertReason
from sim_hw.devices.modbus_server import WriteRequest
from sim_hw.feeder.solution import Solution, Terminal

ROOT = Path(__file__).resolve().parent.parent
MAP_FILE = ROOT / "config" / "maps" / "sim-capbank.toml"
DOC_FILE = ROOT / "docs" / "devices" / "sim-capbank.md"
T0 = 1_780_000_000.0
UNIT = 1
# Holding addresses of the map (the doc's register table); written raw, as a master would.
SELECT, OPERATE, MODE, V_LOW, REVERT_TIMEOUT, HEARTBEAT = 0, 2, 10, 11, 14, 15
CLOSE, OPEN = 1, 2


def load_map() -> RegisterMap:
    with MAP_FILE.open("rb") as fh:
        return parse_register_map(tomllib.load(fh), "sim-capbank")


CMAP = load_map()


class RecordingFeeder:
    """Stands in for sim_hw.feeder.model.Feeder: records what the controller pushes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def set_capacitor(self, name: str, closed: bool) -> None:
        self.calls.append((name, closed))


def solution(t: float, v_sec: float | tuple[float, float, float] = 120.0, *, bus: str = "675", **kw: Any) -> Solution:
    """Bus ``bus`` at ``v_sec`` x 20 V primary per phase (PT 2400/120), balanced angles."""
    vs = v_sec if isinstance(v_sec, tuple) else (v_sec,) * 3
    phasors = {p: cmath.rect(v * 20.0, math.radians(a)) for p, v, a in zip("abc", vs, (0, -120, 120), strict=True)}
    return Solution(t=t, converged=True, bus_v={bus: phasors}, base_kv_ln={bus: 2.4}, **kw)


class Rig(ServedModel):
    """One controller served on a free port, its client, and the bench step done by hand."""

    def __init__(self, model: CapBankController) -> None:
        super().__init__(model, CMAP, UNIT)
        self.feeder = RecordingFeeder()

    async def step(self, t: float, v_sec: float | tuple[float, float, float] = 120.0, **kw: Any) -> None:
        self.model.actuate(t, self.feeder)
        self.model.observe(t, solution(t, v_sec, **kw))
        await self.server.update(UNIT, self.model.values(t))

    async def write(self, address: int, values: list[int]) -> int:
        return await self.write_words(address, values)

    async def select(self, action: int, token: int) -> int:
        return await self.write(SELECT, [action, token])

    async def operate(self, action: int, token: int) -> int:
        return await self.write(OPERATE, [action, token])

    async def last_result(self) -> int:
        return int(await self.read("last_result"))


def bank(**options: Any) -> CapBankController:
    return CapBankController("cbc1", options)


# --- select before operate --------------------------------------------------------------------------------


@async_test
async def test_sbo_close_happy_path_switches_at_the_next_step_and_counts() -> None:
    async with Rig(bank(closed=False)) as rig:
        await rig.step(T0, 126.0)
        assert rig.feeder.calls == [("cap675", False)]
        assert await rig.read("closed") is False and await rig.read("kvar_total") == 0.0
        assert await rig.select(CLOSE, 0x1234) == 0
        await rig.step(T0 + 1, 126.0)  # registers follow the model at every scan
        assert await rig.last_result() == Result.SELECTED == 2
        assert await rig.read("select_armed") is True and await rig.read("sbo_select") == CLOSE
        assert await rig.read("select_remaining_s") == 9  # selected at T0, 10 s timeout, now T0 + 1
        assert await rig.operate(CLOSE, 0x1234) == 0
        assert rig.feeder.calls[-1] == ("cap675", False)  # nothing moves before the next step
        await rig.step(T0 + 2, 126.0)
        assert await rig.last_result() == Result.OPERATED == 1
        assert rig.feeder.calls[-1] == ("cap675", True)
        assert await rig.read("closed") is True
        assert await rig.read("operation_count") == 1
        assert await rig.read("select_armed") is False
        # no capacitor current in this solution: Q = 200 kvar x (V / V_rated)^2 with V_rated = 4160 / sqrt(3) V,
        # = 200 x 3 x 2520^2 / 4160^2 = 220.17 kvar per phase, 660.52 kvar for the bank
        assert await rig.read("kvar_a") == pytest.approx(220.17, abs=0.06)
        assert await rig.read("kvar_total") == pytest.approx(660.52, abs=0.06)
        assert await rig.read("v_b") == pytest.approx(126.0, abs=0.005)


@async_test
async def test_operate_without_select_is_refused_with_3_and_nothing_changes() -> None:
    async with Rig(bank()) as rig:
        await rig.step(T0)
        assert await rig.operate(OPEN, 77) == 3
        await rig.step(T0 + 1)
        assert await rig.last_result() == Result.NO_SELECT == 10
        assert rig.feeder.calls == [("cap675", True), ("cap675", True)]
        assert await rig.read("operation_count") == 0 and await rig.read("closed") is True


@async_test
async def test_operate_with_a_wrong_token_is_refused_and_consumes_the_select() -> None:
    async with Rig(bank()) as rig:
        await rig.step(T0)
        assert await rig.select(OPEN, 7) == 0
        assert await rig.operate(OPEN, 8) == 3
        await rig.step(T0 + 1)
        assert await rig.last_result() == Result.WRONG_TOKEN == 11
        assert await rig.operate(OPEN, 7) == 3  # the refused operate used the select up
        await rig.step(T0 + 2)
        assert await rig.last_result() == Result.NO_SELECT
        assert rig.feeder.calls[-1] == ("cap675", True) and await rig.read("operation_count") == 0


@async_test
async def test_operate_after_the_select_timeout_is_refused() -> None:
    async with Rig(bank()) as rig:
        await rig.step(T0)
        assert await rig.select(OPEN, 99) == 0
        for k in range(1, 12):
            await rig.step(T0 + k)
        assert await rig.read("select_armed") is False  # 11 s > 10 s
        assert await rig.operate(OPEN, 99) == 3
        await rig.step(T0 + 12)
        assert await rig.last_result() == Result.SELECT_EXPIRED == 12
        assert await rig.read("closed") is True and await rig.read("operation_count") == 0


@async_test
async def test_operate_exactly_at_the_timeout_is_accepted() -> None:
    async with Rig(bank()) as rig:
        await rig.step(T0)
        assert await rig.select(OPEN, 5) == 0
        await rig.step(T0 + 10)
        assert await rig.operate(OPEN, 5) == 0
        await rig.step(T0 + 11)
        assert await rig.read("closed") is False


@async_test
async def test_operate_for_another_action_than_selected_is_refused() -> None:
    async with Rig(bank(closed=False)) as rig:
        await rig.step(T0)
        assert await rig.select(CLOSE, 3) == 0
        assert await rig.operate(OPEN, 3) == 3
        await rig.step(T0 + 1)
        assert await rig.last_result() == Result.ACTION_MISMATCH == 13


@pytest.mark.parametrize(
    ("address", "values"),
    [
        (SELECT, [3, 1]),  # no action 3
        (SELECT, [OPEN, 0]),  # token 0
        (SELECT, [OPEN, 1, OPEN, 1]),  # select and operate in one request
        (SELECT, [OPEN, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]),  # select and the mode register together
    ],
)
@async_test
async def test_malformed_commands_are_refused_as_bad_requests(address: int, values: list[int]) -> None:
    async with Rig(bank()) as rig:
        await rig.step(T0)
        assert await rig.write(address, values) == 3
        await rig.step(T0 + 1)
        assert await rig.last_result() == Result.BAD_REQUEST == 16
        assert await rig.read("select_armed") is False


@async_test
async def test_half_a_select_and_reserved_registers_are_refused() -> None:
    async with Rig(bank()) as rig:
        await rig.step(T0)
        rr = await rig.client.write_register(SELECT, OPEN, device_id=UNIT)  # function 6, no token
        assert rr.isError() and rr.exception_code == 3
        await rig.step(T0 + 1)
        assert await rig.last_result() == Result.BAD_REQUEST
        assert await rig.write(5, [1]) == 2  # reserved: illegal data address


@async_test
async def test_closing_a_closed_bank_is_refused() -> None:
    async with Rig(bank()) as rig:
        await rig.step(T0)
        assert await rig.select(CLOSE, 1) == 3
        await rig.step(T0 + 1)
        assert await rig.last_result() == Result.ALREADY_IN_POSITION == 17


@async_test
async def test_a_command_while_an_operation_is_in_progress_is_busy() -> None:
    async with Rig(bank()) as rig:
        await rig.step(T0)
        assert await rig.select(OPEN, 1) == 0 and await rig.operate(OPEN, 1) == 0
        assert await rig.select(OPEN, 2) == 6
        assert rig.model.last_result is Result.BUSY  # the register shows it after the next scan
        await rig.step(T0 + 1)  # the open completes; the BUSY result stays until the next write
        assert await rig.last_result() == Result.BUSY == 18
        assert await rig.read("closed") is False


def test_a_write_before_the_first_step_is_busy() -> None:
    model = bank()
    req = WriteRequest(UNIT, Table.HOLDING, SELECT, (OPEN, 1), {"sbo_select": OPEN, "sbo_token": 1})
    assert model.on_write(req) == 6
    assert model.last_result is Result.BUSY


# --- discharge lockout and the counter ---------------------------------------------------------------------


@async_test
async def test_close_during_the_discharge_lockout_is_refused_and_allowed_after_300_s() -> None:
    async with Rig(bank(revert_timeout_s=0)) as rig:  # no fallback: this master is silent through the lockout
        await rig.step(T0)
        assert await rig.select(OPEN, 11) == 0 and await rig.operate(OPEN, 11) == 0
        t_open = T0 + 1
        await rig.step(t_open)  # the open completes here: the lockout runs from t_open
        assert await rig.read("closed") is False
        assert await rig.read("lockout_remaining_s") == 300 and await rig.read("lockout_active") is True
        await rig.step(t_open + 299)
        assert await rig.read("lockout_remaining_s") == 1
        assert await rig.select(CLOSE, 12) == 6
        await rig.step(t_open + 300)
        assert await rig.last_result() == Result.LOCKOUT == 14
        assert await rig.read("lockout_remaining_s") == 0 and await rig.read("lockout_active") is False
        assert await rig.select(CLOSE, 13) == 0 and await rig.operate(CLOSE, 13) == 0
        await rig.step(t_open + 301)
        assert await rig.read("closed") is True
        assert await rig.read("operation_count") == 2
        assert rig.feeder.calls[-1] == ("cap675", True)


@async_test
async def test_operation_counter_persists_across_steps_and_rolls_over_as_a_uint32() -> None:
    async with Rig(bank(operation_count=2**32 - 1, revert_timeout_s=0)) as rig:  # no fallback: silent for 360 s
        await rig.step(T0)
        assert await rig.read("operation_count") == 4_294_967_295
        assert await rig.select(OPEN, 1) == 0 and await rig.operate(OPEN, 1) == 0
        await rig.step(T0 + 1)
        assert await rig.read("operation_count") == 0  # 2^32 - 1 + 1 modulo 2^32
        for k in range(2, 40):
            await rig.step(T0 + k)
        assert await rig.read("operation_count") == 0
        await rig.step(T0 + 400)
        assert await rig.select(CLOSE, 2) == 0 and await rig.operate(CLOSE, 2) == 0
        await rig.step(T0 + 401)
        assert await rig.read("operation_count") == 1
        for k in range(402, 420):
            await rig.step(T0 + k)
        assert await rig.read("operation_count") == 1


@async_test
async def test_injected_clock_stamps_writes_between_steps() -> None:
    now = [T0]
    async with Rig(CapBankController("cbc1", {}, clock=lambda: now[0])) as rig:
        await rig.step(T0)
        now[0] = T0 + 0.5
        assert await rig.select(OPEN, 4) == 0
        now[0] = T0 + 10.6  # 10.1 s after the select, no step in between
        assert await rig.operate(OPEN, 4) == 3
        assert rig.model.last_result is Result.SELECT_EXPIRED
        assert await rig.select(OPEN, 4) == 0
        now[0] = T0 + 20.5  # 9.9 s after the second select
        assert await rig.operate(OPEN, 4) == 0


# --- measurements --------------------------------------------------------------------------------------------


@async_test
async def test_kvar_comes_from_the_capacitor_terminal_when_the_solution_has_it() -> None:
    # V = 2400 V at 0 deg, I = 62.5 A leading by 90 deg: S = V I* = 2400 x (-j62.5) = -j150 kVA into the bank,
    # so the bank delivers 150 kvar on phase a; phases b and c: 2400 V x 50 A = 120 kvar each.
    v = {"a": 2400 + 0j, "b": cmath.rect(2400, math.radians(-120)), "c": cmath.rect(2400, math.radians(120))}
    i = {"a": 62.5j, "b": v["b"] / 2400 * 50j, "c": v["c"] / 2400 * 50j}
    term = Terminal("Capacitor.cap675", "675", v, i)
    async with Rig(bank()) as rig:
        rig.model.actuate(T0, rig.feeder)
        rig.model.observe(T0, Solution(T0, True, {"675": v}, {"675": 2.4}, {"Capacitor.cap675/1": term}))
        await rig.server.update(UNIT, rig.model.values(T0))
        assert await rig.read("kvar_a") == pytest.approx(150.0, abs=0.05)
        assert await rig.read("kvar_b") == pytest.approx(120.0, abs=0.05)
        assert await rig.read("kvar_total") == pytest.approx(390.0, abs=0.05)
        assert await rig.read("v_a") == pytest.approx(120.0, abs=0.005)  # 2400 V / 20


def test_single_phase_bank_reads_zero_on_its_absent_phases() -> None:
    model = CapBankController("cbc611", {"capacitor": "cap611"})
    model.actuate(T0, RecordingFeeder())
    model.observe(T0, solution(T0, (119.0, 121.0, 123.0), bus="611"))
    values = model.values(T0)
    assert values["v_a"] == 0.0 and values["v_b"] == 0.0 and values["kvar_a"] == 0.0
    assert values["v_c"] == pytest.approx(123.0)
    assert values["v_control"] == pytest.approx(123.0)
    # 100 kvar at 2.4 kV; at 2460 V: 100 x (2460 / 2400)^2 = 105.0625 kvar
    assert values["kvar_c"] == pytest.approx(105.0625)


def test_a_bus_missing_from_the_solution_names_the_bus() -> None:
    model = bank()
    with pytest.raises(CapBankError, match="bus = '675'"):
        model.observe(T0, solution(T0, bus="999"))


# --- local automatic mode ----------------------------------------------------------------------------------


@async_test
async def test_local_auto_opens_on_high_voltage_after_the_delay_and_refuses_remote_commands() -> None:
    async with Rig(bank(auto_delay_s=30)) as rig:
        await rig.step(T0, 124.0)
        assert await rig.write(MODE, [1]) == 0
        assert rig.model.last_result is Result.SETTINGS_CHANGED
        assert await rig.select(OPEN, 1) == 1  # local mode: illegal function (wrong state)
        assert rig.model.last_result is Result.NOT_REMOTE
        # above v_high = 126 V from T0 + 1 to T0 + 30: 29 s < 30 s, then back inside: no operation
        for k in range(1, 31):
            await rig.step(T0 + k, 127.0)
        assert await rig.last_result() == Result.NOT_REMOTE == 15
        await rig.step(T0 + 31, 125.0)
        await rig.step(T0 + 32, 125.0)
        assert await rig.read("closed") is True and await rig.read("operation_count") == 0
        # above again from T0 + 40: the timer restarted, 30 s reached at T0 + 70, the bank opens at the next step
        for k in range(40, 71):
            await rig.step(T0 + k, 127.0)
        assert await rig.read("closed") is True and await rig.read("operation_pending") is True
        await rig.step(T0 + 71, 127.0)
        assert await rig.read("closed") is False and await rig.read("operation_count") == 1
        assert rig.feeder.calls[-1] == ("cap675", False)


@async_test
async def test_local_auto_close_waits_for_the_discharge_lockout() -> None:
    async with Rig(bank(auto_delay_s=10, mode="local_auto")) as rig:
        await rig.step(T0, 127.0)
        for k in range(1, 12):
            await rig.step(T0 + k, 127.0)  # above 126 V from T0: decided at T0 + 10, opens at T0 + 11
        assert await rig.read("closed") is False
        # now below v_low = 118 V: the 10 s delay passes long before the 300 s lockout ends at T0 + 311
        for t in (T0 + 12, T0 + 30, T0 + 200, T0 + 310):
            await rig.step(t, 117.0)
        assert await rig.read("closed") is False and await rig.read("operation_pending") is False
        await rig.step(T0 + 311, 117.0)  # lockout over: the close is decided here...
        await rig.step(T0 + 312, 117.0)  # ...and completes at the next step
        assert await rig.read("closed") is True and await rig.read("operation_count") == 2


@async_test
async def test_local_auto_never_switches_a_dead_bank() -> None:
    """Loss of voltage (the feeder head open): 0 V is below v_low, but a real controller blocks switching."""
    async with Rig(bank(auto_delay_s=10, mode="local_auto", closed=False)) as rig:
        for k in range(0, 120):
            await rig.step(T0 + k, 0.0)
        assert await rig.read("closed") is False and await rig.read("operation_count") == 0
        for k in range(120, 132):  # voltage back, and low: now the delay runs and the bank closes
            await rig.step(T0 + k, 117.0)
        assert await rig.read("closed") is True and await rig.read("operation_count") == 1


@pytest.mark.parametrize(
    ("address", "values"),
    [
        (MODE, [2]),  # no mode 2
        (V_LOW, [1270]),  # low 127.0 V above high 126.0 V
        (V_LOW, [1200, 1200]),  # low == high
        (V_LOW, [990, 1260]),  # 99.0 V below the 100 V floor
        (13, [0]),  # auto delay 0 s
    ],
)
@async_test
async def test_bad_settings_are_refused_with_3_and_keep_the_old_ones(address: int, values: list[int]) -> None:
    async with Rig(bank()) as rig:
        await rig.step(T0)
        assert await rig.write(address, values) == 3
        await rig.step(T0 + 1)
        assert await rig.last_result() == Result.BAD_SETTING == 19
        assert await rig.read("mode") == 0
        assert await rig.read("auto_v_low") == pytest.approx(118.0)
        assert await rig.read("auto_v_high") == pytest.approx(126.0)
        assert await rig.read("auto_delay_s") == 60


@async_test
async def test_good_settings_are_applied_and_read_back() -> None:
    async with Rig(bank()) as rig:
        await rig.step(T0)
        assert await rig.write(V_LOW, [1165, 1245, 45]) == 0
        await rig.step(T0 + 1)
        assert await rig.last_result() == Result.SETTINGS_CHANGED == 3
        assert await rig.read("auto_v_low") == pytest.approx(116.5)
        assert await rig.read("auto_v_high") == pytest.approx(124.5)
        assert await rig.read("auto_delay_s") == 45


# --- communication-loss fallback ----------------------------------------------------------------------------


@async_test
async def test_remote_mode_without_a_master_write_for_the_timeout_falls_back_to_local_automatic() -> None:
    async with Rig(bank(revert_timeout_s=60)) as rig:
        await rig.step(T0)  # powered up in remote mode: the timer runs from this first scan
        await rig.step(T0 + 10)
        assert await rig.write(HEARTBEAT, [7]) == 0  # the master is alive at T0 + 10
        await rig.step(T0 + 69)
        assert await rig.read("mode") == 0 and await rig.read("revert_remaining_s") == 1
        assert await rig.read("heartbeat") == 7
        await rig.step(T0 + 70)  # 60 s after the last write
        assert await rig.read("mode") == 1
        assert await rig.read("reverted_count") == 1
        assert await rig.read("last_revert_reason") == RevertReason.COMMUNICATION_LOSS == 1
        assert await rig.read("revert_remaining_s") == 0  # local automatic: nothing left to revert
        assert await rig.select(OPEN, 5) == 1  # the controller is in its own hands now
        # the master takes it back: remote again, and the timer runs from that write
        assert await rig.write(MODE, [0]) == 0
        await rig.step(T0 + 71)
        assert await rig.read("mode") == 0 and await rig.read("revert_remaining_s") == 59


@async_test
async def test_every_master_write_restarts_the_timer_a_refused_one_too() -> None:
    async with Rig(bank(revert_timeout_s=60)) as rig:
        await rig.step(T0)
        await rig.step(T0 + 50)
        assert await rig.select(OPEN, 0) == 3  # token 0: refused, but the master spoke
        await rig.step(T0 + 100)  # 100 s after power-up, 50 s after the refused write
        assert await rig.read("mode") == 0 and await rig.read("revert_remaining_s") == 10
        await rig.step(T0 + 109)
        assert await rig.read("mode") == 0
        await rig.step(T0 + 110)
        assert await rig.read("mode") == 1 and await rig.read("reverted_count") == 1


@async_test
async def test_the_fallback_drops_an_armed_select_and_an_accepted_operation_still_completes() -> None:
    async with Rig(bank(revert_timeout_s=10, select_timeout_s=30)) as rig:
        await rig.step(T0)
        assert await rig.select(OPEN, 3) == 0
        await rig.step(T0 + 10)  # 10 s after the select: the controller falls back
        assert await rig.read("mode") == 1 and await rig.read("select_armed") is False
        assert await rig.write(MODE, [0]) == 0  # remote again: the select did not survive the fallback
        assert await rig.operate(OPEN, 3) == 3
        await rig.step(T0 + 11)
        assert await rig.last_result() == Result.NO_SELECT
        assert await rig.select(OPEN, 4) == 0 and await rig.operate(OPEN, 4) == 0
        await rig.step(T0 + 21)  # the fallback (10 s after the operate) and the open happen at the same scan
        assert await rig.read("mode") == 1
        assert await rig.read("closed") is False and await rig.read("operation_count") == 1


@async_test
async def test_local_automatic_and_a_zero_timeout_never_revert() -> None:
    async with Rig(bank(mode="local_auto", revert_timeout_s=10)) as rig:
        for k in range(0, 100, 10):
            await rig.step(T0 + k, 120.0)
        assert await rig.read("reverted_count") == 0 and await rig.read("revert_remaining_s") == 0
    async with Rig(bank(revert_timeout_s=0)) as rig:
        for k in range(0, 1000, 100):
            await rig.step(T0 + k, 120.0)
        assert await rig.read("mode") == 0 and await rig.read("reverted_count") == 0
        assert await rig.read("revert_remaining_s") == 0 and await rig.read("revert_timeout_s") == 0


@async_test
async def test_a_heartbeat_alone_leaves_the_last_result_and_reads_back() -> None:
    async with Rig(bank()) as rig:
        await rig.step(T0)
        assert await rig.operate(OPEN, 9) == 3
        assert await rig.write(HEARTBEAT, [0xBEEF]) == 0
        await rig.step(T0 + 1)
        assert await rig.last_result() == Result.NO_SELECT  # the refusal's reason is still there to read
        assert await rig.read("heartbeat") == 0xBEEF
        assert await rig.read("revert_timeout_s") == 300  # the default a utility would set


@pytest.mark.parametrize("seconds", [5, 9, 7201])
@async_test
async def test_a_revert_timeout_out_of_range_is_refused(seconds: int) -> None:
    async with Rig(bank()) as rig:
        await rig.step(T0)
        assert await rig.write(REVERT_TIMEOUT, [seconds]) == 3
        await rig.step(T0 + 1)
        assert await rig.last_result() == Result.BAD_SETTING
        assert await rig.read("revert_timeout_s") == 300


@async_test
async def test_a_revert_timeout_in_range_is_applied_and_restarts_the_timer() -> None:
    async with Rig(bank()) as rig:
        await rig.step(T0)
        await rig.step(T0 + 200)
        assert await rig.write(REVERT_TIMEOUT, [120, 1]) == 0  # with a heartbeat in the same request
        await rig.step(T0 + 201)
        assert await rig.last_result() == Result.SETTINGS_CHANGED
        assert await rig.read("revert_timeout_s") == 120 and await rig.read("heartbeat") == 1
        assert await rig.read("revert_remaining_s") == 119
        assert await rig.write(REVERT_TIMEOUT, [0]) == 0
        await rig.step(T0 + 1000)
        assert await rig.read("mode") == 0 and await rig.read("revert_remaining_s") == 0


@async_test
async def test_writes_between_steps_are_timed_by_the_injected_clock() -> None:
    now = [T0]
    async with Rig(CapBankController("cbc1", {"revert_timeout_s": 10}, clock=lambda: now[0])) as rig:
        await rig.step(T0)
        now[0] = T0 + 9.5
        assert await rig.write(HEARTBEAT, [1]) == 0  # between two scans
        now[0] = T0 + 19
        await rig.step(T0 + 19)
        assert await rig.read("mode") == 0 and await rig.read("revert_remaining_s") == 1  # 0.5 s, rounded up
        now[0] = T0 + 20
        await rig.step(T0 + 20)
        assert await rig.read("mode") == 1


# --- options -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"pt_ratio": 0}, "pt_ratio"),
        ({"mode": "auto"}, "mode"),
        ({"v_low": 126.0, "v_high": 126.0}, "v_low"),
        ({"phases": "abd"}, "phases"),
        ({"closed": "yes"}, "closed"),
        ({"capacitor": "cap999"}, "bus"),
        ({"operation_count": -1}, "operation_count"),
        ({"lockout_s": math.inf}, "lockout_s"),
        ({"revert_timeout_s": 5}, "revert_timeout_s"),
        ({"revert_timeout_s": 7201}, "revert_timeout_s"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(CapBankError, match=f"{key} = "):
        CapBankController("cbc1", options)


def test_model_produces_exactly_the_maps_points_and_they_encode() -> None:
    model = bank()
    model.actuate(T0, RecordingFeeder())
    model.observe(T0, solution(T0))
    values = model.values(T0)
    assert set(values) == {p.name for p in CMAP.points}
    for p in CMAP.points:
        encode_point(p, values[p.name])


# --- map and doc ---------------------------------------------------------------------------------------


def _doc_result_codes(text: str) -> dict[int, str]:
    section = text.split("## Result codes", 1)[1].split("\n## ", 1)[0]
    out = {}
    for ln in section.splitlines():
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        if ln.strip().startswith("|") and cells[0].isdigit():
            out[int(cells[0])] = cells[1]
    return out


def test_doc_register_table_matches_the_map() -> None:
    assert doc_mismatches(DOC_FILE.read_text(), CMAP, check_access=True) == []


def test_doc_check_catches_a_drifted_address() -> None:
    text = DOC_FILE.read_text()
    drifted = text.replace("| v_b | input | 1 |", "| v_b | input | 4 |")
    assert drifted != text
    assert doc_mismatches(drifted, CMAP, check_access=True) == ["v_b.address: doc '4', map '1'"]


def test_doc_lists_every_result_code() -> None:
    assert _doc_result_codes(DOC_FILE.read_text()) == {int(r): r.name for r in Result}


# --- against the real IEEE 13-node feeder -------------------------------------------------------------------


def test_sbo_open_on_the_real_feeder_removes_the_banks_vars_and_lowers_bus_675() -> None:
    from sim_hw.feeder.model import Feeder

    feeder = Feeder.from_file(ROOT / "config" / "ieee13" / "IEEE13.dss")
    model = bank()

    def step(t: float) -> tuple[Solution, dict[str, Any]]:
        model.actuate(t, feeder)
        sol = feeder.solve(t)
        model.observe(t, sol)
        return sol, model.values(t)

    sol, closed = step(T0)
    assert feeder.capacitor_closed("cap675") is True
    for p in "abc":
        # a capacitor's vars go with V^2: 200 kvar per phase at 4160 / sqrt(3) V (IEEE 13-node data)
        v = abs(sol.v("675")[p])
        assert closed[f"kvar_{p}"] == pytest.approx(200.0 * (v / (4160 / math.sqrt(3))) ** 2, rel=1e-3)
        assert closed[f"v_{p}"] == pytest.approx(v / 20.0)
    select = WriteRequest(UNIT, Table.HOLDING, SELECT, (OPEN, 9), {"sbo_select": OPEN, "sbo_token": 9})
    operate = WriteRequest(UNIT, Table.HOLDING, OPERATE, (OPEN, 9), {"sbo_operate": OPEN, "sbo_operate_token": 9})
    assert model.on_write(select) is None and model.on_write(operate) is None
    _, opened = step(T0 + 1)
    assert feeder.capacitor_closed("cap675") is False
    assert opened["closed"] is False and opened["operation_count"] == 1
    assert abs(opened["kvar_total"]) < 0.5
    for p in "abc":  # without 600 kvar of support the voltage at 675 falls
        assert opened[f"v_{p}"] < closed[f"v_{p}"] - 0.5
