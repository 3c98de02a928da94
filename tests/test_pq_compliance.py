"""EN 50160 / IEEE 519 compliance: limits at their boundaries, percentile logic on hand-made series.

The documents are built by hand in the shape of `gridedge pq analyze --json` (docs/pq-report.md), so every
expected verdict follows from the numbers written here and the published limits quoted beside them.
"""

from __future__ import annotations

import math

import pytest
from helpers.pq import doc

from agent.pq import compliance as cp
from agent.pq.offline.text import format_compliance


def find(results, criterion: str, channel: str | None = "va"):
    hits = [r for r in results if r.criterion == criterion and r.channel == channel]
    assert len(hits) == 1, (criterion, channel, [r.criterion for r in results])
    return hits[0]


# ---------------------------------------------------------------------------------------------------- statistics


def test_nearest_rank_percentile_of_hand_made_series():
    assert cp.percentile_nearest_rank(range(1, 101), 95) == 95  # ceil(0.95 * 100) = 95th value
    assert cp.percentile_nearest_rank(range(1, 21), 95) == 19  # ceil(19.0) = 19th of 20
    assert cp.percentile_nearest_rank(range(1, 11), 95) == 10  # ceil(9.5) = 10th: 95 % of 10 values is 10 values
    assert cp.percentile_nearest_rank([3.0], 99) == 3.0
    assert cp.percentile_nearest_rank([5, 1, 4, 2, 3], 100) == 5
    assert cp.share_within_pct([1, 2, 3, 4], 2, 3) == 50.0  # bounds included


@pytest.mark.parametrize("bad", [0, -1, 101])
def test_percentile_rejects_bad_percent(bad):
    with pytest.raises(cp.ComplianceError, match="percent"):
        cp.percentile_nearest_rank([1.0], bad)


def test_empty_series_are_rejected():
    with pytest.raises(cp.ComplianceError, match="empty"):
        cp.percentile_nearest_rank([], 95)
    with pytest.raises(cp.ComplianceError, match="empty"):
        cp.share_within_pct([], 0, 1)


# ---------------------------------------------------------------------------------------------------- tables


def test_en50160_table1_values():
    # EN 50160:2010 Table 1 (LV, 4.2.6), transcribed independently of the module
    published = {3: 5.0, 9: 1.5, 15: 0.5, 21: 0.5, 5: 6.0, 7: 5.0, 11: 3.5, 13: 3.0, 17: 2.0, 19: 1.5, 23: 1.5,
                 25: 1.5, 2: 2.0, 4: 1.0} | {h: 0.5 for h in range(6, 25, 2)}  # fmt: skip
    assert {h: cp.en50160_harmonic_limit_pct(h) for h in range(2, 26)} == published
    with pytest.raises(cp.ComplianceError, match="orders 2..25"):
        cp.en50160_harmonic_limit_pct(26)
    lv, mv = cp.EN50160_LIMITS["en50160-lv"], cp.EN50160_LIMITS["en50160-mv"]
    assert (lv.thd_limit_pct, lv.thd_max_order, lv.unbalance_limit_pct, lv.plt_limit) == (8.0, 40, 2.0, 1.0)
    assert lv.sub("2.6") == "EN 50160:2010 4.2.6" and mv.sub("2.6") == "EN 50160:2010 5.2.6"


def test_supply_voltage_share_is_95_percent_for_lv_and_99_percent_for_mv():
    # EN 50160:2010 4.2.2.2 (LV): 95 % of the week's 10-min means within +-10 %; 5.2.2 (MV): 99 %.
    # 100 values, 3 of them at +12 % (inside the +10/-15 % band all values must keep): 97 % within +-10 %.
    data = doc(100, rms=lambda i: 230.0 * (1.12 if i < 3 else 1.0))

    def verdict(standard: str) -> bool:
        (c,) = [c for c in cp.evaluate(data, standard).criteria
                if c.criterion == "supply voltage variation" and c.channel == "va"]  # fmt: skip
        assert c.measured == pytest.approx(97.0)
        return c.passed

    assert verdict("en50160-lv") is True and verdict("en50160-mv") is False


