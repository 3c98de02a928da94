"""Is each site following its schedule? (docs/dispatch.md, "Following")

Over a recent window (default the last hour), per site, from central's own records:

- its dispatch commands (signed with the dispatch key): ``applied``; ``refused`` or ``failed`` by the site (with
  the reasons); ``expired`` — no result and past the command's ``expires_at``, so the site never took it (it was
  gone, or its link was);
- its scheduled energy against its metered energy (settlement's ``schedules`` and ``intervals`` tables), per meter
  and interval where both exist: *off* when they differ by more than ``follow_tolerance_pct`` of the scheduled
  energy (at least 0.01 kWh).

A site follows when it has dispatch commands in the window and none was refused, failed or expired and no metered
interval was off. Otherwise it is reported as not following, with why, and the event
``dispatch_site_not_following`` is logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from central.commands import Outcome, outcomes
from central.dispatch.config import DispatchConfig
from central.settlement.data import load_rows
from central.settlement.db import SettlementDb
from central.settlement.schedules import allowed_imbalance, scheduled
from central.store import CentralStoreError, Store
from protocols.eventlog import EventLog

log = EventLog("central.dispatch")


@dataclass(frozen=True, slots=True)
class SiteFollowing:
    site: str
    applied: int = 0
    refused: int = 0
    expired: int = 0
    waiting: int = 0  # sent, no result yet, still valid
    compared: int = 0  # metered intervals compared with the schedule
    off: int = 0
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def commands(self) -> int:
        return self.applied + self.refused + self.expired + self.waiting

    @property
    def following(self) -> bool:
        return self.commands > 0 and self.refused == 0 and self.expired == 0 and self.off == 0

    @property
    def state(self) -> str:
        if self.following:
            return "following"
        return "no_commands" if self.commands == 0 and self.off == 0 else "not_following"

    def why(self) -> str:
        parts = []
        if self.expired:
            parts.append(f"{self.expired} command(s) expired without a result")
        if self.refused:
            parts.append(f"{self.refused} refused or failed ({', '.join(sorted(set(self.reasons)))})")
        if self.off:
            parts.append(f"{self.off} of {self.compared} metered interval(s) off schedule")
        if not self.commands and not self.off:
            parts.append("no dispatch command in the window")
        return "; ".join(parts) or "-"


def _command_counts(site: str, found: Sequence[Outcome], key_id: str, since: float, now: float) -> dict[str, object]:
    applied = refused = expired = waiting = 0
    reasons: list[str] = []
    for o in found:
        c = o.command
        if c.key_id != key_id or c.issued_at < since or c.audience != site:
            continue
        if o.status == "applied":
            applied += 1
        elif o.status in ("refused", "failed"):
            refused += 1
            reasons.append(o.reason or o.status)
        elif c.expires_at < now:
            expired += 1
        else:
            waiting += 1
    return {"applied": applied, "refused": refused, "expired": expired, "waiting": waiting, "reasons": tuple(reasons)}


def _metered_off(db: SettlementDb, cfg: DispatchConfig, site: str, since: float, now: float) -> tuple[int, int]:
    spec = next(s for s in cfg.sites if s.site == site)
    compared = off = 0
    for m in spec.meters:
        try:
            rows = [r for r in load_rows(db, int(since), int(now), site, m.meter) if r[6] == m.channel]
        except CentralStoreError:
            return 0, 0
        rows = [r for r in rows if r[8] is not None and r[5] <= now]
        if not rows:
            continue
        starts = np.array([r[3] for r in rows], dtype=np.int64)
        metered = np.array([r[8] for r in rows], dtype=float)
        sched = scheduled(db, site, m.meter, m.channel, starts)
        both = ~np.isnan(sched)
        compared += int(both.sum())
        diff = np.abs(metered[both] - sched[both])
        allowed, _ = allowed_imbalance(sched[both], cfg.follow_tolerance_pct)
        off += int((diff > allowed).sum())
    return compared, off


def following(cfg: DispatchConfig, store: Store, db: SettlementDb | None, key_id: str, now: float,
              window_s: float = 3600.0, *, metered_now: float | None = None,
              metered_window_s: float | None = None) -> list[SiteFollowing]:  # fmt: skip
    """Each dispatched site's record over ``[now - window_s, now]``; logs ``dispatch_site_not_following``. The
    metered intervals over ``[metered_now - metered_window_s, metered_now]`` when given (a scaled clock: the
    commands' windows are on the wall clock, the intervals on the site's clock)."""
    since = now - window_s
    m_now = now if metered_now is None else metered_now
    m_since = m_now - (window_s if metered_window_s is None else metered_window_s)
    out = []
    for spec in cfg.sites:
        counts = _command_counts(spec.site, outcomes(store, spec.site), key_id, since, now)
        compared, off = _metered_off(db, cfg, spec.site, m_since, m_now) if db is not None else (0, 0)
        f = SiteFollowing(spec.site, compared=compared, off=off, **counts)  # type: ignore[arg-type]
        if f.state == "not_following":
            log.warning("dispatch_site_not_following", site=f.site, expired=f.expired, refused=f.refused,
                        off_intervals=f.off, reason=f.why())  # fmt: skip
        out.append(f)
    return out


def status_table(rows: Sequence[SiteFollowing]) -> str:
    head = f"{'site':<16} {'state':<14} {'applied':>7} {'refused':>7} {'expired':>7} {'waiting':>7} {'metered':>7} " \
           f"{'off':>4}  why"  # fmt: skip
    lines = [head]
    for r in rows:
        lines.append(f"{r.site:<16} {r.state:<14} {r.applied:>7} {r.refused:>7} {r.expired:>7} {r.waiting:>7} "
                     f"{r.compared:>7} {r.off:>4}  {r.why() if r.state != 'following' else '-'}")  # fmt: skip
    return "\n".join(lines)


__all__ = ["SiteFollowing", "following", "status_table"]
