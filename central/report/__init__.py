"""``gridedge central report``: one day's metrics of forecasting and dispatch (docs/report.md)."""
