"""Parsing register maps: every mistake in a map is listed (not just the first), each with its key path,
the bad value and what is allowed; unknown keys are errors; points may alias registers but not names.

Expected issues are written out by hand from the map text, not produced by the parser.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from protocols.configcheck import MISSING
from protocols.modbus.registermap import (
    DataType,
    Order,
    RegisterMapError,
    Table,
    decode_point,
    parse_register_map,
)

ROOT = Path(__file__).resolve().parent.parent
GRIDEDGE = Path(sys.executable).with_name("gridedge")

# Three points, three different mistakes (points[1], [2], [3]), and [default] for [defaults]: with the
# typo ignored the little-endian word order would silently fall back to big-endian.
BAD_MAP = """
name = "meter-x"
[default]
word_order = "little"
[[points]]
name = "v_a"
address = 0
type = "float32"
[[points]]
name = "p_kw"
address = 2
type = "float23"
[[points]]
name = "e_wh"
address = 4
type = "uint32"
scale = inf
[[points]]
name = "q_kvar"
address = 70000
type = "int16"
"""

TYPES = "'bool', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'float32', 'float64', 'string'"


def issues_of(text: str, where: str = "m") -> list[tuple[str, object, str]]:
    with pytest.raises(RegisterMapError) as info:
        parse_register_map(tomllib.loads(text), where)
    return [(i.key, i.value, i.allowed) for i in info.value.issues]


def test_every_mistake_in_a_map_is_listed_with_key_value_and_allowed() -> None:
    assert issues_of(BAD_MAP) == [
        ("m.default", {"word_order": "little"},
         "unknown key; allowed: defaults, name, points (did you mean 'defaults'?)"),
        ("m.points[1].type", "float23", f"must be one of {TYPES}"),
        ("m.points[2].scale", math.inf, "must be a finite number"),
        ("m.points[3].address", 70000, "must be an integer 0..65535"),
    ]  # fmt: skip


def test_error_text_lists_every_issue_one_per_line() -> None:
    with pytest.raises(RegisterMapError) as info:
        parse_register_map(tomllib.loads(BAD_MAP), "m")
    assert str(info.value).splitlines() == [
        "4 register map errors:",
        "  m.default = {'word_order': 'little'}: unknown key; allowed: defaults, name, points "
        "(did you mean 'defaults'?)",
        f"  m.points[1].type = 'float23': must be one of {TYPES}",
        "  m.points[2].scale = inf: must be a finite number",
        "  m.points[3].address = 70000: must be an integer 0..65535",
    ]
    # key/value/allowed of the first issue stay, for callers that show one problem
    assert (info.value.key, info.value.value) == ("m.default", {"word_order": "little"})


def test_a_single_issue_reads_as_one_line() -> None:
    with pytest.raises(RegisterMapError) as info:
        parse_register_map({"points": [{"name": "a", "address": 0}]}, "m")
    assert str(info.value) == f"m.points[0].type = (missing): is required: {TYPES.replace(chr(39), '')}"
    assert info.value.issues[0].value is MISSING


def test_one_point_with_several_mistakes_lists_each() -> None:
    text = 'name = "x"\n[[points]]\nname = "a b"\naddress = -1\ntype = "uint16"\nunit = 5\nkind = "money"\n'
    assert [key for key, _, _ in issues_of(text)] == [
        "m.points[0].name",
        "m.points[0].address",
        "m.points[0].unit",
        "m.points[0].kind",
    ]


@pytest.mark.parametrize(
    ("text", "key", "value", "allowed"),
    [
        ('version = 2\n[[points]]\nname = "a"\naddress = 0\ntype = "uint16"\n', "m.version", 2,
         "unknown key; allowed: defaults, name, points"),
        ('[defaults]\nwordorder = "little"\n[[points]]\nname = "a"\naddress = 0\ntype = "uint16"\n',
         "m.defaults.wordorder", "little",
         "unknown key; allowed: byte_order, table, word_order (did you mean 'word_order'?)"),
        # a per-point key is not a default: every point has its own address
        ('[defaults]\naddress = 3\n[[points]]\nname = "a"\naddress = 0\ntype = "uint16"\n',
         "m.defaults.address", 3, "unknown key; allowed: byte_order, table, word_order"),
        ('[[points]]\nname = "a"\naddress = 0\ntype = "uint16"\nscael = 0.1\n', "m.points[0].scael", 0.1,
         "unknown key; allowed: address, byte_order, kind, length, name, offset, scale, table, type, unit, "
         "word_order (did you mean 'scale'?)"),
    ],
)  # fmt: skip
def test_unknown_keys_are_errors_naming_the_allowed_keys(text: str, key: str, value: object, allowed: str) -> None:
    assert issues_of(text) == [(key, value, allowed)]


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [
        ("scale = inf", "scale", math.inf),
        ("scale = -inf", "scale", -math.inf),
        ("offset = inf", "offset", math.inf),
        ("offset = -inf", "offset", -math.inf),
    ],
)
def test_infinite_scale_or_offset_is_refused(line: str, key: str, value: float) -> None:
    text = f'[[points]]\nname = "a"\naddress = 0\ntype = "int16"\n{line}\n'
    assert issues_of(text) == [(f"m.points[0].{key}", value, "must be a finite number")]


@pytest.mark.parametrize("key", ["scale", "offset"])
def test_nan_scale_or_offset_is_refused(key: str) -> None:
    (issue,) = issues_of(f'[[points]]\nname = "a"\naddress = 0\ntype = "int16"\n{key} = nan\n')
    assert issue[0] == f"m.points[0].{key}" and math.isnan(issue[1]) and issue[2] == "must be a finite number"


def test_an_integer_scale_past_the_float_range_is_refused() -> None:
    # TOML integers are 64-bit; a map built in Python is not bounded
    with pytest.raises(RegisterMapError, match=r"m\.points\[0\]\.scale = 1000.*: must be a finite number"):
        parse_register_map({"points": [{"name": "a", "address": 0, "type": "int16", "scale": 10**400}]}, "m")


def test_a_bad_default_is_reported_once_not_per_point() -> None:
    text = '[defaults]\nword_order = "middle"\n' + "".join(
        f'[[points]]\nname = "p{i}"\naddress = {2 * i}\ntype = "uint32"\n' for i in range(3)
    )
    assert issues_of(text) == [("m.defaults.word_order", "middle", "must be one of 'big', 'little'")]


def test_defaults_apply_and_a_points_own_key_wins() -> None:
    rmap = parse_register_map(
        tomllib.loads(
            '[defaults]\ntable = "input"\nword_order = "little"\n'
            '[[points]]\nname = "a"\naddress = 0\ntype = "uint32"\n'
            '[[points]]\nname = "b"\naddress = 2\ntype = "uint32"\nword_order = "big"\ntable = "holding"\n'
        )
    )
    assert (rmap.point("a").table, rmap.point("a").word_order) == (Table.INPUT, Order.LITTLE)
    assert (rmap.point("b").table, rmap.point("b").word_order) == (Table.HOLDING, Order.BIG)


def test_two_points_with_the_same_name_are_refused() -> None:
    text = (
        '[[points]]\nname = "v_a"\naddress = 0\ntype = "float32"\n'
        '[[points]]\nname = "v_b"\naddress = 2\ntype = "float32"\n'
        '[[points]]\nname = "v_a"\naddress = 4\ntype = "float32"\n'
    )
    assert issues_of(text) == [("m.points[2].name", "v_a", "must be unique within the map (points[0] has it already)")]


def test_points_may_alias_the_same_registers_under_different_names() -> None:
    # A vendor documents one quantity as a float32 and as its two uint16 words: both views are legitimate.
    rmap = parse_register_map(
        tomllib.loads(
            '[[points]]\nname = "f"\naddress = 10\ntype = "float32"\n'
            '[[points]]\nname = "hi"\naddress = 10\ntype = "uint16"\n'
            '[[points]]\nname = "lo"\naddress = 11\ntype = "uint16"\n'
        )
    )
    words = [0x3F80, 0x0000]  # IEEE 754 single 1.0 = 0x3F800000
    assert decode_point(rmap.point("f"), words) == 1.0
    assert decode_point(rmap.point("hi"), words[:1]) == 0x3F80
    assert decode_point(rmap.point("lo"), words[1:]) == 0


def test_a_multi_register_point_starting_inside_another_is_kept_with_a_warning() -> None:
    # p_kw at 101 reads the low word of v_a (100..101) as its high word: a typo for 102, most likely
    rmap = parse_register_map(
        tomllib.loads(
            '[[points]]\nname = "v_a"\naddress = 100\ntype = "float32"\n'
            '[[points]]\nname = "p_kw"\naddress = 101\ntype = "float32"\n'
            '[[points]]\nname = "e_wh"\naddress = 102\ntype = "uint64"\n'
        ),
        "devices[0].map(m.toml)",
    )
    assert [p.name for p in rmap.points] == ["v_a", "p_kw", "e_wh"]
    assert [(w.key, w.value) for w in rmap.warnings] == [
        ("devices[0].map(m.toml).points[1].address", 101),
        ("devices[0].map(m.toml).points[2].address", 102),
    ]
    first, second = (w.allowed for w in rmap.warnings)
    assert "'p_kw' (float32, 2 registers) starts inside point 'v_a' (float32 at 100..101, points[0])" in first
    assert "'e_wh' (uint64, 4 registers) starts inside point 'p_kw' (float32 at 101..102, points[1])" in second


def test_aliases_and_words_of_a_value_are_not_warned_about() -> None:
    rmap = parse_register_map(
        tomllib.loads(
            '[[points]]\nname = "f"\naddress = 10\ntype = "float32"\n'
            '[[points]]\nname = "u"\naddress = 10\ntype = "uint32"\n'  # the same registers, another type
            '[[points]]\nname = "lo"\naddress = 11\ntype = "uint16"\n'  # one word of them
            '[[points]]\nname = "d"\naddress = 20\ntype = "float64"\n'
            '[[points]]\nname = "d_hi"\naddress = 20\ntype = "float32"\n'  # starts with d: an alias
            '[[points]]\nname = "ir"\ntable = "input"\naddress = 11\ntype = "float32"\n'  # another table
            '[[points]]\nname = "next"\naddress = 12\ntype = "float32"\n'  # right after f
        )
    )
    assert rmap.warnings == ()


@pytest.mark.parametrize(
    ("data", "issues"),
    [
        ([], [("m", [], "must be a table")]),
        ({"name": 5, "points": []}, [("m.name", 5, "must be a string"),
                                     ("m.points", [], "must be a non-empty array of tables")]),
        ({"defaults": "big", "points": [7]}, [("m.defaults", "big", "must be a table of byte_order, table, word_order"),
                                              ("m.points[0]", 7, "must be a table")]),
        ({}, [("m.points", MISSING, "must be a non-empty array of tables")]),
    ],
)  # fmt: skip
def test_malformed_map_shapes(data: object, issues: list[tuple[str, object, str]]) -> None:
    with pytest.raises(RegisterMapError) as info:
        parse_register_map(data, "m")  # type: ignore[arg-type]
    assert [(i.key, i.value, i.allowed) for i in info.value.issues] == issues


def test_string_and_bit_rules_still_hold() -> None:
    text = (
        '[[points]]\nname = "s"\naddress = 0\ntype = "string"\n'
        '[[points]]\nname = "n"\naddress = 10\ntype = "uint16"\nlength = 2\n'
        '[[points]]\nname = "c"\ntable = "coil"\naddress = 0\ntype = "uint16"\n'
        '[[points]]\nname = "t"\naddress = 65535\ntype = "uint32"\n'
    )
    assert issues_of(text) == [
        ("m.points[0].length", 0, "a string needs a length of 1..125 registers"),
        ("m.points[1].length", 2, "is only for type 'string'"),
        ("m.points[2].type", "uint16", "coil and discrete points must be 'bool', and only they may be"),
        ("m.points[3].address", 65535, "the point (2 registers) runs past address 65535"),
    ]
    # the last two registers are still inside the address space
    assert parse_register_map({"points": [{"name": "t", "address": 65534, "type": "uint32"}]}).point("t").end == 65536


def test_every_shipped_map_parses() -> None:
    paths = sorted((ROOT / "config" / "maps").glob("*.toml"))
    # the bench's Modbus devices that have a map (SunSpec inverters are discovered, not mapped)
    assert {p.stem for p in paths} >= {"sim-capbank", "sim-meter", "sim-regulator", "sim-relay"}
    for path in paths:
        rmap = parse_register_map(tomllib.loads(path.read_text()), path.name)
        assert rmap.points, path
        assert rmap.warnings == (), rmap.warnings
        assert all(p.dtype in DataType for p in rmap.points)


@pytest.mark.integration
def test_check_config_prints_every_map_error_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "x.toml").write_text(BAD_MAP)
    site = tmp_path / "site.toml"
    site.write_text(
        'site_id = "s1"\n[store]\npath = "agent.db"\n[uplink]\nbroker = "mqtt://127.0.0.1:1"\n'
        '[[devices]]\nname = "m1"\nprotocol = "modbus-tcp"\nhost = "127.0.0.1"\nport = 5020\nunit_id = 1\n'
        'map = "maps/x.toml"\n'
    )
    proc = subprocess.run([str(GRIDEDGE), "check-config", str(site)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    where = "devices[0].map(x.toml)"
    for line in (
        f"{where}.default = {{'word_order': 'little'}}: unknown key; allowed: defaults, name, points",
        f"{where}.points[1].type = 'float23': must be one of {TYPES}",
        f"{where}.points[2].scale = inf: must be a finite number",
        f"{where}.points[3].address = 70000: must be an integer 0..65535",
    ):
        assert line in proc.stderr, proc.stderr
    assert proc.stderr.count(f"{where}.") == 4


@pytest.mark.integration
def test_check_config_prints_a_misaligned_point_as_a_warning_and_passes(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text(
        '[[points]]\nname = "v_a"\naddress = 0\ntype = "float32"\n'
        '[[points]]\nname = "v_b"\naddress = 1\ntype = "float32"\n'
    )
    site = tmp_path / "site.toml"
    site.write_text(
        'site_id = "s1"\n[store]\npath = "agent.db"\n[uplink]\nbroker = "mqtt://127.0.0.1:1"\n'
        '[[devices]]\nname = "m1"\nprotocol = "modbus-tcp"\nhost = "127.0.0.1"\nport = 5020\nunit_id = 1\n'
        'map = "x.toml"\n'
    )
    proc = subprocess.run([str(GRIDEDGE), "check-config", str(site)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert ": ok" in proc.stdout and "Traceback" not in proc.stderr
    assert "1 configuration warning(s) (not errors)" in proc.stderr, proc.stderr
    assert "  warning: devices[0].map(x.toml).points[1].address = 1: point 'v_b'" in proc.stderr, proc.stderr
    # beside an error, the warning is still listed
    site.write_text(site.read_text().replace("port = 5020", "port = 0"))
    proc = subprocess.run([str(GRIDEDGE), "check-config", str(site)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "devices[0].port = 0" in proc.stderr and "warning: devices[0].map(x.toml).points[1]" in proc.stderr
