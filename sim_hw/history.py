"""``gridedge sim history``: days of 15-minute feeder history from the bench's physics (docs/forecast.md).

Every 15-minute step sets each load of the OpenDSS feeder from the realistic profiles
(:mod:`sim_hw.feeder.bdew`: BDEW class profiles, typical-year temperature, holidays, AR(1) noise), each PV
site the bench's config drives (its inverter's ``kw`` times the PV output per kWp, at unity power factor, as
the bench's inverters run by default), solves the power flow (OpenDSS's own regulator control picks the taps;
the capacitors stay as the script leaves them) and writes one CSV row: the feeder head's P and Q, the load
and PV totals, the losses, the weather, each PV site and each feeder meter of the config.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from protocols.eventlog import EventLog
from sim_hw.config import BenchConfig
from sim_hw.feeder.bdew import POINTS_PER_DAY, STEP_S, BdewProfiles, ProfileSettings

log = EventLog("sim.feeder")  # the history is the feeder's physics run offline

MAX_DAYS = 3660  # ten years
CHUNK_DAYS = 30  # profiles are built a month at a time (memory stays flat for long histories)


class HistoryError(ValueError):
    """The history cannot be made from this config (no feeder, a bad element) or written."""


@dataclass(frozen=True, slots=True)
class HistoryResult:
    rows: int
    not_converged: int
    columns: tuple[str, ...]


def _iso(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def write_history(config: BenchConfig, out: Path, *, start: float, days: int, seed: int | None = None) -> HistoryResult:
    """Solve ``days`` days from ``start`` [s UTC, midnight] at 15-minute steps and write the CSV to ``out``.

    The file appears whole or not at all (written beside ``out`` and renamed).
    """
    from sim_hw.feeder.model import Feeder, FeederError

    if config.feeder is None:
        raise HistoryError(f"{config.source}: the bench has no [feeder]: the history needs its physics")
    if not 1 <= days <= MAX_DAYS:
        raise HistoryError(f"days={days!r}: allowed 1..{MAX_DAYS}")
    settings = config.profiles if config.profiles is not None else ProfileSettings(source="bdew")
    fs = config.feeder
    try:
        feeder = Feeder.from_file(fs.dss)
        for site, kva in fs.pv_kva.items():
            feeder.set_pv_rating(site, kva)
        if fs.load_model != "published":
            feeder.set_load_model(fs.load_model)
    except FeederError as err:
        raise HistoryError(f"feeder: {err}") from err
    profiles = BdewProfiles(settings, feeder.load_ratings(), seed=seed)
    sites = feeder.pv_sites()
    pv: dict[str, tuple[float, float]] = {}  # site -> (kw at 1 kW/kWp, inverter kVA)
    meters: list[tuple[str, str, int, float]] = []
    for d in config.devices:
        if d.kind == "inverter" and d.options.get("site") in sites:
            kva = float(d.options.get("kva", sites[d.options["site"]].kva))
            pv[d.options["site"]] = (float(d.options.get("kw", kva)), kva)
        elif d.kind == "feeder-meter":
            sign = -1.0 if d.options.get("reverse") is True else 1.0  # the meter's own convention and CT
            meters.append((d.name, str(d.options.get("element")), int(d.options.get("terminal", 1)), sign))
    head_element, _, head_terminal = fs.head.partition("/")
    columns = ["timestamp", "head_p_kw", "head_q_kvar", "load_p_kw", "load_q_kvar", "pv_p_kw", "losses_kw",
               "temperature", "irradiance"]  # fmt: skip
    columns += [f"pv_{s}_kw" for s in pv] + [c for m, *_ in meters for c in (f"{m}_p_kw", f"{m}_q_kvar")]
    folder = out.parent if str(out.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=folder)
    rows = not_converged = 0
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(columns)
            for chunk0 in range(0, days, CHUNK_DAYS):
                n = min(CHUNK_DAYS, days - chunk0) * POINTS_PER_DAY
                fr = profiles.frame(start + chunk0 * 86400.0, n)
                names = list(fr.load_p)
                for k in range(n):
                    t = float(fr.times[k])
                    lp = lq = 0.0
                    for name in names:
                        p, q = float(fr.load_p[name][k]), float(fr.load_q[name][k])
                        feeder.set_load(name, p, q)
                        lp += p
                        lq += q
                    pu = float(fr.weather.pv_pu[k])
                    pv_kw = {}
                    for site, (kw, kva) in pv.items():
                        pv_kw[site] = min(kw * pu, kva)
                        feeder.set_pv(site, pv_kw[site], 0.0)
                    if not feeder.solve_lean():
                        not_converged += 1
                        log.warning("history_not_converged", t=_iso(t))
                    head = feeder.terminal_power(head_element, int(head_terminal))
                    row = [_iso(t), f"{head.real:.3f}", f"{head.imag:.3f}", f"{lp:.3f}", f"{lq:.3f}",
                           f"{sum(pv_kw.values()):.3f}", f"{feeder.losses_kw():.3f}",
                           f"{fr.weather.temperature[k]:.2f}", f"{fr.weather.ghi[k]:.1f}"]  # fmt: skip
                    row += [f"{v:.3f}" for v in pv_kw.values()]
                    for _, element, terminal, sign in meters:
                        s = sign * feeder.terminal_power(element, terminal)
                        row += [f"{s.real:.3f}", f"{s.imag:.3f}"]
                    w.writerow(row)
                    rows += 1
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary file: mkstemp makes it private
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return HistoryResult(rows, not_converged, tuple(columns))


def midnight_utc(text: str) -> float:
    """``YYYY-MM-DD`` -> its 00:00 UTC [s since the epoch]; ValueError otherwise."""
    from datetime import UTC, datetime

    dt = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    t = dt.timestamp()
    if not math.isfinite(t) or t % STEP_S:
        raise ValueError(text)
    return t
