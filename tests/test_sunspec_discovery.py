"""SunSpec discovery: the marker at 40000, 0 or 50000, the model chain walked and bounded, counts read from the
device, model 1 decoded; every malformed map a clear error or a named skip (SunSpec Information Model
Specification, "Device Modbus map"). The sans-IO generator is driven from register images in memory; the same
discovery then runs over real Modbus TCP against the bench's inverter served at each base."""

from __future__ import annotations

import pytest
from helpers.aio import async_test
from helpers.sunspec import common_model, drive, inverter, inverter_image, served_image, served_inverter, suns

from protocols.modbus.client import TcpTransport
from protocols.sunspec.client import discover
from protocols.sunspec.discovery import DiscoveryError
from protocols.sunspec.layout import lay_model

END = 0xFFFF


def chain(base: int, *models: dict[int, int], end_at: int | None = None) -> dict[int, int]:
    """The marker at ``base``, ``models`` (already placed), the end model after the last one."""
    words = suns(base)
    for m in models:
        words |= m
    last = max(words) + 1 if end_at is None else end_at
    return words | {last: END, last + 1: 0}


def zeros(model_id: int, address: int, length: int, **at: int) -> dict[int, int]:
    """A model header and ``length`` zero registers, with ``at`` (point short name -> value) set by the definition."""
    words = {address: model_id, address + 1: length} | {a: 0 for a in range(address + 2, address + 2 + length)}
    for p in lay_model(model_id, address, {"Crv": 0, "Crv.Pt": 0, "Ctl": 0, "module": 0}).points:
        short = p.name.rsplit(".", 1)[1]
        if short in at:
            words[p.register.address] = at[short]
    return words


# ---- sans-IO, from register images -----------------------------------------------------------------------------


def test_the_bench_inverter_is_laid_out_as_it_lays_itself_out() -> None:
    inv = inverter()
    found, reads = drive(inverter_image(inv))
    assert reads[0] == (40000, 4, "SunS marker")
    assert found.base == 40000 and found.model_ids == (1, 701, 702, 703, 704, 705, 706, 711) and found.skipped == ()
    ours = {n: (p.register.address, p.register.dtype, p.register.words) for n, p in found.layout.points.items()}
    theirs = {n: (p.register.address, p.register.dtype, p.register.words) for n, p in inv.layout.points.items()}
    assert ours == theirs
    assert found.layout.counts == {"DERVoltVar.NPt": 4, "DERVoltVar.NCrv": 3, "DERVoltWatt.NPt": 2,
                                   "DERVoltWatt.NCrv": 3, "DERFreqDroop.NCtl": 3}  # fmt: skip
    assert found.common["Mn"] == "GridEdge Sim" and found.common["SN"] == inv.serial_number
    assert found.common["DA"] is None  # 0xFFFF: not implemented
    assert all(p.register.scale == 1.0 for p in found.layout.points.values()), "raw registers: SFs are read live"


def test_the_marker_is_looked_for_at_40000_then_0_then_50000() -> None:
    found, reads = drive(inverter_image(inverter(base=50000)))
    assert [r[:2] for r in reads[:3]] == [(40000, 4), (0, 4), (50000, 4)]
    assert found.base == 50000 and found.layout.model(701).address == 50070


def test_a_device_without_the_marker_is_an_error_saying_what_each_base_holds() -> None:
    meter = {0: 100, 1: 101, 2: 102, 3: 103}
    with pytest.raises(DiscoveryError) as err:
        drive(meter)
    text = str(err.value)
    assert "no SunSpec marker 'SunS' (0x5375 0x6E53) at 40000, 0, 50000" in text
    assert "40000: exception 2 (illegal data address)" in text and "0: 0x0064 0x0065" in text
    assert "50000: exception 2 (illegal data address)" in text


def test_a_model_that_runs_past_the_register_space_is_an_error_naming_it() -> None:
    with pytest.raises(DiscoveryError, match=r"model 1 at 50002: L = 20000 runs past the register space") as err:
        drive(suns(50000) | {50002: 1, 50003: 20000})
    assert err.value.address == 50002


def test_a_chain_that_breaks_before_its_end_model_is_an_error_naming_the_address() -> None:
    with pytest.raises(DiscoveryError, match=r"the model chain breaks at 40070, after model 1 at 40002 \(L = 66\)"):
        drive(suns(40000) | common_model(40002))


def test_a_chain_without_an_end_model_is_bounded() -> None:
    words = suns(40000) | common_model(40002)
    words |= {a: v for k in range(200) for a, v in ((40070 + 2 * k, 60001), (40071 + 2 * k, 0))}
    with pytest.raises(DiscoveryError, match="more than 128 models from 40000: no end model"):
        drive(words)


def test_the_first_model_must_be_the_common_model() -> None:
    with pytest.raises(DiscoveryError, match="the first model at 40002 is 704: SunSpec puts the common model 1 first"):
        drive(chain(40000, zeros(704, 40002, 65)))


