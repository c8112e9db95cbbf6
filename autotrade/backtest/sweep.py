"""Parameter sweeps: many configurations of the same rules over the same market, in parallel.

The swept parameters are the three tier rates, the minimum score, the per-stock budget and the holding
limit (:data:`PARAMETERS`); everything else comes from the base config. Points are either a full grid of
given values or a seeded random sample (ranges ``lo:hi`` or lists of choices), so the same arguments and
seed give the same points on every machine.

Each configuration is one :func:`autotrade.backtest.engine.run_backtest` over the shared
:class:`~autotrade.backtest.data.MarketData`: the sweep adds nothing to the engine, so a row of the table is
exactly the metrics a single run of that configuration reports. Workers are OS processes
(:class:`concurrent.futures.ProcessPoolExecutor`); on Linux they are forked after the market is loaded and
read its arrays without a copy, elsewhere each worker receives it once. Rows come back in point order
whatever the order the workers finish in. Given a Dask scheduler's address, the configurations run as
Prefect tasks on that cluster instead (:mod:`autotrade.backtest.dask_sweep`), with the same rows.

A point whose values break the config's own rules (a take-profit below the preserve rate) is kept in the
table with its ``error`` and no metrics.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

from pydantic import ValidationError

from autotrade.backtest.config import BacktestConfig
from autotrade.backtest.data import MarketData
from autotrade.backtest.engine import run_backtest
from autotrade.backtest.metrics import compute_metrics

PARAMETERS = (
    "stop_loss_rate",
    "preserve_rate",
    "take_profit_rate",
    "min_ai_score",
    "max_per_stock",
    "max_holding_days",
)
INTEGER_PARAMETERS = {"max_per_stock", "max_holding_days"}
# Metrics that are not one number (per-reason counts, the config itself) stay out of the table.
NON_SCALAR = {"exits_by_reason", "skipped_signals", "config"}
OBJECTIVES = ("sharpe", "total_return", "cagr", "profit_factor", "win_rate", "neg_max_drawdown")

Point = dict[str, Any]
Value = float | int | None


def parse_value(name: str, text: str) -> Value:
    if name not in PARAMETERS:
        raise ValueError(f"unknown parameter {name!r}; sweepable: {', '.join(PARAMETERS)}")
    if name == "max_holding_days" and text.strip().lower() in ("none", ""):
        return None
    return int(text) if name in INTEGER_PARAMETERS else float(text)


def parse_spec(spec: str) -> tuple[str, list[Value] | tuple[Value, Value]]:
    """``name=v1,v2,...`` (values) or ``name=lo:hi`` (a range, for random samples)."""
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not rest:
        raise ValueError(f"{spec!r}: expected NAME=v1,v2,... or NAME=lo:hi")
    if ":" in rest:
        lo_text, _, hi_text = rest.partition(":")
        lo, hi = parse_value(name, lo_text), parse_value(name, hi_text)
        if lo is None or hi is None or lo > hi:
            raise ValueError(f"{spec!r}: a range needs lo <= hi")
        return name, (lo, hi)
    return name, [parse_value(name, v) for v in rest.split(",")]


def grid(values: Mapping[str, Sequence[Value]]) -> list[Point]:
    """Every combination, the first parameter of :data:`PARAMETERS` varying slowest."""
    names = [p for p in PARAMETERS if p in values]
    points: list[Point] = [{}]
    for name in names:
        points = [{**pt, name: v} for pt in points for v in values[name]]
    return points


def random_points(
    space: Mapping[str, Sequence[Value] | tuple[Value, Value]], n: int, seed: int
) -> list[Point]:
    """``n`` seeded draws: a list is a set of choices; a ``(lo, hi)`` tuple a range (rates and scores to
    0.1, the budget to 10,000 KRW, the holding limit to whole days)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    names = [p for p in PARAMETERS if p in space]
    points = []
    for _ in range(n):
        point: Point = {}
        for name in names:
            dim = space[name]
            if isinstance(dim, tuple):
                lo, hi = float(dim[0] or 0), float(dim[1] or 0)  # parse_spec refuses None in a range
                if name == "max_holding_days":
                    point[name] = int(rng.integers(int(lo), int(hi) + 1))
                elif name == "max_per_stock":
                    point[name] = round(float(rng.uniform(lo, hi)) / 10_000) * 10_000
                else:
                    point[name] = round(float(rng.uniform(lo, hi)), 1)
            else:
                point[name] = dim[int(rng.integers(len(dim)))]
        points.append(point)
    return points


