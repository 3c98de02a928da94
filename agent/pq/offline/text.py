"""The text reports of ``gridedge pq analyze`` (:func:`format_analysis`, from the JSON document of
docs/pq-report.md) and ``gridedge pq report`` (:func:`format_compliance`)."""

from __future__ import annotations

from typing import Any

from agent.pq.compliance import ComplianceReport, CriterionResult


def format_analysis(report: dict[str, Any]) -> str:
    """The human-readable report of ``gridedge pq analyze``."""
    f = report["file"]
    lines = [
        f"File      {f['path']}  ({f['format']}"
        + (f" {f.get('revision')} {f.get('data_format')}" if f["format"] == "comtrade" else "")
        + f")  {f['rate_hz']:g} Hz x {f['samples']} samples = {f['duration_s']:.3f} s",
        f"Nominal   {report['nominal_hz']:g} Hz ({report['nominal_hz_source']})   Udin {report['udin_v']:g} V "
        f"({report['udin_source']})   lamp {report['lamp_v']} V   harmonics to order {report['max_order']}",
        "",
        f"{'channel':<8}{'rms V':>10}{'min V':>10}{'max V':>10}{'freq Hz':>10}{'THD %':>8}{'Pinst max':>10}   Pst",
    ]
    any_flag = False
    for name, ch in report["channels"].items():
        pst_flags = ch.get("pst_flagged") or [False] * len(ch["pst"])
        pst = ", ".join(_flagged(f"{p:.3f}", f) for p, f in zip(ch["pst"], pst_flags, strict=True)) or "-"
        if ch["pst_short"] and ch["pst"]:
            pst += f" (short file: {ch['pst_interval_s']:.0f} s)"
        pinst_flag = bool(ch.get("pinst_max_flagged")) and ch["pinst_max"] is not None
        any_flag |= pinst_flag or any(pst_flags)
        lines.append(
            f"{name:<8}{_fmt(ch['rms_v'], 10, 2)}{_fmt(ch['rms_min_v'], 10, 2)}{_fmt(ch['rms_max_v'], 10, 2)}"
            f"{_fmt(ch['frequency_hz'], 10, 3)}{_fmt(ch['thd_pct'], 8, 2)}{_fmt(ch['pinst_max'], 10, 3)}"
            f"{'*' if pinst_flag else ' '}  {pst}"
        )
        if ch.get("plt"):
            plt_flags = ch.get("plt_flagged") or [False] * len(ch["plt"])
            any_flag |= any(plt_flags)
            plts = ", ".join(_flagged(f"{p:.3f}", f) for p, f in zip(ch["plt"], plt_flags, strict=True))
            lines.append(f"{'':<8}Plt {plts}")
    if any_flag:
        lines.append(
            "* flagged (IEC 61000-4-30 4.7): a dip, swell or interruption lies in the value's interval, so it does not "
            "show flicker alone; pq report leaves flagged values out"
        )
    lines.append("")
    lines.append("Harmonics (% of fundamental), orders above 0.1 % in any channel:")
    names = list(report["channels"])
    orders = [
        h
        for h in range(2, report["max_order"] + 1)
        if any((report["channels"][n]["harmonics_pct"].get(str(h)) or 0) >= 0.1 for n in names)
    ]
    if orders:
        lines.append("  order " + "".join(f"{n:>9}" for n in names))
        for h in orders:
            lines.append(
                f"  {h:>5} " + "".join(_fmt(report["channels"][n]["harmonics_pct"].get(str(h)), 9, 3) for n in names)
            )
    else:
        lines.append("  none")
    for name, ch in report.get("currents", {}).items():
        lines.append(f"Current {name}: rms {ch['rms_a']:.3f} A, THD {_fmt(ch['thd_pct'], 0, 2).strip()} %")
    u2, u0 = report["unbalance_u2_pct"], report["unbalance_u0_pct"]
    lines.append("")
    lines.append(
        f"Unbalance u2 {_fmt(u2, 0, 3).strip()} %  u0 {_fmt(u0, 0, 3).strip()} %"
        if u2 is not None
        else "Unbalance: needs va, vb and vc"
    )
    lines.append(f"Events ({len(report['events'])}):")
    for e in report["events"]:
        level = f"residual {e['residual_pct']:.1f} %" if "residual_pct" in e else f"max {e['max_pct']:.1f} %"
        lines.append(
            f"  {e['type']:<13} phase {e['phase']:<3} at {e['start_s']:9.4f} s for {e['duration_s'] * 1000:8.1f} ms"
            f"  {level}  (phases {e['phases']})"
        )
    if report["event_open_at_end_s"] is not None:
        lines.append(
            f"  an event started at {report['event_open_at_end_s']:.4f} s is still open at the end of the file"
        )
    w = report["windows"]
    lines.append(
        f"Windows: {w['count']} of 10/12 cycles ({w['flagged']} flagged); 10-min values: "
        f"{sum(1 for a in report['aggregates_10min'] if a['complete'])} complete"
    )
    return "\n".join(lines)