def test_an_unknown_model_is_skipped_by_its_length_and_named() -> None:
    words = chain(40000, common_model(40002), {40070: 60001, 40071: 3, 40072: 7, 40073: 7, 40074: 7},
                  zeros(704, 40075, 65))  # fmt: skip
    found, _ = drive(words)
    assert found.model_ids == (1, 704) and found.layout.model(704).address == 40075
    (skipped,) = found.skipped
    assert (skipped.model_id, skipped.address, skipped.length) == (60001, 40070, 3)
    assert "not a model pysunspec2 ships" in skipped.reason


def test_a_model_whose_length_disagrees_with_its_definition_is_skipped_and_named() -> None:
    found, _ = drive(chain(40000, common_model(40002), zeros(704, 40070, 60)))
    assert found.model_ids == (1,)
    (skipped,) = found.skipped
    assert skipped.model_id == 704 and skipped.reason == "L = 60 but its definition takes 65 registers"


def test_repeating_groups_are_laid_out_from_the_counts_the_device_holds() -> None:
    length = lay_model(705, 0, {"Crv": 2, "Crv.Pt": 3}).block.length
    found, reads = drive(chain(40000, common_model(40002), zeros(705, 40070, length, NCrv=2, NPt=3)))
    assert (40075, 2, "model 705 counts") in reads  # NPt, NCrv: one read
    assert found.layout.counts == {"DERVoltVar.NCrv": 2, "DERVoltVar.NPt": 3}
    names = found.layout.points
    assert "DERVoltVar.Crv[2].Pt[3].Var" in names and "DERVoltVar.Crv[3].ActPt" not in names
    assert "DERVoltVar.Crv[1].Pt[4].V" not in names


def test_counts_reading_not_implemented_skip_the_model() -> None:
    found, _ = drive(chain(40000, common_model(40002), zeros(705, 40070, 13, NCrv=0xFFFF, NPt=4)))
    assert found.model_ids == (1,) and found.skipped[0].reason == "its count NCrv reads 'not implemented'"


def test_counts_that_cannot_fit_l_skip_the_model() -> None:
    found, _ = drive(chain(40000, common_model(40002), zeros(705, 40070, 13, NCrv=3, NPt=4)))
    assert found.model_ids == (1,) and "L = 13" in found.skipped[0].reason


def test_a_legacy_repeating_group_takes_its_count_from_l() -> None:
    # model 160 (MPPT): 8 registers of fixed points, then 20 per module; the definition's count is 0
    found, _ = drive(chain(40000, common_model(40002), zeros(160, 40070, 8 + 2 * 20)))
    assert "mppt.module[2].DCA" in found.layout.points and "mppt.module[3].DCA" not in found.layout.points


def test_model_1_without_its_trailing_pad_is_accepted() -> None:
    found, _ = drive(chain(40000, common_model(40002, length=65)))
    assert found.model_ids == (1,) and found.skipped == ()
    assert "common.Pad" not in found.layout.points and found.layout.model(1).length == 65
    assert found.common == {"Mn": "Acme", "Md": "X1", "Opt": None, "Vr": "1.0", "SN": "42", "DA": 1}


def test_a_second_instance_of_a_model_carries_its_index_in_its_names() -> None:
    found, _ = drive(chain(40000, common_model(40002), zeros(704, 40070, 65), zeros(704, 40137, 65)))
    assert found.model_ids == (1, 704, 704)
    first = found.layout.point("DERCtlAC.WMaxLimPct").register.address
    assert found.layout.point("DERCtlAC[2].WMaxLimPct").register.address == first + 67
    assert [m.name for m in found.layout.models] == ["common", "DERCtlAC", "DERCtlAC[2]", "end"]


# ---- over Modbus TCP ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [40000, 0, 50000])
@async_test
async def test_the_bench_inverter_is_discovered_at_its_base_over_tcp(base: int) -> None:
    async with served_inverter(inverter(base=base)) as rig:
        transport = TcpTransport("127.0.0.1", rig.port, timeout_s=1.0)
        try:
            found = await discover(transport, 1)
        finally:
            await transport.close()
    assert found.base == base and found.model_ids == (1, 701, 702, 703, 704, 705, 706, 711)
    assert found.layout.model(701).address == base + 70
    assert found.common["SN"] == rig.inv.serial_number and found.common["Md"] == "SIM-PV-500KVA"


@async_test
async def test_a_device_without_sunspec_is_a_clear_error_over_tcp() -> None:
    async with served_image({0: 100, 1: 101, 2: 102, 3: 103}) as port:
        transport = TcpTransport("127.0.0.1", port, timeout_s=1.0)
        try:
            refused = r"exception 2 \(illegal data address\)"
            with pytest.raises(DiscoveryError, match=rf"no SunSpec marker .* \(40000: {refused}; 0: 0x0064 0x0065; "
                               rf"50000: {refused}\)"):  # fmt: skip
                await discover(transport, 1)
        finally:
            await transport.close()


@async_test
async def test_a_chain_that_runs_past_the_register_space_is_an_error_over_tcp() -> None:
    async with served_image(suns(50000) | {50002: 1, 50003: 20000}) as port:
        transport = TcpTransport("127.0.0.1", port, timeout_s=1.0)
        try:
            with pytest.raises(DiscoveryError, match="model 1 at 50002: L = 20000 runs past the register space"):
                await discover(transport, 1)
        finally:
            await transport.close()
