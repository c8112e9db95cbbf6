"""Outputs of a backtest: trades, positions and equity CSVs, metrics JSON, PNG charts and an HTML report.

The CSV and JSON files are written byte for byte the same for the same inputs (fixed column order, ``\\n``
line ends, sorted keys, rounded floats, no timestamps of the run). Charts are drawn with matplotlib's Agg
backend through the object API (no pyplot global state) and embedded in the HTML report as data URIs, so
the report is one self-contained file.

Drawing costs more than the backtest of a small market (matplotlib's import alone is about half a second),
so :class:`ReportProcess` does it in a child process forked when the command starts: the child imports
matplotlib while the parent loads the data and runs, then draws from the equity series it is sent. This
module imports neither pandas nor the engine at load time, so the child stays small.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotrade.backtest.metrics import compute_metrics, drawdowns

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from autotrade.backtest.engine import BacktestResult

TRADE_COLUMNS = (
    "trade_id",
    "position_id",
    "date",
    "code",
    "name",
    "side",
    "reason",
    "basis",
    "quantity",
    "price",
    "amount",
    "fee",
    "tax",
    "cash_flow",
    "profit_loss",
    "score",
)
POSITION_COLUMNS = (
    "position_id",
    "code",
    "name",
    "score",
    "entry_date",
    "entry_price",
    "quantity",
    "buy_fee",
    "exit_date",
    "holding_days",
    "sold_quantity",
    "sell_amount",
    "sell_fees",
    "sell_taxes",
    "net_pnl",
    "exits",
    "stop_triggered",
)
EQUITY_COLUMNS = ("date", "cash", "holdings", "equity", "drawdown")


@dataclass(frozen=True, slots=True)
class Outputs:
    trades: Path
    positions: Path
    equity: Path
    metrics: Path
    equity_chart: Path
    drawdown_chart: Path
    report: Path


def _csv(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def trades_csv(result: BacktestResult) -> str:
    return _csv(
        TRADE_COLUMNS,
        [
            (
                t.trade_id,
                t.position_id,
                t.day.isoformat(),
                t.code,
                t.name,
                t.side.value,
                t.reason,
                t.basis.value,
                t.quantity,
                t.price,
                t.amount,
                t.fee,
                t.tax,
                t.cash_flow,
                t.profit_loss,
                repr(t.score),
            )
            for t in result.trades
        ],
    )


def positions_csv(result: BacktestResult) -> str:
    return _csv(
        POSITION_COLUMNS,
        [
            (
                p.position_id,
                p.code,
                p.name,
                repr(p.score),
                p.entry_day.isoformat(),
                p.entry_price,
                p.quantity,
                p.buy_fee,
                p.exit_day.isoformat() if p.exit_day else "",
                "" if p.holding_days is None else p.holding_days,
                p.sold_quantity,
                p.sell_amount,
                p.sell_fees,
                p.sell_taxes,
                p.net_pnl,
                "|".join(r.value for r in p.exits),
                int(p.stop_triggered),
            )
            for p in result.positions
        ],
    )


def equity_csv(result: BacktestResult) -> str:
    return _csv(
        EQUITY_COLUMNS,
        [
            (e.day.isoformat(), e.cash, e.holdings, e.equity, f"{dd:.6f}")
            for e, dd in zip(result.equity, drawdowns(result), strict=True)
        ],
    )


def metrics_json(metrics: dict[str, Any]) -> str:
    return json.dumps(metrics, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def equity_png(result: BacktestResult) -> bytes:
    return _equity_chart([e.day for e in result.equity], [e.equity for e in result.equity])


def drawdown_png(result: BacktestResult) -> bytes:
    return _drawdown_chart([e.day for e in result.equity], drawdowns(result))


def _equity_chart(days: Sequence[date], equity: Sequence[int]) -> bytes:
    return _chart(list(days), [v / 1_000_000 for v in equity], "Equity", "KRW (millions)", fill=False)


def _drawdown_chart(days: Sequence[date], drawdown: Sequence[float]) -> bytes:
    return _chart(list(days), [-100 * d for d in drawdown], "Drawdown from peak", "%", fill=True)


def _chart(days: list[Any], values: list[float], title: str, ylabel: str, *, fill: bool) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if fill:
        ax.fill_between(days, values, 0, color="#c0392b", alpha=0.35, linewidth=0)
        ax.plot(days, values, color="#c0392b", linewidth=0.8)
    else:
        ax.plot(days, values, color="#1f5fa8", linewidth=1.0)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


_SHOWN = (
    ("trades", "Trades (closed positions)"),
    ("win_rate", "Win rate"),
    ("stop_trigger_rate", "Stop-trigger rate"),
    ("average_holding_days", "Average holding days"),
    ("total_return", "Total return"),
    ("cagr", "CAGR"),
    ("max_drawdown", "Max drawdown"),
    ("sharpe", "Sharpe (daily, annualised)"),
    ("profit_factor", "Profit factor"),
    ("turnover", "Turnover"),
    ("fees_paid", "Fees paid (KRW)"),
    ("taxes_paid", "Sell tax paid (KRW)"),
    ("initial_capital", "Initial capital (KRW)"),
    ("final_equity", "Final equity (KRW)"),
    ("open_positions", "Open at the end"),
    ("first_day", "First day"),
    ("last_day", "Last day"),
    ("trading_days", "Trading days"),
    ("bars", "Daily bars"),
    ("calendar", "Calendar"),
)
_PERCENT = {"win_rate", "stop_trigger_rate", "total_return", "cagr", "max_drawdown"}


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key in _PERCENT:
        return f"{100 * value:.2f}%"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def report_html(metrics: dict[str, Any], equity_chart: bytes, drawdown_chart: bytes) -> str:
    def img(data: bytes, alt: str) -> str:
        return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'

    summary = _table([(label, _fmt(key, metrics.get(key))) for key, label in _SHOWN])
    exits = _table([(k, f"{v:,}") for k, v in metrics["exits_by_reason"].items()])
    skipped_counts = metrics["skipped_signals"]
    skipped = _table([(k, f"{v:,}") for k, v in skipped_counts.items()]) if skipped_counts else "<p>none</p>"
    config = _table([(k, str(v)) for k, v in sorted(metrics["config"].items())])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Backtest report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 12px; text-align: left; }}
td {{ text-align: right; font-variant-numeric: tabular-nums; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Backtest report</h1>
<p>Three-tier exit (stop / preserve / take-profit) on the product's own domain code. Buys at the scan day's
close within the risk limits; exits from the next trading day, gaps fill at the open, the stop first when a
bar touches several levels, preserve and take-profit at their trigger prices, fees and sell tax charged.
Files: <a href="trades.csv">trades.csv</a>, <a href="positions.csv">positions.csv</a>,
<a href="equity.csv">equity.csv</a>, <a href="metrics.json">metrics.json</a>.</p>
<h2>Summary</h2>
{summary}
<h2>Equity</h2>
{img(equity_chart, "equity curve")}
<h2>Drawdown</h2>
{img(drawdown_chart, "drawdown")}
<h2>Sells by reason</h2>
{exits}
<h2>Signals not bought</h2>
{skipped}
<h2>Settings</h2>
{config}
</body></html>
"""


