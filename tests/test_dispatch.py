"""Central's dispatch (docs/dispatch.md): the network model's sensitivities against full power flows, the MILP on
problems small enough to check by hand, the limits that bind, capacitor wear, infeasible inputs, the inputs'
readers, the [dispatch] configuration's errors and the dry run's print."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers.stores import target_fixture  # noqa: F401 (the target fixture)

from central.config import CentralConfigError, parse_central_config
from central.dispatch.config import CapbankSpec, DispatchConfig, InverterSpec, RegulatorSpec, SiteSpec
from central.dispatch.inputs import Forecast, InputError, forecast_csv, forecast_db, horizon, prices_csv
from central.dispatch.network import NetworkError, NetworkModel, Sensitivities
from central.dispatch.nowcast import NowcastSpec
from central.dispatch.optimise import Bank, InfeasibleError, Problem, evaluate, solve
from central.dispatch.plan import build_problem, network_for, refine, resolve, schedule
from central.dispatch.send import commands_for, scheduled_energy
from central.store import open_store

IEEE13 = Path(__file__).resolve().parents[1] / "config" / "ieee13" / "IEEE13.dss"
T0 = 1_780_012_800  # 2026-05-29T00:00:00Z, on a 15-minute boundary

# One bus behind a short line from a stiff source: a 40 kW load and a 100 kVA PV inverter. Small enough that the
# optimum can be worked out by hand (the losses are a few watts).
ONE_BUS = """Clear
New Circuit.one phases=3 basekv=0.48 pu=1.0 bus1=src MVAsc3=1000 MVAsc1=1000
New Line.l1 phases=3 bus1=src bus2=b1 r1=0.001 x1=0.001 r0=0.001 x0=0.001 c1=0 c0=0 length=1 units=km
New Load.ld bus1=b1 phases=3 conn=wye model=1 kV=0.48 kW=40 kvar=0
New Generator.pv bus1=b1 phases=3 conn=wye model=1 kV=0.48 kVA=100 kW=0 kvar=0
Set VoltageBases=[0.48]
CalcVoltageBases
"""


def one_bus(tmp_path: Path, **kw: object) -> DispatchConfig:
    dss = tmp_path / "one.dss"
    dss.write_text(ONE_BUS)
    p_min, reserve = (float(kw.pop(k, d)) for k, d in (("p_min", 20.0), ("reserve_pct", 0.0)))  # type: ignore[arg-type]
    inv = InverterSpec("pv", "pv", 100.0, 100.0, "B", p_min, reserve_pct=reserve)
    base = {"v_min_pu": 0.9, "v_max_pu": 1.1, "margin_pu": 0.0, "interval_s": 900, "horizon_intervals": 2}
    return DispatchConfig(network=dss, feeder="one", sites=(SiteSpec("site-1", (inv,)),), **{**base, **kw})  # type: ignore[arg-type]


def fc(n: int, load: float | list[float], pv: float | list[float], kvar: float = 0.0, start: int = T0) -> Forecast:
    starts = horizon(start, 900, n)
    return Forecast(starts, np.broadcast_to(np.asarray(load, float), (n,)).copy(), np.full(n, kvar),
                    np.broadcast_to(np.asarray(pv, float), (n,)).copy(), "test")  # fmt: skip


# ---- the network model ---------------------------------------------------------------------------------------


def test_sensitivities_predict_a_full_re_solve_within_a_bound() -> None:
    """dV/dP, dV/dQ of pv675 and pv680 on the IEEE 13-node feeder at midday (load 2000 kW, PV 3000 kW): the linear
    prediction of a 300 kW / 200 kvar move against OpenDSS re-solving with the taps held. The bound, 5e-4 pu, is a
    tenth of the default margin: the feeder is close to linear over such moves."""
    m = NetworkModel(IEEE13, ["pv675", "pv680"], ["cap675"])
    held, s = m.sensitivities(2000, 1200, [1700, 1300])
    for dp, dq in (([-300, 0], [0, 0]), ([0, 0], [0, -200]), ([-300, -300], [200, -200])):
        moved = m.solve(2000, 1200, [1700 + dp[0], 1300 + dp[1]], dq, None, held.taps)
        predicted = held.v_pu + s.dv_dp @ np.array(dp, float) + s.dv_dq @ np.array(dq, float)
        assert np.abs(moved.v_pu - predicted).max() < 5e-4
        head = held.head_kw + s.dhead_dp @ np.array(dp, float) + s.dhead_dq @ np.array(dq, float)
        assert moved.head_kw == pytest.approx(head, abs=5.0)
    # more injection raises 675's voltage; absorbing vars lowers it (the physics' sign, not the code's)
    i675 = m.nodes.index("675.1")
    assert s.dv_dp[i675, 0] > 0 and s.dv_dq[i675, 0] > 0
    assert np.all(s.dhead_dp < -0.9)  # one kW injected is about one kW less imported at the head


def test_a_model_missing_an_element_or_bus_is_named() -> None:
    with pytest.raises(NetworkError, match="inverter element 'pv999'.*pv675"):
        NetworkModel(IEEE13, ["pv999"], [])
    with pytest.raises(NetworkError, match="monitored bus '699'"):
        NetworkModel(IEEE13, [], [], ["699"])


def test_the_linearisation_error_at_the_optimum_stays_inside_the_margin() -> None:
    """A synthetic midday on the IEEE 13-node feeder where PV pushes voltages over Range A: the schedule's voltages
    re-solved in full (taps where the regulators settled, lowered by CVR) against the linear prediction. The margin
    (0.01 pu) exists for exactly this error; docs/dispatch.md quotes the figure."""
    cfg = DispatchConfig(network=IEEE13, feeder="f", interval_s=900, horizon_intervals=8, margin_pu=0.01,
                         price=0.1, reverse_power_kw=500.0, sites=(SiteSpec("s", (
                             InverterSpec("pv675", "pv675", 2500, 2500), InverterSpec("pv680", "pv680", 2000, 2000)),
                             (CapbankSpec("cap675", "cap675"),), RegulatorSpec("reg")),))  # fmt: skip
    model = network_for(cfg)
    forecast = fc(8, [1500, 1400, 1300, 1300, 1400, 1500, 1700, 1900], [3500, 4000, 4300, 4400, 4300, 4000, 3500, 2800],
                  kvar=800)  # fmt: skip
    prob = build_problem(cfg, model, forecast, np.full(8, 0.1))
    sol = solve(prob)
    v, head = resolve(cfg, model, forecast, sol)
    err = np.abs(v - sol.v_pred).max()
    print(f"\nlinearisation error at the optimum: {err:.4f} pu (margin {cfg.margin_pu} pu); head "
          f"{np.abs(head - sol.head_kw).max():.1f} kW")  # fmt: skip
    assert err < cfg.margin_pu
    assert v.max() <= cfg.v_max_pu and v.min() >= cfg.v_min_pu  # Range A kept in the full model, not only the linear
    # one refinement pass: the linear model corrected by that error, solved again: a tenth of the error is left
    fine = refine(cfg, model, forecast, sol, 1)
    v2, head2 = resolve(cfg, model, forecast, fine)
    assert np.abs(v2 - fine.v_pred).max() < err / 5
    # the head: 64 kW off before, a few kW after (1 % of the 500 kW reverse limit)
    assert np.abs(head2 - fine.head_kw).max() < 5.0 and head2.min() > -505.0


# ---- the optimisation, by hand ----------------------------------------------------------------------------------


def test_a_price_step_curtails_only_where_energy_has_a_negative_price(tmp_path: Path) -> None:
    """One bus, two intervals, PV 100 kW available, load 40 kW, prices 0.10 then -0.05 per kWh.

    Interval 1: each kW curtailed is a kW more imported at 0.10: curtailing costs, so none (limit 100 %).
    Interval 2: importing is paid (-0.05): every kW curtailed earns 0.05 x 0.25 h, so curtail down to the lowest
    limit the site takes, p_limit_min_pct = 20 %: 80 kW curtailed, 20 kW out, head import 40 - 20 = +20 kW."""
    cfg = one_bus(tmp_path)
    prob = build_problem(cfg, network_for(cfg), fc(2, 40, 100), np.array([0.10, -0.05]))
    sol = solve(prob)
    assert sol.curtail_kw[:, 0] == pytest.approx([0.0, 80.0], abs=1e-6)
    assert sol.head_kw == pytest.approx([-60.0, 20.0], abs=0.5)  # the losses are watts
    steps = schedule(cfg, sol)
    assert [s.p_limit_pct["pv"] for s in steps] == [100.0, 20.0]
    # the cost: 0.25 h x (0.10 x -60 + -0.05 x 20) = -1.75
    assert sol.cost.sum() == pytest.approx(-1.75, abs=0.02)


def test_a_reserve_keeps_the_output_below_the_sun_even_where_curtailing_costs(tmp_path: Path) -> None:
    """The same bus and prices with reserve_pct = 10: in interval 1 curtailing costs, yet 10 % of the 100 kW the
    sun gives is held back (limit 90 %: the output is the schedule's whenever the sun gives 10 % more than
    forecast); interval 2 curtails to the lowest limit as before. No sun, no reserve: the limit stays 100 %."""
    cfg = one_bus(tmp_path, reserve_pct=10.0)
    prob = build_problem(cfg, network_for(cfg), fc(3, 40, [100, 100, 0]), np.array([0.10, -0.05, 0.10]))
    sol = solve(prob)
    assert sol.curtail_kw[:, 0] == pytest.approx([10.0, 80.0, 0.0], abs=1e-6)
    assert sol.head_kw[:2] == pytest.approx([-50.0, 20.0], abs=0.5)
    assert [s.p_limit_pct["pv"] for s in schedule(cfg, sol)] == [90.0, 20.0, 100.0]
    assert evaluate(prob).head_kw[0] == pytest.approx(-60.0, abs=0.5)  # no dispatch: no reserve either


def test_a_reverse_power_limit_binds_at_the_head(tmp_path: Path) -> None:
    """Same bus, price 0.10 both intervals, reverse power at most 20 kW: 100 kW PV - 40 kW load would export 60 kW;
    the head may export 20, so 40 kW are curtailed (the line's losses move it by a few watts)."""
    cfg = one_bus(tmp_path, reverse_power_kw=20.0)
    prob = build_problem(cfg, network_for(cfg), fc(2, 40, 100), np.array([0.10, 0.10]))
    sol = solve(prob)
    assert sol.head_kw == pytest.approx([-20.0, -20.0], abs=1e-6)
    assert sol.curtail_kw[:, 0] == pytest.approx([40.0, 40.0], abs=0.5)
    assert evaluate(prob).head_kw.min() < -59  # without dispatch the head would export ~60 kW


def test_a_voltage_limit_binds_and_vars_come_before_curtailment() -> None:
    """IEEE 13-node, light load (900 kW) and 4400 kW of PV at noon: without dispatch bus 675 passes 1.05 pu. The
    site's envelope takes vars up to 5 % of kVA (var_max_pct). Absorbing vars costs next to nothing, curtailing
    costs energy at 0.10 / kWh: the optimum absorbs all it may, then curtails until the highest node sits on the
    limit (1.05 - 0.01 pu), and curtails pv675, whose kW move 675's voltage most."""
    cfg = DispatchConfig(network=IEEE13, feeder="f", interval_s=900, horizon_intervals=1, margin_pu=0.01, price=0.1,
                         sites=(SiteSpec("s", (InverterSpec("pv675", "pv675", 2500, 2500, var_max_pct=5),
                                               InverterSpec("pv680", "pv680", 2000, 2000, var_max_pct=5))),))  # fmt: skip
    prob = build_problem(cfg, network_for(cfg), fc(1, 900, 4400, kvar=400), np.array([0.1]))
    base = evaluate(prob)
    assert base.v_pred.max() > cfg.v_max_pu
    sol = solve(prob)
    assert sol.v_pred.max() == pytest.approx(1.04, abs=1e-6)
    assert sol.q_kvar[0] == pytest.approx([-125.0, -100.0], abs=1e-6)  # 5 % of 2500 and 2000 kVA, absorbing
    assert sol.curtail_kw[0, 0] > 100 and sol.curtail_kw[0, 1] < 1e-6
    # the vars the optimum needs go out as set points (5 % of kVA, absorbing), beside each limit
    bodies = {c.target: c.body for c in commands_for(schedule(cfg, sol)[0], 60)}
    assert bodies["pv675"]["var_pct"] == -5.0 and bodies["pv680"]["var_pct"] == -5.0
    assert bodies["pv675"]["p_limit_pct"] < 100 and bodies["pv680"]["p_limit_pct"] == 100.0
    # under var_min_pct they do not: the inverters keep their own reactive mode
    quiet = schedule(DispatchConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "var_min_pct": 6}),
                     sol)  # fmt: skip
    assert all("var_pct" not in c.body for c in commands_for(quiet[0], 60))