@pytest.mark.parametrize(
    ("kv", "label", "individual", "thd"),
    [
        (0.208, "V <= 1.0 kV", 5.0, 8.0),
        (1.0, "V <= 1.0 kV", 5.0, 8.0),  # the upper bound belongs to the row (Table 1: V <= 1.0 kV)
        (1.0001, "1 kV < V <= 69 kV", 3.0, 5.0),
        (12.47, "1 kV < V <= 69 kV", 3.0, 5.0),
        (69.0, "1 kV < V <= 69 kV", 3.0, 5.0),
        (69.1, "69 kV < V <= 161 kV", 1.5, 2.5),
        (161.0, "69 kV < V <= 161 kV", 1.5, 2.5),
        (230.0, "161 kV < V", 1.0, 1.5),
    ],
)
def test_ieee519_row_by_bus_voltage(kv, label, individual, thd):
    row = cp.ieee519_row(kv)
    assert (row.label, row.individual_pct, row.thd_pct) == (label, individual, thd)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, True, "13.8"])
def test_ieee519_row_rejects_bad_bus_voltage(bad):
    with pytest.raises(cp.ComplianceError, match="bus_kv"):
        cp.ieee519_row(bad)


# ---------------------------------------------------------------------------------------------------- EN 50160


def test_harmonic_exactly_at_the_limit_passes_and_just_above_fails():
    # EN 50160 4.2.6: "less than or equal to" the Table 1 value
    at = find(cp.evaluate_en50160(doc(harm=lambda i: {5: 6.0})), "harmonic 5")
    assert (at.measured, at.limit, at.passed) == (6.0, 6.0, True)
    above = find(cp.evaluate_en50160(doc(harm=lambda i: {5: 6.001})), "harmonic 5")
    assert above.passed is False


def test_95_percent_of_values_rule_for_a_harmonic():
    # 20 values: 19 within (95 %) passes, 18 within (90 %) fails
    one_bad = find(cp.evaluate_en50160(doc(20, harm=lambda i: {7: 9.0 if i == 0 else 4.0})), "harmonic 7")
    assert (one_bad.measured, one_bad.passed, one_bad.values) == (4.0, True, 20)
    two_bad = find(cp.evaluate_en50160(doc(20, harm=lambda i: {7: 9.0 if i < 2 else 4.0})), "harmonic 7")
    assert (two_bad.measured, two_bad.passed) == (9.0, False)


def test_limits_differ_per_order():
    results = cp.evaluate_en50160(doc(harm=lambda i: {5: 5.9, 15: 0.6, 3: 4.9, 2: 2.1}))
    assert find(results, "harmonic 5").passed is True  # 5.9 <= 6.0
    assert find(results, "harmonic 15").passed is False  # 0.6 > 0.5
    assert find(results, "harmonic 3").passed is True  # 4.9 <= 5.0
    assert find(results, "harmonic 2").passed is False  # 2.1 > 2.0
    assert not [r for r in results if r.order is not None and r.order > 25]  # Table 1 stops at 25


def test_thd_limit_counts_orders_up_to_40_only():
    # 8.0 % made of 5th = 6 %, 7th = 5.2915 % (sqrt(36 + 28) = 8.0): passes at the limit
    ok = find(cp.evaluate_en50160(doc(harm=lambda i: {5: 6.0, 7: math.sqrt(28.0)})), "THD")
    assert ok.measured == pytest.approx(8.0, abs=1e-12) and ok.passed is True
    # a large 45th is outside EN 50160's THD (orders up to 40)
    high = find(cp.evaluate_en50160(doc(harm=lambda i: {5: 6.0, 45: 7.0})), "THD")
    assert high.measured == pytest.approx(6.0) and high.passed is True


