"""The feeder voltage picture: every measured voltage tied to a bus and phase, checked against ANSI C84.1.

``limits`` (the ANSI C84.1 Table 1 ranges, cited, shared with agent/pmu), ``perunit`` (a reading on the
120 V base and in per unit), ``config`` (the ``[monitoring]`` section), ``picture`` (the pure picture of the
snapshot at a time: per bus and phase the value used, lowest, highest, stale), ``alarms`` (range excursions
with pickup and hold-off, stale data, as events), ``service`` (the task that evaluates it every second).
See docs/monitoring.md.
"""