def _cap_problem(wear: float, max_ops: int = 96) -> Problem:
    """One node, no inverter, one bank (closed: +0.02 pu, 10 kW less import from lower losses). The voltage swings
    between 1.00 and 1.03 pu, under a 1.04 limit: closed is allowed only in the low intervals. Each closed interval
    saves 10 kW x 0.25 h x 0.10 = 0.25."""
    T = 8
    v0 = np.array([[1.00], [1.03]] * 4)
    z = np.zeros((1, 0))
    sens = Sensitivities(z, z, np.array([[0.02]]), np.zeros(1), np.zeros(0), np.zeros(0), np.array([-10.0]), 0.0,
                         np.zeros(0), np.zeros(0), np.zeros(1), 0.0, np.zeros(0))  # fmt: skip
    return Problem(starts=horizon(T0, 900, T), interval_s=900, nodes=("n.1",), v0=v0, h0=np.full(T, 100.0),
                   l0=np.zeros(T), load_kw=np.full(T, 100.0), avail_kw=np.zeros((T, 0)), price=np.full(T, 0.1),
                   sens=sens, inverters=(), banks=(Bank("cap", False, max_ops),), v_lo=0.95, v_hi=1.04,
                   cap_wear_cost=wear)  # fmt: skip


def test_capacitor_switching_is_bounded_by_its_wear_cost_and_its_budget() -> None:
    # free switching: closed in every low interval, open in every high one: 4 closes + 4 opens = 8 operations
    free = solve(_cap_problem(0.0))
    assert free.cap_closed[:, 0].tolist() == [True, False] * 4 and free.cap_ops.tolist() == [8]
    # an operation costs 0.2: closing for one interval saves 0.25 but costs a close and an open (0.4): never
    dear = solve(_cap_problem(0.2))
    assert dear.cap_ops.tolist() == [0] and not dear.cap_closed.any()
    # a budget of 2 operations: one close and one open, around one low interval
    budget = solve(_cap_problem(0.0, max_ops=2))
    assert budget.cap_ops.tolist() == [2] and budget.cap_closed.sum() == 1
    assert np.all(budget.v_pred <= 1.04 + 1e-9)


