"""Settlement runs: ``preliminary``, ``final`` and ``correction`` runs over [from, to), each a versioned row with
the value used per register and interval, its NEM12 quality and method after VEE, and the reconciliation summary.

Runs are never changed once written: a second final run of the same period is version 2 of that kind and period.
A correction run stores only the intervals whose value, quality or method differ from the last final run covering
its period (``delta`` = new - final), so what changed since the final settlement is a query, not a diff.

Tables (central's store, SQLite or PostgreSQL, through central/settlement/db.py):
``settlement_runs`` (run id, kind, version, created, period, parameters, base run, summary), ``settlement_values``
and ``settlement_imbalance`` (metered against scheduled energy per interval where a schedule exists:
central/settlement/schedules.py; on the values the run settled, all of its period, for every kind of run).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from central.settlement.config import Point, SettlementConfig
from central.settlement.data import DAY_S, Grid, load_grids
from central.settlement.db import SettlementDb
from central.settlement.reconcile import FeederResult, losses_series, reconcile
from central.settlement.schedules import Imbalance, imbalance
from central.settlement.vee import CHECKS, run_vee

RUN_KINDS = ("preliminary", "final", "correction")


class SettlementError(Exception):
    """A run that cannot be made (no final run to correct, a bad period); the text says why."""


@dataclass(frozen=True, slots=True)
class RegisterResult:
    """One register's intervals in [from, to) after VEE (flat arrays, in time order)."""

    site: str
    meter: str
    register: str
    channel: str
    unit: str
    length_s: int
    meter_id: str | None
    starts: np.ndarray
    value: np.ndarray
    quality: np.ndarray
    method: np.ndarray
    failed: np.ndarray
    version: np.ndarray
    delta: np.ndarray | None = None  # a correction run's change against the final run; NaN: unchanged

    @property
    def key(self) -> Point:
        return (self.site, self.meter, self.register)


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: int
    kind: str
    version: int
    created: float
    t_from: int
    t_to: int
    base_run: int | None
    registers: list[RegisterResult]
    feeders: list[FeederResult]
    summary: dict[str, Any]
    imbalances: list[Imbalance] = dataclasses.field(default_factory=list)


def _register_result(g: Grid, cfg: SettlementConfig, grids: dict[Point, Grid], t_from: int, t_to: int):
    p = cfg.vee
    check = cfg.check_meters.get(g.key)
    check_value = None
    if check is not None and check in grids and grids[check].length_s == g.length_s:
        check_value = grids[check].value
    starts = g.starts()
    r = run_vee(g.value, g.quality, g.method, g.reg_start, g.reg_end, g.read_min, g.read_max, starts, g.skip_sum,
                g.scale(), g.length_s, p, check_value)  # fmt: skip
    flat = starts.ravel()
    sel = (flat >= t_from) & (flat < t_to)
    return RegisterResult(
        g.site, g.meter, g.register, g.channel, g.unit, g.length_s, g.meter_id, flat[sel], r.value.ravel()[sel],
        r.quality.ravel()[sel], r.method.ravel()[sel], r.failed.ravel()[sel], g.version.ravel()[sel],
    )  # fmt: skip


def _feeder(cfg: SettlementConfig, f, regs: dict[Point, RegisterResult], t_from: int, t_to: int) -> FeederResult:
    head = regs.get(f.head)
    length = head.length_s if head is not None else 900
    starts = np.arange(t_from, t_to, length, dtype=np.int64)
    flag_only = sum(CHECKS.values()) & ~cfg.vee.replace_mask

    def on_grid(point: Point) -> tuple[np.ndarray, np.ndarray]:
        r = regs.get(point)
        if r is None or r.length_s != length:
            return np.full(starts.shape, np.nan), np.zeros(starts.shape, dtype=bool)
        idx = np.searchsorted(r.starts, starts)
        idx = np.clip(idx, 0, max(r.starts.size - 1, 0))
        hit = r.starts.size > 0 and (r.starts[idx] == starts)
        v = np.where(hit, r.value[idx], np.nan)
        ok = np.where(hit, (r.failed[idx] & flag_only) == 0, False)
        return v, ok

    hv, hok = on_grid(f.head)
    downs = [on_grid(d) for d in f.downstream]
    losses = losses_series(f, starts, length, hv)
    return reconcile(f.name, starts, hv, hok, [d[0] for d in downs], [d[1] for d in downs], losses, cfg.tolerance_pct)


def compute(
    db: SettlementDb, cfg: SettlementConfig, t_from: int, t_to: int
) -> tuple[list[RegisterResult], list[FeederResult]]:
    """VEE for every register with an interval in [t_from, t_to) (like days read from the weeks before), then the
    feeders' reconciliation. Reads only; nothing is stored."""
    if t_to <= t_from:
        raise SettlementError(f"the period [{t_from}, {t_to}) is empty: --to must be after --from")
    history = t_from - cfg.vee.like_weeks * 7 * DAY_S
    grids = load_grids(db, history, t_to)
    regs: dict[Point, RegisterResult] = {}
    for key, g in grids.items():
        r = _register_result(g, cfg, grids, t_from, t_to)
        if (r.version > 0).any():  # an interval in the period itself, not only in the like days' history
            regs[key] = r
    feeders = [_feeder(cfg, f, regs, t_from, t_to) for f in cfg.feeders]
    return list(regs.values()), feeders


