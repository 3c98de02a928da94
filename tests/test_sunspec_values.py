"""SunSpec values and writes, pure: raw registers scaled by the SF of the same read, "not implemented" markers
(SunSpec Information Model Specification, "Unimplemented registers") that are no number, values encoded with the
device's SF, points joined into function-16 requests (at most 123 registers, Modbus Application Protocol
v1.1b3, 6.12) and the readback compared word for word."""

from __future__ import annotations

import pytest

from protocols.sunspec.layout import SunSpecLayout, lay_model, layout_of
from protocols.sunspec.values import encode_value, is_not_implemented, scaled
from protocols.sunspec.write import (
    MAX_WRITE_REGISTERS,
    SunSpecWriteError,
    check_points,
    compare,
    plan_writes,
    scale_factors_of,
)


def layout(*models: tuple[int, dict[str, int]]) -> SunSpecLayout:
    """Models laid out from 40002 one after the other (raw registers), as discovery would."""
    laid, address = [], 40002
    for model_id, counts in models:
        m = lay_model(model_id, address, counts)
        laid.append(m)
        address = m.block.end
    return layout_of(laid, 40000)


L701 = layout((701, {}))
L705 = layout((705, {"Crv": 3, "Crv.Pt": 4}))


@pytest.mark.parametrize(
    ("name", "raw", "sf_raw", "expected"),
    [
        ("DERMeasureAC.W", 1234, -1, (123.4, "")),
        ("DERMeasureAC.W", 1234, 2, (123400.0, "")),
        ("DERMeasureAC.W", -32768, -1, (None, "not implemented")),  # int16 0x8000
        ("DERMeasureAC.W", 100, -32768, (None, "scale factor DERMeasureAC.W_SF not implemented")),
        ("DERMeasureAC.W", 100, None, (None, "scale factor DERMeasureAC.W_SF not read")),
        ("DERMeasureAC.W", 100, 11, (None, "scale factor DERMeasureAC.W_SF = 11 outside -10..10")),
        ("DERMeasureAC.InvSt", 0xFFFF, None, (None, "not implemented")),  # enum16
        ("DERMeasureAC.InvSt", 3, None, (3, "")),
        ("DERMeasureAC.TotWhInj", 2**64 - 1, 0, (None, "not implemented")),  # uint64
        ("DERMeasureAC.TotWhInj", 7, 3, (7000.0, "")),
        ("DERMeasureAC.TotWhInj", 0, 0, (0.0, "")),
        ("DERMeasureAC.MnAlrmInfo", "", None, (None, "not implemented")),  # string: all NUL
        ("DERMeasureAC.MnAlrmInfo", "fan", None, ("fan", "")),
    ],
)
def test_raw_values_scale_with_the_sf_read_with_them(name: str, raw: object, sf_raw: object, expected: tuple) -> None:
    assert scaled(L701.point(name), raw, sf_raw) == expected  # type: ignore[arg-type]


def test_the_not_implemented_marker_depends_on_the_type() -> None:
    assert is_not_implemented(L701.point("DERMeasureAC.Var"), -32768)  # int16
    assert not is_not_implemented(L701.point("DERMeasureAC.Var"), 0xFFFF)
    assert is_not_implemented(L701.point("DERMeasureAC.VL1"), 0xFFFF)  # uint16
    assert not is_not_implemented(L701.point("DERMeasureAC.VL1"), -32768)
    assert is_not_implemented(L701.point("DERMeasureAC.Alrm"), 0xFFFFFFFF)  # bitfield32
    assert is_not_implemented(L705.point("DERVoltVar.V_SF"), -32768)  # sunssf
    assert not is_not_implemented(L705.point("DERVoltVar.V_SF"), -2)


@pytest.mark.parametrize(
    ("name", "value", "sf", "words"),
    [
        ("DERVoltVar.Crv[2].VRef", 100.0, -1, [1000]),
        ("DERVoltVar.Crv[2].Pt[1].V", 92.35, -2, [9235]),
        ("DERVoltVar.Crv[2].Pt[1].Var", -44, 0, [0xFFD4]),
        ("DERVoltVar.Crv[2].Pt[1].Var", -44.4, 0, [0xFFD4]),  # the nearest step of 10^0
        ("DERVoltVar.Crv[2].RspTms", 5.0, -1, [0, 50]),  # uint32
        ("DERVoltVar.Ena", 1, None, [1]),  # unscaled enum16
    ],
)
def test_values_are_encoded_with_the_devices_sf(name: str, value: float, sf: int | None, words: list[int]) -> None:
    assert encode_value(L705.point(name), value, sf) == words