def test_an_infeasible_input_names_the_interval_the_node_and_the_limit() -> None:
    """No control can lower a voltage that is 1.06 pu with nothing to dispatch: the error says where and by how
    much, not only "infeasible"."""
    p = _cap_problem(0.0)
    p = Problem(**{**{f: getattr(p, f) for f in p.__dataclass_fields__}, "v0": p.v0 + np.array([[0.0]] * 5 + [[0.03]] * 3),
                   "banks": ()})  # fmt: skip
    with pytest.raises(InfeasibleError) as err:
        solve(p)
    text = str(err.value)
    assert "bus voltage over its limit in 2 interval(s)" in text
    assert "node n.1 1.0600 pu against 1.0400 pu" in text and "2026-05-29T01:15:00Z" in text


# ---- commands and settlement ----------------------------------------------------------------------------------


def test_each_interval_becomes_commands_that_hold_until_its_end_plus_the_margin(tmp_path: Path) -> None:
    cfg = one_bus(tmp_path)
    sol = solve(build_problem(cfg, network_for(cfg), fc(2, 40, 100), np.array([0.10, -0.05])))
    steps = schedule(cfg, sol)
    cmds = commands_for(steps[1], 120.0)
    assert [(c.kind, c.target, c.body) for c in cmds] == [
        ("der.setpoint", "pv", {"p_limit_pct": 20.0, "until": float(T0 + 1800 + 120)})
    ]  # no var set point: the optimum's vars are zero, and the inverter keeps its own volt-var
    reg = SiteSpec("s", capbanks=(CapbankSpec("cap", "cap675"),), regulator=RegulatorSpec("reg", 122, 3, 118))
    step = steps[0].__class__("s", T0, T0 + 900, {}, {}, {}, {"cap": False, "cap2": True}, {"cap": True, "cap2": True},
                              True, 119.0, 1, 1, 0, 0, "reg")  # fmt: skip
    # cap is switched open in this interval; cap2 stays closed: no command (the site refuses a move to where it is)
    assert [(c.kind, c.target, c.body) for c in commands_for(step, 60)] == [
        ("capbank.open", "cap", {"until": T0 + 960.0}),
        ("regulator.band_center", "reg", {"volts": 119.0, "until": T0 + 960.0}),
    ]
    assert reg.regulator is not None