def test_supply_voltage_band_at_its_edges():
    # EN 50160 4.2.2.2: Udin +-10 % for 95 % of the 10-min means; 253 V and 207 V are on the band
    edges = cp.evaluate_en50160(doc(20, rms=lambda i: 253.0 if i % 2 else 207.0))
    assert find(edges, "supply voltage variation").measured == 100.0
    one_out = cp.evaluate_en50160(doc(20, rms=lambda i: 253.3 if i == 0 else 230.0))
    r = find(one_out, "supply voltage variation")
    assert (r.measured, r.passed) == (95.0, True)  # 19 of 20 inside
    assert find(one_out, "supply voltage variation (all values)").passed is False  # 253.3 V > +10 %
    two_out = find(cp.evaluate_en50160(doc(20, rms=lambda i: 200.0 if i < 2 else 230.0)), "supply voltage variation")
    assert (two_out.measured, two_out.passed) == (90.0, False)
    # -15 % (195.5 V) is the lower edge of the "all values" band
    low = cp.evaluate_en50160(doc(20, rms=lambda i: 195.5 if i == 0 else 230.0))
    assert find(low, "supply voltage variation (all values)").passed is True


def test_frequency_shares():
    # EN 50160 4.2.1: 50 Hz +-1 % during 99.5 % of the year; 200 values, one outside = 99.5 %
    one = cp.evaluate_en50160(doc(1, freqs=[50.6] + [50.0] * 199))
    r = find(one, "power frequency", None)
    assert (r.measured, r.passed) == (99.5, True)
    two = find(cp.evaluate_en50160(doc(1, freqs=[50.6, 49.4] + [50.0] * 198)), "power frequency", None)
    assert (two.measured, two.passed) == (99.0, False)
    # +4 % / -6 % always: 52.0 and 47.0 Hz are on the band, 52.01 is not
    edge = cp.evaluate_en50160(doc(1, freqs=[52.0, 47.0, 50.0]))
    assert find(edge, "power frequency (all values)", None).passed is True
    assert find(cp.evaluate_en50160(doc(1, freqs=[52.01])), "power frequency (all values)", None).passed is False


def test_unbalance_and_plt_limits():
    at = find(cp.evaluate_en50160(doc(u2=lambda i: 2.0)), "supply voltage unbalance u2", None)
    assert at.passed is True
    above = find(cp.evaluate_en50160(doc(u2=lambda i: 2.01 if i < 2 else 1.0)), "supply voltage unbalance u2", None)
    assert above.passed is False
    plts = [1.0] * 19 + [1.5]
    r = find(cp.evaluate_en50160(doc(plt=plts)), "flicker severity Plt")
    assert (r.measured, r.passed) == (1.0, True)
    r = find(cp.evaluate_en50160(doc(plt=[1.01] * 2 + [0.5] * 18)), "flicker severity Plt")
    assert r.passed is False
    none = find(cp.evaluate_en50160(doc(plt=None)), "flicker severity Plt")
    assert none.passed is None and none.note == "no Plt value in the record"


def test_flagged_and_incomplete_values_are_left_out():
    d = doc(20, harm=lambda i: {5: 30.0 if i in (3, 4) else 1.0}, flagged=(3,), incomplete=(4,))
    r = find(cp.evaluate_en50160(d), "harmonic 5")
    assert (r.passed, r.values, r.excluded) == (True, 18, 1)


def test_a_criterion_without_a_value_says_why():
    short = doc(0, freqs=[])
    short["file"]["duration_s"] = 120.0
    results = cp.evaluate_en50160(short)
    r = find(results, "supply voltage variation")
    assert r.passed is None and r.note == "no 10-min value: the record is 2.0 min long, a 10-min value needs 10 min"
    r = find(results, "power frequency", None)
    assert r.passed is None and r.note == "no 10-s value in the record; interconnected system"
    r = find(results, "flicker severity Plt")
    assert r.note == "no Plt value: the record is 2.0 min long, a Plt value needs 2 h"
    r = find(cp.evaluate_ieee519(short), "THD (3 s)")
    assert r.passed is None and r.note == "no 3-s value in the record"


