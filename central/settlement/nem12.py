"""A settlement run as an AEMO NEM12 file (Meter Data File Format Specification NEM12 & NEM13, "MDFF", section 4:
the NEM12 records).

Records, as the MDFF lays them out (CSV, one record a line, fields in this order):

- ``100`` header: RecordIndicator, VersionHeader ``NEM12``, DateTime (DateTime12 ``YYYYMMDDHHMM``), FromParticipant,
  ToParticipant.
- ``200`` NMI data details, one per NMI and data stream (a meter register here): RecordIndicator, NMI (10
  characters), NMIConfiguration (the NMI's suffixes, ``E1B1``), RegisterID, NMISuffix, MDMDataStreamIdentifier,
  MeterSerialNumber, UOM, IntervalLength (minutes: 5, 15 or 30), NextScheduledReadDate (empty).
- ``300`` interval data, one per day of that stream: RecordIndicator, IntervalDate (Date8), IntervalValue1..N
  (N = 1440 / IntervalLength), QualityMethod, ReasonCode, ReasonDescription, UpdateDateTime (DateTime14),
  MSATSLoadDateTime (empty). QualityMethod is the quality flag and, for E/S/F, the two-digit method (``S15``); a day
  whose intervals do not share one QualityMethod carries ``V`` (variable) and is followed by ``400`` records.
- ``400`` interval event: RecordIndicator, StartInterval, EndInterval (1-based, inclusive), QualityMethod,
  ReasonCode, ReasonDescription; together they cover every interval of a ``V`` day.
- ``900`` end of data.

Our mapping (docs/settlement.md): the channel gives the NMI suffix (MDFF Appendix: ``E`` energy delivered to the
customer, ``B`` received from the customer, ``Q`` / ``K`` the same for kvarh) with element 1; the NMI is
``[settlement.nmi]``'s or one derived from site and meter; the meter's identity is the serial number. Substituted
and final-substituted intervals carry ReasonCode 0 (free text) with the method's name as the description. A null
interval (``N``) is written as 0 with quality ``N``: the IntervalValue field is a number. NEM12 dates are in
market time; ``utc_offset_s`` shifts our UTC intervals into it (0: UTC days). Registers of 60-minute intervals
have no NEM12 IntervalLength and are left out (the caller lists them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from central.settlement.runs import RegisterResult
from protocols.telemetry.intervals import METHODS

NEM12_LENGTHS_MIN = (5, 15, 30)  # MDFF NEM12 200 record, IntervalLength
SUFFIX = {"kwh_delivered": "E", "kwh_received": "B", "kvarh_delivered": "Q", "kvarh_received": "K"}
UOM = {"kWh": "kWh", "kvarh": "kVArh"}
_B36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def derived_nmi(site: str, meter: str) -> str:
    """A stable 10-character NMI for a meter without one configured: ``G`` and 9 base-36 digits of a SHA-1."""
    n = int.from_bytes(hashlib.sha1(f"{site}/{meter}".encode()).digest()[:8], "big")
    out = ""
    for _ in range(9):
        n, d = divmod(n, 36)
        out += _B36[d]
    return "G" + out


def quality_method(q: str, m: int) -> str:
    """The QualityMethod field: ``A`` and ``N`` alone, E/S/F with their two-digit method (``S15``)."""
    return q if q in ("A", "N") or not m else f"{q}{m:02d}"


def _reason(qm: str) -> tuple[str, str]:
    if qm[0] in ("S", "F") and len(qm) == 3:
        return "0", METHODS.get(int(qm[1:]), "")  # 0: free text (MDFF reason codes)
    return "", ""


def _number(v: float) -> str:
    s = f"{v:.5f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def write_nem12(
    path: Path,
    registers: Iterable[RegisterResult],
    *,
    created: float,
    from_participant: str = "GRIDEDGE",
    to_participant: str = "RETAILER",
    nmi: Mapping[str, str] | None = None,
    utc_offset_s: int = 0,
) -> list[RegisterResult]:
    """Write the file; returns the registers left out (intervals NEM12 has no length for)."""
    nmi = nmi or {}
    regs = sorted(registers, key=lambda r: (r.site, r.meter, r.channel, r.register))
    left_out = [r for r in regs if r.length_s // 60 not in NEM12_LENGTHS_MIN]
    regs = [r for r in regs if r.length_s // 60 in NEM12_LENGTHS_MIN]
    config: dict[tuple[str, str], str] = {}
    for r in regs:
        config.setdefault((r.site, r.meter), "")
        config[(r.site, r.meter)] += f"{SUFFIX[r.channel]}1"
    stamp = datetime.fromtimestamp(created, UTC)
    lines = [f"100,NEM12,{stamp:%Y%m%d%H%M},{from_participant},{to_participant}"]
    update = f"{stamp:%Y%m%d%H%M%S}"
    for r in regs:
        the_nmi = nmi.get(f"{r.site}/{r.meter}") or derived_nmi(r.site, r.meter)
        suffix = f"{SUFFIX[r.channel]}1"
        stream = f"N{list(SUFFIX).index(r.channel) + 1}"
        serial = (r.meter_id or r.meter)[:12].replace(",", " ")
        minutes = r.length_s // 60
        register_id = str(list(SUFFIX).index(r.channel) + 1)
        lines.append(f"200,{the_nmi},{''.join(dict.fromkeys(config[(r.site, r.meter)]))},{register_id},{suffix},"
                     f"{stream},{serial},{UOM[r.unit]},{minutes},")  # fmt: skip
        slots = 86_400 // r.length_s
        local = r.starts + utc_offset_s
        days = local // 86_400
        for day in np.unique(days):
            values = np.zeros(slots)
            qms = ["N"] * slots
            sel = days == day
            idx = (local[sel] - day * 86_400) // r.length_s
            for i, v, q, m in zip(idx.tolist(), r.value[sel].tolist(), r.quality[sel].tolist(),
                                  r.method[sel].tolist(), strict=True):  # fmt: skip
                values[i] = 0.0 if v != v else v
                qms[i] = quality_method(q, int(m))
            date = datetime.fromtimestamp(int(day) * 86_400, UTC).strftime("%Y%m%d")
            one = len(set(qms)) == 1
            qm = qms[0] if one else "V"
            code, desc = _reason(qm) if one else ("", "")
            lines.append(f"300,{date},{','.join(_number(v) for v in values)},{qm},{code},{desc},{update},")
            if not one:
                first = 0
                for i in range(1, slots + 1):
                    if i == slots or qms[i] != qms[first]:
                        code, desc = _reason(qms[first])
                        lines.append(f"400,{first + 1},{i},{qms[first]},{code},{desc}")
                        first = i
    lines.append("900")
    path.write_text("\r\n".join(lines) + "\r\n")
    return left_out
