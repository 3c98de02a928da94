"""The backtest's PNG (``gridedge central forecast backtest --plot``): matplotlib, the ``plot`` extra, is loaded
here alone, so central's running services never import it."""

from __future__ import annotations

from typing import Any

from central.forecast.backtest import OURS
from central.forecast.history import History
from central.forecast.models import ForecastError


def plot(report: dict[str, Any], history: History, out: str) -> None:
    """A PNG of each model's MASE and pinball loss side by side (matplotlib: the [plot] extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ForecastError("--plot needs matplotlib: pip install 'gridedge[plot]'") from err
    names = list(report["models"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, label in zip(
        axes, ("mase", "pinball", "coverage"), ("MASE (m = 96)", "pinball loss", "P10-P90 coverage"), strict=True
    ):
        values = [report["models"][n][key] for n in names]
        ax.bar(range(len(names)), values, color=["tab:green" if n == OURS else "tab:gray" for n in names])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(label)
    axes[2].axhspan(0.7, 0.9, color="tab:green", alpha=0.15)
    fig.suptitle(
        f"{report['column']} ({report['kind']}, {report['horizon']}), {report['window'][0]} .. {report['window'][1]}"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