def _summary(regs: list[RegisterResult], feeders: list[FeederResult]) -> dict[str, Any]:
    qualities: dict[str, int] = {}
    for r in regs:
        q, n = np.unique(r.quality, return_counts=True)
        for a, b in zip(q.tolist(), n.tolist(), strict=True):
            qualities[a] = qualities.get(a, 0) + b
    failed = {name: int(sum(int(((r.failed & bit) != 0).sum()) for r in regs)) for name, bit in CHECKS.items()}
    fs = [f.summary() for f in feeders]
    total = sum(s["intervals"] for s in fs)
    ok = sum(int((f.complete & f.validated & f.reconciled).sum()) for f in feeders)
    return {
        "registers": len(regs), "intervals": int(sum(r.starts.size for r in regs)), "quality": qualities,
        "failed_checks": failed, "feeders": fs, "reconciliation_rate": round(ok / total, 6) if total else None,
    }  # fmt: skip


def settle(db: SettlementDb, cfg: SettlementConfig, t_from: int, t_to: int, kind: str, now: float) -> RunResult:
    """Compute and store one run (module docstring); returns it with its id."""
    if kind not in RUN_KINDS:
        raise SettlementError(f"run kind {kind!r}: one of {', '.join(RUN_KINDS)}")
    regs, feeders = compute(db, cfg, t_from, t_to)
    imbalances = imbalance(db, regs)
    base_run = None
    if kind == "correction":
        base_run, regs = _deltas(db, regs, t_from, t_to)
    summary = _summary(regs, feeders) | {"imbalance": [i.summary() for i in imbalances]}
    params = {"vee": {k: v for k, v in dataclasses.asdict(cfg.vee).items()}, "tolerance_pct": cfg.tolerance_pct,
              "feeders": [f.name for f in cfg.feeders]}  # fmt: skip
    with db.transaction():  # one writer at a time: the version is the count of the runs before it, plus one
        version = db.run_count(kind, t_from, t_to) + 1
        summary = {"kind": kind, "version": version, "from": t_from, "to": t_to, "base_run": base_run, **summary}
        run_id = db.insert_run((kind, version, now, t_from, t_to, json.dumps(params), base_run, json.dumps(summary)))
        summary["run_id"] = run_id
        db.set_run_summary(run_id, json.dumps(summary))
        for r in regs:
            n = r.starts.size
            delta = r.delta if r.delta is not None else np.full(r.starts.shape, np.nan)
            db.insert("settlement_values", zip(
                [run_id] * n, [r.site] * n, [r.meter] * n, [r.register] * n, r.starts.tolist(), _nulls(r.value),
                r.quality.tolist(), [m or None for m in r.method.tolist()], r.failed.tolist(), r.version.tolist(),
                _nulls(delta), strict=True))  # fmt: skip
        for i in imbalances:
            has = ~np.isnan(i.scheduled)
            n = int(has.sum())
            db.insert("settlement_imbalance", zip(
                [run_id] * n, [i.site] * n, [i.meter] * n, [i.register] * n, i.starts[has].tolist(),
                i.scheduled[has].tolist(), _nulls(i.metered[has]), _nulls(i.imbalance[has]), strict=True))  # fmt: skip
    return RunResult(run_id, kind, version, now, t_from, t_to, base_run, regs, feeders, summary, imbalances)


def _nulls(a: np.ndarray) -> list[float | None]:
    return [None if v != v else v for v in a.tolist()]


def _deltas(db: SettlementDb, regs: list[RegisterResult], t_from: int, t_to: int):
    """The last final run covering [t_from, t_to), and only the intervals that differ from it."""
    base = db.last_final_run(t_from, t_to)
    if base is None:
        raise SettlementError(f"no final run covers [{t_from}, {t_to}): a correction is made against a final run")
    out: list[RegisterResult] = []
    for r in regs:
        old = {s: (v, q, m or 0) for s, v, q, m in db.run_values(base, r.key, t_from, t_to)}
        keep = np.zeros(r.starts.size, dtype=bool)
        delta = np.full(r.starts.size, np.nan)
        for i, (s, v, q, m) in enumerate(zip(r.starts.tolist(), r.value.tolist(), r.quality.tolist(),
                                             r.method.tolist(), strict=True)):  # fmt: skip
            was = old.get(s)
            new_v = None if v != v else v
            if (
                was is None
                or was[1] != q
                or was[2] != m
                or (was[0] is None) != (new_v is None)
                or (new_v is not None and abs(new_v - was[0]) > 1e-9)
            ):
                keep[i] = True
                delta[i] = (new_v or 0.0) - (was[0] or 0.0) if was is not None else (new_v or 0.0)
        if keep.any():
            out.append(dataclasses.replace(
                r, starts=r.starts[keep], value=r.value[keep], quality=r.quality[keep], method=r.method[keep],
                failed=r.failed[keep], version=r.version[keep], delta=delta[keep]))  # fmt: skip
    return base, out