def test_the_scheduled_energy_per_meter_is_what_settlement_reads(tmp_path: Path) -> None:
    from central.dispatch.config import MeterSpec
    from central.settlement.db import open_settlement_db
    from central.settlement.schedules import scheduled, store_schedule

    cfg = one_bus(tmp_path)
    cfg = DispatchConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
                            "sites": (SiteSpec("site-1", cfg.sites[0].inverters, meters=(
                                MeterSpec("pv-m", "kwh_received", "pv"), MeterSpec("head-m", "kwh_delivered", "head"),
                                MeterSpec("head-x", "kwh_received", "head"))),)})  # fmt: skip
    sol = solve(build_problem(cfg, network_for(cfg), fc(2, 40, 100), np.array([0.10, -0.05])))
    rows = scheduled_energy(cfg, schedule(cfg, sol))
    got = {(r.meter, r.start): r.energy for r in rows}
    # interval 1: 100 kW out for 0.25 h, the head exports 60 kW; interval 2: 20 kW out, the head imports 20 kW
    assert got[("pv-m", T0)] == pytest.approx(25.0) and got[("pv-m", T0 + 900)] == pytest.approx(5.0)
    assert got[("head-m", T0)] == 0.0 and got[("head-m", T0 + 900)] == pytest.approx(5.0, abs=0.01)
    assert got[("head-x", T0)] == pytest.approx(15.0, abs=0.01) and got[("head-x", T0 + 900)] == 0.0
    db = open_settlement_db(tmp_path / "c.db")
    store_schedule(db, rows, "dispatch", 0.0)
    assert scheduled(db, "site-1", "pv-m", "kwh_received", np.array([T0, T0 + 900])).tolist() == [25.0, 5.0]
    db.close()
    # a limit reached 90 s into its interval (p_response_s), linearly: the step 100 -> 20 kW at the second interval
    # leaves 80 kW x 45 s more output in it (+4 kW on average) and so 4 kW less import; the first interval, from a
    # limit of 50 kW before it (the round before's), misses 50 kW x 45 s of its 100 kW (-2.5 kW)
    slow = DispatchConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "p_response_s": 90.0})
    got = {(r.meter, r.start): r.energy for r in scheduled_energy(slow, schedule(slow, sol), {"pv": (50.0, True)})}
    assert got[("pv-m", T0)] == pytest.approx(97.5 * 0.25) and got[("pv-m", T0 + 900)] == pytest.approx(24 * 0.25)
    assert got[("head-x", T0)] == pytest.approx(57.5 * 0.25, abs=0.01)
    assert got[("head-m", T0 + 900)] == pytest.approx(16 * 0.25, abs=0.01)
    # two unlimited intervals follow the sun through the boundary: no ramp
    assert scheduled_energy(slow, schedule(slow, sol)[:1], {"pv": (50.0, False)})[0].energy == pytest.approx(25.0)


