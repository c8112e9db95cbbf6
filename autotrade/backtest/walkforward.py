"""Walk-forward validation: choose parameters on a past window, judge them only on the window after it.

The timeline is cut into rolling windows (:func:`windows`): ``in_days`` trading days in-sample followed by
``out_days`` out-of-sample, the next window starting ``out_days`` later, so the out-of-sample windows tile
the period after the first in-sample span without overlap. For each window

1. every configuration of the sweep runs on the in-sample days, on the market cut at the in-sample end
   (:meth:`MarketData.until`): the arrays it reads end there, so no out-of-sample bar or scan can reach the
   choice;
2. the configuration with the highest objective in-sample is chosen (ties and missing values: the earlier
   point; the objective is stated in the report);
3. the chosen configuration and the base (default) configuration each run on the out-of-sample days with a
   fresh account (the initial capital, no positions carried in; positions still open at the window's end
   are marked at the last close).

Only out-of-sample results are reported, the tuned and the default side by side on the same windows, with
the compounded out-of-sample return of each, so a user sees whether tuning helps or overfits.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from autotrade.backtest.config import BacktestConfig
from autotrade.backtest.data import MarketData
from autotrade.backtest.sweep import PARAMETERS, Point, Runner, configure, objective_value


@dataclass(frozen=True, slots=True)
class Window:
    number: int
    in_start: int  # day indices, end exclusive
    in_end: int
    out_start: int
    out_end: int


def windows(n_days: int, in_days: int, out_days: int) -> list[Window]:
    """Rolling windows over ``n_days``; the last out-of-sample span may be shorter (never empty)."""
    if in_days <= 0 or out_days <= 0:
        raise ValueError("in-sample and out-of-sample days must be positive")
    out: list[Window] = []
    start = 0
    while start + in_days < n_days:
        out_end = min(start + in_days + out_days, n_days)
        out.append(Window(len(out) + 1, start, start + in_days, start + in_days, out_end))
        start += out_days
    if not out:
        raise ValueError(f"{n_days} days: too few for {in_days} in-sample days and any out-of-sample day")
    return out


@dataclass(frozen=True)
class WindowResult:
    window: Window
    chosen: int  # index into the points
    chosen_point: Point
    in_sample_objective: float
    tuned: dict[str, Any]  # out-of-sample metrics of the chosen configuration
    default: dict[str, Any]  # out-of-sample metrics of the base configuration


@dataclass(frozen=True)
class WalkForward:
    objective: str
    points: list[Point]
    results: list[WindowResult]

    def compounded(self, side: str) -> float:
        """The out-of-sample total returns chained over the windows."""
        growth = 1.0
        for r in self.results:
            growth *= 1 + float(getattr(r, side)["total_return"])
        return growth - 1

    def rows(self, days: Sequence[Any]) -> list[dict[str, Any]]:
        out = []
        for r in self.results:
            w = r.window
            row: dict[str, Any] = {
                "window": w.number,
                "in_first": days[w.in_start].isoformat(),
                "in_last": days[w.in_end - 1].isoformat(),
                "out_first": days[w.out_start].isoformat(),
                "out_last": days[w.out_end - 1].isoformat(),
                "chosen_run": r.chosen + 1,
                "in_sample_" + self.objective: r.in_sample_objective,
            }
            row.update({p: r.chosen_point.get(p) for p in PARAMETERS if p in r.chosen_point})
            for side in ("tuned", "default"):
                metrics = getattr(r, side)
                for key in ("total_return", "sharpe", "max_drawdown", "win_rate", "trades"):
                    row[f"{side}_{key}"] = metrics.get(key)
            out.append(row)
        return out


def walk_forward(
    data: MarketData,
    base: BacktestConfig,
    points: Sequence[Point],
    *,
    in_days: int,
    out_days: int,
    objective: str = "sharpe",
    workers: int = 1,
) -> WalkForward:
    """Choose among ``points`` in-sample and report out-of-sample; see the module docstring."""
    configs: list[BacktestConfig | None] = []
    for point in points:
        try:
            configs.append(configure(base, point))
        except ValidationError:
            configs.append(None)
    valid = [i for i, c in enumerate(configs) if c is not None]
    if not valid:
        raise ValueError("no valid configuration to choose from")
    default_index = len(configs)
    configs.append(base)
    spans = windows(len(data.days), in_days, out_days)
    results: list[WindowResult] = []
    with Runner(data, configs, workers) as runner:
        in_tasks = [(i, w.in_start, w.in_end) for w in spans for i in valid]
        in_metrics = runner.map(in_tasks)
        chosen: list[tuple[int, float]] = []
        for k, _ in enumerate(spans):
            window_metrics = in_metrics[k * len(valid) : (k + 1) * len(valid)]
            scores = [objective_value(m, objective) for m in window_metrics]
            best = max(range(len(valid)), key=lambda j: (scores[j], -j))
            chosen.append((valid[best], scores[best]))
        out_tasks: list[tuple[int, int, int | None]] = []
        for w, (c, _) in zip(spans, chosen, strict=True):
            out_tasks += [(c, w.out_start, w.out_end), (default_index, w.out_start, w.out_end)]
        out_metrics = runner.map(out_tasks)
    for k, (w, (c, score)) in enumerate(zip(spans, chosen, strict=True)):
        results.append(WindowResult(w, c, dict(points[c]), score, out_metrics[2 * k], out_metrics[2 * k + 1]))
    return WalkForward(objective, list(points), results)


def report_html(wf: WalkForward, rows: Sequence[Mapping[str, Any]], source: str, in_days: int,
                out_days: int) -> str:  # fmt: skip
    columns = list(rows[0].keys()) if rows else []

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "<td>n/a</td>"
        return f"<td>{v:.4f}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(cell(r[c]) for c in columns) + "</tr>" for r in rows)
    better = sum(1 for r in wf.results if r.tuned["total_return"] > r.default["total_return"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Walk-forward report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; }}
</style></head><body>
<h1>Walk-forward report</h1>
<p>{html.escape(source)}. {len(wf.results)} window(s) of {in_days} in-sample and {out_days} out-of-sample
trading days; {len(wf.points)} configuration(s) to choose from by the highest in-sample
<b>{html.escape(wf.objective)}</b>. Every figure below except the in-sample objective is out-of-sample: each
window's chosen configuration ("tuned") and the default configuration ("default") run on the same
out-of-sample days, each with a fresh account.</p>
<table>
<tr><th></th><th>tuned</th><th>default</th></tr>
<tr><th>compounded out-of-sample return</th><td>{100 * wf.compounded("tuned"):.2f}%</td>
<td>{100 * wf.compounded("default"):.2f}%</td></tr>
<tr><th>windows where tuned beat default</th><td>{better} of {len(wf.results)}</td><td></td></tr>
</table>
<h2>Windows</h2>
<table><tr>{head}</tr>{body}</table>
</body></html>
"""
