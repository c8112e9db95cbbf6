"""``autotrade backtest``: run the backtester on files or on a synthetic market and write its reports.

Kept light at import (typer only): the data stack (pandas, numpy, matplotlib) loads when the command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import pandas as pd


def _existing_file(path: Path, option: str) -> Path:
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist", param_hint=option)
    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file", param_hint=option)
    return path


def _read(path: Path, option: str) -> pd.DataFrame:
    from autotrade.backtest.data import read_table

    try:
        return read_table(_existing_file(path, option))
    except typer.BadParameter:
        raise
    except (ValueError, OSError, ImportError) as exc:  # pandas/pyarrow parse errors are ValueErrors
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint=option) from None


def _read_bars(path: Path) -> pd.DataFrame:
    from autotrade.backtest.sources import read_bars

    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist", param_hint="--bars")
    try:
        return read_bars(path)
    except (ValueError, OSError, ImportError, KeyError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint="--bars") from None


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def backtest(
    bars: Path | None = typer.Option(
        None,
        "--bars",
        help="Daily bars, CSV or Parquet, a file or a directory of files: date,code,open,high,low,close"
        "[,volume], or a KRX data-portal export (CP949), or a saved pykrx / FinanceDataReader frame "
        "(see autotrade.backtest.sources).",
    ),
    scans: Path | None = typer.Option(
        None, "--scans", help="Scan results, CSV or Parquet: date,code,name,score,price."
    ),
    out: Path = typer.Option(..., "--out", help="Directory for trades.csv, metrics.json, charts, report."),
    config: Path | None = typer.Option(
        None, "--config", help="TOML or JSON file of backtest settings (risk limits, exit rates, costs)."
    ),
    synthetic: tuple[int, int] | None = typer.Option(
        None, "--synthetic", metavar="STOCKS YEARS", help="Run on a seeded synthetic market instead of files."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic market."),
    minutes: Path | None = typer.Option(
        None, "--minutes", help="Optional minute bars (datetime,code,open,high,low,close) to order levels."
    ),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="Progress bar on stderr (default: when stderr is a terminal)."
    ),
) -> None:
    """Backtest the strategy (same signal, risk and exit code as live trading) and write its reports."""
    from_files = bars is not None or scans is not None or minutes is not None
    if synthetic is not None and from_files:
        raise typer.BadParameter(
            "give either --bars and --scans or --synthetic, not both", param_hint="--synthetic"
        )
    if synthetic is None and not from_files:
        raise typer.BadParameter("give --bars and --scans, or --synthetic STOCKS YEARS", param_hint="--bars")
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} exists and is not a directory", param_hint="--out")

    from autotrade.backtest.config import load_config
    from autotrade.backtest.data import MarketData
    from autotrade.backtest.engine import run_backtest
    from autotrade.backtest.report import write_outputs

    try:
        settings = load_config(_existing_file(config, "--config") if config is not None else None)
    except typer.BadParameter:
        raise
    except (ValueError, OSError) as exc:  # pydantic's ValidationError and TOML/JSON errors are ValueErrors
        raise typer.BadParameter(f"{config}: {exc}", param_hint="--config") from None

    if synthetic is not None:
        from autotrade.backtest.synthetic import synthetic as make_market

        stocks, years = synthetic
        if stocks <= 0 or years <= 0:
            raise typer.BadParameter("STOCKS and YEARS must be positive", param_hint="--synthetic")
        try:
            bar_frame, scan_frame = make_market(stocks, years, seed)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--synthetic") from None
        minute_frame = None
        source = f"synthetic market: {stocks} stocks x {years} years, seed {seed}"
    else:
        if bars is None:
            raise typer.BadParameter("--scans needs --bars", param_hint="--bars")
        if scans is None:
            raise typer.BadParameter("--bars needs --scans", param_hint="--scans")
        bar_frame = _read_bars(bars)
        scan_frame = _read(scans, "--scans")
        minute_frame = _read(minutes, "--minutes") if minutes is not None else None
        source = f"bars {bars}, scans {scans}"

    try:
        data = MarketData.from_frames(
            bar_frame, scan_frame, minute_frame, use_krx_calendar=settings.use_krx_calendar
        )
    except (ValueError, KeyError, TypeError) as exc:
        hint = "--synthetic" if synthetic is not None else "--bars/--scans"
        raise typer.BadParameter(str(exc), param_hint=hint) from None

    show = sys.stderr.isatty() if progress is None else progress
    result = run_backtest(data, settings, progress=show)
    paths, metrics = write_outputs(result, out)

    typer.echo(f"backtest of {source}")
    typer.echo(
        f"{metrics['first_day']} .. {metrics['last_day']}: {metrics['trading_days']:,} trading days, "
        f"{metrics['bars']:,} bars, {metrics['stocks']:,} stocks (calendar {metrics['calendar']})"
    )
    typer.echo(
        f"trades {metrics['trades']:,}  win rate {_percent(metrics['win_rate'])}  "
        f"stop-trigger rate {_percent(metrics['stop_trigger_rate'])}  "
        f"total return {_percent(metrics['total_return'])}  max drawdown {_percent(metrics['max_drawdown'])}"
    )
    typer.echo(f"fees {metrics['fees_paid']:,} KRW  sell tax {metrics['taxes_paid']:,} KRW")
    typer.echo(f"wrote {paths.trades.name}, {paths.metrics.name}, {paths.equity_chart.name}, ", nl=False)
    typer.echo(f"{paths.drawdown_chart.name}, {paths.report.name} to {out}")