# ---- inputs ------------------------------------------------------------------------------------------------------


def test_the_latest_issued_forecast_covers_each_interval_and_a_gap_is_named(target: Path | str) -> None:
    """The same rows on SQLite and PostgreSQL give the same choice: the store returns them, dispatch picks."""
    rows = []
    for kind, unit, value in (("load_p", "kW", 1000.0), ("load_q", "kvar", 500.0), ("pv", "kW", 300.0)):
        # a newer intraday issue for the first hour only; an issue after "now" is not seen; written before the
        # older issues, so that the store's order of writing cannot be what decides
        rows.append(("f", kind, "intraday", T0 - 600, T0, T0 + 3600, 0, value + 1, 0, unit, "m"))
        rows.append(("f", kind, "intraday", T0 + 60, T0, T0 + 7200, 0, value + 2, 0, unit, "m"))
        for h in range(2):  # a day-ahead issue in hourly rows
            rows.append(
                ("f", kind, "day-ahead", T0 - 86_400, T0 + 3600 * h, T0 + 3600 * (h + 1), 0, value, 0, unit, "m")
            )
        # at one issue time a day-ahead and an intraday row over the second hour's last half: intraday wins
        rows.append(("f", kind, "intraday", T0 - 300, T0 + 5400, T0 + 7200, 0, value + 4, 0, unit, "m"))
        rows.append(("f", kind, "day-ahead", T0 - 300, T0 + 5400, T0 + 7200, 0, value + 3, 0, unit, "m"))
    rows.append(("other", "load_p", "intraday", T0, T0, T0 + 7200, 0, 9.0, 0, "kW", "m"))  # another feeder
    store = open_store(target)
    try:
        store.write_forecasts(rows)
        starts = horizon(T0, 900, 8)
        f = forecast_db(store, "f", starts, 900, now=T0)
        assert f.load_kw.tolist() == [1001.0] * 4 + [1000.0] * 2 + [1004.0] * 2
        assert f.load_kvar.tolist() == [501.0] * 4 + [500.0] * 2 + [504.0] * 2
        assert f.pv_kw.tolist() == [301.0] * 4 + [300.0] * 2 + [304.0] * 2
        with pytest.raises(InputError, match=r"no load_p forecast .* for 4 of the 12 intervals, the first at "
                                             r"2026-05-29T02:00:00Z"):  # fmt: skip
            forecast_db(store, "f", horizon(T0, 900, 12), 900, now=T0)
        with pytest.raises(InputError, match=r"feeder 'g' has no load_p forecast"):
            forecast_db(store, "g", starts, 900, now=T0)
        store.write_forecasts([("f", "pv", "intraday", T0 - 100, T0, T0 + 7200, 0, 1.0, 0, "MW", "m")])
        with pytest.raises(InputError, match=r"feeder f kind pv in 'MW'; dispatch reads kW"):
            forecast_db(store, "f", starts, 900, now=T0)
    finally:
        store.close()