def configure(base: BacktestConfig, point: Point) -> BacktestConfig:
    """``base`` with the point's values (validated as any config is)."""
    return BacktestConfig.model_validate({**base.model_dump(), **point})


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in NON_SCALAR}


def objective_value(row: Mapping[str, Any], objective: str) -> float:
    """Higher is better; a missing value (no trades, no loss) ranks last."""
    if objective == "neg_max_drawdown":
        v = row.get("max_drawdown")
        return float("-inf") if v is None or v != v else -float(v)
    v = row.get(objective)
    return float("-inf") if v is None or v != v else float(v)


# --- workers ---

_DATA: MarketData | None = None
_CONFIGS: list[BacktestConfig | None] = []


def _install(data: MarketData | None, configs: list[BacktestConfig | None]) -> None:
    global _DATA, _CONFIGS
    if data is not None:
        _DATA = data
    _CONFIGS = configs


def configuration_metrics(data: MarketData, config: BacktestConfig, start: int = 0) -> dict[str, Any]:
    """One row's metrics: ``config`` run over ``data`` from day ``start``, as a single run reports them."""
    return scalar_metrics(compute_metrics(run_backtest(data, config, start=start)))


def _evaluate(task: tuple[int, int, int | None]) -> dict[str, Any]:
    """Metrics of configuration ``i`` over days ``start..end`` of the installed market."""
    i, start, end = task
    config = _CONFIGS[i]
    if _DATA is None or config is None:
        raise RuntimeError("no market or no valid configuration installed in this worker")
    data = _DATA if end is None else _DATA.until(end)
    return configuration_metrics(data, config, start)


