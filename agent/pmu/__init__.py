"""PMU monitoring in the agent: C37.118.2 streams -> snapshot, full-rate ring buffers and events.

``limits`` (cited default limits), ``ringbuffer`` (full-rate history), ``monitor`` (pure state machines
per condition, event windows), ``ingest`` (the asyncio part: one PdcClient per PMU), ``probe``
(``gridedge pmu probe``: a field engineer's first look at a PMU). See docs/pmu-monitoring.md.
"""