def _write_report(
    paths: Outputs, metrics: dict[str, Any], days: Sequence[date], equity: Sequence[int], dd: Sequence[float]
) -> None:
    eq_png, dd_png = _equity_chart(days, equity), _drawdown_chart(days, dd)
    paths.equity_chart.write_bytes(eq_png)
    paths.drawdown_chart.write_bytes(dd_png)
    paths.report.write_bytes(report_html(metrics, eq_png, dd_png).encode("utf-8"))


def _report_child(conn: Connection, parent_end: Connection) -> None:
    """The forked child: import matplotlib now, then draw what the parent sends (or exit on EOF)."""
    code = 1
    try:
        parent_end.close()  # else the parent closing its end would never reach this process as EOF
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401

        try:
            job = conn.recv()
        except (EOFError, OSError):  # the parent gave up (bad input) or is gone: nothing to draw
            code = 0
            return
        try:
            _write_report(*job)
            conn.send("")
        except Exception as exc:  # reported by the parent
            conn.send(f"{type(exc).__name__}: {exc}")
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        # A forked child leaves without running the exit handlers it inherited (the parent's notifier
        # flush, logging): they are the parent's to run.
        os._exit(code)


class ReportProcess:
    """Charts and the HTML report drawn in a child forked at the start (in this process where fork is not
    available). :meth:`write` sends the series and waits; :meth:`close` ends an unused child."""

    def __init__(self) -> None:
        import multiprocessing

        self._conn: Connection | None = None
        self._proc: BaseProcess | None = None
        if "fork" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("fork")
            parent, child = ctx.Pipe()
            self._proc = ctx.Process(target=_report_child, args=(child, parent), daemon=True)
            self._proc.start()
            child.close()
            self._conn = parent

    def write(self, paths: Outputs, metrics: dict[str, Any], result: BacktestResult) -> None:
        job = (paths, metrics, [e.day for e in result.equity], [e.equity for e in result.equity],
               drawdowns(result))  # fmt: skip
        if self._conn is None or self._proc is None:
            _write_report(*job)
            return
        self._conn.send(job)
        error = self._conn.recv()
        self.close()
        if error:
            raise RuntimeError(f"drawing the report failed: {error}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.join(timeout=30)
            if self._proc.is_alive():  # never expected; do not leave it behind
                self._proc.kill()
                self._proc.join()
            self._proc = None

    def __enter__(self) -> ReportProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def write_outputs(
    result: BacktestResult, out: Path, *, charts: bool = True, drawer: ReportProcess | None = None
) -> tuple[Outputs, dict[str, Any]]:
    """Write the outputs into ``out`` (created if needed); returns their paths and the metrics.

    ``charts=False`` skips the PNG charts and the HTML report (matplotlib is then never imported);
    ``drawer`` draws them in its child process."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(result)
    paths = Outputs(
        trades=out / "trades.csv",
        positions=out / "positions.csv",
        equity=out / "equity.csv",
        metrics=out / "metrics.json",
        equity_chart=out / "equity.png",
        drawdown_chart=out / "drawdown.png",
        report=out / "report.html",
    )
    paths.trades.write_bytes(trades_csv(result).encode("utf-8"))
    paths.positions.write_bytes(positions_csv(result).encode("utf-8"))
    paths.equity.write_bytes(equity_csv(result).encode("utf-8"))
    paths.metrics.write_bytes(metrics_json(metrics).encode("utf-8"))
    if not charts:
        return paths, metrics
    if drawer is not None:
        drawer.write(paths, metrics, result)
    else:
        _write_report(paths, metrics, [e.day for e in result.equity], [e.equity for e in result.equity],
                      drawdowns(result))  # fmt: skip
    return paths, metrics