def test_forecast_and_price_csvs(tmp_path: Path) -> None:
    f = tmp_path / "f.csv"
    f.write_text("start,load_kw,load_kvar,pv_kw\n2026-05-29T00:00:00Z,10,5,1\n" + f"{T0 + 900},11,5,2\n")
    got = forecast_csv(f, horizon(T0, 900, 2))
    assert got.load_kw.tolist() == [10, 11] and got.pv_kw.tolist() == [1, 2]
    with pytest.raises(InputError, match=r"no row for 1 of the 3 intervals, the first at 2026-05-29T00:30:00Z"):
        forecast_csv(f, horizon(T0, 900, 3))
    f.write_text("start,load,pv\n")
    with pytest.raises(InputError, match="must be start,load_kw,load_kvar,pv_kw"):
        forecast_csv(f, horizon(T0, 900, 1))
    p = tmp_path / "p.csv"
    p.write_text(f"start,price\n{T0 - 10},0.1\n{T0 + 900},-0.05\n")
    assert prices_csv(p, horizon(T0, 900, 3)).tolist() == [0.1, -0.05, -0.05]
    p.write_text(f"start,price\n{T0 + 1},0.1\n")
    with pytest.raises(InputError, match="the prices start after the first interval"):
        prices_csv(p, horizon(T0, 900, 1))
    p.write_text(f"start,price\n{T0},cheap\n")
    with pytest.raises(InputError, match="line 2 price = 'cheap': a number"):
        prices_csv(p, horizon(T0, 900, 1))


# ---- configuration ---------------------------------------------------------------------------------------------


def _raw(tmp_path: Path, dispatch: dict) -> dict:
    return {"broker": {"url": "mqtt://127.0.0.1:1"}, "store": {"db": "c.db"}, "dispatch": dispatch}


def test_a_good_dispatch_section_is_typed(tmp_path: Path) -> None:
    (tmp_path / "f.dss").write_text(ONE_BUS)
    cfg = parse_central_config(_raw(tmp_path, {
        "network": "f.dss", "feeder": "one", "price": 0.1, "reverse_power_kw": 10,
        "sites": [{"site": "s-1", "inverters": [{"device": "pv", "kva": 100, "category": "A"}],
                   "regulator": {"device": "reg", "cvr_drop_v": 2}}],
        "nowcast": {"site": "s-1", "point": "head.p_total", "decay": 0.8}}), tmp_path / "central.toml")  # fmt: skip
    d = cfg.dispatch
    assert d is not None and d.nowcast == NowcastSpec("s-1", "head.p_total", 300.0, 0.8, 0.3)
    assert d.var_min_pct == 0.5
    assert d is not None and d.network == tmp_path / "f.dss" and d.reverse_power_kw == 10
    inv = d.sites[0].inverters[0]
    assert (inv.element, inv.kw, inv.q_inject_kvar, inv.q_absorb_kvar) == ("pv", 100, 44, 25)  # IEEE 1547 Cat A
    assert d.regulator is not None and d.regulator[1].cvr_drop_v == 2


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"trim_at_s": 880, "p_response_s": 40}, "dispatch.trim_at_s = 880: 0 (no trim) or inside the interval before"),
        ({"trim_at_s": 450, "nowcast": None}, "dispatch.trim_at_s = 450: 0 without [dispatch.nowcast]"),
    ],
)
def test_a_trim_outside_the_interval_or_without_the_heads_point_is_refused(tmp_path: Path, extra: dict,
                                                                           why: str) -> None:  # fmt: skip
    (tmp_path / "f.dss").write_text(ONE_BUS)
    section = {"network": "f.dss", "feeder": "one", "price": 0.1, "sites": [{"site": "s-1", "inverters": [
        {"device": "pv", "kva": 100}]}], "nowcast": {"site": "s-1", "point": "head.p_total"}, **extra}  # fmt: skip
    section = {k: v for k, v in section.items() if v is not None}
    with pytest.raises(CentralConfigError, match=re.escape(why)):
        parse_central_config(_raw(tmp_path, section), tmp_path / "central.toml")
    ok = parse_central_config(_raw(tmp_path, {**section, "trim_at_s": 450, "nowcast": {"site": "s-1", "point": "p"}}),
                              tmp_path / "central.toml").dispatch  # fmt: skip
    assert ok is not None and ok.trim_at_s == 450