def test_a_criterion_whose_values_are_all_flagged_says_so():
    flagged = doc(3, flagged=(0, 1, 2))
    why = "all 3 10-min values flagged (a dip, swell or interruption in them, IEC 61000-4-30 4.7)"
    for criterion, channel in (("supply voltage variation", "va"), ("harmonic 5", "vb"), ("THD", "vc"),
                               ("supply voltage unbalance u2", None)):  # fmt: skip
        r = find(cp.evaluate_en50160(flagged), criterion, channel)
        assert (r.passed, r.values, r.excluded, r.note) == (None, 0, 3, why), criterion
    r = find(cp.evaluate_ieee519(flagged), "THD (10 min)")
    assert (r.passed, r.note) == (None, why)


def test_flagged_plt_values_are_left_out():
    d = doc(plt=[1.5, 1.5, 0.5])
    for ch in d["channels"].values():
        ch["plt_flagged"] = [True, True, False]
    r = find(cp.evaluate_en50160(d), "flicker severity Plt")
    assert (r.passed, r.measured, r.values, r.excluded) == (True, 0.5, 1, 2)
    for ch in d["channels"].values():
        ch["plt_flagged"] = [True, True, True]
    r = find(cp.evaluate_en50160(d), "flicker severity Plt")
    assert (r.passed, r.excluded) == (None, 3) and r.note.startswith("all 3 Plt values flagged")


def test_the_text_report_gives_the_reason_after_n_a():
    flagged = doc(3, flagged=(0, 1, 2), plt=None)
    text = format_compliance(cp.evaluate(flagged, "en50160-lv"))
    lines = [line for line in text.splitlines() if " n/a" in line]
    assert lines and all(" n/a: " in line for line in lines), lines
    harm = next(line for line in lines if line.startswith("individual harmonics") and " va " in line)
    assert harm.endswith("n/a: all 3 10-min values flagged (a dip, swell or interruption in them, IEC 61000-4-30 4.7)")


def test_each_week_is_assessed_and_the_worst_reported():
    # two weeks of 10-min values: the second has 10 % of its values above the limit
    n = 2 * 1008
    d = doc(n, harm=lambda i: {5: 7.0 if i >= 1008 and i % 10 == 0 else 1.0})
    r = find(cp.evaluate_en50160(d), "harmonic 5")
    assert (r.periods, r.period_complete, r.passed, r.measured) == (2, True, False, 7.0)


def test_verdicts():
    good = cp.evaluate(doc(plt=[0.5] * 20), "en50160-mv")
    assert good.verdict == "pass"
    assert cp.evaluate(doc(plt=None), "en50160-lv").verdict == "incomplete"
    assert cp.evaluate(doc(harm=lambda i: {5: 9.0}), "en50160-lv").verdict == "fail"
    js = good.to_json()
    assert js["period"] == {"duration_s": 12000.0, "required_s": cp.WEEK_S, "complete": False}
    assert {"criterion", "clause", "limit", "measured", "passed", "statistic"} <= set(js["criteria"][0])


def test_two_channels_do_not_assess_unbalance():
    r = find(cp.evaluate_en50160(doc(channels=("va", "vc"))), "supply voltage unbalance u2", None)
    assert r.passed is None and "vb" in r.note


# ---------------------------------------------------------------------------------------------------- IEEE 519


def test_ieee519_10min_value_equal_to_the_limit_fails():
    # IEEE 519-2014 5.1 b): weekly 95th percentile of 10-min values "should be less than" Table 1 (5 % at <= 1 kV)
    r = find(cp.evaluate_ieee519(doc(harm=lambda i: {5: 5.0})), "harmonic 5 (10 min)")
    assert (r.limit, r.measured, r.passed) == (5.0, 5.0, False)
    r = find(cp.evaluate_ieee519(doc(harm=lambda i: {5: 4.999})), "harmonic 5 (10 min)")
    assert r.passed is True


