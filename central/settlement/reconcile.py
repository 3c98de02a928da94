"""Feeder reconciliation: per interval, the head meter against the sum of the downstream meters plus losses.

An interval of a feeder is *complete* when the head and every downstream register have a value after VEE, *validated*
when none of them carries a failed check that was left in place (flag-only checks, ``VeeParams.replace_on``), and
*reconciled* when ``|head - (downstream + losses)| <= tolerance_pct % of |head|``. The reconciliation rate is the
share of the run's intervals that are all three; the unaccounted-for energy is ``head - downstream - losses`` summed
over the complete intervals [kWh].
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from central.settlement.config import Feeder


class LossesError(ValueError):
    """A losses file that cannot be read; the text names the file and line."""


@dataclass(frozen=True, slots=True)
class FeederResult:
    name: str
    starts: np.ndarray  # [s]
    head: np.ndarray  # [kWh], NaN where missing
    downstream: np.ndarray  # sum of the downstream registers [kWh]
    losses: np.ndarray  # [kWh]
    complete: np.ndarray
    validated: np.ndarray
    reconciled: np.ndarray

    def summary(self) -> dict[str, Any]:
        n = int(self.starts.size)
        ok = self.complete & self.validated & self.reconciled
        c = self.complete
        unaccounted = float(np.sum((self.head - self.downstream - self.losses)[c])) if c.any() else 0.0
        return {
            "feeder": self.name, "intervals": n, "complete": int(c.sum()), "validated": int(self.validated.sum()),
            "reconciled": int((self.reconciled & c).sum()), "reconciliation_rate": round(float(ok.sum()) / n, 6) if n else 0.0,
            "head_kwh": round(float(np.nansum(self.head[c])), 6),
            "downstream_kwh": round(float(np.nansum(self.downstream[c])), 6),
            "losses_kwh": round(float(np.nansum(self.losses[c])), 6), "unaccounted_kwh": round(unaccounted, 6),
        }  # fmt: skip


def losses_series(feeder: Feeder, starts: np.ndarray, length_s: int, head: np.ndarray) -> np.ndarray:
    """The feeder's losses per interval [kWh]: a fraction of the head, from the bench's truth log (the difference
    of its cumulative ``loss_kwh`` across each interval, docs/truth-log.md), or from a CSV ``start,loss_kwh``."""
    if not isinstance(feeder.losses, str):
        return head * feeder.losses
    assert feeder.losses_file is not None
    if feeder.losses == "truth":
        ts, cum = [], []
        with feeder.losses_file.open() as fh:
            for n, line in enumerate(fh, 1):
                if not line.endswith("\n"):
                    break  # a last line still being written
                try:
                    rec = json.loads(line)
                except ValueError as err:
                    raise LossesError(f"{feeder.losses_file}:{n}: not JSON ({err})") from err
                if rec.get("record") == "step" and "loss_kwh" in rec:
                    ts.append(float(rec["ts"]))
                    cum.append(float(rec["loss_kwh"]))
        if not ts:
            return np.full(starts.shape, np.nan)
        t, c = np.asarray(ts), np.asarray(cum)
        inside = (starts >= t[0]) & (starts + length_s <= t[-1])
        return np.where(inside, np.interp(starts + length_s, t, c) - np.interp(starts, t, c), np.nan)
    by_start: dict[int, float] = {}
    with feeder.losses_file.open(newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh), 2):
            try:
                by_start[int(float(row["start"]))] = float(row["loss_kwh"])
            except (KeyError, TypeError, ValueError) as err:
                raise LossesError(f"{feeder.losses_file}:{n}: columns start,loss_kwh with numbers ({err!r})") from err
    return np.array([by_start.get(int(s), np.nan) for s in starts], dtype=float)


def reconcile(
    name: str,
    starts: np.ndarray,
    head: np.ndarray,
    head_ok: np.ndarray,
    downstream: list[np.ndarray],
    downstream_ok: list[np.ndarray],
    losses: np.ndarray,
    tolerance_pct: float,
) -> FeederResult:
    """Per interval: complete, validated (``*_ok``: no flag-only failure left), reconciled (module docstring)."""
    down = np.sum(downstream, axis=0) if downstream else np.zeros_like(head)
    complete = ~np.isnan(head) & ~np.isnan(down) & ~np.isnan(losses)
    validated = head_ok.copy()
    for ok in downstream_ok:
        validated &= ok
    with np.errstate(invalid="ignore"):
        reconciled = complete & (np.abs(head - down - losses) <= np.abs(head) * tolerance_pct / 100.0)
    return FeederResult(name, starts, head, down, losses, complete, validated, reconciled)