def test_bad_dispatch_keys_are_named_with_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(CentralConfigError) as err:
        parse_central_config(_raw(tmp_path, {
            "network": "missing.dss", "feeder": "one", "interval_s": 600, "price": 0.1, "price_file": "p.csv",
            "horizon": 4,
            "sites": [{"site": "s-1", "inverters": [{"device": "pv", "kva": 100, "kw": 120, "category": "C",
                                                    "reserve_pct": 60}],
                       "capbanks": [{"device": "cap", "initial": "half"}],
                       "regulator": {"device": "reg", "band_center_v": 120, "cvr_drop_v": 4},
                       "meters": [{"meter": "m", "channel": "kwh_delivered", "measures": "pv9"}]}],
            "var_min_pct": -1, "p_response_s": 301, "nowcast": {"site": "s-9", "point": "p", "window_s": 5, "decay": 1.5, "bias": 1,
                                    "pv_point": "pv.W",
                                    "clear_sky": {"latitude": 95, "longitude": 0, "tilt_deg": 30, "pitch": 1},
                                    "smooth_intervals": 4}}),
            tmp_path / "central.toml")  # fmt: skip
    text = str(err.value)
    for line in (
        "dispatch.network = 'missing.dss': an OpenDSS model file (.dss) that exists",
        "dispatch.interval_s = 600: must be one of 300, 900",
        "dispatch.price = '(both)': one of price",
        "dispatch.horizon = 4: unknown key",
        "dispatch.sites[0].inverters[0].category = 'C': must be one of 'A', 'B'",
        "dispatch.sites[0].inverters[0].reserve_pct = 60",
        "dispatch.sites[0].capbanks[0].initial = 'half': must be one of 'open', 'closed', 'model'",
        "dispatch.sites[0].regulator.cvr_drop_v = 4: at most band_center_v - band_center_min_v (2 V)",
        "dispatch.sites[0].meters[0].measures = 'pv9': one of 'head'",
        "dispatch.var_min_pct = -1",
        "dispatch.p_response_s = 301",
        "dispatch.nowcast.site = 's-9': one of the [[dispatch.sites]]: s-1",
        "dispatch.nowcast.window_s = 5",
        "dispatch.nowcast.decay = 1.5",
        "dispatch.nowcast.bias = 1: unknown key",
        "dispatch.nowcast.pv_point = 'pv.W': a point name with {device} once",
        "dispatch.nowcast.smooth_intervals = 4: must be one of 1, 3, 5, 7",
        "dispatch.nowcast.clear_sky.latitude = 95",
        "dispatch.nowcast.clear_sky.pitch = 1: unknown key",
    ):
        assert line in text, line
    with pytest.raises(CentralConfigError, match=r"dispatch.sites = '\(none\)': at least one"):
        (tmp_path / "f.dss").write_text(ONE_BUS)
        parse_central_config(_raw(tmp_path, {"network": "f.dss", "feeder": "x", "price": 1}), tmp_path / "c.toml")


# ---- the dry run ---------------------------------------------------------------------------------------------------


