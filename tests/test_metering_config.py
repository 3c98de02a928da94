"""The ``[metering]`` section (agent/metering/config.py): a good one loads into typed values with the defaults of
docs/metering.md, the modulus and scale of each register follow from its point in the register map, and each
mistake is its own error naming the key path, the value and what is allowed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from agent.metering.config import MeterConfig, MeteringConfig, engine, engines, parse_metering
from protocols.configcheck import MISSING, Checker
from protocols.modbus.registermap import RegisterMap, parse_register_map

ROOT = Path(__file__).resolve().parent.parent
SIM_METER = parse_register_map(tomllib.loads((ROOT / "config" / "maps" / "sim-meter.toml").read_text()))


def rmap(*points: dict) -> RegisterMap:
    return parse_register_map({"name": "m", "points": [{"address": 8 * i, **p} for i, p in enumerate(points)]}, "map")


def energy(name: str, type_: str = "uint32", unit: str = "Wh", **kw) -> dict:
    return {"name": name, "type": type_, "unit": unit, "kind": "energy", **kw}


DEVICES = {"fdr-671-meter": SIM_METER, "inv-1": None}


def parse(raw: dict, devices=DEVICES) -> tuple[MeteringConfig | None, dict[str, str]]:
    c = Checker(ROOT)
    cfg = parse_metering(c, raw, devices)
    return cfg, {i.key: str(i) for i in c.issues}


def test_the_bench_meter_takes_its_registers_and_identity_from_its_map():
    cfg, issues = parse({"meters": [{"device": "fdr-671-meter", "rated_kw": 2000}]})
    assert issues == {}
    assert (cfg.interval_s, cfg.estimate_span_s, cfg.actual_span_s, cfg.spike_margin) == (900, 3600.0, 10.0, 1.5)
    (m,) = cfg.meters
    assert m.identity == ("serial_number", "model")
    got = [(r.point, r.channel, r.modulus, r.to_unit, r.resolution) for r in m.registers]
    assert got == [
        ("energy_delivered_wh", "kwh_delivered", 2**32, 0.001, 1.0),
        ("energy_received_wh", "kwh_received", 2**32, 0.001, 1.0),
    ]


def test_the_site_file_example_loads():
    doc = tomllib.loads("""
