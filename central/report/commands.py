"""Dispatch frequency of one day (docs/report.md, "Dispatch frequency"): central's commands signed with the
dispatch key (``[dispatch] key_id``, else the first key of role dispatch) and issued in the day, counted per site
and kind by what came of them: applied; refused; failed; expired (no result and past ``expires_at`` when the
report runs); waiting (no result, still valid)."""

from __future__ import annotations

import time
from collections import Counter

from central.dispatch.config import DispatchSendError, dispatch_key
from central.report.data import DAY_S, Inputs, Section

OUTCOMES = ("applied", "refused", "failed", "expired", "waiting")


def dispatch_frequency(inputs: Inputs, day: int, now: float | None = None) -> Section:
    sec = Section("dispatch", "Dispatch frequency (commands signed with the dispatch key)")
    d = inputs.config.dispatch
    if d is None:
        sec.notes.append("no data: no [dispatch] section")
        return sec
    try:
        key_id = dispatch_key(d, inputs.config.commands).key_id
    except DispatchSendError as err:
        sec.notes.append(f"no data: {err}")
        return sec
    now = time.time() if now is None else now
    for s in d.sites:
        counts: Counter[tuple[str, str]] = Counter()
        found = inputs.sql(
            "SELECT kind, status, expires_at FROM commands WHERE site = ? AND key_id = ? AND issued_at >= ? "
            "AND issued_at < ?",
            (s.site, key_id, day, day + DAY_S),
        )
        for kind, status, expires_at in found:
            if status == "sent":
                status = "expired" if expires_at < now else "waiting"
            counts[(kind, status)] += 1
        if not counts:
            sec.notes.append(f"no data: {s.site}: no dispatch command issued in the day")
            continue
        for kind in sorted({k for k, _ in counts}):
            row = {"site": s.site, "kind": kind, **{o: counts[(kind, o)] for o in OUTCOMES}}
            row["issued"] = sum(counts[(kind, o)] for o in OUTCOMES)
            sec.rows.append(row)
    return sec
