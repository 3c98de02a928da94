"""Central's dispatch: schedules for each site from forecasts and the feeder's network model (docs/dispatch.md)."""