def _flagged(text: str, flagged: bool) -> str:
    return text + "*" if flagged else text


def _fmt(v: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"


def format_compliance(report: ComplianceReport) -> str:
    """A readable summary: each criterion on a line, per-order harmonics summarised per channel."""
    lines = [f"Standard  {report.standard}"]
    if report.bus_kv is not None:
        lines.append(f"Bus       {report.bus_kv:.3f} kV line to line: IEEE 519-2014 Table 1 row {report.ieee519_row}")
    lines.append(
        f"Record    {report.duration_s:.1f} s"
        + ("" if report.duration_s >= report.period_s else f" (the standard's period is {report.period_s / 86400:g} days:"
           " assessed on what the record holds)")
    )  # fmt: skip
    lines.append("")
    lines.append(f"{'criterion':<38}{'channel':<8}{'measured':>10}{'limit':>8}  result  statistic")
    harmonic = [c for c in report.criteria if c.order is not None]
    for c in report.criteria:
        if c.order is not None:
            continue
        lines.append(_line(c))
    groups: dict[tuple[str | None, str], list[CriterionResult]] = {}
    for c in harmonic:
        groups.setdefault((c.channel, c.criterion.split("(")[-1] if "(" in c.criterion else ""), []).append(c)
    for (ch, suffix), items in groups.items():
        assessed = [c for c in items if c.passed is not None]
        failed = [c for c in items if c.passed is False]
        label = f"individual harmonics {('(' + suffix) if suffix else ''}".strip()
        if not assessed:
            lines.append(f"{label:<38}{ch or '':<8}{'-':>10}{'':>8}  n/a: {_reason(items[0])}")
            continue
        worst = max(assessed, key=lambda c: (c.measured or 0.0) / c.limit)
        lines.append(
            f"{label:<38}{ch or '':<8}{worst.measured:>10.3f}{worst.limit:>8.3g}  "
            f"{'FAIL' if failed else 'pass':<6}  worst order {worst.order} of {len(assessed)}; {worst.statistic}"
        )
        for c in failed:
            lines.append("  " + _line(c))
    lines.append("")
    lines.append(f"Verdict: {report.verdict.upper()}")
    return "\n".join(lines)


def _line(c: CriterionResult) -> str:
    """One criterion: its result and statistic, or for one without a verdict why it has none."""
    head = f"{c.criterion:<38}{c.channel or '':<8}"
    if c.passed is None:
        return f"{head}{'-':>10}{c.limit:>8.3g}  n/a: {_reason(c)}"
    extra = f" ({c.note})" if c.note else ""
    result = "pass" if c.passed else "FAIL"
    return f"{head}{c.measured:>10.3f}{c.limit:>8.3g}  {result:<6}  {c.statistic}{extra}"


def _reason(c: CriterionResult) -> str:
    return c.note or "no value to assess"