class Runner:
    """Evaluates (configuration, window) tasks serially or on a process pool; results in task order."""

    def __init__(self, data: MarketData, configs: list[BacktestConfig | None], workers: int = 1) -> None:
        self.workers = max(1, workers)
        self._executor: Executor | None = None
        _install(data, configs)
        if self.workers > 1:
            methods = multiprocessing.get_all_start_methods()
            if "fork" in methods:  # the children inherit the market: no pickling of its arrays
                ctx = multiprocessing.get_context("fork")
                self._executor = ProcessPoolExecutor(self.workers, mp_context=ctx)
            else:
                self._executor = ProcessPoolExecutor(
                    self.workers, initializer=_install, initargs=(data, configs)
                )

    def map(self, tasks: Sequence[tuple[int, int, int | None]]) -> list[dict[str, Any]]:
        if self._executor is None:
            return [_evaluate(t) for t in tasks]
        chunk = max(1, len(tasks) // (self.workers * 4))
        return list(self._executor.map(_evaluate, tasks, chunksize=chunk))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def run_sweep(
    data: MarketData,
    base: BacktestConfig,
    points: Iterable[Point],
    *,
    workers: int = 1,
    dask_address: str | None = None,
) -> list[dict[str, Any]]:
    """One row per point: its values, ``error`` (empty when valid), then the run's scalar metrics.

    With ``dask_address`` (``tcp://host:port`` of a Dask scheduler) the valid configurations run as Prefect
    tasks on that cluster (:mod:`autotrade.backtest.dask_sweep`) instead of ``workers`` local processes."""
    points = list(points)
    configs: list[BacktestConfig | None] = []
    errors: list[str] = []
    for point in points:
        try:
            configs.append(configure(base, point))
            errors.append("")
        except ValidationError as exc:
            configs.append(None)
            errors.append("; ".join(e["msg"] for e in exc.errors()))
    valid = [i for i, c in enumerate(configs) if c is not None]
    if dask_address:
        from autotrade.backtest.dask_sweep import run_on_dask

        results = run_on_dask(data, [c for c in configs if c is not None], dask_address)
    else:
        with Runner(data, configs, workers) as runner:
            results = runner.map([(i, 0, None) for i in valid])
    by_index = dict(zip(valid, results, strict=True))
    rows = []
    for i, point in enumerate(points):
        row: dict[str, Any] = {"run": i + 1}
        row.update({p: point.get(p, getattr(base, p)) for p in PARAMETERS})
        row["error"] = errors[i]
        row.update(by_index.get(i, {}))
        rows.append(row)
    return rows


def write_table(rows: Sequence[Mapping[str, Any]], path_csv: Any, path_parquet: Any | None = None) -> None:
    """The results as CSV (and Parquet when a path is given), columns in a fixed order."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    frame.to_csv(path_csv, index=False, lineterminator="\n")
    if path_parquet is not None:
        frame.to_parquet(path_parquet, index=False)


def heatmap_png(rows: Sequence[Mapping[str, Any]], x: str, y: str, objective: str) -> bytes:
    """Mean objective over the other parameters for each (x, y) pair, as a PNG heat map."""
    import io

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xs = sorted({r[x] for r in rows if r[x] is not None})
    ys = sorted({r[y] for r in rows if r[y] is not None})
    cells = np.full((len(ys), len(xs)), np.nan)
    for j, yv in enumerate(ys):
        for i, xv in enumerate(xs):
            cell = [r for r in rows if r[x] == xv and r[y] == yv and not r["error"]]
            vals = [objective_value(r, objective) for r in cell]
            finite = [v for v in vals if np.isfinite(v)]
            if finite:
                cells[j, i] = float(np.mean(finite))
    fig = Figure(figsize=(2.5 + 0.8 * max(len(xs), 4), 1.5 + 0.5 * max(len(ys), 4)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(cells, origin="lower", aspect="auto", cmap="RdYlGn")
    fig.colorbar(image, ax=ax, label=objective)
    ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
    ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if len(xs) * len(ys) <= 100:
        for j in range(len(ys)):
            for i in range(len(xs)):
                if np.isfinite(cells[j, i]):
                    ax.text(i, j, f"{cells[j, i]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(f"mean {objective} by {x} and {y}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


SHOWN = ("trades", "win_rate", "stop_trigger_rate", "total_return", "cagr", "max_drawdown", "sharpe",
         "profit_factor", "average_holding_days")  # fmt: skip


def report_html(
    rows: Sequence[Mapping[str, Any]], objective: str, heatmap: bytes | None, title: str, source: str
) -> str:
    """The sweep's HTML page: the heat map and the configurations ranked by the objective."""
    import base64
    import html

    ranked = sorted(
        (r for r in rows if not r["error"]), key=lambda r: (-objective_value(r, objective), r["run"])
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("run", *PARAMETERS, *SHOWN))

    def cell(v: Any) -> str:
        if v is None:
            return "<td>n/a</td>"
        if isinstance(v, float):
            return f"<td>{v:.4f}</td>"
        return f"<td>{html.escape(str(v))}</td>"

    body = "".join(
        "<tr>" + "".join(cell(r.get(c)) for c in ("run", *PARAMETERS, *SHOWN)) + "</tr>" for r in ranked
    )
    invalid = sum(1 for r in rows if r["error"])
    picture = ""
    if heatmap is not None:
        data = base64.b64encode(heatmap).decode("ascii")
        picture = f'<img alt="heat map" src="data:image/png;base64,{data}">'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(source)}. {len(rows)} configuration(s), {invalid} invalid (see the table file's error
column). Ranked by {html.escape(objective)} (higher is better; n/a last). In-sample figures: a sweep
chooses on the same data it reports, so the best row is optimistic; see the walk-forward report for
out-of-sample results.</p>
{picture}
<table><tr>{head}</tr>{body}</table>
</body></html>
"""