def test_ieee519_daily_99th_percentile_of_3s_values():
    # 5.1 a): daily 99th percentile of 3-s values < 1.5 x Table 1 = 7.5 % at <= 1 kV; 100 values
    one = cp.evaluate_ieee519(doc(1, n3=100, harm3=lambda i: {7: 20.0 if i == 0 else 7.0}))
    r = find(one, "harmonic 7 (3 s)")
    assert (r.limit, r.measured, r.passed, r.values) == (7.5, 7.0, True, 100)
    two = cp.evaluate_ieee519(doc(1, n3=100, harm3=lambda i: {7: 20.0 if i < 2 else 7.0}))
    assert find(two, "harmonic 7 (3 s)").passed is False


def test_ieee519_days_are_assessed_separately():
    # day 1 clean, day 2 with 2 % of its 3-s values high: fails on day 2
    t = [i * 3.0 for i in range(100)] + [86400.0 + i * 3.0 for i in range(100)]
    d = doc(1, n3=200, t3=lambda i: t[i], harm3=lambda i: {5: 9.0 if i in (100, 101) else 1.0})
    r = find(cp.evaluate_ieee519(d), "harmonic 5 (3 s)")
    assert (r.periods, r.passed, r.measured) == (2, False, 9.0)


def test_ieee519_bus_voltage_selects_the_row():
    # 4 % 5th: passes 5 % at <= 1 kV, fails 3 % at 13.8 kV
    d = doc(harm=lambda i: {5: 4.0}, n3=10, harm3=lambda i: {5: 4.0})
    assert cp.evaluate(d, "ieee519").bus_kv == pytest.approx(230 * math.sqrt(3) / 1000)
    assert cp.evaluate(d, "ieee519").verdict == "pass"
    mv = cp.evaluate(d, "ieee519", bus_kv=13.8)
    assert (mv.ieee519_row, mv.verdict) == ("1 kV < V <= 69 kV", "fail")
    thd = find(mv.criteria, "THD (10 min)")
    assert (thd.limit, thd.measured) == (5.0, 4.0)


def test_ieee519_default_bus_voltage_from_udin():
    assert cp.default_bus_kv({"udin_v": 7200.0}) == pytest.approx(12.47, abs=0.01)
    assert cp.evaluate(doc(udin=7200.0), "ieee519").ieee519_row == "1 kV < V <= 69 kV"


# ---------------------------------------------------------------------------------------------------- errors


def test_bad_inputs_raise_named_errors():
    with pytest.raises(cp.ComplianceError, match="standard='en50160'"):
        cp.evaluate(doc(), "en50160")
    with pytest.raises(cp.ComplianceError, match="only for ieee519"):
        cp.evaluate(doc(), "en50160-lv", bus_kv=0.4)
    with pytest.raises(cp.ComplianceError, match=r"input\.file: missing"):
        cp.evaluate({}, "en50160-lv")
    d = doc()
    del d["aggregates_10min"]
    with pytest.raises(cp.ComplianceError, match=r"input\.aggregates_10min: missing"):
        cp.evaluate(d, "en50160-lv")
    d = doc()
    d["aggregates_10min"][0]["harmonics_pct"] = {}
    with pytest.raises(cp.ComplianceError, match="not the JSON"):
        cp.evaluate(d, "ieee519")


def test_text_summary_names_failures():
    text = format_compliance(cp.evaluate(doc(harm=lambda i: {11: 4.0}), "en50160-lv"))
    assert "harmonic 11" in text and "FAIL" in text and text.rstrip().endswith("Verdict: FAIL")
    assert "assessed on what the record holds" in text