def test_the_dry_run_prints_the_schedule_and_sends_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from central.cli import main

    (tmp_path / "one.dss").write_text(ONE_BUS)
    (tmp_path / "central.toml").write_text(
        '[broker]\nurl = "mqtt://127.0.0.1:1"\n[store]\ndb = "central.db"\n[dispatch]\nnetwork = "one.dss"\n'
        'feeder = "one"\nprice = 0.1\nhorizon_intervals = 2\nv_min_pu = 0.9\nv_max_pu = 1.1\n'
        '[[dispatch.sites]]\nsite = "site-1"\ninverters = [{device = "pv", kva = 100, p_limit_min_pct = 20}]\n'
    )
    (tmp_path / "f.csv").write_text(f"start,load_kw,load_kvar,pv_kw\n{T0},40,0,100\n{T0 + 900},40,0,100\n")
    (tmp_path / "p.csv").write_text(f"start,price\n{T0},0.10\n{T0 + 900},-0.05\n")
    conf = str(tmp_path / "central.toml")
    rc = main(["dispatch", "--config", conf, "--dry-run", "--forecast", str(tmp_path / "f.csv"),
               "--prices", str(tmp_path / "p.csv")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("dispatch 2 x 15 min from 2026-05-29T00:00:00Z: cost -1.7")
    assert "reverse power none" in lines[1]
    rows = [ln.split() for ln in lines if ln.startswith("2026-")]
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("2026-05-29T00:00:00Z", "site-1", "pv=100", "pv=own", "-"),
        ("2026-05-29T00:15:00Z", "site-1", "pv=20", "pv=own", "-"),
    ]
    assert not (tmp_path / "central.db").exists()  # nothing stored, nothing sent
    # an input that does not cover the horizon: exit 2 naming the file and interval
    (tmp_path / "f.csv").write_text(f"start,load_kw,load_kvar,pv_kw\n{T0},40,0,100\n")
    assert main(["dispatch", "--config", conf, "--dry-run", "--forecast", str(tmp_path / "f.csv")]) == 2
    assert "no row for 1 of the 2 intervals" in capsys.readouterr().err
    # no --forecast and no store file: exit 2 naming the file, and the dry run creates none
    assert main(["dispatch", "--config", conf, "--dry-run", "--now", str(T0)]) == 2
    assert "central.db: no such file; give --forecast FILE" in capsys.readouterr().err
    assert not (tmp_path / "central.db").exists()
    # no [dispatch]: exit 2
    (tmp_path / "plain.toml").write_text('[broker]\nurl = "mqtt://127.0.0.1:1"\n[store]\ndb = "central.db"\n')
    assert main(["dispatch", "--config", str(tmp_path / "plain.toml"), "--dry-run"]) == 2
    assert "no [dispatch] section" in capsys.readouterr().err


def test_central_check_config_names_a_bad_dispatch_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from central.cli import main

    (tmp_path / "one.dss").write_text(ONE_BUS)
    conf = tmp_path / "central.toml"
    text = ('[broker]\nurl = "mqtt://127.0.0.1:1"\n[store]\ndb = "central.db"\n[dispatch]\nnetwork = "one.dss"\n'
            'feeder = "one"\nprice = 0.1\n[[dispatch.sites]]\nsite = "site-1"\n'
            'inverters = [{device = "pv", kva = 100}]\n')  # fmt: skip
    conf.write_text(text)
    assert main(["check-config", "--config", str(conf)]) == 0
    assert "ok — store" in capsys.readouterr().out
    conf.write_text(text.replace("price = 0.1", "price = 0.1\nmargin_pu = 0.5"))
    assert main(["check-config", "--config", str(conf)]) == 2
    assert "dispatch.margin_pu = 0.5: must be in 0..0.05" in capsys.readouterr().err


def test_a_reverse_power_limit_no_curtailment_can_keep_is_named_and_the_dry_run_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The site takes no limit below 100 %: 100 kW of PV into a 40 kW load exports 60 kW, past a 20 kW limit."""
    cfg = one_bus(tmp_path, p_min=100.0, reverse_power_kw=20.0)
    with pytest.raises(InfeasibleError, match=r"reverse power over reverse_power_kw = 20 kW in 2 interval\(s\): worst "
                                              r"at .*, 60\.0 kW exported"):  # fmt: skip
        solve(build_problem(cfg, network_for(cfg), fc(2, 40, 100), np.array([0.1, 0.1])))
    from central.cli import main

    (tmp_path / "central.toml").write_text(
        '[broker]\nurl = "mqtt://127.0.0.1:1"\n[store]\ndb = "central.db"\n[dispatch]\nnetwork = "one.dss"\n'
        'feeder = "one"\nprice = 0.1\nhorizon_intervals = 2\nreverse_power_kw = 20\n[[dispatch.sites]]\n'
        'site = "site-1"\ninverters = [{device = "pv", kva = 100, p_limit_min_pct = 100}]\n'
    )
    (tmp_path / "f.csv").write_text(f"start,load_kw,load_kvar,pv_kw\n{T0},40,0,100\n{T0 + 900},40,0,100\n")
    rc = main(
        ["dispatch", "--config", str(tmp_path / "central.toml"), "--dry-run", "--forecast", str(tmp_path / "f.csv")]
    )
    assert rc == 1 and "no schedule keeps every limit: reverse power" in capsys.readouterr().err
