"""Metering at the edge: interval energy from revenue meters' registers, validated (VEE) before it leaves.

``intervals`` (the pure engine: one :class:`~agent.metering.intervals.RegisterIntervals` per meter register,
rollover, backward reads, spikes, meter swaps, gaps, clock steps, versions) and ``config`` (the ``[metering]``
section of the site file). The rules and their parameters: docs/metering.md.
"""
