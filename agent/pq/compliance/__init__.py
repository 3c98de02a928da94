"""Compliance of measured power quality with EN 50160 (LV, MV) and IEEE 519-2014 (voltage distortion).

- :mod:`.limits`: the limit tables, each value with the clause or table it comes from, and their lookups;
- :mod:`.assessment`: nearest-rank percentiles, the criteria over a :class:`Series`, the :class:`ComplianceReport`;
- :mod:`.document`: the :class:`Series` of a ``gridedge pq analyze --json`` document and its report
  (``gridedge pq report``; schema in docs/pq-report.md);
- :mod:`.rolling`: the rolling week the agent's PQ service keeps per stream, in bounded memory
  (docs/pq-service.md).

The names below are the package's interface; import them from here.
"""

from agent.pq.compliance.assessment import (
    ComplianceReport,
    CriterionResult,
    DailyPercentiles,
    Series,
    en50160_criteria,
    evaluate_series,
    ieee519_criteria,
    percentile_nearest_rank,
    percentile_nearest_rank_top,
    share_within_pct,
    thd_from_harmonics_pct,
)
from agent.pq.compliance.document import (
    default_bus_kv,
    evaluate,
    evaluate_en50160,
    evaluate_ieee519,
    series_of_document,
)
from agent.pq.compliance.limits import (
    DAY_S,
    EN50160_HARMONIC_LIMITS_PCT,
    EN50160_LIMITS,
    IEEE519_DAILY_FACTOR,
    IEEE519_DAILY_PERCENTILE,
    IEEE519_MAX_ORDER,
    IEEE519_VOLTAGE_LIMITS,
    IEEE519_WEEKLY_PERCENTILE,
    STANDARDS,
    WEEK_S,
    YEAR_S,
    ComplianceError,
    En50160Limits,
    Ieee519Row,
    en50160_harmonic_limit_pct,
    ieee519_row,
)
from agent.pq.compliance.rolling import TOP_BATCH, TOP_KEEP, RollingStatistics

__all__ = [
    "DAY_S", "EN50160_HARMONIC_LIMITS_PCT", "EN50160_LIMITS", "IEEE519_DAILY_FACTOR", "IEEE519_DAILY_PERCENTILE",
    "IEEE519_MAX_ORDER", "IEEE519_VOLTAGE_LIMITS", "IEEE519_WEEKLY_PERCENTILE", "STANDARDS", "TOP_BATCH", "TOP_KEEP",
    "WEEK_S", "YEAR_S", "ComplianceError", "ComplianceReport", "CriterionResult", "DailyPercentiles", "En50160Limits",
    "Ieee519Row", "RollingStatistics", "Series", "default_bus_kv", "en50160_criteria", "en50160_harmonic_limit_pct",
    "evaluate", "evaluate_en50160", "evaluate_ieee519", "evaluate_series", "ieee519_criteria", "ieee519_row",
    "percentile_nearest_rank", "percentile_nearest_rank_top", "series_of_document", "share_within_pct",
    "thd_from_harmonics_pct",
]  # fmt: skip
