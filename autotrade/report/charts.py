"""Equity and drawdown charts as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

from autotrade.report.metrics import drawdowns


def equity_charts(curve: Sequence[tuple[date, int]], stem: Path) -> list[Path]:
    """``<stem>_equity.png`` and ``<stem>_drawdown.png``; none when there is no equity yet."""
    if not curve:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    days = np.array([d for d, _ in curve], dtype="datetime64[D]")
    values = [v for _, v in curve]
    out = []
    for kind, ys, color, label in (
        ("equity", [v / 1_000_000 for v in values], "#1f4e79", "equity (million KRW)"),
        ("drawdown", drawdowns(values), "#b22222", "drawdown (%)"),
    ):
        fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
        try:
            if kind == "drawdown":
                ax.fill_between(days, ys, 0, color=color, alpha=0.35, step="post")
            ax.plot(days, ys, color=color, marker="o", linewidth=1.5)
            ax.set_ylabel(label)
            ax.set_title(f"{kind} {curve[0][0]:%Y-%m-%d} - {curve[-1][0]:%Y-%m-%d}")
            ax.grid(alpha=0.3)
            fig.autofmt_xdate()
            fig.tight_layout()
            path = stem.parent / f"{stem.name}_{kind}.png"
            fig.savefig(path)
            out.append(path)
        finally:
            plt.close(fig)
    return out