@pytest.mark.parametrize(
    ("name", "value", "sf", "message"),
    [
        ("DERVoltVar.Crv[2].Pt[1].V", 7000.0, -1, r"does not fit uint16 with SF -1 \(steps of 0.1\)"),
        ("DERVoltVar.Crv[2].Pt[1].Var", -32768, 0, "SunSpec's 'not implemented' marker"),
        ("DERVoltVar.Ena", 1.5, None, "is not an integer"),
        ("DERVoltVar.Ena", float("nan"), None, "is not a finite number"),
        ("DERVoltVar.Ena", "on", None, "is not a finite number"),
        ("DERVoltVar.Crv[2].Pt[1].V", 95.0, None, "its scale factor DERVoltVar.V_SF is needed"),
    ],
)
def test_a_value_its_point_cannot_hold_is_refused_naming_it(
    name: str, value: object, sf: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as err:
        encode_value(L705.point(name), value, sf)  # type: ignore[arg-type]
    assert name in str(err.value)


def curve(n: int, v: tuple[float, ...], var: tuple[float, ...]) -> dict[str, float]:
    return {f"DERVoltVar.Crv[{n}].Pt[{i}].{k}": x for i, (a, b) in enumerate(zip(v, var, strict=True), 1)
            for k, x in (("V", a), ("Var", b))}  # fmt: skip


SFS = {"DERVoltVar.V_SF": -1, "DERVoltVar.DeptRef_SF": 0, "DERVoltVar.RspTms_SF": -1}


def test_a_curves_points_go_in_one_request_in_address_order() -> None:
    values = curve(2, (92.0, 98.0, 102.0, 108.0), (44.0, 0.0, 0.0, -44.0))
    points = check_points(L705, dict(reversed(values.items())))  # given in any order
    (w,) = plan_writes(points, values, SFS)
    assert w.address == L705.point("DERVoltVar.Crv[2].Pt[1].V").register.address
    assert w.words == (920, 44, 980, 0, 1020, 0, 1080, 0xFFD4) and w.points == tuple(values)
    assert scale_factors_of(points) == ["DERVoltVar.DeptRef_SF", "DERVoltVar.V_SF"]


def test_points_apart_go_in_separate_requests() -> None:
    values = {"DERVoltVar.Ena": 1, **curve(3, (93.0, 97.0, 103.0, 107.0), (30.0, 0.0, 0.0, -30.0))}
    writes = plan_writes(check_points(L705, values), values, SFS)
    assert [w.points[0] for w in writes] == ["DERVoltVar.Ena", "DERVoltVar.Crv[3].Pt[1].V"]
    assert [w.count for w in writes] == [1, 8]


def test_a_run_longer_than_123_registers_is_split_at_a_point_boundary() -> None:
    big = layout((705, {"Crv": 1, "Crv.Pt": 70}))
    values = {f"DERVoltVar.Crv[1].Pt[{i}].V": 100.0 for i in range(1, 71)}
    values |= {f"DERVoltVar.Crv[1].Pt[{i}].Var": 0.0 for i in range(1, 71)}
    writes = plan_writes(check_points(big, values), values, SFS)
    assert [w.count for w in writes] == [MAX_WRITE_REGISTERS, 140 - MAX_WRITE_REGISTERS]
    assert writes[0].end == writes[1].address


def test_unknown_and_read_only_points_are_refused_together_before_anything_is_sent() -> None:
    with pytest.raises(SunSpecWriteError) as err:
        check_points(L705, {"DERVoltVar.NoSuch": 1, "DERVoltVar.NCrv": 2, "DERVoltVar.Ena": 1})
    assert str(err.value) == ("cannot write: DERVoltVar.NoSuch: no such point in the device's layout; "
                              "DERVoltVar.NCrv: read-only (SunSpec access R)")  # fmt: skip
    with pytest.raises(SunSpecWriteError, match="nothing to write"):
        check_points(L705, {})


def test_the_readback_is_compared_word_for_word_and_every_mismatch_named() -> None:
    values = curve(2, (92.0, 98.0, 102.0, 108.0), (44.0, 0.0, 0.0, -44.0))
    (w,) = plan_writes(check_points(L705, values), values, SFS)
    assert compare(L705, w, list(w.words), values, SFS) == []
    read = [920, 44, 990, 0, 1020, 0, 1080, 0x8000]
    mismatches = compare(L705, w, read, values, SFS)
    assert [(m.name, m.wanted, m.wanted_words, m.read_words, m.read) for m in mismatches] == [
        ("DERVoltVar.Crv[2].Pt[2].V", 98.0, (980,), (990,), 99.0),
        ("DERVoltVar.Crv[2].Pt[4].Var", -44.0, (0xFFD4,), (0x8000,), None),  # reads "not implemented"
    ]