[metering]
interval_s = 300
estimate_span_s = 1800
actual_span_s = 5
spike_margin = 2.0
[[metering.meters]]
device = "fdr-671-meter"
rated_kw = 500
registers = { energy_delivered_wh = "kwh_delivered" }
identity = ["serial_number"]
""")
    cfg, issues = parse(doc["metering"])
    assert issues == {}
    assert (cfg.interval_s, cfg.estimate_span_s, cfg.actual_span_s, cfg.spike_margin) == (300, 1800.0, 5.0, 2.0)
    (m,) = cfg.meters
    assert (m.rated_kw, [r.point for r in m.registers], m.identity) == (
        500.0,
        ["energy_delivered_wh"],
        ("serial_number",),
    )


@pytest.mark.parametrize(
    ("point", "spec", "modulus", "resolution"),
    [
        (energy("e", "uint16"), "kwh_delivered", 2**16, 1.0),
        (energy("e", "uint32"), "kwh_delivered", 2**32, 1.0),
        (energy("e", "uint64"), "kwh_delivered", 2**64, 1.0),
        (energy("e", "int32"), "kwh_delivered", 2**32, 1.0),
        (energy("e", "uint32", scale=10), "kwh_delivered", 2**32 * 10, 10.0),  # counts of 10 Wh
        (energy("e", "uint32", scale=0.5), "kwh_delivered", 2**31, 0.5),
        (energy("e", "float32"), "kwh_delivered", None, 0.0),  # a float counter does not wrap
        (energy("e", "float64"), {"channel": "kwh_delivered", "modulus": 1_000_000}, 1_000_000, 0.0),
        (energy("e", "uint32"), {"channel": "kwh_delivered", "modulus": 100_000_000}, 100_000_000, 1.0),
    ],
)
def test_the_modulus_follows_the_register_width_or_the_configured_one(point, spec, modulus, resolution):
    cfg, issues = parse({"meters": [{"device": "d", "rated_kw": 10, "registers": {"e": spec}}]}, {"d": rmap(point)})
    assert issues == {}
    (reg,) = cfg.meters[0].registers
    assert (reg.modulus, reg.resolution) == (modulus, resolution)
    if modulus is not None and float(resolution).is_integer():
        assert type(reg.modulus) is int  # a float 2**64 would round a uint64 counter's deltas


@pytest.mark.parametrize(
    ("unit", "spec", "to_unit"),
    [
        ("Wh", "kwh_delivered", 0.001),
        ("kWh", "kwh_received", 1.0),
        ("MWh", "kwh_delivered", 1000.0),
        ("varh", "kvarh_delivered", 0.001),
        ("kvarh", "kvarh_received", 1.0),
        ("Mvarh", "kvarh_delivered", 1000.0),
        ("daWh", {"channel": "kwh_delivered", "scale": 0.01}, 0.01),  # a unit the table lacks, scale given
    ],
)
def test_the_scale_to_kwh_or_kvarh_follows_the_unit(unit, spec, to_unit):
    cfg, issues = parse({"meters": [{"device": "d", "rated_kw": 10, "registers": {"e": spec}}]},
                        {"d": rmap(energy("e", unit=unit))})  # fmt: skip
    assert issues == {}
    assert cfg.meters[0].registers[0].to_unit == to_unit


def test_default_registers_are_the_energy_points_named_delivered_or_received():
    m = rmap(
        energy("kwh_delivered_total", unit="kWh"),
        energy("kvarh_received_q", unit="kvarh"),
        energy("energy_total_wh"),  # neither delivered nor received
        {"name": "p_delivered", "type": "float32", "unit": "Wh"},  # not kind = "energy"
    )
    cfg, issues = parse({"meters": [{"device": "d", "rated_kw": 10}]}, {"d": m})
    assert issues == {}
    got = [(r.point, r.channel) for r in cfg.meters[0].registers]
    assert got == [("kwh_delivered_total", "kwh_delivered"), ("kvarh_received_q", "kvarh_received")]
    assert cfg.meters[0].identity == ()  # the map has neither serial_number nor model


def test_the_engine_gets_the_spike_bound_in_raw_units():
    """2000 kW x 0.25 h x 1.5 = 750 kWh = 750 000 Wh an interval."""
    cfg, _ = parse({"meters": [{"device": "fdr-671-meter", "rated_kw": 2000}]})
    eng = engine(cfg, cfg.meters[0], cfg.meters[0].registers[0])
    assert (eng.max_delta, eng.modulus, eng.to_unit, eng.interval_s) == (750_000, 2**32, 0.001, 900)
    assert (eng.meter, eng.register, eng.channel) == ("fdr-671-meter", "energy_delivered_wh", "kwh_delivered")


def test_engines_are_keyed_by_point_id_and_resume_from_their_states():
    """One engine per register, keyed <device>.<point>; a stored state resumes its engine, the others start new."""
    cfg, _ = parse({"meters": [{"device": "fdr-671-meter", "rated_kw": 2000}]})
    first = engines(cfg)
    assert sorted(first) == ["fdr-671-meter.energy_delivered_wh", "fdr-671-meter.energy_received_wh"]
    eng = first["fdr-671-meter.energy_delivered_wh"]
    for t in range(0, 901):
        eng.add(1_764_000_000 + t, 500 * t, "good", "111/SIM3P-120")  # 1.8 MW
    again = engines(cfg, {"fdr-671-meter.energy_delivered_wh": eng.state()})
    assert again["fdr-671-meter.energy_delivered_wh"].last_ts == 1_764_000_900
    assert again["fdr-671-meter.energy_received_wh"].last_ts is None
    (iv,) = again["fdr-671-meter.energy_delivered_wh"].add(1_764_001_800, 900_000, "good", "111/SIM3P-120")
    assert (iv.start, iv.value, iv.quality) == (1_764_000_900, 450.0, "A")  # 450 000 Wh over [900, 1800)


@pytest.mark.parametrize(
    ("values", "meter_id"),
    [
        ({"serial_number": 12345, "model": "SIM3P-120 "}, "12345/SIM3P-120"),
        ({"serial_number": 12345, "model": None}, None),
        ({"serial_number": 12345}, None),
        ({"serial_number": 12345, "model": ""}, None),
    ],
)
def test_the_meter_id_is_made_of_the_identity_points(values, meter_id):
    m = MeterConfig(device="d", rated_kw=1, registers=(), identity=("serial_number", "model"))
    assert m.meter_id(values) == meter_id
    assert MeterConfig(device="d", rated_kw=1, registers=()).meter_id(values) is None


TWO = {"d": rmap(energy("e1"), energy("e2"), {"name": "v", "type": "float32", "unit": "V"}), "inv-1": None}


@pytest.mark.parametrize(
    ("raw", "key", "value", "allowed"),
    [
        ({"intervals": 900}, "metering.intervals", 900, "unknown key"),
        ({"interval_s": 600}, "metering.interval_s", 600, "one of 300, 900, 1800, 3600"),
        ({"interval_s": 900.0}, "metering.interval_s", 900.0, "an integer"),
        ({"estimate_span_s": 0}, "metering.estimate_span_s", 0, "in 1.."),
        ({"actual_span_s": 120, "estimate_span_s": 60}, "metering.actual_span_s", 120, "at most estimate_span_s"),
        ({"spike_margin": 0.5}, "metering.spike_margin", 0.5, "in 1.0.."),
        ({"meters": {"device": "d"}}, "metering.meters", {"device": "d"}, "array of tables"),
        ({"meters": [{"rated_kw": 1}]}, "metering.meters[0].device", MISSING, "required"),
        ({"meters": [{"device": "x", "rated_kw": 1}]}, "metering.meters[0].device", "x", "[[devices]] entry: d, inv-1"),
        ({"meters": [{"device": "inv-1", "rated_kw": 1}]}, "metering.meters[0].device", "inv-1", "register map"),
        ({"meters": [{"device": "d"}]}, "metering.meters[0].rated_kw", MISSING, "required"),
        ({"meters": [{"device": "d", "rated_kw": 0}]}, "metering.meters[0].rated_kw", 0, "in 0.001.."),
        ({"meters": [{"device": "d", "rated_kw": 1, "rated_kva": 1}]}, "metering.meters[0].rated_kva", 1, "unknown key"),
        ({"meters": [{"device": "d", "rated_kw": 1, "registers": {"e9": "kwh_delivered"}}]},
         "metering.meters[0].registers.e9", "kwh_delivered", "names no point of register map 'm'"),
        ({"meters": [{"device": "d", "rated_kw": 1, "registers": {"e1": "kwh"}}]},
         "metering.meters[0].registers.e1", "kwh", "one of kwh_delivered, kwh_received, kvarh_delivered"),
        ({"meters": [{"device": "d", "rated_kw": 1, "registers": {"e1": {"channel": "kwh"}}}]},
         "metering.meters[0].registers.e1.channel", "kwh", "one of kwh_delivered"),
        ({"meters": [{"device": "d", "rated_kw": 1, "registers": {"e1": {"channel": "kwh_received", "modulo": 9}}}]},
         "metering.meters[0].registers.e1.modulo", 9, "unknown key; allowed: channel, modulus, scale"),
        ({"meters": [{"device": "d", "rated_kw": 1, "registers": {"e1": {"channel": "kwh_received", "modulus": 0}}}]},
         "metering.meters[0].registers.e1.modulus", 0, "in 1.."),
        ({"meters": [{"device": "d", "rated_kw": 1, "registers": {"e1": 7}}]},
         "metering.meters[0].registers.e1", 7, "a channel (kwh_delivered"),
        ({"meters": [{"device": "d", "rated_kw": 1, "registers": {"v": "kwh_delivered"}}]},
         "metering.meters[0].registers.v", "kwh_delivered", "kind = \"energy\""),
        ({"meters": [{"device": "d", "rated_kw": 1, "registers": {"e1": "kvarh_delivered"}}]},
         "metering.meters[0].registers.e1", "kvarh_delivered", "unit 'Wh': kvarh_delivered needs one of varh"),
        ({"meters": [{"device": "d", "rated_kw": 1, "registers": {"e1": "kwh_delivered", "e2": "kwh_delivered"}}]},
         "metering.meters[0].registers.e2", "kwh_delivered", "channel kwh_delivered is e1's already"),
        ({"meters": [{"device": "d", "rated_kw": 1, "registers": {}}]},
         "metering.meters[0].registers", {}, "non-empty table"),
        ({"meters": [{"device": "d", "rated_kw": 1}]}, "metering.meters[0].registers", MISSING,
         "no kind = \"energy\" point named *delivered* or *received*"),
        ({"meters": [{"device": "d", "rated_kw": 1, "registers": {"e1": "kwh_delivered"}, "identity": ["serial"]}]},
         "metering.meters[0].identity[0]", "serial", "names no point of register map 'm'"),
        ({"meters": [{"device": "d", "rated_kw": 1, "registers": {"e1": "kwh_delivered"}, "identity": "serial"}]},
         "metering.meters[0].identity", "serial", "array of point names"),
        ({"meters": [{"device": "d", "rated_kw": 1, "registers": {"e1": "kwh_delivered"}},
                     {"device": "d", "rated_kw": 2, "registers": {"e2": "kwh_received"}}]},
         "metering.meters[1].device", "d", "metering.meters[0] meters this device already"),
    ],
)  # fmt: skip
def test_each_mistake_names_its_key_value_and_what_is_allowed(raw, key, value, allowed):
    c = Checker(ROOT)
    assert parse_metering(c, raw, TWO) is None
    found = [i for i in c.issues if i.key == key and allowed in i.allowed]
    assert found, [str(i) for i in c.issues]
    assert found[0].value == value


def test_the_example_of_docs_metering_loads():
    """The ``[metering]`` example of docs/metering.md parses without an issue against the bench meter's map."""
    text = (ROOT / "docs" / "metering.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg, issues = parse(tomllib.loads(example)["metering"])
    assert issues == {}
    assert [(m.device, m.rated_kw, len(m.registers)) for m in cfg.meters] == [("fdr-671-meter", 2000.0, 2)]
